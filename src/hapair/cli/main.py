"""The ``hapair`` command line.

One error funnel: exit 2 for usage and spec errors, 1 for operational failures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from hapair.errors import HapairError, SpecError, UsageError
from hapair.plan import make_plan
from hapair.spec import Spec, load, parse, with_overrides
from hapair.spec_scale import require_buildable

app = typer.Typer(
    help="hapair: an active-active pair of HAProxy load balancers with two floating IPs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", help="Cluster name (default: the spec's cluster.name, else demo)."
    ),
]
RegionOpt = Annotated[
    str | None,
    typer.Option(help="aws: region (default: the spec's aws.region, else the AWS configuration)."),
]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", "-s", help="Spec file (default: ./hapair.toml if any).")
]
PlatformOpt = Annotated[
    str | None, typer.Option(help="lab or aws (default: the spec's cluster.platform, else lab).")
]
DEFAULT_SPEC = Path("hapair.toml")


def load_spec(
    spec: Path | None,
    name: str | None = None,
    web_size: int | None = None,
    platform: str | None = None,
    fabric: str | None = None,
) -> Spec:
    """The spec from ``--spec`` (or ./hapair.toml when present), with CLI overrides."""
    if spec is None and DEFAULT_SPEC.is_file():
        spec = DEFAULT_SPEC
    if spec is not None and not spec.is_file():
        raise SpecError([f"{spec}: no such spec file"])
    s = load(spec)
    return with_overrides(s, name=name, web_size=web_size, platform=platform, fabric=fabric)


def cluster_name(name: str | None, spec: Path | None = None) -> str:
    """``--name``, else the spec's cluster name (``--spec`` or ./hapair.toml), else demo."""
    return name or load_spec(spec).cluster.name


def with_region(s: Spec, region: str | None) -> Spec:
    """The spec with ``--region`` (when given) as its ``aws.region``."""
    if not region:
        return s
    data = s.model_dump(mode="python")
    data["aws"]["region"] = region
    return parse(data)


def aws_platform(s: Spec) -> Any:
    """The aws platform in the spec's region (``aws.region``; empty: the AWS configuration's,
    e.g. ``AWS_REGION``). Every aws command goes through here, so they agree on the region."""
    from hapair.platforms.aws import AwsPlatform

    return AwsPlatform(region=s.aws.region or None)


