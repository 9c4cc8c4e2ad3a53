"""Writing files so that readers see the old content or the new, never a mix."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hapair.errors import UsageError


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def exclusive_lock(path: Path, refusal: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600 when missing) for the duration;
    the kernel drops it when the process ends, so a killed holder leaves no stale lock.

    :raises UsageError: another process holds it; ``refusal`` is the message.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(refusal) from None
        yield
    finally:
        os.close(fd)
