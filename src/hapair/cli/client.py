"""``hapair curl``: a request from the client host, through the DNS name or one VIP."""

from __future__ import annotations

import random

from hapair.errors import OperationError, UsageError
from hapair.plan import Plan
from hapair.platforms.lab.platform import client_run, curl_argv


def resolve(plan: Plan) -> list[str]:
    """The cluster's name as the client resolves it through the lab's DNS server."""
    proc = client_run(plan, ["getent", "ahostsv4", plan.spec.cluster.domain], timeout=10)
    addrs: list[str] = []
    for line in proc.stdout.splitlines():
        a = line.split()[0]
        if a not in addrs:
            addrs.append(a)
    if not addrs:
        raise OperationError(f"{plan.spec.cluster.domain} does not resolve on the client host")
    return addrs


def curl_once(plan: Plan, vip: int | None, path: str, html: bool = False) -> tuple[int, str]:
    """One request; without ``vip``, a DNS-aware client: resolve, pick one address at random,
    try the other if it fails. Returns (exit code, text to show)."""
    if not path.startswith("/"):
        path = "/" + path
    extra = ["-i", "-H", "Accept: text/html"] if html else ["-i"]
    domain = plan.spec.cluster.domain
    if vip is not None:
        if vip not in (1, 2):
            raise UsageError("--vip: must be 1 or 2")
        targets = [plan.vips[vip - 1].address]
        note = f"-> {targets[0]} (vip{vip})\n"
    else:
        targets = resolve(plan)
        random.shuffle(targets)
        note = f"-> {domain} resolves to {', '.join(sorted(targets))}; asking {targets[0]}\n"
    for i, addr in enumerate(targets):
        proc = client_run(
            plan,
            curl_argv(plan, f"http://{addr}{path}", host=domain, timeout=3, extra=extra),
            timeout=10,
        )
        if proc.returncode == 0:
            return 0, note + proc.stdout
        note += f"   {addr} failed: {proc.stderr.strip()}\n"
        if i + 1 < len(targets):
            note += f"   trying {targets[i + 1]}\n"
    return 1, note
