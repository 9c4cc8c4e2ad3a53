"""The N-node agent's configuration (``agent.toml`` with ``coordinator = "etcd"``), issue 13.

The pair's :class:`~hapair.agent.config.AgentConfig` names one peer; this one names every other
LB of the cluster and the etcd cluster that grants VIP ownership. The timings and the local
HAProxy settings mean exactly what they mean for the pair. :func:`is_etcd_config` tells the
two kinds apart, so ``python -m hapair.agent`` starts the right daemon.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hapair.agent.config import VipConfig
from hapair.errors import SpecError
from hapair.spec import format_errors
from hapair.spec_checks import CheckPath, IPv4, Port, StrictBool, has_control
from hapair.spec_timings import (
    ActionTimeoutMs,
    DeadtimeMs,
    DelayMs,
    EtcdLeaseTtlMs,
    HealthCount,
    HealthIntervalMs,
    InitdeadMs,
    IntervalMs,
    ReconcileIntervalMs,
    RequestTimeoutMs,
    WarntimeMs,
    timing_problem,
)


class PeerConfig(BaseModel):
    """Another LB of the cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Its node name (lb3).
    name: str
    # Where heartbeats go: its primary and secondary addresses.
    addresses: list[str]
    # Its primary address; its HAProxy is probed there while its heartbeats are late.
    probe_address: str


class NodeConfig(BaseModel):
    """Everything one N-node agent needs; paths are absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Always "etcd": what makes this file an N-node agent's.
    coordinator: Literal["etcd"]
    cluster: str
    node: str
    # Every other LB (heartbeats go to all of them: a full mesh, N <= 16).
    peers: list[PeerConfig] = Field(min_length=1, max_length=15)
    bind: str = "0.0.0.0"
    port: Port = 694
    key_file: str
    admin_token_file: str
    api_port: Port = 9023
    api_bind: str = "0.0.0.0"
    api_socket: str = ""
    stats_socket: str
    http_port: Port = 80
    check_path: CheckPath = "/health"
    ping_nodes: list[IPv4] = Field(default_factory=list)
    # The [ha] timings, bounded as in the spec (and as the pair's agent.toml).
    interval_ms: IntervalMs = 50
    warntime_ms: WarntimeMs = 100
    deadtime_ms: DeadtimeMs = 150
    initdead_ms: InitdeadMs = 1500
    auto_failback: StrictBool = True
    # A node takes VIPs from live, healthy peers (to balance) only after this much stability.
    failback_delay_ms: DelayMs = 3000
    health_interval_ms: HealthIntervalMs = 100
    request_timeout_ms: RequestTimeoutMs = 500
    health_rise: HealthCount = 2
    health_fall: HealthCount = 3
    # Balancing moves (not failovers) are at least this far apart, one VIP at a time.
    min_move_interval_ms: DelayMs = 1000
    reconcile_interval_ms: ReconcileIntervalMs = 1000
    action_timeout_ms: ActionTimeoutMs = 5000
    log_format: Literal["text", "json"] = "text"
    realtime: StrictBool = True
    boot_file: str = ""
    # etcd's client URLs (every member), its user and the file holding its password (0600).
    etcd_endpoints: list[str] = Field(min_length=1)
    etcd_user: str = "root"
    etcd_password_file: str
    # This node's lease TTL (ha.etcd_lease_ttl_ms, rounded up to whole seconds for etcd).
    etcd_lease_ttl_ms: EtcdLeaseTtlMs = 3000
    # Bound on one etcd call, over every member tried.
    etcd_timeout_ms: int = Field(default=1000, ge=100, le=10_000)
    # How often owners are read again besides the watch (the watch may break silently).
    etcd_poll_ms: int = Field(default=500, ge=50, le=10_000)
    # Make-before-break: a node keeps a VIP it lost in etcd until the new owner's heartbeat
    # says it holds it, and at most this long.
    handover_ms: int = Field(default=1000, ge=0, le=10_000)
    vips: list[VipConfig]

    @model_validator(mode="after")
    def _check(self) -> NodeConfig:
        problem = timing_problem(self.interval_ms, self.warntime_ms, self.deadtime_ms)
        if problem is not None:
            raise ValueError(problem)
        names = [p.name for p in self.peers]
        if self.node in names or len(set(names)) != len(names):
            raise ValueError(f"peers: names must be distinct and not {self.node} (got {names})")
        for v in (self.cluster, self.node, *names):
            if has_control(v):
                raise ValueError(f"control characters are not allowed (got {v!r})")
        return self

    @property
    def peer_names(self) -> list[str]:
        """The other LBs' names."""
        return [p.name for p in self.peers]

    @property
    def lease_ttl_s(self) -> int:
        """The lease TTL etcd is asked for, in whole seconds (rounded up)."""
        return -(-self.etcd_lease_ttl_ms // 1000)

    def boot_path(self) -> Path:
        """Where the boot counter lives (as for the pair)."""
        if self.boot_file:
            return Path(self.boot_file)
        if self.api_socket:
            return Path(self.api_socket).parent / "boot"
        return Path(f"/var/lib/hapair/{self.cluster}-{self.node}.boot")


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the agent config ({exc.strerror})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{path}: not valid TOML ({exc})"]) from None


def is_etcd_config(path: Path) -> bool:
    """Whether ``path`` configures an N-node agent (``coordinator = "etcd"``).

    :raises SpecError: unreadable or not TOML.
    """
    return _read(path).get("coordinator") == "etcd"


def load_node_config(path: Path) -> NodeConfig:
    """Read and validate an N-node ``agent.toml``.

    :raises SpecError: unreadable, not TOML, or invalid (field named).
    """
    try:
        return NodeConfig.model_validate(_read(path))
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


def _val(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    s = str(v)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in s):
        raise SpecError([f"agent.toml: a value has control characters ({s!r})"])
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dump_node_toml(cfg: NodeConfig) -> str:
    """Write the config as TOML: flat keys, then ``[[peers]]`` and ``[[vips]]`` tables."""
    data = cfg.model_dump()
    tables = {k: data.pop(k) for k in ("peers", "vips")}
    lines = [f"# hapair N-node agent for {cfg.node} of cluster {cfg.cluster}; rendered by hapair."]
    lines += [f"{k} = {_val(v)}" for k, v in data.items()]
    for name, rows in tables.items():
        for row in rows:
            lines += ["", f"[[{name}]]"] + [f"{k} = {_val(v)}" for k, v in row.items()]
    return "\n".join(lines) + "\n"
