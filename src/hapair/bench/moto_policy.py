"""moto's S3 taught to evaluate bucket policies as IAM does, with the request's TLS and signer
(``aws:SecureTransport``, ``aws:PrincipalArn``): the cluster bucket's policy denies plain HTTP
and every principal but the cluster's roles, and moto alone ignores it. Used by the boot
rehearsal's moto server and by the aws tests' (tests/aws/motofix.py)."""

from __future__ import annotations

import contextvars
import json
import re
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "hapair_s3_context", default=None
)
_OPERATORS = {
    "StringEquals": lambda want, got: got in want,
    "StringNotEquals": lambda want, got: got not in want,
    "Bool": lambda want, got: got.lower() in [w.lower() for w in want],
}


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
