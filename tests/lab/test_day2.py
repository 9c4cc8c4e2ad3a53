"""Day 2 end to end: scale, apply, rolling restart and certificate rotation on a running lab,
each under a bounded probe (open-loop clients on both VIPs, a keep-alive client, HTTPS clients);
an invalid apply changes nothing; a drained server gets no new request."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.lab.conftest import HAPAIR, Lab

from hapair import haproxy_runtime as rt
from hapair.bench.probe import Sample
from hapair.bench.runner import BackgroundProbe
from hapair.netns import call_in
from hapair.platforms.lab.network import lab_namespaces
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.state import load_state

PROBE_MAX_S = 90.0  # every probe is stopped as soon as its operation is over


@pytest.fixture(scope="module")
def d2(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The module's lab (3 web nodes, agents on both LBs), HTTPS switched on by `apply`."""
    spec = tmp_path_factory.mktemp("d2") / "hapair.toml"
    spec.write_text(f'[cluster]\nname = "{lab.name}"\n[haproxy]\nhttps = true\n')
    proc = cli(lab, "apply", "--spec", str(spec))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "~ haproxy.https: False -> True" in proc.stdout
    return lab


@pytest.fixture(autouse=True)
def _home(d2: Lab) -> Iterator[None]:
    """Every test starts and ends with each VIP on its home LB only."""
    home = {"vip1": ["lb1"], "vip2": ["lb2"]}
    d2.wait_for("both VIPs home", lambda: d2.owners() == home, 30)
    yield
    d2.wait_for("both VIPs home", lambda: d2.owners() == home, 30)


class Load:
    """The clients of `hapair bench day2`, bounded: open-loop on both VIPs (1 s deadline), a
    keep-alive client on VIP1 and, with ``https``, open-loop HTTPS clients on both VIPs."""

    def __init__(self, lab: Lab, https: bool = False) -> None:
        v1, v2 = lab.vip(1), lab.vip(2)
        p = lab.plan
        self.probes = {
            "vip1": BackgroundProbe(p, [v1], 50, PROBE_MAX_S, 1.0, stream=True),
            "vip2": BackgroundProbe(p, [v2], 50, PROBE_MAX_S, 1.0, stream=True),
            "keepalive": BackgroundProbe(p, [v1], 20, PROBE_MAX_S, 10.0, keepalive=True),
        }
        if https:
            for name, vip in (("https1", v1), ("https2", v2)):
                self.probes[name] = BackgroundProbe(p, [vip], 10, PROBE_MAX_S, 1.0, tls=True)
        time.sleep(1.0)

    def stop(self) -> dict[str, list[Sample]]:
        time.sleep(1.0)
        return {name: probe.stop() for name, probe in self.probes.items()}


def failed(samples: dict[str, list[Sample]], moves: int = 0) -> dict[str, list[Sample]]:
    """Failed requests per client. With ``moves`` VIP moves, each may cost one connection
    reset per open-loop client (a connection set up with the old holder just before the
    gratuitous ARP, docs/benchmarks.md finding 3); anything else counts."""
    out = {}
    for name, ss in samples.items():
        bad = [s for s in ss if not s.ok]
        resets = [s for s in bad if s.error.startswith("ConnectionResetError")]
        if len(resets) == len(bad) and len(resets) <= moves:
            bad = []
        if bad:
            out[name] = bad[:5]
    return out


