"""`cortex memories encrypt`: turn on encryption at rest for a data dir (at_rest.py), offline.

Every database the built-in stores open through `at_rest` (DATABASES) is copied into an encrypted
file beside it (SQLCipher's `sqlcipher_export`), checked, and flushed to disk while a lock keeps
writers out; only when every copy is good is `encryption.json` written, then each copy renamed
over its plain file and the plain leftovers (-wal, -shm, -journal) removed. A failure before the
marker leaves the plain store as it was; a crash after it leaves a data dir whose remaining plain
files the stores refuse to open, and running the command again (same passphrase) finishes them.
A data dir with no databases yet gets the marker alone: its stores are created encrypted.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cortex.kernel.sdk import at_rest, config_option, data_dir_of, data_dir_option

# the stores that hold text and open their files through at_rest (memories, watched sources'
# bookkeeping, Cerebrum's traces, the event log, governance's approval requests with their
# summaries): at_rest's list, which also tells a new data dir from one holding plain databases
# when a passphrase is set without the marker; the audit log and the API keys hold no text
DATABASES = at_rest.DATABASES
# what the databases left readable hold (docs/encryption.md, "What stays readable")
READABLE = {
    "governance/audit.db": "hashes of each call's request and response, and its description (service, method, "
                           "principal, provider, the labels, which may include a Store's tags, redaction counts), "
                           "no request or response content",
    "credentials.db": "API key names, scopes and hashes",
}
LEFTOVERS = ("-wal", "-shm", "-journal")


@click.command("encrypt")
@config_option
@data_dir_option
@click.option("--keyring", "to_keyring", is_flag=True,
              help="Also keep the passphrase in the OS keyring, where `cortex serve` finds it without CORTEX_PASSPHRASE.")
def encrypt(config, data_dir, to_keyring):
    """Encrypt the data dir's memories, sources, traces, events and approvals at rest (SQLCipher), with the
    passphrase from CORTEX_PASSPHRASE, CORTEX_KEY_FILE or the OS keyring (asked for when none is
    set and a person is at the terminal). Run it with the kernel stopped."""
    folder = data_dir_of(config, data_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        at_rest.sqlcipher()  # before anything is written: says what to install
        passphrase = _passphrase(folder)
        was_encrypted = at_rest.is_encrypted(folder)
        encrypted_already, _ = at_rest.databases(folder)
        if not was_encrypted and encrypted_already:  # a new marker (another salt) would lock them out for good
            raise at_rest.MarkerMissing(at_rest.marker_missing(folder, encrypted_already))
        if was_encrypted:  # finishing what a crash left plain, or only --keyring: the same passphrase
            marker, derived = None, at_rest.key(folder, passphrase)
        else:
            marker, derived = at_rest.create(folder, passphrase.text)
        plain = [folder / name for name in DATABASES if (folder / name).exists() and at_rest.is_plain_sqlite(folder / name)]
        _encrypt(folder, plain, marker, derived)
        if to_keyring:
            at_rest.save_in_keyring(folder, passphrase.text)
            click.echo(f"the passphrase is in the OS keyring (service '{at_rest.KEYRING_SERVICE}', user '{folder}')")
    except at_rest.AtRestError as exc:
        raise click.ClickException(str(exc)) from None
    if was_encrypted and not plain:
        click.echo(f"{folder} is already encrypted; nothing was left plain")
    elif not plain:
        click.echo(f"{folder} is encrypted: it held no database yet; its stores will be created encrypted")
    else:
        click.echo(f"{folder} is encrypted ({len(plain)} database{'s' * (len(plain) != 1)}); "
                   f"`cortex serve` needs the passphrase from now on")
    _say_what_stays_readable(folder)


def _passphrase(folder: Path) -> at_rest.Passphrase:
    found = at_rest.find_passphrase(folder)
    if found is not None:
        return found
    if not sys.stdin.isatty():
        raise at_rest.AtRestError(f"no passphrase given: set {at_rest.PASSPHRASE_ENV} to it, or {at_rest.KEY_FILE_ENV} "
                                  "to a file holding it (outside the data dir)")
    typed = click.prompt("Passphrase for this data dir", hide_input=True, confirmation_prompt=True)
    return at_rest.Passphrase(typed, "the terminal")


def _encrypt(folder: Path, plain: list[Path], marker: at_rest.Marker | None, derived: bytes) -> None:
    locks = [_lock(path) for path in plain]  # all first: nothing is copied while a kernel holds any of them
    copies: list[at_rest.Encrypted] = []
    try:
        for path in plain:
            copies.append(at_rest.encrypt_database(path, derived))
            rows = ", ".join(f"{table} {n}" for table, n in copies[-1].rows.items() if not table.startswith("sqlite_"))
            click.echo(f"{path.relative_to(folder)}: encrypted copy checked ({rows or 'no rows'})", err=True)
        if marker is not None:
            at_rest.write_marker(folder, marker)
        for copy in copies:
            at_rest.commit(copy)
    except BaseException:
        for copy in copies:
            copy.copy.unlink(missing_ok=True)
        raise
    finally:
        for lock in locks:
            lock.close()
    for path in plain:
        for suffix in LEFTOVERS:
            leftover = path.with_name(path.name + suffix)
            if leftover.exists():
                leftover.unlink()
                click.echo(f"removed the plain leftover {leftover.relative_to(folder)}", err=True)


def _lock(path: Path):
    """A connection holding `path` against writers until it is closed. Leaving WAL (which folds
    the -wal file into the database) needs every other connection gone: one still open means a
    kernel, or another command, is using the data dir."""
    dbapi2 = at_rest.sqlcipher()  # (the same SQLite library as the copy's, so that their locks see each other)
    db = dbapi2.connect(path, isolation_level=None, timeout=1)
    try:
        mode = db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if mode != "delete":
            raise dbapi2.OperationalError(f"journal mode stays {mode}")
        db.execute("BEGIN IMMEDIATE")
    except dbapi2.OperationalError as exc:
        db.close()
        raise at_rest.AtRestError(f"{path} is in use ({exc}): stop `cortex serve` (and any command using this data "
                                  "dir), then run `cortex memories encrypt` again") from None
    return db


def _say_what_stays_readable(folder: Path) -> None:
    others = sorted(p for p in folder.rglob("*.db") if str(p.relative_to(folder)) not in DATABASES and at_rest.is_plain_sqlite(p))
    if others:
        held = [f"{name} ({READABLE[name]})" if name in READABLE else name
                for name in (str(p.relative_to(folder)) for p in others)]
        click.echo(f"left readable, holding no memory text: {'; '.join(held)} (docs/encryption.md says what else stays "
                   "readable: file names and sizes, the semantic index's vectors, keys, policies and config)")
