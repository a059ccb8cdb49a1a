"""How fast the memories page draws with 10,000 memories stored: first contentful paint and the
time until the newest memories are listed, measured in Chromium (reported, not asserted: timings
belong in benchmarks, and this machine is shared). Both are the browser's own clocks from the
start of navigation: first contentful paint (the page's frame), and the console's `console-drawn`
mark (the 50 newest memories listed). Printed, and kept in build/console-screenshots/load.json."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from playwright.sync_api import expect

from cortex.contracts.memories.v1 import archive_pb2, archive_pb2_grpc, memories_pb2
from cortex.plugins.memories.service import content_hash

from .browser import SCREENSHOTS, assert_accessible
from .conftest import start_console

MEMORIES = 10_000
MODEL, DIMENSION = "all-MiniLM-L6-v2", 384  # the default embedding model: vectors come with the archive
BATCH = 1_000
WORDS = "garden budget heron lake fence soil seeds kettle cupboard dentist thursday spring invoice train ticket".split()


def archived(i: int, rng: np.random.Generator) -> archive_pb2.ArchiveLine:
    text = f"Note {i}: " + " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7, 11, 13))
    created = Timestamp()
    created.FromMilliseconds(1_700_000_000_000 + i * 1000)
    memory = memories_pb2.Memory(id=f"m{i:012x}seed", kind="note", text=text, tags=[WORDS[i % len(WORDS)]],
                                 content_hash=content_hash("note", text, [WORDS[i % len(WORDS)]]),
                                 created_at=created, updated_at=created, embedding_model=MODEL, dimension=DIMENSION)
    vector = rng.standard_normal(DIMENSION).astype("<f4")
    vector /= np.linalg.norm(vector)
    return archive_pb2.ArchiveLine(memory=archive_pb2.ArchivedMemory(memory=memory, vector=vector.tobytes()))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    console = start_console(tmp_path_factory.mktemp("console-10k"))
    archive = console.kt.stub(archive_pb2_grpc.ArchiveServiceStub)
    manifest = archive_pb2.ArchiveManifest(format="cortex-memories", version=1, embedding_model=MODEL, dimension=DIMENSION,
                                           vectors=True)
    rng = np.random.default_rng(0)
    started = time.monotonic()
    for first in range(0, MEMORIES, BATCH):
        reply = archive.Import(archive_pb2.ImportRequest(manifest=manifest, lines=[archived(i, rng) for i in range(first, first + BATCH)]),
                               timeout=300)
        assert reply.added == BATCH and reply.embedded == 0, (reply.embedded, reply.problems[:3])
    print(f"\nseeded {MEMORIES} memories (an archive with vectors) in {time.monotonic() - started:.1f} s")
    yield console
    console.kt.stop()


@pytest.mark.timeout(600)
def test_first_paint_of_the_memories_page_with_10k_memories(big, open_page, axe):
    figures = []
    for attempt in range(3):
        page = open_page(big, "memories")
        paint = page.evaluate("() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
        drawn_ms = page.evaluate("() => performance.getEntriesByName('console-drawn')[0].startTime")
        nav = page.evaluate("() => performance.getEntriesByType('navigation')[0].toJSON()")
        figures.append({"attempt": attempt + 1, "first_contentful_paint_ms": round(paint, 1),
                        "list_drawn_ms": round(drawn_ms, 1), "dom_content_loaded_ms": round(nav["domContentLoadedEventEnd"], 1)})
        expect(page.get_by_text(f"{MEMORIES} memories stored")).to_be_visible()
        expect(page.locator(".results .result")).to_have_count(50)
        assert paint > 0
    assert_accessible(page, axe, "the memories page with 10k memories")
    page.get_by_role("button", name="Show more").click()
    expect(page.locator(".results .result")).to_have_count(100)
    page.get_by_label("Search for").fill("heron lake")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".results .result").first).to_contain_text("heron")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "load.json").write_text(json.dumps(figures, indent=1))
    print("\n" + "\n".join(json.dumps(f) for f in figures))
    assert not page.errors
