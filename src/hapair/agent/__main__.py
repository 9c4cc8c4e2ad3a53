"""``python -m hapair.agent --config FILE``: run the HA agent."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hapair.errors import HapairError


def main() -> None:
    """Parse ``--config`` and run the agent."""
    parser = argparse.ArgumentParser(prog="hapair-agent", description="hapair HA agent")
    parser.add_argument("--config", "-c", required=True, type=Path)
    args = parser.parse_args()
    from hapair.agent.daemon import run_agent
    from hapair.agent.nconfig import is_etcd_config

    try:
        if is_etcd_config(args.config):  # issue 13: N LBs, ownership agreed through etcd
            from hapair.agent.ndaemon import run_node_agent

            sys.exit(run_node_agent(args.config))
        sys.exit(run_agent(args.config))
    except HapairError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
