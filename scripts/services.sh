#!/usr/bin/env bash
# Loopback S3 (moto), S3 fault proxy and HDFS in the background, shared by test runs:
#   bash scripts/services.sh start     # writes .cache/services.env
#   eval "$(bash scripts/services.sh env)"   # pytest fixtures then reuse these servers
#   bash scripts/services.sh stop      # ends them by pid
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${VENV:-.venv}/bin/cloudrec" services "$@"
