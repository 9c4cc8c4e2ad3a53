"""haproxy.cfg for an LB node (the seed's hapee-lb.cfg), and its check with ``haproxy -c``."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hapair.errors import EnvironmentProblem, OperationError
from hapair.plan import Plan
from hapair.render import render_template
from hapair.spec import HaproxySpec


def server_options(h: HaproxySpec) -> str:
    """The health-check keywords of every web server (the ``default-server`` line; a server
    added at runtime is given them explicitly, since it does not inherit that line).

    A failed check or an error in live traffic makes the next checks come every ``fastinter``,
    so HAProxy confirms a lost backend within fall x fastinter instead of fall x inter.
    """
    fast = min(100, h.check_inter_ms)
    return (
        f"inter {h.check_inter_ms}ms fastinter {fast}ms rise {h.check_rise} "
        f"fall {h.check_fall} observe layer4 error-limit 1 on-error fastinter"
    )


def render_haproxy(
    plan: Plan,
    node: str,
    *,
    backends: Sequence[tuple[str, str]] | None = None,
    stats_socket: str = "/run/haproxy/admin.sock",
    stats_password: str = "change-me",
    cert_path: str | None = None,
    server_state_file: str | None = None,
) -> str:
    """Render haproxy.cfg for LB ``node``.

    :param backends: (name, address) of each web server; default: the plan's web nodes.
    :param stats_socket: path of the admin stats socket the agent and ``status`` read.
    :param stats_password: password of the stats page on ``haproxy.stats_port``.
    :param cert_path: PEM (cert + key) for the HTTPS frontend when ``haproxy.https`` is on.
    :param server_state_file: where servers' state is dumped before a reload and read back
        (``server-state-file`` + ``load-server-state-from-file global``); None: not used.
    """
    if backends is None:
        backends = [(w.name, w.address) for w in plan.webs]
    return render_haproxy_settings(
        plan.spec.haproxy,
        node=node,
        cluster=plan.name,
        web_port=plan.spec.web.port,
        backends=backends,
        stats_socket=stats_socket,
        stats_password=stats_password,
        cert_path=cert_path,
        server_state_file=server_state_file,
    )


def render_haproxy_settings(
    h: HaproxySpec,
    *,
    node: str,
    cluster: str,
    web_port: int,
    backends: Sequence[tuple[str, str]],
    stats_socket: str,
    stats_password: str,
    cert_path: str | None = None,
    server_state_file: str | None = None,
) -> str:
    """Render haproxy.cfg from the ``[haproxy]`` settings alone (what an AWS LB does with the
    desired document it fetched: it has no spec); see :func:`render_haproxy` for the rest.

    :raises OperationError: ``h.https`` is on and no ``cert_path`` was given.
    """
    if h.https and not cert_path:
        raise OperationError("haproxy.https is on but no certificate path was given")
    return render_template(
        "haproxy.cfg.j2",
        h=h,
        node=node,
        cluster=cluster,
        backends=list(backends),
        web_port=web_port,
        stats_socket=stats_socket,
        stats_password=stats_password,
        tls=h.https,
        cert_path=cert_path or "",
        server_options=server_options(h),
        server_state_file=server_state_file or "",
    )


def check_haproxy(config: str) -> None:
    """Validate a rendered config with ``haproxy -c``.

    :raises EnvironmentProblem: haproxy is not installed.
    :raises OperationError: haproxy rejects the config; the message carries its output.
    """
    exe = shutil.which("haproxy")
    if exe is None:
        raise EnvironmentProblem(
            "haproxy is not installed: run `make setup` (or apt-get install haproxy)"
        )
    with tempfile.TemporaryDirectory(prefix="hapair-check-") as tmp:
        cfg = Path(tmp) / "haproxy.cfg"
        cfg.write_text(config)
        proc = subprocess.run(
            [exe, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60, check=False
        )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()
        raise OperationError(f"haproxy -c rejected the configuration:\n{out}")
