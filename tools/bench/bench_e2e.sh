#!/usr/bin/env bash
# The system-level figures, in one run:
#  - end to end: the trainer's own images/s (data loader, tokenizer assignment,
#    masking, logging, checkpointing every 25 steps) against the bare
#    pretraining step (bench_pretrain) on the same config (Fashion-MNIST,
#    batch 256, all three losses, patch embedding trained on both sides).
#    Both sides are total images / total time over their timed steps (every
#    step counted, the checkpoint saves included), in ROUNDS alternating rounds;
#    the medians are compared;
#  - thread scaling: the ViT-Ti/16 224-px pretraining step on 1 and 2 threads,
#    ROUNDS alternating rounds, medians.
# Ends with `bench:` lines.
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-60}
ROUNDS=${ROUNDS:-3}
OUT=$(mktemp -d /tmp/ccvit-e2e.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
make --no-print-directory shards >/dev/null
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p"; }
median() { /usr/bin/python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

bare_runs=() e2e_runs=()
for r in $(seq "$ROUNDS"); do
  bare_runs+=("$(OMP_NUM_THREADS=2 build/bin/bench_pretrain --config fmnist_28 --steps 8 --warmup 1 | field images_per_s_mean)")
  rm -rf "$OUT/e2e"
  OMP_NUM_THREADS=2 build/bin/train --config configs/fashion_mnist.yaml --output_dir="$OUT" --run_name=e2e --steps="$STEPS" \
    --batch_size=256 --w_token=1 --w_pixel=1 --w_contrast=1 --contrast_warmup_steps=0 --freeze_patch_embed=false \
    --log_every=5 --save_every=25 --num_centroids=512 --tokenizer_images_per_class=50 --tokenizer_iters=5 \
    >"$OUT/train.log" 2>&1
  e2e_runs+=("$(/usr/bin/python3 - "$OUT/e2e/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = next(r for r in rows if r["step"] >= 10)   # after start-up (tokenizer build, first steps)
last = rows[-1]
print((last["step"] - first["step"]) * 256 / (last["elapsed_s"] - first["elapsed_s"]))
PY
)")
  echo "round $r: trainer ${e2e_runs[-1]} img/s, bare step ${bare_runs[-1]} img/s"
done
bare=$(median "${bare_runs[@]}") e2e=$(median "${e2e_runs[@]}")
wait_share=$(/usr/bin/python3 -c "import json,sys; r=[json.loads(l) for l in open('$OUT/e2e/metrics.jsonl')][1:]; print(max(x['data_wait_share'] for x in r))")
echo "end to end (medians of $ROUNDS rounds): trainer ${e2e} img/s vs bare step ${bare} img/s; worst data-wait share ${wait_share} (last round)"

one_runs=() two_runs=()
for r in $(seq "$ROUNDS"); do
  one_runs+=("$(OMP_NUM_THREADS=1 build/bin/bench_pretrain --config vit_ti_224 --steps 3 --warmup 1 | field images_per_s)")
  two_runs+=("$(OMP_NUM_THREADS=2 build/bin/bench_pretrain --config vit_ti_224 --steps 3 --warmup 1 | field images_per_s)")
  echo "round $r: 1 thread ${one_runs[-1]} img/s, 2 threads ${two_runs[-1]} img/s"
done
one=$(median "${one_runs[@]}") two=$(median "${two_runs[@]}")
echo "thread scaling (ViT-Ti/16 224 px pretraining step, medians of $ROUNDS rounds): 1 thread ${one} img/s, 2 threads ${two} img/s"
echo
/usr/bin/python3 -c "print(f'bench: e2e_trainer_vs_bare_step ours=$e2e peer=$bare ratio={$e2e/$bare:.3f} unit=images/s')"
/usr/bin/python3 -c "print(f'bench: thread_scaling_vit_ti_224 ours=$two peer=$one ratio={$two/$one:.3f} unit=images/s')"
