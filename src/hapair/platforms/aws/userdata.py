"""cloud-init user data: each instance installs and configures itself, no SSH from the operator.

Pure: the rendered configuration files come in as strings. An LB gets HAProxy, hapair in a venv,
its secondary private address (the seed's ``secondary-ip`` role), ``haproxy.cfg``,
``agent.toml`` and the cluster secrets, and runs the agent with the ``aws_eip`` resource agent.
A web node gets hapair and runs the demo web app. The cluster secrets live only in the LBs' user
data; a replacement LB gets them from its peer's (:func:`secrets_from`).
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass

#: EC2's limit on user data (before base64).
MAX_USER_DATA = 16384
VENV = "/opt/hapair"
ETC = "/etc/hapair"
KEY_FILE = f"{ETC}/cluster.key"
TOKEN_FILE = f"{ETC}/admin.token"
AGENT_TOML = f"{ETC}/agent.toml"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
STATS_SOCKET = "/run/haproxy/admin.sock"
AGENT_SOCKET = "/run/hapair/agent.sock"
CERT_FILE = f"{ETC}/cert.pem"
#: Marker line that carries the secrets in an LB's user data (a YAML comment).
SECRETS_MARKER = "# hapair-secrets: "


@dataclass(frozen=True)
class Secrets:
    """The per-cluster secrets both LBs share (random, made once by the first ``up``)."""

    key: str
    admin_token: str
    stats_password: str


def secrets_from(user_data: str) -> Secrets | None:
    """The secrets carried by an LB's user data (plain or gzip), or ``None``."""
    text = user_data
    raw = text.encode("latin-1", "ignore")
    if raw[:2] == b"\x1f\x8b":
        text = gzip.decompress(raw).decode()
    for line in text.splitlines():
        if line.startswith(SECRETS_MARKER):
            data = json.loads(base64.b64decode(line[len(SECRETS_MARKER) :]))
            return Secrets(data["key"], data["admin_token"], data["stats_password"])
    return None


def _file(path: str, content: str, mode: str = "0644") -> list[str]:
    lines = [
        f"  - path: {path}",
        f"    permissions: '{mode}'",
        "    owner: root:root",
        "    encoding: b64",
        f"    content: {base64.b64encode(content.encode()).decode()}",
    ]
    return lines


