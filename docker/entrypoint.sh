#!/bin/sh
# The image's entrypoint: `docker run groundwatch ROLE [options]` runs `groundwatch ROLE ...`.
# It also notes which role this container runs, for docker/healthcheck.sh: a HEALTHCHECK runs
# as a separate process that sees the image's environment, not this one's.
set -eu
role_file="${GROUNDWATCH_ROLE_FILE:-/tmp/groundwatch.role}"
role=""
for arg in "$@"; do
  case "$arg" in
    sampler|worker|exporter) role="$arg"; break ;;
    run) role="sampler"; break ;;  # all-in-one: the sampler's loop is this process's own
    -*) ;;                          # a global option (--config X, --log-level Y) before it
  esac
done
if [ -n "$role" ]; then
  # A read-only root file system: set GROUNDWATCH_ROLE instead (the check reads it first).
  printf '%s\n' "$role" > "$role_file" 2>/dev/null || true
fi
exec groundwatch "$@"
