#!/usr/bin/env bash
# The studies on Fashion-MNIST (docs/results.md): each stage trains
# under a wall-clock budget, evaluates with build/bin/eval (kNN-20 and linear
# probe, full 60k train / 10k test) and writes <run>/results.json. A stage whose
# run folder already has a checkpoint (`latest`) or a results file newer than it is reused:
# delete the folder to redo it. Run after `make all shards`.
#
#   tools/scripts/studies.sh full       the full recipe at its first length (NT-Xent weight 2, 7000 updates, ~92 min)
#   tools/scripts/studies.sh full_w4    the same at NT-Xent weight 4 (7000 updates, ~92 min): the weight alone as the lever
#   tools/scripts/studies.sh full_long  the full recipe as configured: 14000 updates (15 epochs, ~3 h): resumable, so it can
#                               span sessions; rerunning it continues from the run's newest checkpoint
#   tools/scripts/studies.sh full_30ep  the same for 28000 updates (29.9 epochs, ~6 h; the length lever for kNN),
#                               resumable in LONG_MINUTES (default 160) slices like full_long
#   tools/scripts/studies.sh full_k1024 the full recipe with K 1024 centroids: to update 2000 against full's (~30 min),
#                               then 7000 (~95 min in all, resumable), validation split only
#   tools/scripts/studies.sh full_teacher  the EMA teacher (teacher_momentum 0.99, InfoNCE T 0.2 and 0.5) to update 2000 of
#                               the 7000-update cosine, against full's checkpoints, validation split (~70 min)
#   tools/scripts/studies.sh full_w1    the same at NT-Xent weight 1 for 3800 updates (its earlier setting, ~50 min)
#   tools/scripts/studies.sh full025    the same with NT-Xent weight 0.25 for 4500 updates (its earlier setting, ~74 min)
#   tools/scripts/studies.sh long       the full recipe as pure CCViT for 10.7 epochs (10000 updates, 89 min)
#   tools/scripts/studies.sh twin       the default recipe in the PyTorch twin for the same minutes as ours
#   tools/scripts/studies.sh ablation   CCViT only / contrastive only / both, same minutes each
#   tools/scripts/studies.sh seeds      the default recipe with a second seed
#   tools/scripts/studies.sh finetune   fine-tune the full recipe's encoder vs the same ViT from scratch (needs 'full')
#   tools/scripts/studies.sh bf16       the default recipe for 1000 updates in fp32 and in bf16, seeds 0 and 1 (~25 min);
#                               tools/scripts/compare_precision.py compares the loss curves and the features, and
#                               writes docs/studies/bf16_vs_fp32.json
#   tools/scripts/studies.sh table      print every result found
#   tools/scripts/studies.sh all        every stage, then the table
#
# Environment: OUT (default checkpoints/studies), MINUTES (budget of the short
# runs, default 9, the main job's), FULL_MINUTES (default 90), FT_MINUTES (6),
# BIN (default build/bin).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-checkpoints/studies}
MINUTES=${MINUTES:-9}
FULL_MINUTES=${FULL_MINUTES:-90}
FT_MINUTES=${FT_MINUTES:-6}
TOKENIZER=data/tokenizers/fashion_mnist_p4_k512.h5
BIN=${BIN:-build/bin}   # a copy keeps a long run safe from rebuilds
LAMBDAS=1e-7,1e-6,1e-5,1e-4,1e-3,1e-2   # wider than the main job's: longer-trained encoders pick stronger L2
mkdir -p "$OUT"

need_tokenizer() {
  mkdir -p "$(dirname "$TOKENIZER")"
  [ -f "$TOKENIZER" ] && return
  $BIN/build_tokenizer --shards "data/fashion-mnist/train-{000000..000005}.tar" --image-size 28 --patch 4 \
    --channels 1 --images-per-class 200 --k 512 --iters 20 --seed 0 --out "$TOKENIZER"
}

# pretrain NAME CONFIG MINUTES [--key=value ...]: train (unless done), then evaluate.
pretrain() {
  local name=$1 config=$2 minutes=$3; shift 3
  local dir=$OUT/$name
  need_tokenizer
  if [ ! -e "$dir/latest" ]; then
    echo "==== $name: pretraining $config for $minutes min $*"
    $BIN/train --config "$config" --tokenizer_path="$TOKENIZER" --output_dir="$OUT" --run_name="$name" \
      --time_limit_minutes="$minutes" "$@"
  fi
  evaluate "$name" "$dir/latest"
}

evaluate() {
  local name=$1 ckpt=$2
  # reuse a result only if it is newer than the checkpoint it scores (a rerun replaces the checkpoint)
  [ "$OUT/$name/results.json" -nt "$(readlink -f "$ckpt")" ] && { echo "==== $name: reusing $OUT/$name/results.json"; return; }
  echo "==== $name: evaluating $ckpt"
  $BIN/eval "$ckpt" --lambdas "$LAMBDAS" --out "$OUT/$name/results.json"
}