def cli(lab: Lab, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return lab.cli(*args, "--name", lab.name, timeout=timeout)


def sock(lab: Lab, lb: str) -> str:
    return str(LabPaths(lab.name).haproxy_sock(lb))


def servers(lab: Lab, lb: str) -> dict[str, rt.ServerState]:
    return rt.servers(sock(lab, lb), "web")


def workers(lab: Lab) -> dict[str, int]:
    return {lb: rt.worker_pid(sock(lab, lb)) for lb in ("lb1", "lb2")}


def scale_to(lab: Lab, n: int) -> subprocess.CompletedProcess[str]:
    proc = cli(lab, "scale", "--web", str(n))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def running_spec(lab: Lab) -> dict[str, Any]:
    state = load_state(lab.name)
    assert state is not None
    return dict(state["spec"])


def test_scale_up_and_down_loses_no_request(d2: Lab) -> None:
    scale_to(d2, 3)
    load = Load(d2)
    up = scale_to(d2, 6)
    down = scale_to(d2, 2)
    samples = load.stop()
    assert failed(samples) == {}
    assert "add web4, web5, web6" in up.stdout and "6 web nodes" in up.stdout
    assert "remove web3, web4, web5, web6" in down.stdout and "drained in" in down.stdout
    # Every web node served while it was in, and both HAProxies agree on the end state.
    assert {s.backend for s in samples["vip1"] + samples["vip2"]} >= {f"web{i}" for i in (4, 5, 6)}
    for lb in ("lb1", "lb2"):
        assert {n: s.status for n, s in servers(d2, lb).items()} == {"web1": "UP", "web2": "UP"}
        cfg = LabPaths(d2.name).haproxy_cfg(lb).read_text()
        assert cfg.count("    server web") == 2
    assert running_spec(d2)["web"]["size"] == 2
    assert [ns for ns in lab_namespaces(d2.name) if "-web" in ns] == [
        f"{d2.name}-web1",
        f"{d2.name}-web2",
    ]
    again = scale_to(d2, 2)
    assert "web 2: nothing to change" in again.stdout


def test_scale_refuses_a_size_out_of_range(d2: Lab) -> None:
    proc = cli(d2, "scale", "--web", "251")
    assert proc.returncode == 2
    assert "web.size: must be between 1 and 250 (got 251)" in proc.stderr


def _pinned_to(lab: Lab, node: str) -> str:
    """A persistence cookie that pins a client to ``node`` (whatever its value is)."""
    for _ in range(60):
        code, headers, _ = lab.get(f"http://{lab.vip(1)}/")
        if code == 0 and headers.get("x-backend") == node:
            cookie = headers["set-cookie"].split(";")[0]
            assert cookie.startswith("SERVERID=")
            return cookie
    pytest.fail(f"no request reached {node}")


def test_a_drained_server_receives_no_new_request(d2: Lab) -> None:
    scale_to(d2, 3)
    cookie = _pinned_to(d2, "web3")
    # A session that stays on web3: a request whose body is still coming.
    ns = d2.ns("inet")
    conn = call_in([ns], lambda _: socket.create_connection((d2.vip(1), 80), timeout=20))[ns]
    assert isinstance(conn, socket.socket)
    with conn:
        conn.sendall(
            f"GET / HTTP/1.1\r\nHost: {d2.plan.spec.cluster.domain}\r\nCookie: {cookie}\r\n"
            "Content-Length: 10\r\n\r\nabc".encode()
        )
        d2.wait_for("a session on web3", lambda: servers(d2, "lb1")["web3"].sessions >= 1, 5)
        proc = subprocess.Popen(
            [HAPAIR, "scale", "--web", "2", "--drain-timeout", "30", "--name", d2.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            d2.wait_for(
                "web3 draining on both LBs",
                lambda: all(servers(d2, lb)["web3"].status == "DRAIN" for lb in ("lb1", "lb2")),
                15,
            )
            seen = []
            for i in range(30):
                code, headers, _ = d2.get(f"http://{d2.vip(1 + i % 2)}/")
                assert code == 0
                seen.append(headers["x-backend"])
            assert "web3" not in seen and set(seen) == {"web1", "web2"}
            assert proc.poll() is None  # still waiting for the session on web3
            conn.sendall(b"defghij")  # the end of the body: its answer comes from web3
            answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200") and b"x-backend: web3" in answer.lower()
        finally:
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "drained in" in out and "timed out" not in out
    for lb in ("lb1", "lb2"):
        assert "web3" not in servers(d2, lb)


def test_a_reload_keeps_a_drained_server_drained(d2: Lab) -> None:
    from hapair.platforms.lab.day2.haproxy import seamless_reload
    from hapair.platforms.lab.day2.target import open_lab

    scale_to(d2, 3)
    rt.call(sock(d2, "lb1"), rt.set_state("web", "web2", "drain"))
    before = workers(d2)["lb1"]
    try:
        with open_lab(d2.name) as t:
            seamless_reload(t, "lb1")
        assert workers(d2)["lb1"] != before  # a new worker ...
        assert servers(d2, "lb1")["web2"].status == "DRAIN"  # ... took web2's state over
        assert servers(d2, "lb1")["web1"].up
        assert not LabPaths(d2.name).server_state("lb1").exists()  # no stale state left
    finally:
        rt.call(sock(d2, "lb1"), rt.set_state("web", "web2", "ready"))


def _files(lab: Lab) -> dict[str, str]:
    paths = LabPaths(lab.name)
    found = [paths.root / "state.json"]
    for node in ("lb1", "lb2", "web1"):
        found += [p for p in paths.node(node).iterdir() if p.suffix in (".cfg", ".toml", ".nft")]
    return {str(p): p.read_text() for p in sorted(found)}


def test_an_invalid_apply_changes_nothing(d2: Lab, tmp_path: Path) -> None:
    before, pids = _files(d2), workers(d2)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    specs = {
        "bad-value": ('[haproxy]\nbalance = "nope"\n', 2, "haproxy.balance: input should be"),
        "fixed-field": ("[ha]\nport = 695\n", 2, "ha.port: 694 -> 695: cannot change"),
        "haproxy-c": (
            f'[haproxy]\nhttps = true\ncert = "{garbage}"\n',
            1,
            "nothing was changed: haproxy -c rejected the configuration",
        ),
    }
    for case, (body, code, message) in specs.items():
        f = tmp_path / f"{case}.toml"
        f.write_text(f'[cluster]\nname = "{d2.name}"\n' + body)
        proc = cli(d2, "apply", "--spec", str(f))
        assert proc.returncode == code, (case, proc.stdout, proc.stderr)
        assert message in proc.stderr, (case, proc.stderr)
    assert "unable to load certificate" in proc.stderr  # haproxy's own words
    assert _files(d2) == before
    assert workers(d2) == pids  # no reload happened


def test_apply_changes_only_what_differs_under_load(d2: Lab, tmp_path: Path) -> None:
    scale_to(d2, 3)
    spec = tmp_path / "hapair.toml"
    spec.write_text(
        f'[cluster]\nname = "{d2.name}"\n[haproxy]\nhttps = true\nbalance = "leastconn"\n'
        "timeout_client_ms = 30000\n[ha]\nfailback_delay_ms = 2500\n"
        '[admin]\ncidrs = ["198.19.0.0/24", "198.18.0.0/23"]\n'
    )
    before = _files(d2)
    dry = cli(d2, "apply", "--spec", str(spec), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "~ haproxy.balance: roundrobin -> leastconn" in dry.stdout
    assert "seamless reload of HAProxy on lb1 then lb2" in dry.stdout
    assert _files(d2) == before
    pids = workers(d2)
    masters = {lb: d2.platform.service(d2.name, lb, "haproxy") for lb in ("lb1", "lb2")}
    load = Load(d2, https=True)
    proc = cli(d2, "apply", "--spec", str(spec))
    samples = load.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert failed(samples) == {}
    new = workers(d2)
    for lb in ("lb1", "lb2"):
        assert new[lb] != pids[lb]  # a new worker serves ...
        assert d2.platform.service(d2.name, lb, "haproxy") == masters[lb]  # ... same master
        cfg = LabPaths(d2.name).haproxy_cfg(lb).read_text()
        assert "balance leastconn" in cfg and "timeout client 30000ms" in cfg
        status = json.loads(
            d2.cli("status", "--name", d2.name, "--json").stdout
        )  # agents report the new timing
        agent = status["agents"][lb]
        assert agent["config"]["failback_delay_ms"] == 2500
        rules = d2.run(lb, ["nft", "list", "set", "inet", "hapair", "admin_cidrs"]).stdout
        assert "198.19.0.0/24" in rules and "0.0.0.0/0" not in rules
    assert running_spec(d2)["haproxy"]["balance"] == "leastconn"
    again = cli(d2, "apply", "--spec", str(spec))
    assert "nothing to change" in again.stdout and workers(d2) == new


def test_rolling_restart_loses_no_request(d2: Lab) -> None:
    before = {
        (lb, svc): d2.platform.service(d2.name, lb, svc)
        for lb in ("lb1", "lb2")
        for svc in ("haproxy", "agent")
    }
    load = Load(d2)
    proc = cli(d2, "restart", "--rolling")
    samples = load.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Four planned moves (each VIP away and back); the keep-alive client retries on a reset.
    assert failed(samples, moves=4) == {}
    assert "lb1 holds vip1 again" in proc.stdout and "lb2 holds vip2 again" in proc.stdout
    for (lb, svc), old in before.items():
        now = d2.platform.service(d2.name, lb, svc)
        assert now is not None and now != old, (lb, svc)
    assert {s.lb for s in samples["vip1"]} == {"lb1", "lb2"}  # VIP1 really moved and came back
    bad = cli(d2, "restart")
    assert bad.returncode == 2 and "give lb1 or lb2, or --rolling" in bad.stderr


def _served_cert(lab: Lab, vip: int) -> str:
    argv = [
        "sh",
        "-c",
        f"openssl s_client -connect {lab.vip(vip)}:443 </dev/null 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256",
    ]
    return lab.run("inet", argv).stdout.strip()


def _fingerprint(pem: Path) -> str:
    argv = ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(pem)]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def test_cert_rotation_goes_live_without_a_reload(d2: Lab, tmp_path: Path) -> None:
    pem = LabPaths(d2.name).cert
    old = _fingerprint(pem)
    pids = workers(d2)
    load = Load(d2, https=True)
    proc = cli(d2, "cert", "rotate")
    samples = load.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert failed(samples) == {}
    new = _fingerprint(pem)
    assert new != old and pem.stat().st_mode & 0o077 == 0
    assert _served_cert(d2, 1) == new and _served_cert(d2, 2) == new
    assert workers(d2) == pids  # through the runtime API: no reload
    # A given certificate, then one whose key does not match: refused, nothing changes.
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    req = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subject = ["-subj", "/CN=given.hapair.test", "-keyout", str(key), "-out", str(crt)]
    subprocess.run([*req, *subject], capture_output=True, check=True)
    given = tmp_path / "given.pem"
    given.write_text(crt.read_text() + key.read_text())
    assert cli(d2, "cert", "rotate", "--cert", str(given)).returncode == 0
    assert _served_cert(d2, 1) == _fingerprint(given) == _fingerprint(pem)
    other = tmp_path / "other.key"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-out", str(other)],
        capture_output=True,
        check=True,
    )
    mismatched = tmp_path / "mismatched.pem"
    mismatched.write_text(crt.read_text() + other.read_text())
    proc = cli(d2, "cert", "rotate", "--cert", str(mismatched))
    assert proc.returncode == 1, proc.stdout
    assert _served_cert(d2, 2) == _fingerprint(given) == _fingerprint(pem)
