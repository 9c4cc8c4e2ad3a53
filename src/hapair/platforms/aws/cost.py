"""An hourly cost estimate of a cluster on AWS. Pure.

Prices are us-east-1 on-demand Linux list prices in USD (2024); other regions differ by up to
about 30 %. They are an estimate for ``hapair plan``, not a bill: data transfer is not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from hapair.platforms.aws.layout import AwsLayout

#: USD per hour, on demand, Linux, us-east-1.
INSTANCE_HOURLY: dict[str, float] = {
    "t3.nano": 0.0052,
    "t3.micro": 0.0104,
    "t3.small": 0.0208,
    "t3.medium": 0.0416,
    "t3.large": 0.0832,
    "t3.xlarge": 0.1664,
    "t3a.micro": 0.0094,
    "t3a.small": 0.0188,
    "t3a.medium": 0.0376,
    "t3a.large": 0.0752,
    "t2.micro": 0.0116,
    "t2.small": 0.023,
    "t2.medium": 0.0464,
    "t4g.small": 0.0168,
    "t4g.medium": 0.0336,
    "m5.large": 0.096,
    "m6i.large": 0.096,
    "m7i.large": 0.1008,
    "c5.large": 0.085,
    "c6i.large": 0.085,
    "c7i.large": 0.08925,
    "r6i.large": 0.126,
}
#: Every public IPv4 address (EIPs, and the web nodes' egress addresses).
PUBLIC_IPV4_HOURLY = 0.005
#: An interface VPC endpoint, per AZ.
ENDPOINT_HOURLY = 0.01
#: gp3 root volume, 8 GiB at 0.08 USD per GiB-month (730 h).
VOLUME_HOURLY = 8 * 0.08 / 730


@dataclass(frozen=True)
class CostLine:
    """One line of the estimate; ``unit`` is ``None`` for an instance type with no known price."""

    item: str
    count: int
    unit: float | None

    @property
    def hourly(self) -> float:
        """count × unit (0 when the price is unknown)."""
        return self.count * (self.unit or 0.0)


def estimate(layout: AwsLayout, *, endpoint: bool = True) -> list[CostLine]:
    """The cost lines of a cluster."""
    lines: list[CostLine] = []
    counts: dict[str, int] = {}
    for n in layout.nodes:
        counts[n.instance_type] = counts.get(n.instance_type, 0) + 1
    for itype, count in sorted(counts.items()):
        lines.append(CostLine(f"{itype} instance", count, INSTANCE_HOURLY.get(itype)))
    lines.append(CostLine("8 GiB gp3 root volume", len(layout.nodes), VOLUME_HOURLY))
    public = len(layout.vips) + len(layout.webs)
    lines.append(CostLine("public IPv4 address (2 EIPs + web egress)", public, PUBLIC_IPV4_HOURLY))
    if endpoint:
        lines.append(
            CostLine(
                "EC2 + SSM interface endpoints (per AZ; the S3 gateway endpoint is free)",
                2 * len(layout.subnets),
                ENDPOINT_HOURLY,
            )
        )
    return lines


def total(lines: list[CostLine]) -> float:
    """USD per hour of all lines."""
    return sum(line.hourly for line in lines)


def format_estimate(lines: list[CostLine]) -> str:
    """The estimate as text: one line per item, then the total per hour and per 30 days."""
    out = []
    for line in lines:
        price = f"{line.unit:.4f}" if line.unit is not None else "unknown"
        out.append(f"  {line.count:3d} × {line.item:<45} {price:>9} USD/h  = {line.hourly:.4f}")
    t = total(lines)
    out.append(
        f"  total ≈ {t:.4f} USD/h ≈ {t * 24 * 30:.2f} USD per 30 days (us-east-1 list prices)"
    )
    if any(line.unit is None for line in lines):
        out.append("  (an instance type has no price in hapair's table: not counted)")
    return "\n".join(out)