# The same with DINO's linear-eval features: the last 4 blocks, each through the final norm.
evaluate_last4() { evaluate_variant "$1" last4 --last-blocks 4; }

# evaluate_variant NAME TAG [eval options]: the run's latest checkpoint into results_TAG.json.
evaluate_variant() {
  local name=$1 tag=$2; shift 2
  local out=$OUT/$name/results_$tag.json
  [ "$out" -nt "$(readlink -f "$OUT/$name/latest")" ] && { echo "==== $name: reusing $out"; return; }
  echo "==== $name: $tag ($*)"
  $BIN/eval "$OUT/$name/latest" --lambdas "$LAMBDAS" "$@" --out "$out"
}

# The last 4 blocks' features (CLS + mean each, and the CLS tokens alone, DINO's linear-eval
# feature) scored on 10k train images held out from the other 50k (eval --val-from-train): what a
# recipe or feature choice is made on, so that the test set is scored once per chosen feature.
# On the 7000-update weight-2 encoder: CLS + mean 88.95% probe / 85.11% kNN, CLS alone 88.24% / 85.48%.
evaluate_val() {
  evaluate_variant "$1" val_last4 --last-blocks 4 --val-from-train 10000
  evaluate_variant "$1" val_last4_cls --last-blocks 4 --features cls --val-from-train 10000
}

finetune() {
  local name=$1; shift
  local dir=$OUT/$name
  if [ ! -f "$dir/train.log" ] || ! grep -q "finetune: top-1" "$dir/train.log"; then
    echo "==== $name: fine-tuning for $FT_MINUTES min $*"
    rm -rf "$dir"; mkdir -p "$dir"
    # ~450 updates of batch 128 fit 6 minutes on an idle 2-core machine; the cosine ends inside the budget
    $BIN/train --config configs/fashion_mnist_finetune.yaml --output_dir="$OUT" --run_name="$name" \
      --steps=$((75 * FT_MINUTES)) --warmup_steps=$((8 * FT_MINUTES)) --time_limit_minutes="$FT_MINUTES" "$@" \
      2>&1 | tee "$dir/train.log.tmp"
    mv "$dir/train.log.tmp" "$dir/train.log"
  fi
}

# Validation-split evaluation of one run's checkpoint at update `step`: step run tag [eval options]
at_step() {
  local step=$1 run=$2 tag=$3; shift 3
  local out=$OUT/$run/results_${tag}_step${step}.json
  [ -f "$out" ] || $BIN/eval "$OUT/$run/ckpt_step$(printf %08d "$step").h5" --lambdas "$LAMBDAS" --last-blocks 4 \
    --val-from-train 10000 "$@" --out "$out"
}
need_full2000() {
  [ -e "$OUT/full_w2_s0/ckpt_step00002000.h5" ] || { echo "error: run '$0 full' first (its update-2000 checkpoint)" >&2; exit 1; }
}

# The full recipe's first length: 7000 updates (7.47 epochs); the config now plans 14000 (full_long).
stage_full() { pretrain full_w2_s0 configs/fashion_mnist_full.yaml 125 --steps=7000; evaluate_last4 full_w2_s0; }

# More centroids: the full recipe with a K 1024 tokenizer (same sampling, 20 iterations, seed 0), scored on
# the validation split only. First to update 2000 against full's update-2000 checkpoint (~30 min), then on to
# 7000 (resumable: rerunning the stage continues from the run's newest checkpoint).
stage_full_k1024() {
  local tok=data/tokenizers/fashion_mnist_p4_k1024.h5 name=full_k1024_s0
  need_full2000
  [ -f "$tok" ] || $BIN/build_tokenizer --shards "data/fashion-mnist/train-{000000..000005}.tar" --image-size 28 \
    --patch 4 --channels 1 --images-per-class 200 --k 1024 --iters 20 --seed 0 --out "$tok"
  local train=($BIN/train --config configs/fashion_mnist_full.yaml --tokenizer_path="$tok" --num_centroids=1024
               --output_dir="$OUT" --run_name="$name" --steps=7000 --resume=auto)
  [ -e "$OUT/$name/ckpt_step00002000.h5" ] || "${train[@]}" --stop_at_step=2000
  at_step 2000 "$name" val_last4_cls --features cls --no-probe
  at_step 2000 full_w2_s0 val_last4_cls --features cls --no-probe
  [ -e "$OUT/$name/ckpt_step00007000.h5" ] || "${train[@]}"
  evaluate_val "$name"
}

