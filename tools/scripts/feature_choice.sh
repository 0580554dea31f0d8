#!/usr/bin/env bash
# feature_choice.sh CKPT OUT_DIR [CONFIG]: which frozen feature to report, chosen on a
# validation split cut from train (eval --val-from-train 10000: the kNN bank and the probe
# use the other 50,000 training images; the test set is not read). For the checkpoint and
# for a random-init encoder of its shape (CONFIG, default configs/fashion_mnist.yaml):
# CLS or CLS + mean-pooled tokens, of the last block or of the last 4 blocks (DINO's n = 4).
# One JSON per variant in OUT_DIR, skipped when present (resumable), then a table.
# EVAL_EXTRA: more eval options for every run (e.g. --precision=fp32: the same features for all).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
CKPT=$1 OUT=$2 CONFIG=${3:-configs/fashion_mnist.yaml}
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
VAL="--val-from-train 10000 --lambdas 1e-6,1e-5,1e-4,1e-3 ${EVAL_EXTRA:-}"
for feat in cls both; do
  for nb in 1 4; do
    name=${feat}_last${nb}
    [ -s "$OUT/pretrained_$name.json" ] || build/bin/eval "$CKPT" $VAL --features $feat --last-blocks $nb --out "$OUT/pretrained_$name.json"
    [ -s "$OUT/random_init_$name.json" ] || build/bin/eval --random-init --config "$CONFIG" $VAL --features $feat --last-blocks $nb --out "$OUT/random_init_$name.json"
  done
done
[ -s "$OUT/raw_pixels.json" ] || build/bin/eval --raw-pixels --config "$CONFIG" --val-from-train 10000 --lambdas 1e-3,1e-2,1e-1 --out "$OUT/raw_pixels.json"
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
d = sys.argv[1]
print(f"{'validation (10k cut from train)':<34} {'probe':>7} {'kNN-20':>7}")
for f in sorted(os.listdir(d)):
    if f.endswith(".json"):
        r = json.load(open(os.path.join(d, f)))
        print(f"{f[:-5]:<34} {r['probe_top1']:>6.2f}% {r['knn_top1']:>6.2f}%")
PY
