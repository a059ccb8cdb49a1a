"""A local certificate authority for one kernel or a few: `cortex tls init` and `cortex tls issue`.

    <data dir>/tls/ca.pem, ca.key           the CA (keep ca.key private; copy ca.pem to clients)
    <data dir>/tls/server.pem, server.key   this kernel's certificate: localhost, 127.0.0.1, ::1
                                            and every --host given
    <data dir>/tls/NAME.pem, NAME.key       a client certificate (`cortex tls issue NAME`): a peer
                                            kernel or a client that presents it is `node:NAME`

ECDSA P-256 keys, SHA-256 signatures; the CA lives ten years, certificates two. An organisation
with its own CA sets kernel.tls_cert / tls_key / tls_client_ca to its files instead.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS, CERT_DAYS = 3650, 730
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def tls_dir(data_dir: Path) -> Path:
    return data_dir / "tls"


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cortex-OS"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    except FileNotFoundError:
        raise ValueError(f"no CA in {folder}: run `cortex tls init` first") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{folder / 'ca.key'} is not an EC private key")
    return cert, key


def _issue(common_name: str, hosts: list[str], usage: x509.ObjectIdentifier, folder: Path, stem: str) -> tuple[Path, Path]:
    ca_cert, ca_key = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}.key"
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path, key_path


def init_ca(data_dir: Path, hosts: Sequence[str] = (), force: bool = False) -> dict[str, Path]:
    """Make the CA (unless there is one) and this kernel's server certificate."""
    folder = tls_dir(data_dir)
    if not (folder / "ca.pem").exists() or force:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = _name(f"Cortex-OS local CA ({data_dir.name})")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )
        _write(folder / "ca.key", _key_pem(key), private=True)
        _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
    server, server_key = _issue(
        "cortex-kernel", [*LOOPBACK_NAMES, *hosts], ExtendedKeyUsageOID.SERVER_AUTH, folder, "server"
    )
    return {"ca": folder / "ca.pem", "cert": server, "key": server_key}


def issue_client(data_dir: Path, name: str) -> tuple[Path, Path]:
    """A client certificate whose holder is `node:NAME` to kernels that trust this CA."""
    if not name or not all(c.isalnum() or c in "._-" for c in name) or len(name) > 64:
        raise ValueError(f"client name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    if name in ("ca", "server"):
        raise ValueError(f"{name!r} is taken by the CA's own files; choose another name")
    return _issue(name, [], ExtendedKeyUsageOID.CLIENT_AUTH, tls_dir(data_dir), name)
