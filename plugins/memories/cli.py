"""`cortex remember`, `cortex recall`, `cortex memories get|delete|list|stats|history|revert|
delete-matching|tag-matching|reindex|import|export`: clients of MemoryService (and ArchiveService)
on the running kernel; `migrate` and `encrypt` (encrypt_cli.py) work on the data dir offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import grpc

from cortex.contracts.memories.v1 import memories_pb2 as pb
from cortex.contracts.memories.v1 import memories_pb2_grpc
from cortex.kernel.sdk import (
    config_option,
    json_option,
    kernel_client,
    load_config_or_fail,
    print_json,
    print_table,
    target_option,
    to_dict,
)

from .chunking import FRONT_MATTER, Unreadable, chunks_of, front_matter_tags

MODES = {"hybrid": pb.SEARCH_MODE_HYBRID, "semantic": pb.SEARCH_MODE_SEMANTIC, "keyword": pb.SEARCH_MODE_KEYWORD}
TIMEOUT = 120.0


def _stub(config, target):
    client = kernel_client(config, target)
    return client, memories_pb2_grpc.MemoryServiceStub(client.channel)


def _line(m) -> str:
    tags = f" [{', '.join(m['tags'])}]" if m.get("tags") else ""
    newer = f"  (superseded by {m['superseded_by']})" if m.get("superseded_by") else ""
    return f"{m['id']}  {m['kind']:<8} {m['text'][:70]!r}{tags}{newer}"


@click.command()
@config_option
@target_option
@json_option
@click.argument("text")
@click.option("--kind", default="note", show_default=True)
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable); 'private' keeps it off remote providers.")
@click.option("--ttl", type=int, default=0, help="Forget after this many seconds.")
@click.option("--namespace", default="", help="A shared namespace to store it in (default: your own).")
def remember(config, target, as_json, text, kind, tags, ttl, namespace):
    """Store TEXT as a memory."""
    client, stub = _stub(config, target)
    reply = client.call(stub.Store, pb.StoreRequest(text=text, kind=kind, tags=tags, ttl_seconds=ttl, source="cli",
                                                       namespace=namespace), TIMEOUT)
    if as_json:
        return print_json(to_dict(reply))
    if reply.updated:
        click.echo(f"updated {reply.id} ({reply.rule}); `cortex memories history {reply.id}` shows what it said before")
    else:
        click.echo(f"{'remembered' if reply.created else 'already remembered'}: {reply.id}")
    if reply.supersedes:
        click.echo(f"supersedes {reply.supersedes} ({reply.rule})")


@click.command()
@config_option
@target_option
@json_option
@click.argument("query")
@click.option("--mode", type=click.Choice(list(MODES)), default="hybrid", show_default=True)
@click.option("-k", "top_k", type=int, default=5, show_default=True)
@click.option("--kind", "kinds", multiple=True)
@click.option("--tag", "tags", multiple=True, help="Only memories with every one of these tags.")
@click.option("--namespace", "namespaces", multiple=True,
              help="Only this namespace (repeatable; '*' for all, admin only). Default: yours and your shared ones.")
def recall(config, target, as_json, query, mode, top_k, kinds, tags, namespaces):
    """Search memories for QUERY."""
    client, stub = _stub(config, target)
    request = pb.SearchRequest(query=query, mode=MODES[mode], top_k=top_k,
                               filter=pb.Filter(kinds=kinds, tags_all=tags, namespaces=namespaces))
    reply = client.call(stub.Search, request, TIMEOUT)
    results = [
        {
            "memory": to_dict(r.memory),
            "score": r.score,  # what ranked it: cosine, BM25 or (hybrid) the cosine plus keyword evidence
            "semantic_score": r.semantic_score,  # cosine similarity, -1..1; 0 when not matched by meaning
            "keyword_score": r.keyword_score,  # BM25, higher is better; 0 when no word matched
            "matched": [pb.SearchMode.Name(m).removeprefix("SEARCH_MODE_").lower() for m in r.matched],
        }
        for r in reply.results
    ]
    if as_json:
        return print_json({"results": results, "mode": pb.SearchMode.Name(reply.mode).removeprefix("SEARCH_MODE_").lower()})
    if not results:
        click.echo("nothing found")
    used = pb.SearchMode.Name(reply.mode).removeprefix("SEARCH_MODE_").lower()  # hybrid may fall back to keyword
    for rank, (r, found) in enumerate(zip(results, reply.results, strict=True), 1):
        if rank > 1:
            click.echo()
        click.echo(f"{rank}. {_ranked_by(used, r)}  {_where(found.memory)}")
        click.echo(f"   {_snippet_of(found.memory, query)}")


def _ranked_by(mode: str, result: dict) -> str:
    """The score the results are ordered by, named by the mode that gave it, then its parts: the
    cosine similarity (matched by meaning) and the BM25 keyword relevance, "-" where not matched."""
    semantic = f"{result['semantic_score']:.2f}" if "semantic" in result["matched"] else "-"
    keyword = f"{result['keyword_score']:.2f}" if "keyword" in result["matched"] else "-"
    return f"{mode} {result['score']:.2f} (sem {semantic}, kw {keyword})"


def _where(memory) -> str:
    """Where a memory comes from: a watched note's heading path and citation ("notes:a.md#L3-L9"),
    else its source (or kind); then its id, and what supersedes it."""
    from .snippet import one_line

    heading = memory.metadata.get("heading", "")
    place = " · ".join(x for x in (heading, memory.source or memory.kind) if x)
    tags = f" [{', '.join(memory.tags)}]" if memory.tags else ""
    newer = f" (superseded by {memory.superseded_by})" if memory.superseded_by else ""
    return f"{one_line(place)}  {one_line(memory.id + tags + newer)}"


def _snippet_of(memory, query: str) -> str:
    """The part of the memory that matched, its query words bold on a terminal (click.echo drops
    the styling when the output is not one)."""
    from .snippet import snippet

    text, heading = memory.text, memory.metadata.get("heading", "")
    if heading and text.startswith(heading + "\n"):  # a passage starts with its heading path, shown above
        text = text[len(heading) + 1:]
    return snippet(text, query).styled(lambda word: click.style(word, bold=True))


@click.group()
def memories():
    """Memories in the running kernel."""


@memories.command("get")
@config_option
@target_option
@click.argument("memory_id")
def get(config, target, memory_id):
    """Print memory MEMORY_ID as JSON."""
    client, stub = _stub(config, target)
    print_json(to_dict(client.call(stub.Get, pb.GetRequest(id=memory_id)).memory))


@memories.command("delete")
@config_option
@target_option
@click.argument("memory_id")
def delete(config, target, memory_id):
    """Delete memory MEMORY_ID."""
    client, stub = _stub(config, target)
    if not client.call(stub.Delete, pb.DeleteRequest(id=memory_id)).deleted:
        raise click.ClickException(f"no memory {memory_id}")
    click.echo(f"deleted {memory_id}")


@memories.command("list")
@config_option
@target_option
@json_option
@click.option("--kind", "kinds", multiple=True)
@click.option("--tag", "tags", multiple=True)
@click.option("--limit", type=int, default=50, show_default=True, help="How many, newest first (0: all).")
@click.option("--namespace", "namespaces", multiple=True,
              help="Only this namespace (repeatable; '*' for all, admin only). Default: yours and your shared ones.")
def list_(config, target, as_json, kinds, tags, limit, namespaces):
    """List memories, newest first."""
    client, stub = _stub(config, target)
    found, token = [], ""
    while True:
        page = min(500, limit - len(found)) if limit else 500
        request = pb.ListRequest(filter=pb.Filter(kinds=kinds, tags_all=tags, namespaces=namespaces), page_size=page,
                                 page_token=token)
        reply = client.call(stub.List, request)
        found += [to_dict(m) for m in reply.memories]
        token = reply.next_page_token
        if not token or (limit and len(found) >= limit):
            break
    if as_json:
        return print_json({"memories": found})
    for m in found:
        click.echo(_line(m))


@memories.command("migrate")
@config_option
def migrate(config):
    """Bring the store the config names to this version's schema (as `cortex serve` does on start;
    safe beside running kernels: two migrating at once migrate once)."""
    from .plugin import store_opener

    cfg = load_config_or_fail(config)
    section = cfg.plugin_section("memories")
    try:
        store = store_opener(section, cfg.data_dir / "memories", str(section.get("synchronous", "FULL")).upper())()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - DatabaseUnavailable, or a schema newer than this version
        raise click.ClickException(f"{exc}") from None
    from .pg_store import SCHEMA_VERSION as PG_VERSION
    from .store import SCHEMA_VERSION, SqliteStore

    known = SCHEMA_VERSION if isinstance(store, SqliteStore) else PG_VERSION
    click.echo(f"memories on {store.location}: schema {store.version} (this Cortex-OS: {known})")
    store.close()


@memories.command("stats")
@config_option
@target_option
@json_option
@click.option("--namespace", "namespaces", multiple=True, help="Count this namespace (repeatable; '*': all, admin only).")
def stats(config, target, as_json, namespaces):
    """Counts by kind and tag, storage size, index state."""
    client, stub = _stub(config, target)
    reply = to_dict(client.call(stub.Stats, pb.StatsRequest(namespaces=namespaces)))
    reply["total"] = int(reply["total"])
    if as_json:
        return print_json(reply)
    click.echo(f"{reply['total']} memories, {int(reply['storage_bytes']) / 1e6:.1f} MB; index: {reply['index']}")
    click.echo(f"embedding model: {reply['embedding_model'] or '(none yet)'}; stale: {reply['stale']}; expired: {reply['expired']}")
    print_table([[k, v] for k, v in sorted(reply["by_kind"].items())], ["KIND", "COUNT"])


@memories.command("history")
@config_option
@target_option
@json_option
@click.argument("memory_id")
def history(config, target, as_json, memory_id):
    """What memory MEMORY_ID said before each change, and what it supersedes or is superseded by."""
    client, stub = _stub(config, target)
    reply = client.call(stub.History, pb.HistoryRequest(id=memory_id))
    if as_json:
        return print_json(to_dict(reply))
    click.echo(f"now: {_line(to_dict(reply.memory))}")
    for v in reply.versions:
        when = v.replaced_at.ToDatetime().strftime("%Y-%m-%d %H:%M")
        click.echo(f"  version {v.version}, replaced {when} by {v.cause}: {v.memory.text[:70]!r}")
    for link in reply.supersedes:
        click.echo(f"  supersedes {link.old_id} ({link.rule})")
    if reply.HasField("superseded_by"):
        click.echo(f"  superseded by {reply.superseded_by.new_id} ({reply.superseded_by.rule})")
    if not reply.versions and not reply.supersedes and not reply.HasField("superseded_by"):
        click.echo("  never changed")


@memories.command("revert")
@config_option
@target_option
@click.argument("memory_id")
@click.argument("version", type=click.IntRange(min=1))
def revert(config, target, memory_id, version):
    """Restore VERSION of memory MEMORY_ID (the text it replaces is kept as a version too)."""
    client, stub = _stub(config, target)
    memory = client.call(stub.Revert, pb.RevertRequest(id=memory_id, version=version), TIMEOUT).memory
    click.echo(f"reverted {memory.id} to version {version}: {memory.text[:70]!r}")


def filter_options(command):
    """--kind, --tag, --any-tag, --meta, --before, --after, --namespace: a Filter, as bulk changes take it."""
    for option in reversed([
        click.option("--kind", "kinds", multiple=True, help="Any of these kinds."),
        click.option("--tag", "tags", multiple=True, help="Every one of these tags."),
        click.option("--any-tag", "any_tags", multiple=True, help="At least one of these tags."),
        click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE", help="Metadata that must be equal."),
        click.option("--before", type=click.DateTime(), help="Created before this time (local)."),
        click.option("--after", type=click.DateTime(), help="Created after this time (local)."),
        click.option("--namespace", "namespaces", multiple=True, help="Only this namespace (repeatable)."),
    ]):
        command = option(command)
    return command


def _filter(kinds, tags, any_tags, meta, before, after, namespaces=()) -> pb.Filter:
    pairs = [m.partition("=") for m in meta]
    if any(not sep or not key for key, sep, _ in pairs):
        raise click.BadParameter("write each as KEY=VALUE", param_hint="--meta")
    f = pb.Filter(kinds=kinds, tags_all=tags, tags_any=any_tags, metadata={k: v for k, _, v in pairs}, namespaces=namespaces)
    if before:
        f.created_before.FromDatetime(before.astimezone())
    if after:
        f.created_after.FromDatetime(after.astimezone())
    return f


def _bulk(client, method, request, what: str, done_what: str, yes: bool) -> None:
    """Dry run, show it, ask (unless --yes), then the real run with the dry run's token."""
    request.dry_run = True
    dry = client.call(method, request, TIMEOUT).outcome
    if not dry.matched:
        click.echo("no memory matches")
        return
    for m in dry.sample[:10]:
        click.echo(f"  {_line(to_dict(m))}")
    if dry.matched > 10:
        click.echo(f"  ... and {dry.matched - 10} more")
    if not yes:
        click.confirm(f"{what} {dry.matched} memories?", abort=True, err=True)
    request.dry_run, request.confirm = False, dry.confirm
    done = client.call(method, request, TIMEOUT).outcome
    click.echo(f"{done_what} {done.changed} of {done.matched}")
    for line in done.skipped:
        click.echo(f"  skipped {line}", err=True)


