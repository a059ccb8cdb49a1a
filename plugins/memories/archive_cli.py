"""`cortex memories export FILE` and the archive half of `cortex memories import`: ArchiveService's
lines to and from a file (archive_file.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import grpc

from cortex.contracts.memories.v1 import archive_pb2 as pb
from cortex.contracts.memories.v1 import archive_pb2_grpc
from cortex.kernel.sdk import config_option, kernel_client, target_option

from .archive_file import ArchiveError, batches, verify, write

TIMEOUT = 3600.0


@click.command("export")
@config_option
@target_option
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option("--namespace", "namespaces", multiple=True,
              help="Export this namespace (repeatable; '*': all, admin only). Default: yours and your shared ones.")
@click.option("--vectors/--no-vectors", default=True, show_default=True,
              help="Include each memory's vector, so an import with the same model embeds nothing.")
def export(config, target, file, namespaces, vectors):
    """Write your memories, their versions, links and sources to FILE (JSON Lines, see archive.proto)."""
    client = kernel_client(config, target)
    stub = archive_pb2_grpc.ArchiveServiceStub(client.channel)
    replies = stub.Export(pb.ExportRequest(namespaces=namespaces, vectors=vectors), timeout=TIMEOUT, metadata=client.metadata)
    lines = (reply.line for reply in replies)
    try:
        end = write(lines, file, lambda n: click.echo(f"exported {n} memories...", err=True))
    except grpc.RpcError as exc:
        raise client.error(exc) from None
    except ArchiveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {end.memories} memories, {end.links} links, {end.sources} sources to {file}")


def import_archive(config, target, path: Path, into: str) -> None:
    """Check the whole archive, then send it in batches; counts of what each did, summed."""
    try:
        manifest, end = verify(path)
    except ArchiveError as exc:
        raise click.ClickException(f"{exc}; nothing was imported") from None
    client = kernel_client(config, target)
    stub = archive_pb2_grpc.ArchiveServiceStub(client.channel)
    total = pb.ImportResponse()
    with click.progressbar(length=end.memories + end.links + end.sources, label=f"importing {path.name}",
                           file=sys.stderr) as bar:
        for batch in batches(path):
            reply = client.call(stub.Import, pb.ImportRequest(manifest=manifest, lines=batch, into=into), TIMEOUT)
            for field in ("added", "unchanged", "skipped", "embedded", "links", "sources"):
                setattr(total, field, getattr(total, field) + getattr(reply, field))
            total.problems.extend(reply.problems[: max(0, 100 - len(total.problems))])
            bar.update(len(batch))
    for problem in total.problems:
        click.echo(f"skipped {problem}", err=True)
    click.echo(f"imported {total.added} memories ({total.unchanged} already here, {total.skipped} skipped, "
               f"{total.embedded} embedded here), {total.links} links, {total.sources} sources")
