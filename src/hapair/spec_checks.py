"""What the spec refuses: typed fields and cross-field rules for values that cannot be rendered
safely into haproxy.cfg, nftables, dnsmasq's hosts file, agent.toml or cloud-init.

Every string that reaches a configuration is checked twice: no control characters at all (a
newline would start a new directive), then the grammar of the place it lands in. Integers and
booleans are strict: ``true`` is not a port and ``"80"`` is not a number. Each message names the
fix; :func:`hapair.spec.format_errors` prefixes it with the field.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator

if TYPE_CHECKING:
    from hapair.spec import Spec

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
"""RFC 2544's benchmarking range: the only addresses the lab ever uses."""

SSH_PORT = 22
"""Opened by the security groups to more sources than any service port (the seed's rule)."""
OPEN_HTTPS_PORT = 443
"""Opened by the LB security group to everyone, whether or not HTTPS is served (the seed's)."""

# ---------------------------------------------------------------------------- integers, booleans


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", str: "a string", float: "a decimal number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _integer(lo: int | None = None, hi: int | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not int:  # bool is an int subclass: refuse it too
            span = f" between {lo} and {hi}" if lo is not None else ""
            raise ValueError(f"must be an integer{span}, not {_kind(value)} (got {value!r})")
        return value

    return check


def _between(lo: int, hi: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi} (got {value})")
        return value

    return check


def Bounded(lo: int, hi: int) -> Any:
    """A strict int that must lie in [lo, hi], with a message that says so."""
    return Annotated[int, BeforeValidator(_integer(lo, hi)), AfterValidator(_between(lo, hi))]


Port = Bounded(1, 65535)
StrictInt = Annotated[int, BeforeValidator(_integer())]


def _boolean(value: Any) -> Any:
    if type(value) is not bool:
        raise ValueError(f"must be true or false, not {_kind(value)} (got {value!r})")
    return value


StrictBool = Annotated[bool, BeforeValidator(_boolean)]

# ---------------------------------------------------------------------------- addresses


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"must be an IPv4 address (got {value!r})") from None


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError:
        raise ValueError(f"must be an IPv4 network such as 198.18.0.0/23 (got {value!r})") from None


IPv4 = Annotated[str, AfterValidator(_ipv4)]
CIDR = Annotated[str, AfterValidator(_cidr)]


def _source_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("must list at least one network; 0.0.0.0/0 allows everyone")
    nets = [ipaddress.IPv4Network(c) for c in value]
    for i, a in enumerate(nets):
        for b in nets[:i]:
            if a == b:
                raise ValueError(f"must list each network once: {a} is listed twice")
            if a.overlaps(b):
                raise ValueError(
                    f"must not overlap, as nftables refuses overlapping intervals: {a} "
                    f"overlaps {b}; keep the wider one"
                )
    return value


SourceCidrs = Annotated[tuple[CIDR, ...], AfterValidator(_source_cidrs)]

# ---------------------------------------------------------------------------- strings


