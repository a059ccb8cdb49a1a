"""Governance: policies decide every call; decisions and finished calls leave a signed,
hash-chained audit log with verifiable proofs."""
