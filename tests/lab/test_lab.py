"""The lab end to end: the seed's stack in namespaces, served through both VIPs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lab.conftest import HAPAIR, Lab, lab_name, require_root, start_lab

from hapair.platforms.lab import procs, supervise
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.state import cluster_dir
from hapair.spec import parse


def test_both_vips_serve_every_backend_round_robin(lab: Lab) -> None:
    seen: Counter[str] = Counter()
    lbs: Counter[str] = Counter()
    for i in range(24):
        vip = lab.vip(1 + i % 2)
        code, headers, body = lab.get(f"http://{vip}/")
        assert code == 0, body
        assert headers[":status"] == "200"
        seen[headers["x-backend"]] += 1
        lbs[headers["x-lb"]] += 1
        assert f"served by: {headers['x-backend']}" in body
        assert f"via load balancer: {headers['x-lb']}" in body
        assert "client: 198.19.0.10" in body
    assert set(seen) == {"web1", "web2", "web3"}
    assert min(seen.values()) >= 4, seen  # round robin (agent checks interleave a little)
    assert lbs == {"lb1": 12, "lb2": 12}  # each VIP is served by its home LB


def test_cookie_persistence_pins_a_client(lab: Lab, tmp_path: Path) -> None:
    jar = tmp_path / "jar"
    code, headers, _ = lab.get(f"http://{lab.vip(1)}/", extra=["-c", str(jar)])
    assert code == 0
    first = headers["x-backend"]
    assert "SERVERID=" + first in headers.get("set-cookie", "")
    for _ in range(6):
        code, headers, _ = lab.get(f"http://{lab.vip(1)}/", extra=["-b", str(jar)])
        assert code == 0
        assert headers["x-backend"] == first


def test_dns_name_resolves_to_both_vips(lab: Lab) -> None:
    proc = lab.run("inet", ["getent", "ahostsv4", lab.plan.spec.cluster.domain])
    assert proc.returncode == 0, proc.stderr
    addrs = {line.split()[0] for line in proc.stdout.splitlines()}
    assert addrs == {lab.vip(1), lab.vip(2)}


def test_html_page_for_browsers(lab: Lab) -> None:
    code, headers, body = lab.get(f"http://{lab.vip(2)}/", extra=["-H", "Accept: text/html"])
    assert code == 0
    assert headers["content-type"].startswith("text/html")
    assert "<html" in body.lower()


def _sg_dropped(lab: Lab, node: str) -> int:
    proc = lab.run(node, ["nft", "-j", "list", "counter", "inet", "hapair", "sg_dropped"])
    assert proc.returncode == 0, proc.stderr
    for item in json.loads(proc.stdout)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise AssertionError("no counter")


def test_client_cannot_reach_a_web_node_directly(lab: Lab) -> None:
    before = _sg_dropped(lab, "web1")
    code, _, _ = lab.get(f"http://{lab.plan.node('web1').address}/", timeout=1)
    assert code != 0
    assert _sg_dropped(lab, "web1") > before


def test_client_cannot_reach_heartbeat_port(lab: Lab) -> None:
    before = _sg_dropped(lab, "lb1")
    script = (
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.sendto(b'x'*40, ('{lab.plan.node('lb1').address}', 694))"
    )
    proc = lab.run("inet", ["python3", "-c", script])
    assert proc.returncode == 0, proc.stderr
    lab.wait_for("the SG to drop the datagram", lambda: _sg_dropped(lab, "lb1") > before, 5)


def test_lb_reaches_web_port_80(lab: Lab) -> None:
    proc = lab.run(
        "lb1", ["curl", "-sS", "--max-time", "3", f"http://{lab.plan.node('web2').address}/"]
    )
    assert proc.returncode == 0, proc.stderr
    assert "served by: web2" in proc.stdout


def test_status_json_reads_owners_from_the_kernel(lab: Lab) -> None:
    proc = lab.cli("status", "--name", lab.name, "--json")
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    assert st["name"] == lab.name
    assert [n["name"] for n in st["nodes"]][:4] == ["inet", "igw", "lb1", "lb2"]
    assert {v["name"]: (v["home"], v["owner"]) for v in st["vips"]} == {
        "vip1": ("lb1", "lb1"),
        "vip2": ("lb2", "lb2"),
    }
    ups = [b for b in st["backends"] if b.get("status") == "UP"]
    assert len(ups) == 6  # 3 backends seen UP by each of the two HAProxies


def test_up_again_changes_nothing(lab: Lab) -> None:
    before = json.loads((cluster_dir(lab.name) / "state.json").read_text())["procs"]
    proc = lab.cli("up", "--name", lab.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing to change" in proc.stdout
    after = json.loads((cluster_dir(lab.name) / "state.json").read_text())["procs"]
    assert before == after


def test_up_with_another_spec_on_a_running_name_is_refused(lab: Lab) -> None:
    proc = lab.cli("up", "--name", lab.name, "--web-size", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: a lab named {lab.name} is already running with another spec; "
        f"`hapair apply --name {lab.name} --spec FILE` changes it live, or run "
        f"`hapair down --name {lab.name}` first, or choose another --name"
    )


def test_secrets_are_private(lab: Lab) -> None:
    secrets = cluster_dir(lab.name) / "secrets"
    for f in secrets.iterdir():
        assert f.stat().st_mode & 0o077 == 0, f


def _leftovers(name: str) -> list[str]:
    out = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += [line for line in ns.splitlines() if line.startswith(f"{name}-")]
    if cluster_dir(name).exists():
        out.append(str(cluster_dir(name)))
    if Path(f"/etc/netns/{name}-inet").exists():
        out.append(f"/etc/netns/{name}-inet")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if f"/{name}/" in cmd or f"{name}-" in cmd:
                out.append(f"pid {pid}: {cmd}")
    return out


def test_two_labs_at_once_then_down_leaves_nothing(lab: Lab) -> None:
    other = start_lab(parse({"cluster": {"name": lab_name()}, "web": {"size": 1}}))
    try:
        code, headers, _ = other.get(f"http://{other.vip(2)}/")
        assert code == 0 and headers["x-backend"] == "web1"
        code, headers, _ = lab.get(f"http://{lab.vip(2)}/")  # the first lab is untouched
        assert code == 0
    finally:
        proc = other.cli("down", "--name", other.name)
    assert proc.returncode == 0, proc.stderr
    assert _leftovers(other.name) == []
    again = other.cli("down", "--name", other.name)
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_down_cleans_a_half_built_lab() -> None:
    name = lab_name()
    # What an `up` killed after its first steps leaves: namespaces, a state dir, no processes.
    for node in ("vpc", "inet", "lb1"):
        subprocess.run(["ip", "netns", "add", f"{name}-{node}"], check=True)
    cluster_dir(name).mkdir(parents=True)
    (cluster_dir(name) / "state.json").write_text('{"complete": false}')
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "hapair"), "down", "--name", name],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert _leftovers(name) == []


def test_https_with_a_generated_self_signed_certificate() -> None:
    lab = start_lab(
        parse({"cluster": {"name": lab_name()}, "web": {"size": 1}, "haproxy": {"https": True}}),
        engine="static",
    )
    try:
        code, headers, body = lab.get(f"https://{lab.vip(1)}/", extra=["-k"])
        assert code == 0, body
        assert headers[":status"] == "200" and "served by: web1" in body
        pem = cluster_dir(lab.name) / "secrets" / "lab.pem"
        assert pem.stat().st_mode & 0o077 == 0
        subject = subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-in", str(pem)],
            capture_output=True,
            text=True,
        ).stdout
        assert "www.hapair.test" in subject
    finally:
        lab.platform.down(lab.name)


def test_an_interrupted_up_exits_130_and_down_cleans_it() -> None:
    require_root()
    name = lab_name()
    proc = subprocess.Popen(
        [HAPAIR, "up", "--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while "• create".encode() not in seen and time.monotonic() < deadline:
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                break
            seen += chunk
        assert "• create".encode() in seen, seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130, (seen + out, err)
    assert err.decode().strip().splitlines()[-1] == (
        f"interrupted: the lab is half built; run `hapair down --name {name}` or `hapair up` again"
    )
    down = subprocess.run([HAPAIR, "down", "--name", name], capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    assert _leftovers(name) == []


# ------------------------------------------------------------------ supervision and chaos

SUPERVISE = Path(supervise.__file__).with_name("supervise.sh")


def _log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_the_supervisor_backs_off_a_service_that_keeps_dying(tmp_path: Path) -> None:
    log, pidfile = tmp_path / "sup.log", tmp_path / "svc.pid"
    argv = ["dash", str(SUPERVISE), "svc", str(pidfile), str(log), "100", "--"]
    sup = subprocess.Popen([*argv, "sh", "-c", "exit 3"], stdout=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while len(_log_lines(log)) < 5 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        took = time.monotonic() - t0
        lines = _log_lines(log)
        # 100 ms, then twice as long each time while it dies within 10 s: never a busy loop.
        waits = [line.rsplit(" in ", 1)[1] for line in lines[:5]]
        assert waits == ["0.100 s", "0.200 s", "0.400 s", "0.800 s", "1.600 s"], lines
        # The run time is whole seconds from `date +%s`: a start and an exit either side of a
        # second boundary read "after 1 s" although the service lived a few milliseconds.
        died = re.compile(r"svc exited with status 3 after [01] s; restart \d+ in ")
        assert all(died.search(x) for x in lines[:5]), lines
        assert took >= 1.4  # 0.1 + 0.2 + 0.4 + 0.8 s of waits before the 5th line
        # SIGTERM while it waits: it exits at once, without starting the service again.
        t1 = time.monotonic()
        sup.terminate()
        assert sup.wait(timeout=5) == 0
        assert time.monotonic() - t1 < 1.0
        assert _log_lines(log)[-1].endswith("svc stopped (last exit status 3)")
    finally:
        sup.kill()
        sup.wait(timeout=5)


def test_sigterm_to_the_supervisor_stops_the_service_and_waits_for_it(tmp_path: Path) -> None:
    log, pidfile, out = tmp_path / "sup.log", tmp_path / "svc.pid", tmp_path / "out"
    service = 'trap "echo hup" HUP; trap "sleep 0.5; echo term; exit 0" TERM; '
    service += "while :; do sleep 0.05; done"
    argv = ["dash", str(SUPERVISE), "svc", str(pidfile), str(log), "100", "--"]
    with open(out, "wb") as f:
        sup = subprocess.Popen([*argv, "sh", "-c", service], stdout=f, stderr=f)
    try:
        t0 = time.monotonic()
        while not pidfile.exists() and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        child = int(pidfile.read_text().split()[0])
        sup.send_signal(signal.SIGHUP)  # passed on, not a stop
        t0 = time.monotonic()
        while "hup" not in out.read_text() and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        assert "hup" in out.read_text()
        assert sup.poll() is None
        t1 = time.monotonic()
        sup.terminate()
        assert sup.wait(timeout=5) == 0
        # It waited for the service's own shutdown (0.5 s), which did finish.
        assert time.monotonic() - t1 >= 0.45
        assert "term" in out.read_text()
        st = procs.stat(child)
        assert st is None or st[0] == "Z"  # gone (a zombie until PID 1 reaps it)
    finally:
        sup.kill()
        sup.wait(timeout=5)


@pytest.fixture(scope="module")
def chaos() -> Iterator[Lab]:
    """A lab of its own for the chaos tests (2 web nodes); each test leaves it whole."""
    lab = start_lab(parse({"cluster": {"name": lab_name()}, "web": {"size": 2}}))
    try:
        yield lab
    finally:
        lab.platform.down(lab.name)


def _status(lab: Lab) -> dict[str, Any]:
    proc = lab.cli("status", "--name", lab.name, "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _process(lab: Lab, node: str, service: str) -> dict[str, Any]:
    st = _status(lab)
    return dict(next(n for n in st["nodes"] if n["name"] == node)["processes"][service])


def _served_by(lab: Lab, vip: int) -> str | None:
    code, headers, _ = lab.get(f"http://{lab.vip(vip)}/", timeout=1)
    return headers.get("x-lb") if code == 0 and headers.get(":status") == "200" else None


def _whole(lab: Lab) -> None:
    """Revive everything and wait until each VIP is home and served there."""
    for node in ("lb1", "lb2", "web1", "web2", "igw", "inet"):
        lab.platform.revive(lab.name, node)
    lab.wait_for(
        "both VIPs home",
        lambda: (
            lab.owners() == {"vip1": ["lb1"], "vip2": ["lb2"]}
            and _served_by(lab, 1) == "lb1"
            and _served_by(lab, 2) == "lb2"
        ),
        30,
    )


@pytest.fixture
def whole(chaos: Lab) -> Iterator[Lab]:
    _whole(chaos)
    yield chaos
    _whole(chaos)


def test_a_crashed_agent_is_restarted_by_its_supervisor(whole: Lab) -> None:
    lab = whole
    before = lab.platform.service(lab.name, "lb1", "agent")
    assert before is not None
    t0 = time.monotonic()
    os.kill(before.pid, signal.SIGKILL)  # a crash, from outside hapair
    lab.wait_for(
        "a new agent on lb1",
        lambda: (p := lab.platform.service(lab.name, "lb1", "agent")) is not None and p != before,
        10,
    )
    assert time.monotonic() - t0 >= 0.9  # the restart delay (1 s)
    now = lab.platform.service(lab.name, "lb1", "agent")
    assert now is not None
    p = _process(lab, "lb1", "agent")
    assert p == {"running": True, "pid": now.pid, "supervised": True, "restarts": 1}
    paths = LabPaths(lab.name)
    sup_log = _log_lines(paths.log("lb1", "supervisor"))
    assert any(
        "agent killed by signal 9 after" in x and "restart 1 in 1.000 s" in x for x in sup_log
    )
    assert "supervisor: agent killed by signal 9" in paths.log("lb1", "agent").read_text()
    # The state file follows once hapair looks again (revive is idempotent: nothing started).
    assert lab.platform.revive(lab.name, "lb1") == "lb1: link up, haproxy and agent already running"
    state = json.loads((cluster_dir(lab.name) / "state.json").read_text())
    assert state["procs"]["lb1/agent"]["pid"] == now.pid
    # Dead again within 10 s of its start: the supervisor waits 2 s; revive cuts the wait short.
    os.kill(now.pid, signal.SIGKILL)
    lab.wait_for(
        "the supervisor to wait 2 s",
        lambda: "restart 2 in 2.000 s" in paths.log("lb1", "supervisor").read_text(),
        5,
    )
    t1 = time.monotonic()
    assert lab.platform.revive(lab.name, "lb1") == "lb1: link up, restarted agent"
    assert time.monotonic() - t1 < 1.5
    assert _process(lab, "lb1", "agent")["restarts"] == 2


def test_kill_haproxy_is_restarted_and_no_restart_keeps_it_down(whole: Lab) -> None:
    lab = whole
    proc = lab.cli("kill", "--name", lab.name, "lb2", "--haproxy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("lb2: killed haproxy; its supervisor restarts it after 1 s")
    lab.wait_for(
        "HAProxy on lb2 restarted",
        lambda: _process(lab, "lb2", "haproxy").get("restarts") == 1,
        10,
    )
    lab.wait_for("VIP2 home again", lambda: _served_by(lab, 2) == "lb2", 20)

    proc = lab.cli("kill", "--name", lab.name, "lb1", "--agent", "--no-restart")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "lb1: killed agent; down until `hapair revive lb1`"
    # Asserting that nothing happens needs a window: three restart delays.
    time.sleep(3)
    assert _process(lab, "lb1", "agent") == {
        "running": False,
        "pid": None,
        "supervised": False,
        "restarts": None,
    }
    assert "agent DOWN" in lab.cli("status", "--name", lab.name).stdout
    proc = lab.cli("revive", "--name", lab.name, "lb1")
    assert proc.stdout.strip() == "lb1: link up, started agent"
    assert _process(lab, "lb1", "agent")["running"] is True


def test_status_after_a_machine_kill_says_who_serves_and_what_is_stale(whole: Lab) -> None:
    lab = whole
    proc = lab.cli("kill", "--name", lab.name, "lb1")
    assert proc.returncode == 0, proc.stderr
    assert "lb1: killed" in proc.stdout and "down until `hapair revive lb1`" in proc.stdout
    lab.wait_for("lb2 to take VIP1", lambda: lab.owners()["vip1"] == ["lb1", "lb2"], 10)
    text = lab.cli("status", "--name", lab.name).stdout
    vip1 = lab.vip(1)
    assert (
        f"vip1 {vip1} (home lb1): served by lb2; "
        "lb1 is down and its interface still carries the address (stale)"
    ) in text
    assert "SPLIT" not in text
    assert "haproxy DOWN, agent DOWN" in text
    st = _status(lab)
    v1 = st["vips"][0]
    assert (v1["owner"], v1["holders"], v1["state"], v1["stale"]) == (
        "lb2",
        ["lb1", "lb2"],
        "away",
        ["lb1"],
    )
    # A machine death is not a crash: nothing restarts it (supervisors died with it).
    time.sleep(2)
    assert _process(lab, "lb1", "haproxy")["supervised"] is False
    proc = lab.cli("revive", "--name", lab.name, "lb1")
    assert proc.stdout.strip() == "lb1: link up, started haproxy and agent"


def test_a_killed_web_node_can_be_revived(whole: Lab) -> None:
    lab = whole

    def web1_seen(state: str) -> bool:
        st = _status(lab)
        seen = [b["status"] for b in st["backends"] if b.get("server") == "web1"]
        return len(seen) == 2 and all(s.startswith(state) for s in seen)

    proc = lab.cli("kill", "--name", lab.name, "web1")
    assert proc.returncode == 0, proc.stderr
    assert "web1: killed (machine: its web app stopped)" in proc.stdout  # the pool stops it
    lab.wait_for("both HAProxies to see web1 DOWN", lambda: web1_seen("DOWN"), 15)
    proc = lab.cli("revive", "--name", lab.name, "web1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "web1: link up, started webapp"
    lab.wait_for("both HAProxies to see web1 UP", lambda: web1_seen("UP"), 15)
    backends = {lab.get(f"http://{lab.vip(1)}/")[1].get("x-backend") for _ in range(6)}
    assert "web1" in backends


def test_igw_and_inet_can_be_killed_and_revived(whole: Lab) -> None:
    lab = whole
    proc = lab.cli("kill", "--name", lab.name, "inet")
    assert "inet: killed 2 processes (machine)" in proc.stdout  # dnsmasq and its supervisor
    domain = lab.plan.spec.cluster.domain
    assert lab.run("inet", ["getent", "ahostsv4", domain]).returncode != 0
    proc = lab.cli("revive", "--name", lab.name, "inet")
    assert proc.stdout.strip() == "inet: started dnsmasq"
    assert lab.run("inet", ["getent", "ahostsv4", domain]).returncode == 0

    proc = lab.cli("kill", "--name", lab.name, "igw")
    assert proc.stdout.startswith("igw: its switch port is down")
    assert lab.get(f"http://{lab.vip(1)}/", timeout=1)[0] != 0
    assert _status(lab)["nodes"][1]["link_up"] is False
    proc = lab.cli("revive", "--name", lab.name, "igw")
    assert proc.stdout.strip() == "igw: link up"
    lab.wait_for("VIP1 reachable again", lambda: _served_by(lab, 1) == "lb1", 10)


def test_sigterm_to_the_agent_s_supervisor_hands_the_vip_over(whole: Lab) -> None:
    lab = whole
    state = json.loads((cluster_dir(lab.name) / "state.json").read_text())
    sup = state["procs"]["lb1/agent"]["supervisor"]["pid"]
    os.kill(sup, signal.SIGTERM)  # stopping the service, as `systemctl stop` would
    lab.wait_for("VIP1 only on lb2", lambda: lab.owners()["vip1"] == ["lb2"], 10)
    paths = LabPaths(lab.name)
    lab.wait_for(
        "the supervisor to stop",
        lambda: any("agent stopped" in x for x in _log_lines(paths.log("lb1", "supervisor"))),
        10,
    )
    log = paths.log("lb1", "agent").read_text()
    assert "stopping: handing vip1 to lb2" in log and "lb1 stopped" in log
    assert _process(lab, "lb1", "agent")["supervised"] is False
