"""cloud-init user data: each instance installs and configures itself, no SSH from the operator.

Pure: what to install and the rendered agent configuration come in as values. User data
carries **no secret** (anyone allowed ``ec2:DescribeInstanceAttribute`` can read it):

- hapair comes from the cluster's private bucket: the wheel ``up`` built and its pinned
  requirements, fetched with the instance role's credentials by ``s3get.py`` (written here; the
  standard library only, since it runs before hapair is installed), the wheel's SHA-256 checked;
  or, as an explicit override, ``pip install <aws.pip_spec>``.
- An LB's secrets (cluster key, admin token, stats password) and its haproxy.cfg come from
  ``hapair.platforms.aws.nodesync``, which reads SSM and the LB's desired document at boot and
  every minute afterwards.

Every unit restarts forever (``Restart=always``, no start limit): a node that boots before the
network, the role or the secrets are ready keeps trying instead of ending in a failed state.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from pathlib import Path

#: EC2's limit on user data (before base64).
MAX_USER_DATA = 16384
VENV = "/opt/hapair"
ETC = "/etc/hapair"
KEY_FILE = f"{ETC}/cluster.key"
TOKEN_FILE = f"{ETC}/admin.token"
AGENT_TOML = f"{ETC}/agent.toml"
NODE_JSON = f"{ETC}/node.json"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
STATS_SOCKET = "/run/haproxy/admin.sock"
AGENT_SOCKET = "/run/hapair/agent.sock"
#: The agent's boot counter: under its StateDirectory, so it survives restarts and reboots
#: (its RuntimeDirectory, /run/hapair, is a tmpfs emptied each time the agent stops).
BOOT_FILE = "/var/lib/hapair/boot"
CERT_FILE = f"{ETC}/cert.pem"
#: The stats password, written by the node sync for the desired-document follower (0600).
STATS_PASSWORD_FILE = f"{ETC}/stats.password"
SILENCE_NFT = f"{ETC}/silence.nft"
#: HAProxy's server-state-file: dumped before each reload, read by the new worker.
SERVER_STATE_FILE = "/var/lib/haproxy/server-state"
FOLLOWER = f"{VENV}/bin/python -m hapair.platforms.aws.follower --config {NODE_JSON}"
#: Debian's hook that invoke-rc.d asks before starting a service from a package's scripts:
#: present (exit 101) while apt installs HAProxy, so the package does not start it with its
#: default configuration; HAProxy starts once, after the boot's sync wrote the real one.
POLICY_RC_D = "/usr/sbin/policy-rc.d"
#: Every node's locale: always present on Debian and Ubuntu (cloud-init's own default,
#: en_US.UTF-8, must be generated first, and its locale module fails where it is not).
LOCALE = "C.UTF-8"
S3GET = "/usr/local/lib/hapair/s3get.py"
#: A web node's last boot step: waits until its web app answers (see :func:`web_ready_script`).
WEB_READY = "/usr/local/sbin/hapair-web-ready"
S3GET_SOURCE = Path(__file__).with_name("s3get.py")


@dataclass(frozen=True)
class Install:
    """Where an instance gets hapair from.

    :ivar region: the bucket's region.
    :ivar bucket: the cluster's bucket.
    :ivar wheel_key: the wheel's object key (its file name is the key's last part).
    :ivar wheel_sha256: checked after download.
    :ivar requirements_key: the pinned requirements' object key.
    :ivar pip_spec: when set, ``pip install`` this instead (the bucket is not used for hapair).
    """

    region: str
    bucket: str
    wheel_key: str = ""
    wheel_sha256: str = ""
    requirements_key: str = ""
    pip_spec: str = ""


def _file(path: str, content: str, mode: str = "0644") -> list[str]:
    return [
        f"  - path: {path}",
        f"    permissions: '{mode}'",
        "    owner: root:root",
        "    encoding: b64",
        f"    content: {base64.b64encode(content.encode()).decode()}",
    ]


def unit(
    description: str,
    exec_start: str,
    *,
    after: str = "network-online.target",
    service: str = "Restart=always\nRestartSec=2\n",
    install: str = "multi-user.target",
) -> str:
    """A systemd unit that never gives up (no start limit)."""
    return (
        "[Unit]\n"
        f"Description={description}\n"
        f"After={after}\n"
        "Wants=network-online.target\n"
        "StartLimitIntervalSec=0\n\n"
        "[Service]\n"
        f"ExecStart={exec_start}\n"
        f"{service}\n"
        "[Install]\n"
        f"WantedBy={install}\n"
    )


def _retry(command: str, times: int = 60, pause: int = 10) -> str:
    return f"  - [sh, -c, 'for i in $(seq 1 {times}); do {command} && break; sleep {pause}; done']"


def install_commands(
    install: Install, packages: list[str], *, dependencies: bool = True, hold_services: bool = False
) -> list[str]:
    """runcmd lines: Debian packages, then hapair in :data:`VENV` (the first minutes of a
    boot may lack egress or the role: everything is retried).

    :param dependencies: install hapair's pinned runtime dependencies too (an LB); without,
        only hapair itself (a web node: the demo web app needs the standard library only).
    :param hold_services: the user data wrote :data:`POLICY_RC_D` (the packages' scripts
        start no service): remove it once apt is done.
    """
    apt = " ".join(packages)
    get_packages = f"apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {apt}"
    lines = [_retry(get_packages)]
    if hold_services:
        lines.append(f"  - [rm, -f, {POLICY_RC_D}]")
    lines.append(f"  - [python3, -m, venv, {VENV}]")
    pip = f"{VENV}/bin/pip"
    if install.pip_spec:
        no_deps = "" if dependencies else "PIP_NO_DEPS=1 "  # pip's --no-deps, by environment
        return [*lines, _retry(f'{no_deps}{pip} install --upgrade "{install.pip_spec}"', 30)]
    wheel = f"{VENV}/{install.wheel_key.rsplit('/', 1)[-1]}"
    get = f"python3 {S3GET} {install.region} {install.bucket}"
    if not dependencies:
        return [
            *lines,
            f"  - [sh, -c, '{get} {install.wheel_key} {wheel} {install.wheel_sha256}']",
            f"  - [{pip}, install, --no-deps, --force-reinstall, {wheel}]",
        ]
    return [
        *lines,
        f"  - [sh, -c, '{get} {install.requirements_key} {VENV}/requirements.txt']",
        f"  - [sh, -c, '{get} {install.wheel_key} {wheel} {install.wheel_sha256}']",
        _retry(f"{pip} install -r {VENV}/requirements.txt", 30),
        f"  - [{pip}, install, --no-deps, --force-reinstall, {wheel}]",
    ]


def _fetcher(install: Install) -> list[str]:
    if install.pip_spec:
        return []
    return _file(S3GET, S3GET_SOURCE.read_text(), "0755")


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
    agent_toml: str,
    node_json: str,
    install: Install,
    secondary_ip: str,
    prefixlen: int,
    gateway: str,
    self_signed_for: str | None = None,
    follow_desired: bool = False,
    silence_nft: str = "",
) -> str:
    """User data of an LB: HAProxy + hapair + the node sync + the agent (``aws_eip``).

    :param silence_nft: the LB's silence rule (:func:`hapair.render.nftables.render_lb_silence`),
        loaded by ``hapair-silence.service`` before HAProxy starts.

    :param agent_toml: rendered agent.toml (key, token and socket paths as in this module).
    :param node_json: the node sync's configuration (:class:`~.nodesync.NodeConfig`).
    :param self_signed_for: when HTTPS is on without a certificate, make a self-signed one
        for this DNS name at :data:`CERT_FILE`.
    :param follow_desired: haproxy.cfg and the agent timings follow the cluster's desired
        document in SSM (``hapair-desired.service``: :mod:`~.follower`); else the node sync
        installs haproxy.cfg from the bucket.
    """
    lines = ["#cloud-config", f"# hapair {cluster}: {node} (lb)", f"locale: {LOCALE}"]
    lines += ["write_files:"]
    lines += _fetcher(install)
    lines += _file(
        POLICY_RC_D, "#!/bin/sh\n# hapair: no service starts while apt installs\nexit 101\n", "0755"
    )
    lines += _file(AGENT_TOML, agent_toml, "0600")
    lines += _file(NODE_JSON, node_json, "0600")
    lines += _file(
        "/usr/local/sbin/hapair-secondary-ip",
        secondary_ip_script(secondary_ip, prefixlen, gateway),
        "0755",
    )
    oneshot = "Type=oneshot\nRemainAfterExit=yes\n"
    lines += _file(
        "/etc/systemd/system/hapair-secondary-ip.service",
        unit(
            "hapair: secondary private address",
            "/usr/local/sbin/hapair-secondary-ip",
            service=oneshot,
        ).replace("StartLimitIntervalSec=0\n", "StartLimitIntervalSec=0\nBefore=haproxy.service\n"),
    )
    if silence_nft:
        lines += _file(SILENCE_NFT, silence_nft)
        lines += _file(
            "/etc/systemd/system/hapair-silence.service",
            unit(
                "hapair: drop, not refuse, connections no HAProxy listens for",
                f"/usr/sbin/nft -f {SILENCE_NFT}",
                service=oneshot,
            ).replace(
                "StartLimitIntervalSec=0\n", "StartLimitIntervalSec=0\nBefore=haproxy.service\n"
            ),
        )
    sync = f"{VENV}/bin/python -m hapair.platforms.aws.nodesync --config {NODE_JSON}"
    lines += _file(
        "/etc/systemd/system/hapair-sync.service",
        unit("hapair: secrets and haproxy.cfg from the cluster", sync, service="Type=oneshot\n"),
    )
    lines += _file(
        "/etc/systemd/system/hapair-sync.timer",
        "[Unit]\nDescription=hapair: sync every minute\n\n"
        "[Timer]\nOnActiveSec=60s\nOnUnitActiveSec=60s\nAccuracySec=5s\n\n"
        "[Install]\nWantedBy=timers.target\n",
    )
    lines += _file(
        "/etc/systemd/system/hapair-agent.service",
        unit(
            f"hapair HA agent ({node}, aws_eip)",
            f"{VENV}/bin/hapair agent --config {AGENT_TOML}",
            after="network-online.target haproxy.service hapair-sync.service",
            service="Restart=always\nRestartSec=2\nRuntimeDirectory=hapair\n"
            "StateDirectory=hapair\n",
        ),
    )
    if follow_desired:
        lines += _file(
            "/etc/systemd/system/hapair-desired.service",
            unit(
                "hapair: haproxy.cfg and agent timings follow the desired document",
                FOLLOWER,
                after="network-online.target hapair-sync.service",
            ),
        )
    lines += ["runcmd:", "  - [systemctl, enable, --now, hapair-secondary-ip.service]"]
    packages = ["haproxy", "python3-venv", "openssl", "ca-certificates"]
    lines += install_commands(
        install, [*packages, "nftables"] if silence_nft else packages, hold_services=True
    )
    if silence_nft:
        lines.append("  - [systemctl, enable, --now, hapair-silence.service]")
    if self_signed_for:
        lines.append(
            f"  - [sh, -c, 'test -s {CERT_FILE} || (openssl req -x509 -newkey rsa:2048 -nodes "
            f"-days 365 -subj /CN={self_signed_for} -keyout {CERT_FILE}.key -out {CERT_FILE}.crt "
            f"&& cat {CERT_FILE}.crt {CERT_FILE}.key > {CERT_FILE} && chmod 600 {CERT_FILE} "
            f"&& rm -f {CERT_FILE}.crt {CERT_FILE}.key)']"
        )
    lines += [
        # HAProxy is not running yet (the package did not start it): the sync and the
        # follower only write haproxy.cfg, and HAProxy is started once, with it.
        _retry(f"{sync} --boot", 60, 5),
        *([_retry(f"{FOLLOWER} --once --boot", 60, 5)] if follow_desired else []),
        "  - [systemctl, enable, --now, haproxy]",
        "  - [systemctl, daemon-reload]",
        "  - [systemctl, enable, --now, hapair-sync.timer, hapair-agent.service]",
        *(["  - [systemctl, enable, --now, hapair-desired.service]"] if follow_desired else []),
    ]
    return "\n".join(lines) + "\n"


def web_user_data(
    *,
    cluster: str,
    node: str,
    address: str,
    port: int,
    install: Install | None = None,
    pip_spec: str = "",
) -> str:
    """User data of a web node: hapair and the demo web app as a systemd unit.

    :param pip_spec: without ``install``, short for ``Install(pip_spec=pip_spec)``.
    """
    if install is None:
        if not pip_spec:
            raise ValueError("web_user_data needs an install or a pip_spec")
        install = Install("", "", pip_spec=pip_spec)
    app = unit(
        f"hapair demo web app ({node})",
        f"{VENV}/bin/python -m hapair.webapp --node {node} --address {address} --port {port}",
    )
    lines = ["#cloud-config", f"# hapair {cluster}: {node} (web)", f"locale: {LOCALE}"]
    lines += ["write_files:"]
    lines += _fetcher(install)
    lines += _file("/etc/systemd/system/hapair-webapp.service", app)
    lines += _file(WEB_READY, web_ready_script(address, port), "0755")
    lines += ["runcmd:"]
    lines += install_commands(install, ["python3-venv", "ca-certificates"], dependencies=False)
    lines += [
        "  - [systemctl, daemon-reload]",
        "  - [systemctl, enable, --now, hapair-webapp.service]",
        f"  - [{WEB_READY}]",
    ]
    return "\n".join(lines) + "\n"


def web_ready_script(address: str, port: int, tries: int = 120) -> str:
    """A script that ends 0 once the web app answers ``GET /health``, else 1 after ``tries``
    seconds: the last step of a web node's cloud-init, so that "cloud-init done" on its
    console means "serving" (``apply`` waits for it) and a web app that never answers is a
    cloud-init failure there."""
    url = f"http://{address}:{port}/health"
    get = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"
    return (
        "#!/bin/sh\n"
        f"for i in $(seq 1 {tries}); do\n"
        f"  {VENV}/bin/python -c '{get}' {url} 2>/dev/null && exit 0\n"
        "  sleep 1\n"
        "done\n"
        f'echo "hapair: the web app does not answer {url}" >&2\n'
        "exit 1\n"
    )


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
