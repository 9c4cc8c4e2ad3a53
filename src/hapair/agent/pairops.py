"""The pair agent's operator actions: standby and online (the API), SIGHUP's reload of the
config file, and the check of the cluster key files for a rotation."""

from __future__ import annotations

import logging
import time

from hapair.agent.config import AgentConfig, load_agent_config
from hapair.agent.pairstate import PairState
from hapair.errors import FatalError, SpecError

#: What a reload cannot change: these are read once, at start, and need a restart (the
#: socket, the API, the token, the logs, the scheduling, the drain's next hop, the AWS client).
FIXED_FIELDS = (
    "cluster",
    "node",
    "peer",
    "port",
    "bind",
    "vips",
    "key_file",
    "admin_token_file",
    "api_port",
    "api_bind",
    "api_socket",
    "boot_file",
    "history_file",
    "peer_probe_address",
    "log_format",
    "realtime",
    "aws_region",
    "aws_endpoint_url",
)
#: Fixed too when a VIP is an ``aws_eip``: its move deadline is taken from it at start.
FIXED_WITH_AWS_EIP = ("action_timeout_ms",)


def fixed_changes(old: AgentConfig, new: AgentConfig) -> list[str]:
    """The fields a reload from ``old`` to ``new`` would change but cannot apply."""
    aws = any(v.driver == "aws_eip" for v in old.vips)
    fixed = FIXED_FIELDS + (FIXED_WITH_AWS_EIP if aws else ())
    return [f for f in fixed if getattr(new, f) != getattr(old, f)]


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
        changed = fixed_changes(self.cfg, new)
        if changed:
            self.event(
                f"reload refused, keeping the old config: {', '.join(changed)} cannot change "
                "while the agent runs; restart it to apply them",
                logging.ERROR,
            )
            return False
        self.cfg = new
        self.controller.retime(new)
        self.ping.targets = list(new.ping_nodes)
        self.ping.interval_ms = new.interval_ms
        self.gate.rise, self.gate.fall = new.health_rise, new.health_fall
        for actor in self.actors.values():
            actor.timeout = new.action_timeout_ms / 1000
        self.event("configuration reloaded: every loop uses the new timings")
        return True
