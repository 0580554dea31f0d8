#!/usr/bin/python3
"""tokenizer_atlas.py TOKENIZER.h5 OUT.png [--cols N] [--scale S]

Writes the centroids of a tokenizer file (group /tokenizer, as written by
tokenizer_save) as a PNG grid, largest cluster first (row-major), each patch
magnified S times (default: to about 32 px) with a 1-pixel grey border.
"""
import argparse, math

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer")
    ap.add_argument("out")
    ap.add_argument("--cols", type=int, default=0)
    ap.add_argument("--scale", type=int, default=0)
    a = ap.parse_args()
    with h5py.File(a.tokenizer, "r") as f:
        if "tokenizer" not in f:
            raise SystemExit(f"error: '{a.tokenizer}' has no group 'tokenizer'; is it a tokenizer file?")
        g = f["tokenizer"]
        cent, counts = g["centroids"][()], g["counts"][()]
        p, ch = int(g.attrs["patch_size"]), int(g.attrs["channels"])
    k = cent.shape[0]
    order = np.lexsort((np.arange(k), -counts))  # largest first, ties by id
    tiles = cent[order].reshape(k, ch, p, p).transpose(0, 2, 3, 1).clip(0, 1)  # (c, y, x) -> (y, x, c)
    if ch == 1:
        tiles = np.repeat(tiles, 3, axis=3)
    s = a.scale or max(1, 32 // p)
    cols = a.cols or math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    cell = p * s + 1
    img = np.full((rows * cell + 1, cols * cell + 1, 3), 0.5, np.float32)
    for i in range(k):
        r, c = divmod(i, cols)
        big = tiles[i].repeat(s, 0).repeat(s, 1)
        img[1 + r * cell:1 + r * cell + p * s, 1 + c * cell:1 + c * cell + p * s] = big
    plt.imsave(a.out, img)
    print(f"{a.out}: {k} centroids ({p}x{p}, {ch} channel{'s' if ch > 1 else ''}), largest cluster {counts.max()}, "
          f"smallest {counts.min()}, grid {rows}x{cols}")


if __name__ == "__main__":
    main()
