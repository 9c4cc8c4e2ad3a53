"""The ``l2`` floating-IP agent: the address on this node's interface, announced by gratuitous ARP.

``start`` always announces, even when the address was already configured (Heartbeat's IPaddr2
skipped the announcement in that case and left a 30 s black hole on failback). ``monitor``
compares the exact address and prefix length read from the kernel, never a substring.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import AsyncIterator

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hapair.agent.resources.base import FloatingIP, MonitorResult
from hapair.errors import ResourceError

logger = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
#: Delays (s) after ``start`` at which the announcement is repeated, for switches and peers that
#: missed the first one.
REPEATS = (0.1, 0.5, 2.0)


def arp_frame(mac: bytes, address: str, op: int) -> bytes:
    """A gratuitous ARP frame for ``address`` (op 1 request or 2 reply), sender = target."""
    ip = ipaddress.IPv4Address(address).packed
    target_mac = b"\x00" * 6 if op == 1 else BROADCAST
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + ip + target_mac + ip
    return eth + arp


def send_garp(ifname: str, address: str) -> None:
    """Send one gratuitous ARP request and one reply for ``address`` out of ``ifname``."""
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
            s.bind((ifname, ETH_P_ARP))
            mac = s.getsockname()[4]
            for op in (1, 2):
                s.send(arp_frame(mac, address, op))
    except OSError as exc:
        raise ResourceError(
            f"gratuitous ARP for {address} on {ifname} failed: {exc}", code=exc.errno
        ) from exc


class L2FloatingIP(FloatingIP):
    """A floating IP held as a /32 on ``ifname`` of the namespace this process runs in."""

    def __init__(self, name: str, address: str, ifname: str = "eth0", prefixlen: int = 32) -> None:
        self.name = name
        self.address = address
        self.ifname = ifname
        self.prefixlen = prefixlen
        self._repeats: set[asyncio.Task[None]] = set()
        self._ipr: AsyncIPRoute | None = None
        self._ifindex: int | None = None

    @contextlib.asynccontextmanager
    async def _netlink(self) -> AsyncIterator[tuple[AsyncIPRoute, int]]:
        """One netlink socket and interface index, kept between calls (the reconcile loop
        reads several times a second); dropped and reopened after any error."""
        try:
            if self._ipr is None:
                self._ipr = AsyncIPRoute()
                await self._ipr.setup_endpoint()
            if self._ifindex is None:
                found = await self._ipr.link_lookup(ifname=self.ifname)
                if not found:
                    raise ResourceError(
                        f"{self.name}: interface {self.ifname} not found", code=errno.ENODEV
                    )
                self._ifindex = int(found[0])
            yield self._ipr, self._ifindex
        except BaseException:
            await self._drop_netlink()
            raise

    async def _drop_netlink(self) -> None:
        ipr, self._ipr, self._ifindex = self._ipr, None, None
        if ipr is not None:
            with contextlib.suppress(Exception):
                ipr.close()

    async def start(self) -> None:
        """Add the address (if missing) and announce it now and a few times after."""
        try:
            async with self._netlink() as (ipr, idx):
                try:
                    await ipr.addr("add", index=idx, address=self.address, prefixlen=self.prefixlen)
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise
        except NetlinkError as exc:
            raise ResourceError(
                f"{self.name}: cannot add {self.address}: {exc}", code=exc.code
            ) from exc
        send_garp(self.ifname, self.address)
        self._cancel_repeats()
        task = asyncio.get_running_loop().create_task(self._repeat(), name=f"garp-{self.name}")
        self._repeats.add(task)
        task.add_done_callback(self._repeats.discard)

    async def _repeat(self) -> None:
        elapsed = 0.0
        for at in REPEATS:
            await asyncio.sleep(at - elapsed)
            elapsed = at
            try:
                send_garp(self.ifname, self.address)
            except ResourceError as exc:
                logger.warning("%s", exc)

    def _cancel_repeats(self) -> None:
        for task in list(self._repeats):
            task.cancel()

    async def stop(self) -> None:
        """Remove the address if it is configured here."""
        self._cancel_repeats()
        try:
            async with self._netlink() as (ipr, idx):
                try:
                    await ipr.addr("del", index=idx, address=self.address, prefixlen=self.prefixlen)
                except NetlinkError as exc:
                    if exc.code not in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                        raise
        except NetlinkError as exc:
            raise ResourceError(
                f"{self.name}: cannot remove {self.address}: {exc}", code=exc.code
            ) from exc

    async def monitor(self) -> MonitorResult:
        """Whether the exact address/prefix is configured on the interface right now."""
        try:
            async with self._netlink() as (ipr, idx):
                async for msg in await ipr.addr("dump", index=idx):
                    if (
                        msg.get("IFA_ADDRESS") == self.address
                        and msg["prefixlen"] == self.prefixlen
                    ):
                        return MonitorResult(
                            True, f"{self.address}/{self.prefixlen} on {self.ifname}"
                        )
        except NetlinkError as exc:
            raise ResourceError(
                f"{self.name}: cannot read addresses: {exc}", code=exc.code
            ) from exc
        return MonitorResult(False, f"{self.address} not on {self.ifname}")

    async def close(self) -> None:
        """Stop pending re-announcements and close the netlink socket."""
        self._cancel_repeats()
        await self._drop_netlink()
        for task in list(self._repeats):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _cli(action: str, address: str, ifname: str) -> int:
    vip = L2FloatingIP("vip", address, ifname)
    if action == "start":
        await vip.start()
        await asyncio.sleep(REPEATS[0])
    elif action == "stop":
        await vip.stop()
    else:
        result = await vip.monitor()
        print(result.detail)
        return 0 if result.held else 3
    await vip.close()
    return 0


def main() -> None:
    """``python -m hapair.agent.resources.l2 start|stop|monitor ADDRESS [--ifname eth0]``:
    drive the agent by hand inside a node (the lab's static placement uses it)."""
    parser = argparse.ArgumentParser(prog="hapair-l2")
    parser.add_argument("action", choices=["start", "stop", "monitor"])
    parser.add_argument("address")
    parser.add_argument("--ifname", default="eth0")
    args = parser.parse_args()
    try:
        raise SystemExit(asyncio.run(_cli(args.action, args.address, args.ifname)))
    except ResourceError as exc:
        print(f"error: {exc}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
