"""Every configuration file of a lab, rendered with its secrets and paths: what ``up`` writes,
and what day-2 operations compare and write again.

:func:`render` only reads (the secrets, made on first use) and checks each haproxy.cfg with
``haproxy -c``; :func:`write` writes what was rendered, each file atomically.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hapair.agent.config import dump_toml
from hapair.fileio import write_atomic
from hapair.plan import Plan
from hapair.platforms.lab.fabric import lab as fabric
from hapair.platforms.lab.paths import LabPaths
from hapair.platforms.lab.state import ensure_secret
from hapair.platforms.lab.system import in_ns, run
from hapair.render.agent import agent_config
from hapair.render.dns import render_hosts
from hapair.render.haproxy import check_haproxy, render_haproxy
from hapair.render.nftables import render_nftables


@dataclass(frozen=True)
class Rendered:
    """The text of each file: haproxy.cfg and agent.toml by LB, nftables rules by node."""

    haproxy: dict[str, str]
    agent: dict[str, str]
    nft: dict[str, str]
    hosts: str


def cert_path(plan: Plan, paths: LabPaths) -> str | None:
    """The PEM the HTTPS frontend serves (the spec's, else the lab's self-signed one), or None
    when HTTPS is off."""
    h = plan.spec.haproxy
    if not h.https:
        return None
    return h.cert or str(paths.cert)


def self_signed_pem(domain: str, days: int = 30) -> str:
    """A new self-signed certificate for ``domain`` and its key (RSA 2048), as one PEM.

    :raises OperationError: openssl failed.
    """
    with tempfile.TemporaryDirectory(prefix="hapair-cert-") as tmp:
        key, crt = Path(tmp) / "key.pem", Path(tmp) / "crt.pem"
        req = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days)]
        run([*req, "-subj", f"/CN={domain}", "-keyout", str(key), "-out", str(crt)])
        return crt.read_text() + key.read_text()


def ensure_self_signed(plan: Plan, paths: LabPaths) -> None:
    """Make the lab's self-signed certificate (mode 0600) if HTTPS needs it and it is missing."""
    h = plan.spec.haproxy
    if h.https and not h.cert and not paths.cert.exists():
        write_atomic(paths.cert, self_signed_pem(plan.spec.cluster.domain), mode=0o600)


def render(plan: Plan, paths: LabPaths, check: bool = True) -> Rendered:
    """Every configuration of the lab for ``plan``; each haproxy.cfg is checked with
    ``haproxy -c`` unless ``check`` is off.

    :raises OperationError: haproxy refuses a configuration (its output in the message).
    """
    spec = plan.spec
    password = spec.haproxy.stats_password or ensure_secret(paths.stats_password, 12)
    cert = cert_path(plan, paths)
    haproxy, agent = {}, {}
    for lb in plan.lbs:
        cfg = render_haproxy(
            plan,
            lb.name,
            stats_socket=str(paths.haproxy_sock(lb.name)),
            stats_password=password,
            cert_path=cert,
            server_state_file=str(paths.server_state(lb.name)),
        )
        if check:
            check_haproxy(cfg)
        haproxy[lb.name] = cfg
        if spec.ha.coordinator == "etcd":  # issue 13: the N-node agent
            agent[lb.name] = _node_agent(plan, paths, lb.name)
            continue
        acfg = agent_config(
            plan,
            lb.name,
            key_file=str(paths.key),
            admin_token_file=str(paths.admin_token),
            stats_socket=str(paths.haproxy_sock(lb.name)),
            api_socket=str(paths.agent_sock(lb.name)),
        )
        if fabric.is_aws(plan):  # aws_eip VIPs against the lab's EC2 endpoint
            acfg = acfg.model_copy(update=fabric.agent_settings(plan, lb.name))
        agent[lb.name] = dump_toml(acfg)
    nft = {}
    for node in plan.nodes:
        rules = render_nftables(plan, node.name)
        if rules is not None:
            nft[node.name] = rules
    return Rendered(haproxy, agent, nft, render_hosts(plan))


def _node_agent(plan: Plan, paths: LabPaths, lb: str) -> str:
    """The N-node agent's ``agent.toml`` (``ha.coordinator = "etcd"``): every other LB as a
    peer, the lab's etcd members and the file with their root password."""
    from hapair.agent.nconfig import dump_node_toml
    from hapair.platforms.lab import etcd
    from hapair.render.nagent import node_config

    return dump_node_toml(
        node_config(
            plan,
            lb,
            key_file=str(paths.key),
            admin_token_file=str(paths.admin_token),
            stats_socket=str(paths.haproxy_sock(lb)),
            api_socket=str(paths.agent_sock(lb)),
            etcd_endpoints=etcd.endpoints(plan),
            etcd_password_file=str(etcd.password_file(paths)),
        )
    )


def write(paths: LabPaths, r: Rendered) -> None:
    """Write every file of ``r`` (atomically; haproxy.cfg and agent.toml 0600)."""
    for lb, cfg in r.haproxy.items():
        write_atomic(paths.haproxy_cfg(lb), cfg, mode=0o600)
    for lb, toml in r.agent.items():
        write_atomic(paths.agent_toml(lb), toml, mode=0o600)
    for node, rules in r.nft.items():
        write_atomic(paths.nft(node), rules)
    write_atomic(paths.hosts, r.hosts)


def check_nft(namespace: str, rules: str) -> None:
    """Check a ruleset with ``nft -c`` inside ``namespace`` (nothing is applied).

    :raises OperationError: nft refuses it.
    """
    run(in_ns(namespace, ["nft", "-c", "-f", "-"]), input=rules)
