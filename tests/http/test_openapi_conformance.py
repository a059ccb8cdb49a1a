"""The HTTP API against its own OpenAPI document, by schemathesis: every operation with generated
requests, valid and invalid. The document and the server must agree: what the schema allows is
served (or refused for a reason the schema cannot say, with a 4xx), what it forbids is refused with
a 4xx, no request is a server error, and every response matches its schema."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from ..conftest import KernelThread, plugin_of

pytestmark = pytest.mark.slow

# Operations whose responses never end (a subscription): nothing to validate within a test.
ENDLESS = "/v1/cortex.events.v1.EventService/Subscribe"
# per operation and mode: bounded, so the suite stays quick. The examples are the same every run
# (derandomized: CI does not flake); CORTEX_EXPLORE=1 draws new ones, to look for more
EXAMPLES = int(os.environ.get("CORTEX_EXPLORE_EXAMPLES", "30"))
EXPLORE = bool(os.environ.get("CORTEX_EXPLORE"))


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    from cortex.kernel.config import load_config

    folder = tmp_path_factory.mktemp("openapi")
    (folder / "cortex.toml").write_text('[plugins]\ndisabled = ["ollama", "openai", "mcp", "a2a"]\n')
    env = {
        "CORTEX_DATA_DIR": str(folder / "data"), "CORTEX_LISTEN": "127.0.0.1:0", "CORTEX_PLUGINS__HTTP__LISTEN": "127.0.0.1:0",
        "CORTEX_PLUGINS__HTTP__RATE_LIMIT": "0",  # every generated request reaches the server
    }
    kt = KernelThread(load_config(folder / "cortex.toml", env=env))
    kt.start()
    base = f"http://{plugin_of(kt, 'http').address}"
    try:
        yield schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(path=ENDLESS)
    finally:
        kt.stop()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_the_api_keeps_its_own_schema(api_schema, mode):
    """Each operation, its requests generated from the document (valid ones, then invalid ones);
    every failure is collected, so one run names them all."""
    failures = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if mode == GenerationMode.NEGATIVE and not list(operation.body):
            continue  # nothing to get wrong in a request without a body (GET /health)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=not EXPLORE)
        def check(case):
            # a schema-valid request may still be refused (400) for a reason a schema cannot say
            # ("send a plan, or a goal"); every other check applies
            case.call_and_validate(timeout=60, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected, reported together below
            failures[operation.label] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
