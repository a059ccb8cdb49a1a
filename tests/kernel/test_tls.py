"""TLS and mutual TLS with certificates from `cortex tls init` / `cortex tls issue`; the rule that no
listener leaves loopback without TLS and required credentials; governance failing closed."""

from __future__ import annotations

import asyncio
import re
import stat

import grpc
import pytest

from cortex.contracts.governance.v1 import governance_pb2 as gpb
from cortex.contracts.governance.v1 import governance_pb2_grpc
from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc
from cortex.kernel.security.credentials import KeyStore
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import audit_entries, cortex_env, run_cli, write_config


def tls_init(data_dir, *hosts):
    result = run_cli("tls", "init", *[a for h in hosts for a in ("--host", h)], env=cortex_env(data_dir))
    assert result.returncode == 0, result.stderr
    return data_dir / "tls"


def tls_config(folder, *, mutual: bool = False, require: bool = False) -> str:
    lines = ["[kernel]", f'tls_cert = "{folder / "server.pem"}"', f'tls_key = "{folder / "server.key"}"']
    if mutual:
        lines.append(f'tls_client_ca = "{folder / "ca.pem"}"')
    if require:
        lines.append("require_credentials = true")
    return "\n".join(lines) + "\n"


def secure(target, folder, cert: str = "", channels=None):
    key = (folder / f"{cert}.key").read_bytes() if cert else None
    chain = (folder / f"{cert}.pem").read_bytes() if cert else None
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes(), key, chain))
    if channels is not None:
        channels.append(channel)
    return channel


@pytest.fixture
def channels():
    opened: list[grpc.Channel] = []
    yield opened
    for channel in opened:
        channel.close()


