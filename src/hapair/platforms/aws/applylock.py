"""One ``apply`` (or ``scale``) at a time per AWS cluster, from this machine.

Two concurrent runs would each publish a desired document from their own plan, and one could
terminate web instances the other just listed. The lab holds ``day2.lock`` in its state
folder; an AWS cluster has no local folder, so the lock is a file under the user's state
folder (``$XDG_STATE_HOME/hapair/aws``, else ``~/.local/state/hapair/aws``), one per cluster
and region, held with ``flock`` for the whole run (the kernel drops it when the process ends,
so a killed run leaves no stale lock). It does not guard against a run from another machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hapair.fileio import exclusive_lock


def lock_path(cluster: str, region: str, base: Path | None = None) -> Path:
    """The lock file of ``cluster`` in ``region`` (``base``: the state folder to use)."""
    if base is None:
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        base = Path(state) / "hapair" / "aws"
    return base / f"{cluster}-{region}.lock"


@contextmanager
def apply_lock(cluster: str, region: str, base: Path | None = None) -> Iterator[Path]:
    """Hold the cluster's lock for the duration (see the module docstring).

    :raises UsageError: another run holds it (says which cluster, region and file).
    """
    path = lock_path(cluster, region, base)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    busy = (
        f"another apply or scale is running on cluster {cluster} in {region} "
        f"(it holds {path}); wait until it ends, then run this again"
    )
    with exclusive_lock(path, busy):
        yield path