# The weight alone as the lever: the full recipe's length at NT-Xent weight 4.
stage_full_w4() {
  pretrain full_w4_s0 configs/fashion_mnist_full.yaml 125 --w_contrast=4 --steps=7000
  evaluate_last4 full_w4_s0
}

# Length as the lever: the full recipe for $1 updates (default 14000, 15 epochs; full_30ep: 28000). LONG_W
# sets the NT-Xent weight (default 2). Each call trains at most LONG_MINUTES (default 160) and stops with a
# checkpoint; the next call resumes it bit-exactly.
stage_full_long() {
  local w=${LONG_W:-2} steps=${1:-14000}
  local name=full_long_w${w}_s0
  [ "$steps" = 14000 ] || name=full_long$((steps / 1000))k_w${w}_s0
  local dir=$OUT/$name
  need_tokenizer
  last_step() { if [ -f "$dir/metrics.jsonl" ]; then tail -n 1 "$dir/metrics.jsonl" | sed -n 's/^{"step": \([0-9]*\).*/\1/p'; fi; }
  local done_steps
  done_steps=$(last_step)
  if [ "${done_steps:-0}" -lt "$steps" ]; then
    echo "==== $name: pretraining (at step ${done_steps:-0} of $steps) for at most ${LONG_MINUTES:-160} min"
    $BIN/train --config configs/fashion_mnist_full.yaml --tokenizer_path="$TOKENIZER" --output_dir="$OUT" \
      --run_name="$name" --w_contrast="$w" --steps="$steps" --resume=auto --time_limit_minutes="${LONG_MINUTES:-160}"
    done_steps=$(last_step)
    [ "${done_steps:-0}" -ge "$steps" ] || { echo "==== $name: stopped at step $done_steps; run the stage again to resume"; return; }
  fi
  evaluate_val "$name"
  evaluate "$name" "$dir/latest"
  evaluate_last4 "$name"
  evaluate_variant "$name" last4_cls --last-blocks 4 --features cls
}

# The EMA teacher as the contrastive lever (teacher_momentum 0.99, InfoNCE at T 0.2 and at NT-Xent's 0.5;
# the student runs view1 alone): trained to update 2000 of the full recipe's 7000-update cosine and compared there with
# full_w2_s0's update-2000 checkpoint, on the validation split (kNN on the last 4 CLS tokens, the
# student's and the teacher's; the probe on CLS + mean).
stage_full_teacher() {
  need_full2000
  need_tokenizer
  local T name
  for T in 0.2 0.5; do  # T 0.5 is NT-Xent's: at 0.2 both the pairing and T differed from full_w2_s0
    name=full_teacher_s0; [ "$T" = 0.2 ] || name=full_teacher_t05_s0
    [ -e "$OUT/$name/ckpt_step00002000.h5" ] ||
      $BIN/train --config configs/fashion_mnist_full.yaml --tokenizer_path="$TOKENIZER" --output_dir="$OUT" \
        --run_name="$name" --steps=7000 --teacher_momentum=0.99 --temperature=$T --stop_at_step=2000 --resume=auto
    at_step 2000 "$name" val_last4_cls --features cls --no-probe
    at_step 2000 "$name" val_last4_cls_teacher --features cls --no-probe --teacher
  done
  # equal wall-clock: the teacher's step is ~1.42x faster per image, so its update 2000 ~ NT-Xent's 1400
  at_step 1000 full_teacher_t05_s0 val_last4_cls --features cls --no-probe
  for s in 1000 2000; do at_step $s full_w2_s0 val_last4_cls --features cls --no-probe; done
  at_step 2000 full_teacher_s0 val_last4
  at_step 2000 full_w2_s0 val_last4
}

# Its setting before: NT-Xent weight 1 for 3800 updates (4.05 epochs).
stage_full_w1() {
  pretrain full_w1_s0 configs/fashion_mnist_full.yaml 62 --w_contrast=1 --steps=3800
  evaluate_last4 full_w1_s0
}

# The earlier setting of the full recipe (its first measured run, full_s0; the fine-tune study starts from it).
stage_full025() {
  pretrain full_s0 configs/fashion_mnist_full.yaml "$FULL_MINUTES" --w_contrast=0.25 --steps=4500
  evaluate_last4 full_s0
}

# More epochs as the lever (the full recipe's losses were still falling): pure CCViT, which is ~1.8x as
# fast per image as two views, for 10000 updates of 64 (10.7 epochs, 89 min on the idle machine).
stage_long() {
  pretrain full_ccvit_s0 configs/fashion_mnist_full.yaml 120 --w_contrast=0 --contrast_warmup_steps=0 --steps=10000
  evaluate_last4 full_ccvit_s0
}

