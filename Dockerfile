# syntax=docker/dockerfile:1
# The aiops images, three targets of one Dockerfile, built from the repository root:
#   operator  `aiops run`, what the Helm chart runs: the package and its core dependencies only
#             (no torch, no development servers). The default target.
#   triton    NVIDIA's Triton with what the Python-backend models that TrainingJobs register import
#             (onnxruntime, tokenizers, numpy<2; torch for versions registered as TorchScript
#             behind model.py): the runtime.image of ModelDeployments serving them.
#   worker    `aiops worker validate-model|train|embed`, what the operator's Jobs run: the ML stack
#             (CPU torch 2.13.0, sentence-transformers, ONNX export) on the triton target, because
#             the validation worker starts a private `tritonserver` from PATH.
#   docker build --target operator -t ghcr.io/aiops-operator/aiops-operator:0.1.0 .
#   docker build --target triton -t ghcr.io/aiops-operator/aiops-triton:0.1.0 .
#   docker build --target worker -t ghcr.io/aiops-operator/aiops-worker:0.1.0 .
# Bases are pinned to exact tags; pin them by digest too in your registry mirror for byte-for-byte
# rebuilds. Offline (`aiops dev images`), the bases are local images given as build args and pip
# reads only a wheelhouse mounted into the build:
#   --build-arg PYTHON_IMAGE=... --build-arg TRITON_IMAGE=... --build-arg PIP_NO_INDEX=1
#   --build-arg PIP_FIND_LINKS=/wheels/KEY -v WHEELHOUSE:/wheels/KEY:ro
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# NVIDIA's Triton with Python >= 3.11 (the package's floor): 24.12 is Ubuntu 24.04 with Python 3.12.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-py3

FROM ${PYTHON_IMAGE} AS operator-build
# pip reads these from the environment; the defaults are pip's own (the index, no extra links).
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/aiops
ENV PATH=/opt/aiops/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# Not editable: the package is copied into the virtualenv, /src stays behind in this stage. The
# check proves `aiops run` starts without the ML stack.
RUN pip install --no-cache-dir /src \
    && python -c "import sys, aiops.cli, aiops.runner; assert 'torch' not in sys.modules"

FROM ${TRITON_IMAGE} AS triton-build
# torch comes first and pinned, from the CPU index: an unpinned torch (asked for by a dependency)
# pulls a multi-GB CUDA build. For a CUDA build use
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
#   --build-arg ONNXRUNTIME=onnxruntime-gpu   (the CUDA provider: int8 models on the GPU; the
#                                              worker target still adds the CPU build, which
#                                              its quality gate measures with)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG ONNXRUNTIME=onnxruntime
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The Triton image's own python3: the Python backend's stub embeds that interpreter and takes the
# environment of the first python3 on PATH, so models import what this venv holds.
RUN python3 -m venv /opt/aiops
ENV PATH=/opt/aiops/bin:$PATH
# What the model.py of a TrainingJob's python output imports (aiops.training.export): Triton's
# images do not ship them. numpy<2: the stub was built for numpy 1.x. torch: model.py files of
# earlier releases load a TorchScript model.pt; the worker stage shares this layer.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" torch==2.13.0 \
    && pip install --no-cache-dir "${ONNXRUNTIME}>=1.20" "tokenizers>=0.20,<1" "numpy<2" \
    && python -c "import numpy, onnxruntime, tokenizers, torch; assert numpy.__version__ < '2'"

FROM ${TRITON_IMAGE} AS triton
LABEL org.opencontainers.image.title="aiops-triton" \
      org.opencontainers.image.description="NVIDIA Triton with the Python packages the models trained by aiops-operator import" \
      org.opencontainers.image.source="https://github.com/aiops-operator/aiops-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=triton-build /opt/aiops /opt/aiops
ENV PATH=/opt/aiops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1
# Triton's images' non-root user, which the operator's Triton pods run as.
USER 1000:1000

FROM triton AS worker
LABEL org.opencontainers.image.title="aiops-worker" \
      org.opencontainers.image.description="The workers of the aiops-operator's validation, training and ingestion Jobs" \
      org.opencontainers.image.source="https://github.com/aiops-operator/aiops-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS
USER root
# The uid/gid the operator's Jobs run as, like the operator; no login shell, no home to write to:
# only /tmp is writable.
RUN groupadd --system --gid 10001 aiops \
    && useradd --system --no-log-init --uid 10001 --gid aiops --home-dir /tmp --shell /usr/sbin/nologin aiops
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# On top of the serving image's venv (its torch is kept: one layer of it, shared by both images).
# Not editable: the package is copied into the venv and /src goes.
RUN pip install --no-cache-dir "/src[worker]" \
    && python -c "import aiops.cli, sentence_transformers, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__" \
    && rm -rf /src
# The validation worker's private Triton finds its stub's python3 (and numpy<2) first on PATH, and
# `tritonserver` stays on PATH from the base.
ENV PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["aiops"]
CMD ["worker", "--help"]

FROM ${PYTHON_IMAGE} AS operator
LABEL org.opencontainers.image.title="aiops-operator" \
      org.opencontainers.image.description="Kubernetes operator for an on-prem AI platform" \
      org.opencontainers.image.source="https://github.com/aiops-operator/aiops-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# The uid/gid the Helm chart runs as (runAsUser: 10001); no login shell, no home to write to:
# the root filesystem is read-only in the chart and only /tmp is writable.
RUN groupadd --system --gid 10001 aiops \
    && useradd --system --no-log-init --uid 10001 --gid aiops --home-dir /tmp --shell /usr/sbin/nologin aiops
COPY --from=operator-build /opt/aiops /opt/aiops
ENV PATH=/opt/aiops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
# 8080: /healthz (Kopf's liveness endpoint), 9090: Prometheus /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["aiops"]
CMD ["run"]
