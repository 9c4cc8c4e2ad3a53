"""The chaos suite's lab: one for every scenario of the module (root), converged before each
scenario and rebuilt when it does not converge (``hapair.bench.chaos.ChaosLab``).

The table of every scenario run is printed at the end of the session; with
``HAPAIR_CHAOS_OUT=DIR`` it is also written to ``DIR/chaos.md`` and ``DIR/chaos.json`` (the
files `hapair bench chaos --out DIR` writes). ``HAPAIR_CHAOS_VERBOSE=1`` prints progress.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hapair.bench.chaos import RATE, ChaosLab
from hapair.bench.chaos_report import fingerprint, table, write

RESULTS = pytest.StashKey[list[dict[str, Any]]]()
RUN = pytest.StashKey[dict[str, Any]]()


def _say(line: str) -> None:
    if os.environ.get("HAPAIR_CHAOS_VERBOSE"):
        print(line, file=sys.__stderr__, flush=True)


@pytest.fixture(scope="module")
def chaos_lab(request: pytest.FixtureRequest) -> Iterator[ChaosLab]:
    """One lab for the module's scenarios, removed at the end (also on failure)."""
    if os.geteuid() != 0:
        pytest.fail("the chaos suite needs root (CI runs as root): run `sudo make test`")
    started = time.monotonic()
    lab = ChaosLab(say=_say)
    try:
        yield lab
    finally:
        lab.close()
        request.config.stash[RUN] = {
            "lab": lab.name,
            "rebuilds": lab.rebuilds,
            "wall_s": time.monotonic() - started,
        }


@pytest.fixture(scope="session")
def chaos_results(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """Every scenario result of the session, in run order (for the closing table)."""
    return request.config.stash.setdefault(RESULTS, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if not results:
        return
    terminalreporter.write_sep("=", "chaos suite (docs/benchmarks.md, Chaos)")
    terminalreporter.write(table(results))
    out = os.environ.get("HAPAIR_CHAOS_OUT")
    if out:
        run = config.stash.get(RUN, {})
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "hold_s": results[0]["hold_s"],
            "rate": RATE,
            "lab": run.get("lab", "?"),
            "rebuilds": run.get("rebuilds", 0),
            "wall_s": run.get("wall_s", 0.0),
            **fingerprint(),
        }
        for p in write(Path(out), results, meta):
            terminalreporter.write_line(f"wrote {p}")
