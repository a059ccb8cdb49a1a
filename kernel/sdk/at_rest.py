"""Encryption at rest (opt-in) for the SQLite files of a data dir that hold text: the key, and the
one opener every such store uses.

    from cortex.kernel.sdk import at_rest

    db = at_rest.connect(path, data_dir, isolation_level=None, check_same_thread=False)

A data dir is encrypted when it holds `encryption.json` (MARKER). It is not a secret: it says how
the key is made (scrypt, its parameters, a random salt) and carries a key check (HMAC-SHA256 of a
fixed text under the key), so that a wrong passphrase is told apart from a damaged database; its
fields are checked on read (a tampered one is "damaged", never a slow or failing derivation). The
passphrase is never kept in the data dir; it comes from, in order:

- CORTEX_PASSPHRASE, the passphrase itself, or CORTEX_KEY_FILE, a file holding it (refused inside
  the data dir: a key kept beside what it locks protects nothing; refused when others may read or
  change it, as ssh does); one of the two, not both;
- the OS keyring (service "cortex-os", user the data dir's absolute path), where one works: a
  keyring that raises, or none installed, is simply not there.

The key is derived once per process (scrypt is slow on purpose) and handed to SQLCipher as a raw
key (`PRAGMA key = "x'..'"`), so that opening a database, or each thread's read connection, costs
no second derivation.

Without the marker, a passphrase set in the environment is not ignored (that would fail open: a
deleted marker, or a passphrase set before `encrypt` was ever run, would mean text in the clear):
a data dir holding none of DATABASES yet gets its marker then (its stores are created encrypted);
one holding plain databases is refused (run `cortex memories encrypt`, or unset the variable); one
holding encrypted databases is refused saying that the marker is missing, with or without a
passphrase. Otherwise, in a data dir without the marker `connect` is the standard sqlite3's. The
two modules speak DB-API alike, but their exceptions are classes of their own: `errors()` names
both. `cortex memories encrypt` turns a data dir's encryption on (`encrypt_database`, `create`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import structlog

log = structlog.get_logger("cortex.at_rest")

MARKER = "encryption.json"
FORMAT = 1
PASSPHRASE_ENV, KEY_FILE_ENV = "CORTEX_PASSPHRASE", "CORTEX_KEY_FILE"
KEYRING_SERVICE = "cortex-os"
MIN_PASSPHRASE_CHARS = 8  # asked of a new passphrase only: one that opened a data dir keeps opening it
# OWASP's scrypt parameters: about 0.5 s and 128 MiB per derivation, once per process
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
SCRYPT_MAXMEM = 256 * 1024 * 1024
# what the scrypt parameters of a marker may be (a tampered one must not make the derivation take
# gigabytes, or minutes): ours are inside, with room for a stronger future default
N_RANGE, R_RANGE, P_RANGE, SALT_BYTES = (2**14, 2**20), (1, 16), (1, 4), (16, 64)
# the databases that hold text and are opened through `connect` (memories, watched sources'
# passages, Cerebrum's traces, the event log, approval requests' summaries): what `cortex memories
# encrypt` encrypts, and what tells a data dir holding databases from a new one
DATABASES = ("memories/memories.db", "memories/sources.db", "cerebrum/traces.db", "events/events.db",
             "governance/approvals.db")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first bytes of every plain SQLite file (an encrypted one: random)
_CHECK_TEXT = b"cortex-os key check"
_INSTALL = "pip install 'cortex-os[encryption]'"
_WHERE_KEYS_COME_FROM = (f"set {PASSPHRASE_ENV} to its passphrase, or {KEY_FILE_ENV} to a file holding it (outside the "
                         f"data dir), or keep the passphrase in the OS keyring (service '{KEYRING_SERVICE}', user the "
                         "data dir's path: `cortex memories encrypt --keyring` puts it there)")


class AtRestError(Exception):
    """A database of an encrypted data dir cannot be opened; the message says what to do."""


class KeyMissing(AtRestError):
    """The data dir is encrypted and no passphrase was given."""


class WrongKey(AtRestError):
    """The passphrase given is not this data dir's."""


