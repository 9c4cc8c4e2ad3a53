"""The CLI's messages and exit codes, word for word (2: usage/spec, 1: operational)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_kill_options_that_exclude_each_other() -> None:
    proc = run("kill", "--haproxy", "--agent", "lb1")
    assert (proc.returncode, proc.stderr) == (
        2,
        "error: --haproxy and --agent exclude each other\n",
    )
    proc = run("kill", "--link", "--no-restart", "lb1")
    assert proc.returncode == 2
    assert proc.stderr == (
        "error: --no-restart goes with --haproxy or --agent (a link stays down anyway)\n"
    )


def test_an_interrupted_up_exits_non_zero_and_says_how_to_clean(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hapair.platforms.lab.platform import LabPlatform

    def up(self: LabPlatform, plan: object, progress: Any) -> None:
        progress("create 8 namespaces")
        raise KeyboardInterrupt

    monkeypatch.setattr(LabPlatform, "up", up)
    code, err = _main(monkeypatch, capsys, "up", "--name", "hpintr", euid=0)
    assert code == 130
    assert err == (
        "interrupted: the lab is half built; run `hapair down --name hpintr` or `hapair up` again\n"
    )


def test_a_command_s_exit_status_is_the_process_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `typer.Exit(n)` inside a command (curl's exit status, an interrupted up) must reach the
    # shell: it used to be swallowed into 0.
    from hapair.cli import client
    from hapair.platforms.lab.platform import LabPlatform

    monkeypatch.setattr(LabPlatform, "plan_of", lambda self, name: (None, {}))
    monkeypatch.setattr(client, "curl_once", lambda *a: (1, "-> all VIPs failed\n"))
    code, _ = _main(monkeypatch, capsys, "curl", "--name", "hpcurl", euid=0)
    assert code == 1


# -------------------------------------------------------------------- status wording (pure)


def _lbs(**health: tuple[bool, bool, bool | None]) -> dict[str, Any]:
    from hapair.platforms.lab.status import LbHealth

    return {lb: LbHealth(*h) for lb, h in health.items()}


UP = (True, True, True)  # link up, HAProxy running, agent running
DEAD = (True, False, False)  # killed as a machine: the link stays up


def _vip(holders: list[str], wanted: dict[str, list[str]] | None = None, **health: Any) -> Any:
    from hapair.platforms.lab.status import vip_view

    lbs = _lbs(**{"lb1": UP, "lb2": UP, **health})
    return vip_view("vip1", "198.19.255.1", "lb1", holders, lbs, wanted)


def test_status_after_a_crash_says_who_serves_and_what_is_stale() -> None:
    v = _vip(["lb1", "lb2"], lb1=DEAD)
    assert v["summary"] == (
        "vip1 198.19.255.1 (home lb1): served by lb2; "
        "lb1 is down and its interface still carries the address (stale)"
    )
    assert (v["state"], v["served_by"], v["stale"]) == ("away", ["lb2"], ["lb1"])


def test_status_calls_it_split_brain_only_when_both_holders_are_alive() -> None:
    both = _vip(["lb1", "lb2"], {"lb1": ["vip1"], "lb2": ["vip1", "vip2"]})
    assert both["state"] == "split"
    assert both["summary"] == (
        "vip1 198.19.255.1 (home lb1): SPLIT BRAIN: held by lb1 and lb2, both alive"
    )
    # A make-before-break hand-over: lb2 no longer wants it and lets go once lb1 announces it.
    moving = _vip(["lb1", "lb2"], {"lb1": ["vip1"], "lb2": ["vip2"]})
    assert moving["state"] == "handover"
    assert moving["summary"].endswith("moving from lb2 to lb1 (make-before-break)")
    # lb2's agent is dead: not a split brain, though both still answer.
    agentless = _vip(["lb1", "lb2"], lb2=(True, True, False))
    assert agentless["state"] == "home"
    assert agentless["summary"] == (
        "vip1 198.19.255.1 (home lb1): served by lb1 and lb2; lb2 has no agent running"
    )


def test_status_wording_of_a_cut_off_holder_and_of_an_unserved_vip() -> None:
    cut = _vip(["lb1", "lb2"], lb1=(False, True, True))
    assert cut["summary"] == (
        "vip1 198.19.255.1 (home lb1): served by lb2; "
        "lb1 is cut off (link down) and its interface still carries the address (stale)"
    )
    nobody = _vip([])
    assert (nobody["state"], nobody["summary"]) == (
        "unserved",
        "vip1 198.19.255.1 (home lb1): NOT SERVED: no node holds it",
    )
    stale_only = _vip(["lb1"], lb1=DEAD, lb2=DEAD)
    assert stale_only["summary"] == (
        "vip1 198.19.255.1 (home lb1): NOT SERVED; "
        "lb1 is down and its interface still carries the address (stale)"
    )
    home = _vip(["lb1"])
    assert (home["state"], home["summary"]) == (
        "home",
        "vip1 198.19.255.1 (home lb1): served by lb1",
    )


def test_show_status_prints_real_pids_and_the_vip_sentences() -> None:
    from hapair.cli.show import show_status

    st = {
        "name": "demo",
        "engine": "hapair",
        "domain": "www.hapair.test",
        "nodes": [
            {
                "name": "lb1",
                "role": "lb",
                "address": "198.18.0.11",
                "link_up": True,
                "processes": {
                    "haproxy": {"running": True, "pid": 41, "supervised": True, "restarts": 0},
                    "agent": {"running": False, "pid": None, "supervised": True, "restarts": None},
                },
            },
            {
                "name": "lb2",
                "role": "lb",
                "address": "198.18.0.12",
                "link_up": False,
                "processes": {
                    "haproxy": {"running": True, "pid": 52, "supervised": True, "restarts": 2},
                    "agent": {"running": False, "pid": None, "supervised": False},
                },
            },
        ],
        "vips": [
            {"name": "vip1", "address": "198.19.255.1", "home": "lb1", "summary": "vip1 ... lb2"}
        ],
        "backends": [],
    }
    text = show_status(st)
    assert "haproxy up (pid 41), agent RESTARTING" in text
    assert "haproxy up (pid 52, 2 restarts), agent DOWN, LINK DOWN" in text
    assert "\n  vip1 ... lb2\n" in text


def test_commands_default_to_the_cluster_named_in_the_spec(tmp_path: Path) -> None:
    (tmp_path / "hapair.toml").write_text('[cluster]\nname = "shopx"\n')
    for argv in (["status"], ["curl"], ["revive", "lb1"]):
        proc = run(*argv, cwd=str(tmp_path))
        assert proc.returncode == 2, argv
        assert proc.stderr == (
            "error: no lab named shopx is running (start one with `hapair up --name shopx`)\n"
        )
    proc = run("status", "--name", "other", cwd=str(tmp_path))
    assert "no lab named other is running" in proc.stderr
