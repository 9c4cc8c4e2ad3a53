"""Before ``apply`` on AWS changes anything: would the LBs accept the final document?

Each LB's follower renders haproxy.cfg from the desired document and checks it with
``haproxy -c`` (:mod:`.follower`); a refusal there comes late, after the security groups
changed and instances launched. :func:`check_document` renders the same file here, for every
LB, from the same document and with the LBs' own paths, and runs the same check first. Only
the secrets differ: a stand-in stats password, and for HTTPS a throwaway self-signed
certificate in place of the LB's (``haproxy -c`` opens it).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from hapair.day2.desired import DesiredDoc
from hapair.errors import OperationError, UsageError
from hapair.platforms.aws import userdata
from hapair.render.haproxy import check_haproxy, render_haproxy_settings

#: What the stats password is while checking (the LBs fill in the real one from SSM).
STAND_IN_PASSWORD = "stand-in-for-the-check"


def render_for(doc: DesiredDoc, node: str, cert_path: str | None = None) -> str:
    """LB ``node``'s haproxy.cfg for ``doc``, as its follower renders it (the LB's paths; the
    certificate at ``cert_path`` when given, else the LB's)."""
    return render_haproxy_settings(
        doc.haproxy,
        node=node,
        cluster=doc.cluster,
        web_port=doc.web_port,
        backends=[(s.name, s.address) for s in doc.servers],
        stats_socket=userdata.STATS_SOCKET,
        stats_password=STAND_IN_PASSWORD,
        cert_path=(cert_path or userdata.CERT_FILE) if doc.haproxy.https else None,
        server_state_file=userdata.SERVER_STATE_FILE,
    )


def check_document(
    doc: DesiredDoc, lbs: Iterable[str], check: Callable[[str], None] | None = None
) -> str:
    """Render ``doc``'s haproxy.cfg for each LB of ``lbs`` and check it (default
    ``haproxy -c``, only when haproxy is installed here).

    :returns: what was checked, as a sentence for the plan.
    :raises UsageError: a configuration is refused; the message names the LB and the reason.
    """
    names = list(lbs)
    if check is None:
        if shutil.which("haproxy") is None:
            return "haproxy is not installed here: each LB checks the configuration itself"
        check = check_haproxy
    with tempfile.TemporaryDirectory(prefix="hapair-precheck-") as tmp:
        cert = None
        if doc.haproxy.https:
            from hapair.platforms.lab.configs import self_signed_pem

            cert = Path(tmp) / "cert.pem"
            cert.write_text(self_signed_pem(f"{doc.cluster}.check", days=1))
        for node in names:
            try:
                check(render_for(doc, node, str(cert) if cert else None))
            except OperationError as exc:
                raise UsageError(
                    f"apply: the haproxy.cfg {node} would render from this spec is refused, "
                    f"nothing was changed: {exc}\nfix the [haproxy] settings of the spec"
                ) from None
    return f"haproxy -c accepts the haproxy.cfg of {', '.join(names)}"
