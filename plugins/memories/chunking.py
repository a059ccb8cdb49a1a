"""Notes as passages: each chunk a memory that knows its heading path and line range.

A passage is what a search finds and what an answer quotes, so its text is the note's words and
nothing else. Markdown is cut at its headings (a section is a heading with the text under it, up to
the next heading of any level) and each section's body is turned into plain text:

- heading lines are not in the body: the passage starts with its heading path as a plain line
  ("Health > Dentist"; a top-level section's is its own title, "Banana bread"), so a passage read
  alone still says what it is about (retrieval depends on that), then the body;
- emphasis (**x**, __x__, *x*, _x_, ~~x~~, ==x==) loses its markers, but only where they are
  markup: snake_case_words and 2*3*4 keep theirs; inline code loses its backticks (its content is
  kept as written); a link [text](url) is its text, an image ![alt](src) its alt text, a wiki link
  [[Page|alias]] its alias (else the page), an autolink <https://...> its URL; HTML tags and
  comments (also over several lines), horizontal rules, link definitions and footnote markers go;
- bullets (- * +), numbers (1. 2)), task boxes ([ ] [x]) and blockquote markers (>) go from the
  starts of lines, but every list item and every line stays a line of its own (answers cut
  sentences at newlines too: an item without a full stop must not run into the next one);
- a table is a line per row, its cells joined by " | ", without its separator row;
- a fenced code block keeps its lines as written (a "# comment" in it is not a heading, **x** in
  it is not emphasis), without its fence lines.

A section with nothing left under its heading ("# Banana bread" directly followed by
"## Ingredients") is no passage: it would answer nothing, yet rank high on its title. Its title
still leads the paths of the sections under it. Chunk.heading is the heading path ("A > B"), and
a passage's line range is the lines of the file it came from (its section's heading line
included), as written: `cortex open` shows those lines, markup and all. The front matter's tags
are on every passage.

Plain text is cut at blank lines into passages of up to MAX_CHUNK_CHARS, as written. PDF text
comes from pypdf, a page at a time (its "lines" are pages: PDFs have no stable lines). A chunk over
MAX_CHUNK_CHARS is split at paragraph, then line boundaries, keeping its heading.

CHUNKER_VERSION is kept with every indexed file: a file is chunked again when it changes, or when
this version does (an upgrade that cuts notes differently), never otherwise. Version 2 is the
plain-text Markdown above (version 1 kept the markup and made heading-only passages).
"""

from __future__ import annotations

import html
import io
import itertools
import re
from dataclasses import dataclass, field

CHUNKER_VERSION = 2
MAX_CHUNK_CHARS = 4000
FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.S)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")  # text_chunks: a passage that starts with one


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


# -- Markdown as plain text ------------------------------------------------------------------------
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
FENCE_OPEN = re.compile(r"^[ \t]*(`{3,}(?=[^`]*$)|~{3,})")
RULE = re.compile(r"^[ \t]*(?:([-*_])(?:[ \t]*\1){2,}|={3,})[ \t]*$")  # a horizontal rule, a setext underline
TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
QUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+")
LIST_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]+")
TASK_BOX = re.compile(r"^\[[ xX]\](?:[ \t]+|$)")
QUOTED_FENCE = re.compile(r"^[ \t]*(?:`{3,}[^`]*|~{3,}.*)$")
QUOTED_HEADING = re.compile(r"^#{1,6}(?:[ \t]+|$)")
LINK_DEFINITION = re.compile(r"^[ \t]{0,3}\[[^\]^][^\]]*\]:[ \t]*(?:<[^>]*>|(?:[a-z][\w+.-]*:|/|\.|#|www\.)\S*)"
                             r"(?:[ \t]+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?[ \t]*$", re.I)
FOOTNOTE_DEFINITION = re.compile(r"^\[\^[^\]\s]+\]:[ \t]*")

CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`)(.+?)(?<!`)\1(?!`)")
ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # a backslash before ASCII punctuation: the character itself
COMMENT = re.compile(r"<!--.*?-->")
AUTOLINK = re.compile(r"<((?:https?|ftp)://[^\s<>]+|mailto:[^\s<>]+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)>", re.I)
WIKI_LINK = re.compile(r"!?\[\[([^\[\]|\n]+)(?:\|([^\[\]\n]+))?\]\]")
_TARGET = r"\((?:[^()\s]|\([^()\s]*\))*(?:[ \t]+(?:\"[^\"\n]*\"|'[^'\n]*'|\([^()\n]*\)))?[ \t]*\)"
IMAGE = re.compile(r"!\[([^\[\]\n]*)\]" + _TARGET)
LINK = re.compile(r"\[([^\[\]\n]*)\]" + _TARGET)
REFERENCE_LINK = re.compile(r"!?\[([^\[\]\n]+)\]\[[^\[\]\n]*\]")
FOOTNOTE = re.compile(r"\[\^[^\[\]\s]+\]")
BARE_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\[\]()]+", re.I)
BREAK = re.compile(r"<br[ \t]*/?>", re.I)
HTML_TAG = re.compile(
    r"</?(?:a|abbr|b|big|blockquote|center|cite|code|dd|del|details|div|dl|dt|em|figcaption|figure|font|h[1-6]|hr|i|img"
    r"|input|ins|kbd|li|mark|ol|p|pre|q|s|samp|small|span|strike|strong|sub|summary|sup|table|tbody|td|tfoot|th|thead"
    r"|tr|tt|u|ul|var|wbr)\b[^<>]*>", re.I)  # named tags only: "List<int>" or "cortex open <ref>" are words
ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Emphasis markers, longest first; each opens after no word character and closes before none (so
# snake_case_words and 2*3*4 keep theirs), hugs its text, and spans no marker like itself.
EMPHASIS = [(mark, re.compile(p)) for mark, p in zip("*_~=*_", (
    r"(?<![\w\\])\*\*(?=\S)((?:[^*\n]|\*(?!\*))+?)(?<=\S)\*\*(?!\w)",
    r"(?<![\w\\])__(?=\S)((?:[^_\n]|_(?!_))+?)(?<=\S)__(?!\w)",
    r"(?<![\w\\~])~~(?=\S)((?:[^~\n]|~(?!~))+?)(?<=\S)~~(?![\w~])",
    r"(?<![\w\\=])==(?=[^\s=])((?:[^=\n]|=(?!=))+?)(?<=\S)==(?![\w=])",
    r"(?<![\w\\*])\*(?=[^\s*])([^*\n]+?)(?<=\S)\*(?![\w*])",
    r"(?<![\w\\_])_(?=[^\s_])([^_\n]+?)(?<=\S)_(?![\w_])",
), strict=True)]
HELD = re.compile("\ue000(\\d+)\ue001")  # a piece of text held out of the cleaning (code, an escape, a URL)


def plain(text: str, cells: bool = False) -> str:
    """One line of Markdown as plain text; with `cells`, a table row as its cells joined by " | "."""
    held: list[str] = []

    def hold(piece: str) -> str:
        held.append(piece)
        return f"\ue000{len(held) - 1}\ue001"

    text = text.replace("\ue000", "").replace("\ue001", "")
    if "`" in text:
        text = CODE_SPAN.sub(lambda m: hold(_code_span(m.group(2))), text)
    if "\\" in text:
        text = ESCAPED.sub(lambda m: hold(m.group(1)), text)
    if cells:
        row = text.strip()
        row = row[1:] if row.startswith("|") else row
        row = row[:-1] if row.endswith("|") else row
        text = " | ".join(cell for cell in (_inline(c, hold) for c in row.split("|")) if cell)
    else:
        text = _inline(text, hold)
    for _ in range(3):  # a piece held may hold another (an escape inside a code span does not)
        if "\ue000" not in text:
            break
        text = HELD.sub(lambda m: held[int(m.group(1))], text)
    return text


def _code_span(code: str) -> str:
    return code[1:-1] if len(code) > 2 and code[0] == code[-1] == " " and code.strip() else code


def _inline(text: str, hold) -> str:
    if "<" in text:
        text = AUTOLINK.sub(lambda m: hold(m.group(1)), COMMENT.sub("", text))
    if "[" in text:
        text = WIKI_LINK.sub(lambda m: (m.group(2) or m.group(1)).strip(), text)
        text = REFERENCE_LINK.sub(r"\1", LINK.sub(r"\1", IMAGE.sub(r"\1", text)))
        text = FOOTNOTE.sub("", text)
    if "://" in text:
        text = BARE_URL.sub(lambda m: hold(m.group(0)), text)
    if "<" in text:
        text = HTML_TAG.sub("", BREAK.sub(" ", text))
    if any(mark in text for mark in "*_~="):
        for _ in range(4):  # nested emphasis (***x***, **a *b* c**) comes off a layer at a time
            before = text
            for mark, pattern in EMPHASIS:
                if mark in text:
                    text = pattern.sub(r"\1", text)
            if text == before:
                break
    if "&" in text:
        text = ENTITY.sub(lambda m: html.unescape(m.group(0)).replace("\xa0", " "), text)
    return " ".join(text.split()) if "  " in text or "\t" in text else text.strip()


def plain_lines(lines: list[str]) -> list[tuple[int, str | None]]:
    """Each line of a Markdown text as (heading level, plain text): a heading is (its level, its
    title); any other line is (0, its text): "" for a blank line, None for a line that was only
    markup (a fence, a rule, a comment, a table's separator row)."""
    out: list[tuple[int, str | None]] = []
    fence = ""  # the open fence's marker: its lines are code, kept as written
    comment = table = False
    for i, line in enumerate(lines):
        if fence:
            closing = line.strip()
            if closing.startswith(fence) and not closing.strip(fence[0]):
                fence = ""
                out.append((0, None))
            else:
                out.append((0, line.rstrip()))
            continue
        if not line.strip():
            out.append((0, None if comment else ""))
            table = False
            continue
        if comment:
            end = line.find("-->")
            if end < 0:
                out.append((0, None))
                continue
            comment, line = False, line[end + 3:]
        else:
            opening = FENCE_OPEN.match(line)
            if opening:
                fence, table = opening.group(1), False
                out.append((0, None))
                continue
            heading = ATX_HEADING.match(line)
            if heading:
                title = plain(heading.group(2)) or heading.group(2).strip()
                out.append((len(heading.group(1)), title))
                table = False
                continue
        line = COMMENT.sub("", line)
        if "<!--" in line:
            comment, line = True, line[:line.index("<!--")]
        if table and "|" in line:  # a row (or the separator row, which is markup)
            out.append((0, None if TABLE_RULE.match(line) else plain(QUOTE.sub("", line), cells=True) or None))
            continue
        table = False
        if "|" in line and i + 1 < len(lines) and "|" in lines[i + 1] and TABLE_RULE.match(lines[i + 1]):
            table = True  # a table's header row
            out.append((0, plain(QUOTE.sub("", line), cells=True) or None))
            continue
        out.append((0, _plain_line(line)))
    return out


def _plain_line(line: str) -> str | None:
    if RULE.match(line) or LINK_DEFINITION.match(line):
        return None
    line = QUOTE.sub("", line)
    line = QUOTED_HEADING.sub("", line)
    line = LIST_ITEM.sub("", line, count=1)
    line = TASK_BOX.sub("", line.lstrip())
    line = FOOTNOTE_DEFINITION.sub("", line)
    if RULE.match(line) or QUOTED_FENCE.match(line):
        return None
    return plain(line) or None


def markdown_chunks(text: str) -> list[Chunk]:
    tags: list[str] = []
    offset = 0
    match = FRONT_MATTER.match(text)
    if match:
        tags = front_matter_tags(match.group(1))
        offset = match.group(0).count("\n")
        text = text[match.end():]
    raw = text.splitlines()
    sections: list[tuple[str, int, list[tuple[int, str]]]] = []  # (heading path, first line, [(line, text)])
    path: list[tuple[int, str]] = []
    current: tuple[str, int, list[tuple[int, str]]] = ("", offset + 1, [])
    for number, (level, line) in enumerate(plain_lines(raw), start=offset + 1):
        if level:
            sections.append(current)
            path = [(lv, title) for lv, title in path if lv < level] + [(level, line)]
            current = (" > ".join(title for _, title in path), number, [])
        elif line is not None:
            current[2].append((number, line))
    sections.append(current)
    ends = [first for _, first, _ in sections[1:]] + [offset + len(raw) + 1]
    written = [bool(line.strip()) for line in raw]
    chunks = []
    for (heading, first, body), end in zip(sections, ends, strict=True):
        chunks += section_chunks(body, heading, first, end, lambda n: written[n - offset - 1], tags)
    return chunks


def section_chunks(body: list[tuple[int, str]], heading: str, first: int, end: int, written, tags: list[str]) -> list[Chunk]:
    """A section's plain lines (each with its line number) as chunks of up to MAX_CHUNK_CHARS, cut at
    blank lines where one is needed, each under its heading path; a chunk's range runs over the file's
    lines from `first` (the heading's) to before `end`, less blank lines at either end; the first
    chunk of a section with a heading starts at the heading line. Empty chunks are dropped."""
    prefix = f"{heading}\n" if heading else ""
    cuts, start, size, last_blank = [0], 0, 0, None
    for i, (_, line) in enumerate(body):
        size += len(line) + 1
        if not line.strip():
            last_blank = i
        if size > MAX_CHUNK_CHARS - len(prefix):
            cut = last_blank + 1 if last_blank is not None and last_blank > start else i + 1
            cuts.append(cut)
            start, size, last_blank = cut, sum(len(x) + 1 for _, x in body[cut:i + 1]), None
    cuts.append(len(body))
    chunks: list[Chunk] = []
    for a, b in itertools.pairwise(cuts):
        lines = [line for _, line in body[a:b]]
        text = "\n".join(line for k, line in enumerate(lines) if line.strip() or (k and lines[k - 1].strip()))
        text = text.strip("\n")
        if not text.strip():
            continue
        low = first if a == 0 else body[a - 1][0] + 1
        high = end - 1 if b == len(body) else body[b - 1][0]
        if heading and not chunks:
            low = first  # a section's first passage starts at its heading
        else:
            while low < high and not written(low):
                low += 1
        while high > low and not written(high):
            high -= 1
        chunks.append(Chunk(prefix + text, heading, low, high, list(tags)))
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
