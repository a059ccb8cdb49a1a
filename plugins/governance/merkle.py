"""The audit log's Merkle tree, as RFC 9162 (Certificate Transparency v2) defines it.

    leaf hash = SHA-256(0x00 || leaf)          the leaf is an entry's hash
    node hash = SHA-256(0x01 || left || right)
    MTH of n leaves: split at the largest power of two below n

`Frontier` keeps the roots of the perfect subtrees that make up the log so far (one per set bit
of its size), so appending is O(log n) and the tree head of the whole log is always at hand;
a checkpoint needs nothing else. Inclusion and consistency proofs come with the log's growth
(see docs/ARCHITECTURE.md, "Audit").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The right edge of a growing tree: (subtree size, subtree root), largest first."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []

    def append(self, leaf: bytes) -> None:
        size, node = 1, leaf_hash(leaf)
        stack = self._stack
        while stack and stack[-1][0] == size:  # two perfect trees of one size become one
            left = stack.pop()[1]
            node, size = node_hash(left, node), size * 2
        stack.append((size, node))
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> Frontier:
        for leaf in leaves:
            self.append(leaf)
        return self

    def root(self) -> bytes:
        """MTH of every leaf so far: the smaller subtrees hang off the right of the larger."""
        if not self._stack:
            return EMPTY_ROOT
        root = self._stack[-1][1]
        for _size, node in reversed(self._stack[:-1]):
            root = node_hash(node, root)
        return root


def tree_hash(leaves: Iterable[bytes]) -> bytes:
    return Frontier().extend(leaves).root()