class NotEncrypted(AtRestError):
    """A passphrase is given, and the data dir holds plain databases (`cortex memories encrypt` not run)."""


class MarkerMissing(AtRestError):
    """The data dir holds encrypted databases, and no encryption.json says how their key is made."""


@dataclass(frozen=True)
class Marker:
    """encryption.json: how the key is derived, and its check value (nothing secret)."""

    salt: bytes
    check: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "cipher": "sqlcipher 4 (AES-256, HMAC-SHA512 per page), raw key",
            "kdf": {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p, "salt": base64.b64encode(self.salt).decode()},
            "key_check": {"name": "hmac-sha256", "text": _CHECK_TEXT.decode(), "value": self.check.hex()},
        }, indent=2) + "\n"

    @classmethod
    def read(cls, data_dir: Path) -> Marker | None:
        """The data dir's marker; None when it is not encrypted."""
        path = Path(data_dir) / MARKER
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise AtRestError(f"{path} cannot be read ({exc}): it says how this data dir's key is made, so the data "
                              "cannot be opened without it; restore it from a backup") from None
        try:
            return cls._parse(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = str(exc) if isinstance(exc, _Damaged) else f"{exc!r} is wrong or missing"
            newer = isinstance(raw, dict) and type(raw.get("format")) is int and raw["format"] > FORMAT
            raise AtRestError(f"{path} is damaged: {problem}; restore it from a backup"
                              + (" (or upgrade Cortex-OS: it is a newer format)" if newer else "")) from None

    @classmethod
    def _parse(cls, raw: Any) -> Marker:
        if raw["format"] != FORMAT:
            raise _Damaged(f"format {raw['format']!r} is not the one this Cortex-OS knows ({FORMAT})")
        kdf, check = raw["kdf"], raw["key_check"]
        if kdf["name"] != "scrypt":
            raise _Damaged(f"the key derivation {kdf['name']!r} is not scrypt")
        if check["name"] != "hmac-sha256":
            raise _Damaged(f"the key check {check['name']!r} is not hmac-sha256")
        n, r, p = (_whole(kdf, name) for name in ("n", "r", "p"))
        if not (N_RANGE[0] <= n <= N_RANGE[1] and n & (n - 1) == 0):
            raise _Damaged(f"scrypt n={n} is not a power of two from 2**14 to 2**20")
        if not (R_RANGE[0] <= r <= R_RANGE[1]):
            raise _Damaged(f"scrypt r={r} is not from {R_RANGE[0]} to {R_RANGE[1]}")
        if not (P_RANGE[0] <= p <= P_RANGE[1]):
            raise _Damaged(f"scrypt p={p} is not from {P_RANGE[0]} to {P_RANGE[1]}")
        salt = base64.b64decode(kdf["salt"], validate=True)
        if not (SALT_BYTES[0] <= len(salt) <= SALT_BYTES[1]):
            raise _Damaged(f"the salt has {len(salt)} bytes, not {SALT_BYTES[0]} to {SALT_BYTES[1]}")
        value = bytes.fromhex(check["value"])
        if len(value) != hashlib.sha256().digest_size:
            raise _Damaged(f"the key check has {len(value)} bytes, not {hashlib.sha256().digest_size}")
        return cls(salt, value, n, r, p)


class _Damaged(ValueError):
    """A field of encryption.json that is there but cannot be right (its message says which)."""


def _whole(table: dict[str, Any], name: str) -> int:
    value = table[name]
    if type(value) is not int:  # (not a float, a string or a bool that int() would take)
        raise _Damaged(f"scrypt {name}={value!r} is not a whole number")
    return value


@dataclass(frozen=True)
class Passphrase:
    text: str
    origin: str  # where it came from, for messages ("CORTEX_PASSPHRASE", "the OS keyring", ...)


def is_encrypted(data_dir: Path) -> bool:
    return (Path(data_dir) / MARKER).exists()


def find_passphrase(data_dir: Path) -> Passphrase | None:
    """The passphrase given for `data_dir` (environment first, then the OS keyring), or None.
    AtRestError for one that cannot be right: empty, or a key file inside the data dir."""
    given, named = os.environ.get(PASSPHRASE_ENV), os.environ.get(KEY_FILE_ENV)
    if given is not None and named is not None:
        raise AtRestError(f"both {PASSPHRASE_ENV} and {KEY_FILE_ENV} are set: set one of them")
    if given is not None:
        if not given:
            raise AtRestError(f"{PASSPHRASE_ENV} is set but empty: an empty passphrase locks nothing")
        return Passphrase(given, PASSPHRASE_ENV)
    if named is not None:
        return Passphrase(_read_key_file(named, data_dir), f"{KEY_FILE_ENV} ({named})")
    stored = _from_keyring(data_dir)
    return Passphrase(stored, "the OS keyring") if stored else None


def _read_key_file(named: str, data_dir: Path) -> str:
    path = Path(named).expanduser().resolve()
    if path.is_relative_to(Path(data_dir).resolve()):
        raise AtRestError(f"{KEY_FILE_ENV}={named} is inside the data dir {data_dir}: a key kept beside the data it "
                          "locks protects nothing (a copy of the folder carries both); keep it elsewhere (another disk, "
                          "a password manager's file, a USB key)")
    _check_private(path, named)
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")  # an editor's final newline is not the passphrase's
    except (OSError, UnicodeDecodeError) as exc:
        raise AtRestError(f"{KEY_FILE_ENV}={named} cannot be read: {exc}") from None
    if not text:
        raise AtRestError(f"{KEY_FILE_ENV}={named} is empty: an empty passphrase locks nothing")
    return text


def _check_private(path: Path, named: str) -> None:
    """Refuse a key file that others may read or change (its mode, or its owner), as ssh does with a
    private key: a passphrase anyone on the machine can read locks nothing, and one anyone can
    write can be swapped for theirs. (Not on Windows, whose permissions are ACLs.)"""
    if os.name != "posix":
        return
    try:
        st = path.stat()
    except OSError as exc:
        raise AtRestError(f"{KEY_FILE_ENV}={named} cannot be read: {exc}") from None
    if st.st_uid != os.getuid():
        raise AtRestError(f"{KEY_FILE_ENV}={named} belongs to another user (uid {st.st_uid}), who can read and change "
                          f"it: keep the passphrase in a file of your own, readable by you alone (`chmod 600 FILE`)")
    if st.st_mode & 0o077:
        raise AtRestError(f"{KEY_FILE_ENV}={named} can be read or changed by others (mode {st.st_mode & 0o777:03o}): "
                          f"make it yours alone, `chmod 600 {path}`")


def _from_keyring(data_dir: Path) -> str | None:
    try:
        import keyring

        stored = keyring.get_password(KEYRING_SERVICE, str(Path(data_dir).resolve()))
    except Exception as exc:  # noqa: BLE001 - no keyring package, no backend, a locked or broken one: not available
        log.debug("at_rest.keyring_unavailable", error=str(exc))
        return None
    return stored if isinstance(stored, str) and stored else None


def save_in_keyring(data_dir: Path, passphrase: str) -> None:
    """Keep the passphrase in the OS keyring for `data_dir`; AtRestError when no keyring works here."""
    try:
        import keyring

        keyring.set_password(KEYRING_SERVICE, str(Path(data_dir).resolve()), passphrase)
    except Exception as exc:  # noqa: BLE001 - whatever the backend raises, the answer is the same
        raise AtRestError(f"the OS keyring cannot keep it here ({exc}); {_WHERE_KEYS_COME_FROM.split(', or keep')[0]}") from None


_derived: dict[tuple[bytes, int, int, int, bytes], bytes] = {}
_deriving = threading.Lock()


def derive(passphrase: str, marker: Marker) -> bytes:
    """The 256-bit key of `passphrase` under `marker`'s salt and parameters, derived once per process."""
    cache_key = (marker.salt, marker.n, marker.r, marker.p, hashlib.sha256(passphrase.encode()).digest())
    with _deriving:  # two stores starting together wait for one derivation rather than run two
        if cache_key not in _derived:
            try:
                _derived[cache_key] = hashlib.scrypt(passphrase.encode(), salt=marker.salt, n=marker.n, r=marker.r,
                                                     p=marker.p, maxmem=SCRYPT_MAXMEM, dklen=32)
            except ValueError as exc:  # parameters this machine's scrypt refuses (memory limit exceeded...)
                raise AtRestError(f"the key cannot be derived with the parameters of {MARKER} (scrypt n={marker.n}, "
                                  f"r={marker.r}, p={marker.p}: {exc}): {MARKER} is damaged; restore it from a "
                                  "backup") from None
        return _derived[cache_key]


def key_check(key: bytes) -> bytes:
    return hmac.new(key, _CHECK_TEXT, hashlib.sha256).digest()


def key(data_dir: Path, given: Passphrase | None = None) -> bytes | None:
    """The database key of `data_dir` from the passphrase `given`, else the one found
    (`find_passphrase`); None when the data dir is not encrypted. KeyMissing when nothing gives
    the passphrase, WrongKey when the one given is not this data dir's."""
    marker = Marker.read(data_dir)
    if marker is None:
        return _unmarked(data_dir, given)
    found = given or find_passphrase(data_dir)
    if found is None:
        raise KeyMissing(f"the data dir {data_dir} is encrypted ({MARKER}), and no passphrase was given: "
                         f"{_WHERE_KEYS_COME_FROM}")
    derived = derive(found.text, marker)
    if not hmac.compare_digest(key_check(derived), marker.check):
        raise WrongKey(f"the passphrase from {found.origin} does not match this data dir ({data_dir}): it was "
                       "encrypted with another one")
    return derived


_creating = threading.Lock()


def _unmarked(data_dir: Path, given: Passphrase | None) -> bytes | None:
    """`key` in a data dir without the marker: None (plain) unless a passphrase is set in the
    environment (or `given`), which is never ignored: a data dir holding no database yet is made
    encrypted (its marker written now), one holding plain databases is refused, and so, with or
    without a passphrase, is one whose databases are encrypted (its marker is missing)."""
    encrypted, plain = databases(data_dir)
    if encrypted:
        raise MarkerMissing(marker_missing(data_dir, encrypted))
    found = given or _from_environment(data_dir)
    if found is None:
        return None
    variable = (PASSPHRASE_ENV if found.origin == PASSPHRASE_ENV else
                KEY_FILE_ENV if found.origin.startswith(KEY_FILE_ENV) else "a passphrase")
    if plain:
        raise NotEncrypted(f"{variable} is set but this data dir is not encrypted: run `cortex memories encrypt` "
                           f"(kernel stopped), or unset it ({data_dir} holds {', '.join(plain)} in plain text)")
    try:
        sqlcipher()
    except AtRestError:
        raise AtRestError(f"{variable} is set, and SQLCipher is not installed here: {_INSTALL}, or unset it") from None
    with _creating:  # two stores starting together make one marker, not two with different salts
        made = None
        if Marker.read(data_dir) is None and databases(data_dir) == ((), ()):
            marker, derived = create(data_dir, found.text)
            Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            if write_marker(data_dir, marker, replace=False):
                log.info("at_rest.created", data_dir=str(data_dir), passphrase_from=found.origin)
                made = derived
    # (else a marker or a database appeared meanwhile, written by another store or process: as it says)
    return made if made is not None else key(data_dir, found)


def _from_environment(data_dir: Path) -> Passphrase | None:
    """The passphrase of CORTEX_PASSPHRASE or CORTEX_KEY_FILE (not the keyring's, which only
    `cortex memories encrypt --keyring` fills, for a data dir it encrypts)."""
    if os.environ.get(PASSPHRASE_ENV) is None and os.environ.get(KEY_FILE_ENV) is None:
        return None
    return find_passphrase(data_dir)


def databases(data_dir: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the encrypted, the plain) of DATABASES in `data_dir`; an empty file is neither (SQLite
    makes one before its first page)."""
    encrypted, plain = [], []
    for name in DATABASES:
        path = Path(data_dir) / name
        try:
            with open(path, "rb") as file:
                head = file.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise AtRestError(f"{path} cannot be read: {exc}") from None
        if head == SQLITE_HEADER:
            plain.append(name)
        elif head:
            encrypted.append(name)
    return tuple(encrypted), tuple(plain)


def marker_missing(data_dir: Path, encrypted: tuple[str, ...] | list[str]) -> str:
    return (f"the data dir {data_dir} holds encrypted databases ({', '.join(map(str, encrypted))}) but its {MARKER} is "
            f"missing: it says how their key is made, and they cannot be opened without it; restore {MARKER} from a "
            "backup (a new one, even with the same passphrase, has another salt and will not open them)")


def create(data_dir: Path, passphrase: str) -> tuple[Marker, bytes]:
    """A new marker (fresh salt) and its key for `passphrase`; written by `write_marker`."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise AtRestError(f"the passphrase has {len(passphrase)} characters: use at least {MIN_PASSPHRASE_CHARS} "
                          "(a few words are easier to remember and harder to guess)")
    salt = os.urandom(16)
    probe = Marker(salt, b"")
    derived = derive(passphrase, probe)
    return Marker(salt, key_check(derived)), derived