@memories.command("delete-matching")
@config_option
@target_option
@filter_options
@click.option("--yes", is_flag=True, help="Do not ask (the dry run is still shown).")
def delete_matching(config, target, kinds, tags, any_tags, meta, before, after, namespaces, yes):
    """Delete every memory the filter matches, after a dry run that shows them."""
    client, stub = _stub(config, target)
    request = pb.DeleteMatchingRequest(filter=_filter(kinds, tags, any_tags, meta, before, after, namespaces))
    _bulk(client, stub.DeleteMatching, request, "Delete", "deleted", yes)


@memories.command("tag-matching")
@config_option
@target_option
@filter_options
@click.option("--add", "add_tags", multiple=True, help="A tag to add (repeatable).")
@click.option("--remove", "remove_tags", multiple=True, help="A tag to remove (repeatable).")
@click.option("--yes", is_flag=True, help="Do not ask (the dry run is still shown).")
def tag_matching(config, target, kinds, tags, any_tags, meta, before, after, namespaces, add_tags, remove_tags, yes):
    """Add or remove tags on every memory the filter matches, after a dry run that shows them."""
    client, stub = _stub(config, target)
    request = pb.TagMatchingRequest(filter=_filter(kinds, tags, any_tags, meta, before, after, namespaces), add_tags=add_tags,
                             remove_tags=remove_tags)
    _bulk(client, stub.TagMatching, request, "Retag", "retagged", yes)


