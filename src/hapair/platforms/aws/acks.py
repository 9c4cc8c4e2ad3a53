"""Each LB says which desired version it applied: the tag ``hapair:applied`` on its own instance.

After every version it applies or refuses, an LB's follower writes one tag on its own EC2
instance (``CreateTags``; the LB role may write that one tag key, only on the instance whose
credentials sign the call, see :func:`hapair.platforms.aws.iam.lb_policy`)::

    hapair:applied = "12 applied"
    hapair:applied = "12 applied; draining 3"     (3 sessions left on servers it drains)
    hapair:applied = "13 refused: haproxy -c: ..." (cut to EC2's 256 characters)

The operator's side reads it with the ``DescribeInstances`` it makes anyway: ``apply`` waits
for both LBs to acknowledge the drain version (and for their drained servers' sessions to end)
before terminating web instances, and ``restart`` and ``cert rotate`` wait for the version they
published. A refusal is an error that names the LB and its reason.

Why a tag and not the alternatives: it is EC2 only (no service, resource or cost added), the
operator already reads instances, the grant is one tag key on the LB's own instance, and an LB
replaced by ``up`` starts without one (its acknowledgement cannot be mistaken for the old
one's). Writing to SSM would need ``ssm:PutParameter`` for the LBs (a role that may write its
own desired document's neighbours); the agents' ``/status`` would need the operator to reach
port 9023 (see docs/aws.md). An LB made by an older hapair never writes the tag: a caller
learns so (:attr:`Verdict.silent`) and falls back to waiting a fixed time.

:class:`Ack`, :func:`parse` and :func:`judge` are pure; :class:`TagAcknowledger` writes (on an LB),
:func:`read` and :func:`wait` read (the operator's side).
"""

from __future__ import annotations

import abc
import logging
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hapair.errors import OperationError
from hapair.platforms.aws.client import TAG_NODE, TAG_ROLE, Aws, cluster_filter, tags_of
from hapair.platforms.aws.iam import TAG_APPLIED

logger = logging.getLogger(__name__)

#: EC2's limit on a tag value.
MAX_VALUE = 256
_VALUE = re.compile(r"(\d+) (applied|refused)(?:; draining (\d+)|: (.*))?", re.S)
IMDS = "http://169.254.169.254"


@dataclass(frozen=True)
class Ack:
    """What an LB did with desired ``version``.

    :ivar refused: why it refused the version ("": applied).
    :ivar draining: sessions still open on the servers the version drains (0: none).
    """

    version: int
    refused: str = ""
    draining: int = 0

    @property
    def applied(self) -> bool:
        """The version was applied."""
        return not self.refused

    def value(self) -> str:
        """The tag's value (at most :data:`MAX_VALUE` characters)."""
        if self.refused:
            reason = " ".join(self.refused.split())  # one line
            text = f"{self.version} refused: {reason}"
            return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."
        if self.draining:
            return f"{self.version} applied; draining {self.draining}"
        return f"{self.version} applied"


def parse(value: str | None) -> Ack | None:
    """The :class:`Ack` a tag value says, or None (no tag, or not one hapair wrote)."""
    m = _VALUE.fullmatch((value or "").strip())
    if m is None:
        return None
    version, what, draining, reason = m.groups()
    if what == "refused":
        return Ack(int(version), reason or "no reason given")
    return Ack(int(version), draining=int(draining or 0))


@dataclass(frozen=True)
class Verdict:
    """Where the LBs are with a version.

    :ivar waiting: LBs that have not acknowledged it yet (or still drain, when asked).
    :ivar refused: LB -> its reason, for those that refused it.
    :ivar silent: LBs that never wrote an acknowledgement at all (an older hapair).
    :ivar said: LB -> its current tag value ("" when none), for messages.
    """

    waiting: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    silent: tuple[str, ...] = ()
    said: Mapping[str, str] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Every LB acknowledged (or refused: see ``refused``)."""
        return not self.waiting


def judge(
    acks: Mapping[str, Ack | None], version: int, lbs: Iterable[str], *, drained: bool = False
) -> Verdict:
    """Where ``lbs`` are with ``version``, from their acknowledgements. Pure.

    An acknowledgement of a later version counts (someone published again since; that LB has
    moved past this one). A refusal counts only for this very version.

    :param drained: also wait until an LB that acknowledged ``version`` has no session left on
        the servers it drains.
    """
    waiting, silent = [], []
    refused: dict[str, str] = {}
    said = {lb: (a.value() if a else "") for lb, a in acks.items()}
    for lb in lbs:
        a = acks.get(lb)
        if a is None:
            waiting.append(lb)
            silent.append(lb)
        elif a.version < version:
            waiting.append(lb)
        elif a.version == version and a.refused:
            refused[lb] = a.refused
        elif drained and a.version == version and a.draining:
            waiting.append(lb)
    return Verdict(tuple(waiting), refused, tuple(silent), said)


class Acknowledger(abc.ABC):
    """Where an LB's follower writes its acknowledgements."""

    @abc.abstractmethod
    def put(self, ack: Ack) -> None:
        """Write ``ack``.

        :raises OperationError: it could not be written (the follower tries again later).
        """


