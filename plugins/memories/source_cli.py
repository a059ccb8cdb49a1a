"""`cortex sources add|list|status|sync|remove` and `cortex open`: clients of SourceService."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import grpc

from cortex.contracts.memories.v1 import sources_pb2 as pb
from cortex.contracts.memories.v1 import sources_pb2_grpc
from cortex.kernel.sdk import config_option, json_option, kernel_client, print_json, print_table, target_option, to_dict

TIMEOUT = 3600.0  # a first sync of a large vault embeds every passage
STATE = {pb.FILE_STATE_INDEXED: "indexed", pb.FILE_STATE_SKIPPED: "skipped", pb.FILE_STATE_FAILED: "failed"}


def _stub(config, target):
    client = kernel_client(config, target)
    return client, sources_pb2_grpc.SourceServiceStub(client.channel)


def _summary(r) -> str:
    return (f"{r.files_seen} files: {r.files_read} read, {r.files_unchanged} unchanged, {r.files_moved} moved, "
            f"{r.files_removed} removed, {r.files_failed} failed, {r.files_skipped} skipped; passages "
            f"+{r.chunks_added} ~{r.chunks_updated} -{r.chunks_removed} moved {r.chunks_moved}; {r.seconds:.2f} s")


@click.group()
def sources():
    """Folders of notes kept in sync with memories."""


@sources.command("add")
@config_option
@target_option
@json_option
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--name", help="How passages are cited (name:path); default: the folder's name.")
@click.option("--include", multiple=True, help="A glob of files to take (repeatable); default: Markdown, text, PDF.")
@click.option("--exclude", multiple=True, help="A glob of files to leave out (repeatable).")
def add(config, target, as_json, path, name, include, exclude):
    """Keep the folder PATH in sync (a first sync runs now)."""
    folder = Path(path).resolve()
    client, stub = _stub(config, target)
    source = pb.Source(name=name or folder.name, path=str(folder), include=include, exclude=exclude)
    reply = client.call(stub.AddSource, pb.AddSourceRequest(source=source), TIMEOUT)
    if as_json:
        return print_json(to_dict(reply))
    click.echo(f"source {reply.source.name}: {reply.source.path}")
    click.echo(_summary(reply.report))


@sources.command("list")
@config_option
@target_option
@json_option
def list_(config, target, as_json):
    """Every source with its counts."""
    client, stub = _stub(config, target)
    reply = client.call(stub.ListSources, pb.ListSourcesRequest())
    if as_json:
        return print_json(to_dict(reply))
    print_table([[s.name, s.path, s.files_indexed, s.files_skipped, s.files_failed, s.chunks,
                  "yes" if s.watching else "no"] for s in reply.sources],
                ["NAME", "PATH", "INDEXED", "SKIPPED", "FAILED", "PASSAGES", "WATCHING"])


@sources.command("status")
@config_option
@target_option
@json_option
@click.argument("name")
@click.option("--all", "everything", is_flag=True, help="Every file, not only those skipped or failed.")
def status(config, target, as_json, name, everything):
    """What became of each file of source NAME: indexed, skipped or failed, and why."""
    client, stub = _stub(config, target)
    reply = client.call(stub.SourceStatus, pb.SourceStatusRequest(name=name))
    if as_json:
        return print_json(to_dict(reply))
    s = reply.source
    click.echo(f"{s.name}: {s.files_indexed} indexed, {s.files_skipped} skipped, {s.files_failed} failed, {s.chunks} passages")
    shown = [f for f in reply.files if everything or f.state != pb.FILE_STATE_INDEXED]
    if shown:
        print_table([[f.path, STATE.get(f.state, "?"), f.chunks, f.reason] for f in shown], ["FILE", "STATE", "PASSAGES", "WHY"])


@sources.command("sync")
@config_option
@target_option
@json_option
@click.argument("name")
@click.option("--full", is_flag=True, help="Read every file again, even unchanged ones.")
def sync(config, target, as_json, name, full):
    """Bring source NAME's memories in step with its folder now."""
    client, stub = _stub(config, target)
    bar, report = None, None
    try:
        for event in stub.SyncSource(pb.SyncSourceRequest(name=name, full=full), timeout=TIMEOUT, metadata=client.metadata):
            if event.phase == "reading" and event.total and not as_json:
                if bar is None:
                    bar = click.progressbar(length=event.total, label=f"reading {event.total} changed files", file=sys.stderr)
                bar.update(event.done - bar.pos)
            if event.HasField("report"):
                report = event.report
    except grpc.RpcError as exc:
        raise client.error(exc) from None
    if bar is not None:
        bar.render_finish()
    if as_json:
        return print_json(to_dict(report))
    click.echo(_summary(report))


@sources.command("remove")
@config_option
@target_option
@click.argument("name")
@click.option("--keep-memories", is_flag=True, help="Keep the memories made from it.")
def remove(config, target, name, keep_memories):
    """Stop keeping source NAME in sync, deleting its memories unless --keep-memories."""
    client, stub = _stub(config, target)
    reply = client.call(stub.RemoveSource, pb.RemoveSourceRequest(name=name, keep_memories=keep_memories))
    click.echo(f"removed source {name}; {reply.memories_deleted} memories deleted")


@click.command("open")
@config_option
@target_option
@json_option
@click.argument("ref")
def open_(config, target, as_json, ref):
    """Print the passage REF cites: a memory id, or source:path#L3-L9 (as `cortex run` cites)."""
    client, stub = _stub(config, target)
    reply = client.call(stub.Open, pb.OpenRequest(ref=ref))
    if as_json:
        return print_json(to_dict(reply))
    where = f"{reply.source}:{reply.path} lines {reply.first_line}-{reply.last_line}"
    click.echo(f"{where}{f'  ({reply.heading})' if reply.heading else ''}")
    if reply.note:
        click.echo(f"note: {reply.note}", err=True)
    click.echo(reply.text)


def register(cli: click.Group) -> None:
    cli.add_command(sources)
    cli.add_command(open_)
