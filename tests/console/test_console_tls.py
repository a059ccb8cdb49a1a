"""The console beyond loopback: a kernel serving its API (and so the console) on every address,
with TLS and credentials required. Its own module: a kernel in this process shares the built-in
plugins' objects with any other running here, so it must not overlap another module's kernel."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from cortex.kernel.security.credentials import KeyStore
from cortex.kernel.security.tls import init_ca

from .browser import wait_ready
from .conftest import CONFIG, start_console


def test_beyond_loopback_a_person_signs_in_over_tls(open_page, tmp_path):
    """A kernel serving its API (and so the console) on every address, with TLS and credentials
    required: the page loads, says a credential is needed, and works once signed in with a key."""
    data = tmp_path / "data"
    tls = init_ca(data)
    key = KeyStore(data).create("laptop", [])
    config = CONFIG + (f'[kernel]\nrequire_credentials = true\ntls_cert = "{tls["cert"]}"\ntls_key = "{tls["key"]}"\n')
    console = start_console(tmp_path, config, env={"CORTEX_PLUGINS__HTTP__LISTEN": "0.0.0.0:0"})
    try:
        host, port = console.kt.plugin("http").address.rsplit(":", 1)
        assert host == "0.0.0.0"  # noqa: S104 - every address, on purpose (the test reaches it over loopback)
        page = open_page(console, ignore_https_errors=True)
        page.goto(f"https://127.0.0.1:{port}/console/memories")
        wait_ready(page)
        refused = page.get_by_role("alert")
        expect(refused).to_contain_text("UNAUTHENTICATED")
        refused.get_by_role("link", name="Sign in").click()
        wait_ready(page)
        page.get_by_label("Admin token or API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"/console/memories$"))
        wait_ready(page)
        expect(page.locator("#who")).to_contain_text("Signed in as key:laptop")
        expect(page.get_by_text("0 memories stored")).to_be_visible()
        assert not page.errors
    finally:
        console.kt.stop()
