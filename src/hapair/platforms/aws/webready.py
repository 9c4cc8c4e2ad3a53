"""Until new web instances serve: what ``apply`` waits for before the LBs are told of them.

EC2's "running" only says the machine booted; the web app is installed by cloud-init minutes
later. A web instance counts as ready when cloud-init is done (read from its console output,
:func:`~.readiness.cloud_init_state`): the web user data's last step waits until the web app
answers its health check, and fails cloud-init when it does not (:mod:`.userdata`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from hapair.errors import OperationError
from hapair.platforms.aws import instances
from hapair.platforms.aws.client import Aws
from hapair.platforms.aws.readiness import (
    NodeState,
    Readiness,
    assess_webs,
    cloud_init_state,
    wait_for,
)

logger = logging.getLogger(__name__)

#: Seconds ``apply`` waits at most for new web instances to serve (they install hapair first).
WEB_READY_TIMEOUT = 900.0
#: Seconds between two rounds of reading their consoles.
WEB_READY_INTERVAL = 10.0


def console_of(aws: Aws, instance_id: str) -> str:
    """The instance's latest console output ('' when there is none yet); botocore decodes
    EC2's base64 already (its ``decode_console_output`` handler)."""
    res = aws.call(
        aws.ec2.get_console_output,
        f"instance {instance_id}",
        ignore=("InvalidInstanceID.NotFound",),
        InstanceId=instance_id,
        Latest=True,
    )
    return str(res.get("Output", "")) if res else ""


def read_webs(aws: Aws, started: Mapping[str, str]) -> list[NodeState]:
    """Each new web instance's EC2 state and cloud-init state (``started``: name -> id)."""
    states = instances.instance_states(aws, list(started.values()))
    out = []
    for name, iid in started.items():
        state = states.get(iid, "unknown")
        console = console_of(aws, iid) if state == "running" else ""
        out.append(NodeState(name, "web", state, cloud_init_state(console)))
    return out


def wait_webs_ready(
    aws: Aws,
    started: Mapping[str, str],
    say: Callable[[str], None],
    *,
    timeout: float = WEB_READY_TIMEOUT,
    interval: float = WEB_READY_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until every instance of ``started`` serves (see the module docstring).

    :raises OperationError: a cloud-init failed, or ``timeout`` passed; the message gives
        each instance's state, and the LBs were not told of them.
    """

    def report(r: Readiness) -> None:
        for line in r.problems:
            logger.info("not ready: %s", line)

    verdict = wait_for(
        lambda: assess_webs(read_webs(aws, started)),
        timeout=timeout,
        interval=interval,
        report=report,
        clock=clock,
        sleep=sleep,
    )
    names = ", ".join(started)
    if not verdict.ready:
        why = "a cloud-init failed" if verdict.hopeless else f"not ready after {timeout:g} s"
        raise OperationError(
            f"new web instance(s) {names}: {why}:\n  "
            + "\n  ".join(verdict.problems)
            + "\nno LB sends them traffic yet; run `hapair apply` again once they serve, "
            "or with a smaller web.size to remove them"
        )
    say(f"{names} serve{'s' if len(started) == 1 else ''} (cloud-init done, web app answers)")
