"""Config precedence and validation: file, then CORTEX_* variables, then flags."""

from __future__ import annotations

import re

import pytest

from cortex.kernel.config import ConfigError, load_config

from ..conftest import write_config


def test_embedded_defaults_need_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, env={})
    assert cfg.path is None
    assert cfg.listen == "127.0.0.1:50051"
    assert cfg.data_dir == (tmp_path / ".cortex").resolve()
    assert cfg.privacy_mode is False and cfg.disabled_plugins == []


def test_file_then_env_then_flags(tmp_path):
    path = write_config(tmp_path / "c.toml", '[kernel]\nlisten = "127.0.0.1:1"\nlog_level = "debug"\n')
    env = {"CORTEX_LISTEN": "127.0.0.1:2", "CORTEX_KERNEL__PRIVACY_MODE": "true", "CORTEX_PLUGINS__DISABLED": '["a"]'}
    cfg = load_config(path, env=env)
    assert (cfg.listen, cfg.privacy_mode, cfg.disabled_plugins) == ("127.0.0.1:2", True, ["a"])
    assert cfg.kernel["log_level"] == "debug"
    assert cfg.sources["kernel.listen"] == "$CORTEX_LISTEN"
    cfg = load_config(path, env=env, overrides={"kernel.listen": "127.0.0.1:3", "kernel.data_dir": None})
    assert cfg.listen == "127.0.0.1:3"


def test_cortex_config_names_the_file(tmp_path):
    path = write_config(tmp_path / "elsewhere.toml", "[kernel]\nprivacy_mode = true\n")
    assert load_config(None, env={"CORTEX_CONFIG": str(path)}).privacy_mode is True
    with pytest.raises(ConfigError, match=r"missing\.toml: config file not found"):
        load_config(None, env={"CORTEX_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CORTEX_KERNEL__LISTN": "x"}, "CORTEX_KERNEL__LISTN: unknown key 'listn' in [kernel]"),
        ({"CORTEX_PRIVACY_MODE": "maybe"}, "$CORTEX_PRIVACY_MODE: kernel.privacy_mode must be true or false"),
        ({"CORTEX_LISTEN": "nowhere"}, "kernel.listen must look like 'host:port'"),
    ],
)
def test_bad_environment_values_name_the_variable(env, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, env=env)
    assert message in str(err.value)


SHORT_VARIABLES = [
        ("CORTEX_LISTEN", "127.0.0.1:7000", "kernel.listen", "127.0.0.1:7000"),
        ("CORTEX_DATA_DIR", "/tmp/brain", "kernel.data_dir", "/tmp/brain"),
        ("CORTEX_PRIVACY_MODE", "true", "kernel.privacy_mode", True),
        ("CORTEX_LOG_LEVEL", "debug", "kernel.log_level", "debug"),
        ("CORTEX_LOG_FORMAT", "json", "kernel.log_format", "json"),
        ("CORTEX_TARGET", "127.0.0.1:7001", "client.target", "127.0.0.1:7001"),
        ("CORTEX_HYBRID_MODE", "performance", "hybrid.mode", "performance"),
        ("CORTEX_MLX_FIRST_PRIORITY", "false", "hybrid.mlx_first", False),
        ("CORTEX_CONJUNCTION_ENABLED", "false", "hybrid.conjunction", False),
]


@pytest.mark.parametrize(("variable", "raw", "key", "value"), SHORT_VARIABLES)
def test_each_short_variable_sets_its_kernel_key(variable, raw, key, value):
    from cortex.kernel.config import DEFAULTS, ENV_ALIASES

    section, name = key.split(".")
    assert ENV_ALIASES[variable] == (section, name) and DEFAULTS[section][name] != value
    cfg = load_config(None, env={variable: raw})
    assert cfg.data[section][name] == value and cfg.sources[key] == f"${variable}"


def test_every_short_variable_is_tested_and_documented():
    from pathlib import Path

    from cortex.kernel import config

    assert {row[0] for row in SHORT_VARIABLES} == set(config.ENV_ALIASES)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(f"`{name}`" in config.__doc__ + readme for name in config.ENV_ALIASES)


def test_hybrid_privacy_from_the_environment_keeps_every_call_local():
    """CORTEX_HYBRID_MODE=privacy is the kernel's hybrid mode, not a plugin's setting: no call
    may leave the machine, exactly as with privacy_mode."""
    cfg = load_config(None, env={"CORTEX_HYBRID_MODE": "privacy"})
    assert cfg.local_only and not cfg.privacy_mode


