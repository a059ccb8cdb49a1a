"""The audit log's Merkle tree against RFC 9162's own definitions: tree heads, inclusion proofs,
consistency proofs, for every tree size up to 40 and every position in it."""

from __future__ import annotations

import hashlib

import pytest

from cortex.plugins.governance.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    consistent,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    tree_hash,
)

LEAVES = [hashlib.sha256(str(i).encode()).digest() for i in range(40)]


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, written as the RFC writes it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


@pytest.mark.parametrize("n", range(41))
def test_the_frontier_keeps_the_tree_head(n):
    assert tree_hash(LEAVES[:n]) == mth(LEAVES[:n])
    frontier = Frontier()
    for i, leaf in enumerate(LEAVES[:n], start=1):
        frontier.append(leaf)
        assert frontier.size == i and frontier.root() == mth(LEAVES[:i])
    assert n or frontier.root() == EMPTY_ROOT


@pytest.mark.parametrize("n", range(1, 41))
def test_inclusion_proofs_verify_and_nothing_else_does(n):
    leaves, root = LEAVES[:n], mth(LEAVES[:n])
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        assert root_from_inclusion(leaves[i], i, n, proof) == root
        assert root_from_inclusion(b"another leaf", i, n, proof) != root
        if n > 1:
            assert root_from_inclusion(leaves[i], (i + 1) % n, n, proof) != root
            assert root_from_inclusion(leaves[i], i, n, [*proof, b"x" * 32]) is None
    with pytest.raises(IndexError):
        inclusion_proof(leaves, n)


@pytest.mark.parametrize("n", range(1, 41))
def test_consistency_proofs_show_the_log_only_grew(n):
    for m in range(1, n + 1):
        proof = consistency_proof(LEAVES[:n], m)
        assert consistent(m, mth(LEAVES[:m]), n, mth(LEAVES[:n]), proof)
        if m < n:
            rewritten = [b"rewritten", *LEAVES[1:n]]
            assert not consistent(m, mth(LEAVES[:m]), n, mth(rewritten), proof)
            assert not consistent(m, mth(LEAVES[:m]), n, mth(LEAVES[:n]), proof[:-1] or [b"y" * 32])
    assert not consistent(0, EMPTY_ROOT, n, mth(LEAVES[:n]), [])