def write_marker(data_dir: Path, marker: Marker, *, replace: bool = True) -> bool:
    """encryption.json, atomically (written beside, flushed to disk, renamed, the folder flushed);
    `replace=False`: only where there is none yet (False when one was there)."""
    return write_atomically(Path(data_dir) / MARKER, marker.to_json().encode(), replace=replace)


def write_atomically(path: Path, content: bytes, *, replace: bool = True) -> bool:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # (fails where the file is there: a rename would replace it)
            except FileExistsError:
                return False
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)
    return True


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX: the directory entry is data of the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_plain_sqlite(path: Path) -> bool:
    with open(path, "rb") as file:
        return file.read(len(SQLITE_HEADER)) == SQLITE_HEADER


# -- opening ---------------------------------------------------------------------------------------
def connect(path: Path | str, data_dir: Path, **kwargs: Any) -> sqlite3.Connection:
    """A connection to the SQLite file `path` of `data_dir` (`kwargs` as sqlite3.connect's):
    SQLCipher's, keyed, when the data dir is encrypted; the standard sqlite3's otherwise."""
    return open_keyed(path, key(data_dir), **kwargs)


def open_keyed(path: Path | str, derived: bytes | None, **kwargs: Any) -> sqlite3.Connection:
    """`connect` with the key already in hand (a store's further connections: no marker read
    again, no keyring asked again); None: a plain file."""
    if derived is None:
        file = _file_of(path)
        if file is not None and file.exists() and not file.is_dir() and file.stat().st_size and not is_plain_sqlite(file):
            raise MarkerMissing(f"{file} is not a plain SQLite file, and its data dir has no {MARKER}: it is "
                                f"encrypted and the data dir's {MARKER} is missing (restore it from a backup: a "
                                "new one, even with the same passphrase, will not open it), or the file is damaged")
        plain: sqlite3.Connection = sqlite3.connect(path, **kwargs)
        return plain
    dbapi2 = sqlcipher()
    db = dbapi2.connect(path, **kwargs)
    db.execute(f"PRAGMA key = \"x'{derived.hex()}'\"")
    try:  # SQLCipher reads (and authenticates) the first page only now
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except dbapi2.DatabaseError:
        db.close()
        raise AtRestError(_unreadable(_file_of(path) or Path(str(path)))) from None
    # (a sqlcipher3 connection is not a subclass of sqlite3's, but the stores use only what both have)
    return cast(sqlite3.Connection, db)


