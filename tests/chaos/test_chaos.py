"""The chaos suite, bounded for CI: every scenario of ``hapair bench chaos`` with faults held
3 s, on one shared lab (3.5-4 minutes on a 2-core machine).

Each test asserts the target behaviour (``hapair.bench.chaos``, docs/benchmarks.md "Chaos"):
after convergence each VIP is on its home node alone, VIP moves within the scenario's bound,
no VIP held by nobody, nothing lost once the fault is undone, no agent exiting unexpectedly or
logging a traceback, and no failed request where none should fail. The bounds are targets:
a test that fails names the numbers that broke them; do not loosen a bound to make it pass.
"""

from __future__ import annotations

from typing import Any

import pytest

from hapair.bench.chaos import BY_NAME, SCENARIOS, ChaosLab
from hapair.bench.chaos_report import summary

pytestmark = pytest.mark.chaos

#: Seconds each timed fault is held in CI (`hapair bench chaos --duration` for longer runs).
HOLD_S = 3.0


#: Scenarios the agent does not yet hold within their bounds (measured in docs/benchmarks.md,
#: "Chaos"; each is a known bug filed in the closing note of issue 8). They still run and
#: assert; an unexpected pass is reported (XPASS), so a fix shows at once.
KNOWN_FAILING: dict[str, str] = {
    # Empty. restart-both-agents was here: both SIGTERM hand-overs raced (an agent not yet
    # leaving took the other's VIP, then released it while leaving and its announcement
    # outlived it). A leaving agent now keeps what it holds when its peer is leaving too.
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            s.name,
            marks=[pytest.mark.xfail(reason=KNOWN_FAILING[s.name], strict=False)]
            if s.name in KNOWN_FAILING
            else [],
        )
        for s in SCENARIOS
    ],
)
def test_chaos(chaos_lab: ChaosLab, chaos_results: list[dict[str, Any]], name: str) -> None:
    result = chaos_lab.run(BY_NAME[name], HOLD_S)
    chaos_results.append(result)
    assert not result["violations"], summary(result)
