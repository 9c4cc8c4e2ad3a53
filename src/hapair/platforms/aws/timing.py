"""The agents' timings on AWS. Pure.

The lab's defaults (heartbeats every 50 ms, dead after 150 ms) are made for namespaces on one
host. On burstable cloud instances a pause of a few hundred milliseconds is ordinary (CPU
credits, a noisy neighbour, a live migration), every false failover remaps an EIP (breaking the
connections of its clients, and billed beyond a free allowance), and an EIP move itself takes
API calls and propagation measured in seconds, not milliseconds. So on ``platform = "aws"``,
every ``[ha]`` timing the spec leaves at the lab default takes :data:`AWS_PROFILE` instead
(``aws.timing_profile = "spec"`` keeps ``[ha]`` exactly as written). docs/aws.md explains each
value and what tightening it gains and risks.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from hapair.errors import SpecError
from hapair.spec import HaSpec, Spec, format_errors

#: [ha] timings for AWS (milliseconds).
AWS_PROFILE: dict[str, int] = {
    # One heartbeat a second: cheap, and five of them fit in a deadtime.
    "interval_ms": 1000,
    "warntime_ms": 3000,
    # Five lost heartbeats in a row: longer than the pauses a t3 instance shows.
    "deadtime_ms": 5000,
    # A never-heard peer is still installing (apt, pip: minutes); taking its EIP would cut it
    # off from the Internet (its EIP is its only way out) and it would never finish.
    "initdead_ms": 600_000,
    # A returning LB must be stable this long before it takes its EIP back: one remap.
    "failback_delay_ms": 30_000,
    "health_interval_ms": 500,
    # Voluntary moves of one VIP at most every 30 s (failovers are never limited).
    "min_move_interval_ms": 30_000,
}
#: agent.toml settings that are not in the spec, for AWS.
AWS_AGENT: dict[str, int] = {
    # monitor answers come from a cache (aws_eip.READ_TTL); reading it every second is free.
    "reconcile_interval_ms": 1000,
    # A move: a read, one AssociateAddress, reads until it shows (each a round trip).
    "action_timeout_ms": 10_000,
    # A self-check slower than this through loopback is a failure.
    "request_timeout_ms": 1000,
}


def effective_ha(spec: Spec) -> HaSpec:
    """The ``[ha]`` the agents run with on AWS: the spec's, with every timing left at the lab
    default replaced by :data:`AWS_PROFILE` (unless ``aws.timing_profile = "spec"``).

    :raises SpecError: the timings set in the spec do not fit with the profile's (say which).
    """
    ha = spec.ha
    if spec.aws.timing_profile != "aws":
        return ha
    lab = HaSpec()
    update: dict[str, Any] = {
        name: value
        for name, value in AWS_PROFILE.items()
        if getattr(ha, name) == getattr(lab, name)
    }
    try:
        return HaSpec.model_validate({**ha.model_dump(), **update})
    except ValidationError as exc:
        kept = ", ".join(f"{k}={v}" for k, v in sorted(update.items()))
        raise SpecError(
            [
                *format_errors(exc),
                f"aws.timing_profile: the AWS profile set {kept}; set those [ha] timings "
                'too, or aws.timing_profile = "spec" to use [ha] as written',
            ]
        ) from None