class MemoryAcknowledger(Acknowledger):
    """Keeps every acknowledgement in a list (tests, and a follower without EC2)."""

    def __init__(self) -> None:
        self.acks: list[Ack] = []

    def put(self, ack: Ack) -> None:
        """Append ``ack``."""
        self.acks.append(ack)


def imds_instance_id(timeout: float = 2.0) -> str | None:
    """This instance's id from the instance metadata service (IMDSv2), or None when there is
    none (``AWS_EC2_METADATA_DISABLED``, not on EC2)."""
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    try:
        req = urllib.request.Request(
            f"{IMDS}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as res:
            token = res.read().decode()
        req = urllib.request.Request(
            f"{IMDS}/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return str(res.read().decode()).strip() or None
    except OSError:
        return None


class TagAcknowledger(Acknowledger):
    """Writes ``hapair:applied`` on this LB's own instance.

    :param ec2: a boto3 EC2 client with the LB role's credentials.
    :param instance_id: this instance; None: asked of IMDS, else found by the node's tags
        (``hapair:cluster``, ``hapair:node``, running) at the first write.
    """

    def __init__(self, ec2: Any, cluster: str, node: str, instance_id: str | None = None) -> None:
        self.ec2, self.cluster, self.node = ec2, cluster, node
        self.instance_id = instance_id

    def _instance(self) -> str:
        if self.instance_id:
            return self.instance_id
        found = imds_instance_id()
        if found is None:
            res = self.ec2.describe_instances(
                Filters=cluster_filter(
                    self.cluster,
                    (f"tag:{TAG_NODE}", [self.node]),
                    ("instance-state-name", ["running"]),
                )
            )
            ids = [i["InstanceId"] for r in res.get("Reservations", []) for i in r["Instances"]]
            if len(ids) != 1:
                raise OperationError(f"{self.node}: {len(ids)} running instances carry its tag")
            found = ids[0]
        self.instance_id = found
        return found

    def put(self, ack: Ack) -> None:
        """``CreateTags`` of ``hapair:applied`` on this instance.

        :raises OperationError: the call failed (the AWS error code kept).
        """
        try:
            self.ec2.create_tags(
                Resources=[self._instance()], Tags=[{"Key": TAG_APPLIED, "Value": ack.value()}]
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            raise OperationError(f"acknowledgement not written: {code}", code) from exc
        except BotoCoreError as exc:
            raise OperationError(f"acknowledgement not written: {exc}") from exc


def read(aws: Aws, cluster: str) -> dict[str, Ack | None]:
    """LB node -> its acknowledgement (None: no tag), from the cluster's running LB instances."""
    res = aws.must(
        aws.ec2.describe_instances,
        f"lb instances of {cluster}",
        Filters=cluster_filter(
            cluster, (f"tag:{TAG_ROLE}", ["lb"]), ("instance-state-name", ["pending", "running"])
        ),
    )
    out: dict[str, Ack | None] = {}
    for r in res.get("Reservations", []):
        for inst in r["Instances"]:
            tags = tags_of(inst)
            out[tags.get(TAG_NODE, inst["InstanceId"])] = parse(tags.get(TAG_APPLIED))
    return out


def wait(
    aws: Aws,
    cluster: str,
    version: int,
    lbs: Iterable[str],
    *,
    timeout: float,
    drained: bool = False,
    step: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    on_round: Callable[[], object] | None = None,
    silent_s: float | None = None,
) -> Verdict:
    """Read the acknowledgements every ``step`` seconds until every LB of ``lbs`` has
    acknowledged ``version`` (and, with ``drained``, drains nothing more), at most ``timeout``
    seconds of waiting (the sleeps are what is counted, so a test's fake sleep is its clock).

    :param on_round: called after each read (the caller reports what else it watches).
    :param silent_s: stop earlier, once this long was waited, when every LB still waited for
        has never acknowledged anything (:attr:`Verdict.silent`: an older hapair).
    :returns: the last verdict: ``done``, or not when the time ran out (the caller decides
        whether that is an error: see :func:`require`).
    :raises OperationError: an LB refused ``version`` (named, with its reason).
    """
    lbs = list(lbs)
    waited = 0.0
    while True:
        verdict = judge(read(aws, cluster), version, lbs, drained=drained)
        if on_round is not None:
            on_round()
        if verdict.refused:
            lb, reason = sorted(verdict.refused.items())[0]
            raise OperationError(f"{lb} refused version {version}: {reason}")
        if verdict.done or waited >= timeout:
            return verdict
        if (
            silent_s is not None
            and waited >= silent_s
            and set(verdict.waiting) <= set(verdict.silent)
        ):
            return verdict
        pause = min(step, max(timeout - waited, 0.0)) or step
        sleep(pause)
        waited += pause


def require(verdict: Verdict, version: int, timeout: float, what: str = "acknowledge") -> None:
    """Raise unless every LB acknowledged: the message says who is late and what they say.

    :raises OperationError: some LB did not ``what`` version ``version`` within ``timeout``.
    """
    if verdict.done:
        return
    late = [
        f"{lb} (its last: {verdict.said.get(lb) or 'no acknowledgement yet'})"
        for lb in verdict.waiting
    ]
    raise OperationError(
        f"timed out after {timeout:g} s waiting for {', '.join(late)} to {what} version {version}"
    )


#: What applying one version may take on an LB (a reload waits at most 20 s for its worker).
APPLY_BOUND_S = 30.0


def ack_timeout(poll_bound_s: float) -> float:
    """How long an LB may take to acknowledge a version: two poll intervals (one poll may fail
    and back off) and the time to apply it."""
    return 2 * poll_bound_s + APPLY_BOUND_S


def settle(
    aws: Aws,
    cluster: str,
    version: int,
    lbs: Iterable[str],
    say: Callable[[str], None],
    *,
    timeout: float,
    silent_s: float,
    sleep: Callable[[float], None] = time.sleep,
    on_round: Callable[[], object] | None = None,
) -> Verdict:
    """Wait until every LB of ``lbs`` acknowledged ``version`` (:func:`wait`); LBs that never
    acknowledge anything are waited for ``silent_s`` only, and said so.

    :raises OperationError: an LB refused it (named, with its reason), or one that does
        acknowledge did not within ``timeout``.
    """
    verdict = wait(
        aws,
        cluster,
        version,
        lbs,
        timeout=timeout,
        silent_s=silent_s,
        sleep=sleep,
        on_round=on_round,
    )
    if verdict.done:
        return verdict
    if set(verdict.waiting) <= set(verdict.silent):
        say(
            f"{', '.join(verdict.waiting)} acknowledge nothing (an older hapair on them, or still "
            f"booting): waited {silent_s:g} s for them instead"
        )
        return verdict
    require(verdict, version, timeout)
    return verdict


def await_drain(
    aws: Aws,
    cluster: str,
    version: int,
    lbs: Iterable[str],
    names: str,
    say: Callable[[str], None],
    *,
    poll_bound_s: float,
    drain_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Before web instances are terminated: wait until every LB acknowledged the version
    that drains them (``names``), then until no LB has a session left on them, at most
    ``drain_s`` (the drain timeout; what is left then is cut, as in the lab). LBs that never
    acknowledge (an older hapair) get the old fixed wait: one poll interval, then ``drain_s``.

    :raises OperationError: an LB refused the version, or did not acknowledge it in time
        (nothing is terminated then).
    """
    lbs = list(lbs)
    timeout = ack_timeout(poll_bound_s)
    say(f"version {version}: {names} in drain; waiting until {', '.join(lbs)} acknowledge it")
    verdict = settle(
        aws, cluster, version, lbs, say, timeout=timeout, silent_s=poll_bound_s, sleep=sleep
    )
    if verdict.silent:  # their sessions cannot be seen: the whole drain timeout
        say(f"waiting the drain timeout ({drain_s:g} s) for sessions on {names} to end")
        sleep(drain_s)
        return
    talking = [lb for lb in lbs if lb not in verdict.silent]
    said = judge(read(aws, cluster), version, talking, drained=True)
    if said.done:
        say(f"{', '.join(talking)} drain {names}, no session left on them")
        return
    say(f"{', '.join(said.waiting)} still have sessions on {names}; waiting at most {drain_s:g} s")
    drained = wait(aws, cluster, version, talking, timeout=drain_s, drained=True, sleep=sleep)
    if drained.done:
        say(f"no session left on {names}")
    else:
        say(f"sessions still open on {names} after {drain_s:g} s: they are cut")
