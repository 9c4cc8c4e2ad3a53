"""Day-2 commands on a running lab: ``scale``, ``apply``, ``restart`` and ``cert rotate``.

Each shows its plan first, then says what it does as it goes. The error funnel of
:mod:`hapair.cli.main` gives the exit status: 2 for a spec or usage error (nothing changed),
1 for an operation that failed (the message says where it stopped).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from hapair.errors import UsageError

NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name", "-n", help="Cluster name (default: the spec's cluster.name, else demo)."
    ),
]
DrainOpt = Annotated[
    float,
    typer.Option(min=0, max=3600, help="Seconds a removed server may take to finish its sessions."),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the plan and change nothing.")]

cert_app = typer.Typer(help="TLS certificate of the HTTPS frontend (haproxy.https).")


def _say(line: str) -> None:
    typer.echo(f"  • {line}")


def _name(name: str | None, spec: Path | None = None) -> str:
    from hapair.cli.main import cluster_name

    return cluster_name(name, spec)


PlatformOpt = Annotated[
    str | None,
    typer.Option(help="lab or aws (default: the spec's cluster.platform, else lab)."),
]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", "-s", help="Spec file (default: ./hapair.toml).")
]


def scale(
    web: Annotated[int, typer.Option("--web", help="Web nodes wanted (1..250).")],
    name: NameOpt = None,
    drain_timeout: DrainOpt = 30.0,
    dry_run: DryRunOpt = False,
    platform: PlatformOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Add or remove web nodes while both HAProxies serve: new servers join through the runtime
    API (no reload), removed ones are drained first. On aws: `apply` of the spec with this web
    size (the spec says how to launch web instances). The platform and the cluster come from
    the spec (--spec, else ./hapair.toml) with the --platform and --name overrides, as `apply`."""
    from hapair.cli.main import load_spec
    from hapair.spec import with_overrides

    s = load_spec(spec, name, platform=platform)
    if s.cluster.platform == "aws":
        s = with_overrides(s, web_size=web)  # a size out of range: exit 2, nothing touched
        _apply_aws(s, dry_run, drain_timeout, f"hapair scale {s.cluster.name}: web {web}")
        return
    from hapair.day2.changes import ScalePlan
    from hapair.platforms.lab.day2.scale import resized
    from hapair.platforms.lab.day2.scale import scale as run_scale
    from hapair.platforms.lab.day2.target import open_lab

    with open_lab(s.cluster.name) as t:
        resized(t.plan.spec, web)  # a size out of range is a spec error: exit 2
        sp = ScalePlan(t.plan.spec.web.size, web)
        typer.echo(f"hapair scale {t.name}: web {sp.old} -> {sp.new}")
        for line in sp.lines(drain_timeout) or [f"web {sp.old}: nothing to change"]:
            typer.echo(f"  plan: {line}")
        if dry_run:
            return
        t0 = time.monotonic()
        run_scale(t, web, _say, drain_timeout)
        typer.echo(f"done in {time.monotonic() - t0:.1f} s: {web} web nodes")


def apply(
    spec: Annotated[
        Path | None, typer.Option("--spec", "-s", help="Spec file (default: ./hapair.toml).")
    ] = None,
    name: NameOpt = None,
    dry_run: DryRunOpt = False,
    drain_timeout: DrainOpt = 30.0,
) -> None:
    """Change a running lab to match a spec: show the plan, then change only what differs
    (web size, HAProxy settings by seamless reload, security groups, agent timings)."""
    from hapair.cli.main import load_spec
    from hapair.platforms.lab.day2.apply import apply_spec, plan_for
    from hapair.platforms.lab.day2.target import open_lab

    new = load_spec(spec, name)  # an invalid spec: exit 2, nothing touched
    if new.cluster.platform == "aws":
        _apply_aws(new, dry_run, drain_timeout, f"hapair apply {new.cluster.name} (aws)")
        return
    with open_lab(new.cluster.name) as t:
        p = plan_for(t, new)
        typer.echo(f"hapair apply {t.name}")
        for line in p.lines(drain_timeout):
            typer.echo(f"  {line}")
        if dry_run or p.empty:
            return
        t0 = time.monotonic()
        apply_spec(t, new, p, _say, drain_timeout)
        typer.echo(f"applied in {time.monotonic() - t0:.1f} s")


def _apply_aws(new: Any, dry_run: bool, drain_timeout: float, title: str) -> None:
    """``apply`` on AWS: show the plan, then publish the desired document the LBs follow
    (:mod:`hapair.platforms.aws.day2`); one run at a time per cluster (:mod:`.applylock`)."""
    from hapair.cli.main import aws_platform
    from hapair.plan import make_plan
    from hapair.platforms.aws.applylock import apply_lock
    from hapair.platforms.aws.day2 import plan_apply, run_apply

    platform = aws_platform(new)
    plan = make_plan(new)
    region = platform.aws(new.aws.region or None).region
    # A dry run only reads: it may look while another run changes the cluster.
    with nullcontext() if dry_run else apply_lock(plan.name, region):
        p = plan_apply(platform, plan)
        typer.echo(title)
        for line in p.lines(drain_timeout):
            typer.echo(f"  {line}")
        if dry_run or p.empty:
            return
        t0 = time.monotonic()
        version = run_apply(platform, plan, p, _say, drain_timeout)
    typer.echo(f"applied in {time.monotonic() - t0:.1f} s: desired document version {version}")


