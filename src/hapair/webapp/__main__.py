"""``python -m hapair.webapp --node NAME --address ADDR``: run the demo web app."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from hapair.errors import HapairError
from hapair.webapp.server import WebConfig, serve

logger = logging.getLogger("hapair.webapp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    :param argv: the arguments (``sys.argv[1:]`` when ``None``).
    :returns: the parsed arguments.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hapair.webapp", description="hapair demo web app (one per web node)"
    )
    parser.add_argument("--node", required=True, help="this web node's name, e.g. web1")
    parser.add_argument("--address", required=True, help="this web node's address")
    parser.add_argument("--bind", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=80, help="listen port (default 80)")
    parser.add_argument("--log", type=Path, help="also append log lines to this file")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="close connections idle for this many seconds (default 30)",
    )
    return parser.parse_args(argv)


def setup_logging(node: str, log: Path | None) -> None:
    """Log lines go to stderr, and also to ``log`` when given."""
    fmt = logging.Formatter(f"%(asctime)s {node} %(levelname)s %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log is not None:
        handlers.append(logging.FileHandler(log))
    for handler in handlers:
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the web app until SIGTERM or SIGINT.

    :returns: the exit status: 0 after a signal, 2 for a bad argument, 1 when it cannot listen.
    """
    args = parse_args(argv)
    config = WebConfig(
        node=args.node,
        address=args.address,
        bind=args.bind,
        port=args.port,
        idle_timeout=args.idle_timeout,
    )
    try:
        config.validate()
        setup_logging(config.node, args.log)
    except HapairError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: --log: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", config.bind, config.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
