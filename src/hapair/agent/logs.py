"""Agent logging: text lines or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonLines(logging.Formatter):
    """One JSON object per record: ts, level, node, logger, msg."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "node": self.node,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def setup_logging(fmt: str, node: str, level: int = logging.INFO) -> None:
    """Configure the root logger for the agent."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLines(node))
    else:
        f = logging.Formatter(
            f"%(asctime)s.%(msecs)03d {node} %(levelname)s %(message)s", "%H:%M:%S"
        )
        f.converter = time.localtime
        handler.setFormatter(f)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
