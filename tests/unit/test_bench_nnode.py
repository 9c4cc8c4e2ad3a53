"""The pure parts of ``hapair bench failover --lbs N`` and ``bench dataplane --lbs 2,3,4``."""

from __future__ import annotations

import pytest

from hapair.bench.analysis import Marks
from hapair.bench.nfailover import check_n, first_ok_not_by, n_metrics
from hapair.bench.nlabs import balanced, check_lbs, nspec, owner_of, parse_counts
from hapair.bench.nplane import LbSnapshot, lb_figures, parse_cum_req, table, wrk_script
from hapair.bench.probe import Sample
from hapair.errors import OperationError, UsageError
from hapair.plan import make_plan
from hapair.spec import parse


def test_lb_counts_are_checked_and_parsed() -> None:
    check_lbs(2)
    check_lbs(16)
    for bad in (1, 17):
        with pytest.raises(UsageError, match=r"--lbs must be 2\.\.16"):
            check_lbs(bad)
    assert parse_counts("2, 3,4") == [2, 3, 4]
    for text, msg in (("2,x", "separated by commas"), ("", "at least one"), ("3,3", "twice")):
        with pytest.raises(UsageError, match=msg):
            parse_counts(text)
    with pytest.raises(UsageError, match=r"2\.\.16"):
        parse_counts("2,20")


def test_only_crash_and_reboot_with_hapair_on_l2_above_a_pair() -> None:
    for scenario in ("crash", "reboot"):
        check_n(4, "hapair", "default", scenario, "l2", None)
    check_n(2, "keepalived", "tuned", "partition", "aws", 500)  # the pair: not this check's
    cases = [
        (("keepalived", "default", "crash", "l2", None), "--engine hapair"),
        (("hapair", "tuned", "crash", "l2", None), "--variant default"),
        (("hapair", "default", "partition", "l2", None), "--scenario crash or reboot"),
        (("hapair", "default", "crash", "aws", None), "--fabric l2"),
        (("hapair", "default", "crash", "l2", 500), "without --eip-propagation-ms"),
    ]
    for args, fix in cases:
        with pytest.raises(UsageError, match="--lbs 4") as err:
            check_n(4, *args)
        assert fix in str(err.value)


def test_the_specs_parse_and_the_pair_stays_the_default() -> None:
    assert nspec("hpx", 2, vips_per_lb=1) == {"cluster": {"name": "hpx"}, "web": {"size": 3}}
    for n in (2, 3, 4, 16):
        plan = make_plan(parse(nspec("hpx", n)))
        assert [lb.name for lb in plan.lbs] == [f"lb{i + 1}" for i in range(n)]
        assert len(plan.vips) == 2 * n
        assert plan.spec.ha.coordinator == "etcd"


def test_balance_ignores_a_dead_lb_s_stale_addresses() -> None:
    owners = {"vip1": ["lb1", "lb3"], "vip2": ["lb2"], "vip3": ["lb3"], "vip4": ["lb1"]}
    assert not balanced(owners, ["lb1", "lb2", "lb3"])  # vip1 twice
    assert balanced(owners, ["lb1", "lb2"]) is False  # vip3 on nobody live
    owners = {"vip1": ["lb1", "lb3"], "vip2": ["lb2"], "vip3": ["lb2"], "vip4": ["lb1"]}
    assert balanced(owners, ["lb1", "lb2"])
    assert not balanced({"vip1": ["lb1"], "vip2": ["lb1"]}, ["lb1", "lb2"])  # 2 vs 0
    assert not balanced({}, [])
    assert owner_of(owners, "vip2") == "lb2"
    with pytest.raises(ValueError, match="not by exactly one"):
        owner_of(owners, "vip1")
    with pytest.raises(ValueError, match="nobody"):
        owner_of(owners, "vip9")


def _s(start: float, ok: bool, lb: str = "") -> Sample:
    return Sample(start, start + 0.01, ok, "198.19.255.1", 200 if ok else 0, lb)


def test_the_mover_is_whoever_served_vip1_first_after_the_fault() -> None:
    samples = [_s(0.5, True, "lb3"), _s(1.0, False), _s(1.1, True, "lb3"), _s(1.2, True, "lb4")]
    samples += [_s(1.3, True, "lb2"), _s(5.0, True, "lb4")]
    assert first_ok_not_by(samples, "lb3", 1.0) == samples[3]
    m = n_metrics(samples, Marks(1.0, 4.0), "lb3", 2.5)
    assert m["victim"] == "lb3" and m["mover"] == "lb4"
    assert m["gap_s"] == pytest.approx(0.21)
    assert m["failed"] == 1
    assert m["failback_after_s"] == 2.5 and m["vip1_back_s"] is None  # VIP1 stayed on lb4
    nobody = n_metrics([_s(0.5, True, "lb3"), _s(1.5, False)], Marks(1.0, 4.0), "lb3", None)
    assert nobody["mover"] is None and nobody["gap_s"] is None


def test_the_wrk_script_pins_each_thread_to_a_vip() -> None:
    text = wrk_script(["198.19.255.1", "198.19.255.2"], 80)
    assert 'local vips = {"198.19.255.1", "198.19.255.2"}' in text
    assert 'wrk.lookup(vips[(n % #vips) + 1], "80")[1]' in text
    with pytest.raises(ValueError):
        wrk_script([], 80)


def test_per_lb_figures_and_the_table() -> None:
    assert parse_cum_req("Name: HAProxy\nCumReq: 1234\nCumConns: 9\n") == 1234
    with pytest.raises(OperationError):
        parse_cum_req("Name: HAProxy\n")
    f = lb_figures("lb1", LbSnapshot(100, 1.0), LbSnapshot(5100, 3.0), 5.0)
    assert (f.rps, f.cpu, f.per_cpu_s) == (1000.0, 0.4, 2500.0)
    assert lb_figures("lb2", LbSnapshot(0, 1.0), LbSnapshot(0, 1.0), 1.0).per_cpu_s is None
    with pytest.raises(ValueError):
        lb_figures("lb1", LbSnapshot(0, 0), LbSnapshot(0, 0), 0)
    report = {
        "runs": [
            {
                "lbs": 2,
                "vips": 2,
                "wrk": {"rps": 3000.0, "p99_ms": 12.5, "errors": 0},
                "per_lb": [
                    {"lb": "lb1", "rps": 1600.0, "cpu": 0.4, "per_cpu_s": 4000.0},
                    {"lb": "lb2", "rps": 1400.0, "cpu": 0.35, "per_cpu_s": 4000.0},
                ],
            }
        ]
    }
    lines = table(report).splitlines()
    assert lines[0].startswith("| LBs | VIPs | total req/s")
    assert lines[2] == "| 2 | 2 | 3,000 | 1,500; 1,400-1,600 | 0.38 | 4,000 | 12.50 | 0 |"


def test_moves_count_the_revived_agent_from_zero() -> None:
    from hapair.bench.nfailover import moves_between

    before = {"lb1": 5, "lb2": 3, "lb3": 2}
    after = {"lb1": 2, "lb2": 5, "lb3": 3}
    assert moves_between(before, after, "lb1") == 2 + 2 + 1


def test_one_lab_name_per_lb_count_fits_the_spec() -> None:
    from hapair.bench.nplane import lab_name

    assert lab_name("hp6ad5bb", 4, True) == "hp6ad5b4"
    assert lab_name("hp6ad5bb", 16, True) == "hp6ad516"
    assert lab_name("hp6ad5bb", 4, False) == "hp6ad5bb"
    parse({"cluster": {"name": lab_name("hp6ad5bb", 16, True)}})
