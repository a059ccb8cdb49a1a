"""The cortex-echo plugin: provides `cortex_echo.v1.EchoService`.

It uses only the public plugin API (`cortex.kernel.hookimpl`) and its own generated contract;
the kernel finds it through the `cortex` entry point in pyproject.toml.
"""

from __future__ import annotations

import time

import grpc

from cortex.kernel import Health, check_settings, hookimpl
from cortex_echo.v1 import echo_pb2, echo_pb2_grpc

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)

SERVICE = echo_pb2.DESCRIPTOR.services_by_name["EchoService"]
MAX_REPEAT = 1000


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, served_by: str):
        self.served_by = served_by

    async def Echo(self, request, context):
        text = request.message.upper() if request.upper else request.message
        return echo_pb2.EchoResponse(message=text, served_by=self.served_by)

    async def EchoStream(self, request, context):
        if request.repeat > MAX_REPEAT:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"repeat must be at most {MAX_REPEAT}, got {request.repeat}"
            )
        for index in range(request.repeat):
            yield echo_pb2.EchoResponse(message=request.message, served_by=self.served_by, index=index)

    async def Now(self, request, context):
        return echo_pb2.NowResponse(unix_nanos=time.time_ns())


_settings: dict = {}


@hookimpl
def cortex_configure(config, context):
    check_settings(config, {"served_by"}, context.name)
    _settings["served_by"] = str(config.get("served_by", context.name))


@hookimpl
def cortex_register(registry):
    registry.add(SERVICE, EchoServicer(_settings.get("served_by", registry.plugin)))


@hookimpl
async def cortex_health():
    return Health(True, "")
