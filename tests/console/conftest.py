"""A governed kernel with the console, and a headless Chromium to use it with."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cortex.kernel.sdk.testing import RunningKernel, kernel_config
from cortex.kernel.security.credentials import read_admin_token

from .browser import axe_source, chromium_path, wait_ready

CONFIG = '[plugins]\ndisabled = ["ollama", "openai", "a2a", "mcp"]\n[plugins.http]\nrate_limit = 0\n'


class Console:
    def __init__(self, kt: RunningKernel):
        self.kt = kt
        self.url = f"http://{kt.plugin('http').address}/console"
        self.admin_token = read_admin_token(kt.data_dir)


def start_console(folder, config: str = CONFIG, env: dict[str, str] | None = None) -> Console:
    kt = RunningKernel(kernel_config(folder / "cortex.toml", config, folder / "data", env))
    kt.start()
    return Console(kt)


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Console]:
    """One governed kernel for a module's tests (each test cleans up what it changes)."""
    c = start_console(tmp_path_factory.mktemp("console"))
    yield c
    c.kt.stop()


@pytest.fixture(scope="module")
def garden(console) -> str:
    """Three memories in the module's kernel (two about the garden, one not); the budget's id."""
    from cortex.contracts.memories.v1 import memories_pb2, memories_pb2_grpc

    memories = console.kt.stub(memories_pb2_grpc.MemoryServiceStub)
    budget = memories.Store(memories_pb2.StoreRequest(text="Garden project budget is 300 euros for soil and seeds.",
                                                      tags=["garden"]))
    memories.Store(memories_pb2.StoreRequest(text="The garden project: raised beds go along the south fence.", tags=["garden"]))
    memories.Store(memories_pb2.StoreRequest(text="Dentist appointment moved to Thursday at nine.", tags=["health"]))
    return budget.id


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Per module, not per session: while Playwright's sync API is open, its event loop counts as
    running on the main thread (asyncio.get_running_loop finds it), which would change how code
    under test in later modules behaves (the audit writer batches on a running loop)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def axe() -> str:
    return axe_source()


@pytest.fixture
def open_page(browser):
    """open_page(console, path=None, as_admin=False, **context options) -> a page in a fresh
    browser context (its own session storage), on the console's `path` once drawn when one is
    given; console errors are collected in page.errors."""
    contexts = []

    def open_one(console: Console, path: str | None = None, as_admin: bool = False, **options):
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
        if as_admin:  # signed in, as the login page leaves it (the login flow has its own test)
            context.add_init_script(f"sessionStorage.setItem('cortex.credential', '{console.admin_token}')")
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.set_default_timeout(30_000)
        if path is not None:
            page.goto(f"{console.url}/{path}")
            wait_ready(page)
        return page

    yield open_one
    for context in contexts:
        context.close()
