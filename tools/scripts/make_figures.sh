#!/usr/bin/env bash
# make_figures.sh RUN_DIR [N_IMAGES]: every picture of one pretraining run, into RUN_DIR/figures/:
#   training_curves.png   tools/scripts/plot_metrics.py on RUN_DIR/metrics.jsonl
#   reconstruction.png    build/bin/reconstruct on RUN_DIR/latest (first N_IMAGES test images, default 8;
#                         its data in reconstruction.h5), drawn by tools/scripts/plot_reconstruction.py
#   centroid_atlas.png    tools/scripts/tokenizer_atlas.py on the checkpoint's tokenizer (else RUN_DIR/tokenizer.h5)
#   features.png          tools/scripts/plot_features.py, when RUN_DIR/results/{random_init,pretrained}_features.h5
#                         exist (eval --save-features)
#   neighbours.png        tools/scripts/plot_neighbours.py: a few test images' nearest training images, random
#                         init against pretrained (the same features; shards from the run's config)
# Environment: TSNE_SECONDS (default 60; 0: PCA only) limits the feature scatter's t-SNE.
# A picture whose input is missing is skipped with a note; the others are still made. Prints the paths
# written. Exit status: 0 when every picture that had its input was written, else 1.
set -uo pipefail
if [ $# -lt 1 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  [ $# -lt 1 ] && exit 2 || exit 0
fi
RUN=$(realpath "$1")
N=${2:-8}
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
BIN=build/bin
FIG=$RUN/figures
[ -d "$RUN" ] || { echo "error: run folder '$1' does not exist" >&2; exit 1; }
mkdir -p "$FIG"
written=()
failed=0
note() { echo "make_figures: $*"; }
attempt() {  # attempt OUT.png command...: run it, record OUT.png or the failure
  local out=$1; shift
  if "$@" && [ -s "$out" ]; then written+=("$out"); else note "FAILED: $*"; failed=1; fi
}

# The checkpoint: `latest`, else the newest ckpt_step*.h5.
CKPT=""
if [ -e "$RUN/latest" ]; then CKPT=$(readlink -f "$RUN/latest")
else CKPT=$(ls "$RUN"/ckpt_step*.h5 2>/dev/null | sort | tail -n 1); fi

if [ -s "$RUN/metrics.jsonl" ]; then
  attempt "$FIG/training_curves.png" $PY tools/scripts/plot_metrics.py "$RUN/metrics.jsonl" "$FIG/training_curves.png"
else
  note "no $RUN/metrics.jsonl: training curves skipped"
fi

if [ -n "$CKPT" ]; then
  $BIN/reconstruct "$CKPT" --out "$FIG/reconstruction.h5" --n "$N"
  rc=$?
  if [ $rc -eq 0 ]; then
    attempt "$FIG/reconstruction.png" $PY tools/scripts/plot_reconstruction.py "$FIG/reconstruction.h5" "$FIG/reconstruction.png"
  elif [ $rc -eq 3 ]; then
    note "contrastive-only run: no reconstruction grid"
  else
    note "FAILED: reconstruct $CKPT (exit $rc)"; failed=1
  fi
else
  note "no checkpoint in $RUN: reconstruction grid skipped"
fi

TOK=""
if [ -n "$CKPT" ] && $PY -c 'import h5py, sys; sys.exit(0 if "tokenizer" in h5py.File(sys.argv[1], "r") else 1)' "$CKPT" 2>/dev/null; then
  TOK=$CKPT
elif [ -f "$RUN/tokenizer.h5" ]; then
  TOK=$RUN/tokenizer.h5
fi
if [ -n "$TOK" ]; then
  attempt "$FIG/centroid_atlas.png" $PY tools/scripts/tokenizer_atlas.py "$TOK" "$FIG/centroid_atlas.png"
else
  note "no tokenizer in the checkpoint or $RUN/tokenizer.h5: centroid atlas skipped"
fi

RND=$RUN/results/random_init_features.h5
PRE=$RUN/results/pretrained_features.h5
if [ -f "$RND" ] && [ -f "$PRE" ]; then
  names=""
  grep -qi 'fashion-mnist' "$RUN/config.yaml" 2>/dev/null && names="--class-names fashion-mnist"
  attempt "$FIG/features.png" $PY tools/scripts/plot_features.py "$RND" "$PRE" "$FIG/features.png" $names \
    --tsne-seconds "${TSNE_SECONDS:-60}"
else
  note "no $RND and $PRE (eval --save-features): feature scatter skipped"
fi

# the data the features came from: the run's data_train and data_val (shards)
key() { sed -n "s/^$1: *\"\{0,1\}\([^\"]*\)\"\{0,1\} *$/\1/p" "$RUN/config.yaml" 2>/dev/null | head -n 1; }
TRAIN_SRC=$(key data_train) TEST_SRC=$(key data_val)
if [ -f "$RND" ] && [ -f "$PRE" ] && [ -n "$TRAIN_SRC" ] && [ -n "$TEST_SRC" ] && [ "$(key data_format)" = shards ]; then
  attempt "$FIG/neighbours.png" $PY tools/scripts/plot_neighbours.py "$RND" "$PRE" "$TRAIN_SRC" "$TEST_SRC" "$FIG/neighbours.png"
else
  note "no features, or the data is not shards with data_val: kNN neighbours picture skipped"
fi

echo "figures of $RUN:"
for f in "${written[@]}"; do echo "  $f"; done
exit $failed
