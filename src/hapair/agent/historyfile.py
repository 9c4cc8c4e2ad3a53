"""The dashboard's history on disk, so that it survives a restart of the agent: one JSON line
per :class:`~hapair.agent.history.MoveRecord` in a file of the agent's state directory
(:meth:`hapair.agent.config.AgentConfig.history_path`), mode 0600.

- **Cheap on the event loop.** A record is one small ``write`` with ``O_APPEND`` into the page
  cache, and there is no ``fsync``: a crash of the machine may lose the last records written,
  which a dashboard's history can afford, and a failover never waits for the disk.
- **Bounded.** When the file would hold more than ``2 * keep`` lines it is rewritten (a
  temporary file renamed over it, no ``fsync`` either) with the last ``keep`` records, so it
  never holds more than ``2 * keep`` lines, and reading at start never takes more than
  :data:`MAX_READ` bytes of it.
- **Tolerant.** A line that is not a record (a torn last line after a crash, garbage) is
  skipped, counted and logged once, and the file rewritten without it; a file that cannot be
  read or written costs only the persistence (logged once): the agent keeps its history in
  memory and never stops for it.

The parsing is pure (:func:`encode`, :func:`decode`, :func:`parse`); :class:`HistoryFile` does
the I/O.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from hapair.agent.history import MoveRecord, stamp

logger = logging.getLogger(__name__)

MAX_READ: Final = 1 << 20
"""At most this many bytes (the end of the file) are read at start."""
MODE: Final = 0o600
"""The file's mode: the history names the nodes and says why each VIP moved."""


def encode(rec: MoveRecord) -> str:
    """One record as one JSON line (newline included)."""
    return json.dumps(asdict(rec), separators=(",", ":")) + "\n"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def record_of(d: object) -> MoveRecord | None:
    """The record a JSON object stands for, or None when it is not one (keys it does not know
    are ignored, so that a newer agent's file, or a newer peer, still is understood)."""
    if not isinstance(d, dict):
        return None
    t, gap = d.get("t"), d.get("gap_ms")
    texts = [d.get(k) for k in ("vip", "node", "label", "reason")]
    if not isinstance(t, int | float) or isinstance(t, bool):
        return None
    if not all(isinstance(s, str) for s in texts):
        return None
    if not isinstance(d.get("take"), bool) or not (gap is None or _number(gap)):
        return None
    when = d.get("time")
    return MoveRecord(
        t=float(t),
        time=when if isinstance(when, str) else stamp(float(t)),
        vip=d["vip"],
        node=d["node"],
        take=d["take"],
        label=d["label"],
        reason=d["reason"],
        gap_ms=float(gap) if isinstance(gap, int | float) else None,
    )


def decode(line: str) -> MoveRecord | None:
    """The record of one line, or None when it is not one."""
    try:
        return record_of(json.loads(line))
    except ValueError:
        return None


def parse(text: str) -> tuple[list[MoveRecord], int]:
    """The records of a file's text, oldest first, and how many non-empty lines were not
    records."""
    records: list[MoveRecord] = []
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        rec = decode(line)
        if rec is None:
            bad += 1
        else:
            records.append(rec)
    return records, bad


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class HistoryFile:
    """The file one agent's history is kept in (see the module docstring).

    :param path: the file (its directory is created when missing).
    :param keep: records kept when the file is compacted (and loaded at start).
    :ivar lines: lines the file holds, as far as this process knows.
    :ivar skipped: lines found unreadable at start.
    :ivar failures: reads or writes that failed (only the first is logged as a warning).
    """

    def __init__(self, path: Path, keep: int) -> None:
        self.path = path
        self.keep = keep
        self.lines = 0
        self.skipped = 0
        self.failures = 0

    def _failed(self, what: str, exc: OSError) -> None:
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        logger.log(
            level,
            "%s: cannot %s the dashboard history (%s); it is kept in memory only",
            self.path,
            what,
            exc.strerror or exc,
        )

    def _read_tail(self) -> tuple[str, bool]:
        """The end of the file (whole lines only) and whether its last line is complete."""
        with self.path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - MAX_READ))
            raw = f.read(MAX_READ)
        if size > MAX_READ:
            raw = raw.partition(b"\n")[2]  # a line cut by where the reading started
        return raw.decode("utf-8", errors="replace"), raw.endswith(b"\n") or not raw

    def load(self) -> list[MoveRecord]:
        """The last ``keep`` records of the file, oldest first (none when it is missing or
        unreadable). A file with bad lines, a torn end, too many lines or another mode is
        rewritten at once with what was read."""
        try:
            text, whole = self._read_tail()
            mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._failed("read", exc)
            return []
        records, bad = parse(text)
        self.lines = len(records) + bad
        if bad:
            self.skipped = bad
            logger.warning(
                "%s: skipped %d unreadable line(s) of the dashboard history", self.path, bad
            )
        kept = records[-self.keep :]
        if bad or not whole or len(records) > 2 * self.keep or mode != MODE:
            self.rewrite(kept)
        return kept

    def add(self, rec: MoveRecord, recent: Iterable[MoveRecord]) -> None:
        """Append ``rec``; when the file would grow past ``2 * keep`` lines, rewrite it with
        the last ``keep`` of ``recent`` instead (the records in memory, ``rec`` among them)."""
        if self.lines + 1 > 2 * self.keep:
            self.rewrite(list(recent)[-self.keep :])
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
            try:
                _write_all(fd, encode(rec).encode())
            finally:
                os.close(fd)
        except OSError as exc:
            self._failed("append to", exc)
            return
        self.lines += 1

    def rewrite(self, records: list[MoveRecord]) -> None:
        """Replace the file by ``records`` (a temporary file renamed over it; no ``fsync``)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MODE)
            try:
                os.fchmod(fd, MODE)
                _write_all(fd, "".join(encode(r) for r in records).encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._failed("rewrite", exc)
            return
        self.lines = len(records)
