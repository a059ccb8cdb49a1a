"""Who is calling: identities from credentials, never from what a caller claims.

A call's principal comes from, in this order:

- `authorization: Bearer <token>` metadata: the admin token (`<data dir>/admin.token`, made on
  first start, 0600, read by the `cortex` CLI) is `admin`; an API key (`cortex keys create NAME`)
  is `key:NAME`, limited to its scopes;
- a client certificate verified by mutual TLS (`kernel.tls_client_ca`): `node:<its CN>` (a
  kernel or a machine; the certificate says which machine, a key says which application);
- nothing, from loopback: `local`, one fixed principal that policy limits (unless
  `kernel.require_credentials = true`, when it is refused like a caller from elsewhere).

`x-cortex-principal` names someone else only when the credential may act for others (the
`act_as` scope; the admin token and kernel certificates may): a gateway acting for its users, as
Kubernetes impersonation works. The principal is then the named user and the actor the gateway,
and the audit log records both. From anyone else the header is refused (PERMISSION_DENIED), not
ignored: a gateway that believes it separates its users must learn at once that it does not.
A gateway key acts only for the users its key names (`act_as:GLOB` scopes; a bare `act_as` names
any user), and never for the owner's identities (`default`, `local`, and `kernel.owners`: the MCP
and A2A clients `mcp:*`, `a2a:*`): those are the owner's, reached only with the owner's credential.

API keys are stored hashed (SHA-256: they are 256-bit random, so a slow hash adds nothing) in
`<data dir>/credentials.db`, never logged. The kernel rereads the file when it changes, so a
revoked key stops working at the next call.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

log = structlog.get_logger("cortex.credentials")
ADMIN = "admin"
LOCAL = "local"
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
KEYS_FILE = "credentials.db"
ACT_AS = "act_as"
KEY_PREFIX = "ctx_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# principals no one may be made to act as: they are given by credentials, or are the kernel's own
RESERVED = (ADMIN, LOCAL, "kernel", "kernel:*", "plugin:*", "key:*", "node:*")
# Whose data a call touches (memories, traces): the kernel's owner shares one namespace; every
# other principal has its own, named as the principal ("key:alice", a gateway's user "alice").
OWNER_NAMESPACE = "default"
OWNER_PRINCIPALS = (ADMIN, LOCAL, "kernel", "kernel:*", "plugin:*", "node:*")
HOW_TO_AUTHENTICATE = "send 'authorization: Bearer <token>' (an API key from `cortex keys create NAME`, or the admin token)"


class AuthError(Exception):
    """A caller that cannot be identified (UNAUTHENTICATED) or may not claim what it claims
    (PERMISSION_DENIED)."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Identity:
    """Who a call is from, as its credential says."""

    principal: str
    how: str  # "admin token", "api key", "client certificate", "loopback", "plugin"
    scopes: tuple[str, ...] | None = None  # method globs ("pkg.Service/Method"); None: no limit
    act_as: bool = False  # may name another principal in x-cortex-principal
    actor: str = ""  # who acted, when the principal is someone it acts for
    acts_for: tuple[str, ...] = ("*",)  # the principals (globs) it may act for, when act_as

    @property
    def is_owner(self) -> bool:
        """Whether the credential is the kernel owner's own (the admin token, a kernel certificate):
        only such a credential speaks for the owner's identities (`default`, `mcp:*`, ...)."""
        return namespace_of(self.actor or self.principal) == OWNER_NAMESPACE and self.principal != LOCAL

    def acting_for(self, claimed: str, owners: tuple[str, ...] = ()) -> Identity:
        """The identity of a call that names `claimed` in x-cortex-principal (`owners`: the
        kernel's `kernel.owners`, identities whose data is the owner's)."""
        if not claimed or claimed == self.principal:
            return self
        if not self.act_as:
            raise AuthError(
                f"x-cortex-principal ({claimed!r}) is honoured only from a credential with the act_as scope; this "
                f"caller is {self.principal} ({self.how}). Drop the header, or call with a key made by "
                "`cortex keys create NAME --scope act_as ...`",
                grpc.StatusCode.PERMISSION_DENIED,
            )
        if len(claimed) > 200 or not claimed.isascii() or not claimed.isprintable():
            raise AuthError("x-cortex-principal must be printable ASCII, at most 200 characters",
                            grpc.StatusCode.INVALID_ARGUMENT)
        if is_reserved(claimed):
            raise AuthError(
                f"no one may act as {claimed!r}: admin, local, kernel, plugin:*, key:* and node:* come only from "
                "credentials", grpc.StatusCode.PERMISSION_DENIED,
            )
        if not self.is_owner:
            if namespace_of(claimed, owners) == OWNER_NAMESPACE:
                raise AuthError(
                    f"{self.principal} may not act as {claimed!r}: that is the kernel owner's identity (default, "
                    "local and kernel.owners are reached only with the admin token); act for a user of your own",
                    grpc.StatusCode.PERMISSION_DENIED,
                )
            if not any(fnmatch.fnmatchcase(claimed, glob) for glob in self.acts_for):
                raise AuthError(
                    f"{self.principal} may act only for {', '.join(self.acts_for)} (its key's act_as scopes), not "
                    f"{claimed!r}; ask the admin for a key naming that user", grpc.StatusCode.PERMISSION_DENIED,
                )
        return Identity(claimed, self.how, self.scopes, False, self.principal)


