"""A TLS certificate for HAProxy as one PEM (the chain, then its private key): check it before
it goes anywhere, and name it by digest.

Used on both sides of ``hapair cert rotate`` on AWS: the operator's CLI checks a PEM before it
puts it in SSM, and each LB's follower checks what it fetched before HAProxy sees it. The check
is Python's own TLS stack loading the pair (``SSLContext.load_cert_chain``: OpenSSL refuses a
key that does not match the certificate), on a private temporary file; the PEM's lines must also
be what HAProxy's ``set ssl cert <path> <<`` payload may carry.
"""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import tempfile
from pathlib import Path

from hapair import haproxy_runtime as rt
from hapair.errors import HapairError, OperationError

#: The most characters a PEM may have: an advanced-tier SSM parameter's limit.
MAX_PEM = 8192


class PemError(HapairError, ValueError):
    """A PEM is not a certificate chain with its matching private key; the message says why."""


def normalized(pem: str) -> str:
    """``pem`` with Unix line ends and one final newline (the bytes that are stored, digested
    and written to disk, the same on every LB)."""
    text = pem.replace("\r\n", "\n").strip("\n")
    return text + "\n"


def digest(pem: str) -> str:
    """The SHA-256 (64 hex digits) of the normalized PEM."""
    return hashlib.sha256(normalized(pem).encode()).hexdigest()


def check_pem(pem: str) -> str:
    """Check that ``pem`` is a certificate (chain) with its matching private key, fit for
    HAProxy's runtime API; returns it normalized.

    :raises PemError: it is too long, lacks a certificate or a key, holds a line that is not
        PEM, or the key does not match the certificate (OpenSSL's words in the message).
    """
    text = normalized(pem)
    if len(text) > MAX_PEM:
        raise PemError(f"{len(text)} characters, more than an SSM parameter holds ({MAX_PEM})")
    try:
        rt.set_ssl_cert("/check", text)  # the payload rules: certificate, key, PEM lines
    except ValueError as exc:
        raise PemError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="hapair-pem-") as tmp:
        path = Path(tmp) / "cert.pem"
        path.touch(mode=0o600)
        path.write_text(text)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(path))
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            if "KEY_VALUES_MISMATCH" in str(exc):
                reason = "the private key does not match the certificate"
            raise PemError(reason.lower() if reason.isupper() else reason) from None
    return text


def self_signed(domain: str, days: int = 365) -> str:
    """A new self-signed certificate for ``domain`` and its key (RSA 2048), as one PEM.

    :raises OperationError: openssl failed or is missing.
    """
    with tempfile.TemporaryDirectory(prefix="hapair-cert-") as tmp:
        key, crt = Path(tmp) / "key.pem", Path(tmp) / "crt.pem"
        argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days)]
        argv += ["-subj", f"/CN={domain}", "-keyout", str(key), "-out", str(crt)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OperationError(f"openssl could not make a certificate: {exc}") from exc
        if proc.returncode != 0:
            raise OperationError(f"openssl could not make a certificate: {proc.stderr.strip()}")
        return normalized(crt.read_text() + key.read_text())