def lab(engine: str = "hapair", restart_delay: float | None = None) -> Any:
    """The lab platform (imported lazily so `check` and `render` work anywhere)."""
    from hapair.platforms.lab.platform import LabPlatform

    if restart_delay is None:
        return LabPlatform(engine)  # type: ignore[arg-type]
    return LabPlatform(engine, restart_delay)  # type: ignore[arg-type]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT) into :class:`Interrupted` for the duration."""

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class Steps:
    """Progress display: one line per step with its duration."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.current: str | None = None
        self.started = 0.0

    def __call__(self, step: str) -> None:
        self.finish()
        self.current, self.started = step, time.monotonic()
        typer.echo(f"  • {step} ...", nl=False)

    def finish(self, note: str | None = None) -> None:
        if self.current is not None:
            typer.echo(f" {note or f'{time.monotonic() - self.started:.1f} s'}")
            self.current = None


@app.command()
def up(
    name: Annotated[str | None, typer.Option("--name", "-n", help="Cluster name.")] = None,
    spec: SpecOpt = None,
    web_size: Annotated[int | None, typer.Option(help="Number of web servers (1..250).")] = None,
    platform: Annotated[str | None, typer.Option(help="lab (default) or aws.")] = None,
    region: RegionOpt = None,
    fabric: Annotated[
        str | None,
        typer.Option(
            help="lab only: l2 (default; VIPs by gratuitous ARP) or aws (EIPs through a moto "
            "EC2 API in the lab; the spec's lab.fabric)."
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option(help="lab only: hapair (agents), static or none.")
    ] = "hapair",
    restart_delay: Annotated[
        float,
        typer.Option(
            min=0.05, help="lab only: seconds before a supervisor restarts a dead service."
        ),
    ] = 1.0,
    with_monitoring: Annotated[
        bool,
        typer.Option(
            "--with-monitoring",
            help="lab only: also run Prometheus in the lab, scraping both LBs "
            "(`hapair open prometheus`).",
        ),
    ] = False,
) -> None:
    """Build the whole stack; running it again on a running cluster changes nothing.

    Interrupted (Ctrl-C, SIGTERM), it exits 130 (143 for SIGTERM) and says how to finish or clean.
    """
    s = with_region(load_spec(spec, name, web_size, platform, fabric), region)
    require_buildable(s)
    plan = make_plan(s)
    if engine not in ("hapair", "static", "none"):
        raise UsageError("--engine: must be hapair, static or none")
    on_aws = s.cluster.platform == "aws"
    if with_monitoring and on_aws:
        raise UsageError("--with-monitoring: lab only (on aws, see docs/prometheus.yml)")
    typer.echo(f"hapair up {plan.name} ({s.cluster.platform}, {s.web.size} web nodes)")
    steps = Steps()
    try:
        with interruptible():
            if on_aws:
                aws = aws_platform(s)
                aws.up(plan, steps)
            else:
                lab(engine, restart_delay).up(plan, steps)
                if with_monitoring:  # the dashboard issue: platforms/lab/monitoring.py
                    from hapair.platforms.lab import monitoring

                    steps("start Prometheus, scraping both LBs")
                    monitoring.ensure(plan, lab().plan_of(plan.name)[1])
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        steps.finish("interrupted")
        what, down = (
            ("cluster", f"hapair down --platform aws --name {plan.name}")
            if on_aws
            else ("lab", f"hapair down --name {plan.name}")
        )
        typer.echo(
            f"interrupted: the {what} is half built; run `{down}` or `hapair up` again", err=True
        )
        raise typer.Exit(128 + signum) from None
    steps.finish()
    if on_aws:
        for v in aws.status(plan.name)["vips"]:
            typer.echo(f"  {v['name']}: {v['address']} (home {v['home']}, owner {v['owner']})")
        typer.echo(
            f"  point {s.cluster.domain} at both addresses; `hapair down --platform aws "
            f"--name {plan.name}` removes everything"
        )
        return
    typer.echo(f"ready in {time.monotonic() - steps.t0:.1f} s\n")
    net = s.network
    if len(net.vips) > 2:  # issue 13: N LBs; etcd places the VIPs over them
        listed = ", ".join(f"{v.address} ({v.name})" for v in plan.vips)
        typer.echo(f"  {s.cluster.domain} -> {listed}; placed over {s.lb.count} LBs\n")
    else:
        typer.echo(
            f"  {s.cluster.domain} -> {net.vips[0]} (vip1, home lb1), {net.vips[1]} (vip2, "
            "home lb2)\n"
        )

    def cmd(sub: str, rest: str = "") -> str:
        named = "" if plan.name == "demo" else f" --name {plan.name}"
        return f"{_prog()} {sub}{named}{rest}"

    typer.echo(f"  try:  {cmd('curl')}              (through the DNS name)")
    typer.echo(f"        {cmd('curl', ' --vip 2')}      (through VIP2)")
    typer.echo(f"        {cmd('status')}")
    typer.echo(f"        {cmd('kill', ' lb1')}  then  {cmd('curl', ' --vip 1')}")
    typer.echo(f"        {cmd('revive', ' lb1')}")
    typer.echo(f"        {cmd('down')}")


def _prog() -> str:
    """How to call this CLI again: plain ``hapair`` when it is on PATH, else its path."""
    found = shutil.which("hapair")
    me = os.path.realpath(sys.argv[0])
    if found and os.path.realpath(found) == me:
        return "hapair"
    rel = os.path.relpath(me)
    return rel if not rel.startswith("..") else me


def _target(name: str | None, spec: Path | None, platform: str | None, region: str | None) -> Spec:
    """The spec naming the cluster a command acts on: ``--spec`` (or ./hapair.toml) with the
    ``--name``, ``--platform`` and ``--region`` overrides; the same rules as ``up``."""
    return with_region(load_spec(spec, name, platform=platform), region)


@app.command()
def down(
    name: NameOpt = None,
    spec: SpecOpt = None,
    platform: PlatformOpt = None,
    region: RegionOpt = None,
) -> None:
    """Remove every namespace, link, process and file that `up` made; idempotent."""
    s = _target(name, spec, platform, region)
    name = s.cluster.name
    steps = Steps()
    where = ""
    if s.cluster.platform == "aws":
        aws = aws_platform(s)
        found = aws.down(name, steps)
        where = f" in {aws.aws().region}"
    else:
        found = lab().down(name, steps)
    steps.finish()
    typer.echo(f"{name}: removed{where}" if found else f"{name}: nothing to remove{where}")


@app.command()
def status(
    name: NameOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    spec: SpecOpt = None,
    platform: PlatformOpt = None,
    region: RegionOpt = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh live in the terminal; Ctrl-C leaves.")
    ] = False,
) -> None:
    """Nodes, floating IPs (owner read live) and backends as each HAProxy sees them."""
    s = _target(name, spec, platform, region)
    if watch:  # the dashboard issue: the same picture, live (cli/watch.py)
        from hapair.cli.watch import watch_cluster

        raise typer.Exit(watch_cluster(s, lab, aws_platform))
    if s.cluster.platform == "aws":
        st = aws_platform(s).status(s.cluster.name)
    else:
        st = lab().status(s.cluster.name)
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    from hapair.cli.show import show_status

    typer.echo(show_status(st))


@app.command()
def curl(
    name: NameOpt = None,
    vip: Annotated[
        int | None, typer.Option(help="1 or 2: ask that VIP instead of the DNS name.")
    ] = None,
    path: Annotated[str, typer.Argument(help="URL path.")] = "/",
    html: Annotated[bool, typer.Option(help="Ask for the HTML page.")] = False,
) -> None:
    """An HTTP request from the client host on the Internet side, through the DNS name or a VIP."""
    from hapair.cli.client import curl_once

    plan, _ = lab().plan_of(cluster_name(name))
    code, out = curl_once(plan, vip, path, html)
    typer.echo(out, nl=False)
    raise typer.Exit(code)


@app.command(
    name="exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def exec_(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="lb1, web2, inet, ...")],
    name: NameOpt = None,
) -> None:
    """Run a command inside a node: hapair exec lb1 -- ip addr."""
    argv = list(ctx.args)
    if not argv:
        raise UsageError("nothing to run: hapair exec NODE -- CMD ...")
    full = lab().exec_argv(cluster_name(name), node, argv)
    os.execvp(full[0], full)


@app.command()
def check(
    spec: SpecOpt = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    web_size: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Validate a spec and print the plan, touching nothing."""
    s = load_spec(spec, name, web_size)
    plan = make_plan(s)
    typer.echo(f"spec OK: cluster {plan.name} on {s.cluster.platform}, {s.web.size} web nodes")
    for n in plan.nodes:
        extra = f" + {n.secondary}" if n.secondary else ""
        typer.echo(f"  {n.name:<7} {n.role:<4} {n.namespace:<16} {n.address}{extra}")
    for v in plan.vips:
        typer.echo(f"  {v.name:<7} vip  home {v.home:<11} {v.address}")
    typer.echo(f"  dns     {s.cluster.domain} -> {', '.join(v.address for v in plan.vips)}")


