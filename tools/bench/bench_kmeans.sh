#!/bin/bash
# k-means side by side: ours vs faiss 1.7.3 vs scikit-learn KMeans(lloyd,
# n_init=1), same data, same initial centroids (ours, dumped), same iteration
# count, 2 threads. Workloads: (a) imagenet-sample 16x16 RGB patches of the
# 224-px centre crops, K=1024; (b) Fashion-MNIST 4x4 patches, K=512. Ends with
# `bench:` lines and writes the centroid atlases to out/bench_kmeans/.
# Run it under the lock: flock /tmp/ccvit-bench.lock bash tools/bench/bench_kmeans.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
OUT=out/bench_kmeans
PY=/usr/bin/python3
BIN=build/bin/bench_kmeans
ITERS_A=${ITERS_A:-10}
ITERS_B=${ITERS_B:-25}
[ -x $BIN ] || make $BIN
mkdir -p $OUT
$PY tools/bench/bench_kmeans_peer.py prep $OUT
$BIN sgemm > $OUT/sgemm.json

workload() {  # name d k iters seeding patch channels
    local name=$1 d=$2 k=$3 iters=$4 seeding=$5 patch=$6 ch=$7
    echo "== $name: ours (seeding $seeding), $iters iterations"
    $BIN run --train $OUT/$name.train.f32 --d $d --k $k --iters $iters --seeding $seeding \
        --init-out $OUT/$name.init.f32 --out $OUT/$name.ours.f32 \
        --h5-out $OUT/$name.tokenizer.h5 --patch $patch --channels $ch > $OUT/$name.ours.json
    echo "== $name: faiss and scikit-learn from the same initial centroids"
    $PY tools/bench/bench_kmeans_peer.py peers $OUT $name $d $k $iters > $OUT/$name.peers.json
    $BIN eval --heldout $OUT/$name.heldout.f32 --train $OUT/$name.train.f32 --d $d --k $k \
        ours=$OUT/$name.ours.f32 faiss=$OUT/$name.faiss.f32 sklearn=$OUT/$name.sklearn.f32 > $OUT/$name.eval.json
    $PY tools/scripts/tokenizer_atlas.py $OUT/$name.tokenizer.h5 $OUT/$name.atlas.png
}

workload imagenet 768 1024 $ITERS_A afkmc2 16 3
workload fmnist 16 512 $ITERS_B kpp 4 1

echo "== tokenise one ViT-Ti/16 batch, K=8192"
{ $BIN tokenize --train $OUT/imagenet.train.f32; $PY tools/bench/bench_kmeans_peer.py tokenize $OUT; } > $OUT/tokenize.json
$BIN sgemm >> $OUT/sgemm.json   # again: a drop means another job shared the cores

# The training step it is a fraction of (ours, the pretraining benchmark program).
rm -f $OUT/vit_step.txt
if [ -x build/bin/bench_vit ]; then
    build/bin/bench_vit --config vit_ti_224 --steps 3 --warmup 1 | grep step_ms > $OUT/vit_step.txt || true
fi
$PY tools/bench/bench_kmeans_peer.py report $OUT | tee $OUT/report.txt
