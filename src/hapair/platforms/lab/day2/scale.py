"""``hapair scale --web N`` in the lab: web nodes join and leave both HAProxies without a reload.

Adding: each new node gets its namespace, link (static neighbours both ways), security group and
web app (the pool starts serving it) *before* HAProxy hears of it; then on each LB, through the
runtime API, ``add server web/webN addr:port cookie webN check <the default-server options>``,
``enable health``, ``enable server``; done when both HAProxies saw a passing check.

Removing: on both LBs ``set server web/webN state drain`` (no new request goes there, except
from a client its cookie pins to it), wait until its sessions end or ``drain_timeout``; then
``set server ... state maint``, ``shutdown sessions`` (only after a timeout) and ``del server``.
Only then does its web app stop and its namespace go.

After either, haproxy.cfg (checked with ``haproxy -c`` before anything changes) and the lab's
state are written, each atomically, so a later reload or ``up`` keeps the same servers. A second
run with the same size changes nothing; a run after an interrupted one first converges what it
left (namespaces and HAProxy servers beyond the running size).

HAProxy 2.6 refuses ``cookie`` on a server added at runtime: the server is then added without it
and the backend's dynamic cookies are switched on (``set dynamic-cookie-key``, the same key on
both LBs), so clients it serves are pinned to it by a cookie derived from its address until the
next reload gives it its ``webN`` cookie from haproxy.cfg.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from hapair import haproxy_runtime as rt
from hapair.day2.changes import ScalePlan
from hapair.errors import OperationError
from hapair.fileio import write_atomic
from hapair.plan import Node, Plan, make_plan
from hapair.platforms.lab import configs, network, webpool
from hapair.platforms.lab.day2.target import Target
from hapair.platforms.lab.state import ensure_secret
from hapair.platforms.lab.system import in_ns, run
from hapair.render.haproxy import server_options
from hapair.spec import Spec, parse

BACKEND = "web"
DRAIN_TIMEOUT_S = 30.0
#: Seconds to wait for both HAProxies to see a new server pass a check.
JOIN_TIMEOUT_S = 30.0
_WEB_NS = re.compile(r"-web(\d+)$")

Say = Callable[[str], None]


def resized(spec: Spec, size: int) -> Spec:
    """``spec`` with ``web.size = size``.

    :raises SpecError: the size is out of range (1..250).
    """
    data = spec.model_dump(mode="python")
    data["web"]["size"] = size
    return parse(data)


def scale(t: Target, size: int, say: Say, drain_timeout: float = DRAIN_TIMEOUT_S) -> ScalePlan:
    """Bring the lab to ``size`` web nodes (see the module docstring); returns what was done."""
    spec = resized(t.plan.spec, size)
    sp = ScalePlan(t.plan.spec.web.size, size)
    plan = make_plan(spec)
    rendered = configs.render(plan, t.paths)  # haproxy -c before anything changes
    converge(t, say, drain_timeout)
    if sp.add:
        add(t, plan, [plan.node(n) for n in sp.add], say)
    elif sp.remove:
        remove(t, sp.remove, say, drain_timeout)
    for lb, cfg in rendered.haproxy.items():
        write_atomic(t.paths.haproxy_cfg(lb), cfg, mode=0o600)
    t.save(spec)
    if sp.remove:
        _drop_nodes(t, sp.remove, say)
    return sp


def _sock(t: Target, lb: str) -> str:
    return str(t.paths.haproxy_sock(lb))


def _index(name: str) -> int:
    return int(name.removeprefix("web"))


def converge(t: Target, say: Say, drain_timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Repair what an interrupted scale left, so that the lab is its state's size again: servers
    beyond it drained and deleted from each HAProxy, missing ones added (ones left in maintenance
    made ready), and namespaces of web nodes beyond it removed."""
    size = t.plan.spec.web.size
    extra = {
        f"web{m.group(1)}"
        for ns in network.lab_namespaces(t.name)
        if (m := _WEB_NS.search(ns)) and int(m.group(1)) > size
    }
    want = {w.name: w for w in t.plan.webs}
    have = {lb.name: rt.servers(_sock(t, lb.name), BACKEND) for lb in t.plan.lbs}
    gone = sorted({n for h in have.values() for n in h if n not in want}, key=_index)
    if gone:
        say(f"removing servers an interrupted scale left: {', '.join(gone)}")
        remove(t, gone, say, drain_timeout)
    webpool.ensure(t.plan, t.paths, t.state, t.delay)
    t.save()
    for lb, servers in have.items():
        missing = [want[n] for n in want if n not in servers]
        if missing:
            say(f"{lb}: adding {len(missing)} servers an interrupted scale took away")
            _join(t, lb, missing)
        for n, s in servers.items():
            if n in want and s.status.startswith("MAINT"):
                rt.call(_sock(t, lb), rt.set_state(BACKEND, n, "ready"))
    if extra:
        say(f"removing web nodes an interrupted scale left: {', '.join(sorted(extra))}")
        _drop_nodes(t, sorted(extra, key=_index), say)