def test_tls_init_makes_a_ca_and_a_certificate_for_this_machine(data_dir):
    from cryptography import x509

    folder = tls_init(data_dir, "box.example")
    cert = x509.load_pem_x509_certificate((folder / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "box.example"} <= set(names.get_values_for_type(x509.DNSName))
    assert {str(a) for a in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    for secret in ("ca.key", "server.key"):
        assert stat.S_IMODE((folder / secret).stat().st_mode) == 0o600


def test_a_key_over_tls(start_kernel, data_dir, channels):
    folder = tls_init(data_dir)
    target, _ = start_kernel(tls_config(folder, require=True), governance=True)
    key = KeyStore(data_dir).create("app", [])
    info = kernel_pb2_grpc.KernelServiceStub(secure(target, folder, channels=channels)).GetInfo(
        kernel_pb2.GetInfoRequest(), timeout=5, metadata=(("authorization", f"Bearer {key}"),)
    )
    assert info.version
    # TLS without a credential: refused (require_credentials); plaintext: no handshake at all
    with pytest.raises(grpc.RpcError) as err:
        kernel_pb2_grpc.KernelServiceStub(secure(target, folder, channels=channels)).GetInfo(kernel_pb2.GetInfoRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    plain = grpc.insecure_channel(target)
    channels.append(plain)
    with pytest.raises(grpc.RpcError) as err:
        kernel_pb2_grpc.KernelServiceStub(plain).GetInfo(kernel_pb2.GetInfoRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_names_the_peer_by_its_certificate(start_kernel, data_dir, channels, tmp_path):
    folder = tls_init(data_dir)
    assert run_cli("tls", "issue", "box-2", env=cortex_env(data_dir)).returncode == 0
    target, _ = start_kernel(tls_config(folder, mutual=True, require=True), governance=True)
    channel = secure(target, folder, cert="box-2", channels=channels)
    _, call = echo_pb2_grpc.EchoServiceStub(channel).Echo.with_call(echo_pb2.EchoRequest(message="hi"), timeout=5)
    gov = governance_pb2_grpc.GovernanceServiceStub(channel)
    proof = gov.GetProof(gpb.GetProofRequest(id=dict(call.trailing_metadata())["x-cortex-call-id"]), timeout=5)
    assert proof.entry.proof.principal == "node:box-2"
    # a certificate from another CA is no credential: the handshake fails
    other = tls_init(tmp_path / "other-data")
    run_cli("tls", "issue", "intruder", env=cortex_env(tmp_path / "other-data"))
    key, chain = (other / "intruder.key").read_bytes(), (other / "intruder.pem").read_bytes()
    stranger = grpc.secure_channel(target, grpc.ssl_channel_credentials((folder / "ca.pem").read_bytes(), key, chain))
    channels.append(stranger)
    with pytest.raises(grpc.RpcError) as err:
        echo_pb2_grpc.EchoServiceStub(stranger).Echo(echo_pb2.EchoRequest(), timeout=3)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


def test_kernels_call_each_other_over_mutual_tls(tmp_path, serve_process, start_kernel, channel_to, data_dir):
    far_data = tmp_path / "far-data"
    folder = tls_init(far_data)
    assert run_cli("tls", "issue", "near", env=cortex_env(far_data)).returncode == 0
    far_config = write_config(tmp_path / "far.toml", tls_config(folder, mutual=True, require=True)
                              + '[plugins.echo]\nserved_by = "far away"\n')
    far = serve_process(env=cortex_env(far_data, CORTEX_CONFIG=str(far_config)))
    target, _ = start_kernel(f"""
        [plugins]
        disabled = ["echo"]
        [providers.far]
        endpoint = "{far.target}"
        services = ["cortex_echo.v1.EchoService"]
        tls_ca = "{folder / 'ca.pem'}"
        tls_cert = "{folder / 'near.pem'}"
        tls_key = "{folder / 'near.key'}"
    """, governance=True)
    reply = echo_pb2_grpc.EchoServiceStub(channel_to(target)).Echo(echo_pb2.EchoRequest(message="m"), timeout=5)
    assert reply.served_by == "far away"
    tail = run_cli("audit", "tail", "--json", "-n", "50", env=cortex_env(far_data))
    principals = {e["proof"]["principal"] for e in __import__("json").loads(tail.stdout) if "proof" in e}
    assert "node:near" in principals


def test_a_listener_beyond_loopback_needs_tls_and_credentials(tmp_path, serve_process, data_dir, channels):
    env = cortex_env(data_dir)
    refused = run_cli("serve", "--listen", "0.0.0.0:0", env=env)
    assert refused.returncode == 1
    assert "kernel.listen = '0.0.0.0:0' is not loopback, so it needs TLS and credentials" in refused.stderr
    assert "kernel.tls_cert and kernel.tls_key" in refused.stderr and "require_credentials = true" in refused.stderr
    folder = tls_init(data_dir)
    half = write_config(tmp_path / "half.toml", tls_config(folder))
    refused = run_cli("serve", "--listen", "0.0.0.0:0", env={**env, "CORTEX_CONFIG": str(half)})
    assert refused.returncode == 1 and "set kernel.require_credentials = true" in refused.stderr
    # the HTTP/JSON bridge follows the same rule
    full = write_config(tmp_path / "full.toml", tls_config(folder, require=True) + '[plugins.http]\nlisten = "0.0.0.0:0"\n')
    kernel = serve_process("--listen", "0.0.0.0:0", env={**env, "CORTEX_CONFIG": str(full)})
    port = kernel.target.rsplit(":", 1)[1]
    key = KeyStore(data_dir).create("remote", [])
    info = kernel_pb2_grpc.KernelServiceStub(secure(f"127.0.0.1:{port}", folder, channels=channels)).GetInfo(
        kernel_pb2.GetInfoRequest(), timeout=5, metadata=(("authorization", f"Bearer {key}"),)
    )
    assert info.listen.startswith("0.0.0.0:")
    kernel.stop()
    bridge = write_config(tmp_path / "bridge.toml", '[plugins.http]\nlisten = "0.0.0.0:0"\n')
    kernel = serve_process(env={**env, "CORTEX_CONFIG": str(bridge), "CORTEX_PLUGINS__HTTP__LISTEN": "0.0.0.0:0"})
    plugins = kernel_pb2_grpc.KernelServiceStub(grpc.insecure_channel(kernel.target)).ListPlugins(
        kernel_pb2.ListPluginsRequest(), timeout=5
    )
    http = {p.name: p for p in plugins.plugins}["http"]
    assert http.state == kernel_pb2.Plugin.STATE_BROKEN and re.search(r"is not loopback, so it needs TLS and credentials", http.error)


def test_governance_that_cannot_record_fails_calls_closed(start_kernel, channel_to):
    import sqlite3

    # (no checkpoint falls due meanwhile: its event would be one more call to refuse; each call is its own batch)
    target, kt = start_kernel("[plugins.governance]\ncheckpoint_seconds = 3600\nbatch_ms = 0\n", governance=True)
    echo = echo_pb2_grpc.EchoServiceStub(channel_to(target))
    assert echo.Echo(echo_pb2.EchoRequest(message="before"), timeout=5).message == "before"
    governance = kt.kernel.host.records["governance"].obj
    kt.run(asyncio.sleep(0))  # the turn after a call writes its record: let that happen first
    writable = governance.chain.db
    governance.chain.db = sqlite3.connect(f"file:{governance.chain.path}?mode=ro", uri=True, check_same_thread=False)
    echo.Echo(echo_pb2.EchoRequest(message="its record cannot be written"), timeout=5)
    for _ in range(3):  # every call now, whoever makes it, and it never counts against the provider
        with pytest.raises(grpc.RpcError) as err:
            echo.Echo(echo_pb2.EchoRequest(message="refused"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "'governance' cannot judge calls now (the audit log cannot be written" in err.value.details()
    assert next(p for p in kt.kernel.registry.all_providers() if p.name == "echo").failures == 0
    kt.run(kt.kernel.refresh_health())
    assert not next(p for p in kt.kernel.registry.all_providers() if p.name == "governance").health.serving
    # the disk comes back: the next health probe writes what was queued, and calls flow again
    governance.chain.db.close()
    governance.chain.db = writable
    kt.run(kt.kernel.refresh_health())
    assert echo.Echo(echo_pb2.EchoRequest(message="after"), timeout=5).message == "after"
    proofs = [e.proof.status for e in audit_entries(kt) if e.HasField("proof") and e.proof.service.endswith("EchoService")]
    assert proofs.count("OK") == 3 and proofs.count("UNAVAILABLE") == 3  # nothing went unrecorded
