"""What the tests teach the in-process moto server so that it behaves as AWS does where hapair
depends on it, and what they read from it. Loopback only.

- :class:`TlsMotoServer`: moto over HTTPS with a throwaway certificate for 127.0.0.1 (the
  clients trust it through ``AWS_CA_BUNDLE``), so that ``aws:SecureTransport`` is true as it is
  against AWS.
- :func:`honour_private_ip`: moto 5.2 ignores ``PrivateIpAddress`` in AssociateAddress; real
  EC2 associates the address asked for (the agent puts the peer's VIP on its secondary one).
- :func:`evaluate_bucket_policies`: moto evaluates a bucket policy's conditions without the
  request's context, knows only ``StringEquals`` and denies when a condition does not match,
  so every statement with a condition denies everything. Evaluate it as IAM does
  (:func:`policy_decision`) with the request's ``aws:SecureTransport`` (its scheme) and
  ``aws:PrincipalArn`` (the role of assumed-role credentials, else an IAM user).
- :data:`EIP_LOG`: every AssociateAddress and DisassociateAddress the server handles, with
  the state of every EIP right after it, and an optional latency per call (:data:`LATENCY`).
"""

from __future__ import annotations

import contextvars
import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from moto.ec2.models.elastic_ip_addresses import ElasticAddress
from moto.ec2.responses.elastic_ip_addresses import ElasticIPAddresses
from moto.iam.access_control import IAMPolicyStatement, PermissionResult
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import FakeBucket
from moto.s3.responses import S3Response
from moto.sts.models import sts_backends
from werkzeug.serving import make_server

__all__ = ["EIP_LOG", "LATENCY", "PermissionResult", "policy_decision"]

ACCOUNT = "123456789012"

#: (time, operation, allocation id, ENI, private ip) of every EIP change, and after each
#: change the allocations left with no association.
EIP_LOG: list[dict[str, Any]] = []
#: Seconds each AssociateAddress / DescribeAddresses handled by the server takes (API latency).
LATENCY: dict[str, float] = {"AssociateAddress": 0.0, "DescribeAddresses": 0.0}
_LOCK = threading.Lock()


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (valid two days)."""
    cert, key = folder / "moto.crt", folder / "moto.key"
    argv = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
    argv += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*argv.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )
    return cert, key


class TlsMotoServer(ThreadedMotoServer):
    """moto's threaded server, over HTTPS, on 127.0.0.1 and a free port."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self._tls = (str(cert), str(key))

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self._ip_address,
            self._port,
            app,
            True,
            request_handler=MotoRequestHandler,
            ssl_context=self._tls,
        )
        self._server_ready_event.set()
        self._server.serve_forever()


def _eip_state(backend: Any) -> list[str]:
    return sorted(a.allocation_id for a in backend.addresses if a.eni is None)


def honour_private_ip() -> None:
    """Keep the private address AssociateAddress asked for; log every association change."""
    if getattr(ElasticIPAddresses, "_hapair_patched", False):
        return
    associate, disassociate = (
        ElasticIPAddresses.associate_address,
        ElasticIPAddresses.disassociate_address,
    )
    describe = ElasticIPAddresses.describe_addresses

    def associate_address(self: Any) -> Any:
        time.sleep(LATENCY["AssociateAddress"])
        with _LOCK:
            result = associate(self)
            wanted = self._get_param("PrivateIpAddress")
            alloc = self._get_param("AllocationId")
            if alloc:
                for eip in self.ec2_backend.address_by_allocation([alloc]):
                    eip._hapair_private_ip = wanted
            EIP_LOG.append(
                {
                    "at": time.monotonic(),
                    "op": "AssociateAddress",
                    "allocation": alloc,
                    "eni": self._get_param("NetworkInterfaceId"),
                    "ip": wanted,
                    "unassociated": _eip_state(self.ec2_backend),
                }
            )
        return result

    def disassociate_address(self: Any) -> Any:
        with _LOCK:
            result = disassociate(self)
            EIP_LOG.append(
                {
                    "at": time.monotonic(),
                    "op": "DisassociateAddress",
                    "association": self._get_param("AssociationId"),
                    "unassociated": _eip_state(self.ec2_backend),
                }
            )
        return result

    def describe_addresses(self: Any) -> Any:
        time.sleep(LATENCY["DescribeAddresses"])
        return describe(self)

    def private_ip_address(self: Any) -> str | None:
        if not self.eni:
            return None
        return getattr(self, "_hapair_private_ip", None) or self.eni.private_ip_address

    ElasticIPAddresses.associate_address = associate_address  # type: ignore[method-assign]
    ElasticIPAddresses.disassociate_address = disassociate_address  # type: ignore[method-assign]
    ElasticIPAddresses.describe_addresses = describe_addresses  # type: ignore[method-assign]
    ElasticAddress.private_ip_address = property(private_ip_address)  # type: ignore[assignment,method-assign]
    ElasticIPAddresses._hapair_patched = True  # type: ignore[attr-defined]


