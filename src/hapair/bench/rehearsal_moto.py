"""The boot rehearsal's moto: one in-process moto over HTTPS, served twice.

- on ``127.0.0.1`` in the root namespace: the rehearsal sets the cluster up through it, as
  ``up`` would;
- on the VPC router's address in the rehearsal's namespace: the instances' ``AWS_ENDPOINT_URL``.

Both serve the same backends, with a throwaway certificate for both addresses that the
instances trust through ``AWS_CA_BUNDLE``. HTTPS because the cluster's bucket policy denies
every request without TLS, as it should on AWS.

moto evaluates a bucket policy's conditions without the request's context (every statement with
a condition denies everything), so it is taught to evaluate them as IAM does, with the request's
``aws:SecureTransport`` and ``aws:PrincipalArn`` (the role of assumed-role credentials): the
same teaching as the tests' ``tests/aws/motofix.py``, which src cannot import.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from . import rehearsal_net as net

_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "hapair_rehearsal_s3_context", default=None
)
_OPERATORS = {
    "StringEquals": lambda want, got: got in want,
    "StringNotEquals": lambda want, got: got not in want,
    "Bool": lambda want, got: got.lower() in [w.lower() for w in want],
}


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 and the router's address."""
    cert, key = folder / "moto.crt", folder / "moto.key"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    argv += ["-subj", "/CN=hapair-rehearsal-moto"]
    argv += ["-addext", f"subjectAltName=IP:127.0.0.1,IP:{net.ROUTER}"]
    subprocess.run([*argv, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def _principal(request: Any) -> str:
    from moto.sts.models import sts_backends

    auth = request.headers.get("Authorization", "")
    m = re.search(r"Credential=([A-Z0-9]+)/", auth)
    key = m.group(1) if m else ""
    for partitions in sts_backends.values():
        for backend in partitions.values():
            role = backend.get_assumed_role_from_access_key(key) if key else None
            if role is not None:
                account = role.role_arn.split(":")[4]
                return f"arn:aws:iam::{account}:role/{role.role_arn.split('/')[-1]}"
    return "arn:aws:iam::123456789012:user/operator"


def policy_decision(
    policy: dict[str, Any], action: str, resource: str, context: dict[str, str]
) -> Any:
    """A resource policy's verdict: a matching Deny wins, then a matching Allow, else neutral
    (a condition on a key the context lacks does not match)."""
    from moto.iam.access_control import IAMPolicyStatement, PermissionResult

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
            for k, want in pairs.items():
                wanted = [str(w) for w in (want if isinstance(want, list) else [want])]
                if test is None or k not in context or not test(wanted, context[k]):
                    ok = False
        if not ok:
            continue
        if st["Effect"] == "Deny":
            return PermissionResult.DENIED
        verdict = PermissionResult.PERMITTED
    return verdict


def evaluate_bucket_policies() -> None:
    """Teach moto to evaluate bucket policies with the request's TLS and signer."""
    from moto.iam.access_control import PermissionResult
    from moto.s3.models import FakeBucket
    from moto.s3.responses import S3Response

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
        return policy_decision(
            json.loads(self.policy.decode()), action, resource, _CONTEXT.get() or {}
        )

    S3Response._key_response = _key_response  # type: ignore[method-assign]
    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]
    FakeBucket._hapair_patched = True  # type: ignore[attr-defined]


class MotoServers:
    """One moto over HTTPS, on 127.0.0.1 (the rehearsal) and on the router's address in the
    namespace (the instances)."""

    def __init__(self, folder: Path) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        evaluate_bucket_policies()
        self.cert, self.key = make_certificate(folder)
        self._app = DomainDispatcherApplication(create_backend_app)
        self._servers: list[BaseWSGIServer] = []

    def _serve(self, server: BaseWSGIServer) -> None:
        threading.Thread(target=server.serve_forever, name="moto", daemon=True).start()
        self._servers.append(server)

    def start(self) -> tuple[str, str]:
        """Start both; returns (the local URL, the instances' URL)."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        tls = (str(self.cert), str(self.key))
        local = make_server("127.0.0.1", 0, self._app, threaded=True, ssl_context=tls)
        self._serve(local)
        sock = net.listen_in_namespace(net.ROUTER, net.MOTO_PORT)
        try:
            inside = make_server(
                net.ROUTER,
                net.MOTO_PORT,
                self._app,
                threaded=True,
                ssl_context=tls,
                fd=sock.fileno(),
            )
        finally:
            sock.close()  # the server holds its own duplicate
        self._serve(inside)
        return f"https://127.0.0.1:{local.server_port}", f"https://{net.ROUTER}:{net.MOTO_PORT}"

    def stop(self) -> None:
        """Stop both servers."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