@app.command(name="plan")
def plan_cmd(
    spec: SpecOpt = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    web_size: Annotated[int | None, typer.Option()] = None,
    platform: Annotated[str, typer.Option(help="aws (the lab has `check`).")] = "aws",
    region: RegionOpt = None,
) -> None:
    """What `up --platform aws` would create or change, with an hourly cost estimate."""
    if platform != "aws":
        raise UsageError("plan: only --platform aws; for the lab, `hapair check` prints the plan")
    from hapair.platforms.aws.cost import format_estimate
    from hapair.platforms.aws.planner import format_changes

    s = with_region(load_spec(spec, name, web_size, "aws"), region)
    p = make_plan(s)
    aws = aws_platform(s)
    typer.echo(format_changes(aws.plan_changes(p)))
    typer.echo(format_estimate(aws.cost(p)))


@app.command()
def render(
    node: Annotated[str, typer.Argument(help="lb1, lb2, web1, ...")],
    spec: SpecOpt = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
) -> None:
    """Print a node's rendered configuration (haproxy.cfg, agent.toml, nftables rules)."""
    from hapair.render.agent import render_agent
    from hapair.render.haproxy import render_haproxy
    from hapair.render.nftables import render_nftables

    s = load_spec(spec, name)
    plan = make_plan(s)
    try:
        n = plan.node(node)
    except KeyError:
        raise UsageError(f"no node {node} in the plan (lb1, lb2, web1..web{s.web.size})") from None
    if n.role == "lb":
        cert = "<cert.pem>" if s.haproxy.https else None
        cfg = render_haproxy(plan, node, stats_password="<generated>", cert_path=cert)
        files = {
            "key_file": "<key>",
            "admin_token_file": "<token>",
            "stats_socket": "<haproxy.sock>",
            "api_socket": "<agent.sock>",
        }
        if s.ha.coordinator == "etcd":  # issue 13: the N-node agent
            from hapair.agent.nconfig import dump_node_toml
            from hapair.platforms.lab.etcd import endpoints
            from hapair.render.nagent import node_config

            ncfg = node_config(
                plan,
                node,
                **files,
                etcd_endpoints=endpoints(plan),
                etcd_password_file="<etcd-root.password>",
            )
            agent_toml = dump_node_toml(ncfg)
        else:
            agent_toml = render_agent(plan, node, **files)
        typer.echo(f"### haproxy.cfg\n{cfg}")
        typer.echo(f"### agent.toml\n{agent_toml}")
    rules = render_nftables(plan, node)
    if rules:
        typer.echo(f"### nftables\n{rules}")
    if n.role not in ("lb", "web"):
        typer.echo(f"{node}: no configuration of its own (router/client)")