def _file_of(path: Path | str) -> Path | None:
    """The file a connect argument names (a `file:` URI's path); None for ":memory:"."""
    text = str(path)
    if text == ":memory:" or text.startswith("file::memory:"):
        return None
    return Path(text.removeprefix("file:").split("?")[0])


def _unreadable(path: Path) -> str:
    if path.exists() and is_plain_sqlite(path):
        return (f"{path} is not encrypted, though its data dir is ({MARKER}): `cortex memories encrypt` (with the "
                "kernel stopped) encrypts what is left plain")
    return f"{path} cannot be read with this data dir's key, which matches {MARKER}: the file is damaged"


@cache
def sqlcipher() -> Any:
    """sqlcipher3's DB-API module; AtRestError saying what to install when it is not there."""
    try:
        from sqlcipher3 import dbapi2  # type: ignore[import-untyped]
    except ImportError:
        raise AtRestError(f"this data dir is encrypted, and SQLCipher is not installed here: {_INSTALL}") from None
    # a wrong key or a damaged page is reported once, by the AtRestError above, not also on stderr
    dbapi2.connect(":memory:").execute("PRAGMA cipher_log_level = NONE")
    return dbapi2


@cache
def errors(name: str) -> tuple[type[Exception], ...]:
    """sqlite3's exception class `name` ("IntegrityError", "OperationalError", ...) and SQLCipher's
    (where installed), for an `except` that must catch it from either kind of connection."""
    found: list[type[Exception]] = [getattr(sqlite3, name)]
    try:
        from sqlcipher3 import dbapi2
    except ImportError:
        return tuple(found)
    return (*found, getattr(dbapi2, name))


