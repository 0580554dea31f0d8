#!/usr/bin/env bash
# ViT training step: ours vs the PyTorch twin.
set -euo pipefail
cd "$(dirname "$0")/../.."
/usr/bin/python3 tools/bench/bench_vit.py "$@"
