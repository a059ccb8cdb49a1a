"""`cortex doctor` on an install with something wrong: each mistake is a finding with its fix."""

from __future__ import annotations

import pytest

from cortex.kernel.sdk import doctor

from ..conftest import write_config


def findings(monkeypatch, tmp_path, text: str, data_dir=None) -> dict[str, doctor.Check]:
    monkeypatch.setenv("CORTEX_DATA_DIR", str(data_dir or tmp_path / "data"))
    monkeypatch.setenv("CORTEX_LISTEN", "127.0.0.1:9")  # no kernel there
    for name in ("CORTEX_PLUGINS__HTTP__LISTEN", "CORTEX_PLUGINS__A2A__LISTEN"):
        monkeypatch.setenv(name, "127.0.0.1:0")
    return {c.name: c for c in doctor._checks(str(write_config(tmp_path / "cortex.toml", text)))}


def test_a_config_that_does_not_parse(monkeypatch, tmp_path):
    found = findings(monkeypatch, tmp_path, "[kernel\n")
    assert found["config"].state == doctor.FAIL and "cortex.toml:1" in found["config"].detail


def test_a_data_dir_that_is_a_file(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    found = findings(monkeypatch, tmp_path, "", data_dir=blocker)
    assert found["data dir"].state == doctor.FAIL and "writable kernel.data_dir" in found["data dir"].fix


def test_an_unknown_plugin_in_the_config(monkeypatch, tmp_path):
    found = findings(monkeypatch, tmp_path, '[plugins]\ndisabled = ["nope"]\n')
    assert found["plugins"].state == doctor.FAIL and "unknown plugin 'nope'" in found["plugins"].detail


@pytest.mark.parametrize(
    ("settings", "name", "state", "words"),
    [
        ('embedding_model = "/nowhere/bert"', "embedding model", doctor.FAIL, "/nowhere/bert"),
        ('generation_model = "some-org/some-model"', "generation model", doctor.WARN, "fetched from a hub"),
    ],
)
def test_model_settings_that_cannot_work_here(monkeypatch, tmp_path, settings, name, state, words):
    found = findings(monkeypatch, tmp_path, f"[plugins.mlx]\n{settings}\n")
    assert found[name].state == state and words in found[name].detail


def test_a_signing_key_others_can_read(monkeypatch, tmp_path):
    key = tmp_path / "data" / "governance" / "signing_key.pem"
    key.parent.mkdir(parents=True)
    key.write_text("not really a key")
    key.chmod(0o644)
    found = findings(monkeypatch, tmp_path, "")
    assert found["signing key"].state == doctor.FAIL and found["signing key"].fix == f"chmod 600 {key}"


def test_an_ungoverned_or_exposed_configuration_is_named(monkeypatch, tmp_path):
    found = findings(monkeypatch, tmp_path, "[kernel]\nrequired_plugins = []\n")
    assert found["governance"].state == doctor.WARN and found["governance"].detail.startswith("OFF")
    assert found["listener"].state == doctor.OK and "loopback callers are `local`" in found["listener"].detail
    monkeypatch.setenv("CORTEX_LISTEN", "0.0.0.0:9")
    found = doctor._checks(str(write_config(tmp_path / "cortex.toml", "")))
    found = {c.name: c for c in found}
    assert found["governance"].state == doctor.OK
    assert found["listener"].state == doctor.FAIL and "is not loopback, so it needs TLS and credentials" in found["listener"].detail


def test_a_required_plugin_that_is_disabled_is_a_failure_not_a_green_line(monkeypatch, tmp_path):
    """A config disabling governance while kernel.required_plugins names it: `cortex serve` will not
    start, so the doctor says so (it once showed "✓ plugin governance: disabled")."""
    found = findings(monkeypatch, tmp_path, '[plugins]\ndisabled = ["governance"]\n')
    assert found["plugin governance"].state == doctor.FAIL and "will not start" in found["plugin governance"].detail
    assert "cortex plugins enable governance" in found["plugin governance"].fix
    found = findings(monkeypatch, tmp_path, '[kernel]\nrequired_plugins = []\n[plugins]\ndisabled = ["governance"]\n')
    assert found["plugin governance"].state == doctor.OK  # on purpose: the governance line warns instead
