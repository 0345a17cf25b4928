# syntax=docker/dockerfile:1
# groundwatch: one image for every role, chosen by the command (docs/deploy.md):
#   docker build -t groundwatch .                                  # embedded scorer (ONNX Runtime)
#   docker build --build-arg EXTRAS=postgres -t groundwatch:lite . # lexical scorer only
#   docker run groundwatch worker | sampler | exporter | run | check-config | report ...
# Stage "build" installs the package and its extras into a virtualenv; the runtime stage copies
# only that virtualenv into a slim image (no pip cache, no sources, no build tools) and runs it
# as a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The optional dependency groups of pyproject.toml: "embedded" is the offline scorer the demo
# uses (ONNX Runtime and tokenizers; the model, exported to ONNX, ships inside the package:
# nothing is downloaded at run time, and there is no torch); "postgres" is the store's driver.
# EXTRAS=postgres builds an image that scores with "lexical" only.
ARG EXTRAS=embedded,postgres
# Only for EXTRAS with "torch" (the baseline runtime, export, training): torch must come from
# PyTorch's CPU index, as PyPI's Linux torch is the CUDA build, with several GB of nvidia-*
# wheels a CPU scorer never uses. pyproject.toml pins torch==2.13.0; the CPU index's 2.13.0+cpu
# satisfies that pin and, as the higher version, is the one pip installs.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/groundwatch
ENV PATH=/opt/groundwatch/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY groundwatch ./groundwatch
COPY evaluator ./evaluator
COPY workers ./workers
COPY metrics ./metrics
# Fail the build, not the first batch, if the scorer's runtime is missing or a CUDA torch
# slipped in.
# DL3013 (pin versions in pip): "." is this package; its pins are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" ".[${EXTRAS}]" \
 && case ",${EXTRAS}," in \
      *,embedded,*) python -c "import onnxruntime, tokenizers" ;; \
    esac \
 && case ",${EXTRAS}," in \
      *,torch,*) python -c "import torch, sys; sys.exit(torch.version.cuda is not None)" ;; \
    esac

FROM ${PYTHON_IMAGE} AS runtime
ARG EXTRAS=embedded,postgres
LABEL org.opencontainers.image.title="groundwatch" \
      org.opencontainers.image.description="Continuous quality evaluation of LLM/RAG apps from their logs" \
      org.opencontainers.image.licenses="Apache-2.0"
# DL3064 (sensitive data in ENV) reads TOKENIZERS_PARALLELISM as a token: it is a switch.
# hadolint ignore=DL3064
ENV PATH=/opt/groundwatch/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    RAGAS_DO_NOT_TRACK=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    GROUNDWATCH_CONFIG=/etc/groundwatch/groundwatch.toml \
    GROUNDWATCH__METRICS__MULTIPROC_DIR=/var/lib/groundwatch/prometheus \
    GROUNDWATCH_EXTRAS=${EXTRAS}
# The metrics directory exists in the image, owned by the runtime user, so that a named volume
# mounted there starts with that ownership (Docker copies it into a new volume).
RUN groupadd --gid 10001 groundwatch \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin groundwatch \
 && mkdir -p /var/lib/groundwatch/prometheus /etc/groundwatch \
 && chown -R 10001:10001 /var/lib/groundwatch
COPY --from=build /opt/groundwatch /opt/groundwatch
COPY configs/groundwatch.toml /etc/groundwatch/groundwatch.toml
COPY docker/entrypoint.sh /usr/local/bin/groundwatch-entrypoint
COPY docker/healthcheck.sh /usr/local/bin/groundwatch-healthcheck
# Numeric, so that an orchestrator's "run as non-root" check can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /home/groundwatch
EXPOSE 9464
# Every role beats every [health] interval_s (10 s) and its heartbeat lives 3 beats; the check
# runs `groundwatch health ROLE` for the role of the command (docker/healthcheck.sh). The start
# period covers a worker loading its model before its first batch.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["groundwatch-healthcheck"]
ENTRYPOINT ["groundwatch-entrypoint"]
CMD ["exporter"]
