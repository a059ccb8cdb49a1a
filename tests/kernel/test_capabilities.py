"""A plugin holds the kernel's privileged objects (kernel/security/capabilities.py) only where its
manifest asks for them ("PLUGIN.CAPABILITY" in the entry-point group cortex.capabilities); one that
does not is told, when it reaches for one, what to declare. And an event is published through the
method its own contract declares for it: the kernel names no plugin's contract."""

from __future__ import annotations

import pytest

from cortex.contracts.events.v1 import events_pb2
from cortex.kernel import hookimpl
from cortex.kernel.context import publishing_route
from cortex.kernel.security.capabilities import GROUP, Undeclared, grant

OFFERED = {"plugins": {}, "credentials": object(), "exposure": object(), "web_pages": dict}


def test_a_plugin_gets_what_its_own_distribution_declares_and_nothing_else():
    given = grant("http", "cortex-os", OFFERED)  # pyproject.toml: http.credentials, http.exposure, http.web_pages
    assert given["credentials"] is OFFERED["credentials"] and given["exposure"] is OFFERED["exposure"]
    assert isinstance(given["plugins"], Undeclared)
    assert given["web_pages"] is dict
    # the same plugin name in a distribution that does not declare it, or in none: nothing
    assert all(isinstance(v, Undeclared) for v in grant("http", "no-such-distribution", OFFERED).values())
    assert all(isinstance(v, Undeclared) for v in grant("http", "", OFFERED).values())


def test_an_undeclared_capability_is_falsy_and_says_what_to_declare():
    missing = grant("bookmarks", "", OFFERED)["credentials"]
    assert not missing
    for use in (lambda: missing.identify("", True), lambda: missing.reserve(["x"]), lambda: missing()):
        with pytest.raises(PermissionError) as raised:
            use()
        assert '"bookmarks.credentials"' in str(raised.value) and f'[project.entry-points."{GROUP}"]' in str(raised.value)


def test_the_running_kernel_grants_by_manifest(start_kernel, monkeypatch):
    seen = {}

    class Judge:  # in-process: no distribution, so no manifest, so no capability
        @hookimpl
        def cortex_configure(self, config, context):
            seen["context"] = context
            context.plugins.get("events")

    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "events,console")
    _, kt = start_kernel(plugins=[("judge", Judge())])
    kernel, records = kt.kernel, kt.kernel.host.records
    events, console = records["events"].context, records["console"].context
    assert events.deliver_event == kernel.host.deliver_event and events.stopping is kernel._stopped
    assert not events.plugins and not events.web_pages  # events asks for neither
    assert all(not getattr(console, name) for name in ("plugins", "web_pages"))
    judge = records["judge"]
    assert judge.state == "broken" and "PermissionError: plugin 'judge' has no 'plugins' capability" in judge.error
    assert '"judge.plugins"' in judge.error and not seen["context"].plugins


def test_a_listener_written_for_plugin_api_1_keeps_its_credentials_and_exposure_and_is_told_to_declare_them(
        start_kernel, monkeypatch, caplog):
    """Plugin API 1.0-1.6 documented context.exposure and context.credentials for a plugin's own
    listener, with no manifest entry: such a plugin keeps working (told once what to declare)."""
    class Listener:
        @hookimpl
        def cortex_configure(self, config, context):
            context.exposure.check("127.0.0.1:1", "[plugins.listener] listen")
            assert context.exposure.tls is False and context.credentials.identify("", True).principal == "local"

    monkeypatch.setenv("CORTEX_LOAD_PLUGINS", "")
    _, kt = start_kernel(plugins=[("listener", Listener())])
    assert kt.kernel.host.records["listener"].state == "loaded"
    with pytest.raises(ValueError, match="is not loopback, so it needs TLS and credentials"):  # the kernel's own rule, not a stand-in
        kt.kernel.host.records["listener"].context.exposure.check("0.0.0.0:1", "[plugins.listener] listen")
    warned = [r.getMessage() for r in caplog.records if "plugin.capability_undeclared" in r.getMessage()]
    assert len(warned) == 2, warned  # once per capability, however often used
    assert any('"listener.exposure"' in w for w in warned) and any('"listener.credentials"' in w for w in warned)


def test_governance_and_the_bridges_get_theirs(start_kernel):
    _, kt = start_kernel(governance=True)
    kernel, records = kt.kernel, kt.kernel.host.records
    assert records["governance"].context.plugins is records
    http = records["http"].context
    assert http.credentials is kernel.credentials and http.exposure is kernel.exposure
    assert http.web_pages == kernel.host.web_pages
    assert records["memories"].context.credentials is kernel.credentials
    assert not records["cerebrum"].context.credentials


def test_an_event_is_published_through_the_method_its_contract_declares_for_it():
    assert publishing_route(events_pb2.Event.DESCRIPTOR) == ("/cortex.events.v1.EventService/Publish", "event")
    # a contract's other methods that take one message are never a publishing route
    from cortex.contracts.cerebrum.v1 import cerebrum_pb2
    from cortex.contracts.governance.v1 import governance_pb2
    from cortex.contracts.memories.v1 import sources_pb2

    for message in (sources_pb2.Source, cerebrum_pb2.Plan, governance_pb2.CallDescription):
        assert publishing_route(message.DESCRIPTOR) is None, message
    # a message no method of its contract takes alone has nowhere to be published
    assert publishing_route(events_pb2.PublishResponse.DESCRIPTOR) is None


def test_a_distribution_declares_for_its_own_plugins_only(tmp_path, monkeypatch):
    """No package widens another's manifest (its calls, contracts or capabilities), and none takes a
    built-in plugin's name: the built-in one is loaded, the other not."""
    import sys

    from cortex.kernel.plugin_host import discover

    from ..conftest import make_dist

    site = make_dist(tmp_path / "site", "widener", "plugin = object()\n", """
        [cortex]
        widener = widener:plugin
        http = widener:plugin
        [cortex.calls]
        memories.any = widener
        widener.cortex.kernel.v1.KernelService = widener
        [cortex.capabilities]
        memories.plugins = widener
    """)
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    records = {r.name: r for r in discover()}
    assert records["memories"].calls == ["cortex.events.v1.EventService", "cortex.models.v1.ModelService"]
    assert records["widener"].calls == ["cortex.kernel.v1.KernelService"] and records["widener"].source == "widener"
    assert records["http"].source == "built-in" and records["http"].target == "cortex.plugins.http.plugin:plugin"
    assert isinstance(grant("memories", "cortex-os", OFFERED)["plugins"], Undeclared)