def _unit(description: str, exec_start: str, after: str = "network-online.target") -> str:
    return (
        "[Unit]\n"
        f"Description={description}\n"
        f"After={after}\n"
        f"Wants={after}\n\n"
        "[Service]\n"
        f"ExecStart={exec_start}\n"
        "Restart=always\n"
        "RestartSec=1\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def _install(packages: list[str], pip_spec: str) -> list[str]:
    # The first minutes of a boot may lack egress (the EIP is associated after the instance
    # runs): retry until the mirrors answer.
    apt = " ".join(packages)
    return [
        "  - [sh, -c, 'for i in $(seq 1 60); do apt-get update && "
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y {apt} && break; sleep 10; done']",
        f"  - [python3, -m, venv, {VENV}]",
        f"  - [sh, -c, 'for i in $(seq 1 30); do {VENV}/bin/pip install --upgrade "
        f'"{pip_spec}" && break; sleep 10; done\']',
    ]


def secondary_ip_script(secondary: str, prefixlen: int, gateway: str) -> str:
    """A boot script that puts the secondary private address on the interface toward the VPC
    router (EC2 does not configure secondary addresses by itself)."""
    return (
        "#!/bin/sh\n"
        "# hapair: the seed's secondary-ip role.\n"
        "set -e\n"
        f"dev=$(ip -o route get {gateway} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p')\n"
        f'ip addr replace {secondary}/{prefixlen} dev "$dev"\n'
    )


def lb_user_data(
    *,
    cluster: str,
    node: str,
    haproxy_cfg: str,
    agent_toml: str,
    secrets: Secrets,
    secondary_ip: str,
    prefixlen: int,
    gateway: str,
    pip_spec: str,
    self_signed_for: str | None = None,
) -> str:
    """User data of an LB: HAProxy + hapair + the agent (``aws_eip``), configured.

    :param haproxy_cfg: rendered haproxy.cfg (stats socket at :data:`STATS_SOCKET`).
    :param agent_toml: rendered agent.toml (key, token and socket paths as in this module).
    :param self_signed_for: when HTTPS is on without a certificate, make a self-signed one
        for this DNS name at :data:`CERT_FILE`.
    """
    blob = base64.b64encode(
        json.dumps(
            {
                "key": secrets.key,
                "admin_token": secrets.admin_token,
                "stats_password": secrets.stats_password,
            }
        ).encode()
    ).decode()
    lines = [
        "#cloud-config",
        f"# hapair {cluster}: {node} (lb)",
        SECRETS_MARKER + blob,
        "write_files:",
    ]
    lines += _file(KEY_FILE, secrets.key + "\n", "0600")
    lines += _file(TOKEN_FILE, secrets.admin_token + "\n", "0600")
    lines += _file(AGENT_TOML, agent_toml, "0600")
    lines += _file(f"{ETC}/haproxy.cfg", haproxy_cfg, "0600")
    lines += _file(
        "/usr/local/sbin/hapair-secondary-ip",
        secondary_ip_script(secondary_ip, prefixlen, gateway),
        "0755",
    )
    secondary_unit = (
        "[Unit]\nDescription=hapair: secondary private address\n"
        "After=network-online.target\nWants=network-online.target\nBefore=haproxy.service\n\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        "ExecStart=/usr/local/sbin/hapair-secondary-ip\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    lines += _file("/etc/systemd/system/hapair-secondary-ip.service", secondary_unit)
    agent_unit = _unit(
        f"hapair HA agent ({node}, aws_eip)",
        f"{VENV}/bin/hapair agent --config {AGENT_TOML}",
        after="network-online.target haproxy.service",
    ).replace("[Service]\n", "[Service]\nRuntimeDirectory=hapair\n")
    lines += _file("/etc/systemd/system/hapair-agent.service", agent_unit)
    lines += ["runcmd:", "  - [systemctl, enable, --now, hapair-secondary-ip.service]"]
    lines += _install(["haproxy", "python3-venv", "openssl", "ca-certificates"], pip_spec)
    if self_signed_for:
        lines.append(
            f"  - [sh, -c, 'test -s {CERT_FILE} || (openssl req -x509 -newkey rsa:2048 -nodes "
            f"-days 365 -subj /CN={self_signed_for} -keyout {CERT_FILE}.key -out {CERT_FILE}.crt "
            f"&& cat {CERT_FILE}.crt {CERT_FILE}.key > {CERT_FILE} && chmod 600 {CERT_FILE} "
            f"&& rm -f {CERT_FILE}.crt {CERT_FILE}.key)']"
        )
    lines += [
        f"  - [install, -m, '0600', {ETC}/haproxy.cfg, {HAPROXY_CFG}]",
        f"  - [haproxy, -c, -f, {HAPROXY_CFG}]",
        "  - [systemctl, restart, haproxy]",
        "  - [systemctl, daemon-reload]",
        "  - [systemctl, enable, --now, hapair-agent.service]",
    ]
    return "\n".join(lines) + "\n"


def web_user_data(*, cluster: str, node: str, address: str, port: int, pip_spec: str) -> str:
    """User data of a web node: hapair and the demo web app as a systemd unit."""
    unit = _unit(
        f"hapair demo web app ({node})",
        f"{VENV}/bin/python -m hapair.webapp --node {node} --address {address} --port {port}",
    )
    lines = ["#cloud-config", f"# hapair {cluster}: {node} (web)", "write_files:"]
    lines += _file("/etc/systemd/system/hapair-webapp.service", unit)
    lines += ["runcmd:"]
    lines += _install(["python3-venv", "ca-certificates"], pip_spec)
    lines += [
        "  - [systemctl, daemon-reload]",
        "  - [systemctl, enable, --now, hapair-webapp.service]",
    ]
    return "\n".join(lines) + "\n"


def pack(user_data: str) -> bytes:
    """The bytes to hand EC2: plain when it fits, gzip otherwise (cloud-init reads both).

    :raises ValueError: too big even compressed.
    """
    raw = user_data.encode()
    if len(raw) <= MAX_USER_DATA:
        return raw
    packed = gzip.compress(raw, mtime=0)
    if len(packed) > MAX_USER_DATA:
        raise ValueError(f"user data is {len(packed)} bytes compressed; EC2 allows {MAX_USER_DATA}")
    return packed
