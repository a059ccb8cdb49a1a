"""How notes are cut into passages, and what a file that cannot be read becomes."""

from __future__ import annotations

from cortex.plugins.memories.chunking import MAX_CHUNK_CHARS, chunks_of
from cortex.plugins.memories.source_sync import MAX_FILE_BYTES, glob_regex, read_file

from .pdf_file import pdf_bytes


def test_front_matter_tags_in_either_yaml_form_and_fenced_headings_are_text():
    bullets = b"---\ntitle: x\ntags:\n  - garden\n  - 'home'\nother: 1\n---\n# Beds\nRaised beds.\n```\n# a comment\n```\n"
    (chunk,) = chunks_of("g.md", bullets)
    assert chunk.tags == ["garden", "home"] and chunk.heading == "Beds" and (chunk.first, chunk.last) == (8, 12)
    assert "# a comment" in chunk.text
    assert chunks_of("g.md", b"---\ntags: a, b\n---\nbody\n")[0].tags == ["a", "b"]
    assert chunks_of("g.md", b"---\ntitle: none\n---\nbody\n")[0].tags == []


def test_a_long_section_is_cut_at_blank_lines_and_keeps_its_heading():
    paragraph = ("word " * 150).strip()
    text = "# Log\n\n" + "\n\n".join(f"{i}: {paragraph}" for i in range(12)) + "\n"
    chunks = chunks_of("log.md", text.encode())
    assert len(chunks) > 1 and all(len(c.text) <= MAX_CHUNK_CHARS + 20 for c in chunks)
    assert all(c.heading == "Log" for c in chunks) and chunks[1].text.startswith("Log\n")
    assert [c.first for c in chunks] == sorted(c.first for c in chunks) and chunks[-1].last == 25
    one_line = chunks_of("big.txt", ("x" * (MAX_CHUNK_CHARS * 2)).encode() + b"\n")  # no blank line to cut at
    assert len(one_line) == 1


def test_encodings_binary_and_unreadable_files(tmp_path):
    assert chunks_of("n.txt", "Caf\xe9 au lait".encode("latin-1"))[0].text == "Caf\xe9 au lait"
    assert chunks_of("n.txt", "bom".encode("utf-8-sig"))[0].text == "bom"
    (tmp_path / "bin.txt").write_bytes(b"\0\1\2binary")
    (tmp_path / "scan.pdf").write_bytes(pdf_bytes([[]]))
    (tmp_path / "empty.md").write_text("\n\n")
    for name, state, reason in (("bin.txt", "failed", "binary content"), ("scan.pdf", "failed", "no text in this PDF"),
                                ("empty.md", "skipped", "no text"), ("gone.md", "failed", "cannot read")):
        read = read_file(tmp_path, name, 10, 0)
        assert (read.state, read.chunks) == (state, []) and reason in read.reason, (name, read)
    huge = read_file(tmp_path, "empty.md", MAX_FILE_BYTES + 1, 0)
    assert huge.state == "skipped" and "over the 20 MB limit" in huge.reason


def test_globs_match_folders_as_people_write_them():
    assert glob_regex("**/*.md").match("a/b/c.md") and glob_regex("**/*.md").match("c.md")
    assert not glob_regex("*.md").match("a/c.md") and glob_regex("drafts/**").match("drafts/x/y.md")
    assert glob_regex("note-?.txt").match("note-1.txt") and not glob_regex("note-?.txt").match("note-12.txt")
    assert glob_regex("a+b(1).md").match("a+b(1).md")
