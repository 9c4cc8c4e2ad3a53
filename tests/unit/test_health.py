"""The health gate: HAProxy's own view counts at once, requests are judged over a window."""

from __future__ import annotations

import asyncio
import socket
import time

from hapair.agent.config import VipConfig
from hapair.agent.health import HealthGate, peer_answers, peer_witnesses


def test_a_silent_stats_socket_is_a_hard_failure_at_once() -> None:
    g = HealthGate(rise=2, fall=3)
    g.stats(True, 3, 3)
    assert g.request(True, 1.0).healthy
    h = g.stats(False)
    assert (h.healthy, h.answers, h.hard) == (False, False, True)
    assert h.summary == "haproxy does not answer on its stats socket"
    assert g.stats(True, 3, 3).healthy  # HAProxy's own view needs no rise


def test_no_backend_up_counts_at_once_but_haproxy_still_answers() -> None:
    g = HealthGate()
    g.stats(True, 3, 3)
    g.request(True, 1.0)
    h = g.stats(True, 0, 3)
    assert (h.healthy, h.answers) == (False, True)
    assert h.summary == "haproxy has no backend up (0/3)"


def test_requests_need_fall_failures_in_a_row_and_rise_successes() -> None:
    g = HealthGate(rise=2, fall=3)
    g.stats(True, 2, 3)
    assert g.current.summary == "no request through haproxy yet (2/3 backends up)"
    assert g.request(True, 1.0).healthy  # the first request counts at once
    assert g.request(False, 2.0).healthy
    assert g.request(False, 3.0).healthy
    assert g.request(True, 4.0).healthy  # a success breaks the run: a lossy link moves nothing
    assert g.request(False, 5.0).healthy
    assert g.request(False, 6.0).healthy
    h = g.request(False, 7.0)
    assert (h.healthy, h.answers) == (False, True)
    assert h.summary == "3 requests in a row through haproxy failed (2/3 backends up)"
    assert not g.request(True, 8.0).healthy  # rise 2
    assert g.request(True, 9.0).healthy
    assert g.ok_started_ms == 9.0


def test_ok_started_is_the_latest_start_of_a_success_even_out_of_order() -> None:
    g = HealthGate()
    g.stats(True, 1, 1)
    g.request(True, 50.0)
    g.request(True, 20.0)  # a slower, older request finishing last
    assert g.ok_started_ms == 50.0


def test_calm_only_while_healthy_and_the_last_request_succeeded() -> None:
    g = HealthGate(rise=2, fall=3)
    assert not g.calm  # nothing checked yet
    g.stats(True, 3, 3)
    assert not g.calm  # no request yet
    g.request(True, 1.0)
    assert g.calm
    g.request(False, 2.0)
    assert not g.calm and g.current.healthy  # one failure: full cadence, still healthy
    g.request(True, 3.0)
    assert g.calm
    g.stats(True, 0, 3)
    assert not g.calm  # no backend up
    g.stats(True, 3, 3)
    assert g.calm
    g.stats(False)
    assert not g.calm  # HAProxy silent


def test_show_stat_parsing_needs_only_name_and_status_columns() -> None:
    from hapair.haproxy_stats import parse_show_stat

    full = (
        "# pxname,svname,qcur,scur,status,check_status,\n"
        "web,FRONTEND,,5,OPEN,,\nweb,web1,0,3,UP,L7OK,\nweb,web2,0,0,DOWN,L4CON,\n"
        "web,BACKEND,0,3,UP,,\nstats,FRONTEND,,0,OPEN,,\n"
    )
    got = parse_show_stat(full)
    assert [(s.server, s.up, s.check, s.sessions) for s in got] == [
        ("web1", True, "L7OK", 3),
        ("web2", False, "L4CON", 0),
    ]
    # A trimmed answer (no scur, no check_status) still gives the servers and their state.
    trimmed = parse_show_stat("# pxname,svname,status\nweb,web1,UP 1/2\nweb,web2,MAINT\n")
    assert [(s.server, s.up, s.check, s.sessions) for s in trimmed] == [
        ("web1", True, "", 0),
        ("web2", False, "", 0),
    ]
    assert parse_show_stat("") == [] and parse_show_stat("# pxname,foo\nweb,1\n") == []


# ------------------------------------------------------------------ the peer probe's witness


def _vip(name: str, address: str, driver: str = "l2") -> VipConfig:
    return VipConfig(name=name, address=address, home="lb1", driver=driver)  # type: ignore[arg-type]


def test_witnesses_are_the_l2_vips_the_peer_holds_and_this_node_does_not() -> None:
    vips = [
        _vip("vip1", "198.18.0.10"),
        _vip("vip2", "198.18.0.11"),
        _vip("vip3", "1.2.3.4", "aws_eip"),
    ]
    assert peer_witnesses(vips, {"vip2"}, set()) == ["198.18.0.11"]
    assert peer_witnesses(vips, {"vip1", "vip2"}, {"vip2"}) == ["198.18.0.10"]
    assert peer_witnesses(vips, {"vip3"}, set()) == []  # a public EIP is no second path
    assert peer_witnesses(vips, set(), set()) == []


async def _serve(host: str, port: int, answer: bool) -> asyncio.Server:
    """A loopback server that answers 200 (``answer``) or accepts and never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if answer:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
            else:
                await asyncio.sleep(5)
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_silent_peer_is_judged_by_its_address_and_by_the_vips_it_holds() -> None:
    """127.0.0.2 answers, 127.0.0.3 accepts and never answers (a cut), nothing listens on
    127.0.0.4 (a refusal): one port on every address, as on the LBs."""

    took: dict[str, float] = {}

    async def main() -> dict[str, tuple[bool, str]]:
        port = _free_port()
        servers = [await _serve("127.0.0.2", port, True), await _serve("127.0.0.3", port, False)]
        try:
            cases = {
                "own address answers": ("127.0.0.2", []),
                "cut, no witness": ("127.0.0.3", []),
                "cut, a witness answers": ("127.0.0.3", ["127.0.0.3", "127.0.0.2"]),
                "cut, no witness answers": ("127.0.0.3", ["127.0.0.3"]),
                "refused, a witness answers": ("127.0.0.4", ["127.0.0.2"]),
            }
            out = {}
            for name, (address, witnesses) in cases.items():
                t0 = time.monotonic()
                out[name] = await peer_answers(address, witnesses, port, "/", 2.0)
                took[name] = time.monotonic() - t0
            return out
        finally:
            for srv in servers:
                srv.close()

    assert asyncio.run(main()) == {
        "own address answers": (True, ""),
        "cut, no witness": (False, ""),
        "cut, a witness answers": (True, "127.0.0.2"),
        "cut, no witness answers": (False, ""),
        # a refusal is proof that HAProxy is not listening there: no witness is asked
        "refused, a witness answers": (False, ""),
    }
    # The first answer decides: neither a witness's success nor a refusal waits for the cut
    # address's timeout (2 s); only a verdict with nothing but timeouts does.
    for name in ("own address answers", "cut, a witness answers", "refused, a witness answers"):
        assert took[name] < 1.0, (name, took[name])
    assert took["cut, no witness"] >= 1.9
