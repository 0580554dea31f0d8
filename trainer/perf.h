// perf.h: the machine's yardstick for model FLOP utilisation.
#pragma once
// GFLOP/s of an n x n x n sgemm on OpenBLAS's own threads (best of reps).
double sgemm_peak_gflops(int n, int reps);
// The benchmarks' yardstick: measure again after the timed steps, print both
// readings (sgemm_peak_before_gflops=... sgemm_peak_after_gflops=...) and return
// the higher. On a shared VM one reading can land in a neighbour's burst, and a
// low peak would overstate the MFU.
double sgemm_peak_recheck(double before, int n, int reps);
