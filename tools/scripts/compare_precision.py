#!/usr/bin/python3
"""bf16 against fp32 training (tools/scripts/studies.sh bf16): the loss curves and the
features of prec_{fp32,bf16}_s{0,1}. The yardstick is seed noise: how far the
two seeds of one precision are apart. Writes the figures as JSON.
Usage: tools/scripts/compare_precision.py STUDY_DIR OUT.json
"""
import json, os, sys
import numpy as np

KEYS = ("loss", "loss_token", "loss_pixel", "loss_contrast")


def curve(run_dir):
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    return {r["step"]: r for r in rows}


def smoothed(c, key, steps, window=10):
    v = np.array([c[s][key] for s in steps])
    return np.convolve(v, np.ones(window) / window, mode="valid")


def gap(a, b, key):
    """mean |a - b| of the two runs' loss over their common logged steps, after a 10-line moving
    average (one logged loss is one batch's: the average compares the curves, not the batches)."""
    steps = sorted(set(a) & set(b))
    return float(np.mean(np.abs(smoothed(a, key, steps) - smoothed(b, key, steps))))


def main():
    study, out = sys.argv[1], sys.argv[2]
    runs = {(p, s): os.path.join(study, f"prec_{p}_s{s}") for p in ("fp32", "bf16") for s in (0, 1)}
    curves = {k: curve(d) for k, d in runs.items()}
    res = {k: json.load(open(os.path.join(d, "results.json"))) for k, d in runs.items()}
    report = {"runs": {f"{p}_s{s}": {"probe_top1": res[(p, s)]["probe_top1"], "knn_top1": res[(p, s)]["knn_top1"],
                                     "final_loss": curves[(p, s)][max(curves[(p, s)])]["loss"],
                                     "minutes": curves[(p, s)][max(curves[(p, s)])]["elapsed_s"] / 60}
                       for p, s in runs}}
    report["loss_gap"] = {}
    for key in KEYS:
        report["loss_gap"][key] = {
            "bf16_vs_fp32_seed0": gap(curves[("fp32", 0)], curves[("bf16", 0)], key),
            "bf16_vs_fp32_seed1": gap(curves[("fp32", 1)], curves[("bf16", 1)], key),
            "seed0_vs_seed1_fp32": gap(curves[("fp32", 0)], curves[("fp32", 1)], key),
            "seed0_vs_seed1_bf16": gap(curves[("bf16", 0)], curves[("bf16", 1)], key)}
    for m in ("probe_top1", "knn_top1"):
        v = {k: res[k][m] for k in runs}
        report[m] = {"precision_gap_seed0": v[("bf16", 0)] - v[("fp32", 0)],
                     "precision_gap_seed1": v[("bf16", 1)] - v[("fp32", 1)],
                     "seed_spread_fp32": abs(v[("fp32", 0)] - v[("fp32", 1)]),
                     "seed_spread_bf16": abs(v[("bf16", 0)] - v[("bf16", 1)])}
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    json.dump(report, open(out, "w"), indent=1)
    print(f"{'run':<10} {'probe':>7} {'kNN-20':>7} {'final loss':>10} {'minutes':>8}")
    for k, r in report["runs"].items():
        print(f"{k:<10} {r['probe_top1']:>6.2f}% {r['knn_top1']:>6.2f}% {r['final_loss']:>10.4f} {r['minutes']:>8.1f}")
    for key, g in report["loss_gap"].items():
        print(f"{key:<14} mean |gap| bf16-fp32: {g['bf16_vs_fp32_seed0']:.4f} / {g['bf16_vs_fp32_seed1']:.4f} (seeds 0/1);"
              f" seed 0-1: {g['seed0_vs_seed1_fp32']:.4f} fp32, {g['seed0_vs_seed1_bf16']:.4f} bf16")
    for m in ("probe_top1", "knn_top1"):
        g = report[m]
        print(f"{m:<11} bf16 - fp32: {g['precision_gap_seed0']:+.2f} / {g['precision_gap_seed1']:+.2f} points;"
              f" seed spread {g['seed_spread_fp32']:.2f} fp32, {g['seed_spread_bf16']:.2f} bf16")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
