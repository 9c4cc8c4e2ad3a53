"""``up --with-monitoring``: Debian's Prometheus in the lab, scraping both LBs.

It runs on the client host ``<c>-inet`` (reaching the LBs' 9022-9023 like any admin source),
listens on 127.0.0.1:9090 *inside that namespace* only, keeps one day of data under the lab's
state directory (``monitoring/``), and dies with the lab (``down`` kills every process of the
namespace). ``hapair open prometheus`` brings its UI to the host through the forwarder.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from hapair.errors import EnvironmentProblem, OperationError
from hapair.fileio import write_atomic
from hapair.plan import Plan
from hapair.platforms.lab import procs
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.procs import Proc
from hapair.platforms.lab.state import ensure_secret, save_state
from hapair.platforms.lab.system import in_ns, run
from hapair.render.prometheus import render_prometheus

LISTEN = "127.0.0.1:9090"


def ensure(plan: Plan, state: dict[str, Any], timeout: float = 30.0) -> str:
    """Make Prometheus run in the lab (started once; idempotent); returns what was done.

    :raises EnvironmentProblem: prometheus is not installed.
    :raises OperationError: it did not become ready in time.
    """
    exe = shutil.which("prometheus")
    if exe is None:
        raise EnvironmentProblem("prometheus is not installed: run `make setup` (Debian package)")
    paths = LabPaths(plan.name)
    if procs.alive(Proc.from_json(state.get("monitoring"))):
        return "prometheus already runs"
    d = paths.root / "monitoring"
    password = str(plan.spec.haproxy.stats_password or ensure_secret(paths.stats_password, 12))
    write_atomic(d / "stats.password", password + "\n", mode=0o600)
    write_atomic(d / "prometheus.yml", render_prometheus(plan, str(d / "stats.password")))
    ns = plan.node("inet").namespace
    argv = [
        exe,
        f"--config.file={d / 'prometheus.yml'}",
        f"--storage.tsdb.path={d / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address={LISTEN}",
    ]
    proc = procs.spawn(ns, argv, paths.log("inet", "prometheus"))
    state["monitoring"] = proc.to_json()
    save_state(plan.name, state)
    ready = in_ns(ns, ["curl", "-sf", "--max-time", "1", f"http://{LISTEN}/-/ready"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run(ready, check=False).returncode == 0:
            return f"prometheus runs in {ns} on {LISTEN} (pid {proc.pid})"
        if not procs.alive(proc):
            break
        time.sleep(0.2)
    raise OperationError(f"prometheus did not become ready; see {paths.log('inet', 'prometheus')}")
