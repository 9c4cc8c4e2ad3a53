"""``hapair secrets rotate`` in the lab: a new heartbeat key for a running pair, no restart.

Both LB agents of a lab read one key file (``LabPaths.key``). The new key is installed with
:func:`hapair.agent.keyring.write_rotation`: the old key keeps signing until ``switch_at`` and
is accepted until ``drop_at``. Each agent reads the files again within
:data:`hapair.agent.daemon.KEY_REFRESH_MS`, and at once on the SIGHUP sent here; the overlap
must outlast the time between the two agents' reads (a node that signs with the new key before
its peer has read it is refused): the lab's default, :data:`LAB_OVERLAP_S`, holds even if a
SIGHUP is lost and each agent waits for its own refresh.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time

from hapair.agent.keyring import load_keyset, write_rotation
from hapair.errors import UsageError
from hapair.platforms.lab import services
from hapair.platforms.lab.day2.target import open_lab
from hapair.platforms.lab.paths import LabPaths

#: The lab's overlap (s): both agents read one file, every 5 s.
LAB_OVERLAP_S = 15.0


def rotate_key(name: str, overlap_s: float = LAB_OVERLAP_S) -> tuple[float, float]:
    """Install a new random cluster key in lab ``name``.

    :returns: ``(switch_at, drop_at)`` in Unix seconds.
    :raises UsageError: no such lab, another day-2 operation holds it, or the previous
        rotation's overlap is not over.
    """
    paths = LabPaths(name)
    with open_lab(name) as t:
        now = time.time()
        keys = load_keyset(paths.key)
        if keys.previous is not None and now < keys.drop_at:
            raise UsageError(
                f"secrets rotate: the previous rotation still lasts {keys.drop_at - now:.0f} s "
                "(both keys count until then); run it again after that"
            )
        write_rotation(paths.key, secrets.token_hex(32), now, overlap_s)
        for lb in t.plan.lbs:
            svc = services.recorded(t.state.get("procs", {}), lb.name, "agent").running(paths)
            if svc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(svc.proc.pid, signal.SIGHUP)  # read the key files now
        return now + overlap_s, now + 2 * overlap_s
