#!/usr/bin/python3
"""plot_neighbours.py RANDOM.h5 PRETRAINED.h5 TRAIN_SHARDS TEST_SHARDS OUT.png [--queries N] [--k K]

The picture to look at first: a few test images and their K nearest training
images (cosine similarity of the frozen features, as kNN votes) for a
random-init encoder and for the pretrained one, side by side. A green frame:
the neighbour's class is the query's; red: it is not. RANDOM.h5 and
PRETRAINED.h5 are eval's --save-features files (train/test features in the
shards' order); the shard patterns (brace ranges, as in the config) give the
images. Queries are a seeded draw from the test split.
"""
import argparse, io, re, tarfile

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def expand(pattern):
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    return [pattern[:m.start()] + str(i).zfill(len(a)) + pattern[m.end():] for i in range(int(a), int(b) + 1)]


def images_at(pattern, wanted):
    """The images at sample indices `wanted` of the shards, in the eval loader's order."""
    wanted, out, index = set(int(i) for i in wanted), {}, 0
    for shard in expand(pattern):
        with tarfile.open(shard) as tar:
            seen = set()
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                if ext.lower() not in ("png", "jpg", "jpeg") or key in seen:
                    continue
                seen.add(key)
                if index in wanted:
                    out[index] = mpimg.imread(io.BytesIO(tar.extractfile(member).read()), format=ext.lower())
                index += 1
                if len(out) == len(wanted):
                    return out
    return out


def neighbours(path, queries, k):
    with h5py.File(path, "r") as f:
        tr, te = f["train_features"][()], f["test_features"][()]
        ytr, yte = f["train_labels"][()], f["test_labels"][()]
    tr = tr / np.maximum(np.linalg.norm(tr, axis=1, keepdims=True), 1e-12)
    q = te[queries] / np.maximum(np.linalg.norm(te[queries], axis=1, keepdims=True), 1e-12)
    idx = np.argsort(-(q @ tr.T), axis=1)[:, :k]
    return idx, ytr, yte


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("random"), ap.add_argument("pretrained"), ap.add_argument("train"), ap.add_argument("test")
    ap.add_argument("out")
    ap.add_argument("--queries", type=int, default=6)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with h5py.File(a.pretrained, "r") as f:
        n_test = f["test_labels"].shape[0]
    queries = np.random.default_rng(a.seed).choice(n_test, a.queries, replace=False)
    sides = [("random init", *neighbours(a.random, queries, a.k)), ("pretrained", *neighbours(a.pretrained, queries, a.k))]
    train_imgs = images_at(a.train, np.concatenate([s[1].ravel() for s in sides]))
    test_imgs = images_at(a.test, queries)
    cols = 1 + 2 * a.k
    fig, axes = plt.subplots(a.queries, cols, figsize=(cols * 0.95, a.queries * 1.05), squeeze=False)
    yte = sides[1][3]
    for r, q in enumerate(queries):
        ax = axes[r, 0]
        ax.imshow(test_imgs[int(q)], cmap="gray")
        ax.set_ylabel(FASHION[yte[q]] if yte.max() < 10 else str(yte[q]), fontsize=6)
        for s, (name, idx, ytr, _) in enumerate(sides):
            for j in range(a.k):
                ax = axes[r, 1 + s * a.k + j]
                i = int(idx[r, j])
                ax.imshow(train_imgs[i], cmap="gray")
                ok = ytr[i] == yte[q]
                for sp in ax.spines.values():
                    sp.set_color("tab:green" if ok else "tab:red"), sp.set_linewidth(2)
                if r == 0 and j == a.k // 2:
                    ax.set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_title("query", fontsize=8)
    hits = [float(np.mean(s[3][queries][:, None] == s[2][s[1]])) for s in sides]
    fig.suptitle(f"{a.k} nearest training images (cosine, frozen features): same class "
                 f"{100 * hits[0]:.0f}% random init, {100 * hits[1]:.0f}% pretrained", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"{a.out}: {a.queries} queries x {a.k} neighbours, random init vs pretrained")


if __name__ == "__main__":
    main()
