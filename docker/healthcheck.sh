#!/bin/sh
# The image's HEALTHCHECK: `groundwatch health ROLE` for the role this container runs
# ($GROUNDWATCH_ROLE, else what docker/entrypoint.sh noted). Docker reads exit 0 as healthy and
# 1 as unhealthy (2 is reserved), so every failure, an unknown role included, exits 1.
role="${GROUNDWATCH_ROLE:-}"
if [ -z "$role" ] && [ -r "${GROUNDWATCH_ROLE_FILE:-/tmp/groundwatch.role}" ]; then
  role="$(cat "${GROUNDWATCH_ROLE_FILE:-/tmp/groundwatch.role}")"
fi
if [ -z "$role" ]; then
  echo "no role: this container runs no sampler, worker or exporter (set GROUNDWATCH_ROLE)"
  exit 1
fi
groundwatch health "$role" || exit 1
