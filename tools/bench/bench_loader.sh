#!/bin/bash
# bench_loader.sh: our loader vs PIL + torchvision in a DataLoader, on the
# 1000 ImageNet sample photos: decode + RandomResizedCrop 224 (bicubic) + flip
# + normalise, same number of decode threads / workers. Then the shared-core
# case: an OpenMP compute loop (the trainer's step) with the decoders running.
# `make bench` holds /tmp/ccvit-bench.lock around this script.
set -e
cd "$(dirname "$0")/../.."
make -s all shards-imagenet >/dev/null
SHARDS="data/imagenet-sample/train-{000000..000003}.tar"
PHOTOS=../shared/data/imagenet-sample
N=${BENCH_IMAGES:-2000}
# Runs a command, shows its output on stderr and keeps it in $out for parsing. Not
# `tee /dev/stderr`: that opens the file behind stderr anew, from offset 0 and truncating,
# so `make bench > log 2>&1` lost every line written before it. A failure stops the script.
run_shown() { out=$("$@"); printf '%s\n' "$out" >&2; }
lines=()
for t in 1 2; do
    run_shown ./build/bin/bench_loader "$SHARDS" $t $N
    ours=$(sed -n 's/.*s with .* threads: \([0-9.]*\) images\/s.*/\1/p' <<<"$out")
    run_shown /usr/bin/python3 tools/bench/bench_loader_peer.py $PHOTOS $t $N
    peer=$(sed -n 's/.*workers: \([0-9.]*\) images\/s.*/\1/p' <<<"$out")
    ratio=$(/usr/bin/python3 -c "print(f'{$ours/$peer:.2f}')")
    echo "threads=$t: ours $ours images/s, peer $peer images/s, ratio $ratio"
    lines+=("bench: loader_rrc224_bicubic_${t}thread ours=$ours peer=$peer ratio=$ratio unit=images/s")
done
# Shared cores: a 2-thread OpenMP step of ~400 ms per batch of 32 (a small
# ViT step on 2 cores is slower still) with 2 decode threads at nice 0 and at
# nice 5 (the default): the step's slowdown and the share of time spent waiting.
for nice in 0 5; do
    out=$(OMP_NUM_THREADS=2 ./build/bin/bench_loader --shared "$SHARDS" 2 $nice 400 12 32)
    echo "$out" | grep -v '^bench:'
    lines+=("$(echo "$out" | grep '^bench:')")
done
printf '%s\n' "${lines[@]}"
