"""Notes as passages: each chunk a memory that knows its heading path and line range.

Markdown is cut at its headings (a chunk is a heading with the text under it, up to the next
heading of any level), with the front matter's tags on every chunk; a heading's chunk text starts
with its heading path ("Health > Dentist"), so a passage read alone still says what it is about.
Plain text is cut at blank lines into passages of up to MAX_CHUNK_CHARS. PDF text comes from
pypdf, a page at a time (its "lines" are pages: PDFs have no stable lines). A chunk over
MAX_CHUNK_CHARS is split at paragraph, then line boundaries, keeping its heading.

CHUNKER_VERSION is kept with every indexed file: a file is chunked again when it changes, or when
this version does (an upgrade that cuts notes differently), never otherwise.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

CHUNKER_VERSION = 1
MAX_CHUNK_CHARS = 4000
FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.S)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^(```|~~~)")


class Unreadable(Exception):
    """A file that cannot be turned into text; the message says why, for its status."""


@dataclass
class Chunk:
    text: str
    heading: str  # "Top > Sub", or "" before the first heading
    first: int  # 1-based, inclusive: lines (pages for a PDF)
    last: int
    tags: list[str] = field(default_factory=list)

    @property
    def lines(self) -> str:
        return f"{self.first}-{self.last}"


def chunks_of(name: str, data: bytes) -> list[Chunk]:
    """The chunks of file `name` (its suffix says how to read it) holding `data`."""
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix == "pdf":
        return pdf_chunks(data)
    text = decode(data)
    if suffix in ("md", "markdown"):
        return markdown_chunks(text)
    return text_chunks(text.splitlines(), 1, "", [])


def decode(data: bytes) -> str:
    if b"\0" in data[:8192]:
        raise Unreadable("binary content, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def front_matter_tags(block: str) -> list[str]:
    """tags: [a, b] | tags: a, b | tags:\\n  - a\\n  - b (a small YAML subset)."""
    lines = block.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^tags\s*:\s*(.*)$", line)
        if not match:
            continue
        inline = match.group(1).strip()
        if inline:
            return [t.strip().strip("'\"") for t in inline.strip("[]").split(",") if t.strip()]
        tags = []
        for item in lines[i + 1:]:
            bullet = re.match(r"^\s*-\s*(.+)$", item)
            if not bullet:
                break
            tags.append(bullet.group(1).strip().strip("'\""))
        return tags
    return []


def markdown_chunks(text: str) -> list[Chunk]:
    tags: list[str] = []
    offset = 0
    match = FRONT_MATTER.match(text)
    if match:
        tags = front_matter_tags(match.group(1))
        offset = match.group(0).count("\n")
        text = text[match.end():]
    lines = text.splitlines()
    sections: list[tuple[str, int, list[str]]] = []  # (heading path, first line, lines)
    path: list[tuple[int, str]] = []
    current: tuple[str, int, list[str]] = ("", offset + 1, [])
    fenced = False
    for number, line in enumerate(lines, start=offset + 1):
        if FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading:
            sections.append(current)
            level = len(heading.group(1))
            path = [(lv, title) for lv, title in path if lv < level] + [(level, heading.group(2))]
            current = (" > ".join(title for _, title in path), number, [line])
        else:
            current[2].append(line)
    sections.append(current)
    chunks = []
    for heading, first, body in sections:
        chunks += text_chunks(body, first, heading, tags)
    return chunks


def text_chunks(lines: list[str], first: int, heading: str, tags: list[str]) -> list[Chunk]:
    """`lines` (starting at line `first`) as chunks of up to MAX_CHUNK_CHARS, cut at blank lines
    where one is needed; blank chunks are dropped."""
    chunks: list[Chunk] = []
    start, size, last_blank = 0, 0, None
    prefix = f"{heading}\n" if heading and not (lines and HEADING.match(lines[0])) else ""

    def emit(end: int) -> None:
        body = "\n".join(lines[start:end]).strip()
        if body:
            lead = 0
            while not lines[start + lead].strip():
                lead += 1
            trail = end - 1
            while not lines[trail].strip():
                trail -= 1
            # A passage says what it is about: under its heading path, unless it begins with its
            # own top-level heading (which says it already).
            whole = not heading or (body.startswith("#") and " > " not in heading)
            text = body if whole else f"{heading}\n{body}"
            chunks.append(Chunk(text, heading, first + start + lead, first + trail, list(tags)))

    for i, line in enumerate(lines):
        size += len(line) + 1
        if not line.strip():
            last_blank = i
        if size > MAX_CHUNK_CHARS - len(prefix):
            cut = last_blank + 1 if last_blank is not None and last_blank > start else i + 1
            emit(cut)
            start, size, last_blank = cut, sum(len(x) + 1 for x in lines[cut:i + 1]), None
    emit(len(lines))
    return chunks


def pdf_chunks(data: bytes) -> list[Chunk]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "") for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise Unreadable(f"not a readable PDF ({exc})") from None
    title = ""
    try:
        title = str((reader.metadata or {}).get("/Title") or "")
    except (PdfReadError, ValueError, KeyError, TypeError):
        pass
    chunks = []
    for number, text in enumerate(pages, start=1):
        for piece in text_chunks(text.splitlines(), 1, title, []):
            chunks.append(Chunk(piece.text, title, number, number, []))
    if not chunks and pages:
        raise Unreadable("no text in this PDF (a scan without a text layer?)")
    return chunks
