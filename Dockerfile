# syntax=docker/dockerfile:1
# The aiops image: the operator (`aiops run`, what the Helm chart runs) and the workers of its
# Jobs (`aiops worker validate-model|train|embed`), one image. Build from the repository root:
#   docker build -t ghcr.io/aiops-operator/aiops-operator:0.1.0 .
# The base is pinned to an exact tag; pin it by digest too in your registry mirror
# (python:3.11.11-slim-bookworm@sha256:...) for byte-for-byte rebuilds.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# torch comes first and pinned, from the CPU index: an unpinned torch (asked for by a dependency)
# pulls a multi-GB CUDA build. For a CUDA worker image build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aiops
ENV PATH=/opt/aiops/bin:$PATH
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# Not editable: the package is copied into the virtualenv, /src stays behind in this stage.
RUN pip install --no-cache-dir "/src[ml]" \
    && python -c "import aiops.cli, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="aiops-operator" \
      org.opencontainers.image.description="Kubernetes operator and workers for an on-prem AI platform" \
      org.opencontainers.image.source="https://github.com/aiops-operator/aiops-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# The uid/gid the Helm chart runs as (runAsUser: 10001); no login shell, no home to write to:
# the root filesystem is read-only in the chart and only /tmp is writable.
RUN groupadd --system --gid 10001 aiops \
    && useradd --system --no-log-init --uid 10001 --gid aiops --home-dir /tmp --shell /usr/sbin/nologin aiops
COPY --from=build /opt/aiops /opt/aiops
ENV PATH=/opt/aiops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER 10001:10001
WORKDIR /tmp
# 8080: /healthz (Kopf's liveness endpoint), 9090: Prometheus /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["aiops"]
CMD ["run"]
