"""The openai plugin: `ModelService` through the official `openai` client, for any
OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, LM Studio, ...).

Settings (`[plugins.openai]`):

    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"     # the variable holding the key (keys never go in the config)
    model = "gpt-4o-mini"
    embedding_model = "text-embedding-3-small"
    timeout_seconds = 60
    local = false                      # default: true when base_url is on loopback
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

from cortex.contracts.models.v1 import models_pb2 as pb
from cortex.kernel import Health, check_settings, hookimpl
from cortex.kernel.sdk import models as common

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SERVICE = pb.DESCRIPTOR.services_by_name["ModelService"]
SETTINGS = {"base_url", "api_key_env", "model", "embedding_model", "timeout_seconds", "local"}


class OpenAIPlugin:
    """Settings and lifecycle; the servicer and the (slow to import) client live in service.py."""

    def __init__(self) -> None:
        self.name = "openai"
        self.settings: dict[str, Any] = {}
        self.base_url = "https://api.openai.com/v1"
        self.local = False
        self._client: Any = None

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        self.settings, self.name = dict(config), context.name
        self.base_url = str(config.get("base_url", "https://api.openai.com/v1"))
        self.local = bool(config.get("local", common.is_loopback_url(self.base_url)))
        self._client = None

    def client(self):
        """The AsyncOpenAI client, or None when a remote endpoint has no key."""
        if self._client is None:
            key = os.environ.get(str(self.settings.get("api_key_env", "OPENAI_API_KEY")))
            if not key and not self.local:
                return None  # (before the import: the SDK costs 0.5 s, and a kernel without a key never needs it)
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=key or "not-needed-locally",
                timeout=float(self.settings.get("timeout_seconds", 60)),
                max_retries=0,  # the kernel's router retries and fails over
            )
        return self._client

    @hookimpl
    def cortex_register(self, registry) -> None:
        if importlib.util.find_spec("openai") is None:
            raise RuntimeError("the openai client is not installed: pip install 'cortex-os[openai]'")
        from .service import OpenAIServicer

        # last of the model providers (mlx 10, ollama 20) unless [routing] says otherwise: a cloud API, by default
        registry.add(SERVICE, OpenAIServicer(self), local=self.local, rank=30)

    @hookimpl
    async def cortex_health(self) -> Health:
        from .service import probe

        return await probe(self)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from cortex.kernel.sdk.models_cli import register

        register(cli)


plugin = OpenAIPlugin()
