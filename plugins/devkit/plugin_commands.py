"""`cortex plugin new NAME` and `cortex plugin codegen`: the plugin author's kit."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

import click

from .plugin_template import FILES

NAME = re.compile(r"^[a-z][a-z0-9_]{1,39}$")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _codegen(root: Path, check_only: bool) -> list[str]:
    from .codegen import Target, check, generate, generated_files

    try:
        import grpc_tools  # noqa: F401 - only to say what is missing before protoc is asked
    except ImportError:
        raise click.ClickException("codegen needs grpcio-tools: pip install grpcio-tools==1.85.1") from None
    target = Target.for_plugin(root / "protos", root / "src")
    if check_only:
        return check(target)
    for stale in generated_files(target.out):
        (target.out / stale).unlink()
    generate(target, target.out)
    return []


def register(cli: click.Group) -> None:
    @cli.group()
    def plugin() -> None:
        """Write a plugin: a new package, and its code generated from its .proto files."""

    @plugin.command("new")
    @click.argument("name")
    @click.option("--dir", "parent", type=click.Path(file_okay=False), default=".", help="Where to create cortex-NAME/.")
    def plugin_new(name, parent) -> None:
        """Create cortex-NAME/: pyproject (entry points, manifest), a commented .proto, the generated
        code, the plugin, tests on a real kernel, a README and a CI workflow."""
        given, name = name, name.replace("-", "_")  # "reading-list": the Python package cannot hold '-'
        if not NAME.match(name) or keyword.iskeyword(name):
            raise click.ClickException(
                f"plugin name {given!r}: 2-40 lowercase letters, digits, '_' and '-', starting with a letter (it is "
                "the entry point's name and, with '_' for '-', the Python package's)"
            )
        if given != name:
            click.echo(f"plugin name {name!r}: a Python package's name holds '_' where yours has '-' "
                       f"(the distribution is cortex-{given})")
        root = Path(parent) / f"cortex-{name.replace('_', '-')}"
        if root.exists():
            raise click.ClickException(f"{root} exists; choose another name or --dir")
        values = {"name": name, "Name": _camel(name), "dist": name.replace("_", "-")}
        for path, text in FILES.items():
            target = root / path.format(**values)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text.format(**values) if text else "", encoding="utf-8")
        click.echo(f"created {root}")
        try:
            _codegen(root, check_only=False)
        except click.ClickException as exc:  # no grpcio-tools here: the package's dev extra has it
            click.echo(f"not generated yet ({exc.message}); after the install below: cortex plugin codegen --root {root}")
        click.echo(f"next: cd {root} && pip install -e '.[dev]' && pytest")

    @plugin.command("codegen")
    @click.option("--root", type=click.Path(file_okay=False, exists=True), default=".",
                  help="The plugin's folder (holding protos/ and src/).")
    @click.option("--check", "check_only", is_flag=True, help="Exit 1 if the committed code is not what the protos generate.")
    def plugin_codegen(root, check_only) -> None:
        """Generate src/PKG/v1/*_pb2.py, *_pb2_grpc.py, type stubs and the descriptor set with the
        .proto comments (they describe the plugin's MCP tools and OpenAPI operations)."""
        problems = _codegen(Path(root), check_only)
        for line in problems:
            click.echo(line, err=True)
        if problems:
            raise click.ClickException("the generated code is stale: run `cortex plugin codegen`")
        click.echo("generated code is current" if check_only else f"generated {Path(root) / 'src'}")
