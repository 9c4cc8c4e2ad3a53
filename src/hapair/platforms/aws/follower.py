"""On an AWS LB: follow the cluster's desired document in SSM Parameter Store.

``hapair-desired.service`` runs ``python -m hapair.platforms.aws.follower`` with the LB role's
credentials (which may ``ssm:GetParameter`` on ``/hapair/<cluster>/desired`` and nothing
else of SSM's but the secrets). Every 10-30 s (jittered; doubled per throttled or failed call,
up to 5 minutes) it reads the parameter. A version it has already applied costs nothing more.
A new one is decoded and validated (:mod:`hapair.day2.desired`), haproxy.cfg is rendered from
it for this LB and checked with ``haproxy -c``; then :func:`hapair.day2.follow.decide` says how
to apply it: runtime-API steps when only the server list changed, else a seamless reload that
keeps servers' state (:mod:`hapair.day2.runtime_apply`); changed agent timings rewrite
agent.toml and SIGHUP the agent. Any error keeps the running configuration: the version is
counted as rejected, logged once, and not tried again until a newer one appears.

The stats password is not in the document: the node sync writes it to ``stats_password_file``
(0600) from SSM, and a new one re-renders haproxy.cfg (a reload).

Day-2 operations the document carries besides the configuration:

- **a certificate** (``cert``: a version of the SecureString ``/hapair/<cluster>/cert`` and its
  SHA-256): when it is not the PEM in ``cert_file``, the follower fetches exactly that version
  (``ssm:GetParameters``, the secrets' grant), checks the digest and that key and certificate
  match, and puts it live: through HAProxy's runtime API when HAProxy serves that file already
  (``set ssl cert`` + ``commit ssl cert``, ``abort ssl cert`` on a refusal: no reload), then
  writes the file atomically (0600) so a later reload or restart serves the same. When HAProxy
  does not serve it yet (the boot, HTTPS switched on by this very version) the file is written
  first and the reload or start loads it. A certificate that does not check refuses the version
  and changes nothing (:mod:`.certs`);
- **a restart generation** per LB (``restart``): a new one for this LB restarts its HAProxy and
  agent with its EIPs on the peer meanwhile (:mod:`.lbrestart`), once: the generation done is
  kept in ``state_file`` (a fresh LB takes the current one as done);
- after each version applied or refused, an **acknowledgement** on its own instance
  (:mod:`.acks`); while servers it drains still have sessions it says how many, looks again
  every 2 s, and says when they are done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hapair import haproxy_runtime as rt
from hapair.day2.desired import DesiredDoc, DocumentError, decode
from hapair.day2.follow import FollowPlan, Schedule, decide, next_delay
from hapair.day2.pem import digest
from hapair.day2.runtime_apply import BACKEND, cookie_key, reload_keeping_state, run_steps
from hapair.errors import OperationError
from hapair.fileio import write_atomic
from hapair.haproxy_stats import command as stats_command
from hapair.platforms.aws import certs, userdata
from hapair.platforms.aws.acks import Ack, Acknowledger, TagAcknowledger
from hapair.platforms.aws.client import THROTTLING
from hapair.platforms.aws.lbrestart import LbRestart, RestartConfig, refusal
from hapair.platforms.aws.webwatch import WebWatch, without
from hapair.render.haproxy import check_haproxy, render_haproxy_settings

logger = logging.getLogger(__name__)

#: Where the follower keeps the restart generation it carried out (survives its restarts).
STATE_FILE = "/var/lib/hapair/follower.json"
#: Seconds between polls while servers this LB drains still have sessions.
DRAIN_POLL_S = 2.0
#: How long it keeps looking at a drain that does not end (cookie-pinned clients may keep one).
DRAIN_WATCH_S = 600.0


@dataclass(frozen=True)
class FollowerConfig:
    """Where the follower reads and writes (the defaults are the AWS LB's paths).

    :ivar parameter: the desired document's parameter (``/hapair/<cluster>/desired``).
    :ivar reload_command: a seamless master-worker reload (starts HAProxy when it is down).
    :ivar agent_reload_command: makes the agent re-read agent.toml (SIGHUP).
    :ivar state_file: where the restart generation done is kept (JSON; empty: in memory only,
        as in tests; an LB's ``node.json`` gives :data:`STATE_FILE`).
    :ivar restart: the agent's socket, the admin token and the bounds of a restart (its
        ``stats_socket`` is this config's).
    """

    cluster: str
    node: str
    region: str
    parameter: str
    haproxy_cfg: str = userdata.HAPROXY_CFG
    stats_socket: str = userdata.STATS_SOCKET
    server_state_file: str = userdata.SERVER_STATE_FILE
    stats_password_file: str = userdata.STATS_PASSWORD_FILE
    cert_file: str = userdata.CERT_FILE
    agent_toml: str = userdata.AGENT_TOML
    reload_command: tuple[str, ...] = ("systemctl", "reload-or-restart", "haproxy.service")
    agent_reload_command: tuple[str, ...] = (
        "systemctl",
        "kill",
        "--signal=HUP",
        "hapair-agent.service",
    )
    schedule: Schedule = field(default_factory=Schedule)
    state_file: str = ""
    restart: RestartConfig = field(default_factory=RestartConfig)

    @property
    def cert_parameter(self) -> str:
        """The certificate's parameter, beside the document's (``/hapair/<cluster>/cert``)."""
        return f"{self.parameter.rsplit('/', 1)[0]}/{certs.NAME}"


BOOT_MARK_SUFFIX = ".boot-digest"
"""Beside haproxy.cfg, the boot run leaves the digest of what it wrote there: the follower's
first run as a service then knows HAProxy started with that exact file."""


def _boot_wrote(mark: Path, cfg: Path, digest: str) -> bool:
    """Whether the boot run wrote ``digest`` and haproxy.cfg still holds exactly that."""
    try:
        marked = mark.read_text().strip()
        current = hashlib.sha256(cfg.read_bytes()).hexdigest()
    except OSError:
        return False
    return marked == digest == current


def _run(argv: tuple[str, ...]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise OperationError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")


class Follower:
    """The follower's state between polls: what runs, at which version, and counters.

    :param ssm: an SSM client with the LB role's credentials.
    :param check: validates a rendered haproxy.cfg (default ``haproxy -c``).
    :param run: runs a command (the reloads); tests record them.
    :param watch: web instances terminated behind hapair's back, asked at each poll
        (:mod:`~.webwatch`); their servers are left out of what this LB serves.
    :param boot: HAProxy has not started yet (the boot's first run): write haproxy.cfg, touch
        neither HAProxy nor its runtime API (the user data starts HAProxy once, after).
    :param ack: where acknowledgements go (None: nowhere).
    :param sleep: the restart's waits (tests pass their own).
    """

    def __init__(
        self,
        cfg: FollowerConfig,
        ssm: Any,
        *,
        check: Callable[[str], None] = check_haproxy,
        run: Callable[[tuple[str, ...]], None] = _run,
        rng: random.Random | None = None,
        boot: bool = False,
        watch: WebWatch | None = None,
        ack: Acknowledger | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg, self.ssm, self.check, self.run = cfg, ssm, check, run
        self.boot, self.watch, self.ack, self.sleep = boot, watch, ack, sleep
        self.value = ""  # the running version's document, as fetched
        self.rng = rng or random.Random()
        self.running: DesiredDoc | None = None
        self.version = 0
        self.password: str | None = None
        self.rejected = 0  # the last version refused (not tried again)
        self.failures = 0  # consecutive throttled or failed calls
        self.counters: Counter[str] = Counter()
        self.pending: Ack | None = None  # the acknowledgement to write
        self.acked = ""  # the last one written
        self.draining: frozenset[str] = frozenset()  # drained servers whose sessions we watch
        self.drain_since = 0.0
        self.restarted: int | None = None  # the restart generation done (None: not known yet)

    def delay(self) -> float:
        """Seconds until the next poll (short while a drain is watched)."""
        if self.draining and not self.failures:
            return DRAIN_POLL_S
        return next_delay(self.cfg.schedule, self.failures, self.rng)

    def tick(self) -> str:
        """Poll once and apply a new version; returns what happened, as a sentence. Then
        writes the acknowledgement when it changed (a failed write is tried at the next tick)."""
        drained = self._watch_drain()
        if drained:
            logger.info("%s", drained)
        line = self._tick()
        self._flush_ack()
        return line

    def _tick(self) -> str:
        seen = self.watch.poll() if self.watch is not None else None
        if seen is not None:
            logger.info("%s", seen)
            assert self.watch is not None
            if self.running is not None and self.password is not None and self.watch.changed:
                try:
                    return f"{seen}: {self._apply(self.version, self.value, self.password)}"
                except (DocumentError, OperationError) as exc:
                    self.counters["rejected"] += 1
                    return f"{seen}: not applied: {exc}"
        try:
            res = self.ssm.get_parameter(Name=self.cfg.parameter)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            self.failures += 1
            kind = "throttled" if code in THROTTLING else "fetch_errors"
            self.counters[kind] += 1
            return f"{kind.replace('_', ' ')}: {code}; next poll backs off"
        except BotoCoreError as exc:
            self.failures += 1
            self.counters["fetch_errors"] += 1
            return f"fetch error: {exc}; next poll backs off"
        self.failures = 0
        p = res["Parameter"]
        version = int(p.get("Version", 0))
        password = self._password()
        if version == self.version and password == self.password:
            self.counters["unchanged"] += 1
            return f"version {version} unchanged"
        if version == self.rejected and password == self.password:
            self.counters["unchanged"] += 1
            return f"version {version} was rejected; keeping version {self.version}"
        try:
            return self._apply(version, str(p.get("Value", "")), password)
        except (DocumentError, OperationError) as exc:
            self.rejected = version
            self.counters["rejected"] += 1
            self.pending = Ack(version, refused=str(exc))
            logger.error(
                "desired version %d rejected, keeping version %d: %s", version, self.version, exc
            )
            return f"version {version} rejected: {exc}"

    def _password(self) -> str | None:
        try:
            return Path(self.cfg.stats_password_file).read_text().strip() or None
        except FileNotFoundError:
            return None

    def _apply(self, version: int, value: str, password: str | None) -> str:
        doc = decode(value, self.cfg.cluster)
        if self.watch is not None:
            doc = without(doc, self.watch.gone)
        if password is None:
            raise OperationError(
                f"no stats password in {self.cfg.stats_password_file} yet (the node sync writes it)"
            )
        restart = self._restart_due(doc)
        if restart:
            refused = refusal(
                self.cfg.node, LbRestart(self._restart_cfg(), self.cfg.node, self.run).status()
            )
            if refused is not None:
                self._save_restart(restart)  # asked once: a refusal is not tried again
                raise OperationError(refused)
        pem = self._new_cert(doc)
        plan = decide(self.running, doc)
        if self.running is not None and password != self.password:
            plan = replace(
                plan,
                reload=True,
                rewrite=True,
                steps=(),
                reasons=(*plan.reasons, "stats password changed"),
            )
        text = self.render(doc, password)
        done = [self._put_cert(pem)] if pem is not None else []
        if plan.rewrite:
            self.check(text)  # haproxy -c: a refusal keeps the running config
        done += self._haproxy(plan, doc, text, password)
        if plan.agent:
            done.append(self._agent(doc))
        self.running, self.version, self.password = doc, version, password
        self.value = value
        reason = plan.reason()
        if pem is not None:
            reason = f"{reason}; certificate {doc.cert.sha256[:16] if doc.cert else ''}"
        if restart:
            self._save_restart(restart)  # before it runs: a restart is carried out once
            done += self._restart()
            reason = f"{reason}; restart generation {restart}"
        self.counters["applied"] += 1
        self._start_drain(version, doc)
        line = f"version {version} applied ({doc.digest()}): {reason}"
        logger.info("%s%s", line, f"; {'; '.join(done)}" if done else "")
        return line

    # ------------------------------------------------------------ acknowledgements, drains
    def _flush_ack(self) -> None:
        if self.ack is None or self.pending is None or self.pending.value() == self.acked:
            return
        try:
            self.ack.put(self.pending)
        except OperationError as exc:
            self.counters["ack_errors"] += 1
            logger.warning("%s; tried again at the next poll", exc)
            return
        self.acked = self.pending.value()

    def _drain_sessions(self) -> int | None:
        """Sessions still open on the servers being drained (None: HAProxy did not say)."""
        try:
            now = rt.servers(self.cfg.stats_socket, BACKEND)
        except OperationError:
            return None
        return sum(now[n].sessions for n in self.draining if n in now)

    def _start_drain(self, version: int, doc: DesiredDoc) -> None:
        self.draining = frozenset(s.name for s in doc.servers if s.state == "drain")
        if self.boot:
            self.draining = frozenset()
        left = self._drain_sessions() if self.draining else 0
        if left == 0:
            self.draining = frozenset()
        self.drain_since = time.monotonic()
        # HAProxy did not say (None): count one, so nobody takes the drain for done.
        self.pending = Ack(version, draining=1 if left is None else left)

    def _watch_drain(self) -> str | None:
        """While servers this LB drains have sessions: look again; say when they are done."""
        if not self.draining:
            return None
        left = self._drain_sessions()
        if left != 0 and time.monotonic() - self.drain_since < DRAIN_WATCH_S:
            if left is not None:
                self.pending = Ack(self.version, draining=left)
            return None
        names = ", ".join(sorted(self.draining))
        self.draining = frozenset()
        if left != 0:
            return f"version {self.version}: {names} still have sessions; no longer watched"
        self.pending = Ack(self.version)
        return f"version {self.version}: no session left on {names}"

    # ------------------------------------------------------------ certificate
    def _new_cert(self, doc: DesiredDoc) -> str | None:
        """The document's certificate when it is not the one on disk (fetched and checked),
        else None.

        :raises OperationError: it cannot be fetched, or does not check.
        """
        if doc.cert is None:
            return None
        try:
            have = digest(Path(self.cfg.cert_file).read_text())
        except (OSError, UnicodeDecodeError):
            have = ""
        if have == doc.cert.sha256:
            return None
        return certs.fetch(self.ssm, self.cfg.cert_parameter, doc.cert)

    def _serves_cert(self) -> bool:
        """Whether the running HAProxy has ``cert_file`` loaded (``show ssl cert``)."""
        if self.boot:
            return False
        try:
            answer = stats_command(self.cfg.stats_socket, "show ssl cert", 5.0)
        except OperationError:
            return False
        return self.cfg.cert_file in (x.strip() for x in answer.splitlines())

    def _put_cert(self, pem: str) -> str:
        """Put ``pem`` live (runtime API when HAProxy serves the file) and on disk.

        :raises OperationError: HAProxy refused it (the transaction aborted, nothing changed).
        """
        path, sock = self.cfg.cert_file, self.cfg.stats_socket
        short = digest(pem)[:16]
        if not self._serves_cert():
            write_atomic(Path(path), pem, mode=0o600)
            return f"certificate {short} written to {path}; HAProxy loads it when it (re)starts"
        try:
            rt.call(sock, rt.set_ssl_cert(path, pem), "Transaction")
            rt.call(sock, rt.commit_ssl_cert(path), "Success")
        except OperationError as exc:
            with contextlib.suppress(OperationError):
                rt.call(sock, rt.abort_ssl_cert(path), "aborted")
            raise OperationError(f"HAProxy refused the certificate {short}: {exc}") from exc
        write_atomic(Path(path), pem, mode=0o600)
        return (
            f"certificate {short} live (set ssl cert, commit ssl cert; no reload), {path} written"
        )

    # ------------------------------------------------------------ restart
    def _restart_cfg(self) -> RestartConfig:
        return replace(self.cfg.restart, stats_socket=self.cfg.stats_socket)

    def _load_restart(self) -> int | None:
        if not self.cfg.state_file:
            return None
        try:
            data = json.loads(Path(self.cfg.state_file).read_text())
        except (OSError, ValueError):
            return None
        gen = data.get("restart") if isinstance(data, dict) else None
        return gen if isinstance(gen, int) else None

    def _save_restart(self, generation: int) -> None:
        self.restarted = generation
        if self.cfg.state_file:
            text = json.dumps({"restart": generation}) + "\n"
            write_atomic(Path(self.cfg.state_file), text, mode=0o600)

    def _restart_due(self, doc: DesiredDoc) -> int:
        """The generation to carry out now (0: none). The first document of a follower that
        finds no state (a fresh LB), or of the boot run, is taken as done: an LB that just
        started needs no restart."""
        gen = doc.restart_generation(self.cfg.node)
        if self.restarted is None:
            done = self._load_restart()
            if done is None or self.boot:
                self._save_restart(gen)
                return 0
            self.restarted = done
        return gen if gen > self.restarted else 0

    def _restart(self) -> list[str]:
        """:raises OperationError: a step failed or timed out (named)."""
        return LbRestart(self._restart_cfg(), self.cfg.node, self.run, sleep=self.sleep)()

    def render(self, doc: DesiredDoc, password: str) -> str:
        """This LB's haproxy.cfg for ``doc``."""
        c = self.cfg
        return render_haproxy_settings(
            doc.haproxy,
            node=c.node,
            cluster=c.cluster,
            web_port=doc.web_port,
            backends=[(s.name, s.address) for s in doc.servers],
            stats_socket=c.stats_socket,
            stats_password=password,
            cert_path=c.cert_file if doc.haproxy.https else None,
            server_state_file=c.server_state_file,
        )

    def _haproxy(self, plan: FollowPlan, doc: DesiredDoc, text: str, password: str) -> list[str]:
        c = self.cfg
        if not plan.rewrite:
            return []
        mark = Path(f"{c.haproxy_cfg}{BOOT_MARK_SUFFIX}")
        digest = hashlib.sha256(text.encode()).hexdigest()
        if self.boot:
            write_atomic(Path(c.haproxy_cfg), text, mode=0o600)
            write_atomic(mark, digest + "\n", mode=0o600)
            return ["haproxy.cfg written; HAProxy starts with it"]
        if self.running is None and _boot_wrote(mark, Path(c.haproxy_cfg), digest):
            # This process's first document is what the boot run wrote and HAProxy started
            # with: reloading would only load the same file a second time.
            mark.unlink(missing_ok=True)
            return ["haproxy.cfg as the boot run wrote it; HAProxy runs it already"]
        mark.unlink(missing_ok=True)
        done: list[str] = []
        reload = plan.reload
        if not reload:
            try:
                done += run_steps(c.stats_socket, doc, plan.steps, cookie_key(password))
            except OperationError as exc:  # RuntimeApiError included: a reload gets there
                self.counters["runtime_fallbacks"] += 1
                logger.warning("runtime API refused a step (%s): reloading instead", exc)
                reload = True
        write_atomic(Path(c.haproxy_cfg), text, mode=0o600)
        if reload:
            done.append(
                reload_keeping_state(
                    c.stats_socket,
                    Path(c.server_state_file),
                    lambda: self.run(c.reload_command),
                    doc,
                )
            )
        return done

    def _agent(self, doc: DesiredDoc) -> str:
        """Write the document's timings into agent.toml when they differ, and tell the agent
        (one that does not run reads them when it starts: not an error)."""
        from hapair.agent.config import dump_toml, load_agent_config

        path = Path(self.cfg.agent_toml)
        if not path.exists():
            return "no agent.toml: agent timings not applied"
        current = load_agent_config(path)
        if all(getattr(current, k) == v for k, v in doc.agent.items()):
            return "agent timings already in agent.toml"
        write_atomic(path, dump_toml(current.model_copy(update=dict(doc.agent))), mode=0o600)
        try:
            self.run(self.cfg.agent_reload_command)
        except OperationError as exc:
            logger.warning("agent.toml written but the agent was not told (%s)", exc)
            return "agent timings written; the agent reads them when it starts"
        return "agent timings written, agent told to reload (SIGHUP)"

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set (boto3 and the socket calls run in a worker thread)."""
        while not stop.is_set():
            line = await asyncio.to_thread(self.tick)
            if "unchanged" in line:
                logger.debug("%s", line)
            else:
                logger.info("%s", line)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.delay())


def config_from_node_json(path: Path) -> FollowerConfig:
    """The follower's configuration from the LB's ``node.json`` (the node sync's).

    :raises OperationError: ``node.json`` names no desired parameter (an older ``up``).
    """
    from hapair.platforms.aws.nodesync import NodeConfig

    node = NodeConfig.load(path)
    if not node.desired_parameter:
        raise OperationError(f"{path}: no desired_parameter; run `hapair up` to update the LBs")
    return FollowerConfig(
        cluster=node.cluster,
        node=node.node,
        region=node.region,
        parameter=node.desired_parameter,
        haproxy_cfg=node.haproxy_cfg,
        stats_password_file=node.stats_password_file,
        state_file=STATE_FILE,
        restart=RestartConfig(token_file=node.token_file),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m hapair.platforms.aws.follower [--config node.json] [--once]``."""
    import boto3
    from botocore.config import Config

    parser = argparse.ArgumentParser(description="hapair: follow the desired configuration")
    parser.add_argument("--config", type=Path, default=Path(userdata.NODE_JSON))
    parser.add_argument("--once", action="store_true", help="poll once, apply, exit")
    parser.add_argument(
        "--boot", action="store_true", help="with --once: write haproxy.cfg, reload nothing"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_node_json(args.config)
    # One attempt per poll: the follower's own schedule backs off on throttling.
    ssm = boto3.session.Session(region_name=cfg.region).client(
        "ssm", config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )
    # The web instances of the cluster, through the LB role (ec2:DescribeInstances only).
    ec2 = boto3.session.Session(region_name=cfg.region).client(
        "ec2", config=Config(retries={"total_max_attempts": 1, "mode": "standard"})
    )
    watch = WebWatch(ec2, cfg.cluster, schedule=cfg.schedule)
    # Its acknowledgements: the tag hapair:applied on its own instance (ec2:CreateTags).
    ack = TagAcknowledger(ec2, cfg.cluster, cfg.node)
    follower = Follower(cfg, ssm, boot=args.boot and args.once, watch=watch, ack=ack)
    if args.once:
        line = follower.tick()
        logger.info("%s", line)
        return 0 if follower.running is not None else 1

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await follower.run_forever(stop)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
