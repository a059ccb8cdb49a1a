"""One rule for every listener (gRPC, HTTP/JSON, MCP over HTTP, A2A): a listener leaves loopback
only with TLS and with credentials required of every caller. Anything less would hand the
kernel to whoever can reach the port: a caller without a credential is `local` on loopback only
because only this machine can be there.

    [kernel]
    tls_cert = "~/.cortex/tls/server.pem"     # `cortex tls init` makes these
    tls_key = "~/.cortex/tls/server.key"
    tls_client_ca = "~/.cortex/tls/ca.pem"    # mutual TLS: every client shows a certificate from this
                                              # CA; one without a bearer key is node:<its CN>
    require_credentials = true                # no `local` principal, even on loopback
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from .remote import is_loopback_host


def _path(value: str) -> str:
    return str(Path(os.path.expanduser(value))) if value else ""


@dataclass(frozen=True)
class Exposure:
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    require_credentials: bool = False

    @classmethod
    def from_config(cls, kernel: dict[str, Any]) -> Exposure:
        return cls(_path(kernel["tls_cert"]), _path(kernel["tls_key"]), _path(kernel["tls_client_ca"]),
                   bool(kernel["require_credentials"]))

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def check(self, listen: str, setting: str) -> None:
        """ValueError naming what to set, for a listener beyond loopback without TLS and credentials."""
        host = listen.rpartition(":")[0].strip("[]")
        if is_loopback_host(host):
            return
        missing = []
        if not self.tls:
            missing.append("kernel.tls_cert and kernel.tls_key (`cortex tls init` makes a local CA and a certificate)")
        if not self.require_credentials:
            missing.append("kernel.require_credentials = true (callers then send an API key: `cortex keys create NAME`)")
        if missing:
            raise ValueError(
                f"{setting} = {listen!r} is not loopback, so it needs TLS and credentials: set {' and '.join(missing)}; "
                "or listen on 127.0.0.1"
            )

    def read_files(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, key, client CA or None); ValueError naming an unreadable file."""
        def read(path: str, what: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ValueError(f"{what} {path!r} cannot be read: {exc.strerror}") from None

        if not self.tls_key:
            raise ValueError("kernel.tls_cert is set but kernel.tls_key is not: set both")
        ca = read(self.tls_client_ca, "kernel.tls_client_ca") if self.tls_client_ca else None
        return read(self.tls_cert, "kernel.tls_cert"), read(self.tls_key, "kernel.tls_key"), ca

    def server_credentials(self) -> grpc.ServerCredentials:
        cert, key, ca = self.read_files()
        # with a client CA, every client must show a certificate it signed (grpc offers no
        # "verify if shown": without requiring, it does not ask for one at all)
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def uvicorn_settings(self) -> dict[str, str]:
        """TLS settings for an HTTP listener (uvicorn.Config keywords); {} without TLS."""
        if not self.tls:
            return {}
        self.read_files()  # fail with the setting's name, not deep inside uvicorn
        return {"ssl_certfile": self.tls_cert, "ssl_keyfile": self.tls_key}