def add(t: Target, plan: Plan, nodes: Sequence[Node], say: Say) -> None:
    """Build ``nodes`` (in ``plan``, the new size), serve them, then add them to both HAProxies."""
    t0 = time.monotonic()
    network.create_namespaces(plan, only=[n.namespace for n in nodes])
    network.wire_nodes(plan, nodes)
    rendered = configs.render(plan, t.paths, check=False)

    def secure(node: Node) -> None:
        path = t.paths.nft(node.name)
        write_atomic(path, rendered.nft[node.name])
        run(in_ns(node.namespace, ["nft", "-f", str(path)]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(secure, nodes))
    for lb in plan.lbs:
        network.set_neighbours(lb.namespace, [n.address for n in nodes])
    say(f"{len(nodes)} web nodes built ({time.monotonic() - t0:.1f} s); starting their web apps")
    try:
        webpool.ensure(plan, t.paths, t.state, t.delay)
    finally:
        t.save()
    for lb in plan.lbs:
        _join(t, lb.name, nodes)
    say(f"added to HAProxy on {', '.join(lb.name for lb in plan.lbs)}; waiting for their checks")
    _wait_checked(t, [lb.name for lb in plan.lbs], [n.name for n in nodes])
    say(f"{len(nodes)} web nodes serving in {time.monotonic() - t0:.1f} s")


def _join(t: Target, lb: str, nodes: Sequence[Node]) -> None:
    """``add server`` + ``enable health`` + ``enable server`` for each node on ``lb``."""
    sock = _sock(t, lb)
    opts = server_options(t.plan.spec.haproxy)
    port = t.plan.spec.web.port
    dynamic = False
    for node in nodes:
        new = rt.NewServer(BACKEND, node.name, node.address, port, opts, cookie=node.name)
        dynamic = rt.add_and_enable(sock, new) or dynamic
    if dynamic:
        key = ensure_secret(t.paths.secrets / "cookie.key", 16)
        rt.call(sock, rt.set_dynamic_cookie_key(BACKEND, key))
        rt.call(sock, rt.enable_dynamic_cookie(BACKEND))


def _wait_checked(t: Target, lbs: Sequence[str], names: Sequence[str]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    todo = {(lb, n) for lb in lbs for n in names}
    while todo:
        for lb in {lb for lb, _ in todo}:
            for n, s in rt.servers(_sock(t, lb), BACKEND).items():
                if s.up and s.check.startswith("L7OK"):
                    todo.discard((lb, n))
        if not todo:
            return
        if time.monotonic() > deadline:
            late = ", ".join(f"{n} on {lb}" for lb, n in sorted(todo)[:6])
            raise OperationError(f"no passing health check after {JOIN_TIMEOUT_S:g} s: {late}")
        time.sleep(0.1)


def remove(t: Target, names: Sequence[str], say: Say, drain_timeout: float) -> None:
    """Drain ``names`` on both HAProxies, then delete them there (see the module docstring)."""
    lbs = [lb.name for lb in t.plan.lbs]
    for lb in lbs:
        have = rt.servers(_sock(t, lb), BACKEND)
        for n in names:
            if n in have:
                rt.call(_sock(t, lb), rt.set_state(BACKEND, n, "drain"))
    say(f"draining {len(names)} servers on {', '.join(lbs)} (at most {drain_timeout:g} s)")
    t0 = time.monotonic()
    left = 0
    while time.monotonic() - t0 < drain_timeout:
        left = sessions(t, names)
        if left == 0:
            break
        time.sleep(0.1)
    if left:
        say(f"drain timed out with {left} sessions left: shutting them down")
    else:
        say(f"drained in {time.monotonic() - t0:.1f} s")
    for lb in lbs:
        _leave(t, lb, names, shutdown=bool(left))


def sessions(t: Target, names: Sequence[str]) -> int:
    """Current sessions on the servers ``names``, summed over both HAProxies."""
    return sum(
        s.sessions
        for lb in t.plan.lbs
        for n, s in rt.servers(_sock(t, lb.name), BACKEND).items()
        if n in names
    )


def _leave(t: Target, lb: str, names: Sequence[str], shutdown: bool) -> None:
    """``maint`` (no new traffic at all), optionally ``shutdown sessions``, then ``del server``
    (retried while HAProxy still holds a connection to it)."""
    sock = _sock(t, lb)
    have = rt.servers(sock, BACKEND)
    for n in names:
        if n not in have:
            continue
        rt.call(sock, rt.set_state(BACKEND, n, "maint"))
        if shutdown:
            rt.call(sock, rt.shutdown_sessions(BACKEND, n))
        deadline = time.monotonic() + 5.0
        while True:
            try:
                rt.call(sock, rt.del_server(BACKEND, n), "Server deleted")
                break
            except rt.RuntimeApiError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _drop_nodes(t: Target, names: Sequence[str], say: Say) -> None:
    """Stop serving ``names`` (the pool follows the running plan: they are beyond it), then
    remove their static neighbour entries on the LBs, their namespaces and their files."""
    webpool.ensure(t.plan, t.paths, t.state, t.delay)
    t.save()
    first = ipaddress.IPv4Address(t.plan.spec.network.web_first)
    addresses = [str(first + _index(n) - 1) for n in names]
    for lb in t.plan.lbs:
        network.set_neighbours(lb.namespace, addresses, delete=True)
    for n in names:
        network.remove_namespace(f"{t.name}-{n}")
        shutil.rmtree(t.paths.node(n), ignore_errors=True)
    say(f"removed {len(names)} web nodes' web apps and namespaces")
