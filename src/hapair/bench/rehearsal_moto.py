"""The boot rehearsal's moto: one in-process moto over HTTPS, served twice.

- on ``127.0.0.1`` in the root namespace: the rehearsal sets the cluster up through it, as
  ``up`` would;
- on the VPC router's address in the rehearsal's namespace: the instances' ``AWS_ENDPOINT_URL``.

Both serve the same backends, with a throwaway certificate for both addresses that the
instances trust through ``AWS_CA_BUNDLE``. HTTPS because the cluster's bucket policy denies
every request without TLS, as it should on AWS.

moto evaluates a bucket policy's conditions without the request's context (every statement with
a condition denies everything), so it is taught to evaluate them as IAM does, with the request's
``aws:SecureTransport`` and ``aws:PrincipalArn`` (the role of assumed-role credentials):
:mod:`hapair.bench.moto_policy`, which the aws tests use too.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, make_server

from . import rehearsal_net as net
from .moto_policy import evaluate_bucket_policies


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 and the router's address."""
    cert, key = folder / "moto.crt", folder / "moto.key"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    argv += ["-subj", "/CN=hapair-rehearsal-moto"]
    argv += ["-addext", f"subjectAltName=IP:127.0.0.1,IP:{net.ROUTER}"]
    subprocess.run([*argv, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


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