def has_control(value: str) -> bool:
    """Whether ``value`` holds a control, format or line/paragraph-separator character."""
    return any(unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" for c in value)


def _no_control(value: str) -> None:
    if has_control(value):
        raise ValueError(f"must not contain control characters such as newlines (got {value!r})")


def Text(pattern: str, what: str, *, empty: bool = False, max_len: int = 255) -> Any:
    """A string without control characters that matches ``pattern`` in full.

    :param what: the fix, after "must be".
    :param empty: the empty string is allowed (it means "the default").
    """
    regex = re.compile(pattern)

    def check(value: str) -> str:
        _no_control(value)
        if value == "" and empty:
            return value
        if len(value) > max_len or not regex.fullmatch(value):
            raise ValueError(f"must be {what} (got {value!r})")
        return value

    return Annotated[str, AfterValidator(check)]


_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = rf"(?:{_DNS_LABEL}\.)+[a-z]{{2,63}}"
# RFC 3986 pchar without the characters HAProxy's parser treats specially (' " \ # space) and
# without '$' (environment variables): what an absolute path may contain.
_PCHAR = r"(?:[A-Za-z0-9\-._~!&()*+,;=:@]|%[0-9A-Fa-f]{2})"
# Printable ASCII but space, quotes, backslash and '#': one word of haproxy.cfg, taken as is.
_WORD = r"[!$%&(-\[\]-~]"  # ! $ % & ( ... [ ] ... ~ : everything in !-~ but " # ' \
_PIP = r"[A-Za-z0-9._+\-=<>!~,@/:\[\]%?#&*]"

Name = Text(r"[a-z][a-z0-9]{0,7}", "1-8 lowercase letters or digits, starting with a letter")
Domain = Text(_DOMAIN, "a DNS name such as www.hapair.test", max_len=253)
CheckPath = Text(
    rf"/(?:{_PCHAR}|/)*(?:\?(?:{_PCHAR}|[/?])*)?",
    "an absolute URL path such as /health: '/' then letters, digits, - . _ ~ ! & ( ) * + , ; "
    "= : @ / or %XX escapes, and an optional ?query (no spaces, quotes, '#', '$' or '\\')",
    max_len=1024,
)
StatsUser = Text(
    rf"(?:(?!:){_WORD})+",
    "1-64 printable ASCII characters without spaces, quotes, '\\', '#' or ':', such as admin "
    "(`stats auth user:password`)",
    max_len=64,
)
StatsPassword = Text(
    rf"{_WORD}+",
    "1-128 printable ASCII characters without spaces, quotes, '\\' or '#' (':' is fine), "
    "or empty for a random one",
    empty=True,
    max_len=128,
)
CertPath = Text(
    r"(?:/[A-Za-z0-9._+\-]+)+",
    "an absolute path of letters, digits and . _ + - / such as /etc/hapair/site.pem, "
    "or empty for a self-signed certificate",
    empty=True,
    max_len=1024,
)
Region = Text(
    r"[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}",
    "an AWS region such as eu-west-1, or empty for the standard AWS configuration's",
    empty=True,
    max_len=32,
)
InstanceType = Text(r"[a-z][a-z0-9-]*\.[a-z0-9-]+", "an EC2 instance type such as t3.small")
Ami = Text(r"ami-[0-9a-z]+", "an AMI id such as ami-0123456789abcdef0, or empty", empty=True)
KeyName = Text(
    r"[ -~]+", "the name of an EC2 key pair, up to 255 printable ASCII characters", empty=True
)
PipSpec = Text(
    rf"{_PIP}+(?: {_PIP}+)*",
    "what `pip install` takes, such as hapair==0.1.0, a URL or a path: letters, digits, "
    "single spaces between words and . _ + - = < > ! ~ , @ / : [ ] % ? # & * only",
    max_len=1024,
)

COOKIE_MODES = ("rewrite", "insert", "prefix")
COOKIE_FLAGS = ("indirect", "nocache", "postonly", "preserve", "httponly", "secure", "dynamic")
COOKIE_ARGS: dict[str, tuple[str, str]] = {
    # option: (pattern of its value, an example)
    "domain": (rf"\.?{_DOMAIN}", "a DNS domain such as .hapair.test"),
    "maxidle": (r"[0-9]+(?:us|ms|s|m|h|d)?", "a time such as 30m (us, ms, s, m, h or d)"),
    "maxlife": (r"[0-9]+(?:us|ms|s|m|h|d)?", "a time such as 8h (us, ms, s, m, h or d)"),
    "attr": (r"[A-Za-z0-9_.=\-]+", "letters, digits and _ . = - such as SameSite=Strict"),
}
_REPEATABLE = ("domain", "attr")


def cookie_problem(value: str) -> str | None:
    """What is wrong with ``value`` as the arguments of HAProxy's ``cookie`` keyword, or None.

    The grammar: ``<name> [rewrite|insert|prefix] [indirect] [nocache] [postonly] [preserve]
    [httponly] [secure] [dynamic] [domain <domain>]* [maxidle <time>] [maxlife <time>]
    [attr <value>]*``, each option at most once unless starred; as HAProxy 2.6 requires,
    ``indirect`` not with ``rewrite``, and ``preserve`` only with ``insert`` or ``indirect``.
    """
    words = [w for w in value.split(" ") if w]
    if not words or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", words[0]):
        return (
            "must start with a cookie name of letters, digits, '_', '.' or '-', then HAProxy's "
            "cookie options, such as SERVERID insert indirect nocache"
        )
    seen: list[str] = []
    rest = iter(words[1:])
    for word in rest:
        if word in seen and word not in _REPEATABLE:
            return f"names {word!r} twice; give each option once"
        seen.append(word)
        if word in COOKIE_ARGS:
            pattern, example = COOKIE_ARGS[word]
            arg = next(rest, None)
            if arg is None or not re.fullmatch(pattern, arg):
                return f"needs {example} after {word!r}"
        elif word not in COOKIE_MODES + COOKIE_FLAGS:
            known = ", ".join(COOKIE_MODES + COOKIE_FLAGS + tuple(COOKIE_ARGS))
            return f"has unknown option {word!r}; HAProxy's cookie options are {known}"
    if len([w for w in seen if w in COOKIE_MODES]) > 1:
        return "may use only one of rewrite, insert and prefix"
    if "rewrite" in seen and "indirect" in seen:
        return "may not use 'indirect' with 'rewrite', as HAProxy refuses"
    if "preserve" in seen and not {"insert", "indirect"} & set(seen):
        return "needs 'insert' or 'indirect' with 'preserve', as HAProxy does"
    return None


def _cookie(value: str) -> str:
    _no_control(value)
    problem = cookie_problem(value)
    if problem is not None:
        raise ValueError(f"{problem} (got {value!r})")
    return value


Cookie = Annotated[str, AfterValidator(_cookie)]

# ---------------------------------------------------------------------------- cross-field rules


def check_ports(spec: Spec) -> None:
    """Ports of one node must not clash, nor sit where the security groups open more widely.

    An LB node listens on TCP for http_port, https_port (when HTTPS is on), stats_port and
    admin.port, and on UDP for ha.port only: so ha.port may equal any of the TCP ports.

    :raises ValueError: naming the field to change.
    """
    h = spec.haproxy
    lb_tcp: list[tuple[str, int]] = [("haproxy.http_port", h.http_port)]
    if h.https:
        lb_tcp.append(("haproxy.https_port", h.https_port))
    lb_tcp += [("haproxy.stats_port", h.stats_port), ("admin.port", spec.admin.port)]
    for field, port in [*lb_tcp, ("web.port", spec.web.port)]:
        if port == SSH_PORT:
            raise ValueError(
                f"{field}: must not be {SSH_PORT}: SSH has it and the security groups open it "
                f"to more sources; pick another port (got {port})"
            )
    for field, port in lb_tcp[-2:]:
        if port == OPEN_HTTPS_PORT:
            raise ValueError(
                f"{field}: must not be {OPEN_HTTPS_PORT}: the LB security group opens it to "
                f"everyone (the original's rule), bypassing admin.cidrs; pick another port "
                f"(got {port})"
            )
    for i, (field, port) in enumerate(lb_tcp):
        for other, used in lb_tcp[:i]:
            if port == used:
                raise ValueError(
                    f"{field}: must differ from {other} (both {port}): an LB node serves one "
                    f"thing per TCP port; pick another port"
                )


def _vpc_addresses(spec: Spec) -> Iterator[tuple[str, str]]:
    net = spec.network
    yield "network.gateway", net.gateway
    for field in ("lb_primary", "lb_secondary"):
        for i, a in enumerate(getattr(net, field)):
            yield f"network.{field}.{i}", a
    first = ipaddress.IPv4Address(net.web_first)
    for i in range(spec.web.size):
        yield ("network.web_first" if i == 0 else f"network.web_first (web{i + 1})"), str(first + i)


def _inet_addresses(spec: Spec) -> Iterator[tuple[str, str]]:
    net = spec.network
    for field in ("igw_outside", "client", "dns"):
        yield f"network.{field}", getattr(net, field)


def _distinct(addresses: Iterable[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for field, a in addresses:
        if a in seen:
            raise ValueError(
                f"{field}: must differ from {seen[a]} (both {a}); every lab address is distinct"
            )
        seen[a] = field


def _not_edge(field: str, value: str, net: ipaddress.IPv4Network, where: str) -> None:
    a = ipaddress.IPv4Address(value)
    if a in (net.network_address, net.broadcast_address):
        raise ValueError(
            f"{field}: must not be the network or broadcast address of {where} {net} (got {a})"
        )


def check_lab(spec: Spec) -> None:
    """The lab platform's rules: every address in 198.18.0.0/15, where it belongs, and distinct.

    :raises ValueError: naming the field to change.
    """
    net = spec.network
    vpc = ipaddress.IPv4Network(net.vpc_cidr)
    inet = ipaddress.IPv4Network(net.internet_cidr)
    singles = [
        (f, getattr(net, f)) for f in ("gateway", "web_first", "igw_outside", "client", "dns")
    ]
    tuples = [(f, a) for f in ("lb_primary", "lb_secondary", "vips") for a in getattr(net, f)]
    for field, value in singles + tuples:
        if ipaddress.ip_address(value) not in LAB_RANGE:
            raise ValueError(
                f"network.{field}: must lie in {LAB_RANGE}, the only range "
                f"the lab uses (got {value})"
            )
    for field, cidr in (("vpc_cidr", vpc), ("internet_cidr", inet)):
        if not cidr.subnet_of(LAB_RANGE):
            raise ValueError(f"network.{field}: must lie in {LAB_RANGE} (got {cidr})")
    if vpc.overlaps(inet):
        raise ValueError("network.internet_cidr: must not overlap network.vpc_cidr")
    fixed_count = 1 + len(net.lb_primary) + len(net.lb_secondary)  # gateway and the LBs
    for field, value in list(_vpc_addresses(spec))[:fixed_count]:
        if ipaddress.ip_address(value) not in vpc:
            raise ValueError(f"{field}: must lie in network.vpc_cidr {vpc} (got {value})")
    for field, value in _inet_addresses(spec):
        if ipaddress.ip_address(value) not in inet:
            raise ValueError(f"{field}: must lie in network.internet_cidr {inet} (got {value})")
    first = ipaddress.ip_address(net.web_first)
    last = first + spec.web.size - 1
    if first not in vpc or last not in vpc or last == vpc.broadcast_address:
        raise ValueError(
            f"web.size: {spec.web.size} web nodes from network.web_first "
            f"{first} do not fit in network.vpc_cidr {vpc}"
        )
    for field, value in list(_vpc_addresses(spec))[: fixed_count + 1]:
        _not_edge(field, value, vpc, "network.vpc_cidr")
    for field, value in _inet_addresses(spec):
        _not_edge(field, value, inet, "network.internet_cidr")
    webs = {str(first + i) for i in range(spec.web.size)}
    fixed = [net.gateway, *net.lb_primary, *net.lb_secondary]
    clash = webs.intersection(fixed)
    if clash:
        raise ValueError(
            f"network.web_first: web addresses overlap other VPC addresses "
            f"({', '.join(sorted(clash, key=ipaddress.IPv4Address))})"
        )
    vips = [(f"network.vips.{i}", v) for i, v in enumerate(net.vips)]
    _distinct([*_vpc_addresses(spec), *_inet_addresses(spec), *vips])
    for vip in net.vips:
        if ipaddress.ip_address(vip) in vpc or ipaddress.ip_address(vip) in inet:
            raise ValueError(
                f"network.vips: floating IPs must lie outside vpc_cidr and "
                f"internet_cidr, as EIPs do (got {vip})"
            )
    _check_ping_nodes(spec, vpc)
    h = spec.haproxy
    if h.https and h.cert and not Path(h.cert).is_file():
        raise ValueError(f"haproxy.cert: file not found: {h.cert}")


def _check_ping_nodes(spec: Spec, vpc: ipaddress.IPv4Network) -> None:
    net = spec.network
    lbs = {a: f for f, a in list(_vpc_addresses(spec))[1 : 1 + 2 * len(net.lb_primary)]}
    for i, value in enumerate(spec.ha.ping_nodes):
        field = f"ha.ping_nodes.{i}"
        a = ipaddress.IPv4Address(value)
        if a not in LAB_RANGE:
            raise ValueError(
                f"{field}: must lie in {LAB_RANGE}, the only range the lab uses (got {value})"
            )
        if a not in vpc:
            raise ValueError(
                f"{field}: must lie in network.vpc_cidr {vpc}, the side the agents ping "
                f"from (got {value})"
            )
        _not_edge(field, value, vpc, "network.vpc_cidr")
        if value in lbs:
            raise ValueError(
                f"{field}: must not be an LB's own address ({lbs[value]}): a node always "
                f"reaches itself; use the gateway or another node (got {value})"
            )
