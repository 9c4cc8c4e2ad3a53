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
- :func:`print_cloud_init`: moto's GetConsoleOutput prints one fixed kernel log, with no
  cloud-init line; a booted instance's console ends with cloud-init's "finished" line, which
  ``apply`` waits for. :data:`console` says what each instance prints (tests replace it).
- :data:`EIP_LOG`: every AssociateAddress and DisassociateAddress the server handles, with
  the state of every EIP right after it, and an optional latency per call (:data:`LATENCY`).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.models.elastic_ip_addresses import ElasticAddress
from moto.ec2.responses.elastic_ip_addresses import ElasticIPAddresses
from moto.ec2.responses.general import General
from moto.ec2.utils import Base64EncodedString
from moto.iam.access_control import PermissionResult
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from hapair.bench.moto_policy import evaluate_bucket_policies, policy_decision

__all__ = [
    "EIP_LOG",
    "LATENCY",
    "PermissionResult",
    "evaluate_bucket_policies",
    "policy_decision",
]

ACCOUNT = "123456789012"

#: (time, operation, allocation id, ENI, private ip) of every EIP change, and after each
#: change the allocations left with no association.
EIP_LOG: list[dict[str, Any]] = []
#: Seconds each AssociateAddress / DescribeAddresses handled by the server takes (API latency).
LATENCY: dict[str, float] = {"AssociateAddress": 0.0, "DescribeAddresses": 0.0}
_LOCK = threading.Lock()

CLOUD_INIT_RUNNING = "Cloud-init v. 22.4.2 running 'modules:final' at Tue, 24 Nov 2026 17:00:00"
CLOUD_INIT_DONE = (
    f"{CLOUD_INIT_RUNNING}\nCloud-init v. 22.4.2 finished at Tue, 24 Nov 2026 17:01:00 +0000. "
    "Datasource DataSourceEc2Local.  Up 61.20 seconds\n"
)


def console(instance_id: str) -> str:
    """What instance ``instance_id`` prints on its console: a finished cloud-init."""
    return CLOUD_INIT_DONE


def print_cloud_init() -> None:
    """GetConsoleOutput answers :data:`console` of the instance (looked up at each call)."""
    if getattr(General, "_hapair_patched", False):
        return

    def get_console_output(self: Any) -> ActionResult:
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        text = globals()["console"](instance.id)
        return ActionResult(
            {
                "InstanceId": instance.id,
                "Timestamp": utcnow(),
                "Output": Base64EncodedString.from_raw_string(text),
            }
        )

    General.get_console_output = get_console_output  # type: ignore[method-assign]
    General._hapair_patched = True  # type: ignore[attr-defined]


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
