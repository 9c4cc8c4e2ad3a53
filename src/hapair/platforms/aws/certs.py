"""The cluster's TLS certificate in SSM Parameter Store: how it gets there and how an LB reads it.

``/hapair/<cluster>/cert`` is a ``SecureString`` holding one PEM (the chain, then its private
key), tagged with the cluster, readable only by the LB role (its grant on
``/hapair/<cluster>/*``, as for the other secrets). Every put is a new parameter version; the
desired document names the version and the PEM's SHA-256 (:class:`~hapair.day2.desired.CertRef`),
never the PEM, and each LB's follower fetches exactly that version (``name:version``), checks
the digest and the pair, and puts it live (:mod:`.follower`).

The tier is ``Intelligent-Tiering``: SSM keeps the parameter standard (free, 4 KB) while the PEM
fits, and makes it advanced (8 KB, 0.05 USD a month) when a longer one comes (a chain with an
intermediate certificate and a 2048-bit key is about 5 KB), without hapair choosing; an advanced
parameter never goes back to standard. A PEM over 8 KB is refused before any call.

``up`` and ``apply`` put one the first time the document has HTTPS on and no certificate (the
spec's ``haproxy.cert``, else a new self-signed one), so both LBs serve the same certificate;
``hapair cert rotate`` puts a new one. ``down`` deletes the parameter with the secrets.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from hapair.day2.desired import CertRef, DesiredDoc
from hapair.day2.pem import PemError, check_pem, digest, self_signed
from hapair.errors import OperationError, UsageError
from hapair.platforms.aws.client import Aws
from hapair.platforms.aws.desired import put_versioned
from hapair.platforms.aws.secrets import path as secrets_path
from hapair.spec import Spec

#: The parameter's last path element.
NAME = "cert"
TIER = "Intelligent-Tiering"


def parameter(cluster: str) -> str:
    """The full name of the cluster's certificate parameter."""
    return f"{secrets_path(cluster)}/{NAME}"


def put(aws: Aws, cluster: str, pem: str) -> CertRef:
    """Check ``pem`` and put it as the parameter's new version (created and tagged the first
    time).

    :returns: the reference a desired document carries.
    :raises PemError: not a certificate with its matching key (nothing was put).
    :raises CloudError: the put failed.
    """
    text = check_pem(pem)
    name = parameter(cluster)
    common: dict[str, Any] = {
        "Name": name,
        "Value": text,
        "Type": "SecureString",
        "Tier": TIER,
        "Description": f"hapair {cluster}: the LBs' TLS certificate and key",
    }
    return CertRef(put_versioned(aws, cluster, NAME, common), digest(text))


def spec_pem(spec: Spec) -> tuple[str, str]:
    """The certificate a cluster starts with, and where it comes from: the spec's
    ``haproxy.cert`` file, else a new self-signed one for ``cluster.domain``.

    :raises UsageError: the file cannot be read.
    :raises OperationError: openssl failed.
    """
    if spec.haproxy.cert:
        try:
            return Path(spec.haproxy.cert).read_text(), spec.haproxy.cert
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"haproxy.cert: cannot read {spec.haproxy.cert}: {exc}") from None
    domain = spec.cluster.domain
    return self_signed(domain), f"a new self-signed certificate for {domain}"


def put_initial(aws: Aws, spec: Spec) -> tuple[CertRef, str]:
    """Put the certificate a cluster starts with (:func:`spec_pem`); returns its reference and
    where it came from.

    :raises UsageError: the spec's file is not a certificate with its key.
    """
    pem, where = spec_pem(spec)
    try:
        return put(aws, spec.cluster.name, pem), where
    except PemError as exc:
        raise UsageError(f"haproxy.cert: {where}: {exc}") from None


def with_initial(aws: Aws, spec: Spec, doc: DesiredDoc) -> tuple[DesiredDoc, str]:
    """``doc`` with the cluster's first certificate when it has HTTPS on and none yet (put
    first: :func:`put_initial`), and a sentence saying so; ``doc`` and "" otherwise."""
    if not doc.haproxy.https or doc.cert is not None:
        return doc, ""
    ref, where = put_initial(aws, spec)
    line = f"certificate put in {parameter(spec.cluster.name)} (version {ref.version}): {where}"
    return replace(doc, cert=ref), line


def fetch(ssm: Any, name: str, ref: CertRef) -> str:
    """On an LB: version ``ref.version`` of parameter ``name``, checked against ``ref.sha256``
    and as a certificate with its key; returns the PEM (normalized).

    :param ssm: a boto3 SSM client (the LB role's).
    :raises OperationError: the call failed, that version does not exist, or the PEM is not the
        one the document names or not a matching pair (the reason in the message).
    """
    selector = f"{name}:{ref.version}"
    try:
        res = ssm.get_parameters(Names=[selector], WithDecryption=True)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        raise OperationError(f"certificate {selector}: {code}", code) from exc
    except BotoCoreError as exc:
        raise OperationError(f"certificate {selector}: {exc}") from exc
    found = res.get("Parameters", [])
    if not found:
        raise OperationError(f"certificate {selector}: no such parameter version")
    pem = str(found[0].get("Value", ""))
    if digest(pem) != ref.sha256:
        raise OperationError(
            f"certificate {selector}: its SHA-256 is not {ref.sha256[:16]}... as the document says"
        )
    try:
        return check_pem(pem)
    except PemError as exc:
        raise OperationError(f"certificate {selector}: {exc}") from None
