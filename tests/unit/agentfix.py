"""A pair agent built from a real agent.toml in a temporary directory (fake VIPs, no root,
no socket), for the unit tests of its reload and its heartbeat handling."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from hapair.agent.config import AgentConfig, VipConfig, dump_toml, load_agent_config
from hapair.agent.daemon import Agent
from hapair.agent.protocol import generate_key


def agent_config(tmp_path: Path, **kw: Any) -> AgentConfig:
    """lb1's config, its files under ``tmp_path``, with ``kw`` changed."""
    base: dict[str, Any] = {
        "cluster": "demo",
        "node": "lb1",
        "peer": "lb2",
        "peer_addresses": ["198.18.0.12"],
        "peer_probe_address": "198.18.0.12",
        "key_file": str(tmp_path / "key"),
        "admin_token_file": str(tmp_path / "token"),
        "stats_socket": str(tmp_path / "stats.sock"),
        "boot_file": str(tmp_path / "boot"),
        "vips": [
            VipConfig(name="vip1", address="198.19.255.1", home="lb1", driver="fake"),
            VipConfig(name="vip2", address="198.19.255.2", home="lb2", driver="fake"),
        ],
    }
    base.update(kw)
    return AgentConfig.model_validate(base)


class Started:
    """An agent built from ``agent.toml`` whose loops were started, each loop's period
    callable kept by name (it is what the loop reads before every round)."""

    def __init__(self, tmp_path: Path) -> None:
        generate_key(tmp_path / "key")
        (tmp_path / "token").write_text("s3cret\n")
        self.path = tmp_path / "agent.toml"
        self.original = dump_toml(agent_config(tmp_path))
        self.path.write_text(self.original)
        self.agent = Agent(load_agent_config(self.path), self.path)
        self.periods: dict[str, Callable[[], float]] = {}

        def spawn_every(period: Callable[[], float], fn: Callable[[], Any], name: str) -> None:
            self.periods[name] = period

        def spawn(coro: Coroutine[Any, Any, None], name: str) -> None:
            coro.close()

        self.agent._spawn_every = spawn_every  # type: ignore[method-assign]
        self.agent._spawn = spawn  # type: ignore[method-assign,assignment]
        self.agent._start_loops()

    def write(self, **changes: str) -> None:
        """agent.toml with each ``key = value`` line given replaced."""
        lines = []
        for line in self.original.splitlines():
            key = line.split(" = ", 1)[0]
            lines.append(f"{key} = {changes[key]}" if key in changes else line)
        self.path.write_text("\n".join(lines) + "\n")

    def used(self) -> dict[str, float]:
        """The period (ms) each loop would wait now."""
        return {name: period() for name, period in self.periods.items()}

    def events(self) -> list[str]:
        """The agent's recent events (``/status``), oldest first."""
        return [e["message"] for e in self.agent.events]
