#!/usr/bin/env bash
# Pretraining step (both views, all three losses): ours in bf16 and fp32 vs the PyTorch twin in
# fp32 and bf16; then ViT-S/16 and ViT-B/16 at 224 px, bf16 against bf16, with
# few steps (SCALING= skips them; SCALING=vit_s_224 keeps one).
set -euo pipefail
cd "$(dirname "$0")/../.."
/usr/bin/python3 tools/bench/bench_pretrain.py --scaling-configs "${SCALING-vit_s_224,vit_b_224}" "$@"
