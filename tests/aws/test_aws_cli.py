"""The CLI's aws commands against the local moto server (as a newcomer would type them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HAPAIR = str(Path(sys.executable).parent / "hapair")


def test_plan_lists_what_up_would_create(ami: str, cluster_name: str, tmp_path: Path) -> None:
    spec = tmp_path / "hapair.toml"
    spec.write_text(
        f'[cluster]\nname = "{cluster_name}"\nplatform = "aws"\n'
        f'[aws]\nami = "{ami}"\n[web]\nsize = 4\n'
    )
    proc = subprocess.run(
        [HAPAIR, "plan", "--spec", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "create" in out
    assert "web4" in out and "lb2" in out
    assert "t3.small" in out and "/h" in out  # the hourly estimate


def test_status_of_a_cluster_that_does_not_exist(cluster_name: str) -> None:
    proc = subprocess.run(
        [HAPAIR, "status", "--platform", "aws", "--name", cluster_name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert cluster_name in proc.stderr
