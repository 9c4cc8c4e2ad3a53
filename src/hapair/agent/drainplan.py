"""The failback drain's pure half: when a move starts a drain, and which rules it writes.

See :mod:`hapair.agent.drain` for the design and the effects. Nothing here does I/O: the
decisions take the peer's view as an argument, the commands are text (``ip -batch`` lines and
``nft -f`` scripts), as pyinfra's facts and operations are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hapair.agent.protocol import Heartbeat

#: The fwmark of packets handed back to the releaser (0x4850: "HP").
MARK = 0x4850
#: The routing table of marked packets.
TABLE = 4850
#: The ``ip rule`` preference of the mark rule, and where the ``local`` rule moves meanwhile.
RULE_PREF = 100
LOCAL_PREF = 200
#: The nftables table and set the LB's ruleset declares (render/templates/lb.nft.j2).
NFT_TABLE = "inet hapair"
NFT_SET = "drain_vips"
#: Where the releaser keeps the address during the drain.
LINGER_IF = "lo"
#: A set element outlives the drain by this much (the agent removes it itself on time).
EXPIRY_MARGIN_MS = 1000


# ---------------------------------------------------------------------- pure: decisions
@dataclass(frozen=True)
class PeerView:
    """What this node knows of its peer when a VIP moves.

    :ivar name: the peer's node name.
    :ivar live: its heartbeats arrive (up or late, not dead).
    :ivar serving: its last heartbeat says its HAProxy is healthy.
    :ivar holds: the VIPs its last heartbeat says it holds.
    """

    name: str
    live: bool
    serving: bool
    holds: frozenset[str]


@dataclass(frozen=True)
class Verdict:
    """Whether to drain, and why (a lowercase sentence)."""

    drain: bool
    reason: str


def peer_view(name: str, live: bool, last: Heartbeat | None) -> PeerView:
    """The :class:`PeerView` of peer ``name`` from its last heartbeat (``None``: never heard)."""
    if last is None:
        return PeerView(name, False, False, frozenset())
    return PeerView(name, live, last.healthy, frozenset(last.held))


def on_take(vip: str, drain_ms: int, held_before: bool | None, peer: PeerView) -> Verdict:
    """Whether taking ``vip`` starts a drain that forwards unknown connections to the peer."""
    if drain_ms <= 0:
        return Verdict(False, "the drain is disabled (drain_ms = 0)")
    if held_before:
        return Verdict(False, f"{vip} is already held here")
    if not peer.live:
        return Verdict(False, f"{peer.name} is not alive: no connection of its can be served")
    if vip not in peer.holds:
        return Verdict(False, f"{peer.name} does not hold {vip}")
    if not peer.serving:
        return Verdict(False, f"{peer.name}'s HAProxy is not healthy")
    return Verdict(
        True,
        f"forwarding connections this node does not know on {vip} to {peer.name} for {drain_ms} ms",
    )


def on_release(vip: str, drain_ms: int, held_before: bool | None, peer: PeerView) -> Verdict:
    """Whether releasing ``vip`` keeps the address on ``lo`` for the connections the peer
    hands back."""
    if drain_ms <= 0:
        return Verdict(False, "the drain is disabled (drain_ms = 0)")
    if held_before is False:
        return Verdict(False, f"{vip} is not held here")
    if not peer.live:
        return Verdict(False, f"{peer.name} is not alive: it hands nothing back")
    return Verdict(
        True, f"keeping {vip} on {LINGER_IF} for {drain_ms} ms for the connections it serves"
    )


# ---------------------------------------------------------------------- pure: commands
def nft_forward(address: str, ms: int) -> str:
    """``nft -f`` script: ``address`` in the drain set, its timeout (re)armed to ``ms``."""
    el = f"{NFT_TABLE} {NFT_SET} {{ {address} timeout {ms}ms }}"
    return f"add element {el}\ndelete element {NFT_TABLE} {NFT_SET} {{ {address} }}\n" + (
        f"add element {el}\n"
    )


def nft_unforward(addresses: Iterable[str]) -> str:
    """``nft -f`` script: the ``addresses`` out of the drain set (present or not)."""
    lines = []
    for a in addresses:
        lines.append(f"add element {NFT_TABLE} {NFT_SET} {{ {a} timeout 1s }}")
        lines.append(f"delete element {NFT_TABLE} {NFT_SET} {{ {a} }}")
    return "\n".join(lines) + "\n"


def is_local_rule(rule: dict[str, Any], pref: int) -> bool:
    """Whether an ``ip -j rule`` entry is a plain ``lookup local`` at ``pref``."""
    plain = set(rule) <= {"priority", "src", "table"} and rule.get("src") == "all"
    return plain and rule.get("table") == "local" and rule.get("priority") == pref


def is_mark_rule(rule: dict[str, Any]) -> bool:
    """Whether an ``ip -j rule`` entry is the drain's mark rule."""
    return rule.get("priority") == RULE_PREF and rule.get("table") == str(TABLE)


def rule_lines(rules: Sequence[dict[str, Any]], forwarding: bool) -> list[str]:
    """``ip -batch`` lines that take the rules (``ip -j rule show``) to the drain's state: the
    mark rule before a ``local`` rule moved behind it, or the kernel's usual ``local`` at 0
    and nothing of ours. Adds come before deletes: ``local`` is never missing."""
    has_mark = any(is_mark_rule(r) for r in rules)
    local0 = any(is_local_rule(r, 0) for r in rules)
    moved = any(is_local_rule(r, LOCAL_PREF) for r in rules)
    mark = f"pref {RULE_PREF} fwmark {MARK:#x} lookup {TABLE}"
    out = []
    if forwarding:
        if not has_mark:
            out.append(f"rule add {mark}")
        if not moved:
            out.append(f"rule add pref {LOCAL_PREF} lookup local")
        if local0:
            out.append("rule del pref 0 lookup local")
        return out
    if not local0:
        out.append("rule add pref 0 lookup local")
    if moved:
        out.append(f"rule del pref {LOCAL_PREF} lookup local")
    out += [f"rule del pref {RULE_PREF} lookup {TABLE}" for r in rules if is_mark_rule(r)]
    return out


def route_line(peer_address: str, ifname: str) -> str:
    """The ``ip -batch`` line of table :data:`TABLE`'s route: via the releaser."""
    return f"route replace default via {peer_address} dev {ifname} onlink table {TABLE}"
