"""The `cortex` command line and plugin discovery, run as a user would: subprocesses."""

from __future__ import annotations

import json
import signal

import grpc
import pytest

from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

from ..conftest import cortex_env, make_dist, run_cli, wait_for, write_config

BROKEN_PLUGINS = {
    "import_fails": (
        "import this_module_does_not_exist_anywhere\n",
    ),
    "register_raises": (
        """
        from cortex.kernel import hookimpl

        @hookimpl
        def cortex_register(registry):
            raise RuntimeError("cannot open my database")
        """,
    ),
    "hook_typo": (
        """
        from cortex.kernel import hookimpl

        @hookimpl
        def cortex_registr(registry):  # misspelt: must be an error, not silence
            pass
        """,
    ),
}


@pytest.fixture
def broken_plugins(tmp_path):
    root = tmp_path / "site"
    for name, (source,) in BROKEN_PLUGINS.items():
        make_dist(root, name, source, f"[cortex]\n{name} = {name}\n")
    return root


def test_broken_plugins_are_reported_by_name_and_the_rest_serve(tmp_path, broken_plugins, serve_process, channel_to):
    env = cortex_env(tmp_path / "data", [broken_plugins])
    kernel = serve_process(env=env)
    reply = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target)).Echo(echo_pb2.EchoRequest(message="ok"), timeout=5)
    assert reply.message == "ok"
    listed = json.loads(run_cli("plugins", "list", "--json", "--hooks", env={**env, "CORTEX_TARGET": kernel.target}).stdout)
    assert {p["name"] for p in listed["plugins"]} >= {"echo", *BROKEN_PLUGINS}
    # with a kernel answering, the list says what became of each plugin in it, and which hooks it has
    by_name = {p["name"]: p for p in listed["plugins"]}
    assert listed["kernel"] and by_name["echo"]["state"] == "loaded" and "cortex_register" in by_name["echo"]["hooks"]
    assert all(by_name[name]["state"] == "broken" and by_name[name]["error"] for name in BROKEN_PLUGINS)
    from cortex.contracts.kernel.v1 import kernel_pb2, kernel_pb2_grpc

    plugins = kernel_pb2_grpc.KernelServiceStub(channel_to(kernel.target)).ListPlugins(
        kernel_pb2.ListPluginsRequest(), timeout=5
    )
    states = {p.name: (p.state, p.error) for p in plugins.plugins}
    assert states["echo"][0] == kernel_pb2.Plugin.STATE_LOADED
    assert states["import_fails"] == (
        kernel_pb2.Plugin.STATE_BROKEN,
        "failed to load: ModuleNotFoundError: No module named 'this_module_does_not_exist_anywhere'",
    )
    assert states["register_raises"] == (
        kernel_pb2.Plugin.STATE_BROKEN,
        "cortex_register failed: RuntimeError: cannot open my database",
    )
    assert states["hook_typo"][0] == kernel_pb2.Plugin.STATE_BROKEN
    assert "cortex_registr" in states["hook_typo"][1]
    code, stderr = kernel.stop()
    assert code == 0
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert {e["plugin"] for e in logged if e["event"] == "plugin.broken"} == set(BROKEN_PLUGINS)


def test_info_contracts_and_health_commands(tmp_path, serve_process):
    env = cortex_env(tmp_path / "data")
    kernel = serve_process(env=env)
    info = json.loads(run_cli("info", "--target", kernel.target, "--json", env=env).stdout)
    assert info["data_dir"] == str((tmp_path / "data").resolve()) and info["privacy_mode"] is False
    contracts = json.loads(run_cli("contracts", "list", "--target", kernel.target, "--json", env=env).stdout)
    services = {c["service"]: c for c in contracts["contracts"]}
    assert services["cortex_echo.v1.EchoService"]["providers"][0]["name"] == "echo"
    health = run_cli("health", "--target", kernel.target, "--json", env=env)
    assert health.returncode == 0
    statuses = json.loads(health.stdout)
    assert set(statuses) == {"(overall)", *services}  # overall and one per served contract
    assert set(statuses.values()) == {"SERVING"}
    text = run_cli("contracts", "list", "--target", kernel.target, env=env).stdout
    assert "provider:  echo (in-process, local) health=serving circuit=closed" in text


def test_client_commands_say_clearly_when_no_kernel_runs(tmp_path):
    env = cortex_env(tmp_path / "data")
    result = run_cli("info", "--target", "127.0.0.1:9", env=env)
    assert result.returncode == 1
    assert "no kernel is answering at 127.0.0.1:9" in result.stderr
    assert "cortex serve" in result.stderr


