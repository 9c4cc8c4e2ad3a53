"""On an LB instance: bring its secrets and its HAProxy configuration in line with the cluster.

Run by ``hapair-sync.service`` at boot (before HAProxy and the agent) and every minute by
``hapair-sync.timer``, with the LB role's credentials:

1. **Secrets** from SSM Parameter Store, this cluster's path only (the role allows nothing
   else): the cluster key (a new key is installed with the old one kept for an overlap:
   :func:`hapair.agent.keyring.write_rotation`), the admin token, the stats password.
2. **The desired document** ``desired/<node>.json`` from the cluster's bucket, which ``up``
   writes: haproxy.cfg for the current web fleet, with a placeholder where the stats password
   goes. The LB fills it in, checks the result with ``haproxy -c`` and reloads HAProxy when it
   changed (a reload hands the listening sockets over; connections in flight finish on the
   old process). So the LBs follow the fleet within a minute of ``up``.

   An LB whose ``node.json`` names a ``desired_parameter`` (``up`` writes it since the
   desired document moved to SSM) skips this step: its follower owns haproxy.cfg
   (:mod:`~hapair.platforms.aws.follower`), and the sync writes the stats password to
   ``stats_password_file`` (0600) for it instead.

Nothing secret is ever in user data or in the bucket. :func:`sync_once` is the logic (tested
against moto); :func:`main` adds the service actions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3

from hapair.agent.keyring import OVERLAP_S, write_rotation
from hapair.fileio import write_atomic

logger = logging.getLogger(__name__)

#: Where the stats password goes in a desired haproxy.cfg (filled in on the LB).
STATS_PASSWORD_PLACEHOLDER = "@@HAPAIR_STATS_PASSWORD@@"
SECRETS = ("cluster-key", "admin-token", "stats-password")


@dataclass(frozen=True)
class NodeConfig:
    """What an LB's sync needs to know (``/etc/hapair/node.json``, written by cloud-init).

    :ivar region: the cluster's region.
    :ivar bucket: the cluster's bucket.
    :ivar desired_key: this LB's desired document in the bucket.
    :ivar secrets_path: the cluster's SSM path (``/hapair/<cluster>``).
    :ivar desired_parameter: the desired document's SSM parameter; empty: the bucket's
        ``desired_key`` (LBs made before the document moved to SSM).
    :ivar stats_password_file: where the stats password goes for the follower.
    """

    cluster: str
    node: str
    region: str
    bucket: str
    desired_key: str
    secrets_path: str
    key_file: str = "/etc/hapair/cluster.key"
    token_file: str = "/etc/hapair/admin.token"
    haproxy_cfg: str = "/etc/haproxy/haproxy.cfg"
    overlap_s: float = OVERLAP_S
    desired_parameter: str = ""
    stats_password_file: str = "/etc/hapair/stats.password"

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        """Read ``node.json``."""
        return cls(**json.loads(path.read_text()))

    def dumps(self) -> str:
        """As ``node.json``."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class SyncResult:
    """What one sync changed.

    :ivar key: the cluster key changed (not counting the first one).
    :ivar token: the admin token changed (not counting the first one).
    :ivar haproxy: haproxy.cfg changed.
    :ivar generation: the desired document's generation now applied.
    :ivar backends: how many web servers it lists.
    """

    key: bool
    token: bool
    haproxy: bool
    generation: str
    backends: int


