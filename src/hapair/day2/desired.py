"""The desired-configuration document an AWS cluster's LBs follow. Pure.

``hapair up``/``apply``/``scale``/``restart``/``cert rotate`` publish it to SSM Parameter Store
(``/hapair/<cluster>/desired``, standard tier, versioned: every put is a new version); each
LB's follower (:mod:`hapair.platforms.aws.follower`) polls the version, and on a new one
decodes and validates the document here, renders its haproxy.cfg and applies the difference
(:mod:`hapair.day2.follow`). It carries **no secret**: the stats password and the certificate
are SSM SecureStrings (the document names the certificate's version and digest, not its PEM).

Schema 1, compact JSON with sorted keys::

    {"schema": 1, "cluster": "c1",
     "haproxy": {...the [haproxy] settings but stats_password and cert...},
     "web_port": 80,
     "servers": [["web1", "10.20.1.21", "ready"], ["web3", "10.20.1.23", "drain"]],
     "agent": {"interval_ms": 200, ...}}

Schema 2 adds two optional fields, written only when set (a document without them stays
schema 1, so an LB of an older hapair keeps following it; one with them says "upgrade" to such
an LB instead of being half understood):

- ``"cert": {"version": 3, "sha256": "<64 hex>"}``: the certificate the LBs serve, by
  reference: version 3 of the SecureString ``/hapair/<cluster>/cert`` and the SHA-256 of its
  PEM (never the PEM: the document is not a secret);
- ``"restart": {"lb1": 2}``: per LB, a restart generation; an LB whose generation goes up
  restarts its HAProxy and agent once (``hapair restart``).

A standard-tier parameter holds 4096 characters; a document longer than that is published
as ``z1:`` + base64(zlib(json)) (250 servers fit), and decoding refuses anything larger than
:data:`MAX_DECODED` once inflated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from hapair.errors import HapairError
from hapair.spec import HaproxySpec, HaSpec, format_errors

SCHEMA = 1
#: The schema of a document that carries a certificate reference or restart generations.
SCHEMA_OPS = 2
#: SSM's standard tier: at most 4096 characters per value.
MAX_VALUE = 4096
#: The most a document may take once inflated (a bound against a zip bomb).
MAX_DECODED = 65536
#: The most servers a document may list.
MAX_SERVERS = 250
COMPRESSED_PREFIX = "z1:"
SERVER_STATES = ("ready", "drain")
#: [haproxy] fields that are not in the document: a secret, and a path on the operator's disk.
HAPROXY_EXCLUDED = ("stats_password", "cert")
#: The agent timings the document carries (agent.toml's names, the spec's [ha] names).
AGENT_TIMINGS = (
    "interval_ms",
    "warntime_ms",
    "deadtime_ms",
    "initdead_ms",
    "failback_delay_ms",
    "health_interval_ms",
    "min_move_interval_ms",
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEYS = {"schema", "cluster", "haproxy", "web_port", "servers", "agent"}
#: Optional fields of schema 2.
_OPS_KEYS = {"cert", "restart"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DocumentError(HapairError, ValueError):
    """A desired document is malformed; the message names the field and what is wrong."""


@dataclass(frozen=True)
class Server:
    """One web server of the backend: ``state`` is ``ready`` or ``drain`` (no new traffic,
    kept until its sessions end; the next document leaves it out)."""

    name: str
    address: str
    state: str = "ready"


@dataclass(frozen=True)
class CertRef:
    """The certificate the LBs serve: ``version`` of the cluster's ``cert`` SecureString,
    whose PEM has SHA-256 ``sha256`` (an LB checks the PEM it fetches against it)."""

    version: int
    sha256: str


@dataclass(frozen=True)
class DesiredDoc:
    """A validated desired document.

    :ivar cluster: the cluster it is for (an LB refuses another cluster's).
    :ivar haproxy: the ``[haproxy]`` settings (``stats_password`` and ``cert`` left empty).
    :ivar web_port: the web servers' port.
    :ivar servers: the backend's servers, in order.
    :ivar agent: the agent timings, by agent.toml name.
    :ivar cert: the certificate to serve (None: the document says nothing about it).
    :ivar restarts: LB -> restart generation (an LB absent is at 0).
    """

    cluster: str
    haproxy: HaproxySpec
    web_port: int
    servers: tuple[Server, ...]
    agent: Mapping[str, int]
    cert: CertRef | None = None
    restarts: Mapping[str, int] = field(default_factory=dict)

    def server(self, name: str) -> Server | None:
        """The server called ``name``, if listed."""
        return next((s for s in self.servers if s.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """As the JSON object that is published."""
        h = self.haproxy.model_dump(mode="json", exclude=set(HAPROXY_EXCLUDED))
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "cluster": self.cluster,
            "haproxy": h,
            "web_port": self.web_port,
            "servers": [[s.name, s.address, s.state] for s in self.servers],
            "agent": dict(sorted(self.agent.items())),
        }
        if self.cert is not None:
            out["cert"] = {"version": self.cert.version, "sha256": self.cert.sha256}
        if self.restarts:
            out["restart"] = dict(sorted(self.restarts.items()))
        if self.cert is not None or self.restarts:
            out["schema"] = SCHEMA_OPS
        return out

    def restart_generation(self, node: str) -> int:
        """LB ``node``'s restart generation (0: never asked to restart)."""
        return int(self.restarts.get(node, 0))

    def same_config(self, other: DesiredDoc | None) -> bool:
        """Whether ``other`` asks the same of HAProxy and the agents (the certificate and the
        restart generations left aside)."""
        return other is not None and replace(self, cert=None, restarts={}) == replace(
            other, cert=None, restarts={}
        )

    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the document (the same content, the same digest)."""
        return hashlib.sha256(_dumps(self.to_json()).encode()).hexdigest()[:16]


def make_document(
    cluster: str,
    haproxy: HaproxySpec,
    web_port: int,
    servers: Sequence[Server],
    ha: HaSpec,
) -> DesiredDoc:
    """The document for these settings and servers; validated as an LB would validate it.

    :raises DocumentError: a server name, address or state is invalid.
    """
    h = haproxy.model_copy(update={k: "" for k in HAPROXY_EXCLUDED})
    agent = {k: int(getattr(ha, k)) for k in AGENT_TIMINGS}
    doc = DesiredDoc(cluster, h, web_port, tuple(servers), agent)
    return parse_document(doc.to_json(), cluster)


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def encode(doc: DesiredDoc) -> str:
    """The parameter value: compact JSON, or ``z1:`` + base64(zlib) when it is too long.

    :raises DocumentError: even compressed it does not fit a standard-tier parameter.
    """
    text = _dumps(doc.to_json())
    if len(text) <= MAX_VALUE:
        return text
    packed = COMPRESSED_PREFIX + base64.b64encode(zlib.compress(text.encode(), 9)).decode()
    if len(packed) > MAX_VALUE:
        raise DocumentError(
            f"servers: the desired document takes {len(packed)} characters compressed, more "
            f"than a standard-tier SSM parameter holds ({MAX_VALUE}); use fewer web nodes"
        )
    return packed


def decode(value: str, cluster: str) -> DesiredDoc:
    """Parse and validate a parameter value (plain or ``z1:``) for ``cluster``.

    :raises DocumentError: too large, not JSON, or a field is invalid (named in the message).
    """
    if len(value) > MAX_VALUE:
        raise DocumentError(f"document: {len(value)} characters, more than {MAX_VALUE}")
    text = value
    if value.startswith(COMPRESSED_PREFIX):
        try:
            raw = base64.b64decode(value[len(COMPRESSED_PREFIX) :], validate=True)
            inflater = zlib.decompressobj()
            data = inflater.decompress(raw, MAX_DECODED + 1)
        except (binascii.Error, zlib.error) as exc:
            raise DocumentError(f"document: not valid z1 (base64 zlib) data: {exc}") from None
        if len(data) > MAX_DECODED or inflater.unconsumed_tail:
            raise DocumentError(f"document: inflates to more than {MAX_DECODED} bytes")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise DocumentError("document: not UTF-8 once inflated") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise DocumentError(f"document: not JSON ({exc})") from None
    return parse_document(obj, cluster)


def parse_document(obj: object, cluster: str) -> DesiredDoc:
    """Validate a decoded JSON object.

    :raises DocumentError: every problem found, one per line, each naming its field.
    """
    if not isinstance(obj, dict):
        raise DocumentError("document: must be a JSON object")
    problems = [f"{k}: unknown field" for k in sorted(set(obj) - _KEYS - _OPS_KEYS)]
    problems += [f"{k}: required" for k in sorted(_KEYS - set(obj))]
    if problems:
        raise DocumentError("\n".join(problems))
    schema = obj["schema"]
    if schema not in (SCHEMA, SCHEMA_OPS):
        problems.append(
            f"schema: {schema!r} is not {SCHEMA} or {SCHEMA_OPS} (upgrade hapair on the LB)"
        )
    elif schema == SCHEMA:
        problems += [f"{k}: only in schema {SCHEMA_OPS}" for k in sorted(_OPS_KEYS & set(obj))]
    if obj["cluster"] != cluster:
        problems.append(f"cluster: {obj['cluster']!r} is not this LB's cluster {cluster!r}")
    h = _haproxy(obj["haproxy"], problems)
    port = obj["web_port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append(f"web_port: {port!r} is not a port (1..65535)")
    servers = _servers(obj["servers"], problems)
    agent = _agent(obj["agent"], problems)
    cert = _cert(obj["cert"], problems) if "cert" in obj else None
    restarts = _restarts(obj["restart"], problems) if "restart" in obj else {}
    if problems or h is None:
        raise DocumentError("\n".join(problems))
    return DesiredDoc(cluster, h, int(port), servers, agent, cert, restarts)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _cert(data: object, problems: list[str]) -> CertRef | None:
    if not isinstance(data, dict) or set(data) != {"version", "sha256"}:
        problems.append('cert: must be {"version": N, "sha256": "<64 hex digits>"}')
        return None
    version, digest = data["version"], data["sha256"]
    if not _count(version):
        problems.append(f"cert.version: {version!r} is not a parameter version (1, 2, ...)")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        problems.append(f"cert.sha256: {digest!r} is not 64 lowercase hex digits")
    return CertRef(version, digest) if not problems else None


def _restarts(data: object, problems: list[str]) -> dict[str, int]:
    if not isinstance(data, dict):
        problems.append("restart: must be an object of LB -> generation")
        return {}
    out: dict[str, int] = {}
    for node, gen in sorted(data.items()):
        if not _NAME.fullmatch(node):
            problems.append(f"restart: {node!r} is not a node name")
        elif not _count(gen):
            problems.append(f"restart.{node}: {gen!r} is not a generation (1, 2, ...)")
        else:
            out[node] = gen
    return out


def _haproxy(data: object, problems: list[str]) -> HaproxySpec | None:
    if not isinstance(data, dict):
        problems.append("haproxy: must be an object")
        return None
    leaked = [k for k in HAPROXY_EXCLUDED if data.get(k)]
    if leaked:
        problems.append(f"haproxy.{leaked[0]}: must not be in the document (no secret, no path)")
    try:
        return HaproxySpec.model_validate(data)
    except ValidationError as exc:
        problems += [f"haproxy.{line}" for line in format_errors(exc)]
        return None


def _servers(data: object, problems: list[str]) -> tuple[Server, ...]:
    if not isinstance(data, list):
        problems.append("servers: must be a list of [name, address, state]")
        return ()
    if len(data) > MAX_SERVERS:
        problems.append(f"servers: {len(data)} listed, at most {MAX_SERVERS}")
        return ()
    out: list[Server] = []
    for i, item in enumerate(data):
        where = f"servers[{i}]"
        if not (
            isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)
        ):
            problems.append(f"{where}: must be [name, address, state], three strings")
            continue
        name, address, state = item
        if not _NAME.fullmatch(name):
            problems.append(
                f"{where}: name {name!r} is not an HAProxy name (letters, digits . _ -)"
            )
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            problems.append(f"{where}: address {address!r} is not an IPv4 address")
        if state not in SERVER_STATES:
            problems.append(f"{where}: state {state!r} is not one of {', '.join(SERVER_STATES)}")
        out.append(Server(name, address, state))
    for attr in ("name", "address"):
        seen = [getattr(s, attr) for s in out]
        dup = sorted({v for v in seen if seen.count(v) > 1})
        if dup:
            problems.append(f"servers: {attr} {', '.join(dup)} listed twice")
    return tuple(out)


def _agent(data: object, problems: list[str]) -> dict[str, int]:
    if not isinstance(data, dict):
        problems.append("agent: must be an object of timings")
        return {}
    unknown = sorted(set(data) - set(AGENT_TIMINGS))
    missing = sorted(set(AGENT_TIMINGS) - set(data))
    problems += [f"agent.{k}: unknown timing" for k in unknown]
    problems += [f"agent.{k}: required" for k in missing]
    out: dict[str, int] = {}
    for k in AGENT_TIMINGS:
        v = data.get(k)
        if k in data and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            problems.append(f"agent.{k}: {v!r} is not a whole number of milliseconds")
        elif isinstance(v, int):
            out[k] = v
    if not unknown and not missing and len(out) == len(AGENT_TIMINGS):
        try:
            HaSpec.model_validate(out)
        except ValidationError as exc:
            problems += [f"agent.{line}" for line in format_errors(exc)]
    return out