def test_plugins_enable_and_disable_edit_the_config_file(tmp_path, serve_process, channel_to):
    config = write_config(tmp_path / "cortex.toml", "# my settings\n[kernel]\nlog_level = \"info\"\n")
    env = cortex_env(tmp_path / "data", CORTEX_CONFIG=str(config))
    result = run_cli("plugins", "disable", "echo", env=env)
    assert result.returncode == 0, result.stderr
    assert f"disabled plugin 'echo' in {config}" in result.stdout
    text = config.read_text()
    assert "# my settings" in text and 'disabled = ["echo"]' in text
    listed = json.loads(run_cli("plugins", "list", "--json", env=env).stdout)
    assert {p["name"]: p["enabled"] for p in listed["plugins"]}["echo"] is False

    kernel = serve_process(env=env)
    with pytest.raises(grpc.RpcError) as err:
        echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target)).Echo(echo_pb2.EchoRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "plugin 'echo', which is disabled" in err.value.details()
    kernel.stop()

    assert run_cli("plugins", "enable", "echo", env=env).returncode == 0
    assert "echo" not in config.read_text().split("disabled")[1].split("\n")[0]
    kernel = serve_process(env=env)
    reply = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target)).Echo(echo_pb2.EchoRequest(message="back"), timeout=5)
    assert reply.message == "back"


def test_enabling_an_unknown_plugin_is_refused(tmp_path):
    config = tmp_path / "cortex.toml"
    env = cortex_env(tmp_path / "data", CORTEX_CONFIG=str(config))
    result = run_cli("plugins", "enable", "nosuch", env=env)
    assert result.returncode == 1
    installed = "a2a, cerebrum, console, devkit, echo, events, governance, http, marketplace, mcp, memories, mlx"
    assert f"unknown plugin 'nosuch'; installed plugins: {installed}" in result.stderr
    assert not config.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[kernel]\nlisten = "127.0.0.1:0"\nprivacy_mode = yes\n', "cortex.toml:3: invalid TOML"),
        ("[kernel]\nlisten_on = 1\n", "cortex.toml:2: unknown key 'listen_on' in [kernel]"),
        (
            '[plugins]\ndisabled = ["ecoh"]\n',
            "cortex.toml:2: unknown plugin 'ecoh'; installed plugins: a2a, cerebrum, console, devkit, echo, events",
        ),
        ("[plugins.memoriez]\nx = 1\n", "cortex.toml:1: unknown plugin 'memoriez'"),
        ('[kernel]\nprivacy_mode = "no"\n', "cortex.toml:2: kernel.privacy_mode must be true or false"),
    ],
)
def test_a_bad_config_file_is_an_error_naming_file_and_line(tmp_path, text, message):
    config = write_config(tmp_path / "cortex.toml", text)
    result = run_cli("serve", "--config", str(config), "--listen", "127.0.0.1:0", env=cortex_env(tmp_path / "data"))
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


def test_environment_variables_override_single_keys(tmp_path, serve_process):
    config = write_config(tmp_path / "cortex.toml", "[kernel]\nprivacy_mode = false\n")
    env = cortex_env(tmp_path / "data", CORTEX_CONFIG=str(config), CORTEX_KERNEL__PRIVACY_MODE="true")
    kernel = serve_process(env=env)
    info = json.loads(run_cli("info", "--target", kernel.target, "--json", env=env).stdout)
    assert info["privacy_mode"] is True and info["config_path"] == str(config.resolve())


