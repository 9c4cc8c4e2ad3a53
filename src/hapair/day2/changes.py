"""What changing a running cluster's spec means, decided without touching anything.

:func:`apply_plan` compares the running spec with a new one. It refuses fields that cannot
change live (:data:`FIXED`), and finds what each remaining difference needs by rendering both
specs' files with the same placeholders and comparing them: web nodes to add or remove
(:class:`ScalePlan`), LBs whose haproxy.cfg differs beyond its server list (a seamless reload),
LBs whose agent.toml differs (rewrite + SIGHUP), nodes whose nftables rules differ (one atomic
``nft -f``). A field that changes no file (``aws.*`` in the lab) is recorded and said so.
Everything here is pure: the renderers are pure functions of the plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hapair.errors import UsageError
from hapair.plan import Plan, make_plan
from hapair.render.agent import render_agent
from hapair.render.haproxy import render_haproxy
from hapair.render.nftables import render_nftables
from hapair.spec import Spec, parse

#: Fields that cannot change on a running cluster (by dotted prefix), and why.
FIXED: tuple[tuple[str, str], ...] = (
    ("cluster.", "it names and places the cluster"),
    ("network.", "addresses and floating IPs are wired into every node"),
    ("lb.", "always two load balancers"),
    ("ha.port", "both agents bind it when they start"),
    ("admin.port", "both agents bind their API when they start"),
    ("web.port", "every web app and HAProxy server line uses it"),
    ("haproxy.http_port", "clients and the agents' health checks use it"),
)
#: Fields the lab platform does not use (kept in the spec, nothing to do).
UNUSED_IN_LAB = ("aws.",)


@dataclass(frozen=True)
class FieldChange:
    """One field whose value differs (``path`` is dotted: ``haproxy.balance``)."""

    path: str
    old: Any
    new: Any

    def line(self) -> str:
        """``haproxy.balance: roundrobin -> leastconn``."""
        return f"{self.path}: {_show(self.old)} -> {_show(self.new)}"


def _show(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v) if v != "" else '""'


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in data.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def field_changes(old: Spec, new: Spec) -> list[FieldChange]:
    """Every field that differs, in the spec's order."""
    a = dict(_flatten(old.model_dump(mode="json")))
    b = dict(_flatten(new.model_dump(mode="json")))
    return [FieldChange(k, a[k], b[k]) for k in a if a[k] != b.get(k)]


def refusals(changes: list[FieldChange]) -> list[str]:
    """One sentence per change that cannot be made live (empty: all can)."""
    out = []
    for c in changes:
        for prefix, why in FIXED:
            if c.path == prefix or (prefix.endswith(".") and c.path.startswith(prefix)):
                out.append(f"{c.line()}: cannot change on a running cluster ({why})")
                break
    return out


def web_names(first: int, last: int) -> tuple[str, ...]:
    """``web<first>`` .. ``web<last>`` (empty when ``last < first``)."""
    return tuple(f"web{i}" for i in range(first, last + 1))


@dataclass(frozen=True)
class ScalePlan:
    """Web nodes to add and to remove (the highest-numbered go first)."""

    old: int
    new: int

    @property
    def add(self) -> tuple[str, ...]:
        """The new web nodes."""
        return web_names(self.old + 1, self.new)

    @property
    def remove(self) -> tuple[str, ...]:
        """The web nodes that go, drained first."""
        return web_names(self.new + 1, self.old)

    def lines(self, drain_s: float) -> list[str]:
        """What scaling does, one sentence a step (empty when the size is the same)."""
        if self.add:
            return [
                f"web {self.old} -> {self.new}: add {_names(self.add)}: namespace, link, "
                "security group and web app, then `add server` + `enable health` + "
                "`enable server` on both HAProxies through the runtime API (no reload); "
                "haproxy.cfg and the lab's state follow"
            ]
        if self.remove:
            return [
                f"web {self.old} -> {self.new}: remove {_names(self.remove)}: `set server ... "
                f"state drain` on both HAProxies, wait until their sessions end (at most "
                f"{drain_s:g} s), then `disable server` + `del server`; haproxy.cfg and the "
                "lab's state follow; then the web apps stop and the namespaces go"
            ]
        return []


def _names(names: tuple[str, ...]) -> str:
    if len(names) <= 4:
        return ", ".join(names)
    return f"{names[0]}, {names[1]}, ..., {names[-1]} ({len(names)} nodes)"


