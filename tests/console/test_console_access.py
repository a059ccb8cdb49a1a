"""Every page of the console, in the light and the dark theme, at 320 px and at 200% zoom: no
serious or critical WCAG 2.2 AA violation by axe-core (contrast included, in both themes), no
horizontal scrolling, and the main flow by keyboard alone. Screenshots of each page are kept
(build/console-screenshots, or $CORTEX_SCREENSHOTS)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from cortex.contracts.cerebrum.v1 import cerebrum_pb2, cerebrum_pb2_grpc

from .browser import assert_accessible, screenshot, wait_ready

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def seeded(console, garden):
    """Something on every page: memories, a run's trace, audit entries, activity."""
    cerebrum = console.kt.stub(cerebrum_pb2_grpc.CerebrumServiceStub)
    plan = cerebrum.Plan(cerebrum_pb2.PlanRequest(goal="summarise the garden project")).plan
    summary = [m.summary for m in cerebrum.Execute(cerebrum_pb2.ExecuteRequest(plan=plan)) if m.HasField("summary")][-1]
    return {"memory": garden, "trace": summary.trace_id}


def pages(seeded) -> dict[str, str]:
    return {
        "overview": "", "memories": "memories", "memory": f"memories/{seeded['memory']}", "run": "run",
        "traces": "traces", "trace": f"traces/{seeded['trace']}", "audit": "audit", "approvals": "approvals", "policies": "policies",
        "models": "models", "activity": "activity", "login": "login",
    }


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_meets_wcag_22_aa_in_both_themes(console, seeded, open_page, axe, scheme):
    page = open_page(console, as_admin=True, color_scheme=scheme)
    for name, path in pages(seeded).items():
        page.goto(f"{console.url}/{path}")
        wait_ready(page)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert not page.locator(".notice-error").count(), f"{name}: {page.locator('.notice-error').first.inner_text()}"
        if name == "login":
            page.goto(f"{console.url}/")  # the login page signs the tab out: back in for the next pages
        else:
            assert_accessible(page, axe, f"{name} ({scheme})")
            screenshot(page, f"{name}-{scheme}")
        if name == "activity":  # its tables too, opened
            for summary in page.locator("details summary").all():
                summary.click()
            assert_accessible(page, axe, f"activity tables ({scheme})")
    assert not page.errors


@pytest.mark.parametrize("viewport", [{"width": 320, "height": 640}, {"width": 640, "height": 450}],
                         ids=["320px", "200%-zoom"])
def test_pages_reflow_without_horizontal_scrolling(console, seeded, open_page, axe, viewport):
    """WCAG 1.4.10: at 320 CSS px (and a 1280 px window at 200%, i.e. 640 CSS px) nothing needs
    scrolling sideways but the wide tables, which scroll inside their own focusable region."""
    page = open_page(console, as_admin=True, viewport=viewport)
    for name, path in pages(seeded).items():
        if name == "login":
            continue
        page.goto(f"{console.url}/{path}")
        wait_ready(page)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} scrolls sideways by {overflow} px at {viewport['width']} px"
        assert_accessible(page, axe, f"{name} at {viewport['width']} px")
        if viewport["width"] == 320:
            screenshot(page, f"{name}-320px")
    assert not page.errors


def test_the_main_flow_by_keyboard_alone(console, seeded, open_page):
    """Skip link first, focus always visible, every control reachable and labelled: search a
    memory and open it without a mouse."""
    page = open_page(console, "memories")
    page.keyboard.press("Tab")
    skip = page.locator(":focus")
    expect(skip).to_have_text("Skip to content")
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    seen = []
    for _ in range(40):  # from the main landmark to the search box, by Tab alone
        page.keyboard.press("Tab")
        focused = page.evaluate("""() => { const e = document.activeElement;
          const s = getComputedStyle(e);
          return {tag: e.tagName, name: e.getAttribute('name'), label: e.labels?.[0]?.textContent ?? e.textContent,
          outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2}; }""")
        seen.append(focused)
        assert focused["outline"], f"focus is not visible on {focused}"
        if focused["name"] == "query":
            break
    else:
        pytest.fail(f"the search box is not reachable by Tab: {seen}")
    page.keyboard.type("how much can I spend on the vegetable patch")
    page.keyboard.press("Enter")
    expect(page.locator(".results .result").first).to_contain_text("300 euros")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.closest('.results') !== null"):
            break
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/memories/m*")
    wait_ready(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Memory")
    assert not page.errors


def test_the_accessibility_check_itself_catches_violations(console, seeded, open_page, axe):
    """The checks above can fail: an unlabelled field and faint text on the same page are found."""
    from .browser import serious_violations

    page = open_page(console, "memories")
    page.evaluate("""() => { const main = document.getElementById('main');
      main.append(Object.assign(document.createElement('input'), {type: 'text'}));
      const faint = document.createElement('p'); faint.textContent = 'faint words'; faint.style.color = '#d0d0d0';
      main.append(faint); }""")
    found = {v["id"] for v in serious_violations(page, axe)}
    assert {"label", "color-contrast"} <= found, found
