"""Bulk changes by filter (DeleteMatching, TagMatching), dry run first.

Letta #2589 asked for bulk delete; a filter that matches more than its author meant is the danger.
So a bulk change takes two calls: a dry run answers how many memories match, the first of them,
and a `confirm` token; the real call must carry that token, and the token binds the change to
exactly the memories the dry run saw (an HMAC over the action, the request and their ids). A
memory stored, changed or deleted in between makes the token stale: the caller dry-runs again
rather than deleting what it never saw.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MAX_BULK = 10_000
SAMPLE = 100


def confirmation(secret: bytes, action: str, request_bytes: bytes, matched: list[tuple[str, str]]) -> str:
    """The token for `action` on `matched` ((id, content hash) of each memory, in any order)."""
    digest = hashlib.sha256(action.encode() + b"\0" + request_bytes)
    for memory_id, content in sorted(matched):
        digest.update(f"\0{memory_id}:{content}".encode())
    return base64.urlsafe_b64encode(hmac.new(secret, digest.digest(), hashlib.sha256).digest()[:18]).decode()


def retagged(tags: list[str], add: list[str], remove: list[str]) -> list[str]:
    """`tags` less `remove`, then `add` appended where missing (order kept: a person's order)."""
    kept = [t for t in tags if t not in remove]
    return kept + [t for t in add if t not in kept]