@dataclass(frozen=True)
class ApplyPlan:
    """What ``apply`` will do, in this order: scale, reload, firewall, agents."""

    changes: tuple[FieldChange, ...]
    scale: ScalePlan
    reload: tuple[str, ...] = ()
    firewall: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    unused: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """Nothing differs."""
        return not self.changes

    def lines(self, drain_s: float = 30.0) -> list[str]:
        """The plan as shown before anything is done."""
        if self.empty:
            return ["nothing to change: the running cluster has this spec"]
        out = ["changes:"] + [f"  ~ {c.line()}" for c in self.changes]
        steps = self.scale.lines(drain_s)
        if self.reload:
            steps.append(
                f"seamless reload of HAProxy on {' then '.join(self.reload)} (haproxy -c first; "
                "the new worker takes over the listening sockets, the old one finishes its "
                "connections)"
            )
        if self.firewall:
            steps.append(f"security groups on {_names(self.firewall)} (one atomic nft -f each)")
        if self.agents:
            steps.append(
                f"agent.toml on {', '.join(self.agents)}, then SIGHUP (checked in /status)"
            )
        if self.unused:
            steps.append(f"{', '.join(self.unused)}: not used by the lab (kept in the spec)")
        out.append("steps:")
        out += [f"  {i}. {s}" for i, s in enumerate(steps, 1)]
        return out


_PLACEHOLDERS = {
    "key_file": "<key>",
    "admin_token_file": "<token>",
    "stats_socket": "<haproxy.sock>",
    "api_socket": "<agent.sock>",
}


def _agent(plan: Plan, lb: str) -> str:
    """``lb``'s agent settings as text: the pair's agent.toml, or the N-node agent's config
    (``ha.coordinator = "etcd"``: every other LB is a peer, there is no single one)."""
    if plan.spec.ha.coordinator != "etcd":
        return render_agent(plan, lb, **_PLACEHOLDERS)
    from hapair.render.nagent import node_config

    cfg = node_config(
        plan, lb, **_PLACEHOLDERS, etcd_endpoints=["<etcd>"], etcd_password_file="<password>"
    )
    return cfg.model_dump_json()


def _haproxy(plan: Plan, lb: str) -> str:
    h = plan.spec.haproxy
    cert = (h.cert or "<lab.pem>") if h.https else None
    password = h.stats_password or "<generated>"
    return render_haproxy(
        plan, lb, stats_socket="<haproxy.sock>", stats_password=password, cert_path=cert
    )


def _resized(spec: Spec, size: int) -> Spec:
    data = spec.model_dump(mode="python")
    data["web"]["size"] = size
    return parse(data)


def apply_plan(old: Spec, new: Spec) -> ApplyPlan:
    """What it takes to bring a cluster running ``old`` to ``new``.

    :raises UsageError: a field that cannot change live differs (every such field named).
    """
    changes = field_changes(old, new)
    refused = refusals(changes)
    if refused:
        raise UsageError(
            "; ".join(refused) + f"; to change them, `hapair down --name {old.cluster.name}` "
            "then `hapair up` with the new spec"
        )
    scale = ScalePlan(old.web.size, new.web.size)
    before = make_plan(_resized(old, new.web.size))  # the old settings, the new web tier
    after = make_plan(new)
    lbs = [lb.name for lb in after.lbs]
    reload = tuple(lb for lb in lbs if _haproxy(before, lb) != _haproxy(after, lb))
    agents = tuple(lb for lb in lbs if _agent(before, lb) != _agent(after, lb))
    if agents and new.ha.coordinator == "etcd":
        fields = ", ".join(c.path for c in changes if c.path.startswith("ha.")) or "agent settings"
        raise UsageError(
            f'{fields}: the N-node agent (ha.coordinator = "etcd") does not reload its '
            f"settings while it runs; to change them, `hapair down --name {old.cluster.name}` "
            "then `hapair up` with the new spec"
        )
    firewall = tuple(
        n.name
        for n in after.nodes
        if render_nftables(before, n.name) != render_nftables(after, n.name)
    )
    unused = tuple(c.path for c in changes if c.path.startswith(UNUSED_IN_LAB))
    return ApplyPlan(tuple(changes), scale, reload, firewall, agents, unused)