def test_unknown_cortex_variables_are_ignored():
    assert load_config(None, env={"CORTEX_SOMETHING_ELSE": "x"}).listen == "127.0.0.1:50051"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[kernal]\n", "c.toml:1: unknown section [kernal]"),
        ("[kernel]\nlog_level = \"loud\"\n", "c.toml:2: kernel.log_level must be one of debug, info, warning, error"),
        ("[providers.box]\nendpoint = \"h:1\"\n", "c.toml:1: [providers.box] has an endpoint, so it needs services"),
        ("[providers.box]\ntimeout_seconds = -1\n", "providers.box.timeout_seconds must be a positive number"),
        ('[routing."a.v1.S"]\norder = "x"\n', 'routing."a.v1.S".order must be a list of provider names'),
        ("x = = 1\n", "c.toml:1: invalid TOML"),
        ("[kernel]\nlistn = 1\n", "c.toml:2: unknown key 'listn' in [kernel]; known keys:"),
        ("kernel = 3\n", "c.toml:1: [kernel] must be a table"),
        ("[kernel]\nlog_format = \"xml\"\n", "c.toml:2: kernel.log_format must be one of auto, json, console"),
        ("[kernel]\nmax_message_bytes = 10\n", "c.toml:2: kernel.max_message_bytes must be at least 1024"),
        ("[kernel]\nprivacy_mode = \"yes\"\n", "c.toml:2: kernel.privacy_mode must be true or false, got 'yes'"),
        ("[kernel]\nshutdown_grace_seconds = true\n", "kernel.shutdown_grace_seconds must be a number of seconds"),
        ("[kernel]\nlisten = \"no port\"\n", "c.toml:2: kernel.listen must look like 'host:port'"),
        ("[circuit]\nretries = 9\n", "c.toml:2: circuit.retries must be between 0 and 5"),
        ("[hybrid]\nmode = \"fastest\"\n", "c.toml:2: hybrid.mode must be one of balanced, performance, privacy"),
        ("[plugins]\ndisabled = \"echo\"\n", "c.toml:2: plugins.disabled must be a list of plugin names"),
        ("[providers]\nbox = 3\n", "c.toml:2: [providers.box] must be a table"),
        ("[providers.box]\nendpont = \"h:1\"\n", "unknown key(s) endpont in [providers.box]; known: endpoint, local, services"),
        ('[providers.box]\nendpoint = "10.0.0.7:1"\nservices = ["a.v1.S"]\n', "endpoint '10.0.0.7:1' is not loopback: set tls_ca"),
        ('[kernel]\ntls_cert = "c.pem"\n', "kernel.tls_cert and kernel.tls_key go together"),
        ('[kernel]\nrequire_credentials = "yes"\n', "kernel.require_credentials must be true or false"),
        ('[circuit]\nretries = "2"\n', "c.toml:2: circuit.retries must be an integer, got '2'"),
        ("[circuit]\nretry_backoff_seconds = false\n", "c.toml:2: circuit.retry_backoff_seconds must be a number of seconds"),
        ('[kernel]\nrequired_plugins = "governance"\n', "c.toml:2: kernel.required_plugins must be a list of plugin names"),
        ("[kernel]\nowners = [\"\"]\n", "c.toml:2: kernel.owners must be a list of principal globs"),
        ("[hybrid]\npreferred = 1\n", "c.toml:2: hybrid.preferred must be a provider name, got 1"),
        ("[client]\ntarget = 5\n", "c.toml:2: client.target must be a string, got 5"),
        # a remote provider's keys are typed too: "false" (a string) would make a remote provider local
        ('[providers.box]\nlocal = "false"\n', "c.toml:1: providers.box.local must be true or false, got 'false'"),
        ('[providers.box]\nendpoint = 5\n', "c.toml:1: providers.box.endpoint must be a string"),
        ('[providers.box]\nendpoint = "h:1"\nservices = [1]\n', "[providers.box] has an endpoint, so it needs services"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path / "c.toml", text), env={})
    assert message in str(err.value)


def test_one_key_of_a_plugin_section_from_the_environment(tmp_path):
    path = write_config(tmp_path / "c.toml", '[plugins.http]\nlisten = "127.0.0.1:8000"\nrate_limit = 5.0\n')
    env = {"CORTEX_PLUGINS__HTTP__LISTEN": "127.0.0.1:0", "CORTEX_PLUGINS__MCP__EXPOSE": '["memory_*"]'}
    cfg = load_config(path, env=env)
    assert cfg.plugin_section("http") == {"listen": "127.0.0.1:0", "rate_limit": 5.0}
    assert cfg.plugin_section("mcp") == {"expose": ["memory_*"]}
    assert cfg.sources["plugins.http.listen"] == "$CORTEX_PLUGINS__HTTP__LISTEN"


TYPED = """
[kernel]
required_plugins = ["governance", "memories"]
shutdown_grace_seconds = 3
owners = ["mcp:*"]
[client]
token_env = "MY_KEY"
[plugins]
disabled = ["echo"]
[plugins.http]
listen = "127.0.0.1:0"
[circuit]
retries = 2
retry_backoff_seconds = 0.5
[hybrid]
mode = "performance"
conjunction = false
[routing."a.v1.S"]
order = ["x", "y"]
[providers.box]
endpoint = "127.0.0.1:7"
services = ["a.v1.S"]
timeout_seconds = 5
"""


