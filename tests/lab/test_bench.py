"""The benchmarks run end to end with one trial at a small rate, so they cannot rot. Only the
shape and sanity of the results are asserted; speed is what the benchmarks report, not test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.lab.conftest import HAPAIR, lab_name, require_root

from hapair.bench.analysis import Marks, longest_gap, summarize, trial_metrics
from hapair.bench.probe import Sample
from hapair.bench.wrk import parse_wrk

SPREAD = {"min", "median", "max"}
BENCH = [HAPAIR, "bench", "failover", "--runs", "1", "--rate", "20"]


def _failover(tmp_path: Path, *args: str) -> dict[str, Any]:
    require_root()
    out = tmp_path / "result.json"
    png = tmp_path / "timeline.png"
    name = lab_name()
    proc = subprocess.run(
        [*BENCH, "--name", name, "--json", str(out), "--plot", str(png), *args],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"tearing down {name}" in proc.stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed
    assert png.stat().st_size > 10_000
    return dict(json.loads(out.read_text()))


def _check_shape(r: dict[str, Any], engine: str, variant: str) -> None:
    assert (r["engine"], r["variant"], r["scenario"], r["rate"]) == (engine, variant, "crash", 20)
    assert len(r["runs"]) == 1 and r["aborted"] is None
    for key in ("gap_ms", "failed", "failback_after_ms", "failback_failed", "dns_failed"):
        assert set(r[key]) >= SPREAD, key
    run = r["runs"][0]
    assert 0 < run["gap_s"] < 10
    assert run["t_fail"] >= 3.0 and run["t_restore"] > run["t_fail"]
    assert run["requests"] > 20 * 8
    assert run["pre_failures"] == 0
    assert run["failback_after_s"] is not None and run["failback_after_s"] > 0
    assert run["dns"]["requests"] > 20 * 8
    assert r["gap_ms"]["median"] == run["gap_s"] * 1000


def test_failover_hapair_crash(tmp_path: Path) -> None:
    r = _failover(tmp_path, "--engine", "hapair", "--scenario", "crash")
    _check_shape(r, "hapair", "default")
    assert r["runs"][0]["failed"] >= 0


def test_failover_keepalived_tuned_crash(tmp_path: Path) -> None:
    r = _failover(tmp_path, "--engine", "keepalived", "--variant", "tuned")
    _check_shape(r, "keepalived", "tuned")


def test_unknown_engine_and_planned_without_agent_are_refused() -> None:
    proc = subprocess.run(
        [HAPAIR, "bench", "failover", "--engine", "vrrpd"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "--engine must be one of hapair, keepalived, heartbeat (got vrrpd)" in proc.stderr
    proc = subprocess.run(
        [HAPAIR, "bench", "failover", "--engine", "keepalived", "--scenario", "planned"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "--scenario planned needs hapair's agent API" in proc.stderr


def _s(start: float, ok: bool, lb: str = "", dur: float = 0.01) -> Sample:
    return Sample(start, start + dur, ok, "198.19.255.1", 200 if ok else 0, lb, "web1")


def test_metrics_from_synthetic_samples() -> None:
    samples = [_s(i / 10, True, "lb1") for i in range(30)]  # 0.0 .. 2.9 on lb1
    samples += [_s(3.0 + i / 10, False, dur=0.001) for i in range(3)]  # fault at 3.0
    samples += [_s(3.3 + i / 10, True, "lb2") for i in range(27)]  # lb2 from 3.3
    samples += [_s(6.0 + i / 10, True, "lb1") for i in range(20)]  # restore at 6.0
    m = trial_metrics(samples, Marks(3.0, 6.0))
    assert m["gap_s"] == 0.31
    assert m["failed"] == 3 and m["pre_failures"] == 0
    assert m["failback_after_s"] == 0.01
    assert m["failback_failed"] == 0
    assert abs(m["failback_longest_gap_s"] - 0.1) < 1e-6
    m["dns"] = {"failed": 0}
    s = summarize([m])
    assert s["gap_ms"]["median"] == 310.0
    assert longest_gap([], 1.0, 2.0) == 1.0


def test_parse_wrk() -> None:
    text = """Running 10s test @ http://198.19.255.1/
  1 threads and 20 connections
  Latency Distribution
     50%  512.00us
     75%  700.00us
     90%    1.10ms
     99%    2.50ms
  331234 requests in 10.00s, 60.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  33123.40
"""
    r = parse_wrk(text)
    assert r.rps == 33123.40
    assert r.p50_ms == 0.512 and r.p99_ms == 2.5
    assert r.errors == 3


def test_dashboard_cost_smoke(tmp_path: Path) -> None:
    require_root()
    out, name = tmp_path / "dash.json", lab_name()
    argv = [HAPAIR, "bench", "dashboard", "--rounds", "1", "--window", "5", "--pages", "2"]
    proc = subprocess.run(
        [*argv, "--name", name, "--json", str(out)], capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"tearing down {name}" in proc.stdout and "lb1 serving the pages" in proc.stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert name not in listed
    r = json.loads(out.read_text())
    assert [w["pages"] for w in r["windows"]] == [0, 2]
    assert [w["connections"] for w in r["windows"]] == [0, 2]  # the pages' streams, open
    for w in r["windows"]:
        assert w["seconds"] >= 5 and all(0 <= c < 100 for c in w["cpu_pct"].values())
        assert all(10 < m < 500 for m in w["rss_mib"].values())
    assert set(r["medians"]) == {"0", "2"}
