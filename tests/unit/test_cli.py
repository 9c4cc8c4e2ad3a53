"""The CLI's messages and exit codes, word for word (2: usage/spec, 1: operational)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HAPAIR = str(Path(sys.executable).parent / "hapair")


def run(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [HAPAIR, *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def test_check_prints_the_plan(tmp_path: Path) -> None:
    proc = run("check", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "spec OK: cluster demo on lab, 3 web nodes" in proc.stdout
    assert "vip1    vip  home lb1         198.19.255.1" in proc.stdout
    assert "dns     www.hapair.test -> 198.19.255.1, 198.19.255.2" in proc.stdout


def test_spec_error_names_the_field_and_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "hapair.toml"
    spec.write_text("[web]\nsize = 0\n")
    proc = run("check", "--spec", str(spec))
    assert proc.returncode == 2
    assert proc.stderr == "error: web.size: must be between 1 and 250 (got 0)\n"
    assert proc.stdout == ""


def test_the_spec_in_the_current_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "hapair.toml").write_text('[cluster]\nname = "shop"\n[web]\nsize = 5\n')
    proc = run("check", cwd=str(tmp_path))
    assert "spec OK: cluster shop on lab, 5 web nodes" in proc.stdout


def test_missing_spec_file() -> None:
    proc = run("check", "--spec", "/nonexistent/hapair.toml")
    assert proc.returncode == 2
    assert proc.stderr == "error: /nonexistent/hapair.toml: no such spec file\n"


def test_up_validates_overrides_before_touching_anything() -> None:
    proc = run("up", "--web-size", "251")
    assert proc.returncode == 2
    assert proc.stderr == "error: web.size: must be between 1 and 250 (got 251)\n"


def test_render_a_node(tmp_path: Path) -> None:
    proc = run("render", "lb2", cwd=str(tmp_path))
    assert proc.returncode == 0
    assert "server web3 198.18.1.3:80 cookie web3 check" in proc.stdout
    assert "### agent.toml" in proc.stdout and "### nftables" in proc.stdout
    bad = run("render", "web9", cwd=str(tmp_path))
    assert bad.returncode == 2
    assert bad.stderr == "error: no node web9 in the plan (lb1, lb2, web1..web3)\n"


def test_status_of_an_unknown_lab() -> None:
    proc = run("status", "--name", "nosuch")
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: no lab named nosuch is running (start one with `hapair up --name nosuch`)\n"
    )


def test_usage_errors_exit_2() -> None:
    proc = run("kill", "--link", "--haproxy", "lb1")
    assert proc.returncode == 2
    assert proc.stderr == "error: --link and --haproxy exclude each other\n"
    proc = run("frobnicate")
    assert proc.returncode == 2


def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, euid: int
) -> tuple[int, str]:
    """Run the CLI in-process as if with effective uid ``euid``."""
    from hapair.cli import main as cli

    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(sys, "argv", ["hapair", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    return int(exit_.value.code or 0), capsys.readouterr().err


def test_missing_tools_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    code, err = _main(monkeypatch, capsys, "up", "--name", "hpnotool", euid=0)
    assert code == 1
    assert err == (
        "error: missing ip, nft, haproxy, dnsmasq, curl: run `make setup` "
        "(or apt-get install curl dnsmasq-base haproxy iproute2 nftables)\n"
    )


def test_not_root_says_how_to_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _main(monkeypatch, capsys, "up", "--name", "hpnoroot", euid=1000)
    assert code == 1
    assert err == (
        "error: the lab needs root (it creates network namespaces): run it as root, e.g. "
        "`sudo .venv/bin/hapair up`\n"
    )
