"""The aws fabric's edge, pure: when an association change reaches the data plane, and the igw's
nftables table that carries it out.

EC2 translates an EIP 1:1 to the private address it is associated with (DNAT on the way in,
SNAT on the way out); a remap reaches the data plane some time after the API has accepted it.
:class:`Propagation` models that delay; :func:`table_script` and :func:`maps_script` are the
igw's ruleset and its updates. No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: The igw's nftables table of the fabric.
TABLE = "hapair_fabric"

#: One EIP's target: the private address it is associated with, or None (associated with nothing).
Target = str | None


@dataclass
class Propagation:
    """Association changes seen in the API reach the data plane ``delay_s`` later, in order.

    The first reading of an EIP is the state the fabric starts from: it applies at once.
    Times are monotonic seconds; pure.
    """

    delay_s: float
    #: the newest target the API showed, per EIP
    seen: dict[str, Target] = field(default_factory=dict)
    #: what the data plane does now, per EIP
    applied: dict[str, Target] = field(default_factory=dict)
    #: (due time, EIP, target) not applied yet, oldest first
    pending: list[tuple[float, str, Target]] = field(default_factory=list)

    def observe(self, now: float, reading: Mapping[str, Target]) -> list[str]:
        """Record one reading of the API; returns the EIPs whose target changed in it."""
        changed = []
        for eip, target in reading.items():
            if eip not in self.seen:
                self.seen[eip] = self.applied[eip] = target
                changed.append(eip)
            elif self.seen[eip] != target:
                self.seen[eip] = target
                self.pending.append((now + self.delay_s, eip, target))
                changed.append(eip)
        return changed

    def due(self, now: float) -> dict[str, Target]:
        """Apply every change due by ``now``; returns the EIPs whose applied target changed,
        with their new target."""
        before: dict[str, Target] = {}
        while self.pending and self.pending[0][0] <= now:
            _, eip, target = self.pending.pop(0)
            before.setdefault(eip, self.applied.get(eip))
            self.applied[eip] = target
        return {e: self.applied[e] for e, was in before.items() if self.applied[e] != was}

    def next_due(self) -> float | None:
        """When the next pending change is due (None: nothing pending)."""
        return self.pending[0][0] if self.pending else None


def table_script(eips: list[str], inet_if: str, applied: Mapping[str, Target]) -> str:
    """The igw's fabric table, replaced as a whole (an ``nft -f`` script, atomic).

    Packets from the Internet side to an EIP are translated to its private address; new
    connections an LB opens to the Internet from an associated private address leave from its
    EIP; packets to an EIP associated with nothing are dropped, as EC2's edge does (they would
    otherwise be answered with an ICMP error by the igw).
    """
    members = ", ".join(eips)
    return (
        f"table ip {TABLE}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        f"    set eips {{\n        type ipv4_addr\n        elements = {{ {members} }}\n    }}\n"
        "    map dnat_to {\n        type ipv4_addr : ipv4_addr\n    }\n"
        "    map snat_to {\n        type ipv4_addr : ipv4_addr\n    }\n"
        "    counter unassociated_dropped {\n    }\n"
        "    chain prerouting {\n"
        "        type nat hook prerouting priority dstnat; policy accept;\n"
        f'        iif "{inet_if}" dnat to ip daddr map @dnat_to\n'
        "    }\n"
        "    chain postrouting {\n"
        "        type nat hook postrouting priority srcnat; policy accept;\n"
        f'        oif "{inet_if}" snat to ip saddr map @snat_to\n'
        "    }\n"
        "    chain forward {\n"
        "        type filter hook forward priority filter; policy accept;\n"
        "        ip daddr @eips counter name unassociated_dropped drop\n"
        "    }\n"
        "}\n" + maps_script(applied)
    )


def maps_script(applied: Mapping[str, Target]) -> str:
    """An ``nft -f`` script that sets both translation maps to ``applied`` in one transaction.

    An EIP associated with nothing is in neither map. A private address appears once in the
    SNAT map (EC2 associates at most one EIP with a private address; the first one wins here).
    """
    dnat = {eip: target for eip, target in sorted(applied.items()) if target}
    snat: dict[str, str] = {}
    for eip, target in dnat.items():
        snat.setdefault(target, eip)
    lines = [f"flush map ip {TABLE} dnat_to", f"flush map ip {TABLE} snat_to"]
    if dnat:
        pairs = ", ".join(f"{e} : {t}" for e, t in dnat.items())
        lines.append(f"add element ip {TABLE} dnat_to {{ {pairs} }}")
        pairs = ", ".join(f"{t} : {e}" for t, e in snat.items())
        lines.append(f"add element ip {TABLE} snat_to {{ {pairs} }}")
    return "\n".join(lines) + "\n"
