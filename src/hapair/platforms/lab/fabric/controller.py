"""The aws fabric's controller: the igw follows what the EC2 API says about each EIP.

Run inside the igw's namespace by the lab (under its supervisor)::

    python -m hapair.platforms.lab.fabric.controller --config <state>/fabric/aws.json \\
        --applied <state>/fabric/applied.json --delay-ms 5000 --poll-ms 50

Every ``--poll-ms`` it reads ``DescribeAddresses`` for the cluster's EIPs (one call for all)
from the lab's moto endpoint, and each association change it sees reaches the igw's DNAT/SNAT
maps ``--delay-ms`` later (:class:`~hapair.platforms.lab.fabric.edge.Propagation`), as EC2's
remap does. When an EIP's target changes, the igw also forgets the connections to it it was
translating (their next packets go to the new target, which resets them: on AWS a remap breaks
the connections of the EIP's clients too). What is applied is written to ``--applied`` (JSON,
atomically) on every change and about once a second; the lab reads owners from it.

A failed read changes nothing (the data plane keeps its last state) and is logged once per
error kind every 10 s. SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapair.fileio import write_atomic
from hapair.platforms.lab.fabric.edge import Propagation, Target, maps_script, table_script

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

logger = logging.getLogger("hapair.fabric")

#: How often a failed read of the same kind is logged at most, seconds.
ERROR_LOG_EVERY_S = 10.0
#: How often the applied state is written even when nothing changed, seconds (liveness).
HEARTBEAT_S = 1.0


def ec2_client(endpoint: str, region: str) -> EC2Client:
    """A boto3 EC2 client for the fabric's endpoint: short timeouts, no retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=1,
        read_timeout=2,
        user_agent_extra="hapair-fabric",
    )
    client: EC2Client = boto3.session.Session().client(
        "ec2", region_name=region, endpoint_url=endpoint, config=config
    )
    return client


def read_targets(client: EC2Client, eips: dict[str, str]) -> dict[str, Target]:
    """Each EIP's private address now (None: associated with nothing), by public address.

    :param eips: allocation id -> public address.
    """
    res = client.describe_addresses(AllocationIds=sorted(eips))
    out: dict[str, Target] = {address: None for address in eips.values()}
    for a in res.get("Addresses", []):
        address = eips.get(a.get("AllocationId", ""))
        if address is not None:
            out[address] = a.get("PrivateIpAddress") if a.get("NetworkInterfaceId") else None
    return out


