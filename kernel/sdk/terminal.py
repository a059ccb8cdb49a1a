"""The command line's helpers, for the `cortex` commands and for a plugin's own
(`cortex_register_commands`): config and target options, a kernel client whose errors a person can
act on, and printing as tables or JSON.

    from cortex.kernel.sdk import config_option, json_option, kernel_client, print_table
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import grpc
from google.protobuf import json_format

from ..call import APPROVAL_HEADER
from ..config import Config, ConfigError, load_config
from ..security.dial import Dial, client_dial

if TYPE_CHECKING:
    from cortex.contracts.kernel.v1.kernel_pb2_grpc import KernelServiceStub

TIMEOUT = 10.0
# an approval to present (x-cortex-approval): a command a policy rule made wait for a person, run
# again once an admin approved it (`CORTEX_APPROVAL=ap-... cortex memories delete ID`)
APPROVAL_ENV = "CORTEX_APPROVAL"


def to_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


def load_config_or_fail(config: str | None, **overrides: Any) -> Config:
    try:
        return load_config(config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), envvar="CORTEX_CONFIG",
    help="Config file (default: $CORTEX_CONFIG, ./cortex.toml, ~/.cortex/cortex.toml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
# for commands that work on the data dir's files directly (keys, certificates, the audit chain): no kernel needed
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), help="Data dir (default: from config).")


def data_dir_of(config: str | None, data_dir: str | None) -> Path:
    """--data-dir if given, else the config's kernel.data_dir."""
    return Path(data_dir).expanduser().resolve() if data_dir else load_config_or_fail(config).data_dir


target_option = click.option("--target", default=None, help="Kernel address HOST:PORT (default: from config).")


class KernelClient:
    """A synchronous client of a running kernel, with errors a person can act on. It calls with
    the credential `dial` carries (CORTEX_TOKEN, else the data dir's admin token): as that key,
    or as `admin`; with none, the kernel sees `local`."""

    def __init__(self, target: str, dial: Dial | None = None):
        self.target = target
        dial = dial or Dial()
        try:
            self.channel = dial.channel(target)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        self.metadata = dial.metadata()
        if approval := os.environ.get(APPROVAL_ENV, "").strip():
            self.metadata = (*self.metadata, (APPROVAL_HEADER, approval))

    def call(self, fn: Callable[..., Any], request: Any, timeout: float = TIMEOUT) -> Any:
        try:
            return fn(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise self.error(exc) from None

    def error(self, exc: grpc.RpcError) -> click.ClickException:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return click.ClickException(
                f"{exc.details()}. The CLI sends $CORTEX_TOKEN, else the admin token of the data dir it is "
                "configured with (--config, or --data-dir on `cortex serve`)."
            )
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return click.ClickException(
                f"no kernel is answering at {self.target} ({code.name}: {exc.details()}). "
                "Start one with `cortex serve`, or pass --target HOST:PORT."
            )
        trailers: Any = exc.trailing_metadata() or ()  # (grpc's stubs type it loosely)
        approval = next((str(value) for key, value in trailers if key == APPROVAL_HEADER), "")
        if code == grpc.StatusCode.FAILED_PRECONDITION and approval:
            return click.ClickException(
                f"{code.name}: {exc.details()}\nOnce it is approved, run the same command again with "
                f"{APPROVAL_ENV}={approval} set."
            )
        return click.ClickException(f"{code.name}: {exc.details()}")

    def kernel(self) -> KernelServiceStub:
        from cortex.contracts.kernel.v1 import kernel_pb2_grpc

        return kernel_pb2_grpc.KernelServiceStub(self.channel)


def kernel_client(config: str | None, target: str | None) -> KernelClient:
    cfg = load_config_or_fail(config)
    return KernelClient(target or cfg.target, client_dial(cfg))


