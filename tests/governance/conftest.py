"""What the audit log's tests share: a fresh chain with its key."""

from __future__ import annotations

import pytest

from cortex.plugins.governance.chain import AuditChain, load_or_create_key


@pytest.fixture
def chain(tmp_path):
    folder = tmp_path / "governance"
    chain = AuditChain(folder / "audit.db", load_or_create_key(folder))
    yield chain
    chain.close()