def namespace_of(principal: str, owners: tuple[str, ...] = ()) -> str:
    """The namespace of `principal`: the owner's for admin, local, the kernel, its plugins and
    kernel certificates, and for the principals matching `owners` (`kernel.owners`: by default
    the MCP and A2A bridges' clients, which come through the owner's credential); else its own."""
    if any(fnmatch.fnmatchcase(principal, glob) for glob in (*OWNER_PRINCIPALS, *owners)):
        return OWNER_NAMESPACE
    return principal


# Principals that see every namespace (the audit log, the event bus, every listing): the owner's
# administrator and the kernel's own parts. `local` is the owner's namespace, not all of them.
SEES_EVERY_NAMESPACE = (ADMIN, "kernel", "kernel:*", "plugin:*", "node:*")


def sees_every_namespace(principal: str) -> bool:
    """Whether `principal` is shown every namespace's data (admin, the kernel, its plugins, kernel
    certificates); everyone else sees only its own namespace (`namespace_of`)."""
    return any(fnmatch.fnmatchcase(principal, glob) for glob in SEES_EVERY_NAMESPACE)


def is_reserved(principal: str) -> bool:
    """Principals that come only from this kernel's credentials: meaningless anywhere else."""
    return any(fnmatch.fnmatchcase(principal, reserved) for reserved in RESERVED)


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: tuple[str, ...]
    created: float
    expires: float | None
    revoked: float | None

    @property
    def principal(self) -> str:
        return f"key:{self.name}"


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text + "\n")


