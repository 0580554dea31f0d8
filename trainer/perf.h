// perf.h: the machine's yardsticks for model FLOP utilisation, and the bench programs' reports.
#pragma once
#include <stdio.h>
// GFLOP/s of an n x n x n sgemm on OpenBLAS's own threads (best of reps).
double sgemm_peak_gflops(int n, int reps);
// The benchmarks' yardstick: measure again after the timed steps, print both
// readings (sgemm_peak_before_gflops=... sgemm_peak_after_gflops=...) and return
// the higher. On a shared VM one reading can land in a neighbour's burst, and a
// low peak would overstate the MFU.
double sgemm_peak_recheck(double before, int n, int reps);

// Oversubscription check for a timed loop: read involuntary_switches() before
// it, then print_thread_report(before, steps) prints os_threads= (the process's
// threads: an OpenMP-built OpenBLAS adds none, so the OpenMP team alone),
// involuntary_switches_per_step= over the timed steps (near 0 when one pool
// has the cores), openblas_threads= and openblas_config=.
long involuntary_switches(void);
void print_thread_report(long switches_before, int steps);

// The hardware's limits, measured on the whole OpenMP team at once and summed over its threads
// (best of 3 runs of ~75 ms): a register-only loop of zmm vfmadd231ps (32 FLOPs an instruction),
// resp. vdpbf16ps (64: two products and two sums per fp32 lane). 0 when this build lacks the
// instruction (no AVX512F, resp. AVX512_BF16).
double fma_peak_gflops(void);
double bf16_dot_peak_gflops(void);
typedef struct {
    double fma, bf16;  // GFLOP/s
} HwPeaks;
HwPeaks hw_peaks_measure(void);  // both, before a benchmark's timed steps

// The bench programs' --precision: "fp32", "bf16" or "bf16_emulated" -> GEMM_* (gemm_tiles.h);
// fatal() on anything else. precision_name is the reverse.
int precision_from_name(const char *name);
const char *precision_name(int precision);
// Prints precision= (what gemm_precision() says ran) bf16_native= fma_peak_gflops= bf16_peak_gflops=
// hw_mfu= hw_peak=: hw_mfu is model_gflops over the limit of the precision that ran, the vdpbf16ps
// peak for native bf16 (hw_peak=bf16), the FMA peak for fp32 and emulated bf16 (hw_peak=fma).
void print_hw_report(HwPeaks peaks, double model_gflops);

// tools/bench/profile_step.sh: perf starts with sampling disabled and listens on the FIFO named by
// CCVIT_PERF_CTL, so that the timed steps alone are profiled. NULL when the variable is unset;
// perf_ctl_send(ctl, "enable" / "disable") is then a no-op ("disable" also closes it).
FILE *perf_ctl_open(void);
void perf_ctl_send(FILE *ctl, const char *command);
