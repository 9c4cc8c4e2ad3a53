"""The agent's boot id: a counter that grows at every start, whatever the wall clock does.

The peer's decoder drops a heartbeat whose ``(boot_id, seq)`` is not larger than the last one it
accepted (the replay window). A boot id taken from the wall clock would go backwards when the
clock steps back, and the peer would drop every heartbeat of the new boot as a replay until its
own restart. So the boot id is kept in a file: the first start takes the wall clock in ns (so an
upgrade from an agent that used the clock still moves forward), every later start adds one.
The file is written atomically before the first heartbeat goes out; if it cannot be written the
agent refuses to start, because a boot id that may repeat breaks the replay window.
"""

from __future__ import annotations

import time
from pathlib import Path

from hapair.errors import FatalError
from hapair.fileio import write_atomic


def next_boot_id(path: Path, clock_ns: int | None = None) -> int:
    """Read the last boot id from ``path``, store and return the next one.

    :param path: the counter file (its directory is created if missing).
    :param clock_ns: the wall clock to start from when there is no counter yet (tests).
    :returns: a boot id larger than every earlier one kept in ``path``.
    :raises FatalError: the file holds garbage or cannot be written.
    """
    last: int | None = None
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise FatalError(f"{path}: cannot read the boot counter ({exc.strerror})") from exc
    if text:
        if not text.isdigit() or int(text) >= 2**63:
            raise FatalError(
                f"{path}: the boot counter is not a number ({text[:20]!r}); "
                "remove the file to start a new count"
            )
        last = int(text)
    boot = last + 1 if last is not None else (time.time_ns() if clock_ns is None else clock_ns)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, f"{boot}\n", mode=0o600)
    except OSError as exc:
        raise FatalError(
            f"{path}: cannot store the boot counter ({exc.strerror}); the agent must not "
            "start with a boot id that could repeat"
        ) from exc
    return boot
