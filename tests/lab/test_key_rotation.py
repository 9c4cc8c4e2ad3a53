"""A new heartbeat key for a running pair: taken without a restart, no heartbeat refused, no
VIP moved (hapair.agent.keyring, `hapair secrets rotate` in the lab)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.lab.conftest import Lab, lab_name, start_lab

from hapair.agent.client import agent_request, agent_status
from hapair.agent.keyring import load_keyset
from hapair.platforms.lab.day2.keys import rotate_key
from hapair.platforms.lab.paths import LabPaths
from hapair.spec import parse


@pytest.fixture(scope="module")
def ha() -> Iterator[Lab]:
    lab = start_lab(parse({"cluster": {"name": lab_name()}}))
    try:
        yield lab
    finally:
        lab.platform.down(lab.name)


def _sock(lab: Lab, node: str) -> str:
    return str(LabPaths(lab.name).agent_sock(node))


def _metric(lab: Lab, node: str, name: str) -> float:
    code, body = agent_request(_sock(lab, node), "GET", "/metrics")
    assert code == 200
    total = 0.0
    for line in body.splitlines():
        m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+]+)$", line)
        if m:
            total += float(m.group(2))
    return total


def _events(lab: Lab, node: str) -> list[str]:
    doc: dict[str, Any] = agent_status(_sock(lab, node))
    return [e["message"] for e in doc["events"]]


def _moves(lab: Lab) -> int:
    return sum(
        m.startswith(("took ", "released ")) for lb in ("lb1", "lb2") for m in _events(lab, lb)
    )


def test_a_rotated_key_is_taken_without_a_restart_or_a_move(ha: Lab) -> None:
    ha.wait_for("both VIPs home", lambda: ha.owners() == {"vip1": ["lb1"], "vip2": ["lb2"]}, 20)
    key_file = LabPaths(ha.name).key
    old = load_keyset(key_file).current
    boots = {lb: agent_status(_sock(ha, lb))["boot_id"] for lb in ("lb1", "lb2")}
    moves = _moves(ha)

    # A short overlap, and past its end: only the newest key counts by then.
    switch_at, drop_at = rotate_key(ha.name, overlap_s=2.0)
    keys = load_keyset(key_file)
    assert keys.previous == old and keys.current != old
    assert key_file.stat().st_mode & 0o777 == 0o600
    received = {lb: _metric(ha, lb, "hapair_heartbeats_received_total") for lb in ("lb1", "lb2")}
    ha.wait_for("the overlap to end", lambda: time.time() > drop_at + 2, 20, step=0.5)
    for lb in ("lb1", "lb2"):
        assert _metric(ha, lb, "hapair_heartbeats_received_total") > received[lb] + 50
        assert _metric(ha, lb, 'hapair_heartbeats_dropped_total{reason="bad_mac"}') == 0
        doc = agent_status(_sock(ha, lb))
        assert doc["boot_id"] == boots[lb]  # not restarted
        assert doc["peer"]["state"] == "up"
    assert _moves(ha) == moves
    assert ha.owners() == {"vip1": ["lb1"], "vip2": ["lb2"]}
    assert switch_at < drop_at

    # The operator's command; a second one during its overlap is refused, nothing changed.
    def taken(lb: str) -> int:
        return sum(m.startswith("cluster key changed") for m in _events(ha, lb))

    before = {lb: taken(lb) for lb in ("lb1", "lb2")}
    proc = ha.cli("secrets", "rotate", "--name", ha.name)
    assert proc.returncode == 0, proc.stderr
    assert "rotated cluster-key" in proc.stdout and "no restart" in proc.stdout
    current = load_keyset(key_file).current
    for lb in ("lb1", "lb2"):
        ha.wait_for(
            f"{lb} to take the new key",
            lambda lb=lb: taken(lb) > before[lb],
            12,
        )

    again = ha.cli("secrets", "rotate", "--name", ha.name)
    assert again.returncode != 0 and "the previous rotation still lasts" in again.stderr
    assert load_keyset(key_file).current == current


def test_a_lab_rotates_only_its_cluster_key(ha: Lab) -> None:
    proc = ha.cli("secrets", "rotate", "--name", ha.name, "--secret", "admin-token")
    assert proc.returncode != 0
    assert "a lab rotates only its cluster-key" in proc.stderr
