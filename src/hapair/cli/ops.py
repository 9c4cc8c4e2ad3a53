"""Operations on a running cluster: chaos (kill, revive), planned moves, the agent daemon."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hapair.errors import OperationError, UsageError

if TYPE_CHECKING:
    from hapair.platforms.lab.platform import LabPlatform

NameOpt = Annotated[
    str | None,
    typer.Option("--name", "-n", help="Cluster name (default: ./hapair.toml's, else demo)."),
]
NodeArg = Annotated[str, typer.Argument(help="lb1 or lb2 (lb3.. with N LBs).")]
AnyNodeArg = Annotated[str, typer.Argument(help="lb1, lb2 (..lbN), web1..N, igw or inet.")]


def _lab() -> LabPlatform:
    from hapair.platforms.lab.platform import LabPlatform

    return LabPlatform()


def _name(name: str | None) -> str:
    from hapair.cli.main import cluster_name

    return cluster_name(name)


def kill(
    node: AnyNodeArg,
    name: NameOpt = None,
    link: Annotated[bool, typer.Option("--link", help="Take its link down instead.")] = False,
    haproxy: Annotated[
        bool, typer.Option("--haproxy", help="LB: kill only HAProxy (restarted after 1 s).")
    ] = False,
    agent: Annotated[
        bool, typer.Option("--agent", help="LB: kill only the agent (restarted after 1 s).")
    ] = False,
    no_restart: Annotated[
        bool,
        typer.Option(
            "--no-restart",
            help="With --haproxy/--agent: kill its supervisor too (down until revive).",
        ),
    ] = False,
) -> None:
    """Chaos: the node dies as a machine would (every process gets SIGKILL, supervisors too:
    down until `hapair revive`); or only its link, HAProxy or agent."""
    chosen = [f for f, on in (("--link", link), ("--haproxy", haproxy), ("--agent", agent)) if on]
    if len(chosen) > 1:
        raise UsageError(f"{chosen[0]} and {chosen[1]} exclude each other")
    if no_restart and link:
        raise UsageError("--no-restart goes with --haproxy or --agent (a link stays down anyway)")
    mode = chosen[0].removeprefix("--") if chosen else "machine"
    typer.echo(_lab().kill(_name(name), node, mode, keep_down=no_restart))


def revive(
    node: AnyNodeArg,
    name: NameOpt = None,
    reboot: Annotated[
        bool, typer.Option(help="LB: drop its VIPs first, as after a reboot.")
    ] = False,
) -> None:
    """Chaos: bring a node back (link up, every service of it running); idempotent."""
    typer.echo(_lab().revive(_name(name), node, reboot=reboot))


def _admin(name: str | None, node: str, action: str) -> None:
    from hapair.agent.client import agent_request
    from hapair.platforms.lab.paths import LabPaths

    name = _name(name)
    lab = _lab()
    lab._lb(name, node)
    paths = LabPaths(name)
    token = paths.admin_token.read_text().strip()
    status, body = agent_request(str(paths.agent_sock(node)), "POST", f"/{action}", token=token)
    if status != 200:
        raise OperationError(f"{node} refused {action}: {status} {body}")
    typer.echo(body.get("message", body) if isinstance(body, dict) else body)


def standby(node: NodeArg, name: NameOpt = None) -> None:
    """Planned: move the node's VIPs to its peer (N LBs: to the others), make-before-break."""
    _admin(name, node, "standby")


def online(node: NodeArg, name: NameOpt = None) -> None:
    """Planned: let the node take its VIPs (N LBs: its share) back."""
    _admin(name, node, "online")


def agent(config: Annotated[Path, typer.Option("--config", "-c", help="agent.toml")]) -> None:
    """Run the HA agent (normally started by `up` inside each LB node)."""
    from hapair.agent.daemon import run_agent
    from hapair.agent.nconfig import is_etcd_config

    if is_etcd_config(config):  # issue 13: N LBs, ownership agreed through etcd
        from hapair.agent.ndaemon import run_node_agent

        raise typer.Exit(run_node_agent(config))
    raise typer.Exit(run_agent(config))


def register(app: typer.Typer) -> None:
    """Add these commands to the main app."""
    for fn in (kill, revive, standby, online, agent):
        app.command()(fn)
    try:
        from hapair.bench.cli import bench_app
    except ImportError:
        return
    app.add_typer(bench_app, name="bench")
