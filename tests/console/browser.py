"""Driving the console as a person does: Debian's Chromium under Playwright (launched by path:
browser downloads are not reachable), axe-core from tools/console's locked npm packages, and
screenshots of every page and state."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tools" / "console" / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.0, 2.1 and 2.2, levels A and AA: what the console promises
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
SCREENSHOTS = Path(os.environ.get("CORTEX_SCREENSHOTS", ROOT / "build" / "console-screenshots"))


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("the console's browser tests need Chromium: `apt-get install chromium` (scripts/setup.sh test does)")


def axe_source() -> str:
    if not AXE.is_file():
        raise RuntimeError(f"{AXE} is missing: run `npm ci` in tools/console (scripts/setup.sh test does)")
    return AXE.read_text(encoding="utf-8")


def violations(page, source: str) -> list[dict]:
    """axe-core's WCAG 2.2 AA violations, of any impact, on the page as it is now. Injected
    through the DevTools protocol (page.evaluate), which the pages' CSP does not govern."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(source)
    result = page.evaluate(
        "async (tags) => { const r = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});"
        " return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)})); }",
        WCAG_AA,
    )
    return result


def serious_violations(page, source: str) -> list[dict]:
    return [v for v in violations(page, source) if v["impact"] in ("serious", "critical")]


def assert_accessible(page, source: str, state: str) -> None:
    """None at all: the issue asks for no serious or critical one; the console has none of any
    impact, and a moderate one that appears should be seen, not waved through."""
    found = violations(page, source)
    assert not found, f"axe (WCAG 2.2 AA) in {state}:\n" + json.dumps(found, indent=1)


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_ready(page) -> None:
    """The shell marks <html data-ready> once the page is drawn (or its error shown)."""
    page.wait_for_selector("html[data-ready]", state="attached", timeout=30_000)
