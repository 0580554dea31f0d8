#!/usr/bin/env bash
# finetune_levers.sh NAME INIT [--key=value ...]: one fine-tuning recipe, scored on
# the validation split (configs/fashion_mnist_finetune.yaml: train-000000..4 train,
# train-000005 validates; the test set is not read). INIT is a pretraining
# checkpoint or `scratch` (random init). Runs in bf16; the overrides set the recipe
# (--epochs=, --lr=, --layer_decay=, --drop_path=, ...).
# The result (validation top-1, updates, minutes, arguments) goes to
# docs/studies/finetune/NAME.json, committed; a recipe whose JSON exists is
# skipped, a run folder that exists is resumed. `finetune_levers.sh table` prints them.
# Environment: RUNS (run folders, default checkpoints/finetune_levers), BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-checkpoints/finetune_levers}
BIN=${BIN:-build/bin}
DOCS=docs/studies/finetune

table() {
  /usr/bin/python3 - "$DOCS" <<'PY'
import json, os, sys
d = sys.argv[1]
print(f"{'fine-tuning recipe (validation: train-000005)':<36} {'top-1':>7} {'updates':>7} {'min':>5}  init, overrides")
for f in sorted(os.listdir(d)):
    if f.endswith(".json"):
        r = json.load(open(os.path.join(d, f)))
        print(f"{f[:-5]:<36} {r['val_top1']:>6.2f}% {r['updates']:>7} {r['minutes']:>5.1f}  {r['init']} {r['args']}")
PY
}

[ $# -ge 1 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ "$1" = table ] && { table; exit 0; }
[ $# -ge 2 ] || { echo "usage: $0 NAME INIT|scratch [--key=value ...]" >&2; exit 2; }
name=$1 init=$2; shift 2
out=$DOCS/$name.json
[ -s "$out" ] && { echo "finetune_levers: $name already measured ($out)"; table; exit 0; }
mkdir -p "$DOCS" "$RUNS"
from=(); [ "$init" = scratch ] || from=(--finetune="$init")
run=$RUNS/$name
resume=(); [ -e "$run/latest" ] && resume=(--resume=auto)
$BIN/train --config configs/fashion_mnist_finetune.yaml --output_dir="$RUNS" --run_name="$name" --precision=bf16 \
  --save_every=1000 "${from[@]}" "${resume[@]}" "$@"
/usr/bin/python3 - "$run/metrics.jsonl" "$out" "$init" "$*" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
top = [r for r in rows if "val_top1" in r]
if not top:
    sys.exit(f"finetune_levers: {sys.argv[1]} has no val_top1 line: the run did not finish")
last = [r for r in rows if "elapsed_s" in r][-1]  # the val_top1 line carries no time
json.dump({"val_top1": 100 * top[-1]["val_top1"], "updates": last["step"], "minutes": last["elapsed_s"] / 60,
           "init": sys.argv[3], "args": sys.argv[4]}, open(sys.argv[2], "w"), indent=1)
PY
table
