"""Running commands on the host and in namespaces, with errors translated at the boundary."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from hapair.errors import EnvironmentProblem, OperationError

#: Debian packages that provide each command the lab needs.
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "nft": "nftables",
    "haproxy": "haproxy",
    "dnsmasq": "dnsmasq-base",
    "curl": "curl",
}


def require_root() -> None:
    """:raises EnvironmentProblem: not running as root."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "the lab needs root (it creates network namespaces): run it as root, e.g. "
            "`sudo .venv/bin/hapair up`"
        )


def require_tools(tools: Sequence[str] = tuple(TOOLS)) -> None:
    """:raises EnvironmentProblem: naming each missing command and the package to install."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(sorted({TOOLS.get(t, t) for t in missing}))
        raise EnvironmentProblem(
            f"missing {', '.join(missing)}: run `make setup` (or apt-get install {pkgs})"
        )


def run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command (argv list, never a shell) and capture its output.

    :raises OperationError: it failed (with ``check``) or timed out; the message has its stderr.
    """
    try:
        proc = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise OperationError(f"`{' '.join(argv)}` timed out after {timeout:.0f} s") from exc
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"{argv[0]} is not installed: run `make setup`") from exc
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        raise OperationError(f"`{' '.join(argv)}` failed: {err}", code=proc.returncode)
    return proc


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """argv that runs ``argv`` inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]
