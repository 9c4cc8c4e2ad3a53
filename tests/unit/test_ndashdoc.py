"""The N-node dashboard's document and its etcd panel (members, health, leader, leases)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.unit.test_api import Backend, _ask

from hapair.agent.api import StatusApi
from hapair.agent.dashboard import Dashboard
from hapair.agent.ndashdoc import etcd_panel, node_document
from hapair.agent.netcdinfo import leader_of, lease_rows, members_view
from hapair.coord.etcd_store import Owner

EPS = ["http://198.18.0.241:2379", "http://198.18.0.242:2379", "http://198.18.0.243:2379"]
LISTED = [
    {"ID": "11", "name": "etcd1", "clientURLs": [EPS[0]]},
    {"ID": "12", "name": "etcd2", "clientURLs": [EPS[1]]},
    {"ID": "13", "name": "etcd3", "clientURLs": [EPS[2]]},
]


def st(member_id: int, leader: int, errors: list[str] | None = None) -> dict[str, Any]:
    """A ``/v3/maintenance/status`` answer as the JSON gateway writes it."""
    return {
        "header": {"member_id": str(member_id), "raft_term": "4"},
        "version": "3.4.23",
        "dbSize": "20480",
        "leader": str(leader),
        "raftTerm": "4",
        **({"errors": errors} if errors else {}),
    }


def test_members_health_and_leader() -> None:
    rows = members_view(
        LISTED, {EPS[0]: st(11, 12), EPS[1]: st(12, 12), EPS[2]: "etcd at x: refused"}, EPS
    )
    assert [(r["name"], r["healthy"], r["leader"]) for r in rows] == [
        ("etcd1", True, False),
        ("etcd2", True, True),
        ("etcd3", False, False),
    ]
    assert rows[0]["follows"] == "c" and rows[0]["raft_term"] == 4
    assert rows[2]["answers"] is False and rows[2]["error"] == "etcd at x: refused"
    assert leader_of(rows) == "etcd2"


def test_a_member_without_a_leader_or_with_errors_is_unhealthy() -> None:
    rows = members_view(LISTED, {EPS[0]: st(11, 0), EPS[1]: st(12, 12, ["NOSPACE"])}, EPS)
    assert [r["healthy"] for r in rows] == [False, False, False]
    assert rows[0]["error"] == "no leader (quorum lost?)" and rows[1]["error"] == "NOSPACE"
    assert rows[2]["error"] == "not asked"
    assert leader_of(rows) == "etcd2"  # it still says it leads; its errors make it unhealthy


def test_without_a_member_list_each_endpoint_is_a_row() -> None:
    rows = members_view([], {EPS[0]: st(11, 11), EPS[1]: "timeout", EPS[2]: "timeout"}, EPS)
    assert [r["name"] for r in rows] == EPS
    assert rows[0]["leader"] and rows[0]["id"] == "b"
    assert leader_of(members_view([], {}, EPS)) is None


def test_lease_rows_count_down_from_the_reading() -> None:
    owners = {"vip1": Owner("lb1", 0xA, 7), "vip2": Owner("lb3", 0xB, 9)}
    rows = lease_rows(["vip1", "vip2", "vip3"], owners, {0xA: 3, 0xB: -1}, 100.0, 101.5)
    assert rows == [
        {
            "vip": "vip1",
            "owner": "lb1",
            "lease": "a",
            "mod_revision": 7,
            "ttl_left_s": 1.5,
            "expired": False,
        },
        {
            "vip": "vip2",
            "owner": "lb3",
            "lease": "b",
            "mod_revision": 9,
            "ttl_left_s": 0.0,
            "expired": True,
        },
        {
            "vip": "vip3",
            "owner": None,
            "lease": None,
            "mod_revision": None,
            "ttl_left_s": None,
            "expired": False,
        },
    ]
    assert lease_rows(["vip1"], owners, {}, None, 5.0)[0]["ttl_left_s"] is None


def status_doc() -> dict[str, Any]:
    """An N-node agent's ``/status`` as :mod:`hapair.agent.nstatus` writes it."""
    members = members_view(LISTED, {e: st(11 + i, 12) for i, e in enumerate(EPS)}, EPS)
    owners = {"vip1": Owner("lb1", 0xA, 7), "vip2": Owner("lb3", 0xB, 9)}
    return {
        "self": "lb1",
        "cluster": "c",
        "uptime_s": 12.0,
        "standby": False,
        "health": {
            "healthy": True,
            "answers": True,
            "summary": "healthy",
            "pingable": True,
            "stable_ms": 9000,
        },
        "peers": [
            {
                "name": "lb2",
                "state": "dead",
                "liveness": "dead",
                "last_heartbeat_ms": 4000,
                "loss": 1.0,
                "healthy": True,
                "standby": False,
                "held": ["vip2"],
            },
            {
                "name": "lb3",
                "state": "up",
                "liveness": "up",
                "last_heartbeat_ms": 20,
                "loss": 0.0,
                "healthy": True,
                "standby": False,
                "held": ["vip2"],
            },
        ],
        "etcd": {
            "available": True,
            "lease": "a",
            "lease_valid": True,
            "lease_left_ms": 2600,
            "fenced": None,
            "last_error": None,
            "owners": {"vip1": {"node": "lb1"}, "vip2": {"node": "lb3"}},
            "members": members,
            "leader": leader_of(members),
            "healthy_members": 3,
            "leases": lease_rows(["vip1", "vip2"], owners, {0xA: 3, 0xB: 2}, 10.0, 10.5),
            "read_ms_ago": 500,
        },
        "held": ["vip1"],
        "wanted": ["vip1"],
        "decision": "carry vip1",
        "reasons": {"vip1": "mine", "vip2": "lb3 carries it"},
        "config": {"interval_ms": 50},
        "counters": {"heartbeats_sent": 3},
        "events": [{"time": "t", "message": "m"}],
    }


