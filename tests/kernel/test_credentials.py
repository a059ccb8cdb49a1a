"""Keys and their edges, without a kernel: names, scopes, expiry, duplicates; installs' hash check."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

from cortex.kernel.security.credentials import AuthError, Credentials, KeyStore, parse_expiry
from cortex.kernel.security.live_install import install


def test_expiry_accepts_durations_and_times_and_says_what_it_wants():
    now = 1_000_000.0
    assert parse_expiry("90m", now) == now + 5400 and parse_expiry("12h", now) == now + 43200
    assert parse_expiry("30d", now) == now + 30 * 86400
    assert parse_expiry("2027-01-01T00:00:00Z") == dt.datetime(2027, 1, 1, tzinfo=dt.UTC).timestamp()
    with pytest.raises(ValueError, match="give a duration"):
        parse_expiry("soon")
    with pytest.raises(ValueError, match="needs a time zone"):
        parse_expiry("2027-01-01T00:00:00")


@pytest.mark.parametrize(
    ("name", "scopes", "expires", "words"),
    [
        ("bad name!", [], None, "1-64 letters"),
        ("ok", ["cortex.memories.v1.MemoryService"], None, "give a method glob"),
        ("ok", [], 1.0, "expire before it is made"),
    ],
)
def test_a_key_that_would_be_wrong_is_not_made(tmp_path, name, scopes, expires, words):
    with pytest.raises(ValueError, match=words):
        KeyStore(tmp_path).create(name, scopes, expires)
    assert KeyStore(tmp_path).list() == []


def test_names_are_unique_and_revoking_twice_says_so(tmp_path):
    store = KeyStore(tmp_path)
    store.create("app", ["act_as"])
    with pytest.raises(ValueError, match="exists"):
        store.create("app", [])
    assert store.list()[0].scopes == ("*/*", "act_as")  # act_as alone still calls anything
    assert store.revoke("app") and not store.revoke("app") and not store.revoke("nobody")


def test_a_bearer_token_is_checked_before_anything_else(tmp_path):
    credentials = Credentials(tmp_path)
    credentials.ensure_admin_token()
    with pytest.raises(AuthError, match="not a bearer token"):
        credentials.identify("Basic x", loopback=True)
    assert credentials.identify("", loopback=False, certificate_name="box-2").principal == "node:box-2"
    with pytest.raises(AuthError, match="beyond loopback"):
        credentials.identify("", loopback=False)
    key = KeyStore(tmp_path).create("scoped", ["cortex.memories.v1.MemoryService/*"], time.time() + 60)
    identity = credentials.identify(f"Bearer {key}", loopback=True)
    assert identity.principal == "key:scoped" and identity.scopes == ("cortex.memories.v1.MemoryService/*",)


def test_an_install_whose_file_does_not_match_its_hash_is_refused(tmp_path):
    wheel = tmp_path / "thing-0.1-py3-none-any.whl"
    wheel.write_bytes(b"not what was promised")
    with pytest.raises(ValueError, match=r"has SHA-256 \w+, not the expected"):
        asyncio.run(install(str(wheel), "0" * 64))
    with pytest.raises(ValueError, match="must be a file"):
        asyncio.run(install(str(tmp_path), "0" * 64))


def test_pip_failing_is_said_in_its_own_words(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(ValueError, match="pip could not install"):
        asyncio.run(install(str(tmp_path / "nothing-here")))


def test_a_data_dir_the_user_made_is_made_the_owners_alone(tmp_path):
    """`mkdir` leaves a folder 0755: the data dir holds the admin token and the memories, so the
    kernel makes it 0700 at start (and leaves one that already is alone)."""
    data_dir = tmp_path / "mine"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # (whatever the umask)
    token = Credentials(data_dir).ensure_admin_token()
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert token.stat().st_mode & 0o777 == 0o600
    first = token.read_text()
    Credentials(data_dir).ensure_admin_token()  # the next start keeps the token
    assert token.read_text() == first