def read_admin_token(data_dir: Path) -> str:
    """The admin token, or '' when this kernel's data dir has none (or it is not readable)."""
    try:
        return (data_dir / ADMIN_TOKEN_FILE).read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_expiry(text: str, now: float | None = None) -> float:
    """"30d", "12h", "90m" or an RFC 3339 time -> a Unix time; ValueError saying what is accepted."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"(\d{1,6})([mhd])", text.strip())
    if match:
        return now + int(match.group(1)) * {"m": 60, "h": 3600, "d": 86400}[match.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--expires {text!r}: give a duration (90m, 12h, 30d) or an RFC 3339 time") from None
    if when.tzinfo is None:
        raise ValueError(f"--expires {text!r} needs a time zone, e.g. 2027-01-01T00:00:00Z")
    return when.timestamp()


class KeyStore:
    """The API keys of one data dir. The CLI writes it; the kernel reads it, and rereads it as soon
    as anyone commits a change (SQLite's data_version, not the file's time, which may not move)."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / KEYS_FILE
        self._reader: sqlite3.Connection | None = None
        self._version: int | None = None
        self._by_digest: dict[str, ApiKey] = {}

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, timeout=10, check_same_thread=False)
        db.execute(
            "CREATE TABLE IF NOT EXISTS keys (name TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL, scopes TEXT NOT NULL, "
            "created REAL NOT NULL, expires REAL, revoked REAL)"
        )
        return db

    def create(self, name: str, scopes: list[str], expires: float | None = None) -> str:
        """A new key's token (shown once; only its hash is kept). ValueError for a bad name or a
        name in use."""
        if not NAME_PATTERN.match(name):
            raise ValueError(f"key name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        for scope in scopes:
            if is_act_as(scope):
                if scope != ACT_AS and not NAME_PATTERN.match(scope[len(ACT_AS) + 1 :].replace("*", "x").replace(":", "-")):
                    raise ValueError(f"scope {scope!r}: name the users the gateway acts for, e.g. act_as:alice or act_as:team-*")
            elif "/" not in scope or len(scope) > 200:
                raise ValueError(f"scope {scope!r}: give a method glob 'package.Service/Method' (e.g. "
                                 f"'cortex.memories.v1.MemoryService/*'), {ACT_AS} or {ACT_AS}:USER")
        if expires is not None and expires <= time.time():
            raise ValueError("the key would expire before it is made: give a time in the future")
        methods = [s for s in scopes if not is_act_as(s)] or ["*/*"]  # act_as alone still calls anything
        stored = methods + [s for s in scopes if is_act_as(s)]
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        with closing(self._connect()) as db:
            try:
                db.execute(
                    "INSERT INTO keys(name, digest, scopes, created, expires) VALUES (?, ?, ?, ?, ?)",
                    (name, _digest(token), "\n".join(stored), time.time(), expires),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"a key named {name!r} exists; revoke it or choose another name") from None
        return token

    def revoke(self, name: str) -> bool:
        with closing(self._connect()) as db:
            changed = db.execute("UPDATE keys SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name))
            return changed.rowcount > 0

    def list(self) -> list[ApiKey]:
        with closing(self._connect()) as db:
            return [_key(row) for row in db.execute("SELECT name, scopes, created, expires, revoked FROM keys ORDER BY name")]

    def find(self, token: str) -> ApiKey | None:
        if self._reader is None:
            if not self.path.exists():
                return None  # no key was ever made here
            self._reader = self._connect()
        # data_version changes whenever another connection commits: a revoke is seen at the next call
        version = self._reader.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            rows = self._reader.execute("SELECT name, scopes, created, expires, revoked, digest FROM keys").fetchall()
            self._by_digest = {row[5]: _key(row[:5]) for row in rows}
            self._version = version
        return self._by_digest.get(_digest(token))


def is_act_as(scope: str) -> bool:
    """`act_as` (for any user) or `act_as:GLOB` (for the users it names): a gateway's scope."""
    return scope == ACT_AS or scope.startswith(ACT_AS + ":")


def _key(row: tuple[str, str, float, float | None, float | None]) -> ApiKey:
    name, scopes, created, expires, revoked = row
    return ApiKey(name, tuple(scopes.split("\n")), created, expires, revoked)


class Credentials:
    """The kernel's authenticator: one for gRPC and for every bridge (HTTP/JSON, MCP, A2A)."""

    def __init__(self, data_dir: Path, require_credentials: bool = False, owners: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.require_credentials = require_credentials
        self.owners = owners  # kernel.owners: identities whose data is the owner's (no gateway acts as them)
        self.reserved: set[str] = set()  # namespaces plugins define (shared ones): no gateway's user is named so
        self.keys = KeyStore(data_dir)
        self._admin = b""

    def reserve(self, names: Iterable[str]) -> None:
        """Names a plugin gives namespaces of its own (memories' shared namespaces): a gateway's user
        so named would be given that namespace, so no gateway may act as one."""
        self.reserved.update(names)

    def ensure_admin_token(self) -> Path:
        """Create the admin token on first start (0600); keep it from then on. The data dir that
        holds it (and the memories) is made its owner's alone (0700), also one the user made
        (`mkdir` leaves it 0755: anyone on the machine could list it, and read what is not 0600)."""
        path = self.data_dir / ADMIN_TOKEN_FILE
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.name == "posix" and (mode := self.data_dir.stat().st_mode & 0o777) & 0o077:
            self.data_dir.chmod(0o700)
            log.warning("data_dir.made_private", path=str(self.data_dir), was=f"{mode:03o}", now="700")
        if not path.exists():
            _write_secret(path, "cta_" + secrets.token_urlsafe(32))
        self._admin = read_admin_token(self.data_dir).encode()
        return path

    def identify(self, authorization: str, loopback: bool, certificate_name: str = "", claimed: str = "") -> Identity:
        """The caller's identity from its credential, acting for `claimed` (x-cortex-principal) when
        it may; AuthError saying what to send."""
        identity = self._credential(authorization, loopback, certificate_name)
        if claimed in self.reserved and claimed != identity.principal:
            raise AuthError(f"no one may act as {claimed!r}: it names a shared namespace", grpc.StatusCode.PERMISSION_DENIED)
        return identity.acting_for(claimed, self.owners)

    def _credential(self, authorization: str, loopback: bool, certificate_name: str) -> Identity:
        if authorization:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise AuthError(f"the authorization header is not a bearer token: {HOW_TO_AUTHENTICATE}")
            return self._token(token)
        if certificate_name:
            return Identity(f"node:{certificate_name}", "client certificate", None, True)
        if loopback and not self.require_credentials:
            return Identity(LOCAL, "loopback")
        why = "this kernel requires a credential (kernel.require_credentials)" if loopback else "the call comes from beyond loopback"
        raise AuthError(f"no credential: {why}; {HOW_TO_AUTHENTICATE}")

    def _token(self, token: str) -> Identity:
        if self._admin and hmac.compare_digest(token.encode(), self._admin):
            return Identity(ADMIN, "admin token", None, True)
        key = self.keys.find(token)
        if key is None:
            raise AuthError("the bearer token is not a key of this kernel (mistyped, or made for another kernel)")
        return self._key_identity(key)

    def key_identity(self, principal: str) -> Identity:
        """The identity key `key:NAME` has now (its scopes; AuthError when it is unknown, revoked
        or expired): for a plugin acting later for a key that asked it something (an event's
        publisher), with the key's limits, not just its name."""
        name = principal.removeprefix("key:")
        key = next((k for k in self.keys.list() if k.name == name), None) if principal.startswith("key:") else None
        if key is None:
            raise AuthError(f"{principal!r} is not a key of this kernel", grpc.StatusCode.PERMISSION_DENIED)
        return self._key_identity(key)

    @staticmethod
    def _key_identity(key: ApiKey) -> Identity:
        if key.revoked is not None:
            raise AuthError(f"key {key.name!r} was revoked; ask the admin for a new one")
        if key.expires is not None and key.expires <= time.time():
            when = dt.datetime.fromtimestamp(key.expires, dt.UTC).isoformat(timespec="seconds")
            raise AuthError(f"key {key.name!r} expired at {when}; ask the admin for a new one")
        scopes = tuple(s for s in key.scopes if not is_act_as(s))
        acts_for = tuple("*" if s == ACT_AS else s[len(ACT_AS) + 1 :] for s in key.scopes if is_act_as(s))
        return Identity(key.principal, "api key", None if scopes == ("*/*",) else scopes, bool(acts_for), "",
                        acts_for or ("*",))
