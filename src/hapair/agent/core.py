"""What the pair agent (:mod:`hapair.agent.daemon`) and the N-node agent
(:mod:`hapair.agent.ndaemon`) do alike, written once.

:class:`AgentCore` holds the clock, the event log of ``/status``, the one safety net every loop
and callback runs inside, the tracked task set and the periodic loop that keeps its own timing,
the signal handlers, the heartbeat socket, the plain API backend methods and the last steps of a
shutdown. Each agent adds its own decisions on top; :func:`reconcile` reads back what each VIP's
address really is, and :func:`run_main` maps a fatal error to the exit status.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from hapair.agent.logs import setup_logging
from hapair.agent.metrics import Metrics
from hapair.errors import FatalError

if TYPE_CHECKING:
    from hapair.agent.actor import VipActor
    from hapair.agent.api import StatusApi
    from hapair.agent.health import Health, Pinger
    from hapair.agent.resources.base import FloatingIP

logger = logging.getLogger("hapair.agent")

#: How often (ms) the cluster key files are checked for a rotation (and on SIGHUP).
KEY_REFRESH_MS = 5000.0
#: How long a stopping node waits for its VIPs to be taken (s).
HANDOFF_S = 5.0
END_TASKS_S = 3.0
"""How long a stop waits for its cancelled tasks to end."""


class HeartbeatReceiver(asyncio.DatagramProtocol):
    """The heartbeat socket's protocol: each datagram goes to ``receive``, inside the net."""

    def __init__(self, guarded: Callable[..., Any], receive: Callable[[bytes], Any]) -> None:
        self.guarded = guarded
        self.receive = receive

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.guarded("heartbeat receiver", self.receive, data)


