# signer-proxy: the JSON-RPC signing proxy, as a small non-root image.
#   docker build -t signer-proxy .
#   docker run -p 8545:8545 -e AWS_REGION=us-east-1 \
#     -v $PWD/api-keys.yaml:/etc/signer-proxy/api-keys.yaml:ro signer-proxy \
#     --upstream https://node.example --kms-key alias/treasury \
#     --api-keys-file /etc/signer-proxy/api-keys.yaml
# (it listens on 0.0.0.0, so it refuses to start without authentication: docs/security.md)
# Everything after the image name is a `signer-proxy serve` flag; every setting is also an
# environment variable (SIGNER_PROXY_...): see docs/config.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: resolve and install into a virtualenv, pinned by constraints.txt ---------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml constraints.txt README.md ./
COPY signer_proxy ./signer_proxy
RUN python -m venv /opt/signer-proxy \
    && /opt/signer-proxy/bin/pip install --no-compile -c constraints.txt . \
    && /opt/signer-proxy/bin/python -m compileall -q /opt/signer-proxy

# --- runtime: the virtualenv on the same base, no compilers, no pip cache ------------------
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin signer-proxy
COPY --from=build /opt/signer-proxy /opt/signer-proxy
# Listen on all interfaces inside the container; JSON logs for collectors. Bytecode was
# compiled at build time, so a read-only root filesystem is fine.
ENV PATH=/opt/signer-proxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIGNER_PROXY_LISTEN=0.0.0.0:8545 \
    SIGNER_PROXY_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8545
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["signer-proxy", "healthcheck"]
# SIGTERM drains in-flight requests for --shutdown-timeout (30 s by default): give
# `docker stop` at least that long (docker stop -t 40).
STOPSIGNAL SIGTERM
ENTRYPOINT ["signer-proxy", "serve"]
