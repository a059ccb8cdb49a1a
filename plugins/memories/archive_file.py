"""Archive files: ArchiveService's lines as JSON Lines on disk, checked before they are trusted.

Each line is one `cortex.memories.v1.ArchiveLine` in protobuf's JSON mapping, written canonically
(keys sorted, no spaces, UTF-8), so the same memories make the same bytes. The last line is the
end: the counts, and the SHA-256 of every byte before it. `verify` reads the whole file and
refuses a cut, edited or reordered one before anything is imported; `batches` then yields the
lines between manifest and end, a batch at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from google.protobuf import json_format

from cortex.contracts.memories.v1 import archive_pb2 as pb

FORMAT = "cortex-memories"


class ArchiveError(ValueError):
    """Why a file is not a whole, unedited archive."""


def encode(line: pb.ArchiveLine) -> bytes:
    return json.dumps(json_format.MessageToDict(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(raw: bytes, number: int) -> pb.ArchiveLine:
    try:
        return json_format.Parse(raw.decode("utf-8"), pb.ArchiveLine())
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"line {number} is not an archive line: {exc}") from None


def write(lines: Iterable[pb.ArchiveLine], path: Path, progress=None) -> pb.ArchiveEnd:
    """Write the archive atomically (a file beside it, renamed at the end: an interrupted export
    leaves no half archive under the name); the end line gets the digest. `progress(n)` is called
    with the count of memory lines written so far."""
    digest, tmp, end = hashlib.sha256(), path.with_name(f".{path.name}.partial"), None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # memories are private
    written = 0
    with os.fdopen(fd, "wb") as out:
        for line in lines:
            if line.HasField("end"):
                end = line.end
                end.sha256 = digest.hexdigest()
                out.write(encode(line))
                break
            data = encode(line)
            digest.update(data)
            out.write(data)
            if line.HasField("memory"):
                written += 1
                if progress is not None and written % 500 == 0:
                    progress(written)
        out.flush()
        os.fsync(out.fileno())
    if end is None:
        tmp.unlink(missing_ok=True)
        raise ArchiveError("the export ended before its end line: nothing was written")
    os.replace(tmp, path)
    return end


def manifest_of(path: Path) -> pb.ArchiveManifest | None:
    """The manifest, when `path` is an archive file (else None: a note, a folder)."""
    if not path.is_file():
        return None
    with path.open("rb") as f:
        first = f.readline(1 << 20)
    try:
        line = decode(first, 1)
    except ArchiveError:
        return None
    return line.manifest if line.HasField("manifest") and line.manifest.format == FORMAT else None


def verify(path: Path) -> tuple[pb.ArchiveManifest, pb.ArchiveEnd]:
    """(manifest, end) of a whole archive; ArchiveError saying what is wrong with it."""
    digest, counts, manifest, end = hashlib.sha256(), {"memory": 0, "link": 0, "source": 0}, None, None
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if end is not None:
                raise ArchiveError(f"line {number} comes after the end line")
            line = decode(raw, number)
            kind = line.WhichOneof("line")
            if number == 1:
                if kind != "manifest" or line.manifest.format != FORMAT:
                    raise ArchiveError(f"{path} does not start with a {FORMAT} manifest")
                manifest = line.manifest
            elif kind == "manifest":
                raise ArchiveError(f"line {number} is a second manifest")
            elif kind == "end":
                end = line.end
                continue
            elif kind in counts:
                counts[kind] += 1
            else:
                raise ArchiveError(f"line {number} is empty")
            digest.update(raw)
    if manifest is None or end is None:
        raise ArchiveError(f"{path} has no end line: it was cut short (copy it again)")
    if end.sha256 != digest.hexdigest():
        raise ArchiveError(f"{path} was changed after it was written (its digest does not match its end line)")
    if (counts["memory"], counts["link"], counts["source"]) != (end.memories, end.links, end.sources):
        raise ArchiveError(f"{path} holds {counts['memory']} memories, {counts['link']} links and {counts['source']} "
                           f"sources; its end line says {end.memories}, {end.links} and {end.sources}")
    return manifest, end


def batches(path: Path, size: int = 500) -> Iterator[list[pb.ArchiveLine]]:
    """The lines between manifest and end, `size` at a time (memories come before the links
    that name them, so each batch's links find their memories)."""
    batch: list[pb.ArchiveLine] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = decode(raw, number)
            if line.WhichOneof("line") in ("manifest", "end"):
                continue
            batch.append(line)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch
