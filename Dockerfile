# notestream image: one image for the worker, replay, alerts and the one-shot topic creator.
#
#   docker build -t notestream:cpu .                                   # CPU build of torch
#   docker build -t notestream:cu124 --build-arg TORCH_VARIANT=cu124 . # CUDA 12.4 build of torch
#
# TORCH_VARIANT picks the PyTorch wheel index (https://download.pytorch.org/whl/<variant>): `cpu`, or a
# CUDA tag published for torch 2.13.0 (cu124 by default for GPUs; use the tag your driver supports).
# The CUDA wheels bring their own CUDA runtime, so the base image stays python:slim; the host needs the
# NVIDIA driver and the NVIDIA container toolkit. torch is installed first, from that index only, so
# that no other dependency can pull a different torch build.

ARG PYTHON_VERSION=3.11

# --- build: a virtual environment with torch and notestream ----------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN case "${TORCH_VARIANT}" in \
      cpu|cu[0-9][0-9][0-9]) ;; \
      *) echo "TORCH_VARIANT must be cpu or a CUDA tag such as cu124, not '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac \
 && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notestream ./notestream
COPY models ./models
COPY stream ./stream
COPY training ./training
# The pin in pyproject.toml (torch==2.13.0) is already satisfied, so pip keeps the chosen build.
RUN pip install . && python -c "import torch, notestream; print('torch', torch.__version__)"

# --- runtime: the venv only, as an unprivileged user ------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="notestream" \
      org.opencontainers.image.description="Streaming ClinicalBERT risk scores from clinical notes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.notestream.torch-variant="${TORCH_VARIANT}"
RUN groupadd --system --gid 10001 notestream \
 && useradd --system --uid 10001 --gid notestream --home-dir /app --shell /usr/sbin/nologin notestream
COPY --from=build /opt/venv /opt/venv
COPY --chown=notestream:notestream deploy /app/deploy
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    NOTESTREAM_LOG_JSON=true \
    NOTESTREAM_METRICS_PORT=9100
WORKDIR /app
USER notestream:notestream
EXPOSE 9100
# Liveness only (the process answers); readiness is /readyz, used by the orchestrator.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NOTESTREAM_METRICS_PORT', '9100'), timeout=2)"
ENTRYPOINT ["notestream"]
CMD ["worker"]
