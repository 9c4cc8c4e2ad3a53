"""``hapair bench``: failover, data plane, scale, idle-stress, chaos, day-2 and dashboard-cost
benchmarks (each builds its own lab and tears it down)."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from hapair.errors import UsageError

bench_app = typer.Typer(
    help="Benchmarks in the lab (root): failover, dataplane, scale, stress, chaos, dashboard."
)

JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the result as JSON here.")]
NameOpt = Annotated[
    str | None, typer.Option("--name", "-n", help="Lab name (default: hp + random hex).")
]


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        typer.echo(f"wrote {path}")


def _fmt(d: dict[str, Any], scale: float = 1.0, digits: int = 0) -> str:
    if d.get("min") is None:
        return "never" if d.get("missing") else "-"
    vals = [d[k] * scale for k in ("min", "median", "max")]
    out = " / ".join(f"{v:.{digits}f}" for v in vals)
    return out + (f" ({d['missing']} never)" if d.get("missing") else "")


@bench_app.command()
def failover(
    engine: Annotated[str, typer.Option(help="hapair, keepalived or heartbeat.")] = "hapair",
    variant: Annotated[
        str, typer.Option(help="default or tuned (keepalived, heartbeat).")
    ] = "default",
    scenario: Annotated[
        str, typer.Option(help="crash, reboot, link, haproxy, planned or partition.")
    ] = "crash",
    runs: Annotated[int, typer.Option(min=1, max=50, help="Trials.")] = 5,
    rate: Annotated[float, typer.Option(min=1, max=1000, help="Requests/s per client.")] = 100,
    json_out: JsonOpt = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG timeline here.")] = None,
    name: NameOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault's random phase.")] = None,
    fabric: Annotated[
        str, typer.Option(help="The lab's VPC: l2 (gratuitous ARP) or aws (EIPs, moto).")
    ] = "l2",
    eip_propagation_ms: Annotated[
        int | None,
        typer.Option(
            min=0, max=60000, help="aws fabric: the igw's remap delay (default: the spec's)."
        ),
    ] = None,
    eip_api_latency_ms: Annotated[
        int | None,
        typer.Option(min=0, max=5000, help="aws fabric: each EC2 address call's round trip."),
    ] = None,
    timing: Annotated[
        str, typer.Option(help="Agent timings: lab (the spec's defaults) or aws (AWS profile).")
    ] = "lab",
    lbs: Annotated[
        int, typer.Option(min=2, max=16, help="LBs (above 2: 2 VIPs each, etcd; crash, reboot).")
    ] = 2,
) -> None:
    """Fail lb1 (with --lbs above 2: VIP1's owner) and measure the client's gap, failed
    requests and failback (min/median/max)."""
    from hapair.bench.failover import VARIANTS, bench_failover
    from hapair.bench.nfailover import bench_failover_n, check_n

    if engine not in VARIANTS:
        raise UsageError(f"--engine must be one of {', '.join(VARIANTS)} (got {engine})")
    if variant not in VARIANTS[engine]:
        raise UsageError(
            f"--variant for {engine} must be one of {', '.join(VARIANTS[engine])} (got {variant})"
        )
    if fabric not in ("l2", "aws"):
        raise UsageError(f"--fabric must be l2 or aws (got {fabric})")
    if timing not in ("lab", "aws"):
        raise UsageError(f"--timing must be lab or aws (got {timing})")
    if (timing != "lab" or eip_api_latency_ms is not None) and (fabric != "aws" or lbs != 2):
        raise UsageError("--timing aws and --eip-api-latency-ms need --fabric aws (and 2 LBs)")
    check_n(lbs, engine, variant, scenario, fabric, eip_propagation_ms)
    logging.basicConfig(level=logging.WARNING)
    if lbs != 2:
        report, trials = bench_failover_n(
            lbs, scenario, runs, rate, name=name, seed=seed, say=typer.echo
        )
    else:
        report, trials = bench_failover(
            engine,
            variant,
            scenario,
            runs,
            rate,
            name=name,
            seed=seed,
            say=typer.echo,
            fabric=fabric,
            eip_propagation_ms=eip_propagation_ms,
            eip_api_latency_ms=eip_api_latency_ms,
            timing=timing,
        )
    on = f" on the {fabric} fabric" if fabric != "l2" else ""
    if lbs != 2:
        on += f" with {lbs} LBs and {report['vips']} VIPs (etcd; failback = balanced again)"
    if fabric == "aws":
        on += (
            f" (EIP propagation {report['eip_propagation_ms']} ms, API latency "
            f"{report['eip_api_latency_ms']} ms, {report['timing']} timings)"
        )
    typer.echo(
        f"{engine} {variant} {scenario}{on}, {len(trials)} runs at {rate:g} req/s "
        "(min / median / max):"
    )
    typer.echo(f"  failover gap ms          {_fmt(report['gap_ms'])}")
    typer.echo(f"  failed requests          {_fmt(report['failed'])}")
    typer.echo(f"  failback after ms        {_fmt(report['failback_after_ms'])}")
    typer.echo(f"  failback longest gap ms  {_fmt(report['failback_longest_gap_ms'])}")
    typer.echo(f"  failback failed          {_fmt(report['failback_failed'])}")
    typer.echo(f"  DNS-aware client failed  {_fmt(report['dns_failed'])}")
    typer.echo(f"  ordinary client failed   {_fmt(report['ordinary_failed'])}")
    typer.echo(f"  ordinary added p99 ms    {_fmt(report['ordinary_added_p99_ms'])}")
    typer.echo(f"  ordinary added max ms    {_fmt(report['ordinary_added_max_ms'])}")
    typer.echo(f"  keep-alive client failed {_fmt(report['keepalive_failed'])}")
    if fabric == "aws":
        remaps = [r.get("eip_remaps") for r in report["runs"]]
        typer.echo(f"  AssociateAddress calls    {' / '.join(str(x) for x in remaps)} (per run)")
    if report.get("aborted"):
        typer.echo(f"  aborted: {report['aborted']}")
    _write_json(json_out, report)
    if plot is not None and trials:
        from hapair.bench.plot import plot_trial

        gaps = [tr.metrics["gap_s"] for tr in trials if tr.metrics["gap_s"] is not None]
        med = statistics.median_low(gaps) if gaps else None
        pick = next((tr for tr in trials if tr.metrics["gap_s"] == med), trials[0])
        m = pick.metrics
        gap = "never" if m["gap_s"] is None else f"{m['gap_s'] * 1000:.0f} ms"
        who = "lb1" if lbs == 2 else f"{m['victim']} (VIP1's owner, {lbs} LBs)"
        title = f"{engine} {variant}, {scenario} of {who}, {rate:g} req/s (median run: gap {gap})"
        plot_trial(pick.plain, pick.dns, m["t_fail"], m["t_restore"], title, plot)
        typer.echo(f"wrote {plot}")
    if not trials:
        raise typer.Exit(1)


@bench_app.command()
def dataplane(
    duration: Annotated[int, typer.Option(min=1, max=60, help="Seconds per wrk run.")] = 10,
    rounds: Annotated[int, typer.Option(min=1, max=10, help="Rounds of each target.")] = 3,
    connections: Annotated[int, typer.Option(min=1, max=1000, help="wrk -c.")] = 20,
    json_out: JsonOpt = None,
    name: NameOpt = None,
    lbs: Annotated[
        str | None,
        typer.Option(help="LB counts, e.g. 2,3,4: one lab each, wrk through every VIP at once."),
    ] = None,
) -> None:
    """wrk through VIP1 with and without the agents (same HAProxy), and straight to web1;
    with --lbs, through every VIP at once for each LB count (total and per-LB req/s)."""
    from hapair.bench.dataplane import bench_dataplane

    if lbs is not None:
        from hapair.bench.nlabs import parse_counts
        from hapair.bench.nplane import bench_dataplane_n, table

        counts = parse_counts(lbs)
        nreport = bench_dataplane_n(counts, duration, connections, name=name, say=typer.echo)
        typer.echo(table(nreport), nl=False)
        _write_json(json_out, nreport)
        return

    report = bench_dataplane(rounds, duration, connections, name=name, say=typer.echo)
    labels = {
        "vip_agents": "VIP1, agents running",
        "vip_bare": "VIP1, agents frozen (bare HAProxy)",
        "web1_direct": "web1 directly (from lb1)",
    }
    for key, label in labels.items():
        rs = report["results"][key]
        rps = " / ".join(f"{r['rps']:,.0f}" for r in rs)
        p50 = " / ".join(f"{r['p50_ms']:.2f}" for r in rs)
        p99 = " / ".join(f"{r['p99_ms']:.2f}" for r in rs)
        errs = sum(r["errors"] for r in rs)
        typer.echo(f"  {label:32} req/s {rps}  p50 ms {p50}  p99 ms {p99}  errors {errs}")
    cpu = ", ".join(f"{c:.1f}" for c in report["agent_cpu_pct_of_core"])
    per_round = ", ".join(f"{c:.1f}" for c in report["overhead_per_round_pct"])
    typer.echo(f"  both agents' CPU during the runs, % of one core: {cpu}")
    typer.echo(f"  overhead per round, %: {per_round}")
    typer.echo(f"  agent overhead on VIP1 throughput: {report['agent_overhead_pct']:.2f} %")
    _write_json(json_out, report)


@bench_app.command()
def scale(
    sizes: Annotated[str, typer.Option(help="Comma-separated web-node counts.")] = "3,50,200",
    json_out: JsonOpt = None,
) -> None:
    """`up` time and memory for 3, 50 and 200 web nodes; render + `haproxy -c` time."""
    from hapair.bench.scale import bench_scale

    try:
        counts = [int(x) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--sizes must be numbers separated by commas (got {sizes})") from None
    report = bench_scale(counts, say=typer.echo)
    _write_json(json_out, report)


@bench_app.command()
def stress(
    seconds: Annotated[float, typer.Option(min=1, max=3600, help="How long to saturate.")] = 600,
    workers: Annotated[int | None, typer.Option(help="Busy loops (default: one per core).")] = None,
    json_out: JsonOpt = None,
    name: NameOpt = None,
) -> None:
    """False-failover check: every core busy while the lab idles; counts VIP moves."""
    from hapair.bench.stress import bench_stress

    report = bench_stress(seconds, workers, name=name, say=typer.echo)
    typer.echo(
        f"  {report['vip_moves']} VIP moves, {report['misplaced_checks']} of "
        f"{report['placement_checks']} placement checks off home, over {seconds:.0f} s "
        f"with {report['workers']} busy loops on {report['cpus']} CPUs"
    )
    _write_json(json_out, report)


@bench_app.command()
def chaos(
    scenario: Annotated[
        str, typer.Option(help="A scenario (see docs/benchmarks.md, Chaos) or all.")
    ] = "all",
    duration: Annotated[
        float, typer.Option(min=1, max=300, help="Seconds each timed fault is held.")
    ] = 15.0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write chaos.md and chaos.json in this folder.")
    ] = None,
    rate: Annotated[float, typer.Option(min=1, max=500, help="Requests/s per VIP.")] = 100,
    name: NameOpt = None,
) -> None:
    """Faults of networks, machines and operators: failed requests, VIP moves, convergence."""
    from hapair.bench.chaos_report import main as chaos_main

    logging.basicConfig(level=logging.WARNING)
    code = chaos_main(scenario, duration, out, rate, name, typer.echo)
    if code:
        raise typer.Exit(code)


@bench_app.command()
def day2(
    rate: Annotated[
        float, typer.Option(min=1, max=500, help="New connections/s per VIP (and keep-alive).")
    ] = 100,
    https_rate: Annotated[
        float, typer.Option(min=0, max=200, help="New TLS connections/s per VIP.")
    ] = 20,
    json_out: JsonOpt = None,
    name: NameOpt = None,
) -> None:
    """Day-2 operations under load (scale, apply, rolling restart, cert rotation) and the anchor
    (HAProxy stop/start): failed requests, longest client gap, duration."""
    from hapair.bench.day2 import bench_day2, table

    logging.basicConfig(level=logging.WARNING)
    report = bench_day2(rate, https_rate, name=name, say=typer.echo)
    typer.echo(table(report), nl=False)
    _write_json(json_out, report)


@bench_app.command()
def dashboard(
    rounds: Annotated[int, typer.Option(min=1, max=20, help="Windows per state.")] = 4,
    window: Annotated[float, typer.Option(min=5, max=600, help="Seconds per window.")] = 20,
    pages: Annotated[
        str, typer.Option(help="Page counts besides none, comma-separated (at most 8).")
    ] = "1,8",
    json_out: JsonOpt = None,
    name: NameOpt = None,
) -> None:
    """What the dashboard costs both agents (CPU, memory): windows with no page open and with
    headless Chromium pages open through the forwarder; medians per state."""
    from hapair.agent.dashboard import MAX_STREAMS
    from hapair.bench.dashcost import bench_dashboard, table

    try:
        counts = [int(x) for x in pages.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--pages must be numbers separated by commas (got {pages})") from None
    if not counts or not all(0 < c <= MAX_STREAMS for c in counts):
        raise UsageError(f"--pages: each count from 1 to {MAX_STREAMS} (got {pages})")
    logging.basicConfig(level=logging.WARNING)
    report = bench_dashboard(rounds, window, counts, name=name, say=typer.echo)
    typer.echo(table(report), nl=False)
    _write_json(json_out, report)


@bench_app.command()
def report(
    files: Annotated[list[Path], typer.Argument(help="JSON files from `bench failover`.")],
) -> None:
    """Print the markdown failover table of the given results (in the order given)."""
    from hapair.bench.report import table

    typer.echo(table([json.loads(f.read_text()) for f in files]), nl=False)


@bench_app.command()
def rehearsal(
    nodes: Annotated[str, typer.Option(help="Nodes to boot, comma-separated.")] = "lb1,web1",
    timeout: Annotated[
        float, typer.Option(min=60, max=3600, help="Seconds cloud-init may take per node.")
    ] = 900,
    out: Annotated[Path, typer.Option(help="Evidence folder (emptied first).")] = Path(
        "/var/cache/hapair-rehearsal/report"
    ),
    soak: Annotated[
        float, typer.Option(min=0, max=3600, help="Seconds to watch the running nodes.")
    ] = 75,
    keep: Annotated[bool, typer.Option(help="Keep the nodes' overlays afterwards.")] = False,
) -> None:
    """Boot the aws platform's user data through real cloud-init (Debian 12 in systemd-nspawn,
    against moto) and check that HAProxy, the agent and the web app end up running (root)."""
    from hapair.bench.rehearsal import rehearse, summary

    logging.basicConfig(level=logging.WARNING)
    try:
        report = rehearse(
            [n.strip() for n in nodes.split(",") if n.strip()],
            timeout=timeout,
            soak=soak,
            out=out,
            keep=keep,
            say=typer.echo,
        )
    except (PermissionError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    typer.echo(summary(report))
    if not report.ok:
        raise typer.Exit(1)