stage_ablation() {
  # each config's cosine (`steps`) is sized to what fits 9 minutes on an idle 2-core machine: one view
  # (CCViT only) is ~1.8x faster per image than two, and two views without the CCViT heads ~1.15x
  pretrain both_s0 configs/fashion_mnist.yaml "$MINUTES"
  pretrain ccvit_s0 configs/fashion_mnist_ccvit.yaml "$MINUTES"
  pretrain contrastive_s0 configs/fashion_mnist_contrastive.yaml "$MINUTES"
}

stage_seeds() {
  pretrain both_s0 configs/fashion_mnist.yaml "$MINUTES"
  pretrain both_s1 configs/fashion_mnist.yaml "$MINUTES" --seed=1
}

# Precision as the only difference: equal updates (no time limit), each run scored once on the test split.
stage_bf16() {
  for seed in 0 1; do
    for p in fp32 bf16; do
      pretrain "prec_${p}_s$seed" configs/fashion_mnist.yaml 0 --steps=1000 --seed=$seed --precision=$p
    done
  done
  /usr/bin/python3 tools/scripts/compare_precision.py "$OUT" docs/studies/bf16_vs_fp32.json
}

stage_twin() {
  pretrain both_s0 configs/fashion_mnist.yaml "$MINUTES"   # ours, and the layout the twin's weights go into
  local dir=$OUT/twin_s0
  mkdir -p "$dir"
  if [ ! -f "$dir/twin.h5" ]; then
    # the twin gets exactly the minutes our run trained (ours may end its cosine before $MINUTES)
    local ours
    ours=$(/usr/bin/python3 -c 'import json,sys; print(round([json.loads(l) for l in open(sys.argv[1])][-1]["elapsed_s"] / 60, 2))' \
      "$OUT/both_s0/metrics.jsonl")
    echo "==== twin_s0: the PyTorch twin of configs/fashion_mnist.yaml for $ours min (ours trained $ours min)"
    /usr/bin/python3 tools/reference/twin_pretrain.py --config configs/fashion_mnist.yaml --tokenizer "$TOKENIZER" \
      --template "$OUT/both_s0/latest" --minutes "$ours" --out "$dir/twin.h5" --metrics "$dir/metrics.jsonl" \
      2>&1 | tee "$dir/train.log"
  fi
  evaluate twin_s0 "$dir/twin.h5"
}

stage_finetune() {
  [ -e "$OUT/full_w2_s0/latest" ] || { echo "error: $OUT/full_w2_s0/latest is missing; run '$0 full' first" >&2; exit 1; }
  finetune ft_full --finetune="$OUT/full_w2_s0/latest"
  finetune ft_scratch
  # the encoder of the full recipe's first setting, when that run is there (earlier README row)
  if [ -e "$OUT/full_s0/latest" ]; then finetune ft_pretrained --finetune="$OUT/full_s0/latest"; fi
}

stage_table() {
  /usr/bin/python3 - "$OUT" <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
print(f"{'run':<22} {'updates':>8} {'minutes':>8} {'linear probe':>13} {'kNN-20':>8}")
for f in sorted(glob.glob(os.path.join(out, "*", "results*.json"))):
    r = json.load(open(f))
    tag = os.path.basename(f)[len("results"):-len(".json")].lstrip("_")
    run = os.path.basename(os.path.dirname(f)) + (" " + tag if tag else "")
    mins = "-"
    m = os.path.join(os.path.dirname(f), "metrics.jsonl")
    if os.path.exists(m):
        lines = [json.loads(l) for l in open(m) if l.strip()]
        el = [l.get("elapsed_s") for l in lines if l.get("elapsed_s") is not None]
        mins = f"{el[-1] / 60:.1f}" if el else "-"
    print(f"{run:<22} {r['step']:>8} {mins:>8} {r['probe_top1']:>12.2f}% {r['knn_top1']:>7.2f}%")
for f in sorted(glob.glob(os.path.join(out, "ft_*", "train.log"))):
    m = re.search(r"finetune: top-1 on \S+: ([0-9.]+)%", open(f).read())
    print(f"{os.path.basename(os.path.dirname(f)):<22} fine-tune top-1 {m.group(1) if m else '?'}%")
PY
}

case "${1:-}" in
  full) stage_full ;;
  long) stage_long ;;
  full025) stage_full025 ;;
  full_w1) stage_full_w1 ;;
  full_w4) stage_full_w4 ;;
  full_long) stage_full_long ;;
  full_30ep) stage_full_long 28000 ;;
  full_k1024) stage_full_k1024 ;;
  full_teacher) stage_full_teacher ;;
  twin) stage_twin ;;
  ablation) stage_ablation ;;
  seeds) stage_seeds ;;
  bf16) stage_bf16 ;;
  finetune) stage_finetune ;;
  table) stage_table ;;
  all) stage_full; stage_full_w1; stage_full025; stage_long; stage_twin; stage_ablation; stage_finetune; stage_seeds; stage_table ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
