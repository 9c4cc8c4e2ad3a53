"""The aws fabric's EC2 API: a moto server on one address of the lab, with a call log.

Run inside the ``<c>-aws`` namespace by the lab (under its supervisor)::

    python -m hapair.platforms.lab.fabric.moto_main --host 198.18.0.250 --port 5000 \\
        --calls /run/hapair/<c>/fabric/calls.jsonl

Plain HTTP: the endpoint is reachable only inside the lab's namespaces (the address is in
198.18.0.0/15 and no lab namespace routes anywhere else), so TLS would protect nothing here.
Two things are taught to moto 5.2, as AWS behaves:

- ``AssociateAddress`` associates the ``PrivateIpAddress`` asked for (moto keeps the ENI's
  primary address; the agents put the peer's VIP on their secondary address, as the seed).
- with ``--latency-ms``, every address call (Describe-, Associate-, DisassociateAddress) is
  answered that much later, as EC2's round trips are (the wait is outside the lock: calls
  overlap as they would on the network);
- every ``AssociateAddress`` and ``DisassociateAddress`` is appended to the call log (one JSON
  object a line: wall time, operation, allocation, ENI, private address, the caller's address,
  whether the caller is an agent, and the allocations left unassociated right after it).
  moto keeps no log of its own; tests and benchmarks count the agents' remaps here.

moto keeps its state in memory: if this process dies, its supervisor restarts it empty, and
``hapair up`` (which finds the lab complete) does not seed it again; ``hapair down`` and ``up``
start afresh.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()


def _unassociated(backend: Any) -> list[str]:
    return sorted(a.allocation_id for a in backend.addresses if a.eni is None)


def _caller(response: Any) -> tuple[str, bool]:
    request = getattr(response, "normalized_request", None)
    environ = getattr(request, "environ", None) or {}
    remote = str(environ.get("REMOTE_ADDR", ""))
    agent = "hapair-agent" in str(response.headers.get("User-Agent", ""))
    return remote, agent


def install(calls: Path, latency_s: float = 0.0) -> None:
    """Patch moto's EC2 addresses: honour ``PrivateIpAddress``, log every association change
    to ``calls``, answer address calls ``latency_s`` later. Idempotent."""
    from moto.ec2.models.elastic_ip_addresses import ElasticAddress
    from moto.ec2.responses.elastic_ip_addresses import ElasticIPAddresses

    if getattr(ElasticIPAddresses, "_hapair_fabric", False):
        return
    associate = ElasticIPAddresses.associate_address
    disassociate = ElasticIPAddresses.disassociate_address
    describe = ElasticIPAddresses.describe_addresses

    def late() -> None:
        if latency_s > 0:
            time.sleep(latency_s)

    def describe_addresses(self: Any) -> Any:
        late()
        return describe(self)

    def log(entry: dict[str, Any]) -> None:
        with open(calls, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def associate_address(self: Any) -> Any:
        late()
        with _LOCK:
            result = associate(self)
            wanted = self._get_param("PrivateIpAddress")
            alloc = self._get_param("AllocationId")
            if alloc:
                for eip in self.ec2_backend.address_by_allocation([alloc]):
                    eip._hapair_private_ip = wanted
            remote, agent = _caller(self)
            log(
                {
                    "at": time.time(),
                    "op": "AssociateAddress",
                    "allocation": alloc,
                    "eni": self._get_param("NetworkInterfaceId"),
                    "ip": wanted,
                    "from": remote,
                    "agent": agent,
                    "unassociated": _unassociated(self.ec2_backend),
                }
            )
        return result

    def disassociate_address(self: Any) -> Any:
        late()
        with _LOCK:
            result = disassociate(self)
            remote, agent = _caller(self)
            log(
                {
                    "at": time.time(),
                    "op": "DisassociateAddress",
                    "association": self._get_param("AssociationId"),
                    "from": remote,
                    "agent": agent,
                    "unassociated": _unassociated(self.ec2_backend),
                }
            )
        return result

    def private_ip_address(self: Any) -> str | None:
        if not self.eni:
            return None
        found = getattr(self, "_hapair_private_ip", None) or self.eni.private_ip_address
        return str(found) if found else None

    ElasticIPAddresses.associate_address = associate_address  # type: ignore[method-assign]
    ElasticIPAddresses.disassociate_address = disassociate_address  # type: ignore[method-assign]
    ElasticIPAddresses.describe_addresses = describe_addresses  # type: ignore[method-assign]
    ElasticAddress.private_ip_address = property(private_ip_address)  # type: ignore[assignment,method-assign]
    ElasticIPAddresses._hapair_fabric = True  # type: ignore[attr-defined]


def read_calls(calls: Path) -> list[dict[str, Any]]:
    """The call log's entries, oldest first (an empty list when there is none yet)."""
    try:
        lines = calls.read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def main(argv: list[str] | None = None) -> int:
    """Serve moto on ``--host``:``--port`` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--calls", type=Path, required=True)
    parser.add_argument("--latency-ms", type=int, default=0, help="added to address calls")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    install(args.calls, max(0, args.latency_ms) / 1000)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    logging.info("moto EC2 API on http://%s:%d, call log %s", args.host, args.port, args.calls)
    while not stop.wait(3600):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
