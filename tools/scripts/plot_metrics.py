#!/usr/bin/python3
"""plot_metrics.py RUN_DIR/metrics.jsonl OUT.png [--title TEXT]

Training curves of one run: every loss term (loss, loss_token, loss_pixel,
loss_contrast), lr, images/s, grad norm, cls_top5_variance_share and the live
kNN-20 (knn20, every knn_every updates) against
step, one subplot each. A key the run did not log (a loss whose weight was 0)
is left out. After a resume the metrics file repeats the steps past the
checkpoint; the last line of each step wins.
"""
import argparse, json, math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [  # key, title, log scale
    ("loss", "loss (weighted total)", False),
    ("loss_token", "token cross-entropy", False),
    ("loss_pixel", "pixel MSE (normalised)", False),
    ("loss_contrast", "NT-Xent", False),
    ("lr", "learning rate", False),
    ("images_per_s", "images/s", False),
    ("grad_norm", "grad norm (before clipping)", True),
    ("cls_top5_variance_share", "CLS top-5 variance share", False),
    ("knn20", "live kNN-20 top-1 % (CLS, train split)", False),
]


def read_metrics(path):
    by_step = {}
    with open(path) as f:
        lines = f.readlines()
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            if n == len(lines) and not line.endswith("\n"):  # a last line a killed run cut short
                print(f"warning: {path}:{n}: the last line is cut short; plotting the lines before it")
                continue
            raise SystemExit(f"error: {path}:{n}: not JSON ({e}); is it a metrics.jsonl?")
        if "step" in row:  # merge: a fine-tune's val_top1 line shares the last training step
            by_step.setdefault(row["step"], {}).update(row)
    if not by_step:
        raise SystemExit(f"error: {path} holds no metrics lines with a 'step'; has the run logged yet?")
    return [by_step[s] for s in sorted(by_step)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics")
    ap.add_argument("out")
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    rows = read_metrics(a.metrics)
    panels = [p for p in PANELS if any(isinstance(r.get(p[0]), (int, float)) for r in rows)]
    if not panels:
        raise SystemExit(f"error: {a.metrics} has none of the metrics this plots ({', '.join(p[0] for p in PANELS)})")
    cols = 4 if len(panels) > 4 else len(panels)
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, (key, title, logy) in zip(axes.flat, panels):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if logy and ys and min(ys) > 0:
            ax.set_yscale("log")
        if ys:
            ax.annotate(f"{ys[-1]:.4g}", (xs[-1], ys[-1]), fontsize=7, ha="right", va="bottom")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(a.title or f"{a.metrics}: {len(rows)} metrics lines, steps {rows[0]['step']}..{rows[-1]['step']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=100)
    print(f"{a.out}: {len(panels)} curves over {len(rows)} steps ({', '.join(p[0] for p in panels)})")


if __name__ == "__main__":
    main()
