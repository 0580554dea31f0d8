// perf.h: the machine's yardstick for model FLOP utilisation.
#pragma once
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
