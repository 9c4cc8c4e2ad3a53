"""The cluster's desired document in SSM Parameter Store, as the operator's side sees it.

``/hapair/<cluster>/desired``: a standard-tier ``String`` parameter (not a secret: the
document holds none, see :mod:`hapair.day2.desired`), tagged with the cluster, overwritten by
each ``up``, ``apply``, ``scale``, ``restart`` and ``cert rotate``; SSM numbers every put (the
parameter's ``Version``), and the LBs' followers apply each new version once and acknowledge
it (:mod:`.acks`). ``down`` deletes it with the secrets (it lives
under the same path).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from hapair.day2.desired import DesiredDoc, DocumentError, Server, decode, encode, make_document
from hapair.plan import Plan
from hapair.platforms.aws.client import Aws, cluster_tags
from hapair.platforms.aws.layout import AwsLayout
from hapair.platforms.aws.secrets import path as secrets_path
from hapair.platforms.aws.timing import effective_ha

#: The parameter's last path element.
NAME = "desired"


def parameter(cluster: str) -> str:
    """The full name of the cluster's desired-document parameter."""
    return f"{secrets_path(cluster)}/{NAME}"


def document(
    plan: Plan, layout: AwsLayout, drain: Iterable[Server] = (), keep: DesiredDoc | None = None
) -> DesiredDoc:
    """The document for ``plan``: its [haproxy] settings, every web server of ``layout`` ready,
    then ``drain`` (servers on their way out) in drain, and the agent timings AWS runs with.

    :param keep: the running document, whose certificate reference and restart generations
        carry over (they are not in the spec: ``cert rotate`` and ``restart`` set them).
    """
    servers = [Server(w.name, w.private_ip) for w in layout.webs]
    servers += [Server(s.name, s.address, "drain") for s in drain]
    spec = plan.spec
    doc = make_document(plan.name, spec.haproxy, spec.web.port, servers, effective_ha(spec))
    if keep is None:
        return doc
    return replace(doc, cert=keep.cert, restarts=dict(keep.restarts))


def publish(aws: Aws, cluster: str, doc: DesiredDoc) -> int:
    """Put ``doc`` as the parameter's new version (created and tagged the first time).

    :returns: the version SSM gave it.
    :raises DocumentError: the document does not fit a standard-tier parameter.
    :raises CloudError: the put failed.
    """
    name = parameter(cluster)
    value = encode(doc)
    common: dict[str, Any] = {
        "Name": name,
        "Value": value,
        "Type": "String",
        "Tier": "Standard",
        "Description": f"hapair {cluster}: the LBs' desired configuration ({doc.digest()})",
    }
    return put_versioned(aws, cluster, NAME, common)


def put_versioned(aws: Aws, cluster: str, tag_name: str, common: dict[str, Any]) -> int:
    """Put an SSM parameter (``common``: Name, Value, Type, Tier, Description): created and
    tagged with the cluster the first time, overwritten after; returns the version SSM gave.

    :raises CloudError: the put failed.
    """
    name = common["Name"]
    res = aws.call(
        aws.ssm.put_parameter,
        f"ssm parameter {name}",
        ignore=("ParameterAlreadyExists",),
        Tags=cluster_tags(cluster, tag_name),
        **common,
    )
    if res is None:
        res = aws.must(aws.ssm.put_parameter, f"ssm parameter {name}", Overwrite=True, **common)
    return int(res["Version"])


def current(aws: Aws, cluster: str) -> tuple[DesiredDoc | None, int]:
    """The document the LBs follow now and its version (None, 0: never published).

    :raises DocumentError: the stored value is not a valid document.
    """
    name = parameter(cluster)
    res = aws.call(
        aws.ssm.get_parameter, f"ssm parameter {name}", ignore=("ParameterNotFound",), Name=name
    )
    if res is None:
        return None, 0
    p = res["Parameter"]
    return decode(str(p.get("Value", "")), cluster), int(p.get("Version", 0))


def running(aws: Aws, cluster: str) -> DesiredDoc | None:
    """The document the LBs follow now, or None (never published, or not a valid document:
    then nothing of it can carry over)."""
    try:
        return current(aws, cluster)[0]
    except DocumentError:
        return None
