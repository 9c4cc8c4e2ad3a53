"""A small typed asyncio client for etcd v3, through its JSON gRPC gateway (``/v3/...``) and
httpx: key ranges, transactions, leases, watches and password authentication.

Why not a gRPC client (docs/scale.md has the comparison): this is every call hapair needs, in
one typed module over one pure-Python dependency; each call gets one deadline over *all*
members (the next endpoint is tried when one does not answer); and it works alike with
Debian 12's etcd 3.4 and newer ones. Keys and values are base64 in JSON, 64-bit integers are
decimal strings: both are converted here, so callers see ``str`` and ``int``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from hapair.errors import OperationError

logger = logging.getLogger(__name__)

#: gRPC status codes that mean "try another member, or later".
_RETRY_CODES = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
_INVALID_TOKEN = "invalid auth token"


class EtcdError(OperationError):
    """etcd refused a request; ``code`` is the gRPC status code."""


class EtcdUnavailable(EtcdError):
    """No etcd member answered in time: unreachable, or the cluster has lost its quorum."""


def b64(text: str) -> str:
    """``text`` as the gateway wants keys and values (base64 of its UTF-8)."""
    return base64.b64encode(text.encode()).decode()


def unb64(data: str) -> str:
    """The inverse of :func:`b64`."""
    return base64.b64decode(data).decode()


def prefix_end(prefix: str) -> str:
    """``range_end`` that selects every key starting with ``prefix`` (base64)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd returns it."""

    key: str
    value: str
    mod_revision: int
    create_revision: int
    lease: int

    @classmethod
    def from_json(cls, kv: dict[str, Any]) -> KeyValue:
        """From the gateway's JSON (absent fields are zero or empty)."""
        return cls(
            key=unb64(kv["key"]),
            value=unb64(kv.get("value", "")),
            mod_revision=int(kv.get("mod_revision", 0)),
            create_revision=int(kv.get("create_revision", 0)),
            lease=int(kv.get("lease", 0)),
        )


@dataclass(frozen=True)
class Event:
    """A watch event: ``kind`` is ``PUT`` or ``DELETE`` (then ``kv.value`` is empty)."""

    kind: str
    kv: KeyValue


