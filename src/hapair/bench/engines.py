"""The HA layers a failover benchmark can put in a lab: hapair's agents, keepalived, heartbeat."""

from __future__ import annotations

import re
from typing import Protocol

from hapair.agent.client import agent_request
from hapair.bench.heartbeat import Heartbeat
from hapair.bench.keepalived import Keepalived
from hapair.errors import OperationError, UsageError
from hapair.plan import Plan
from hapair.platforms.lab.paths import LabPaths

ENGINES = ("hapair", "keepalived", "heartbeat")
MOVES_RE = re.compile(r'^hapair_vip_moves_total\{[^}]*action="(take|release)"[^}]*\}\s+(\S+)', re.M)


class HaEngine(Protocol):
    """What the benchmark needs from an HA layer."""

    #: The lab platform's engine for it: ``hapair`` (lab starts the agents) or ``none``.
    lab_engine: str

    def prepare(self) -> None:
        """Write configurations (after ``up``, before the first ``start``)."""

    def start(self, lb: str) -> None:
        """Start the HA daemon on ``lb`` (its HAProxy runs already)."""

    def running(self, lb: str) -> bool:
        """Whether the HA daemon runs on ``lb``."""


class HapairAgents:
    """hapair's own agents: the lab starts them (``up``, ``revive``)."""

    lab_engine = "hapair"

    def __init__(self, plan: Plan, variant: str = "default") -> None:
        if variant != "default":
            raise UsageError("hapair has one variant: default (the spec's timings)")
        self.plan = plan
        self.variant = variant
        self.paths = LabPaths(plan.name)

    def prepare(self) -> None:
        """Nothing to write: the lab rendered agent.toml."""

    def start(self, lb: str) -> None:
        """Nothing: ``revive`` starts the agent."""

    def running(self, lb: str) -> bool:
        """Whether the lab's agent process on ``lb`` is alive (read live from its supervisor:
        the state file's pid predates a restart)."""
        from hapair.platforms.lab.platform import LabPlatform

        return LabPlatform().service(self.plan.name, lb, "agent") is not None

    def admin(self, lb: str, action: str) -> str:
        """A planned operation (``standby`` or ``online``) through the agent's API."""
        token = self.paths.admin_token.read_text().strip()
        sock = str(self.paths.agent_sock(lb))
        status, body = agent_request(sock, "POST", f"/{action}", token=token)
        if status != 200:
            raise OperationError(f"{lb} refused {action}: {status} {body}")
        return str(body.get("message", body) if isinstance(body, dict) else body)

    def moves(self) -> int:
        """VIP takes and releases both agents counted since they started
        (``hapair_vip_moves_total``)."""
        total = 0.0
        for lb in self.plan.lbs:
            _, body = agent_request(str(self.paths.agent_sock(lb.name)), "GET", "/metrics")
            total += sum(float(v) for _, v in MOVES_RE.findall(str(body)))
        return int(total)


def make_engine(engine: str, plan: Plan, variant: str) -> HapairAgents | Keepalived | Heartbeat:
    """The engine object for ``--engine`` / ``--variant``.

    :raises UsageError: unknown engine or variant.
    """
    try:
        if engine == "hapair":
            return HapairAgents(plan, variant)
        if engine == "keepalived":
            return Keepalived(plan, variant)
        if engine == "heartbeat":
            return Heartbeat(plan, variant)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError(f"--engine must be one of {', '.join(ENGINES)} (got {engine})")
