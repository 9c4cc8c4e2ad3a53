"""``hapair open``: the lab's pages in a browser on this machine, through the forwarder."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hapair.errors import UsageError

WHAT = ("demo", "stats", "dashboard", "prometheus", "all")


def urls(name: str, rec: dict[str, Any], what: str) -> list[str]:
    """The lines ``open`` prints for the forwarder record ``rec`` (pure but for the paths)."""
    from hapair.platforms.lab.paths import LabPaths

    paths = LabPaths(name)
    ports: dict[str, int] = rec["ports"]
    notes = {
        "demo": ("demo page", "the DNS name's floating IPs, the other one if one fails"),
        "stats": (
            "stats page",
            f"HAProxy's; user and password: {paths.stats_password} or the spec",
        ),
        "dashboard": ("dashboard", f"admin token for the buttons: {paths.admin_token}"),
        "prometheus": ("prometheus", "the lab's Prometheus (up --with-monitoring)"),
    }
    chosen = [w for w in ports if what in ("all", w)]
    if not chosen:
        raise UsageError(
            f"open {what}: the lab runs no {what} (start it with `up --with-monitoring`)"
        )
    lines = [f"forwarder of lab {name} (pid {rec['pid']}), listening on {rec['listen']} only:"]
    for w in chosen:
        label, note = notes[w]
        lines.append(f"  {label + ':':<12} http://{rec['listen']}:{ports[w]}/   ({note})")
    lines.append(f"  `hapair down --name {name}` stops it with the lab")
    return lines


def open_(
    what: Annotated[str, typer.Argument(help="demo, stats, dashboard, prometheus or all.")] = "all",
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Cluster name (default: demo).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65532,
            help="First port (demo; then stats, dashboard, prometheus); default: free ones "
            "from 8080.",
        ),
    ] = None,
) -> None:
    """Reach the lab from this machine's browser: a forwarder on 127.0.0.1 only (started once,
    stopped by `down`) relays into the lab; prints the URLs."""
    from hapair.cli.main import cluster_name
    from hapair.platforms.lab import forward
    from hapair.platforms.lab.platform import LabPlatform
    from hapair.platforms.lab.system import require_root

    if what not in WHAT:
        raise UsageError(f"open: must be one of {', '.join(WHAT)} (got {what})")
    require_root()
    lab = cluster_name(name)
    LabPlatform().plan_of(lab)  # a clear error when no such lab runs
    rec = forward.start(lab, port)
    typer.echo("\n".join(urls(lab, rec, what)))


def register(app: typer.Typer) -> None:
    """Add ``open`` to the main app."""
    app.command(name="open")(open_)