# -- turning it on -------------------------------------------------------------------------------
@dataclass
class Encrypted:
    """A plain database's encrypted copy, ready to replace it (`commit`), and what it holds."""

    path: Path
    copy: Path
    rows: dict[str, int]  # table: rows, as in the plain file and, checked, in the copy


def encrypt_database(path: Path, derived: bytes) -> Encrypted:
    """An encrypted copy of the plain database `path` beside it (`<name>.encrypting`), checked
    (SQLCipher's quick_check, and every table's rows counted in both) and flushed to disk. The
    plain file is not touched; a failure removes the copy."""
    dbapi2 = sqlcipher()
    copy = path.with_name(f"{path.name}.encrypting")
    copy.unlink(missing_ok=True)
    db = dbapi2.connect(path, isolation_level=None)
    try:
        rows = _table_rows(db)
        version = db.execute("PRAGMA user_version").fetchone()[0]  # sqlcipher_export does not carry it
        db.execute("ATTACH DATABASE ? AS encrypted KEY ?", (str(copy), f"x'{derived.hex()}'"))
        db.execute("SELECT sqlcipher_export('encrypted')")
        db.execute(f"PRAGMA encrypted.user_version = {int(version)}")
        db.execute("DETACH DATABASE encrypted")
        db.close()
        check = open_keyed(copy, derived, isolation_level=None)
        try:
            copied, verdict = _table_rows(check), check.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            check.close()
        if verdict != "ok" or copied != rows:
            raise AtRestError(f"the encrypted copy of {path} does not match it ({verdict}; rows {copied} != {rows}); "
                              "the plain file is left as it was")
        with open(copy, "rb") as written:
            os.fsync(written.fileno())
    except BaseException:
        db.close()
        copy.unlink(missing_ok=True)
        raise
    return Encrypted(path, copy, rows)


