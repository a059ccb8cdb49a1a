"""Namespaces: whose memories a call may read and write.

Every memory lives in one namespace. The kernel says whose a call is (`context.namespace`, from
its principal's credential, never from what the caller says, and through plugins: a Cerebrum
step searching for key:alice's goal is key:alice's):

- the kernel's owner shares the namespace `default`: admin, local, the kernel and its plugins,
  kernel certificates, and `kernel.owners` (by default the MCP and A2A bridges' clients);
- everyone else has one of their own, named as the principal (`key:alice`).
- `[plugins.memories.shared]` names shared namespaces and who reads and writes them
  (`family = ["key:alice", "key:bob"]`); `default` may be shared like any other.

A search covers the caller's own namespace and the shared ones it belongs to, or those of them it
names; naming one it does not belong to is PERMISSION_DENIED. `admin` may name any namespace
(`*`: all of them). A memory in a namespace the caller cannot read does not exist for it: Get,
Update, Delete, History say NOT_FOUND, as for an id never used. `namespaces = "off"` puts every
memory in `default` for every caller (one person's kernel, several keys for several apps).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

DEFAULT = "default"
ALL = "*"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")


class Denied(Exception):
    """A namespace the caller may not use (PERMISSION_DENIED), saying which it may."""


@dataclass(frozen=True)
class Access:
    """What one caller may do: its own namespace, and those it may read and write besides."""

    principal: str
    own: str
    shared: tuple[str, ...]  # the shared namespaces it belongs to (reads and writes)
    everything: bool = False  # admin, or namespaces = "off"

    @property
    def scope(self) -> list[str]:
        """The namespaces a search covers when it names none."""
        return list(dict.fromkeys((self.own, *self.shared)))

    def may_read(self, namespace: str) -> bool:
        return self.everything or namespace == self.own or namespace in self.shared

    may_write = may_read

    def search(self, named: list[str]) -> list[str] | None:
        """The namespaces to search: those named (checked), else the caller's scope; None: all."""
        if not named:
            return self.scope
        if ALL in named:
            if not self.everything:
                raise Denied(f"only admin searches every namespace ('*'); {self.principal} may search {self._list()}")
            return None
        refused = [n for n in named if not self.may_read(n)]
        if refused:
            raise Denied(f"{self.principal} may not read namespace {', '.join(map(repr, refused))}; it may read {self._list()}")
        return list(dict.fromkeys(named))

    def target(self, named: str) -> str:
        """The namespace a new memory goes to: the one named (checked), else the caller's own."""
        if not named or named == self.own:
            return self.own
        if not NAME.match(named):
            raise Denied(f"namespace {named!r} is not a namespace name (letters, digits and ._:@-, at most 200)")
        if not self.may_write(named):
            raise Denied(f"{self.principal} may not write namespace {named!r}; it may write {self._list()}")
        return named

    def _list(self) -> str:
        return ", ".join(map(repr, self.scope))


class Namespaces:
    """The configured rule: (principal, its namespace) -> Access."""

    def __init__(self, mode: str = "principal", shared: dict[str, list[str]] | None = None):
        if mode not in ("principal", "off"):
            raise ValueError(f"[plugins.memories] namespaces = {mode!r}: use \"principal\" or \"off\"")
        for name, members in (shared or {}).items():
            if not NAME.match(name) or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise ValueError(f"[plugins.memories.shared] {name}: give a namespace name and a list of principal globs")
        self.mode, self.shared = mode, dict(shared or {})

    def access(self, principal: str, own: str) -> Access:
        if self.mode == "off":
            return Access(principal, DEFAULT, (), True)
        shared = tuple(name for name, members in self.shared.items()
                       if any(fnmatch.fnmatchcase(principal, glob) for glob in members))
        return Access(principal, own, shared, principal == "admin")


def caller(context) -> tuple[str, str]:
    """(whose request a call serves, its namespace), as the router's context says (Call.origin);
    a context that cannot say is nobody's: it reads and writes only an empty namespace."""
    origin = getattr(context, "origin", "") or ""
    return origin, getattr(context, "namespace", "") if origin else ""
