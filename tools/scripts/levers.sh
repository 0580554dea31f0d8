#!/usr/bin/env bash
# levers.sh NAME [--key=value ...]: one lever of the full recipe, measured short.
# configs/fashion_mnist_full.yaml in bf16 for LEVER_STEPS updates (default 3000 of 64,
# 3.2 epochs, ~20 min on an idle 2-core machine; the cosine is planned over them),
# with the overrides given, then scored on a validation split cut from train
# (eval --val-from-train 10000: the test set is not read):
#   both_last4  CLS + mean of the last 4 blocks: linear probe (100 L-BFGS iterations) and kNN-20
#   cls_last4   the last 4 blocks' CLS tokens: kNN-20
# The JSONs go to docs/studies/levers/NAME/ (committed: the run folder may not
# survive the machine); a lever whose JSONs exist is skipped, a run folder
# that exists is resumed. `levers.sh table` prints every lever measured.
# Environment: LEVER_STEPS, RUNS (run folders, default checkpoints/levers), BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-checkpoints/levers}
BIN=${BIN:-build/bin}
STEPS=${LEVER_STEPS:-3000}
DOCS=docs/studies/levers
TOKENIZER=data/tokenizers/fashion_mnist_p4_k512.h5

table() {
  /usr/bin/python3 - "$DOCS" <<'PY'
import json, os, sys
d = sys.argv[1]
print(f"{'lever (validation, 10k cut from train)':<40} {'probe both4':>11} {'kNN both4':>9} {'kNN cls4':>8}  overrides")
for name in sorted(os.listdir(d)):
    p = os.path.join(d, name)
    try:
        b = json.load(open(os.path.join(p, "both_last4.json")))
        c = json.load(open(os.path.join(p, "cls_last4.json")))
    except FileNotFoundError:
        continue
    args = open(os.path.join(p, "args.txt")).read().strip()
    print(f"{name:<40} {b['probe_top1']:>10.2f}% {b['knn_top1']:>8.2f}% {c['knn_top1']:>7.2f}%  {args}")
PY
}

[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ "$1" = table ] && { table; exit 0; }
name=$1; shift
out=$DOCS/$name
[ -s "$out/cls_last4.json" ] && { echo "levers: $name already measured ($out)"; table; exit 0; }
mkdir -p "$out" "$RUNS" "$(dirname "$TOKENIZER")"
[ -f "$TOKENIZER" ] || $BIN/build_tokenizer --shards "data/fashion-mnist/train-{000000..000005}.tar" --image-size 28 \
  --patch 4 --channels 1 --images-per-class 200 --k 512 --iters 20 --seed 0 --out "$TOKENIZER"
echo "--steps=$STEPS $*" > "$out/args.txt"
run=$RUNS/$name
ckpt=$run/ckpt_step$(printf %08d "$STEPS").h5
if [ ! -f "$ckpt" ]; then
  resume=(); [ -e "$run/latest" ] && resume=(--resume=auto)
  $BIN/train --config configs/fashion_mnist_full.yaml --tokenizer_path="$TOKENIZER" --output_dir="$RUNS" \
    --run_name="$name" --precision=bf16 --steps="$STEPS" --warmup_steps=100 --contrast_warmup_steps=250 \
    --knn_every=500 --save_every=500 --keep_every=0 "${resume[@]}" "$@"
fi
cp "$run/metrics.jsonl" "$out/metrics.jsonl"
VAL=(--val-from-train 10000 --last-blocks 4 --lambdas 1e-5,1e-4,1e-3,1e-2)
[ -s "$out/both_last4.json" ] || $BIN/eval "$ckpt" "${VAL[@]}" --features both --max-iter 100 --out "$out/both_last4.json"
$BIN/eval "$ckpt" "${VAL[@]}" --features cls --no-probe --out "$out/cls_last4.json"
table
