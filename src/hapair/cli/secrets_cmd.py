"""``hapair secrets rotate``: new values for an AWS cluster's secrets in SSM Parameter Store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hapair.errors import UsageError

secrets_app = typer.Typer(help="The cluster's secrets (aws: SSM Parameter Store).")


@secrets_app.command()
def rotate(
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Cluster name (default: the spec's).")
    ] = None,
    spec: Annotated[Path | None, typer.Option("--spec", "-s", help="Spec file.")] = None,
    region: Annotated[str | None, typer.Option(help="aws: region (default: the spec's).")] = None,
    platform: Annotated[
        str | None,
        typer.Option(help="lab or aws (default: the spec's cluster.platform, else lab)."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret", help="cluster-key, admin-token or stats-password (repeat; default: all)."
        ),
    ] = None,
) -> None:
    """Write new random values; each LB takes them within a minute (aws: its sync timer; lab:
    the cluster key only, taken by the agents within 5 s, no restart)."""
    from hapair.cli.main import _target, aws_platform

    s = _target(name, spec, platform, region)
    if s.cluster.platform != "aws":
        _rotate_lab(s.cluster.name, list(secret or []))
        return
    aws = aws_platform(s)
    done = aws.rotate_secrets(s.cluster.name, list(secret or []))
    region_name = aws.aws().region
    typer.echo(f"{s.cluster.name}: rotated {', '.join(done)} in {region_name}")
    typer.echo(
        "  each LB reads them within 60 s (hapair-sync.timer) and restarts its agent on a new "
        "key or token; the peer keeps its VIPs meanwhile (docs/aws.md, Secrets)"
    )


def _rotate_lab(name: str, which: list[str]) -> None:
    import time

    from hapair.platforms.lab.day2.keys import rotate_key

    other = [w for w in which if w != "cluster-key"]
    if other:
        raise UsageError(
            f"secrets rotate: a lab rotates only its cluster-key (got {', '.join(other)}); "
            "the admin token and stats password change with `hapair down` and `up`"
        )
    switch_at, drop_at = rotate_key(name)
    now = time.time()
    typer.echo(f"{name}: rotated cluster-key")
    typer.echo(
        f"  both agents take it within 5 s; they sign with the new key in {switch_at - now:.0f} s "
        f"and accept the old one for {drop_at - now:.0f} s (no restart, no failover)"
    )


def register(app: typer.Typer) -> None:
    """Add ``secrets`` to the CLI."""
    app.add_typer(secrets_app, name="secrets")
