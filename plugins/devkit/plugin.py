"""The devkit plugin: the plugin author's commands, added through the CLI hook as any third-party
plugin's are (`cortex plugin new NAME`, `cortex plugin codegen [--check]`). It serves no contract
and makes no call: disable it and the kernel serves as before, without those commands.

    python -m cortex.plugins.devkit.hook_docs > docs/plugins/hooks.md   # the hook reference
"""

from __future__ import annotations

import click

from cortex.kernel import hookimpl

CORTEX_API = ">=1,<2"  # the plugin API versions this plugin is written for (cortex.kernel.PLUGIN_API_VERSION)


class DevkitPlugin:
    @hookimpl
    def cortex_register_commands(self, cli: click.Group) -> None:
        from .plugin_commands import register

        register(cli)


plugin = DevkitPlugin()
