# syntax=docker/dockerfile:1
# Multi-stage: build wheels in a full image, run from a slim one as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY evaluator ./evaluator
COPY workers ./workers
COPY metrics ./metrics
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    RAGAS_DO_NOT_TRACK=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    GROUNDWATCH_CONFIG=/etc/groundwatch/groundwatch.toml
# The image carries the core only (no torch): it scores with lexical unless you build it with
# the [embedded] extra and a CPU torch wheel, and drop this override.
ENV GROUNDWATCH__SCORING__SCORER=lexical
RUN useradd --create-home --uid 10001 groundwatch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY configs/groundwatch.toml /etc/groundwatch/groundwatch.toml
USER groundwatch
WORKDIR /home/groundwatch
EXPOSE 9464
# The exporter's health endpoint; for worker and sampler containers compose overrides this.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["groundwatch"]
CMD ["exporter"]
