"""Lab fixtures: real namespaces, HAProxy, nftables and dnsmasq (root)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hapair.plan import Plan, make_plan
from hapair.platforms.lab.platform import LabPlatform
from hapair.spec import Spec, parse

HAPAIR = str(Path(sys.executable).parent / "hapair")


def lab_name() -> str:
    """A unique lab name (hp + 6 hex): `make clean-lab` sweeps leftovers."""
    return "hp" + secrets.token_hex(3)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (CI runs as root): run `sudo make test`")


class Lab:
    """A running lab and helpers to poke at it."""

    def __init__(self, plan: Plan, platform: LabPlatform) -> None:
        self.plan = plan
        self.platform = platform
        self.name = plan.name

    def ns(self, node: str) -> str:
        return self.plan.node(node).namespace

    def run(
        self, node: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(node), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HAPAIR, *args], capture_output=True, text=True, timeout=timeout)

    def get(
        self, url: str, host: str | None = None, extra: list[str] | None = None, timeout: float = 3
    ) -> tuple[int, dict[str, str], str]:
        """GET from the client host; returns (curl exit code, headers, body)."""
        argv = ["curl", "-sS", "-i", "--max-time", str(timeout)]
        argv += ["-H", f"Host: {host or self.plan.spec.cluster.domain}"]
        proc = self.run("inet", [*argv, *(extra or []), url], timeout=timeout + 5)
        if proc.returncode != 0:
            return proc.returncode, {}, proc.stderr
        head, _, body = proc.stdout.replace("\r\n", "\n").partition("\n\n")
        headers = {}
        for line in head.splitlines()[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        headers[":status"] = head.split()[1] if head else ""
        return 0, headers, body

    def vip(self, i: int) -> str:
        return self.plan.vips[i - 1].address

    def owners(self) -> dict[str, list[str]]:
        return self.platform.vip_owners(self.plan)

    def wait_for(
        self, what: str, pred: Callable[[], bool], timeout: float, step: float = 0.1
    ) -> float:
        """Wait until ``pred()``; returns seconds waited; fails the test with ``what``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return time.monotonic() - t0
            time.sleep(step)
        pytest.fail(f"timed out after {timeout} s waiting for {what}; owners={self.owners()}")


def start_lab(spec: Spec, engine: str = "hapair") -> Lab:
    require_root()
    plan = make_plan(spec)
    platform = LabPlatform(engine)  # type: ignore[arg-type]
    try:
        platform.up(plan)
    except BaseException:
        platform.down(plan.name)
        raise
    return Lab(plan, platform)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A default lab (3 web nodes, agents on both LBs) for one test module."""
    lab = start_lab(parse({"cluster": {"name": lab_name()}}))
    try:
        yield lab
    finally:
        lab.platform.down(lab.name)