_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "hapair_s3_context", default=None
)


def _principal(request: Any) -> str:
    """The ARN IAM would give ``aws:PrincipalArn`` for the request's signer."""
    auth = request.headers.get("Authorization", "")
    m = re.search(r"Credential=([A-Z0-9]+)/", auth)
    key = m.group(1) if m else ""
    for partitions in sts_backends.values():
        for backend in partitions.values():
            role = backend.get_assumed_role_from_access_key(key) if key else None
            if role is not None:
                return f"arn:aws:iam::{ACCOUNT}:role/{role.role_arn.split('/')[-1]}"
    return f"arn:aws:iam::{ACCOUNT}:user/operator"


_OPERATORS = {
    "StringEquals": lambda want, got: got in want,
    "StringNotEquals": lambda want, got: got not in want,
    "Bool": lambda want, got: got.lower() in [w.lower() for w in want],
}


def policy_decision(
    policy: dict[str, Any], action: str, resource: str, context: dict[str, str]
) -> Any:
    """IAM's verdict on one request from a resource policy: a matching Deny wins, then a
    matching Allow, else neutral. A statement matches when its action, resource and every
    condition do (a condition on a key the context lacks does not match)."""
    verdict = PermissionResult.NEUTRAL
    statements = policy["Statement"]
    for st in statements if isinstance(statements, list) else [statements]:
        checker = IAMPolicyStatement(st)
        if not checker._check_element_matches("Action", action):
            continue
        if not checker._check_element_matches("Resource", resource):
            continue
        ok = True
        for operator, pairs in st.get("Condition", {}).items():
            test = _OPERATORS.get(operator)
            for key, want in pairs.items():
                wanted = want if isinstance(want, list) else [want]
                if (
                    test is None
                    or key not in context
                    or not test([str(w) for w in wanted], context[key])
                ):
                    ok = False
        if not ok:
            continue
        if st["Effect"] == "Deny":
            return PermissionResult.DENIED
        verdict = PermissionResult.PERMITTED
    return verdict


def evaluate_bucket_policies() -> None:
    """Evaluate bucket policies with the request's TLS and signer (:func:`policy_decision`)."""
    if getattr(FakeBucket, "_hapair_patched", False):
        return
    key_response = S3Response._key_response

    def _key_response(self: Any, request: Any, full_url: str) -> Any:
        context = {
            "aws:SecureTransport": "true" if full_url.startswith("https://") else "false",
            "aws:PrincipalArn": _principal(request),
        }
        token = _CONTEXT.set(context)
        try:
            return key_response(self, request, full_url)
        finally:
            _CONTEXT.reset(token)

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        policy = json.loads(self.policy.decode())
        return policy_decision(policy, action, resource, _CONTEXT.get() or {})

    S3Response._key_response = _key_response  # type: ignore[method-assign]
    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]
    FakeBucket._hapair_patched = True  # type: ignore[attr-defined]
