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
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret", help="cluster-key, admin-token or stats-password (repeat; default: all)."
        ),
    ] = None,
) -> None:
    """Write new random values; each LB takes them within a minute (its sync timer)."""
    from hapair.cli.main import _target, aws_platform

    s = _target(name, spec, "aws", region)
    if s.cluster.platform != "aws":
        raise UsageError("secrets rotate: only for --platform aws clusters")
    aws = aws_platform(s)
    done = aws.rotate_secrets(s.cluster.name, list(secret or []))
    region_name = aws.aws().region
    typer.echo(f"{s.cluster.name}: rotated {', '.join(done)} in {region_name}")
    typer.echo(
        "  each LB reads them within 60 s (hapair-sync.timer) and restarts its agent on a new "
        "key or token; the peer keeps its VIPs meanwhile (docs/aws.md, Secrets)"
    )


def register(app: typer.Typer) -> None:
    """Add ``secrets`` to the CLI."""
    app.add_typer(secrets_app, name="secrets")
