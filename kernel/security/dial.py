"""Dialling a kernel (or a remote provider): a channel with TLS when there is a CA to trust, and
the credential to present, in one place for the CLI, the bridges and the router.

A client finds its credential in, in order: the variable named by `client.token_env`
(CORTEX_TOKEN by default: an API key), then `<data dir>/admin.token` when the kernel is this
user's own. TLS: `client.tls_ca` (else `<data dir>/tls/ca.pem` when the target's kernel here
serves TLS), with `client.tls_cert` / `tls_key` for mutual TLS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from .credentials import read_admin_token


def _read(path: str, what: str) -> bytes:
    try:
        return Path(os.path.expanduser(path)).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path!r} cannot be read: {exc.strerror}") from None


@dataclass(frozen=True)
class Dial:
    """How to reach one endpoint: its TLS material (None: plaintext) and the bearer token."""

    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    token: str = ""
    # the credential may act for others (the admin token): a bridge names its client then
    act_as: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        cert = _read(self.tls_cert, "tls_cert") if self.tls_cert else None
        key = _read(self.tls_key, "tls_key") if self.tls_key else None
        return grpc.ssl_channel_credentials(_read(self.tls_ca, "tls_ca"), key, cert)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self, target: str, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
        if self.tls:
            return grpc.secure_channel(target, self.channel_credentials(), options=options)
        return grpc.insecure_channel(target, options=options)

    def aio_channel(self, target: str, options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
        if self.tls:
            return grpc.aio.secure_channel(target, self.channel_credentials(), options=options)
        return grpc.aio.insecure_channel(target, options=options)


def client_dial(cfg: Any) -> Dial:
    """How the `cortex` CLI and `cortex mcp` reach the kernel of config `cfg` (its typed sections
    `client` and `kernel_section`)."""
    client, kernel = cfg.client, cfg.kernel_section
    token = os.environ.get(client.token_env or "CORTEX_TOKEN", "")
    admin = "" if token else read_admin_token(cfg.data_dir)
    ca = client.tls_ca
    if not ca and kernel.tls_cert:  # this machine's kernel serves TLS: trust the CA it was made with
        own = cfg.data_dir / "tls" / "ca.pem"
        ca = str(own) if own.exists() else kernel.tls_client_ca
    return Dial(ca, client.tls_cert, client.tls_key, token or admin, act_as=bool(admin))


def provider_dial(settings: Any) -> Dial:
    """How the router reaches a remote provider (`settings`: its [providers.NAME], a config
    ProviderSection: tls_ca, tls_cert, tls_key, token_env: the variable holding an API key of the
    kernel there)."""
    token_env = settings.token_env
    return Dial(settings.tls_ca, settings.tls_cert, settings.tls_key, os.environ.get(token_env, "") if token_env else "")
