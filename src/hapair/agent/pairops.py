"""The pair agent's operator actions: standby and online (the API), SIGHUP's reload of the
config file, and the check of the cluster key files for a rotation."""

from __future__ import annotations

import logging
import time

from hapair.agent.config import load_agent_config
from hapair.agent.pairstate import PairState
from hapair.errors import FatalError, SpecError

#: What a reload cannot change: these need a restart.
FIXED_FIELDS = (
    "cluster",
    "node",
    "peer",
    "port",
    "bind",
    "vips",
    "key_file",
    "api_port",
    "api_bind",
    "api_socket",
    "boot_file",
)


class PairOps(PairState):
    """Standby, reload and key rotation."""

    async def set_standby(self, on: bool) -> str:
        """Planned operation: standby hands this node's VIPs to the peer (make-before-break)."""
        if on == self.standby:
            return f"{self.cfg.node} is already {'in standby' if on else 'online'}"
        self.standby = on
        self.event(f"operator: {self.cfg.node} {'standby' if on else 'online'}")
        self.tick()
        if on:
            return (
                f"{self.cfg.node} in standby: its VIPs move to {self.cfg.peer} once it holds them"
            )
        delay = self.cfg.failback_delay_ms
        return f"{self.cfg.node} online: it takes its VIPs back after {delay} ms of stable health"

    def _ask_reload(self) -> None:
        self._reload = True

    def _tick_and_reload(self) -> None:
        if self._reload:
            self._reload = False
            self.reload()
        self.tick()

    def refresh_keys(self) -> None:
        """Read the cluster key files again if they changed (a rotation: the old key keeps
        counting for an overlap, :mod:`hapair.agent.keyring`); unreadable new files leave the
        keys in use untouched."""
        try:
            changed = self.keyring.refresh()
        except FatalError as exc:
            self.event(f"new cluster key refused, keeping the keys in use: {exc}", logging.ERROR)
            return
        if changed:
            k, now = self.keyring.keys, time.time()
            if k.previous is None or now >= k.drop_at:
                self.event("cluster key changed: signing and accepting the new key only")
            else:
                self.event(
                    f"cluster key changed: signing with the new key in "
                    f"{max(0.0, k.switch_at - now):.0f} s, accepting the old one for "
                    f"{k.drop_at - now:.0f} s"
                )

    def reload(self) -> bool:
        """SIGHUP: apply the config file again, as a whole or not at all. Returns whether it
        was applied."""
        self.refresh_keys()
        if self.config_path is None:
            return False
        try:
            new = load_agent_config(self.config_path)
        except SpecError as exc:
            self.event(f"reload refused, keeping the old config: {exc}", logging.ERROR)
            return False
        changed = [f for f in FIXED_FIELDS if getattr(new, f) != getattr(self.cfg, f)]
        if changed:
            self.event(
                f"reload refused, keeping the old config: {', '.join(changed)} need a restart",
                logging.ERROR,
            )
            return False
        self.cfg = new
        self.controller.retime(new)
        self.pinger.targets = list(new.ping_nodes)
        self.gate.rise, self.gate.fall = new.health_rise, new.health_fall
        for actor in self.actors.values():
            actor.timeout = new.action_timeout_ms / 1000
        self.event("configuration reloaded: every loop uses the new timings")
        return True