class EtcdClient:
    """etcd v3 over the JSON gateway, for one cluster of ``endpoints`` (``http://host:port``).

    :param user: with ``password``, authenticate (etcd auth on); the token is renewed when
        etcd says it expired.
    :param timeout: seconds one call may take in total, over every member tried.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdClient needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._user, self._password = user, password
        self._token: str | None = None
        self._next = 0  # the endpoint that answered last is asked first
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    # ------------------------------------------------------------------ transport
    def _order(self) -> list[str]:
        n = len(self.endpoints)
        return [self.endpoints[(self._next + i) % n] for i in range(n)]

    async def _post(self, endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": self._token} if self._token else {}
        resp = await self._http.post(f"{endpoint}{path}", json=body, headers=headers)
        data: dict[str, Any] = resp.json()
        if resp.status_code != 200 or "error" in data:
            code = int(data.get("code", 2))
            message = str(data.get("message") or data.get("error") or resp.reason_phrase)
            cls = EtcdUnavailable if code in _RETRY_CODES else EtcdError
            raise cls(f"etcd at {endpoint}: {message}", code=code)
        return data

    async def call(self, path: str, body: dict[str, Any], *, auth: bool = True) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first member that answers, within ``timeout``.

        :raises EtcdUnavailable: no member answered in time (the last failure is in the text).
        :raises EtcdError: a member refused the request.
        """
        deadline = time.monotonic() + self.timeout
        last = "no member tried"
        renewed = False
        while True:
            for i, endpoint in enumerate(self._order()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EtcdUnavailable(
                        f"no etcd member answered within {self.timeout:.1f} s "
                        f"(quorum lost or unreachable); last: {last}",
                        code=4,
                    )
                try:
                    if auth and self._user and self._token is None:
                        await self._authenticate(endpoint, left)
                    async with asyncio.timeout(left):
                        data = await self._post(endpoint, path, body)
                except EtcdUnavailable as exc:
                    last = str(exc)
                    continue
                except EtcdError as exc:
                    if _INVALID_TOKEN in str(exc) and not renewed:
                        self._token, renewed = None, True
                        break
                    raise
                except (httpx.HTTPError, TimeoutError, OSError, ValueError) as exc:
                    last = f"{endpoint}: {type(exc).__name__} {exc}".strip()
                    continue
                self._next = (self._next + i) % len(self.endpoints)
                return data
            else:
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    async def _authenticate(self, endpoint: str, left: float) -> None:
        async with asyncio.timeout(left):
            data = await self._post(
                endpoint, "/v3/auth/authenticate", {"name": self._user, "password": self._password}
            )
        self._token = str(data["token"])

    # ------------------------------------------------------------------ kv
    async def get(self, key: str, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The key (or every key under ``prefix``) and the store's revision, linearizable."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        data = await self.call("/v3/kv/range", body)
        kvs = [KeyValue.from_json(kv) for kv in data.get("kvs", [])]
        return kvs, int(data["header"]["revision"])

    async def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> tuple[bool, list[dict[str, Any]], int]:
        """One transaction: (succeeded, the responses of the branch taken, revision)."""
        body = {"compare": compare, "success": success, "failure": failure or []}
        data = await self.call("/v3/kv/txn", body)
        ok = bool(data.get("succeeded", False))
        return ok, list(data.get("responses", [])), int(data["header"]["revision"])

    # ------------------------------------------------------------------ leases
    async def grant(self, ttl_s: int) -> tuple[int, int]:
        """A new lease: (id, the TTL etcd granted, in seconds)."""
        data = await self.call("/v3/lease/grant", {"TTL": str(ttl_s)})
        if data.get("error"):
            raise EtcdError(f"etcd refused a lease of {ttl_s} s: {data['error']}")
        return int(data["ID"]), int(data["TTL"])

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease`` once; returns its new TTL in seconds (0: it had already expired)."""
        data = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(data.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """Revoke ``lease``: every key under it is deleted at once."""
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    # ------------------------------------------------------------------ watch
    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        """Batches of events under ``prefix`` from ``start_revision`` on, as etcd sends them.

        The stream ends (``EtcdUnavailable``) when its member goes away; watch again from the
        last revision seen plus one, on any member.
        """
        body = {
            "create_request": {
                "key": b64(prefix),
                "range_end": prefix_end(prefix),
                "start_revision": str(start_revision),
            }
        }
        if self._user and self._token is None:
            await self.call("/v3/kv/range", {"key": b64(prefix), "count_only": True})
        headers = {"Authorization": self._token} if self._token else {}
        endpoint = self._order()[0]
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "POST", f"{endpoint}/v3/watch", json=body, headers=headers, timeout=timeout
            ) as resp:
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    events = [
                        Event(e.get("type", "PUT"), KeyValue.from_json(e["kv"]))
                        for e in result.get("events", [])
                    ]
                    if events:
                        yield events
        except (httpx.HTTPError, OSError, ValueError) as exc:
            self._next = (self._next + 1) % len(self.endpoints)
            raise EtcdUnavailable(f"watch on {endpoint} ended: {exc}", code=14) from exc

    # ------------------------------------------------------------------ cluster
    async def members(self) -> list[dict[str, Any]]:
        """The cluster's members (name, id, client URLs), as etcd lists them."""
        data = await self.call("/v3/cluster/member/list", {})
        return list(data.get("members", []))

    async def endpoint_status(self, endpoint: str, timeout: float) -> dict[str, Any]:
        """One member's own status (``/v3/maintenance/status`` on ``endpoint`` only, not the
        first member that answers): its id, version, raft term and the leader it follows.

        :raises EtcdError: that member refused or did not answer within ``timeout``.
        """
        try:
            async with asyncio.timeout(timeout):
                if self._user and self._token is None:
                    await self._authenticate(endpoint, timeout)
                return await self._post(endpoint, "/v3/maintenance/status", {})
        except EtcdError as exc:
            if _INVALID_TOKEN in str(exc):
                self._token = None  # the next call authenticates again
            raise
        except (httpx.HTTPError, TimeoutError, OSError, ValueError) as exc:
            raise EtcdUnavailable(
                f"{endpoint}: {type(exc).__name__} {exc}".strip(), code=14
            ) from exc

    async def time_to_live(self, lease: int) -> int:
        """Seconds left on ``lease`` as etcd counts them (-1: it has expired or never was)."""
        data = await self.call("/v3/lease/timetolive", {"ID": str(lease)})
        return int(data.get("TTL", -1))

    async def enable_auth(self, root_password: str) -> None:
        """Bootstrap etcd auth: a ``root`` user with the root role and ``root_password``, then
        auth on. Idempotent: an existing user or role is kept, its password set again."""
        for path, body in (
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/add", {"name": "root", "password": root_password}),
        ):
            try:
                await self.call(path, body, auth=False)
            except EtcdError as exc:
                if "already exists" not in str(exc):
                    raise
        await self.call(
            "/v3/auth/user/changepw", {"name": "root", "password": root_password}, auth=False
        )
        await self.call("/v3/auth/user/grant", {"user": "root", "role": "root"}, auth=False)
        await self.call("/v3/auth/enable", {}, auth=False)
        logger.info("etcd auth enabled for user root")