def _aws_spec(name: str | None, platform: str | None, spec: Path | None) -> Any:
    """The spec when a command is for AWS (``--platform aws``, or the spec's platform: --spec,
    else ./hapair.toml), else None (the lab, as before: no spec read unless there is one)."""
    from hapair.cli.main import DEFAULT_SPEC, load_spec

    if platform == "lab" or (platform is None and spec is None and not DEFAULT_SPEC.is_file()):
        return None
    s = load_spec(spec, name, platform=platform)
    return s if s.cluster.platform == "aws" else None


def restart(
    node: Annotated[str | None, typer.Argument(help="lb1, lb2 (lb3.. with N LBs).")] = None,
    rolling: Annotated[bool, typer.Option("--rolling", help="Every LB, one at a time.")] = False,
    name: NameOpt = None,
    platform: PlatformOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Restart HAProxy and the agent of an LB (or every LB, one at a time) with its VIPs moved
    to the other LB(s) first: standby, restart, healthy, online, VIPs back. On aws: through the
    desired document each LB follows (no SSH), watched on the EIPs and the LBs'
    acknowledgements."""
    if (node is None) == (not rolling):
        raise UsageError("restart: give lb1 or lb2, or --rolling (every LB, one at a time)")
    s = _aws_spec(name, platform, spec)
    if s is not None:
        _restart_aws(s, node, rolling)
        return
    from hapair.platforms.lab.day2.restart import restart_lb
    from hapair.platforms.lab.day2.target import open_lab

    with open_lab(_name(name, spec)) as t:
        lbs = [lb.name for lb in t.plan.lbs] if rolling else [node or ""]
        if lbs[0] not in {lb.name for lb in t.plan.lbs}:
            raise UsageError(f"restart: {lbs[0]} is not a load balancer (use {t.plan.lb_hint})")
        typer.echo(f"hapair restart {t.name}: {' then '.join(lbs)}")
        t0 = time.monotonic()
        for lb in lbs:
            restart_lb(t, lb, _say)
        typer.echo(f"done in {time.monotonic() - t0:.1f} s")


def _restart_aws(s: Any, node: str | None, rolling: bool) -> None:
    from hapair.cli.main import aws_platform
    from hapair.plan import make_plan
    from hapair.platforms.aws.day2ops import restart as restart_aws

    plan = make_plan(s)
    lbs = [lb.name for lb in plan.lbs] if rolling else [node or ""]
    if lbs[0] not in {lb.name for lb in plan.lbs}:
        raise UsageError(f"restart: {lbs[0]} is not a load balancer (use {plan.lb_hint})")
    typer.echo(f"hapair restart {plan.name} (aws): {' then '.join(lbs)}")
    t0 = time.monotonic()
    restart_aws(aws_platform(s).aws(), plan, lbs, _say)
    typer.echo(f"done in {time.monotonic() - t0:.1f} s")


@cert_app.command("rotate")
def cert_rotate(
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            help="PEM with the certificate chain and its key (default: a new self-signed one).",
        ),
    ] = None,
    name: NameOpt = None,
    platform: PlatformOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Put a new certificate live on both LBs through the runtime API, without a reload. On
    aws: the PEM goes to SSM (SecureString) and each LB's follower puts it live."""
    pem = None
    if cert is not None:
        try:
            pem = cert.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--cert: cannot read {cert}: {exc}") from None
    s = _aws_spec(name, platform, spec)
    if s is not None:
        from hapair.cli.main import aws_platform
        from hapair.plan import make_plan
        from hapair.platforms.aws.day2ops import cert_rotate as rotate_aws

        plan = make_plan(s)
        typer.echo(f"hapair cert rotate {plan.name} (aws)")
        t0 = time.monotonic()
        version = rotate_aws(aws_platform(s).aws(), plan, pem, _say)
        typer.echo(f"done in {time.monotonic() - t0:.1f} s: desired document version {version}")
        return
    from hapair.platforms.lab.day2.cert import rotate
    from hapair.platforms.lab.day2.target import open_lab

    with open_lab(_name(name, spec)) as t:
        typer.echo(f"hapair cert rotate {t.name}")
        t0 = time.monotonic()
        rotate(t, pem, _say)
        typer.echo(f"done in {time.monotonic() - t0:.1f} s")


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    for fn in (scale, apply, restart):
        app.command()(fn)
    app.add_typer(cert_app, name="cert")
