"""The audit log's Merkle tree, as RFC 9162 (Certificate Transparency v2) defines it.

    leaf hash = SHA-256(0x00 || leaf)          the leaf is an entry's hash
    node hash = SHA-256(0x01 || left || right)
    MTH of n leaves: split at the largest power of two below n

`Frontier` keeps the roots of the perfect subtrees that make up the log so far (one per set bit
of its size), so appending is O(log n) and the tree head of the whole log is always at hand;
a signed tree head needs nothing else. It can also report the perfect subtrees it completes
(`keep_from`), which the chain stores so that a proof in a log of millions of entries reads a
few dozen hashes instead of every leaf. The proofs are written once, over `mth(start, end)`
(the hash of leaves [start, end)), for leaf lists and stored trees alike (see
docs/ARCHITECTURE.md, "Audit").
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The right edge of a growing tree: (subtree size, subtree root), largest first.

    With `keep_from`, every perfect subtree of at least that many leaves that an append completes
    is also listed in `completed` as (size, index, root): the subtree of leaves
    [index * size, (index + 1) * size). Whoever stores them empties the list."""

    __slots__ = ("_stack", "completed", "keep_from", "size")

    def __init__(self, keep_from: int = 0) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []
        self.keep_from = keep_from
        self.completed: list[tuple[int, int, bytes]] = []

    def append(self, leaf: bytes) -> None:
        size, node = 1, leaf_hash(leaf)
        stack = self._stack
        while stack and stack[-1][0] == size:  # two perfect trees of one size become one
            left = stack.pop()[1]
            node, size = node_hash(left, node), size * 2
            if self.keep_from and size >= self.keep_from:
                self.completed.append((size, (self.size + 1) // size - 1, node))
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


    def copy(self) -> Frontier:
        """The same frontier, to restore if an append fails (`completed` is not carried over)."""
        twin = Frontier(self.keep_from)
        twin.size, twin._stack = self.size, list(self._stack)
        return twin

    def to_bytes(self) -> bytes:
        """The frontier as (size, root) pairs, so a restart need not re-read every leaf."""
        return b"".join(struct.pack(">Q", size) + node for size, node in self._stack)

    @classmethod
    def from_bytes(cls, data: bytes, keep_from: int = 0) -> Frontier:
        frontier = cls(keep_from)
        if len(data) % 40:
            raise ValueError("a stored frontier is a sequence of 40-byte (size, root) pairs")
        for offset in range(0, len(data), 40):
            size = struct.unpack(">Q", data[offset : offset + 8])[0]
            frontier._stack.append((size, data[offset + 8 : offset + 40]))
            frontier.size += size
        sizes = [size for size, _ in frontier._stack]
        if any(s & (s - 1) for s in sizes) or sizes != sorted(set(sizes), reverse=True):
            raise ValueError("a stored frontier's subtrees are not distinct powers of two, largest first")
        return frontier


def tree_hash(leaves: Iterable[bytes]) -> bytes:
    return Frontier().extend(leaves).root()


# MTH(D[start:end]): how a proof reads the tree, from a list of leaves or from storage
RangeHash = Callable[[int, int], bytes]


def list_range_hash(leaves: list[bytes]) -> RangeHash:
    return lambda start, end: tree_hash(leaves[start:end])


# -- proofs (RFC 9162 §2.1.3 and §2.1.4) --------------------------------------------------------------
def split_point(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(leaves: list[bytes], index: int) -> list[bytes]:
    """PATH(index, leaves): the sibling hashes from the leaf up to the root of `leaves`."""
    return inclusion_path(index, len(leaves), list_range_hash(leaves))


def inclusion_path(index: int, size: int, mth: RangeHash) -> list[bytes]:
    """PATH(index, D[0:size]), reading subtree hashes through `mth`."""
    if not 0 <= index < size:
        raise IndexError(f"leaf {index} is not in a tree of {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            proof.append(mth(start + k, end))
            end = start + k
        else:
            proof.append(mth(start, start + k))
            start += k
    return proof[::-1]  # leaf-side first, as the verification walks it


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes | None:
    """The root that `proof` makes of `leaf` at `index` in a tree of `size` leaves (RFC 9162
    §2.1.3.2), or None when the proof cannot be one for that position."""
    if not 0 <= index < size:
        return None
    fn, sn, node = index, size - 1, leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            node = node_hash(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    return node if sn == 0 else None


def consistency_proof(leaves: list[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, leaves): that the first `old_size` leaves are a prefix of `leaves`."""
    return consistency_path(old_size, len(leaves), list_range_hash(leaves))


def consistency_path(old_size: int, size: int, mth: RangeHash) -> list[bytes]:
    """PROOF(old_size, D[0:size]), reading subtree hashes through `mth`."""
    if not 0 < old_size <= size:
        raise ValueError(f"no consistency proof from {old_size} to {size} leaves")

    def subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [mth(start, end)]
        k = split_point(n)
        if m <= k:
            return [*subproof(m, start, start + k, complete), mth(start + k, end)]
        return [*subproof(m - k, start + k, end, False), mth(start, start + k)]

    return subproof(old_size, 0, size, True)


def consistent(old_size: int, old_root: bytes, new_size: int, new_root: bytes, proof: list[bytes]) -> bool:
    """Whether `proof` shows the tree of `old_size` leaves with `old_root` is a prefix of the tree of
    `new_size` leaves with `new_root` (RFC 9162 §2.1.4.2)."""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