@memories.command("reindex")
@config_option
@target_option
@click.option("--all", "everything", is_flag=True, help="Re-embed every memory, not only stale ones.")
def reindex(config, target, everything):
    """Re-embed memories whose vectors come from another model, with progress."""
    client, stub = _stub(config, target)
    bar = None
    try:
        for progress in stub.Reindex(pb.ReindexRequest(all=everything), timeout=3600, metadata=client.metadata):
            if bar is None:
                bar = click.progressbar(length=progress.total, label=f"re-embedding with {progress.embedding_model}", file=sys.stderr)
                bar.__enter__()
            bar.update(progress.done - bar.pos)
    except grpc.RpcError as exc:
        raise client.error(exc) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"reindexed {bar.length if bar else 0} memories")


def notes_of(path: Path, split: str) -> list[tuple[str, list[str], str]]:
    """(text, tags, source) for each memory in the note at `path`: the note as written, or (--split
    headings, Markdown) its sections as plain text, cut as a watched folder cuts them (chunking.py:
    each starts with its heading path; code blocks, links and emphasis read as text, not markup)."""
    if split == "headings" and path.suffix.lower() in (".md", ".markdown"):
        chunks = chunks_of(path.name, path.read_bytes())
        return [(c.text, c.tags, f"file:{path}" + (f"#{c.heading}" if c.heading else "")) for c in chunks if c.text.strip()]
    text = path.read_text(encoding="utf-8", errors="replace")
    tags: list[str] = []
    match = FRONT_MATTER.match(text)
    if match:
        tags, text = front_matter_tags(match.group(1)), text[match.end():]
    return [(text.strip(), tags, f"file:{path}")] if text.strip() else []


