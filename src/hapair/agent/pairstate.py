"""What one pair agent holds: its configuration, keys, controller, actors, health gate and
timers, built once. The agent's parts (:mod:`~hapair.agent.pairbeats`,
:mod:`~hapair.agent.pairhealth`, :mod:`~hapair.agent.pairops`, :mod:`~hapair.agent.handover`)
each add their methods on top of :class:`PairState`; :class:`hapair.agent.daemon.Agent` joins them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hapair.agent.actor import VipActor
from hapair.agent.config import AgentConfig
from hapair.agent.controller import Controller
from hapair.agent.core import AgentCore
from hapair.agent.drain import make_drainer  # failback drain
from hapair.agent.health import Health, HealthGate, Pinger
from hapair.agent.history import History  # dashboard hook
from hapair.agent.keyring import Keyring
from hapair.agent.pingverdict import PingVerdict
from hapair.agent.protocol import Decoder
from hapair.agent.resources.base import FakeFloatingIP, FloatingIP


def make_resource(cfg: AgentConfig, index: int) -> FloatingIP:
    """The resource agent of VIP number ``index`` for this node."""
    v = cfg.vips[index]
    if v.driver == "l2":
        from hapair.agent.resources.l2 import L2FloatingIP

        return L2FloatingIP(v.name, v.address, v.ifname)
    if v.driver == "aws_eip":
        from hapair.agent.resources.aws_eip import make_aws_eip

        return make_aws_eip(cfg, v)
    return FakeFloatingIP(v.name, v.address)


class PairState(AgentCore):
    """One pair agent's state, and the methods its parts call on one another."""

    def __init__(self, cfg: AgentConfig, config_path: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.config_path = config_path
        self.keyring = Keyring(Path(cfg.key_file))
        self.token = Path(cfg.admin_token_file).read_text().strip()
        self.seq = 0
        self.decoder = Decoder(self.keyring, cfg.cluster, cfg.node, {cfg.peer})
        self.controller = Controller(
            cfg.node, cfg.peer, [(v.name, v.home) for v in cfg.vips], cfg, start_ms=0.0
        )
        self.resources = [make_resource(cfg, i) for i in range(len(cfg.vips))]
        self.drainer = make_drainer(
            lambda: self.cfg, lambda: self.controller.membership, self.unexpected
        )
        self.actors = {
            r.name: VipActor(
                r, cfg.action_timeout_ms / 1000, self._on_action, self.drainer, self.unexpected
            )
            for r in self.resources
        }
        self.gate = HealthGate(rise=cfg.health_rise, fall=cfg.health_fall)
        self.health: Health = self.gate.current
        #: what the ping nodes' replies prove (pure); the raw socket feeds it
        self.ping = PingVerdict(cfg.ping_nodes, cfg.interval_ms)
        self.pinger = Pinger(self.ping, self.now_ms)
        self.standby = False
        # Dashboard hook: the moves it shows (history.py); the page on the API is the Agent's.
        self.history = History(cfg.node, cfg.peer, {v.name: v.home for v in cfg.vips})
        #: set when stopping keeps what this node holds: no decision after that
        self._frozen = False
        self._reload = False
        self._probes: set[asyncio.Task[None]] = set()
        self._dropped_counted: dict[str, int] = {}
        self._dropped_logged: dict[str, tuple[float, int]] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._peer_probe: asyncio.Task[None] | None = None
        #: the peer's last heartbeat (boot id, seq) when a VIP last showed it serving
        self._witness: tuple[int, int] | None = None

    # Implemented by the parts (daemon.py, pairbeats.py, pairhealth.py).
    def _on_action(self, vip: str, action: str, ok: bool, took: float, err: str) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Decide now (see :meth:`hapair.agent.daemon.Agent.tick`)."""
        raise NotImplementedError

    def _send(self) -> None:
        raise NotImplementedError

    def _kick_peer_probe(self) -> None:
        raise NotImplementedError
