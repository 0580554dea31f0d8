#!/usr/bin/env bash
# The main job (`make run`): Fashion-MNIST shards -> centroid tokenizer ->
# pretraining under a time budget -> frozen-feature evaluation -> a table of
# raw pixels, a random-init encoder of the same shape, and this run.
# Stages that already have their output (shards, tokenizer) are reused.
#
# Environment: CONFIG (default configs/fashion_mnist.yaml), TRAIN_MINUTES
# (default 10: a guard; the config's 2200 updates take ~8.6 min on an idle
# machine, so that the whole job stays under 20 minutes on 2 cores), EXTRA
# (more --key=value for the trainer), EVAL_ARGS (more eval options, e.g.
# "--limit-train 1000 --limit-test 500" for a quick look), OUT (run folders,
# default checkpoints), BASELINES (cached baselines, default data/baselines).
# tests/test_main_job.py runs the whole chain with a tiny model and budget.
set -euo pipefail
# paths given relative to where the job was started, before moving to the repository
for v in CONFIG OUT BASELINES; do
  if [ -n "${!v:-}" ]; then printf -v "$v" '%s' "$(realpath -m -- "${!v}")"; fi
done
cd "$(dirname "$0")/../.."

CONFIG=${CONFIG:-configs/fashion_mnist.yaml}
TRAIN_MINUTES=${TRAIN_MINUTES:-10}
EXTRA=${EXTRA:-}
EVAL_ARGS=${EVAL_ARGS:-}
OUT=${OUT:-checkpoints}
BIN=build/bin
RUN_NAME=main-$(date -u +%Y%m%d-%H%M%S)
TOKENIZER=data/tokenizers/fashion_mnist_p4_k512.h5
RESULTS=$OUT/$RUN_NAME/results
T0=$(date +%s)
stage() { printf '\n==== [%4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

stage "1/6 shards (make shards; reused when present)"
make --no-print-directory shards

stage "2/6 centroid tokenizer -> $TOKENIZER"
if [ -f "$TOKENIZER" ]; then
  echo "reusing $TOKENIZER"
else
  mkdir -p "$(dirname "$TOKENIZER")"
  $BIN/build_tokenizer --shards "data/fashion-mnist/train-{000000..000005}.tar" --image-size 28 --patch 4 \
    --channels 1 --images-per-class 200 --k 512 --iters 20 --seed 0 --out "$TOKENIZER"
fi
# the atlas whenever it is missing: a run interrupted between the two steps must not lose it for good
if [ ! -f "${TOKENIZER%.h5}_atlas.png" ]; then
  /usr/bin/python3 tools/scripts/tokenizer_atlas.py "$TOKENIZER" "${TOKENIZER%.h5}_atlas.png" || echo "warning: the centroid atlas failed (see above)"
fi

stage "3/6 pretraining for $TRAIN_MINUTES minutes ($CONFIG)"
$BIN/train --config "$CONFIG" --tokenizer_path="$TOKENIZER" --output_dir="$OUT" --run_name="$RUN_NAME" \
  --time_limit_minutes="$TRAIN_MINUTES" $EXTRA
ln -sfn "$RUN_NAME" "$OUT/main-latest"
CKPT=$(readlink -f "$OUT/$RUN_NAME/latest")
mkdir -p "$RESULTS"

stage "4/6 evaluation: kNN-20 and linear probe on the 10k test images"
# Features of the encoders (random init and this run): CLS + mean of the patch tokens of the
# last 4 blocks, each through the final norm (DINO's n = 4), for both metrics: of CLS or
# CLS + mean, last block or last 4, it scored best on both on a validation split cut from
# train (tools/scripts/feature_choice.sh; docs/results.md). The refit's iterations are capped
# to keep the job inside its 20 minutes.
FEAT="--features both --last-blocks 4 --max-iter 100"
# The two baselines depend only on the config, the trainer's overrides and the
# eval options, so they are computed once and reused (BASELINES/, keyed by a
# hash of those). L2 grids: the range each feature kind picks from (raw pixels
# ~1e-2, ViT features ~1e-5).
# The eval protocol's sources are part of the key: a changed protocol recomputes them.
BASE=${BASELINES:-data/baselines}/$( (cat "$CONFIG"; echo "$EXTRA"; echo "$EVAL_ARGS $FEAT"; cat tools/programs/eval.c trainer/probe.c trainer/frozen_features.c) | sha1sum | cut -c1-12)
mkdir -p "$BASE"
# a cached result is reused only if it reads back (eval writes it atomically; an older one may be cut short)
valid_json() { /usr/bin/python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }
for f in raw_pixels.json random_init.json; do
  if [ -f "$BASE/$f" ] && ! valid_json "$BASE/$f"; then echo "recomputing $BASE/$f: it does not read back"; rm -f "$BASE/$f"; fi
done
[ -f "$BASE/random_init_features.h5" ] || rm -f "$BASE/random_init.json"
if [ ! -f "$BASE/raw_pixels.json" ]; then
  $BIN/eval --raw-pixels --config "$CONFIG" $EXTRA $EVAL_ARGS --lambdas 1e-3,1e-2,1e-1 --out "$BASE/raw_pixels.json"
fi
if [ ! -f "$BASE/random_init.json" ]; then
  $BIN/eval --random-init --config "$CONFIG" $EXTRA $EVAL_ARGS $FEAT --lambdas 1e-7,1e-6,1e-5,1e-4 --out "$BASE/random_init.json" \
    --save-features "$BASE/random_init_features.h5"
fi
cp "$BASE/raw_pixels.json" "$BASE/random_init.json" "$BASE/random_init_features.h5" "$RESULTS/"
$BIN/eval "$CKPT" $EVAL_ARGS $FEAT --lambdas 1e-7,1e-6,1e-5,1e-4 --out "$RESULTS/pretrained.json" \
  --save-features "$RESULTS/pretrained_features.h5"

stage "5/6 figures: training curves, reconstructions, centroid atlas, feature scatter"
TSNE_SECONDS=${TSNE_SECONDS:-30} bash tools/scripts/make_figures.sh "$OUT/$RUN_NAME" || echo "warning: some figures failed (see above)"

stage "6/6 results"
/usr/bin/python3 - "$RESULTS" "$CKPT" <<'PY'
import json, os, sys
res, ckpt = sys.argv[1], sys.argv[2]
rows = [("raw pixels", "raw_pixels.json"), ("random-init encoder", "random_init.json"),
        (f"this run ({os.path.basename(ckpt)})", "pretrained.json")]
print(f"{'encoder':<44} {'linear probe':>12} {'kNN-20 top-1':>13}")
for label, f in rows:
    r = json.load(open(os.path.join(res, f)))
    print(f"{label:<44} {r['probe_top1']:>11.2f}% {r['knn_top1']:>12.2f}%")  # eval writes percentages
print("features: raw pixels as they are; the encoders' CLS + mean-pooled patch tokens of the last 4 blocks,\n"
      "each through the final norm, for both metrics: the best choice for both on a validation split cut\n"
      "from train (docs/results.md). Test split scored once.")
PY
echo "results: $RESULTS; figures: $OUT/$RUN_NAME/figures; metrics: $OUT/$RUN_NAME/metrics.jsonl"
