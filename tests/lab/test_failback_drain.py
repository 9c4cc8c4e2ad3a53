"""The failback drain end to end (issue 11): a connection the old holder of a VIP accepted just
before a make-before-break move keeps working after it, and the drain leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from tests.lab.conftest import Lab, lab_name, start_lab

from hapair.agent.drainplan import NFT_SET, TABLE
from hapair.platforms.lab.paths import LabPaths
from hapair.spec import parse

DRAIN_S = 5.0  # ha.drain_ms's default
FAILBACK_S = 3.0

#: A keep-alive HTTP/1.1 client: one request, then (on a line on stdin) a second one on the
#: same connection. Prints one JSON line per request: which LB served it, and from which
#: local port (the same port: the same connection).
CLIENT = """
import http.client, json, sys
vip, host = sys.argv[1], sys.argv[2]
c = http.client.HTTPConnection(vip, 80, timeout=5)
for i in range(2):
    if i:
        sys.stdin.readline()
    try:
        port = c.sock.getsockname()[1] if c.sock else None
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        r.read()
        out = {"status": r.status, "lb": r.getheader("x-lb"), "port": c.sock.getsockname()[1],
               "before": port}
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def ha() -> Iterator[Lab]:
    lab = start_lab(parse({"cluster": {"name": lab_name()}}))
    try:
        yield lab
    finally:
        lab.platform.down(lab.name)


def log(lab: Lab, node: str) -> str:
    """The agent's log (drains are logged there, not in /status's short list of events)."""
    return LabPaths(lab.name).log(node, "agent").read_text()


def settle(lab: Lab, timeout: float = 20) -> None:
    lab.wait_for(
        "both VIPs home", lambda: lab.owners() == {"vip1": ["lb1"], "vip2": ["lb2"]}, timeout
    )


def leftovers(lab: Lab, node: str) -> list[str]:
    """What a drain may leave behind on ``node``: set elements, rules, routes, lo addresses."""
    found = []
    out = lab.run(node, ["nft", "-j", "list", "set", "inet", "hapair", NFT_SET]).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item and item["set"].get("elem"):
            found.append(f"nft set elements {item['set']['elem']}")
    rules = json.loads(lab.run(node, ["ip", "-j", "-4", "rule", "show"]).stdout)
    if [(r["priority"], r["table"]) for r in rules] != [
        (0, "local"),
        (32766, "main"),
        (32767, "default"),
    ]:
        found.append(f"ip rules {rules}")
    routes = lab.run(node, ["ip", "-4", "route", "show", "table", str(TABLE)]).stdout.strip()
    if routes:
        found.append(f"routes in table {TABLE}: {routes}")
    lo = lab.run(node, ["ip", "-4", "-o", "addr", "show", "dev", "lo"]).stdout
    for v in lab.plan.vips:
        if f" {v.address}/" in lo:
            found.append(f"{v.address} on lo")
    return found


def nothing_left(lab: Lab) -> bool:
    return all(not leftovers(lab, lb) for lb in ("lb1", "lb2"))


@pytest.fixture(autouse=True)
def _steady(ha: Lab) -> Iterator[None]:
    settle(ha)
    yield
    for lb in ("lb1", "lb2"):
        ha.cli("online", "--name", ha.name, lb)
        ha.platform.revive(ha.name, lb)
    settle(ha)


def ha_exec(lab: Lab, node: str) -> list[str]:
    return ["ip", "netns", "exec", lab.ns(node)]


def _forwarded(lab: Lab, node: str) -> int:
    out = lab.run(node, ["nft", "list", "counter", "inet", "hapair", "drain_forwarded"]).stdout
    return int(out.split("packets ")[1].split()[0])


