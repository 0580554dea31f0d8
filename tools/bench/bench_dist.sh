#!/usr/bin/env bash
# Data parallelism on this machine: 1 rank x 2 threads against 2 ranks x 1 thread, and the
# overlapped gradient reduction against the blocking one (tools/bench/dist_runs.py --help).
set -euo pipefail
cd "$(dirname "$0")/../.."
make --no-print-directory shards shards-imagenet >/dev/null
exec /usr/bin/python3 tools/bench/dist_runs.py "$@"
