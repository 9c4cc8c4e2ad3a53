"""The lab's state directory: one per cluster, written atomically; secrets kept 0600."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from hapair.fileio import write_atomic

DEFAULT_ROOT = Path("/run/hapair")


def root_dir() -> Path:
    """Where every lab keeps its state (``HAPAIR_STATE_DIR`` overrides ``/run/hapair``)."""
    return Path(os.environ.get("HAPAIR_STATE_DIR", str(DEFAULT_ROOT)))


def cluster_dir(name: str) -> Path:
    """The state directory of cluster ``name``."""
    return root_dir() / name


def ensure_secret(path: Path, nbytes: int = 32) -> str:
    """Read a secret, creating it (random, hex, mode 0600) when missing."""
    if path.exists():
        os.chmod(path, 0o600)
        return path.read_text().strip()
    value = secrets.token_hex(nbytes)
    write_atomic(path, value + "\n", mode=0o600)
    return value


def load_state(name: str) -> dict[str, Any] | None:
    """The lab's state file, or None when there is none."""
    path = cluster_dir(name) / "state.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return data


def save_state(name: str, state: dict[str, Any]) -> None:
    """Write the lab's state file atomically."""
    write_atomic(cluster_dir(name) / "state.json", json.dumps(state, indent=2, sort_keys=True))
