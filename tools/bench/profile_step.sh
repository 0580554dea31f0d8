#!/usr/bin/env bash
# profile_step.sh [fmnist_28|vit_ti_224] [STEPS] [THREADS]: where one pretraining step's time goes.
# Samples build/bin/bench_pretrain with `perf record` during the timed steps only (the benchmark
# enables perf through a FIFO after its warm-up step) and prints the share of CPU samples per
# kernel: our kernels by function (OpenMP bodies folded into their function), OpenBLAS's GEMM
# kernel and its packing copies, the OpenMP runtime (barrier waits), libm, the Linux kernel.
# Defaults: vit_ti_224, 4 steps, all threads, PRECISION=fp32 (or bf16), BENCH=bench_pretrain (bench_vit: the
# classification step). Output also in out/profile/<config>.txt. Needs perf
# (Debian: apt-get install linux-perf) and kernel.perf_event_paranoid <= 2. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
command -v perf >/dev/null || { echo "error: perf is missing (Debian: apt-get install linux-perf)" >&2; exit 1; }
CFG=${1:-vit_ti_224}
STEPS=${2:-4}
[ -n "${3:-}" ] && export OMP_NUM_THREADS=$3
OUT=out/profile
mkdir -p "$OUT"
ctl=$OUT/perf.ctl
rm -f "$ctl"
mkfifo "$ctl"
trap 'rm -f "$ctl"' EXIT
perf record -q -F 997 -D -1 --control "fifo:$ctl" -o "$OUT/$CFG.data" -- \
  env CCVIT_PERF_CTL="$ctl" build/bin/${BENCH:-bench_pretrain} --config "$CFG" --steps "$STEPS" --warmup 1 --precision "${PRECISION:-fp32}" | tee "$OUT/$CFG.bench.txt"
perf report -i "$OUT/$CFG.data" --no-children --sort dso,symbol --stdio -q 2>/dev/null |
  /usr/bin/python3 -c '
import re, sys, collections
groups = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
    if not m:
        continue
    share, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
    if kind == "k":
        name = "Linux kernel (page faults, scheduling)"
    elif sym.startswith("sgemm_kernel"):
        name = "OpenBLAS sgemm kernel"
    elif sym.startswith("sgemm_small_kernel"):
        name = "OpenBLAS sgemm small-matrix kernels"
    elif re.match(r"sgemm_(on|ot|in|it)copy", sym) or sym.startswith("sgemm_beta"):
        name = "OpenBLAS packing copies"
    elif "gomp" in dso:
        name = "OpenMP runtime (barriers, waits)"
    elif dso.startswith("libm") or sym.startswith("__") and "fma" in sym:
        name = "libm (" + sym + ")"
    elif sym.startswith("__mem"):
        name = "libc " + sym.strip("_").split("_")[0]
    else:
        name = re.sub(r"\._omp_fn\.\d+$", "", sym)
    groups[name] += share
print("share of CPU samples  where")
for name, share in groups.most_common(30):
    print(f"{share:19.1f}%  {name}")
' | tee "$OUT/$CFG.txt"