def test_sigterm_lets_in_flight_calls_finish_and_stops_plugins_in_reverse(tmp_path, serve_process, channel_to):
    site = tmp_path / "site"
    journal = tmp_path / "journal.txt"
    for name in ("first_p", "second_p"):
        make_dist(
            site,
            name,
            f"""
            import asyncio
            from cortex.kernel import hookimpl
            from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

            class Slow(echo_pb2_grpc.EchoServiceServicer):
                async def Echo(self, request, context):
                    with open({str(journal)!r}, "a") as f:
                        f.write("called {name}\\n")
                    await asyncio.sleep(1.0)
                    return echo_pb2.EchoResponse(message=request.message, served_by="{name}")
                async def EchoStream(self, request, context):
                    yield echo_pb2.EchoResponse()
                async def Now(self, request, context):
                    return echo_pb2.NowResponse()

            @hookimpl
            def cortex_register(registry):
                registry.add("cortex_echo.v1.EchoService", Slow())

            @hookimpl
            async def cortex_stop(context):
                with open({str(journal)!r}, "a") as f:
                    f.write("stop {name}\\n")
            """,
            f"[cortex]\n{name} = {name}\n",
        )
    config = write_config(
        tmp_path / "cortex.toml",
        '[plugins]\ndisabled = ["echo"]\n[routing."cortex_echo.v1.EchoService"]\norder = ["first_p", "second_p"]\n',
    )
    env = cortex_env(tmp_path / "data", [site], CORTEX_CONFIG=str(config))
    kernel = serve_process(env=env)
    stub = echo_pb2_grpc.EchoServiceStub(channel_to(kernel.target))
    future = stub.Echo.future(echo_pb2.EchoRequest(message="in flight"), timeout=10)
    wait_for(lambda: journal.exists() and "called first_p" in journal.read_text(), "the call to reach the provider")
    kernel.proc.send_signal(signal.SIGTERM)
    assert future.result().message == "in flight"
    assert kernel.proc.wait(20) == 0  # a clean exit, on the one SIGTERM
    assert journal.read_text().splitlines() == ["called first_p", "stop second_p", "stop first_p"]


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("echo.cortex_echo.v1.EchoService", ("echo", "cortex_echo.v1.EchoService")),
        ("cerebrum.any", ("cerebrum", "*")),
        ("my-plugin.pkg.v1.S", ("my-plugin", "pkg.v1.S")),
        ("echo/cortex_echo.v1.EchoService", ("echo", "cortex_echo.v1.EchoService")),  # before 0.2
        ("echo", None),
        ("echo.", None),
    ],
)
def test_manifest_entry_names(name, entry):
    from cortex.kernel.plugin_host import manifest_entry

    assert manifest_entry(name) == entry


def test_a_plugin_name_with_a_dot_and_a_bad_manifest_entry(tmp_path, monkeypatch, caplog):
    """A plugin named "my.plugin" could not have NAME.SERVICE manifest entries: it is reported
    broken, saying how to name it; a manifest entry that is not NAME.SERVICE is logged and ignored."""
    from cortex.kernel.config import load_config
    from cortex.kernel.plugin_host import BROKEN, PluginHost
    from cortex.kernel.registry import ContractRegistry

    site = make_dist(tmp_path / "site", "dotty", "from cortex.kernel import hookimpl\n",
                     "[cortex]\nmy.plugin = dotty\n\n[cortex.contracts]\nnoservice = dotty\n")
    monkeypatch.syspath_prepend(str(site))
    host = PluginHost(load_config(write_config(tmp_path / "cortex.toml", ""), env={}), ContractRegistry(), quiet=True)
    host.load()
    record = host.records["my.plugin"]
    assert record.state == BROKEN and "name the entry point in the 'cortex' group with letters" in record.error
    assert any("plugin.bad_manifest_entry" in r.getMessage() and "noservice" in r.getMessage() for r in caplog.records)


def test_a_command_of_a_plugin_not_loaded_says_where_to_look(tmp_path):
    """`cortex plugin new` is the devkit plugin's: with devkit not loaded, the CLI says that plugins
    add commands and how to see which are disabled or broken."""
    result = run_cli("plugin", "new", "reading", env=cortex_env(tmp_path / "data", CORTEX_LOAD_PLUGINS="memories"))
    assert result.returncode == 2 and "No such command 'plugin'" in result.stderr
    assert "`cortex plugin` is the devkit plugin's" in result.stderr and "`cortex plugins list` shows" in result.stderr
    made = run_cli("plugin", "new", "reading", "--dir", str(tmp_path), env=cortex_env(tmp_path / "data"))
    assert made.returncode == 0 and (tmp_path / "cortex-reading" / "pyproject.toml").exists(), made.stderr


def test_disabling_a_required_plugin_is_refused_and_the_file_left_as_it_was(tmp_path):
    """`cortex plugins disable governance [--now]` would leave a kernel that refuses to start: it is
    refused, naming kernel.required_plugins, before the file is touched (with --now, the running
    kernel is asked first and the file edited only once it agreed)."""
    config = write_config(tmp_path / "cortex.toml", "# my settings\n")
    env = cortex_env(tmp_path / "data", CORTEX_CONFIG=str(config))
    for now in ([], ["--now", "--target", "127.0.0.1:9"]):
        result = run_cli("plugins", "disable", "governance", *now, env=env)
        assert result.returncode == 1 and config.read_text() == "# my settings\n", result.stderr
        assert "kernel.required_plugins" in result.stderr if not now else "no kernel is answering" in result.stderr
    result = run_cli("plugins", "disable", "governance", env=cortex_env(tmp_path / "data", CORTEX_CONFIG=str(config),
                                                                         CORTEX_KERNEL__REQUIRED_PLUGINS="[]"))
    assert result.returncode == 0 and 'disabled = ["governance"]' in config.read_text(), result.stderr  # on purpose: allowed
