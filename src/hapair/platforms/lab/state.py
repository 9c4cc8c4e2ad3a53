"""The lab's state directory: one per cluster, written atomically; secrets kept 0600."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("/run/hapair")


def root_dir() -> Path:
    """Where every lab keeps its state (``HAPAIR_STATE_DIR`` overrides ``/run/hapair``)."""
    return Path(os.environ.get("HAPAIR_STATE_DIR", str(DEFAULT_ROOT)))


def cluster_dir(name: str) -> Path:
    """The state directory of cluster ``name``."""
    return root_dir() / name


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


def ensure_secret(path: Path, nbytes: int = 32) -> str:
    """Read a secret, creating it (random, hex, mode 0600) when missing."""
    if path.exists():
        os.chmod(path, 0o600)
        return path.read_text().strip()
    value = secrets.token_hex(nbytes)
    write_atomic(path, value + "\n", mode=0o600)
    return value


def load_state(name: str) -> dict[str, Any] | None:
    """The lab's state file, or None when there is none."""
    path = cluster_dir(name) / "state.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return data


def save_state(name: str, state: dict[str, Any]) -> None:
    """Write the lab's state file atomically."""
    write_atomic(cluster_dir(name) / "state.json", json.dumps(state, indent=2, sort_keys=True))
