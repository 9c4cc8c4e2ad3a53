"""The cluster spec: typed, frozen models whose defaults are the seed stack's values.

A spec comes from an optional ``hapair.toml``. Every field has a default, so an empty file (or none)
describes the original stack: two LBs, three web servers, HTTP on 80, heartbeats on udp/694,
dashboards on 9022/9023. Errors name the field and the fix, e.g.
``web.size: must be between 1 and 250 (got 0)``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hapair.errors import SpecError
from hapair.spec_checks import (
    CIDR,
    Ami,
    Bounded,
    CertPath,
    CheckPath,
    Cookie,
    Domain,
    InstanceType,
    IPv4,
    KeyName,
    Name,
    PipSpec,
    Port,
    Region,
    SourceCidrs,
    StatsPassword,
    StatsUser,
    StrictBool,
    check_lab,
    check_ports,
)
from hapair.spec_fabric import check_fabric
from hapair.spec_scale import check_scale
from hapair.spec_timings import (
    DeadtimeMs,
    DelayMs,
    DrainMs,
    EtcdLeaseTtlMs,
    HealthIntervalMs,
    InitdeadMs,
    IntervalMs,
    WarntimeMs,
    timing_problem,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(_Model):
    """Who the cluster is."""

    # Prefix of every namespace, state directory and cloud tag; short so interface names fit.
    name: Name = "demo"  # type: ignore[valid-type]
    # The DNS name that answers with both floating IPs (the seed's DNS label).
    domain: Domain = "www.hapair.test"  # type: ignore[valid-type]
    # Where the stack runs: "lab" (network namespaces on this host) or "aws" (boto3).
    platform: Literal["lab", "aws"] = "lab"


class WebSpec(_Model):
    """The web tier behind the load balancers (the seed's NodeJS servers)."""

    # How many web servers (the seed's web_cluster_size).
    size: Bounded(1, 250) = 3  # type: ignore[valid-type]
    # Port the demo web app listens on.
    port: Port = 80  # type: ignore[valid-type]


class LbSpec(_Model):
    """The load balancers: the seed's pair by default, up to 16 with ``ha.coordinator = "etcd"``."""

    # How many LBs; 2 is the seed's pair. Above 2, ha.coordinator must be "etcd" (issue 13).
    count: Bounded(2, 16) = 2  # type: ignore[valid-type]


class NetworkSpec(_Model):
    """Lab addresses. All of them must lie in 198.18.0.0/15 for the lab platform."""

    # The VPC subnet: LBs, web nodes and the gateway live here.
    vpc_cidr: CIDR = "198.18.0.0/23"
    # The gateway's VPC address (the igw); also the agent's ping node.
    gateway: IPv4 = "198.18.0.1"
    # LB primary addresses (lb1, lb2, ...; one per lb.count): home addresses for EIP1 / EIP2
    # in the seed.
    lb_primary: tuple[IPv4, ...] = ("198.18.0.11", "198.18.0.12")
    # LB secondary addresses (the seed's secondary-ip role), one per lb.count.
    lb_secondary: tuple[IPv4, ...] = ("198.18.0.111", "198.18.0.112")
    # The first web node's address; web N gets this plus N-1.
    web_first: IPv4 = "198.18.1.1"
    # The Internet side: client host, DNS server and igw's outer address.
    internet_cidr: CIDR = "198.19.0.0/24"
    igw_outside: IPv4 = "198.19.0.1"
    client: IPv4 = "198.19.0.10"
    dns: IPv4 = "198.19.0.53"
    # The floating IPs (the seed's EIP1 and EIP2); routed by the igw onto the VPC segment.
    # Exactly 2 with ha.coordinator "peer"; with "etcd", at least lb.count (up to 64).
    vips: tuple[IPv4, ...] = ("198.19.255.1", "198.19.255.2")


class HaproxySpec(_Model):
    """HAProxy on each LB node (the seed's hapee-lb.cfg)."""

    http_port: Port = 80  # type: ignore[valid-type]
    # Serve HTTPS on https_port too; with no cert, the lab generates a self-signed one.
    https: StrictBool = False
    https_port: Port = 443  # type: ignore[valid-type]
    # PEM file with certificate and key; empty = self-signed, generated per cluster.
    cert: CertPath = ""  # type: ignore[valid-type]
    balance: Literal["roundrobin", "leastconn", "source", "first"] = "roundrobin"
    # Cookie persistence as in the seed: a name, then HAProxy's `cookie` options.
    cookie: Cookie = "SERVERID insert indirect nocache"
    # Health checks of web servers: HTTP GET of this path every inter_ms, rise/fall counts.
    check_path: CheckPath = "/health"  # type: ignore[valid-type]
    check_inter_ms: Bounded(100, 60000) = 1000  # type: ignore[valid-type]
    check_rise: Bounded(1, 100) = 2  # type: ignore[valid-type]
    check_fall: Bounded(1, 100) = 2  # type: ignore[valid-type]
    timeout_connect_ms: Bounded(100, 600000) = 5000  # type: ignore[valid-type]
    timeout_client_ms: Bounded(100, 3600000) = 50000  # type: ignore[valid-type]
    timeout_server_ms: Bounded(100, 3600000) = 50000  # type: ignore[valid-type]
    retries: Bounded(0, 10) = 3  # type: ignore[valid-type]
    redispatch: StrictBool = True
    forwardfor: StrictBool = True
    maxconn: Bounded(100, 1000000) = 4096  # type: ignore[valid-type]
    # Worker threads per HAProxy.
    nbthread: Bounded(1, 64) = 2  # type: ignore[valid-type]
    # Stats page (the seed's dashboard on 9022), behind these credentials; an empty
    # password means a random one, generated per cluster and kept 0600.
    stats_port: Port = 9022  # type: ignore[valid-type]
    stats_user: StatsUser = "admin"  # type: ignore[valid-type]
    stats_password: StatsPassword = ""  # type: ignore[valid-type]


class AdminSpec(_Model):
    """Who may reach the dashboards."""

    # hapair's status API, metrics and admin calls (the seed's second dashboard port).
    port: Port = 9023  # type: ignore[valid-type]
    # Sources allowed to reach tcp/9022-9023. The seed allowed everyone; narrow it in production.
    cidrs: SourceCidrs = ("0.0.0.0/0",)


class HaSpec(_Model):
    """The HA agent: heartbeats and timings (the seed's ha.cf)."""

    # UDP port of the heartbeats (the seed's udpport).
    port: Port = 694  # type: ignore[valid-type]
    # A heartbeat goes to the peer every interval (the seed's keepalive, 2 s there).
    interval_ms: IntervalMs = 50
    # A peer silent this long is logged as late (the seed's warntime).
    warntime_ms: WarntimeMs = 100
    # A peer silent this long is dead (the seed's deadtime, 15 s there).
    deadtime_ms: DeadtimeMs = 150
    # After start, how long to wait for a never-seen peer before declaring it dead (initdead).
    initdead_ms: InitdeadMs = 1500
    # A returning home node takes its VIP back after this much stable health (auto_failback).
    auto_failback: StrictBool = True
    failback_delay_ms: DelayMs = 3000
    # How often the local HAProxy's health is checked.
    health_interval_ms: HealthIntervalMs = 100
    # Ping nodes; empty = the gateway (the seed's "ping <gateway>"). On the lab, inside
    # network.vpc_cidr and not an LB's own address.
    ping_nodes: tuple[IPv4, ...] = ()
    # Fewest seconds between two moves of one VIP for the same reason kind (anti-flap).
    min_move_interval_ms: DelayMs = 1000
    # After a move between two live nodes (failback, standby/online), the taker hands packets of
    # connections it does not know to the releaser, which keeps serving them, for this long
    # (the failback drain; 0 = off). Longer than a request, shorter than a keep-alive timeout.
    drain_ms: DrainMs = 5000
    # Who grants VIP ownership: "peer" (the pair agrees by heartbeats, 2 LBs only) or "etcd"
    # (each VIP's owner is an etcd key under the owner's lease; required above 2 LBs).
    coordinator: Literal["peer", "etcd"] = "peer"
    # With "etcd": the TTL of each node's lease; a node that cannot renew it within this
    # time fences itself (releases its VIPs). etcd refuses TTLs under its election timeout.
    etcd_lease_ttl_ms: EtcdLeaseTtlMs = 3000

    @model_validator(mode="after")
    def _order(self) -> HaSpec:
        problem = timing_problem(self.interval_ms, self.warntime_ms, self.deadtime_ms, "ha")
        if problem is not None:
            raise ValueError(problem)
        return self


class AwsSpec(_Model):
    """The aws platform (what the original Terraform built)."""

    # Region; empty = what the standard AWS configuration selects.
    region: Region = ""  # type: ignore[valid-type]
    vpc_cidr: CIDR = "10.20.0.0/16"
    subnet_cidr: CIDR = "10.20.1.0/24"
    # Optional second subnet, in another AZ, for lb2 and every other web server.
    second_az: StrictBool = False
    subnet2_cidr: CIDR = "10.20.2.0/24"
    lb_instance_type: InstanceType = "t3.small"  # type: ignore[valid-type]
    web_instance_type: InstanceType = "t3.small"  # type: ignore[valid-type]
    # AMI id; empty = Debian 12 found through its SSM public parameter.
    ami: Ami = ""  # type: ignore[valid-type]
    # EC2 key pair for SSH; empty = none (instances configure themselves through cloud-init).
    key_name: KeyName = ""  # type: ignore[valid-type]
    # Where the instances get hapair: empty = the wheel `up` builds from this checkout, with
    # its pinned dependencies, from the cluster's private bucket; else what `pip install`
    # takes (a version, URL or path), as an explicit override.
    pip_spec: PipSpec = ""  # type: ignore[valid-type]
    # VPC endpoints (EC2 and SSM interface, S3 gateway), so an LB whose EIP has moved away can
    # still reach the EC2 API to take it back, its secrets and its wheel (~0.02 USD/h per AZ);
    # off = the LBs rely on their public addresses.
    ec2_endpoint: StrictBool = True
    # The agents' timings: "aws" = every [ha] timing left at the lab's default takes the AWS
    # profile (heartbeat 1 s, deadtime 5 s, initdead 10 min; docs/aws.md); "spec" = [ha] as is.
    timing_profile: Literal["aws", "spec"] = "aws"

    @model_validator(mode="before")
    @classmethod
    def _empty_pip_spec(cls, data: Any) -> Any:
        # An empty pip_spec is the default (the bucket's wheel): nothing for pip to check.
        if isinstance(data, dict) and data.get("pip_spec") == "":
            return {k: v for k, v in data.items() if k != "pip_spec"}
        return data


class LabSpec(_Model):
    """The lab platform's own settings."""

    # What the VPC does with the floating IPs: "l2" (the holder puts the VIP on its interface
    # and announces it with gratuitous ARP) or "aws" (an EC2-like edge: a moto EC2 API in the
    # lab, the igw translates each EIP to the private address it is associated with, and the
    # agents move EIPs with the aws_eip resource agent; hapair.platforms.lab.fabric).
    fabric: Literal["l2", "aws"] = "l2"
    # aws fabric: how long after an association changes in the API the igw follows it (EC2's
    # remap time; 5 s from published measurements, docs/aws.md). 0 = at once (tests).
    eip_propagation_ms: Bounded(0, 60000) = 5000  # type: ignore[valid-type]
    # aws fabric: how long the EC2 API takes to answer an address call (Describe-, Associate-,
    # DisassociateAddress), on top of moto's own milliseconds. 0 = as fast as moto.
    eip_api_latency_ms: Bounded(0, 5000) = 0  # type: ignore[valid-type]


class Spec(_Model):
    """The whole cluster spec."""

    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    web: WebSpec = Field(default_factory=WebSpec)
    lb: LbSpec = Field(default_factory=LbSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    haproxy: HaproxySpec = Field(default_factory=HaproxySpec)
    admin: AdminSpec = Field(default_factory=AdminSpec)
    ha: HaSpec = Field(default_factory=HaSpec)
    aws: AwsSpec = Field(default_factory=AwsSpec)
    lab: LabSpec = Field(default_factory=LabSpec)

    @model_validator(mode="after")
    def _rules(self) -> Spec:
        check_scale(self)
        check_ports(self)
        if self.cluster.platform == "lab":
            check_lab(self)
        check_fabric(self)
        return self


def format_errors(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        msg = str(e["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(
                f"{loc}: unknown field; see `hapair check --help` and the README's "
                "spec reference for valid fields"
            )
        elif e["type"] == "missing":
            lines.append(f"{loc}: required")
        elif ":" in msg.split(" ")[0] or not loc:
            # The validator already named the field (cross-field rules).
            lines.append(msg)
        else:
            got = e.get("input")
            suffix = "" if "(got" in msg or isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{loc}: {msg[0].lower() + msg[1:]}{suffix}")
    return lines


def parse(data: dict[str, Any]) -> Spec:
    """Validate a spec given as a dict (the TOML's tables).

    :raises SpecError: one line per invalid field, naming it and the fix.
    """
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


def load(path: Path | None) -> Spec:
    """Load and validate ``hapair.toml``; ``None`` (or a missing default file) means defaults.

    :raises SpecError: the file is unreadable, not TOML, or invalid.
    """
    if path is None:
        return Spec()
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{path}: not valid TOML ({exc})"]) from None
    return parse(data)


def with_overrides(
    spec: Spec,
    *,
    name: str | None = None,
    web_size: int | None = None,
    platform: str | None = None,
    fabric: str | None = None,
) -> Spec:
    """Apply command-line overrides and validate the result again."""
    data = spec.model_dump(mode="python")
    if fabric is not None:
        data["lab"]["fabric"] = fabric
    if name is not None:
        data["cluster"]["name"] = name
    if web_size is not None:
        data["web"]["size"] = web_size
    if platform is not None:
        data["cluster"]["platform"] = platform
    return parse(data)