def _register_more() -> None:
    from hapair.cli import day2, open_cmd, ops, secrets_cmd

    ops.register(app)
    open_cmd.register(app)  # the dashboard issue: `hapair open`
    day2.register(app)  # scale, apply, restart, cert rotate
    secrets_cmd.register(app)  # aws: `hapair secrets rotate`


def main() -> None:
    """Entry point: the error funnel."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    _register_more()
    try:
        # Without standalone mode, typer.Exit(code) comes back as the return value.
        code = app(standalone_mode=False)
    except (SpecError, UsageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except HapairError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the safety net: anything else is a bug
        click_exc = _click_exception(exc)
        if click_exc is not None:
            click_exc.show()
            sys.exit(
                2
                if "UsageError" in type(exc).__name__ or "BadParameter" in type(exc).__name__
                else getattr(exc, "exit_code", 2)
            )
        typer.echo(f"internal error, please report it: {exc!r}", err=True)
        if debug:
            traceback.print_exc()
        else:
            typer.echo("(run again with --debug for the traceback)", err=True)
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)


def _click_exception(exc: Exception) -> Any:
    """The command-line parser's own usage errors (typer vendors click in some versions)."""
    for cls in type(exc).__mro__:
        if cls.__name__ == "ClickException" and hasattr(exc, "show"):
            return exc
    return None
