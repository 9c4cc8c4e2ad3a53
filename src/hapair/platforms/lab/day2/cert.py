"""``hapair cert rotate`` in the lab: a new certificate live on both LBs without a reload.

On each LB's stats socket: ``set ssl cert <path> <<`` with the new PEM opens a transaction
(HAProxy checks that key and certificate match); only when both LBs accepted it does
``commit ssl cert <path>`` make it live on each, for new handshakes (connections already up keep
theirs). A refusal on either LB aborts both transactions: nothing changes. Then the file on disk
is replaced atomically, so a later reload or restart serves the same certificate, and each LB is
asked over TLS which certificate it serves now.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from hapair import haproxy_runtime as rt
from hapair.errors import OperationError, UsageError
from hapair.fileio import write_atomic
from hapair.netns import call_in
from hapair.platforms.lab import configs
from hapair.platforms.lab.day2.scale import Say
from hapair.platforms.lab.day2.target import Target


def leaf_der(pem: str) -> bytes:
    """The first certificate of a PEM bundle, DER-encoded.

    :raises UsageError: there is none.
    """
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise UsageError("--cert: no certificate in the PEM")
    return ssl.PEM_cert_to_DER_cert(pem[start : stop + len(end)] + "\n")


def served_der(t: Target, lb: str, timeout: float = 3.0) -> bytes | None:
    """The certificate ``lb`` presents on its HTTPS port now (asked from inside its namespace),
    or None when it does not answer."""
    node = t.plan.node(lb)
    port = t.plan.spec.haproxy.https_port

    def ask(_ns: str) -> bytes:
        pem = ssl.get_server_certificate((node.address, port), timeout=timeout)
        return ssl.PEM_cert_to_DER_cert(pem)

    got = call_in([node.namespace], ask)[node.namespace]
    return got if isinstance(got, bytes) else None


def rotate(t: Target, pem: str | None, say: Say) -> None:
    """Put ``pem`` (certificate chain and key; None: a new self-signed one) live on both LBs.

    :raises UsageError: HTTPS is off, or the PEM is not a certificate with its key.
    :raises OperationError: an LB refused it (nothing changed) or does not serve it afterwards.
    """
    if not t.plan.spec.haproxy.https:
        raise UsageError(
            f"cert rotate: lab {t.name} does not serve HTTPS (set haproxy.https = true and "
            "`hapair apply`)"
        )
    path = configs.cert_path(t.plan, t.paths)
    assert path is not None
    if pem is None:
        pem = configs.self_signed_pem(t.plan.spec.cluster.domain)
        say(f"made a new self-signed certificate for {t.plan.spec.cluster.domain}")
    try:
        cmd = rt.set_ssl_cert(path, pem)
    except ValueError as exc:
        raise UsageError(f"--cert: {exc}") from None
    want = leaf_der(pem)
    socks = {lb.name: str(t.paths.haproxy_sock(lb.name)) for lb in t.plan.lbs}
    opened: list[str] = []
    try:
        for lb, sock in socks.items():
            rt.call(sock, cmd, "Transaction")
            opened.append(lb)
    except OperationError:
        for lb in opened:
            rt.call(socks[lb], rt.abort_ssl_cert(path), "aborted")
        raise
    say(f"both LBs accepted the new certificate for {path}; committing")
    for sock in socks.values():
        rt.call(sock, rt.commit_ssl_cert(path), "Success!")
    write_atomic(Path(path), pem if pem.endswith("\n") else pem + "\n", mode=0o600)
    wrong = [lb for lb in socks if served_der(t, lb) != want]
    if wrong:
        raise OperationError(f"{', '.join(wrong)} do not serve the new certificate after commit")
    say(f"{', '.join(socks)} serve the new certificate; {path} rewritten")
