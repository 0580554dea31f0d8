#!/usr/bin/env python3
"""Old against new build of the same benchmark, in alternating rounds: the speed
check of a change that must not move a number (a restructuring).

  tools/bench/ab_binaries.py OLD_BUILD NEW_BUILD [--rounds 5] [--configs fmnist_28,vit_ti_224]
      [--precision fp32,bf16] [--steps 4]

Each round runs OLD then NEW (the order flips every round) of
`bin/bench_pretrain --config C --precision P` and reads its step_ms. Ends with
`bench: ab_<config>_<precision> ours=<new ms> peer=<old ms> ratio=<old/new> unit=ms`
lines (ratio > 1: the new build is faster)."""
import argparse
import re
import statistics
import subprocess
import sys


def step_ms(build, config, precision, steps):
    out = subprocess.run([f"{build}/bin/bench_pretrain", "--config", config, "--precision", precision,
                          "--steps", str(steps), "--warmup", "1"], capture_output=True, text=True, check=True).stdout
    peak = float(re.search(r"sgemm_peak_before_gflops=([\d.]+)", out).group(1))
    return float(re.search(r"step_ms=([\d.]+)", out).group(1)), peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--configs", default="fmnist_28,vit_ti_224")
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    lines = []
    for config in a.configs.split(","):
        for precision in a.precision.split(","):
            times = {"old": [], "new": []}
            for r in range(a.rounds):
                order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
                for side in order:
                    ms, peak = step_ms(getattr(a, side), config, precision, a.steps)
                    times[side].append(ms)
                    print(f"{config} {precision} round {r} {side}: step {ms:.1f} ms (sgemm peak {peak:.0f} GFLOP/s)",
                          flush=True)
            old, new = statistics.median(times["old"]), statistics.median(times["new"])
            spread = lambda v: f"{min(v):.1f}..{max(v):.1f}"
            print(f"{config} {precision}: median old {old:.1f} ms ({spread(times['old'])}), "
                  f"new {new:.1f} ms ({spread(times['new'])}), old/new {old / new:.3f}")
            lines.append(f"bench: ab_{config}_{precision} ours={new:.1f} peer={old:.1f} ratio={old / new:.3f} unit=ms")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
