"""The SDK plugins build with: everything of the kernel a plugin may use beyond `cortex.kernel`
(which holds what makes a plugin a plugin: hooks, the call and decision types, the context).

    from cortex.kernel.sdk import AsgiServer, KernelGateway, kernel_client, print_table

- bridges: the contracts as JSON, called as a client (KernelGateway, GrpcGateway, bridge_caller,
  rpc_status, parse_json, to_json, describe, SchemaBuilder, standalone)
- a plugin's own HTTP listener under the kernel's listener rule and credentials (AsgiServer,
  LazyApp, split_listen, IDENTITY, headers_of, identify_request, HostGuard, is_loopback_host) and
  its JSON bodies (read_json, BadJson, JsonBodies)
- command-line helpers for `cortex_register_commands` (config_option, target_option, json_option,
  load_config_or_fail, data_dir_option and data_dir_of, kernel_client and its KernelClient, print_json, print_table, to_dict, client_dial)
- logs (configure_logging, log_tap); a PostgreSQL database shared with other kernels
  (postgres_dsn, check_postgres_dsn, PostgresPool, DatabaseUnavailable); a SQLite file of the data
  dir, encrypted at rest when the data dir is (`at_rest`: its key, `at_rest.connect`)
- what model plugins share (`models`: generation limits, endpoint checks, `models_cli`: their commands)
- the kernel itself, for a plugin that embeds one (Kernel, cortex_version), and the pytest
  fixtures for plugin authors (`cortex.kernel.sdk.testing`, the pytest11 entry point)

The SDK imports the core and the security ring; neither imports it (tests/test_architecture.py).
"""

from ..runtime import Kernel, cortex_version
from ..security.dial import client_dial
from ..security.remote import is_loopback_host
from . import at_rest, models, models_cli
from .asgi import IDENTITY, AsgiServer, BadJson, HostGuard, JsonBodies, LazyApp, headers_of, identify_request, read_json, split_listen
from .bridge import GrpcGateway, KernelGateway, bridge_caller, describe, parse_json, rpc_status, to_json
from .databases import DatabaseUnavailable, PostgresPool, check_postgres_dsn, postgres_dsn
from .json_schema import SchemaBuilder, standalone
from .logs import configure_logging, log_tap
from .terminal import (
    KernelClient,
    config_option,
    data_dir_of,
    data_dir_option,
    json_option,
    kernel_client,
    load_config_or_fail,
    print_json,
    print_table,
    target_option,
    to_dict,
)

__all__ = [
    "IDENTITY",
    "AsgiServer",
    "BadJson",
    "DatabaseUnavailable",
    "GrpcGateway",
    "HostGuard",
    "JsonBodies",
    "Kernel",
    "KernelClient",
    "KernelGateway",
    "LazyApp",
    "PostgresPool",
    "SchemaBuilder",
    "at_rest",
    "bridge_caller",
    "check_postgres_dsn",
    "client_dial",
    "config_option",
    "configure_logging",
    "cortex_version",
    "data_dir_of",
    "data_dir_option",
    "describe",
    "headers_of",
    "identify_request",
    "is_loopback_host",
    "json_option",
    "kernel_client",
    "load_config_or_fail",
    "log_tap",
    "models",
    "models_cli",
    "parse_json",
    "postgres_dsn",
    "print_json",
    "print_table",
    "read_json",
    "rpc_status",
    "split_listen",
    "standalone",
    "target_option",
    "to_dict",
    "to_json",
]
