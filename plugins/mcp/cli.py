"""`cortex mcp`: an MCP server on stdio for editors and agents."""

from __future__ import annotations

import asyncio

import click

from cortex.kernel.sdk import config_option, load_config_or_fail, target_option


def register(cli: click.Group) -> None:
    @cli.command("mcp")
    @config_option
    @target_option
    @click.option(
        "--embedded", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
        help="Start a kernel in this process: when none answers at the target (auto), always, or never.",
    )
    def mcp_command(config, target, embedded) -> None:
        """Serve the kernel's contracts as MCP tools over stdio (for editors: add `cortex mcp` as
        an MCP server). Logs go to stderr; stdout carries only MCP messages."""
        from cortex.kernel.sdk import configure_logging

        from .serve import serve_stdio

        cfg = load_config_or_fail(config)
        configure_logging(cfg.kernel_section.log_level, cfg.kernel_section.log_format)
        try:
            asyncio.run(serve_stdio(cfg, target, embedded))
        except KeyboardInterrupt:
            pass
