# notestream images, one target per role (multi-stage):
#
#   docker build --target worker -t notestream:cpu .                                # worker, CPU torch
#   docker build --target worker -t notestream:cu130 --build-arg TORCH_VARIANT=cu130 .  # worker, CUDA 13.0
#   docker build --target light  -t notestream:light .                              # alerts, topics, replay, EHR ingest
#
# `docker build .` without --target builds the worker (the last stage). The `light` image holds no torch,
# transformers or Faust: it runs `notestream alerts`, `notestream topics` (and deploy/create_topics.py)
# and `notestream replay`, and starts in a fraction of the worker's time. Installed size per role:
# README ("Images and roles").
#
# TORCH_VARIANT picks the PyTorch wheel index (https://download.pytorch.org/whl/<variant>) of the worker:
# `cpu`, or a CUDA build published for torch 2.13.0: cu126 (legacy, older GPUs), cu130 (stable, the
# default for GPUs here) or cu132 (experimental). The CUDA wheels bring their own CUDA runtime, so the
# base image stays python:slim; the host needs an NVIDIA driver new enough for that CUDA version and the
# NVIDIA container toolkit. torch is installed first, from that index only, so that no other dependency
# can pull a different torch build. Every other package comes at the version in constraints.txt.

ARG PYTHON_VERSION=3.11

# --- build-base: a virtual environment and the sources ----------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build-base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY notestream ./notestream
COPY models ./models
COPY stream ./stream
COPY training ./training

# --- build-light: alerts, topics and replay; no torch -----------------------------------------------
FROM build-base AS build-light
RUN pip install -c constraints.txt ".[alerts,ingest,ehr]" \
 && python -c "import importlib.util as u, sys; sys.exit('torch in the light image' if u.find_spec('torch') else 0)"

# --- build-worker: torch of the chosen build, then the worker extra -------------------------------
FROM build-base AS build-worker
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
RUN case "${TORCH_VARIANT}" in \
      cpu|cu126|cu130|cu132) ;; \
      *) echo "TORCH_VARIANT must be cpu, cu126, cu130 or cu132 (the builds of torch ${TORCH_VERSION}), not '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac \
 && pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
# The pin (torch==2.13.0) is already satisfied by the chosen build, so pip keeps it.
RUN pip install -c constraints.txt ".[worker]" && python -c "import torch, notestream; print('torch', torch.__version__)"

# --- runtime-base: an unprivileged user and the process environment ---------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime-base
LABEL org.opencontainers.image.title="notestream" \
      org.opencontainers.image.description="Streaming ClinicalBERT risk scores from clinical notes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 notestream \
 && useradd --system --uid 10001 --gid notestream --home-dir /app --shell /usr/sbin/nologin notestream
COPY --chown=notestream:notestream deploy /app/deploy
# No progress bars, advisory warnings or colours from the libraries: stderr stays JSON lines (the worker
# sets the same defaults itself, for hosts without this image).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
    TQDM_DISABLE=1 \
    NO_COLOR=1 \
    TOKENIZERS_PARALLELISM=false \
    NOTESTREAM_LOG_JSON=true \
    NOTESTREAM_METRICS_PORT=9100
WORKDIR /app
EXPOSE 9100
# Liveness only (the process answers); readiness is /readyz, used by the orchestrator.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NOTESTREAM_METRICS_PORT', '9100'), timeout=2)"
ENTRYPOINT ["notestream"]

# --- light: alerts (default command), topics, replay -------------------------------------------------
FROM runtime-base AS light
COPY --from=build-light /opt/venv /opt/venv
LABEL io.notestream.role="light"
USER notestream:notestream
CMD ["alerts"]

# --- worker: the Faust worker and the inference engine (the default target) -----------------------
FROM runtime-base AS worker
ARG TORCH_VARIANT=cpu
COPY --from=build-worker /opt/venv /opt/venv
LABEL io.notestream.role="worker" io.notestream.torch-variant="${TORCH_VARIANT}"
USER notestream:notestream
CMD ["worker"]
