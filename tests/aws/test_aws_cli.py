"""The CLI's aws commands against the local moto server (as a newcomer would type them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HAPAIR, *args], capture_output=True, text=True, timeout=300)


def test_down_and_status_take_the_region_from_the_spec(
    ami: str, cluster_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `up` builds hapair's real wheel; its cache goes in this test's folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # The environment says us-east-1 (conftest); the spec says eu-west-3, as `up` uses it.
    spec = tmp_path / "hapair.toml"
    spec.write_text(
        f'[cluster]\nname = "{cluster_name}"\nplatform = "aws"\n'
        f'[aws]\nregion = "eu-west-3"\nami = "{ami}"\n[web]\nsize = 1\n'
        '[admin]\ncidrs = ["192.0.2.0/24"]\n'
    )
    up = _cli("up", "--spec", str(spec))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "in eu-west-3" in up.stdout
    assert "build hapair's wheel" in up.stdout
    assert "not waiting for the demo page" in up.stdout  # a local endpoint starts no instance

    rotate = _cli("secrets", "rotate", "--spec", str(spec), "--secret", "admin-token")
    assert rotate.returncode == 0, rotate.stderr
    assert rotate.stdout.startswith(f"{cluster_name}: rotated admin-token in eu-west-3\n")
    wrong = _cli("secrets", "rotate", "--spec", str(spec), "--secret", "nope")
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("error: unknown secret nope: choose from cluster-key,")

    # Not in the configured region (where `status` and `down` looked, whatever the spec said);
    # the cluster's IAM role is global, and says where the cluster lives.
    elsewhere = _cli("status", "--platform", "aws", "--name", cluster_name)
    assert elsewhere.returncode == 2
    assert elsewhere.stderr == (
        f"error: no aws cluster named {cluster_name} in us-east-1: its IAM role says it lives in "
        "eu-west-3 (add --region eu-west-3, or set aws.region in the spec)\n"
    )
    # The spec's region: found by status, from the spec alone or from the spec's folder.
    st = _cli("status", "--spec", str(spec), "--json")
    assert st.returncode == 0, st.stderr
    assert [n["name"] for n in json.loads(st.stdout)["nodes"]] == ["lb1", "lb2", "web1"]
    here = subprocess.run(
        [HAPAIR, "status"], capture_output=True, text=True, timeout=300, cwd=str(tmp_path)
    )
    assert here.returncode == 0, here.stderr
    assert "lb1" in here.stdout
    # --region overrides the spec, as for `up` and `plan`; there, `down` removes nothing (the
    # global IAM role of the cluster in eu-west-3 included).
    other = _cli("down", "--spec", str(spec), "--region", "us-east-1")
    assert other.returncode == 2
    assert "its IAM role says it lives in eu-west-3" in other.stderr
    assert _cli("status", "--spec", str(spec)).returncode == 0

    down = _cli("down", "--spec", str(spec))
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"{cluster_name}: removed in eu-west-3" in down.stdout
    again = _cli("down", "--spec", str(spec))
    assert again.returncode == 0
    assert f"{cluster_name}: nothing to remove in eu-west-3" in again.stdout
    gone = _cli("secrets", "rotate", "--spec", str(spec))
    assert gone.returncode == 2 and "run `hapair up` first" in gone.stderr


def in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """``hapair ARGS`` in this process, through the CLI's error funnel: (exit status, stderr)."""
    from hapair.cli.main import main

    monkeypatch.setattr(sys, "argv", ["hapair", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return int(done.value.code or 0), capsys.readouterr().err


def test_scale_takes_the_platform_and_the_cluster_from_the_spec(
    ami: str,
    cluster_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from contextlib import contextmanager

    from hapair.errors import UsageError
    from hapair.platforms.lab.day2 import target

    # ./hapair.toml says aws, no --spec: scale plans on AWS (this cluster has no LB there).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hapair.toml").write_text(
        f'[cluster]\nname = "{cluster_name}"\nplatform = "aws"\n[aws]\nami = "{ami}"\n'
    )
    assert in_process(monkeypatch, capsys, "scale", "--web", "3", "--dry-run") == (
        2,
        f"error: apply: lb1, lb2 of cluster {cluster_name} has no instance in us-east-1: "
        "run `hapair up` first (apply changes a running cluster; it never creates or "
        "replaces LBs)\n",
    )
    # A size the spec refuses, on aws too: exit 2, naming the field.
    code, err = in_process(monkeypatch, capsys, "scale", "--web", "0", "--dry-run")
    assert code == 2 and err.startswith("error: web.size: "), err

    # A lab spec given with --spec names the lab scale opens (and --name overrides it).
    opened: list[str] = []

    @contextmanager
    def no_lab(name: str) -> Any:
        opened.append(name)
        raise UsageError(f"no lab {name} here")
        yield

    monkeypatch.setattr(target, "open_lab", no_lab)
    other = tmp_path / "other.toml"
    other.write_text('[cluster]\nname = "fromspec"\nplatform = "lab"\n')
    scale = ("scale", "--web", "3", "--spec", str(other))
    assert in_process(monkeypatch, capsys, *scale) == (2, "error: no lab fromspec here\n")
    assert in_process(monkeypatch, capsys, *scale, "--name", "given")[0] == 2
    assert opened == ["fromspec", "given"]


def test_one_apply_at_a_time_per_cluster(
    ami: str,
    cluster_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hapair.errors import UsageError
    from hapair.platforms.aws.applylock import apply_lock, lock_path

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    held = tmp_path / "state" / "hapair" / "aws" / f"{cluster_name}-us-east-1.lock"
    assert lock_path(cluster_name, "us-east-1") == held
    spec = tmp_path / "hapair.toml"
    spec.write_text(f'[cluster]\nname = "{cluster_name}"\nplatform = "aws"\n[aws]\nami = "{ami}"\n')
    with apply_lock(cluster_name, "us-east-1"):
        for args in (("apply",), ("scale", "--web", "2")):
            assert in_process(monkeypatch, capsys, *args, "--spec", str(spec)) == (
                2,
                f"error: another apply or scale is running on cluster {cluster_name} in "
                f"us-east-1 (it holds {held}); wait until it ends, then run this again\n",
            )
        # Another cluster, or the same one in another region, is not held.
        with apply_lock("other", "us-east-1"), apply_lock(cluster_name, "eu-west-3"):
            pass
        # A dry run only reads: not refused (this cluster has no LB: `up` first).
        code, err = in_process(monkeypatch, capsys, "apply", "--spec", str(spec), "--dry-run")
        assert code == 2 and "run `hapair up` first" in err
    # Released at the end of the run (and by the kernel if the process dies).
    code, err = in_process(monkeypatch, capsys, "apply", "--spec", str(spec))
    assert code == 2 and "run `hapair up` first" in err
    refused = pytest.raises(UsageError, match="another apply or scale")
    with apply_lock("a", "r"), refused, apply_lock("a", "r"):
        pass