def _table_rows(db: Any) -> dict[str, int]:
    """{table: rows} of the ordinary tables (not the full-text index's shadow tables, counted through their own)."""
    tables = [name for schema, name, kind, *_ in db.execute("PRAGMA table_list") if schema == "main" and kind == "table"]
    quoted = {name: name.replace('"', '""') for name in tables}  # (names the database itself lists)
    return {name: db.execute(f'SELECT count(*) FROM "{quoted[name]}"').fetchone()[0] for name in sorted(tables)}  # noqa: S608


def commit(encrypted: Encrypted) -> None:
    """Put the encrypted copy in the plain file's place (one rename: a reader sees one or the other)."""
    os.replace(encrypted.copy, encrypted.path)
    sync_folder(encrypted.path.parent)


__all__ = [
    "DATABASES",
    "KEY_FILE_ENV",
    "MARKER",
    "PASSPHRASE_ENV",
    "AtRestError",
    "Encrypted",
    "KeyMissing",
    "Marker",
    "MarkerMissing",
    "NotEncrypted",
    "Passphrase",
    "WrongKey",
    "commit",
    "connect",
    "create",
    "databases",
    "encrypt_database",
    "errors",
    "find_passphrase",
    "is_encrypted",
    "is_plain_sqlite",
    "key",
    "marker_missing",
    "open_keyed",
    "save_in_keyring",
    "sqlcipher",
    "write_marker",
]