def desired_document(
    cluster: str, node: str, haproxy_cfg: str, backends: list[tuple[str, str]]
) -> bytes:
    """The desired document of LB ``node`` as ``up`` writes it (``haproxy_cfg`` carries
    :data:`STATS_PASSWORD_PLACEHOLDER`)."""
    doc = {
        "cluster": cluster,
        "node": node,
        "generation": hashlib.sha256(haproxy_cfg.encode()).hexdigest()[:16],
        "backends": [{"name": n, "address": a} for n, a in backends],
        "haproxy_cfg": haproxy_cfg,
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def check_haproxy(text: str) -> None:
    """``haproxy -c`` on ``text``.

    :raises RuntimeError: HAProxy refuses it.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=True) as f:
        f.write(text)
        f.flush()
        proc = subprocess.run(["haproxy", "-c", "-f", f.name], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"haproxy -c refused the desired config: {proc.stderr.strip()}")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def sync_once(
    cfg: NodeConfig,
    ssm: Any,
    s3: Any,
    *,
    now: float | None = None,
    check: Callable[[str], None] = check_haproxy,
) -> SyncResult:
    """Fetch the secrets and the desired document once and install what changed.

    :raises RuntimeError: a secret is missing, or HAProxy refuses the new config (the old
        one stays).
    """
    names = [f"{cfg.secrets_path}/{s}" for s in SECRETS]
    res = ssm.get_parameters(Names=names, WithDecryption=True)
    values = {p["Name"].rsplit("/", 1)[1]: p["Value"] for p in res.get("Parameters", [])}
    missing = [s for s in SECRETS if s not in values]
    if missing:
        raise RuntimeError(f"missing secrets in {cfg.secrets_path}: {', '.join(missing)}")
    key_file, token_file = Path(cfg.key_file), Path(cfg.token_file)
    had_key = key_file.exists()
    key_changed = write_rotation(
        key_file, values["cluster-key"], time.time() if now is None else now, cfg.overlap_s
    )
    old_token = _read(token_file)
    token = values["admin-token"].strip() + "\n"
    if old_token != token:
        write_atomic(token_file, token, mode=0o600)
    if cfg.desired_parameter:
        password_file = Path(cfg.stats_password_file)
        password = values["stats-password"].strip() + "\n"
        if _read(password_file) != password:
            write_atomic(password_file, password, mode=0o600)
        return SyncResult(
            key=key_changed and had_key,
            token=old_token is not None and old_token != token,
            haproxy=False,
            generation=cfg.desired_parameter,
            backends=0,
        )
    body = s3.get_object(Bucket=cfg.bucket, Key=cfg.desired_key)["Body"].read()
    doc = json.loads(body)
    text = str(doc["haproxy_cfg"]).replace(STATS_PASSWORD_PLACEHOLDER, values["stats-password"])
    target = Path(cfg.haproxy_cfg)
    changed = _read(target) != text
    if changed:
        check(text)
        write_atomic(target, text, mode=0o600)
    return SyncResult(
        key=key_changed and had_key,
        token=old_token is not None and old_token != token,
        haproxy=changed,
        generation=str(doc.get("generation", "")),
        backends=len(doc.get("backends", [])),
    )


def service_actions(result: SyncResult, *, boot: bool = False) -> list[list[str]]:
    """The systemctl calls a sync result asks for. HAProxy reloads on a new config, except at
    ``boot``: there HAProxy has not started yet and the user data starts it once, after the
    sync and the follower wrote its configuration. A new
    cluster key needs nothing: the agent checks its key files every few seconds and keeps
    accepting the old key for the overlap (no restart, no failover). The agent reads its admin
    token at start, so a new token restarts it (the peer keeps its VIPs meanwhile: a silent
    peer whose HAProxy serves is alive)."""
    out = []
    if result.haproxy and not boot:
        out.append(["systemctl", "reload-or-restart", "haproxy.service"])
    if result.token:
        out.append(["systemctl", "try-restart", "hapair-agent.service"])
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m hapair.platforms.aws.nodesync [--config /etc/hapair/node.json] [--boot]``."""
    parser = argparse.ArgumentParser(description="hapair: an LB's secrets and haproxy.cfg")
    parser.add_argument("--config", type=Path, default=Path("/etc/hapair/node.json"))
    parser.add_argument(
        "--boot", action="store_true", help="write files only: HAProxy is started after"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = NodeConfig.load(args.config)
    session = boto3.session.Session(region_name=cfg.region)
    try:
        result = sync_once(cfg, session.client("ssm"), session.client("s3"))
    except Exception as exc:  # one line for the journal; the timer runs again in a minute
        logger.error("hapair sync of %s failed: %s", cfg.node, exc)
        return 1
    logger.info(
        "hapair sync of %s: desired generation %s (%d backends)%s",
        cfg.node,
        result.generation,
        result.backends,
        "; haproxy.cfg changed" if result.haproxy else "",
    )
    for action in service_actions(result, boot=args.boot):
        logger.info("running %s", " ".join(action))
        subprocess.run(action, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
