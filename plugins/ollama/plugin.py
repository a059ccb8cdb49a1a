"""The ollama plugin: `ModelService` through the official `ollama` client (async), for a local
Ollama server or Ollama Cloud.

Settings (`[plugins.ollama]`):

    host = "http://127.0.0.1:11434"    # or "https://ollama.com" for Ollama Cloud
    api_key_env = "OLLAMA_API_KEY"     # sent as a bearer token when set (Ollama Cloud)
    model = "llama3.2"
    embedding_model = "all-minilm"
    timeout_seconds = 120
    local = true                       # default: true when host is on loopback
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
SETTINGS = {"host", "api_key_env", "model", "embedding_model", "timeout_seconds", "local"}


class OllamaPlugin:
    """Settings and lifecycle; the servicer and the client live in service.py."""

    def __init__(self) -> None:
        self.name = "ollama"
        self.settings: dict[str, Any] = {}
        self.host = "http://127.0.0.1:11434"
        self.local = True
        self._client: Any = None

    @hookimpl
    def cortex_configure(self, config: dict[str, Any], context) -> None:
        check_settings(config, SETTINGS, context.name)
        self.settings, self.name = dict(config), context.name
        self.host = str(config.get("host", "http://127.0.0.1:11434"))
        self.local = bool(config.get("local", common.is_loopback_url(self.host)))
        self._client = None

    def headers(self) -> dict[str, str]:
        key = os.environ.get(str(self.settings.get("api_key_env", "OLLAMA_API_KEY")))
        return {"Authorization": f"Bearer {key}"} if key else {}

    def client(self):
        if self._client is None:
            import ollama

            self._client = ollama.AsyncClient(
                host=self.host, headers=self.headers() or None, timeout=float(self.settings.get("timeout_seconds", 120))
            )
        return self._client

    @hookimpl
    def cortex_register(self, registry) -> None:
        if importlib.util.find_spec("ollama") is None:
            raise RuntimeError("the ollama client is not installed: pip install 'cortex-os[ollama]'")
        from .service import OllamaServicer

        # after mlx (10), before openai (30), unless [routing] says otherwise: a local server, by default
        registry.add(SERVICE, OllamaServicer(self), local=self.local, rank=20)

    @hookimpl
    async def cortex_health(self) -> Health:
        from .service import probe

        return await probe(self)

    @hookimpl
    async def cortex_stop(self, context) -> None:
        self._client = None

    @hookimpl
    def cortex_register_commands(self, cli) -> None:
        from cortex.kernel.sdk.models_cli import register

        register(cli)


plugin = OllamaPlugin()
