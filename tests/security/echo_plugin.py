"""A third party's plugin for the security tests, installed as pip would leave it: it provides
cortex_echo's EchoService, and its Echo (the source given) calls other contracts through the
plugin's channel while serving the caller: the nested call whose rights are under test."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ..conftest import make_dist

MODULE = '''
import base64, json
import grpc
from cortex.kernel import hookimpl
from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

class Servicer(echo_pb2_grpc.EchoServiceServicer):
    channel = None  # the plugin's channel, from cortex_start

{echo}
    async def EchoStream(self, request, context):
        yield await self.Echo(request, context)

    async def Now(self, request, context):
        return echo_pb2.NowResponse()

class Plugin:
    @hookimpl
    def cortex_register(self, registry):
        registry.add("cortex_echo.v1.EchoService", Servicer())

    @hookimpl
    async def cortex_start(self, context):
        Servicer.channel = context.channel

plugin = Plugin()
'''


def echo_plugin(root: Path, name: str, echo: str, calls: str) -> Path:
    """Install plugin `name` under `root` (put it on PYTHONPATH): `echo` is the source of its
    `async def Echo(self, request, context)`, `calls` what its manifest lets it call ("any", or a
    service)."""
    source = MODULE.format(echo=textwrap.indent(textwrap.dedent(echo).strip("\n"), "    ") + "\n")
    return make_dist(root, name, source, f"""
        [cortex]
        {name} = {name}:plugin
        [cortex.contracts]
        {name}.cortex_echo.v1.EchoService = {name}:plugin
        [cortex.calls]
        {name}.{calls} = {name}:plugin
    """)
