#!/usr/bin/env bash
# finetune_study.sh SEED: issue 25's fine-tuning target for one seed, each stage resumable and
# its result committed to docs/studies/finetune_final/seedSEED/ as it completes:
#   pretrain    configs/fashion_mnist_full.yaml for PRE_STEPS updates (the encoder)
#   frozen      its frozen linear probe (CLS + mean of the last 4 blocks), test set
#   finetune    configs/fashion_mnist_finetune.yaml from it, FT_EPOCHS epochs on all 60k, test set
#   random      the same recipe from random init, the same epochs
#   supervised  the same recipe from random init, given the pretraining's minutes on top
#               (its epochs scaled by (pretrain + fine-tune minutes) / fine-tune minutes)
# The fine-tuning recipe (epochs, lr, layer decay, drop path, mixup) is the one chosen on
# validation with finetune_levers.sh (docs/results.md), which also showed that pretraining length
# pays most: 15000 updates (~103 min idle) + 12 epochs (~37 min) fit the 150-minute budget.
# Environment: PRE_STEPS (default 15000), FT_EPOCHS (default 12), BIN, RUNS (default checkpoints).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
cd "$(dirname "$0")/../.."
seed=$1
BIN=${BIN:-build/bin}
RUNS=${RUNS:-checkpoints}
PRE_STEPS=${PRE_STEPS:-15000}
FT_EPOCHS=${FT_EPOCHS:-12}
TOKENIZER=data/tokenizers/fashion_mnist_p4_k512.h5
out=docs/studies/finetune_final/seed$seed
mkdir -p "$out" "$(dirname "$TOKENIZER")"
TEST=(--data_train="data/fashion-mnist/train-{000000..000005}.tar" --data_val=data/fashion-mnist/test-000000.tar)

# record RUN JSON: the run's last val_top1 and its training minutes
record() {
  /usr/bin/python3 - "$1/metrics.jsonl" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
top = [r["val_top1"] for r in rows if "val_top1" in r]
if not top:
    sys.exit(f"finetune_study: {sys.argv[1]} has no val_top1: the run did not finish")
last = [r for r in rows if "elapsed_s" in r][-1]  # the val_top1 line carries no time
json.dump({"test_top1": 100 * top[-1], "updates": last["step"], "minutes": last["elapsed_s"] / 60}, open(sys.argv[2], "w"),
          indent=1)
PY
}
minutes() { /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['minutes'])" "$1"; }

# finetune NAME JSON [--key=value ...]: one fine-tuning run on all of train, scored on the test set
finetune() {
  local name=$1 json=$2; shift 2
  [ -s "$json" ] && return
  local resume=(); [ -e "$RUNS/$name/latest" ] && resume=(--resume=auto)
  $BIN/train --config configs/fashion_mnist_finetune.yaml "${TEST[@]}" --output_dir="$RUNS" --run_name="$name" \
    --seed="$seed" --precision=bf16 --save_every=1000 "${resume[@]}" "$@"
  record "$RUNS/$name" "$json"
}

pre=$RUNS/ftpre_s$seed
final=$pre/ckpt_step$(printf %08d "$PRE_STEPS").h5
if [ ! -s "$out/pretrain.json" ]; then
  [ -f "$TOKENIZER" ] || $BIN/build_tokenizer --shards "data/fashion-mnist/train-{000000..000005}.tar" --image-size 28 \
    --patch 4 --channels 1 --images-per-class 200 --k 512 --iters 20 --seed 0 --out "$TOKENIZER"
  resume=(); [ -e "$pre/latest" ] && resume=(--resume=auto)
  [ -f "$final" ] || $BIN/train --config configs/fashion_mnist_full.yaml --tokenizer_path="$TOKENIZER" \
    --output_dir="$RUNS" --run_name="ftpre_s$seed" --seed="$seed" --steps="$PRE_STEPS" "${resume[@]}"
  [ -f "$final" ] || { echo "finetune_study: pretraining stopped before update $PRE_STEPS; rerun" >&2; exit 1; }
  /usr/bin/python3 - "$pre/metrics.jsonl" "$out/pretrain.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip() and "elapsed_s" in l]
json.dump({"updates": rows[-1]["step"], "minutes": rows[-1]["elapsed_s"] / 60}, open(sys.argv[2], "w"), indent=1)
PY
fi
[ -s "$out/frozen.json" ] || $BIN/eval "$final" --features both --last-blocks 4 --no-knn --lambdas 1e-5,1e-4,1e-3,1e-2 \
  --out "$out/frozen.json"
finetune ft_s$seed "$out/finetune.json" --finetune="$final" --epochs="$FT_EPOCHS"
finetune random_s$seed "$out/random.json" --epochs="$FT_EPOCHS"
sup_epochs=$(/usr/bin/python3 -c "import sys; p, f, e = map(float, sys.argv[1:]); print(max(1, round(e * (p + f) / f)))" \
  "$(minutes "$out/pretrain.json")" "$(minutes "$out/finetune.json")" "$FT_EPOCHS")
finetune supervised_s$seed "$out/supervised.json" --epochs="$sup_epochs"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
j = {k: json.load(open(f"{d}/{k}.json")) for k in ("pretrain", "frozen", "finetune", "random", "supervised")}
total = j['pretrain']['minutes'] + j['finetune']['minutes']
print(f"{d}: fine-tuned {j['finetune']['test_top1']:.2f}% (target 93.0) after {j['pretrain']['minutes']:.0f} + "
      f"{j['finetune']['minutes']:.0f} = {total:.0f} min ({'within' if total <= 150 else 'OVER'} 150); random init {j['random']['test_top1']:.2f}%; supervised "
      f"{j['supervised']['test_top1']:.2f}% in {j['supervised']['minutes']:.0f} min; frozen probe {j['frozen']['probe_top1']:.2f}%")
PY
