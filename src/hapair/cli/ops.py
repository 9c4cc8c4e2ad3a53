"""Operations on a running cluster: chaos (kill, revive), planned moves, the agent daemon."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hapair.errors import OperationError, UsageError

if TYPE_CHECKING:
    from hapair.platforms.lab.platform import LabPlatform

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Cluster name.")]
NodeArg = Annotated[str, typer.Argument(help="lb1 or lb2.")]


def _lab() -> LabPlatform:
    from hapair.platforms.lab.platform import LabPlatform

    return LabPlatform()


def kill(
    node: NodeArg,
    name: NameOpt = "demo",
    link: Annotated[bool, typer.Option("--link", help="Take its link down instead.")] = False,
    haproxy: Annotated[bool, typer.Option("--haproxy", help="Kill only HAProxy.")] = False,
) -> None:
    """Chaos: the node dies as a machine would (agent and HAProxy get SIGKILL)."""
    if link and haproxy:
        raise UsageError("--link and --haproxy exclude each other")
    mode = "link" if link else "haproxy" if haproxy else "machine"
    typer.echo(_lab().kill(name, node, mode))


def revive(
    node: NodeArg,
    name: NameOpt = "demo",
    reboot: Annotated[bool, typer.Option(help="Drop its VIPs first, as after a reboot.")] = False,
) -> None:
    """Chaos: bring a killed node back (link up, HAProxy and agent started)."""
    typer.echo(_lab().revive(name, node, reboot=reboot))


def _admin(name: str, node: str, action: str) -> None:
    from hapair.agent.client import agent_request
    from hapair.platforms.lab.paths import LabPaths

    lab = _lab()
    lab._lb(name, node)
    paths = LabPaths(name)
    token = paths.admin_token.read_text().strip()
    status, body = agent_request(str(paths.agent_sock(node)), "POST", f"/{action}", token=token)
    if status != 200:
        raise OperationError(f"{node} refused {action}: {status} {body}")
    typer.echo(body.get("message", body) if isinstance(body, dict) else body)


def standby(node: NodeArg, name: NameOpt = "demo") -> None:
    """Planned: move the node's VIPs to its peer, make-before-break."""
    _admin(name, node, "standby")


def online(node: NodeArg, name: NameOpt = "demo") -> None:
    """Planned: let the node take its VIPs back."""
    _admin(name, node, "online")


def agent(config: Annotated[Path, typer.Option("--config", "-c", help="agent.toml")]) -> None:
    """Run the HA agent (normally started by `up` inside each LB node)."""
    from hapair.agent.daemon import run_agent

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
