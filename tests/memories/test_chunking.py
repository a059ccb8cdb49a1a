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


# -- Markdown passages are plain text under their heading path (CHUNKER_VERSION 2) ------------------

ATLAS = """\
# Project Atlas

## Risks
- **Budget** overrun of *10%*
- Vendor [Acme](https://acme.example/contract_(2024)) may slip
* [ ] ask __Dana__ about `deploy_prod.sh`
+ [x] _signed_ the NDA
1. First milestone: ~~May~~ June
2) Second milestone

> Quote from the board: keep it <b>small</b>.

---
## Budget
| Item | Cost |
|:-----|-----:|
| **Servers** | 1200 |
| Licences | [see sheet](http://x.example/s) |

![the floor plan](plan.png) and <https://atlas.example/wiki_page>
"""


def test_markdown_passages_are_plain_text_under_their_heading_path():
    chunks = chunks_of("atlas.md", ATLAS.encode())
    # (a passage's lines are the file's, as written: its heading line, through the rule that ends it)
    assert [(c.heading, c.first, c.last) for c in chunks] == [("Project Atlas > Risks", 3, 13), ("Project Atlas > Budget", 14, 20)]
    risks, budget = chunks
    assert risks.text == ("Project Atlas > Risks\n"
                          "Budget overrun of 10%\n"
                          "Vendor Acme may slip\n"
                          "ask Dana about deploy_prod.sh\n"
                          "signed the NDA\n"
                          "First milestone: May June\n"
                          "Second milestone\n"
                          "\n"
                          "Quote from the board: keep it small.")
    assert budget.text == ("Project Atlas > Budget\n"
                           "Item | Cost\n"
                           "Servers | 1200\n"
                           "Licences | see sheet\n"
                           "\n"
                           "the floor plan and https://atlas.example/wiki_page")


def test_a_heading_with_nothing_under_it_is_no_passage_but_leads_the_paths_below_it():
    text = "# Banana bread\n## Ingredients\n- 3 bananas\n- flour\n\n## Steps\n\n### Oven\n<!-- later -->\n\n### Baking\nBake 60 min.\n"
    chunks = chunks_of("bread.md", text.encode())
    assert [(c.heading, c.text, c.first, c.last) for c in chunks] == [
        ("Banana bread > Ingredients", "Banana bread > Ingredients\n3 bananas\nflour", 2, 4),
        ("Banana bread > Steps > Baking", "Banana bread > Steps > Baking\nBake 60 min.", 11, 12)]
    # a top-level section with a body of its own starts with its title, with no '#'
    (top,) = chunks_of("bread.md", b"# Banana bread\n\nMy **grandmother's** recipe.\n")
    assert (top.heading, top.text, top.first, top.last) == ("Banana bread", "Banana bread\nMy grandmother's recipe.", 1, 3)
    # a file of headings only has no passage at all (its sync says so: skipped, no text)
    assert chunks_of("outline.md", b"# Plan\n\n## Q1\n### Goals\n---\n## Q2 ##\n<!-- tbd -->\n") == []


def test_what_only_looks_like_markup_is_left_as_written():
    text = ("# Notes on C#\n"
            "Call snake_case_words with 2*3*4 or a * b, then __init__ aside: my_var_name_ and *args, **kwargs.\n"
            "Escaped: \\*not italic\\* and \\_kept\\_; List<int> and cortex open <ref> and x < y > z.\n"
            "Price - 5 EUR\n"
            "-5 degrees tonight\n")
    (chunk,) = chunks_of("n.md", text.encode())
    assert chunk.heading == "Notes on C#"
    assert chunk.text == ("Notes on C#\n"
                          "Call snake_case_words with 2*3*4 or a * b, then init aside: my_var_name_ and *args, **kwargs.\n"
                          "Escaped: *not italic* and _kept_; List<int> and cortex open <ref> and x < y > z.\n"
                          "Price - 5 EUR\n"
                          "-5 degrees tonight")


def test_fenced_code_is_kept_as_written_and_html_comments_go():
    text = ("# Setup\n"
            "Run this:\n"
            "```bash\n"
            "# not a heading\n"
            "echo **x** _y_ [a](b)\n"
            "```\n"
            "<!-- a note to self\n"
            "# also not a heading\n"
            "-->\n"
            "Done <!-- inline --> here.\n"
            "~~~\n"
            "    indented **code**\n"
            "~~~\n")
    (chunk,) = chunks_of("setup.md", text.encode())
    assert (chunk.heading, chunk.first, chunk.last) == ("Setup", 1, 13)
    assert chunk.text == "Setup\nRun this:\n# not a heading\necho **x** _y_ [a](b)\nDone here.\n    indented **code**"
    assert "also not" not in chunk.text and "```" not in chunk.text and "~~~" not in chunk.text


def test_front_matter_tags_are_on_every_passage_and_no_passage_is_markup():
    text = "---\ntags: [travel, 'japan']\n---\n# Trip\n## Tokyo\n- *Shinjuku* hotel\n## Kyoto\n1. Fushimi Inari\n"
    chunks = chunks_of("trip.md", text.encode())
    assert [(c.heading, c.text, c.lines, c.tags) for c in chunks] == [
        ("Trip > Tokyo", "Trip > Tokyo\nShinjuku hotel", "5-6", ["travel", "japan"]),
        ("Trip > Kyoto", "Trip > Kyoto\nFushimi Inari", "7-8", ["travel", "japan"])]
    assert chunks_of("t.md", b"---\ntags: a\n---") == []  # front matter alone, its closing line the file's last
    assert chunks_of("t.txt", b"# Not markdown\n- **kept** as written\n")[0].text == "# Not markdown\n- **kept** as written"
