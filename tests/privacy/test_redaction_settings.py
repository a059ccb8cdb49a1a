"""[privacy]: what a remote provider gets is redacted by default; the settings are checked when the
kernel is built, with a message naming what to fix."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from cortex.contracts.memories.v1 import memories_pb2 as mem
from cortex.contracts.models.v1 import models_pb2 as models
from cortex.kernel.call import Call
from cortex.kernel.config import ConfigError, load_config
from cortex.kernel.runtime import Kernel


def kernel_with(tmp_path, privacy: str) -> Kernel:
    path = tmp_path / "cortex.toml"
    path.write_text(f'[kernel]\ndata_dir = "{tmp_path / "data"}"\n[plugins]\ndisabled = ["ollama", "openai"]\n{privacy}')
    return Kernel(load_config(path, env={}))


def call() -> Call:
    return Call(id="c", method=None, request=None, principal="admin")  # type: ignore[arg-type]


def outbound(redaction, *args):
    return asyncio.run(redaction.outbound(*args))


MODELS = models.DESCRIPTOR.services_by_name["ModelService"]


def provider(local: bool, service=MODELS) -> SimpleNamespace:
    """What the redaction looks at of a provider: where it is, and which contract it serves."""
    return SimpleNamespace(local=local, service=service)


def test_a_remote_provider_gets_placeholders_and_a_local_one_the_request_as_it_is(tmp_path):
    redaction = kernel_with(tmp_path, "").router.redaction  # the default: on
    request = models.GenerateRequest(prompt="mail jo@example.org about EMP-123456")
    local = outbound(redaction, provider(True), request, c := call())
    assert local.request is request and not c.redacted
    memories = mem.DESCRIPTOR.services_by_name["MemoryService"]  # a remote kernel keeps what it is sent
    assert outbound(redaction, provider(False, memories), request, c).request is request and not c.redacted
    remote = outbound(redaction, provider(False), request, c)
    assert remote.request.prompt == "mail <EMAIL_1> about EMP-123456" and c.redacted == {"email": 1}
    assert remote.restore(models.GenerateResponse(text="Sent to <EMAIL_1>.")).text == "Sent to jo@example.org."


def test_patterns_add_kinds_and_redact_false_turns_it_off(tmp_path):
    redaction = kernel_with(tmp_path, "[privacy]\nkinds = []\npatterns = ['employee_id=EMP-\\d{6}']\n").router.redaction
    remote = outbound(redaction, provider(False), models.GenerateRequest(prompt="jo@example.org EMP-123456"), call())
    assert remote.request.prompt == "jo@example.org <EMPLOYEE_ID_1>"  # only the pattern runs: kinds = []
    off = kernel_with(tmp_path, "[privacy]\nredact = false\n").router.redaction
    assert outbound(off, provider(False), models.GenerateRequest(prompt="jo@example.org"), call()).request.prompt == "jo@example.org"


@pytest.mark.parametrize(("privacy", "says"), [
    ("[privacy]\npatterns = ['no equals sign']\n", "is not NAME=regular expression"),
    ("[privacy]\npatterns = ['ticket=([unclosed']\n", "privacy pattern 'ticket': bad regular expression"),
    ("[privacy]\nkinds = ['emails']\n", "unknown ['emails']"),
    ("[privacy]\nregions = ['XX']\n", "unknown ['XX']"),
    ("[privacy]\nredact = 'yes'\n", "privacy.redact must be true or false"),
])
def test_a_wrong_setting_stops_the_kernel_naming_it(tmp_path, privacy, says):
    with pytest.raises(ConfigError, match=r"cortex\.toml") as err:
        kernel_with(tmp_path, privacy)
    assert says in str(err.value)
