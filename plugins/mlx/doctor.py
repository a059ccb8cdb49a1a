"""The mlx plugin's `cortex doctor` checks: MLX itself (backend, device, BLAS) and its models."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from cortex.kernel import FAIL, OK, WARN, DoctorCheck


def mlx_checks() -> list[DoctorCheck]:
    if importlib.util.find_spec("mlx") is None:
        fix = "pip install 'mlx[cpu]'" if sys.platform.startswith("linux") else "pip install mlx"
        return [DoctorCheck("mlx", FAIL, "not installed", fix)]
    from .blas import use_fast_blas

    blas = use_fast_blas()
    import mlx.core as mx

    checks = [DoctorCheck("mlx", OK, f"{mx.__version__}, device {mx.default_device()}")]
    if sys.platform.startswith("linux"):
        checks.append(
            DoctorCheck("blas", OK, f"OpenBLAS {blas}") if blas
            else DoctorCheck("blas", WARN, "reference BLAS: MLX on this CPU is tens of times slower",
                             "apt-get install libopenblas0-pthread (scripts/setup.sh does it)")
        )
    return checks


def model_checks(settings: dict[str, Any]) -> list[DoctorCheck]:
    from .plugin import packaged_minilm

    checks = []
    embedding = settings.get("embedding_model")
    if embedding:
        ok = os.path.exists(os.path.join(os.path.expanduser(str(embedding)), "config.json"))
        checks.append(DoctorCheck("embedding model", OK if ok else FAIL, str(embedding),
                                  "point [plugins.mlx] embedding_model at a BERT folder"))
    else:
        found = packaged_minilm()
        checks.append(DoctorCheck("embedding model", OK if found else FAIL, str(found or "all-MiniLM-L6-v2 missing"),
                                  "cortex models install"))
    generation = settings.get("generation_model")
    if generation and not os.path.exists(os.path.expanduser(str(generation))):
        checks.append(DoctorCheck("generation model", WARN, f"{generation} is not a folder: it would be fetched from a hub",
                                  "download it once, then point generation_model at the folder"))
    else:
        checks.append(DoctorCheck("generation model", OK, str(generation or "cortex-tiny-llama (built on first use)")))
    return checks
