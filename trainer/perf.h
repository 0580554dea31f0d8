// perf.h: the machine's yardstick for model FLOP utilisation.
#pragma once
// GFLOP/s of an n x n x n sgemm on OpenBLAS's own threads (best of reps).
double sgemm_peak_gflops(int n, int reps);
