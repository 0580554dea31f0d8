#!/usr/bin/env bash
# Pretraining step (both views, all three losses): ours vs the PyTorch twin (issues 5 and 7).
set -euo pipefail
cd "$(dirname "$0")/.."
/usr/bin/python3 tools/bench_pretrain.py "$@"