class AgentCore:
    """The parts both agents share; a subclass sets ``actors``, ``resources``, ``pinger``,
    ``health`` and ``api`` in its ``__init__`` after calling this one's."""

    #: Names (prefixes) of one-shot tasks whose clean end is no cause to stop.
    one_shot_tasks: tuple[str, ...] = ()

    actors: dict[str, VipActor]
    resources: list[FloatingIP]
    pinger: Pinger
    health: Health
    api: StatusApi

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.boot_id = 0
        self.t0 = time.monotonic()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self.transport: asyncio.DatagramTransport | None = None
        self.unexpected_errors = 0
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._stopping = False
        self._ready = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ clock and events
    def now_ms(self) -> float:
        """Milliseconds on the monotonic clock since the agent started."""
        return (time.monotonic() - self.t0) * 1000.0

    def event(self, message: str, level: int = logging.INFO) -> None:
        """Log a sentence once and keep it in the recent-events list of ``/status``."""
        logger.log(level, "%s", message)
        t = time.time()  # read once: the seconds and the milliseconds agree
        stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
        self.events.append({"time": stamp, "message": message})

    # ------------------------------------------------------------------ the safety net
    def guarded(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)``; an unexpected error is logged and counted, never fatal."""
        try:
            return fn(*args)
        except FatalError:
            raise
        except Exception:
            self.unexpected(where)
            return None

    def unexpected(self, where: str) -> None:
        """The net's report, called inside an ``except`` block: log "please report" with the
        traceback and count it (``hapair_unexpected_errors{loop=where}``); the caller carries
        on."""
        self.unexpected_errors += 1
        self.metrics.unexpected.labels(where).inc()
        logger.exception("unexpected error in %s, please report; carrying on", where)

    def _fatal(self, reason: str) -> None:
        if not self._stopping:
            self.event(f"fatal: {reason}; exiting", logging.ERROR)
        self.exit_code = 1
        self._stop.set()

    # ------------------------------------------------------------------ tasks and loops
    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is None and task.get_name().startswith(self.one_shot_tasks):
            return
        if isinstance(exc, FatalError):
            self._fatal(str(exc))
        else:
            self._loop_ended(task.get_name(), exc)

    def _loop_ended(self, name: str, exc: BaseException | None) -> None:
        """A loop ended although nobody asked it to, without a fatal error: exit non-zero."""
        logger.error("loop %s ended unexpectedly: %r, please report", name, exc)
        self._fatal(f"loop {name} ended")

    def _spawn_every(
        self, period_ms: Callable[[], float], fn: Callable[[], Any], name: str
    ) -> None:
        """Start the loop ``name`` that calls ``fn`` every ``period_ms()``."""
        self._spawn(self._every(period_ms, fn, name), name)

    async def _every(
        self, period_ms: Callable[[], float], fn: Callable[[], Any], name: str
    ) -> None:
        """Call ``fn`` (awaiting it if it returns a coroutine) every ``period_ms()``, read each
        round so that a reload takes effect; an unexpected error is counted and the loop carries
        on; a round that starts more than one period late is counted and the schedule restarts
        from now."""
        next_at = time.monotonic()
        # Not ``while True``: on Python 3.11 a cancel that lands as an ``asyncio.timeout``
        # inside ``fn`` expires can come out as TimeoutError, which ``fn`` handles; the loop
        # would then outlive its cancellation and the stop would wait for it forever.
        while not self._stopping:
            try:
                result = fn()
                if asyncio.iscoroutine(result):
                    await result
            except (FatalError, asyncio.CancelledError):
                raise
            except Exception:
                self.unexpected(name)
            period = period_ms() / 1000
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -period:
                self.metrics.cycle_overruns.inc()
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(max(delay, 0))

    # ------------------------------------------------------------------ start
    def _listen_signals(self, reload: Callable[[], None] | None = None) -> None:
        """SIGTERM and SIGINT stop the agent; SIGHUP calls ``reload`` when there is one."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload)

    async def _open_heartbeats(self, bind: str, port: int, receive: Callable[[bytes], Any]) -> None:
        """Bind the heartbeat socket; each datagram goes to ``receive`` inside the safety net."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: HeartbeatReceiver(self.guarded, receive), local_addr=(bind, port)
        )
        self.transport = transport

    def _held(self) -> frozenset[str]:
        """What this node holds, a VIP being released counting as gone."""
        return frozenset(n for n, a in self.actors.items() if a.held and a.desired is not False)

    # ------------------------------------------------------------------ API backend
    def metrics_text(self) -> bytes:
        """Prometheus exposition."""
        return self.metrics.render()

    def is_healthy(self) -> bool:
        """For HAProxy-style checks of the agent itself."""
        return self.health.healthy

    def count_api_error(self, reason: str) -> None:
        """Count a refused or failed API request; an ``internal`` one is a bug the API's own
        net caught (it logged "please report"), so it counts as unexpected too."""
        self.metrics.api_errors.labels(reason).inc()
        if reason == "internal":
            self.unexpected_errors += 1
            self.metrics.unexpected.labels("status API").inc()

    # ------------------------------------------------------------------ stop
    async def _end_tasks(self, extra: Iterable[asyncio.Task[None]] = ()) -> None:
        """From now on, stopping: cancel every loop (and ``extra``) and wait for them."""
        self._stopping = True
        tasks = [*self._tasks, *extra]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        # Bounded: a task that swallowed its cancellation (see _every) must not hold the stop.
        _, pending = await asyncio.wait(tasks, timeout=END_TASKS_S)
        for task in pending:
            self.event(
                f"task {task.get_name()} did not end within {END_TASKS_S:g} s of its "
                "cancellation; stopping without it",
                logging.WARNING,
            )
        for task in tasks:
            if task.done() and not task.cancelled():
                with contextlib.suppress(Exception):
                    task.result()

    async def _close(self, node: str) -> None:
        """The last steps of a stop: the API, the pinger, the resources, the socket."""
        await self.api.close()
        self.pinger.close()
        for r in self.resources:
            await r.close()
        if self.transport is not None:
            self.transport.close()
        self.event(f"{node} stopped")


async def reconcile(
    actors: Iterable[VipActor],
    timeout_s: float,
    metrics: Metrics,
    event: Callable[[str, int], None] | None = None,
) -> None:
    """Read back each VIP's address (skipping actors in the middle of an action, and readings
    taken across one) and hand it to the actor, which repairs any drift from its wish. With
    ``event`` (the pair), a drift is told as a sentence and the ``held`` gauge follows each
    reading."""
    for actor in actors:
        if actor.busy:
            continue  # an action is under way; read back next round
        name = actor.resource.name
        generation = actor.generation
        try:
            result = await asyncio.wait_for(actor.resource.monitor(), timeout_s)
        except (OSError, TimeoutError) as exc:
            logger.warning("monitor of %s failed: %s", name, exc)
            continue
        if actor.busy or actor.generation != generation:
            continue  # it acted while we read: the reading may be stale
        if actor.desired is not None and result.held != actor.desired:
            if event is not None:
                what = "missing here" if actor.desired else "held here but not wanted"
                event(f"repairing drift: {name} was {what} ({result.detail})", logging.WARNING)
            metrics.drift.labels(name).inc()
        actor.observed(result.held)
        if event is not None:
            metrics.held.labels(name).set(1 if result.held else 0)


def realtime(enabled: bool, fallback: str = "") -> None:
    """Ask for SCHED_RR so a saturated machine does not delay heartbeats; fine if refused
    (``fallback`` ends the sentence that says so)."""
    if not enabled:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
    except (OSError, AttributeError) as exc:
        logger.info("real-time scheduling not available (%s)%s", exc, fallback)


def start_logging(log_format: str, node: str) -> None:
    """Set up the agent's logs; the daemon logs peer transitions itself, as events."""
    setup_logging(log_format, node)
    logging.getLogger("hapair.agent.membership").setLevel(logging.WARNING)


def run_main(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run the agent's coroutine ``main()`` (the agent is built first, outside the event
    loop); a fatal error is exit status 1."""
    try:
        return asyncio.run(main())
    except FatalError as exc:
        logger.error("fatal: %s", exc)
        return 1
