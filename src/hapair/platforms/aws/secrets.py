"""The cluster's secrets in SSM Parameter Store: one SecureString per secret, per cluster.

``/hapair/<cluster>/cluster-key`` (the heartbeat HMAC key, hex), ``admin-token`` (the agents'
API token) and ``stats-password`` (HAProxy's stats page). ``up`` creates the missing ones with
random values (the stats password from ``haproxy.stats_password`` when the spec sets one),
tagged with the cluster; ``hapair secrets rotate`` writes new values; ``down`` deletes them.
Only the LB role may read them, and only this cluster's path (``iam.lb_policy``); no secret is
ever in user data. The LBs fetch them at boot and every minute (``nodesync``).
"""

from __future__ import annotations

import secrets as random_secrets
from collections.abc import Callable, Iterable

from hapair.errors import UsageError
from hapair.platforms.aws.client import Aws, cluster_tags

#: The secrets, and how a new value of each is made.
SECRETS: dict[str, Callable[[], str]] = {
    "cluster-key": lambda: random_secrets.token_hex(32),
    "admin-token": lambda: random_secrets.token_hex(32),
    "stats-password": lambda: random_secrets.token_hex(12),
}


def path(cluster: str) -> str:
    """The cluster's path in Parameter Store."""
    return f"/hapair/{cluster}"


def parameter(cluster: str, secret: str) -> str:
    """The full name of one secret's parameter."""
    return f"{path(cluster)}/{secret}"


def existing(aws: Aws, cluster: str) -> dict[str, str]:
    """Parameter name -> type of the cluster's parameters (values are not read)."""
    out: dict[str, str] = {}
    token: str | None = None
    while True:
        page = aws.must(
            aws.ssm.get_parameters_by_path,
            f"ssm path {path(cluster)}",
            Path=path(cluster),
            WithDecryption=False,
            **({"NextToken": token} if token else {}),
        )
        out.update({p["Name"]: p["Type"] for p in page.get("Parameters", [])})
        token = page.get("NextToken")
        if not token:
            return out


def _put(aws: Aws, cluster: str, secret: str, value: str, *, overwrite: bool) -> None:
    name = parameter(cluster, secret)
    kwargs: dict[str, object] = {
        "Name": name,
        "Value": value,
        "Type": "SecureString",
        "Description": f"hapair {cluster}: {secret}",
    }
    if overwrite:
        kwargs["Overwrite"] = True
    else:
        kwargs["Tags"] = cluster_tags(cluster, secret.replace("-", "_"))
    aws.must(aws.ssm.put_parameter, f"ssm parameter {name}", **kwargs)


def ensure_secrets(aws: Aws, cluster: str, stats_password: str = "") -> list[str]:
    """Create the missing secrets; a ``stats_password`` from the spec replaces the stored one
    when they differ.

    :returns: the secrets created or changed.
    """
    have = existing(aws, cluster)
    changed = []
    for secret, make in SECRETS.items():
        name = parameter(cluster, secret)
        if name not in have:
            value = stats_password if secret == "stats-password" and stats_password else make()
            _put(aws, cluster, secret, value, overwrite=False)
            changed.append(secret)
        elif secret == "stats-password" and stats_password:
            current = read_secrets(aws, cluster, [secret])[secret]
            if current != stats_password:
                _put(aws, cluster, secret, stats_password, overwrite=True)
                changed.append(secret)
    return changed


def rotate(aws: Aws, cluster: str, which: Iterable[str] = ()) -> list[str]:
    """Write new random values of ``which`` (default: every secret).

    :returns: the secrets rotated.
    :raises UsageError: an unknown secret, or the cluster has no secrets here.
    """
    chosen = list(which) or list(SECRETS)
    unknown = [s for s in chosen if s not in SECRETS]
    if unknown:
        raise UsageError(f"unknown secret {', '.join(unknown)}: choose from {', '.join(SECRETS)}")
    have = existing(aws, cluster)
    if not have:
        raise UsageError(f"no secrets of cluster {cluster} in {aws.region}: run `hapair up` first")
    for secret in chosen:
        _put(aws, cluster, secret, SECRETS[secret](), overwrite=parameter(cluster, secret) in have)
    return chosen


def read_secrets(aws: Aws, cluster: str, which: Iterable[str] = ()) -> dict[str, str]:
    """Secret -> its current value (decrypted)."""
    names = [parameter(cluster, s) for s in (list(which) or list(SECRETS))]
    res = aws.must(
        aws.ssm.get_parameters, f"ssm path {path(cluster)}", Names=names, WithDecryption=True
    )
    return {p["Name"].rsplit("/", 1)[1]: p["Value"] for p in res.get("Parameters", [])}


def delete_secrets(aws: Aws, names: list[str]) -> None:
    """Delete the given parameters (ten per call, as SSM allows)."""
    for i in range(0, len(names), 10):
        aws.must(aws.ssm.delete_parameters, "ssm parameters", Names=names[i : i + 10])
