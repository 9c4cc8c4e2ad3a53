"""The lab end to end: the seed's stack in namespaces, served through both VIPs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.lab.conftest import Lab, lab_name, start_lab

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
        f"error: a lab named {lab.name} is already running with another spec; run "
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