def test_typed_sections_hold_the_files_values(tmp_path):
    """The kernel's tables are read as typed, frozen sections: each attribute is the TOML value
    (a list as a tuple, a whole number of seconds as a float); a plugin's own table stays a dict."""
    from dataclasses import FrozenInstanceError, fields

    from cortex.kernel.config import SECTIONS

    cfg = load_config(write_config(tmp_path / "c.toml", TYPED), env={"CORTEX_HYBRID_MODE": "privacy"})
    assert cfg.kernel_section.required_plugins == ("governance", "memories") and cfg.kernel_section.owners == ("mcp:*",)
    assert cfg.kernel_section.shutdown_grace_seconds == 3.0 and isinstance(cfg.kernel_section.shutdown_grace_seconds, float)
    assert (cfg.client.token_env, cfg.plugins.disabled, cfg.disabled_plugins) == ("MY_KEY", ("echo",), ["echo"])
    assert (cfg.circuit.retries, cfg.circuit.retry_backoff_seconds, cfg.circuit.failure_threshold) == (2, 0.5, 5)
    assert (cfg.hybrid.mode, cfg.hybrid.conjunction, cfg.hybrid.mlx_first) == ("privacy", False, True)  # the variable wins
    assert cfg.routing == {"a.v1.S": ("x", "y")} and cfg.routing_order("a.v1.S") == ["x", "y"]
    box = cfg.providers["box"]
    assert (box.endpoint, box.services, box.timeout_seconds, box.local, box.tls_ca) == ("127.0.0.1:7", ("a.v1.S",), 5.0, None, "")
    assert cfg.plugin_section("http") == {"listen": "127.0.0.1:0"}
    for name, section in SECTIONS.items():
        typed = getattr(cfg, "kernel_section" if name == "kernel" else name)
        for f in fields(section):
            raw = cfg.data[name][f.name]
            assert getattr(typed, f.name) == (tuple(raw) if isinstance(raw, list) else raw), f"{name}.{f.name}"
    with pytest.raises(FrozenInstanceError):
        cfg.circuit.retries = 3  # type: ignore[misc]


def test_the_defaults_are_the_sections_defaults_and_name_no_model_order(tmp_path, monkeypatch):
    """With no file, each typed section is its class's defaults; the kernel's config holds no
    routing: the order of model providers is the ranks their plugins declare (tests/models)."""
    from cortex.kernel.config import CircuitSection, ClientSection, HybridSection, KernelSection, PluginsSection

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(None, env={})
    assert (cfg.kernel_section, cfg.client, cfg.plugins) == (KernelSection(), ClientSection(), PluginsSection())
    assert (cfg.circuit, cfg.hybrid) == (CircuitSection(), HybridSection())
    assert cfg.routing == {} and cfg.providers == {} and cfg.routing_order("cortex.models.v1.ModelService") == []


def test_override_validates_and_builds_the_sections_again():
    """`Config.override`: CLI flags, and programs that start a kernel with settings of their own
    (a test kernel, cortex mcp's embedded one): the typed sections follow; a bad value names its origin."""
    cfg = load_config(None, env={})
    cfg.override({"hybrid.mode": "privacy", "plugins.http.listen": "", "kernel.listen": None}, origin="a test")
    assert cfg.hybrid.mode == "privacy" and cfg.local_only and cfg.data["hybrid"]["mode"] == "privacy"
    assert cfg.plugin_section("http") == {"listen": ""} and cfg.sources["plugins.http.listen"] == "a test"
    assert cfg.listen == "127.0.0.1:50051"  # None: not given
    with pytest.raises(ConfigError, match=r"^a test: circuit\.retries must be an integer, got 'many'"):
        cfg.override({"circuit.retries": "many"}, origin="a test")


def test_a_refused_override_changes_nothing():
    """A bad value, an unknown key or table: ConfigError naming the origin, and the config (its
    values and typed sections alike) as it was, so the next override is judged on its own."""
    cfg = load_config(None, env={})
    for values, message in [({"kernel.listen": "no port"}, "kernel.listen must look like 'host:port'"),
                            ({"kernel.listn": "127.0.0.1:1"}, "a test: unknown key kernel.listn; known:"),
                            ({"kernal.listen": "127.0.0.1:1"}, "a test: no table [kernal] to set")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            cfg.override(values, origin="a test")
        assert cfg.data["kernel"]["listen"] == cfg.listen == "127.0.0.1:50051" and "listn" not in cfg.data["kernel"]
    cfg.override({"kernel.owners": ("mcp:*",)}, origin="a test")  # a tuple, as the typed section holds it
    assert cfg.kernel_section.owners == ("mcp:*",)