def test_a_connection_opened_through_lb2_before_failback_completes_after_it(ha: Lab) -> None:
    proc = ha.cli("standby", "--name", ha.name, "lb1")
    assert proc.returncode == 0, proc.stderr
    ha.wait_for("VIP1 only on lb2", lambda: ha.owners()["vip1"] == ["lb2"], 5)
    ha.wait_for("the standby's drain to end", lambda: nothing_left(ha), DRAIN_S + 5)
    forwarded = _forwarded(ha, "lb1")
    proc = ha.cli("online", "--name", ha.name, "lb1")
    assert proc.returncode == 0, proc.stderr
    with subprocess.Popen(
        [
            *ha_exec(ha, "inet"),
            sys.executable,
            "-c",
            CLIENT,
            ha.vip(1),
            ha.plan.spec.cluster.domain,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as client:
        try:
            assert client.stdout is not None and client.stdin is not None
            first = json.loads(client.stdout.readline())
            assert (first.get("status"), first.get("lb")) == (200, "lb2"), first
            # lb1 takes VIP1 back after failback_delay of stable health; lb2 then releases it.
            ha.wait_for(
                "VIP1 back on lb1 only", lambda: ha.owners()["vip1"] == ["lb1"], FAILBACK_S + 10
            )
            client.stdin.write("\n")
            client.stdin.flush()
            second = json.loads(client.stdout.readline())
        finally:
            client.kill()
    # The same connection, still served by lb2: lb1 handed its packets back.
    assert (second.get("status"), second.get("lb")) == (200, "lb2"), second
    assert second["port"] == second["before"] == first["port"], (first, second)
    assert _forwarded(ha, "lb1") > forwarded
    assert (
        "draining vip1: forwarding connections this node does not know on vip1 to lb2 for 5000 ms"
        in log(ha, "lb1")
    )
    assert (
        f"draining vip1: keeping vip1 on lo for {int(DRAIN_S * 1000)} ms for the connections"
        " it serves" in log(ha, "lb2")
    )


def test_the_drain_ends_and_leaves_nothing_behind(ha: Lab) -> None:
    proc = ha.cli("standby", "--name", ha.name, "lb2")
    assert proc.returncode == 0, proc.stderr
    ha.wait_for("VIP2 only on lb1", lambda: ha.owners()["vip2"] == ["lb1"], 5)
    # During the drain: lb1 (the taker) forwards, lb2 (the releaser) keeps VIP2 on lo.
    assert any("table" in x or "nft set" in x for x in leftovers(ha, "lb1")), leftovers(ha, "lb1")
    assert f"{ha.vip(2)} on lo" in leftovers(ha, "lb2")
    t0 = time.monotonic()
    ha.wait_for("every drain rule and address gone", lambda: nothing_left(ha), DRAIN_S + 5)
    assert time.monotonic() - t0 <= DRAIN_S + 2
    for lb in ("lb1", "lb2"):
        assert "drain of vip2 over (its period is over)" in log(ha, lb)
    # The VIP is served as ever once the drain is over.
    code, headers, _ = ha.get(f"http://{ha.vip(2)}/", timeout=2)
    assert (code, headers.get("x-lb")) == (0, "lb1")


def test_a_killed_agent_leaves_nothing_behind_once_restarted(ha: Lab) -> None:
    proc = ha.cli("standby", "--name", ha.name, "lb1")
    assert proc.returncode == 0, proc.stderr
    ha.wait_for("VIP1 only on lb2", lambda: ha.owners()["vip1"] == ["lb2"], 5)
    assert leftovers(ha, "lb2"), "lb2 should be forwarding during its drain"
    agent = ha.platform.service(ha.name, "lb2", "agent")
    assert agent is not None
    ha.platform.kill(ha.name, "lb2", "agent")  # SIGKILL mid-drain; its supervisor restarts it
    ha.wait_for(
        "a new agent on lb2",
        lambda: (
            (s := ha.platform.service(ha.name, "lb2", "agent")) is not None and s.pid != agent.pid
        ),
        10,
    )
    ha.wait_for("the restarted agent to clean up", lambda: nothing_left(ha), DRAIN_S + 10)
    ha.wait_for("VIP1 only on lb2", lambda: ha.owners()["vip1"] == ["lb2"], 5)