def test_the_document_has_every_lb_every_vip_and_the_etcd_panel() -> None:
    mine = {"process": {"cpu_percent": 1.0}, "haproxy": {"per_vip": {"vip1": {"req_rate": 5}}}}
    theirs = {"lb3": {"process": {"cpu_percent": 2.0}, "haproxy": {"per_vip": {}}}}
    vips = [("vip1", "198.19.255.1", "lb1"), ("vip2", "198.19.255.2", "lb2")]
    doc = node_document(status_doc(), mine, theirs, vips, 1000.0)
    json.dumps(doc)  # JSON-ready
    assert [(lb["name"], lb["alive"], lb["held"]) for lb in doc["lbs"]] == [
        ("lb1", True, ["vip1"]),
        ("lb2", False, []),  # a dead peer's last heartbeat is not what it holds
        ("lb3", True, ["vip2"]),
    ]
    assert doc["lbs"][2]["process"] == {"cpu_percent": 2.0}
    v1, v2 = doc["vips"]
    assert (v1["owner"], v1["granted_to"], v1["traffic"]) == ("lb1", "lb1", {"req_rate": 5})
    assert (v2["holders"], v2["granted_to"], v2["reason"]) == (["lb3"], "lb3", "lb3 carries it")
    e = doc["etcd"]
    assert (e["leader"], e["healthy_members"], e["quorum"]) == ("etcd2", 3, True)
    assert [(r["vip"], r["owner"], r["ttl_left_s"], r["mine"]) for r in e["vips"]] == [
        ("vip1", "lb1", 2.5, True),
        ("vip2", "lb3", 1.5, False),
    ]
    assert (e["lease"], e["lease_valid"], e["lease_left_ms"]) == ("a", True, 2600)


def test_the_etcd_panel_without_quorum_or_before_the_first_read() -> None:
    etcd = status_doc()["etcd"]
    etcd["members"] = members_view(LISTED, {EPS[0]: st(11, 0)}, EPS)
    panel = etcd_panel(etcd)
    assert (panel["healthy_members"], panel["quorum"]) == (0, False)
    panel = etcd_panel({"available": False, "members": [], "leases": []})
    assert panel["quorum"] is None and panel["vips"] == [] and panel["leader"] is None


class NodeSource:
    """A fake N-node dashboard source: records what is passed on to which LB."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def document(self) -> dict[str, Any]:
        return {"self": "lb1"}

    async def local(self) -> dict[str, Any]:
        return {"node": "lb1"}

    async def peer_request(self, method: str, path: str, token: str) -> tuple[int, bytes]:
        self.calls.append((method, path, token))
        return 200, b'{"message": "lb3 in standby"}'

    def close(self) -> None:
        pass


def test_a_button_naming_any_lb_of_an_n_node_cluster_reaches_it() -> None:
    class NodeBackend(Backend):
        def status(self) -> dict[str, Any]:
            return {"self": "lb1", "peers": [{"name": "lb2"}, {"name": "lb3"}]}

    async def main() -> None:
        source = NodeSource()
        api = StatusApi(NodeBackend(), "s3cret", Dashboard(source))
        await api.start("127.0.0.1", 0, None)
        port = api.servers[0].sockets[0].getsockname()[1]
        auth = "Authorization: Bearer s3cret\r\n"
        try:
            req = f"POST /node/lb3/standby HTTP/1.1\r\n{auth}\r\n".encode()
            code, body = await _ask(port, req)
            assert code == 200 and b"lb3 in standby" in body
            assert source.calls == [("POST", "/node/lb3/standby", "s3cret")]
            code, _ = await _ask(port, f"POST /node/lb9/standby HTTP/1.1\r\n{auth}\r\n".encode())
            assert code == 404
            code, _ = await _ask(port, b"POST /node/lb3/online HTTP/1.1\r\n\r\n")
            assert code == 401 and len(source.calls) == 1
        finally:
            await api.close()

    asyncio.run(main())