@memories.command("import")
@config_option
@target_option
@click.argument("path", type=click.Path(exists=True))
@click.option("--split", type=click.Choice(["note", "headings"]), default="note", show_default=True,
              help="One memory per note, or per heading section.")
@click.option("--kind", default="note", show_default=True)
@click.option("--into", default="", help="An archive: put every memory in this namespace instead of its own.")
def import_(config, target, path, split, kind, into):
    """Import an archive made by `cortex memories export` (exactly: ids, versions, vectors), or a
    folder of Markdown/text notes (tags from front matter; `cortex sources add` keeps one in sync)."""
    from .archive_cli import import_archive
    from .archive_file import manifest_of

    root = Path(path)
    if manifest_of(root) is not None:
        return import_archive(config, target, root, into)
    files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.suffix.lower() in (".md", ".markdown", ".txt"))
    client, stub = _stub(config, target)
    created = existing = 0
    with click.progressbar(files, label=f"importing {len(files)} notes", file=sys.stderr) as bar:
        for file in bar:
            try:
                notes = notes_of(file, split)
            except Unreadable as exc:  # (a file that is no text: the rest go on)
                click.echo(f"\nskipped {file}: {exc}", err=True)
                continue
            for text, tags, source in notes:
                reply = client.call(stub.Store, pb.StoreRequest(text=text, kind=kind, tags=tags, source=source), TIMEOUT)
                created, existing = created + reply.created, existing + (not reply.created)
    click.echo(f"imported {created} new memories from {len(files)} files ({existing} already known)")


def register(cli: click.Group) -> None:
    from .archive_cli import export
    from .encrypt_cli import encrypt
    from .source_cli import register as register_sources

    memories.add_command(export)
    memories.add_command(encrypt)
    for command in (remember, recall, memories):
        cli.add_command(command)
    register_sources(cli)
