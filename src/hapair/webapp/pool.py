"""Many web nodes' demo web apps in one process: ``python -m hapair.webapp.pool --config FILE
--status FILE``.

The lab's web nodes are network namespaces; each used to run its own Python process (≈22 MiB
RSS each). The pool opens one listening socket *inside* each web node's namespace
(:func:`hapair.netns.call_in`: ``setns`` from a helper thread) and serves them all from one
asyncio loop, one :class:`~hapair.webapp.server.WebServer` (page, counter, connections) per node,
so each page still says which web node served it. A client cannot tell the difference: the
socket lives in the node's namespace, behind its address and its nftables rules.

The lab drives it with two files. ``--config`` (JSON, :class:`PoolConfig`) lists the nodes to
serve and a ``generation``; on SIGHUP the pool reads it again and converges: it stops serving
the nodes no longer listed (closing their listeners and connections, as a dead machine would)
and starts the new ones. After each pass it writes ``--status`` (JSON, atomically): its pid, the
generation it applied, and for each node ``""`` (serving) or why it cannot. SIGTERM or SIGINT
stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from hapair.errors import UsageError
from hapair.fileio import write_atomic
from hapair.netns import call_in, listen_tcp
from hapair.webapp.server import WebConfig, WebServer

logger = logging.getLogger("hapair.webapp.pool")


class PoolNode(NamedTuple):
    """One web node the pool serves: its name (on the page), namespace and address."""

    name: str
    namespace: str
    address: str


@dataclass(frozen=True)
class PoolConfig:
    """What the pool serves; ``generation`` grows with each new version the lab writes."""

    generation: int
    port: int
    nodes: tuple[PoolNode, ...]

    def to_json(self) -> str:
        """As written to ``--config``."""
        return json.dumps(
            {
                "generation": self.generation,
                "port": self.port,
                "nodes": [list(n) for n in self.nodes],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> PoolConfig:
        """Parse ``--config``.

        :raises UsageError: not a pool configuration.
        """
        try:
            data: Any = json.loads(text)
            nodes = tuple(PoolNode(str(a), str(b), str(c)) for a, b, c in data["nodes"])
            config = cls(int(data["generation"]), int(data["port"]), nodes)
        except (ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"not a web pool configuration: {exc!r}") from exc
        for n in nodes:
            WebConfig(node=n.name, address=n.address, port=config.port).validate()
        return config


class Pool:
    """The web servers of one process, converged on a :class:`PoolConfig`."""

    def __init__(self, status_path: Path) -> None:
        self.status_path = status_path
        self.servers: dict[PoolNode, WebServer] = {}
        self.errors: dict[str, str] = {}
        self.generation = 0

    async def apply(self, config: PoolConfig) -> None:
        """Serve exactly ``config.nodes``, then write the status file."""
        want = set(config.nodes)
        gone = [n for n in self.servers if n not in want]
        await asyncio.gather(*(self.servers.pop(n).stop() for n in gone))
        new = [n for n in config.nodes if n not in self.servers]
        by_ns = {n.namespace: n for n in new}
        port = config.port
        opened = await asyncio.to_thread(call_in, list(by_ns), lambda _ns: listen_tcp(port))
        self.errors = {}
        for ns, result in opened.items():
            node = by_ns[ns]
            if isinstance(result, socket.socket):
                server = WebServer(WebConfig(node.name, node.address, port=port), sock=result)
                await server.start()
                self.servers[node] = server
            else:
                self.errors[node.name] = str(result)
                logger.error("%s: cannot listen in %s: %s", node.name, ns, result)
        self.generation = config.generation
        if gone or new:
            logger.info(
                "generation %d: serving %d web nodes (%d started, %d stopped)",
                config.generation,
                len(self.servers),
                len(new) - len(self.errors),
                len(gone),
            )
        self.write_status()

    def write_status(self, error: str = "") -> None:
        """Tell the lab what is served now (``error``: the last configuration was refused)."""
        nodes = {n.name: "" for n in self.servers} | self.errors
        doc = {"pid": os.getpid(), "generation": self.generation, "nodes": nodes, "error": error}
        write_atomic(self.status_path, json.dumps(doc, indent=1, sort_keys=True))

    async def close(self) -> None:
        """Stop serving every node."""
        await asyncio.gather(*(s.stop() for s in self.servers.values()))
        self.servers.clear()


async def run_pool(config_path: Path, status_path: Path) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP reads ``config_path`` again."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    pool = Pool(status_path)
    reload.set()
    try:
        while not stop.is_set():
            if reload.is_set():
                reload.clear()
                try:
                    config = PoolConfig.from_json(config_path.read_text())
                except (OSError, UsageError) as exc:
                    logger.error("configuration refused, serving on as before: %s", exc)
                    pool.write_status(str(exc))
                else:
                    await pool.apply(config)
            waiters = [asyncio.ensure_future(e.wait()) for e in (stop, reload)]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    """Run the pool; returns the exit status (0 after a signal)."""
    parser = argparse.ArgumentParser(
        prog="python -m hapair.webapp.pool",
        description="the demo web app of many lab web nodes in one process",
    )
    parser.add_argument("--config", type=Path, required=True, help="nodes to serve (JSON)")
    parser.add_argument("--status", type=Path, required=True, help="where to report (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s webpool %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(run_pool(args.config, args.status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
