#!/usr/bin/env bash
# Issue 7's system-level figures, in one run:
#  - end to end: the trainer's own images/s (data loader, tokenizer assignment,
#    masking, logging, checkpointing every 25 steps) against the bare
#    pretraining step (bench_pretrain) on the same config (Fashion-MNIST,
#    batch 256, all three losses);
#  - thread scaling: the ViT-Ti/16 224-px pretraining step on 1 and 2 threads.
# Ends with `bench:` lines.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-60}
OUT=$(mktemp -d /tmp/ccvit-e2e.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
make --no-print-directory shards >/dev/null

bare=$(build/bin/bench_pretrain --config fmnist_28 --steps 4 --warmup 1 | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
build/bin/train --config configs/fashion_mnist.yaml --output_dir="$OUT" --run_name=e2e --steps="$STEPS" \
  --batch_size=256 --w_token=1 --w_pixel=1 --w_contrast=1 --contrast_warmup_steps=0 --log_every=5 --save_every=25 \
  --num_centroids=512 --tokenizer_images_per_class=50 --tokenizer_iters=5 >"$OUT/train.log" 2>&1
e2e=$(/usr/bin/python3 - "$OUT/e2e/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows = [r for r in rows if r["step"] > 10]   # skip start-up (tokenizer build, first steps)
print(sum(r["images_per_s"] for r in rows) / len(rows))
PY
)
wait_share=$(/usr/bin/python3 -c "import json,sys; r=[json.loads(l) for l in open('$OUT/e2e/metrics.jsonl')][1:]; print(max(x['data_wait_share'] for x in r))")
echo "end to end: trainer ${e2e} img/s vs bare step ${bare} img/s; worst data-wait share ${wait_share}"

one=$(OMP_NUM_THREADS=1 build/bin/bench_pretrain --config vit_ti_224 --steps 2 --warmup 1 | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
two=$(OMP_NUM_THREADS=2 build/bin/bench_pretrain --config vit_ti_224 --steps 2 --warmup 1 | sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p')
echo "thread scaling (ViT-Ti/16 224 px pretraining step): 1 thread ${one} img/s, 2 threads ${two} img/s"
echo
/usr/bin/python3 -c "print(f'bench: e2e_trainer_vs_bare_step ours=$e2e peer=$bare ratio={$e2e/$bare:.3f} unit=images/s')"
/usr/bin/python3 -c "print(f'bench: thread_scaling_vit_ti_224 ours=$two peer=$one ratio={$two/$one:.3f} unit=images/s')"