def nft(script: str) -> None:
    """Apply an ``nft -f`` script in this namespace.

    :raises RuntimeError: nft refused it (its message).
    """
    proc = subprocess.run(
        ["nft", "-f", "-"], input=script, text=True, capture_output=True, timeout=10
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nft: {proc.stderr.strip()}")


def forget_connections(addresses: list[str]) -> int:
    """Delete this namespace's conntrack entries of connections to ``addresses``; returns how
    many. Best effort: an error is logged, not raised. Runs in a thread of its own (the igw's
    table holds every recent connection of the clients: a dump takes up to about a second)."""
    try:
        from pyroute2 import Conntrack  # imported at start (main): it takes ~0.5 s

        n = 0
        ct = Conntrack()
        try:
            for entry in list(ct.dump_entries()):
                if entry.tuple_orig.daddr in addresses:
                    try:
                        ct.delete(entry)
                    except Exception:  # gone meanwhile (it timed out, or another sweep)
                        continue
                    n += 1
        finally:
            ct.close()
        logger.info("forgot %d connections to %s", n, ", ".join(addresses))
        return n
    except Exception as exc:  # netlink errors of any kind: best effort
        logger.warning("could not forget connections to %s: %s", ", ".join(addresses), exc)
        return 0


class FabricController:
    """The loop: read, propagate, apply. See the module docstring."""

    def __init__(self, cfg: dict[str, Any], applied_path: Path, delay_s: float, poll_s: float):
        self.eips: dict[str, str] = {
            str(e["allocation"]): str(e["address"]) for e in cfg["eips"].values()
        }
        self.names = {str(e["address"]): name for name, e in cfg["eips"].items()}
        self.cfg = cfg
        self.applied_path = applied_path
        self.poll_s = poll_s
        self.prop = Propagation(delay_s)
        self.counts = {"polls": 0, "errors": 0, "changes_seen": 0, "changes_applied": 0}
        self.last_error = ""
        #: when the API last showed a change, per EIP (monotonic)
        self.seen_at: dict[str, float] = {}
        self._logged: dict[str, float] = {}
        self._written = 0.0
        self.stop = threading.Event()

    def _label(self, address: str) -> str:
        return f"{self.names.get(address, '?')} {address}"

    def write(self) -> None:
        """Write the applied state (atomically)."""
        doc = {
            "at": time.time(),
            "delay_ms": round(self.prop.delay_s * 1000),
            "poll_ms": round(self.poll_s * 1000),
            "applied": self.prop.applied,
            "seen": self.prop.seen,
            "pending": len(self.prop.pending),
            **self.counts,
            "last_error": self.last_error,
        }
        write_atomic(self.applied_path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        self._written = time.monotonic()

    def _failed(self, exc: Exception) -> None:
        self.counts["errors"] += 1
        kind = type(exc).__name__
        self.last_error = f"{kind}: {exc}"
        now = time.monotonic()
        if now - self._logged.get(kind, float("-inf")) >= ERROR_LOG_EVERY_S:
            self._logged[kind] = now
            logger.warning("DescribeAddresses failed (%s); the igw keeps its last state", exc)

    def step(self, client: EC2Client) -> None:
        """One round: read the API, note its changes, apply those that are due."""
        now = time.monotonic()
        try:
            reading = read_targets(client, self.eips)
        except Exception as exc:  # botocore raises many kinds: all mean "no reading"
            self._failed(exc)
        else:
            self.counts["polls"] += 1
            first = not self.prop.seen
            for address in self.prop.observe(now, reading):
                if first:
                    continue
                self.seen_at[address] = now
                self.counts["changes_seen"] += 1
                logger.info(
                    "%s: the API says %s now; the igw follows in %.0f ms",
                    self._label(address),
                    reading[address] or "associated with nothing",
                    self.prop.delay_s * 1000,
                )
            if first:
                self.apply(list(reading), initial=True)
        due = self.prop.due(time.monotonic())
        if due:
            self.apply(list(due))
        elif time.monotonic() - self._written >= HEARTBEAT_S:
            self.write()

    def apply(self, addresses: list[str], initial: bool = False) -> None:
        """Set the igw's maps to what is applied now; forget connections to moved EIPs."""
        nft(maps_script(self.prop.applied))
        if not initial:
            self.counts["changes_applied"] += len(addresses)
            now = time.monotonic()
            self.write()  # first: readers of the file see what the igw does now
            for address in addresses:
                logger.info(
                    "%s -> %s: igw updated %.0f ms after the API showed it",
                    self._label(address),
                    self.prop.applied[address] or "dropped (associated with nothing)",
                    (now - self.seen_at.get(address, now)) * 1000,
                )
            # A dump of the igw's conntrack table takes a while under load: not in the loop.
            threading.Thread(
                target=forget_connections, args=(addresses,), name="forget", daemon=True
            ).start()
        else:
            logger.info("igw starts with %s", json.dumps(self.prop.applied, sort_keys=True))
            self.write()

    def run(self) -> None:
        """Until :attr:`stop` is set: read every ``poll_s``, sooner when a change is due."""
        nft(table_script(sorted(self.eips.values()), self.cfg["inet_if"], {}))
        client = ec2_client(self.cfg["endpoint"], self.cfg["region"])
        while not self.stop.is_set():
            started = time.monotonic()
            self.step(client)
            wake = started + self.poll_s
            due = self.prop.next_due()
            if due is not None:
                wake = min(wake, due)
            self.stop.wait(max(0.0, wake - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    """Run the controller until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--applied", type=Path, required=True)
    parser.add_argument("--delay-ms", type=int, required=True)
    parser.add_argument("--poll-ms", type=int, default=50)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    cfg = json.loads(args.config.read_text())
    import pyroute2  # noqa: F401 - now, not at the first remap (its import takes ~0.5 s)

    ctl = FabricController(cfg, args.applied, args.delay_ms / 1000, max(10, args.poll_ms) / 1000)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ctl.stop.set())
    logger.info(
        "fabric controller: %s every %d ms, propagation %d ms",
        cfg["endpoint"],
        args.poll_ms,
        args.delay_ms,
    )
    ctl.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
