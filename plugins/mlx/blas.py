"""An optimized BLAS for MLX's CPU backend on Linux.

The `mlx[cpu]` Linux wheel bundles the reference (netlib) BLAS: a 1280x384 @ 384x1536 float32
matmul takes ~250 ms with it and ~8 ms with OpenBLAS. Loading OpenBLAS with RTLD_GLOBAL before
MLX is imported makes MLX's BLAS symbols resolve to it (no LD_PRELOAD, no re-exec needed).
`scripts/setup.sh` installs Debian's `libopenblas0-pthread` where it can; macOS (Metal,
Accelerate) is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import structlog

log = structlog.get_logger("cortex.mlx")

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_loaded: str | None = None


def use_fast_blas(enabled: bool = True) -> str | None:
    """Load OpenBLAS globally if possible; returns its path, or None (and says why in the log)."""
    global _loaded
    if _loaded or not enabled or not sys.platform.startswith("linux"):
        return _loaded
    if "mlx.core" in sys.modules:
        log.warning("mlx.blas_too_late", detail="mlx was imported before the BLAS could be set up")
        return None
    path = os.environ.get("CORTEX_OPENBLAS") or next((p for p in CANDIDATES if os.path.exists(p)), None)
    path = path or ctypes.util.find_library("openblas")
    if not path:
        log.warning(
            "mlx.slow_blas",
            detail="OpenBLAS not found: MLX on this CPU uses the reference BLAS (tens of times slower). "
            "Install it: apt-get install libopenblas0-pthread",
        )
        return None
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        log.warning("mlx.slow_blas", detail=f"cannot load {path}: {exc}")
        return None
    _loaded = path
    log.info("mlx.blas", library=path)
    return path
