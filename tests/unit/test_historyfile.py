"""The dashboard's history kept on disk (hapair.agent.historyfile): it survives a restart, skips
what it cannot read, stays bounded and private."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from tests.unit.agentfix import Started, agent_config

from hapair.agent import dashdoc
from hapair.agent.controller import Move
from hapair.agent.daemon import Agent
from hapair.agent.history import History, MoveRecord, merge_failovers
from hapair.agent.historyfile import HistoryFile, decode, encode, parse

HOMES = {"vip1": "lb1", "vip2": "lb2"}
FAILOVER = Move("vip2", True, "peer lb2 dead for 160 ms", "failover", "took", 160.4)


def _history(path: Path, keep: int = 200) -> tuple[History, HistoryFile]:
    store = HistoryFile(path, keep=keep)
    h = History("lb1", "lb2", HOMES)
    h.attach(store)
    return h, store


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_a_restart_keeps_the_records_and_the_failovers(tmp_path: Path) -> None:
    f = tmp_path / "state" / "history.jsonl"
    h, _ = _history(f)
    h.record_move(Move("vip1", True, "nobody holds it", "startup", "took"))
    h.record_move(FAILOVER)
    again, _ = _history(f)  # the agent restarted
    assert [(m["vip"], m["label"]) for m in again.timeline("vip2")] == [("vip2", "failover")]
    assert again.failovers() == h.failovers() and again.failovers()[0]["gap_ms"] == 160.4
    again.record_move(Move("vip2", False, "home node lb2 holds it", "other", "released"))
    third, _ = _history(f)
    assert [m.label for m in third.moves] == ["startup", "failover", "other"]


def test_the_file_is_private(tmp_path: Path) -> None:
    f = tmp_path / "history.jsonl"
    h, _ = _history(f)
    h.record_move(FAILOVER)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    f.chmod(0o644)  # made readable by someone: put right at the next start
    _history(f)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_a_torn_last_line_and_garbage_are_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "history.jsonl"
    h, _ = _history(f)
    h.record_move(FAILOVER)
    good = f.read_text()
    f.write_text('not json\n["a list"]\n{"t": "x"}\n' + good + good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="hapair.agent.historyfile"):
        again, store = _history(f)
    assert [m.label for m in again.moves] == ["failover"]
    assert store.skipped == 4  # three of garbage, and the torn one
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"{f}: skipped 4 unreadable line(s) of the dashboard history"]
    assert f.read_text() == good  # rewritten at once: the next append starts a fresh line
    again.record_move(FAILOVER)
    assert [m.label for m in _history(f)[0].moves] == ["failover", "failover"]


def test_a_file_of_binary_garbage_costs_nothing_but_its_content(tmp_path: Path) -> None:
    f = tmp_path / "history.jsonl"
    f.write_bytes(bytes(range(256)) * 64)
    h, store = _history(f)
    assert list(h.moves) == [] and store.skipped >= 1
    h.record_move(FAILOVER)
    assert [m.label for m in _history(f)[0].moves] == ["failover"]


def test_the_file_stays_bounded(tmp_path: Path) -> None:
    f = tmp_path / "history.jsonl"
    h, store = _history(f, keep=5)
    sizes = []
    for i in range(23):
        h.record_move(Move("vip1", i % 2 == 0, f"move {i}", "failover", "took", float(i)))
        sizes.append(len(_lines(f)))
    assert max(sizes) == 10  # never more than 2 * keep lines
    assert sizes[:11] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 5]  # compacted to the last keep
    assert store.lines == sizes[-1]
    again, _ = _history(f, keep=5)
    assert [m.reason for m in again.moves][-3:] == ["move 20", "move 21", "move 22"]
    assert len(again.moves) == 5


def test_an_oversized_file_is_cut_to_the_last_records_at_start(tmp_path: Path) -> None:
    f = tmp_path / "history.jsonl"
    recs = [MoveRecord(float(i), "x", "vip1", "lb2", True, "failover", f"r{i}") for i in range(30)]
    f.write_text("".join(encode(r) for r in recs))
    h, _ = _history(f, keep=4)
    assert [m.reason for m in h.moves] == ["r26", "r27", "r28", "r29"]
    assert len(_lines(f)) == 4


def test_an_unwritable_place_is_logged_once_and_the_history_lives_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.DEBUG, logger="hapair.agent.historyfile"):
        h, store = _history(blocker / "history.jsonl")  # its directory cannot exist
        h.record_move(FAILOVER)
        h.record_move(FAILOVER)
    assert len(h.failovers()) == 2 and store.failures == 3  # the load, then two appends
    assert [r.levelno for r in caplog.records] == [logging.WARNING] + [logging.DEBUG] * 2
    assert "kept in memory only" in caplog.records[0].getMessage()


def test_decode_checks_every_field_and_ignores_unknown_keys() -> None:
    rec = MoveRecord(1.5, "00:00:01.500", "vip1", "lb2", True, "failover", "dead", 12.0)
    assert decode(encode(rec)) == rec
    assert decode(encode(rec).replace('"take":true', '"take":1')) is None
    assert decode(encode(rec).replace('"gap_ms":12.0', '"gap_ms":"12"')) is None
    assert decode(encode(rec).replace('"t":1.5', '"t":true')) is None
    assert decode(encode(rec).replace("{", '{"newer":1,', 1)) == rec
    assert parse("\n\n" + encode(rec) + "{}\n") == ([rec], 1)


def test_the_agent_keeps_its_history_next_to_its_boot_counter(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path)
    assert cfg.history_path() == tmp_path / "history.jsonl"
    assert agent_config(tmp_path, history_file="/x/h.jsonl").history_path() == Path("/x/h.jsonl")
    bare = agent_config(tmp_path, boot_file="")
    assert bare.history_path() == Path("/var/lib/hapair/demo-lb1.history.jsonl")
    sock = agent_config(tmp_path, boot_file="", api_socket=str(tmp_path / "n" / "agent.sock"))
    assert sock.history_path() == tmp_path / "n" / "history.jsonl"


def test_a_restarted_agent_shows_the_moves_of_its_earlier_run(tmp_path: Path) -> None:
    first = Started(tmp_path).agent
    assert first.open_history() == 0
    first.history.record_move(FAILOVER)  # as the daemon's _carry_out does
    second = Agent(first.cfg, first.config_path)  # the same agent.toml, started again
    assert second.history.failovers() == []  # nothing before it runs
    assert second.open_history() == 1
    assert [f["label"] for f in second.history.failovers()] == ["failover"]
    assert (tmp_path / "history.jsonl").is_file()


def _rec(t: float, vip: str, node: str, label: str, gap: float | None = None) -> dict[str, Any]:
    return asdict(MoveRecord(t, "x", vip, node, True, label, f"{node} {label}", gap))


def test_the_page_shows_the_failovers_the_peer_made_while_this_node_was_down() -> None:
    mine = [
        _rec(100.0, "vip1", "lb2", "seen"),  # lb1 heard lb2 take vip1 ...
        _rec(200.0, "vip2", "lb1", "failover", 160.0),
    ]
    theirs = [
        _rec(50.0, "vip1", "lb2", "failover", 150.0),  # ... while lb1 was down: it missed it
        _rec(99.98, "vip1", "lb2", "standby"),  # ... what lb2 recorded of the one lb1 saw
        _rec(200.01, "vip2", "lb1", "seen"),  # lb2 saw lb1's: lb1 has its own
    ]
    merged = merge_failovers(mine, theirs)
    assert [(m["t"], m["node"], m["label"]) for m in merged] == [
        (50.0, "lb2", "failover"),
        (99.98, "lb2", "standby"),
        (200.0, "lb1", "failover"),
    ]
    assert merge_failovers(mine, []) == mine  # a peer never heard: this node's own
    assert merge_failovers([], theirs) == theirs[:2]


def test_the_peers_failovers_are_read_checked_and_kept_while_it_is_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _rec(50.0, "vip1", "lb2", "failover", 150.0)
    doc = {"process": {"cpu_seconds": 1.0}, "failovers": [good, {"t": "bad"}, "junk"]}

    async def fake_call(*args: Any, **kwargs: Any) -> tuple[int, bytes]:
        return 200, json.dumps(doc).encode()

    monkeypatch.setattr(dashdoc, "http_call", fake_call)
    view = dashdoc.ClusterView(Started(tmp_path).agent)
    asyncio.run(view._fetch_peer())
    assert view.peer_failovers == [good]
    view._ask_peer(alive=False)  # the peer went silent: what it did is still history
    assert view.peer_local is None and view.peer_failovers == [good]
