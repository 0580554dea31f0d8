#!/usr/bin/python3
"""plot_reconstruction.py RECON.h5 OUT.png [--scale S]

The reconstruction grid from build/bin/reconstruct's file: one row per image;
columns: the original crop, the corrupted encoder input (masked patches grey,
centroid-replaced patches outlined), the pixel head's reconstruction of the
masked and replaced patches (de-normalised per patch), and the token head's
predicted centroids drawn as their pixels. Scored patches are outlined in the
last two columns too. Images are magnified S times by nearest neighbour
(default: to at least 112 px). A head the checkpoint lacks leaves its column
empty with a note.
"""
import argparse

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

REPLACED = "#ff7f0e"   # orange: centroid-replaced
MASKED = "#1f77b4"     # blue: masked (last two columns)


def to_rgb(x, s):
    """[C,H,W] in [0,1] -> [H*s, W*s, 3], nearest neighbour."""
    x = np.clip(x, 0, 1).transpose(1, 2, 0)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return x.repeat(s, 0).repeat(s, 1)


def outline(ax, grid, p, s, color):
    """Draw the boundary of the region grid != 0 (patch units) on an image magnified p*s times."""
    g = np.pad(grid != 0, 1)
    e = p * s
    segs = []
    for y, x in zip(*np.nonzero(g[1:-1, 1:-1])):
        x0, y0 = x * e - 0.5, y * e - 0.5
        if not g[y, x + 1]:
            segs.append([(x0, y0), (x0 + e, y0)])          # top
        if not g[y + 2, x + 1]:
            segs.append([(x0, y0 + e), (x0 + e, y0 + e)])  # bottom
        if not g[y + 1, x]:
            segs.append([(x0, y0), (x0, y0 + e)])          # left
        if not g[y + 1, x + 2]:
            segs.append([(x0 + e, y0), (x0 + e, y0 + e)])  # right
    if segs:
        ax.add_collection(LineCollection(segs, colors=color, linewidths=1.5))


def outline_each(ax, grid, p, s, color):
    """One square per nonzero patch (replaced patches are single and may touch)."""
    for y, x in zip(*np.nonzero(grid)):
        one = np.zeros_like(grid, dtype=bool)
        one[y, x] = True
        outline(ax, one, p, s, color)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recon")
    ap.add_argument("out")
    ap.add_argument("--scale", type=int, default=0)
    a = ap.parse_args()
    with h5py.File(a.recon, "r") as f:
        for k in ("clean", "corrupted", "mask", "replaced"):
            if k not in f:
                raise SystemExit(f"error: '{a.recon}' has no dataset '{k}'; write it with build/bin/reconstruct")
        d = {k: f[k][()] for k in f}
        at = dict(f.attrs)
    n, c, h, w = d["clean"].shape
    p = int(at["patch_size"])
    s = a.scale or max(1, -(-112 // h))
    mask, repl = d["mask"] != 0, d["replaced"] != 0
    scored = mask | repl
    cols = [("original", "clean", None),
            ("corrupted input", "corrupted", None),
            ("pixel head", "recon_pixel", "no pixel head in this checkpoint\n(w_pixel = 0)"),
            ("token head (centroids)", "recon_token", "no token head in this checkpoint\n(w_token = 0)")]
    cell = 1.0 + 1.6 * (s * h / 112)
    fig, axes = plt.subplots(n, 4, figsize=(4 * cell, n * cell), squeeze=False)
    for j, (title, key, missing) in enumerate(cols):
        for i in range(n):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if key not in d:
                for sp in ax.spines.values():
                    sp.set_visible(False)
                if i == 0:
                    ax.text(0.5, 0.5, missing, ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            ax.imshow(to_rgb(d[key][i], s), interpolation="nearest")
            if key == "corrupted":
                outline_each(ax, repl[i], p, s, REPLACED)
            elif key != "clean":
                outline(ax, mask[i], p, s, MASKED)
                outline_each(ax, repl[i], p, s, REPLACED)
            if i == 0:
                ax.set_title(title, fontsize=9)
        if j == 0:
            for i in range(n):
                axes[i, 0].set_ylabel(f"#{i}", fontsize=8)
    notes = [f"step {int(at.get('step', -1))}", f"{int(scored[0].sum())} of {mask[0].size} patches scored per image"]
    if at.get("has_pixel_head", 0):
        notes.append(f"pixel MSE {at['loss_pixel']:.3f}")
    if at.get("has_token_head", 0):
        notes.append(f"token top-1 {100 * at['token_accuracy']:.1f}%")
    fig.suptitle("; ".join(notes) + "\ngrey / blue outline: masked; orange outline: replaced by its centroid",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (n * cell)))
    fig.savefig(a.out, dpi=100)
    print(f"{a.out}: {n} images ({h}x{w}, x{s}), columns: " +
          ", ".join(t + ("" if k in d else " (empty)") for t, k, _ in cols))


if __name__ == "__main__":
    main()
