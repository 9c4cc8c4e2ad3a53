"""Where a lab keeps its files: one state directory per cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hapair.platforms.lab.state import cluster_dir


@dataclass(frozen=True)
class LabPaths:
    """The files of lab ``name`` under its state directory."""

    name: str

    @property
    def root(self) -> Path:
        """The state directory itself."""
        return cluster_dir(self.name)

    @property
    def secrets(self) -> Path:
        """Folder of the generated secrets (0700, files 0600)."""
        return self.root / "secrets"

    @property
    def key(self) -> Path:
        """The cluster's heartbeat HMAC key."""
        return self.secrets / "cluster.key"

    @property
    def admin_token(self) -> Path:
        """The token that admin API calls must carry."""
        return self.secrets / "admin.token"

    @property
    def stats_password(self) -> Path:
        """Password of the HAProxy stats page (user from the spec)."""
        return self.secrets / "stats.password"

    @property
    def cert(self) -> Path:
        """Self-signed certificate + key for the lab's HTTPS frontend."""
        return self.secrets / "lab.pem"

    def node(self, node: str) -> Path:
        """Folder of one node's files."""
        return self.root / node

    def haproxy_cfg(self, node: str) -> Path:
        """The node's rendered haproxy.cfg."""
        return self.node(node) / "haproxy.cfg"

    def haproxy_sock(self, node: str) -> Path:
        """HAProxy's admin stats socket."""
        return self.node(node) / "haproxy.sock"

    def server_state(self, node: str) -> Path:
        """HAProxy's ``server-state-file``: written just before a reload, read by the new
        worker, removed once it serves (a later start must not take over stale state)."""
        return self.node(node) / "server-state"

    def agent_toml(self, node: str) -> Path:
        """The node's agent config."""
        return self.node(node) / "agent.toml"

    def agent_sock(self, node: str) -> Path:
        """The agent's status API on a unix socket (reachable from the host's namespace)."""
        return self.node(node) / "agent.sock"

    def pidfile(self, node: str, service: str) -> Path:
        """Where the supervisor of ``service`` writes the pid of the process it runs now."""
        return self.node(node) / f"{service}.pid"

    def nft(self, node: str) -> Path:
        """The node's security-group ruleset."""
        return self.node(node) / "rules.nft"

    @property
    def hosts(self) -> Path:
        """dnsmasq's hosts file: the cluster's name and both VIPs."""
        return self.node("inet") / "hosts"

    def log(self, node: str, what: str) -> Path:
        """Log file of one process."""
        return self.root / "logs" / f"{node}-{what}.log"
