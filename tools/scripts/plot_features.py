#!/usr/bin/python3
"""plot_features.py RANDOM_INIT.h5 PRETRAINED.h5 OUT.png [options]

Side-by-side scatter of the test features of two encoders, coloured by class,
from build/bin/eval's --save-features files (test_features [n,d],
test_labels [n]): left the random-init encoder, right the pretrained one.
Row 1: PCA to 2-D of the standardised features. Row 2: t-SNE (on the first 50
principal components) of a class-stratified subsample, drawn only when it
finishes within --tsne-seconds for both encoders (it runs in a child process
that is stopped at the limit); otherwise the row is left out and the output says so.

options:
  --subsample N      points per panel, stratified by class (default 2000)
  --tsne-seconds S   time limit for both t-SNE fits together (default 60; 0: no t-SNE)
  --tsne-iters N     t-SNE iterations (default 1000, the first 250 with early exaggeration)
  --class-names a,b  legend names for labels 0, 1, ...; "fashion-mnist" for its ten
  --labels A,B       panel titles (default "random init,pretrained")
  --seed N           subsample and t-SNE seed (default 0)
"""
import argparse, multiprocessing as mp, time

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def read(path):
    with h5py.File(path, "r") as f:
        for k in ("test_features", "test_labels"):
            if k not in f:
                raise SystemExit(f"error: '{path}' has no dataset '{k}'; write it with `eval ... --save-features F.h5`")
        return f["test_features"][()].astype(np.float64), f["test_labels"][()].astype(np.int64)


def stratified(y, n, seed):
    """Indices of about n points, the same share of every class, sorted."""
    if n <= 0 or n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    take = []
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        k = max(1, int(round(n * len(idx) / len(y))))
        take.append(rng.choice(idx, min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(take))


def standardise(x):
    return (x - x.mean(0)) / (x.std(0) + 1e-8)


def pca(x, k):
    from sklearn.decomposition import PCA
    p = PCA(n_components=min(k, x.shape[0], x.shape[1]), random_state=0)
    return p.fit_transform(x), p.explained_variance_ratio_


def tsne_job(xs, seed, iters, q):
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    # One thread: on shared cores sklearn's OpenMP gradient loop slows down ~100x
    # when its threads get preempted, and one thread is fast enough for 2k points.
    threadpool_limits(1)
    out = []
    for x in xs:
        z, _ = pca(x, 50)
        perp = min(30.0, max(2.0, (len(x) - 1) / 3.0))
        out.append(TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", n_iter=iters,
                        random_state=seed).fit_transform(z))
    q.put(out)


def tsne_with_limit(xs, seed, iters, seconds):
    """t-SNE of each array in xs, or None when it does not finish within `seconds`."""
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=tsne_job, args=(xs, seed, iters, q))
    p.start()
    try:
        out = q.get(timeout=seconds)
    except Exception:
        out = None
    p.join(timeout=1)
    if p.is_alive():
        p.terminate()
        p.join()
    return out


def scatter(ax, z, y, names, title):
    classes = np.unique(y)
    if len(classes) > 20:  # too many for a legend: one continuous colour scale
        ax.scatter(z[:, 0], z[:, 1], s=4, c=y, cmap="viridis", alpha=0.7, linewidths=0)
    else:
        cmap = plt.get_cmap("tab10" if y.max() < 10 else "tab20")
        for c in classes:
            m = y == c
            label = names[c] if names and c < len(names) else str(c)
            ax.scatter(z[m, 0], z[m, 1], s=4, color=cmap(c % cmap.N), label=label, alpha=0.7, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("random_init")
    ap.add_argument("pretrained")
    ap.add_argument("out")
    ap.add_argument("--subsample", type=int, default=2000)
    ap.add_argument("--tsne-seconds", type=float, default=60)
    ap.add_argument("--tsne-iters", type=int, default=1000)
    ap.add_argument("--class-names", default="")
    ap.add_argument("--labels", default="random init,pretrained")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    names = FASHION_MNIST if a.class_names == "fashion-mnist" else [s for s in a.class_names.split(",") if s]
    titles = a.labels.split(",")
    if len(titles) != 2:
        raise SystemExit("error: --labels needs two titles separated by a comma")

    data = [read(a.random_init), read(a.pretrained)]
    if not np.array_equal(data[0][1], data[1][1]):
        print("warning: the two files' test labels differ (other splits or limits?); each panel uses its own")
    xs, ys = [], []
    for x, y in data:
        idx = stratified(y, a.subsample, a.seed)
        xs.append(standardise(x[idx]))
        ys.append(y[idx])

    t0 = time.time()
    emb = tsne_with_limit(xs, a.seed, a.tsne_iters, a.tsne_seconds) if a.tsne_seconds > 0 else None
    t_tsne = time.time() - t0
    rows = 2 if emb is not None else 1
    fig, axes = plt.subplots(rows, 2, figsize=(10, 4.6 * rows), squeeze=False)
    for j in range(2):
        z, var = pca(xs[j], 2)
        scatter(axes[0, j], z, ys[j], names,
                f"{titles[j]}: PCA ({100 * var.sum():.0f}% of variance), {len(ys[j])} test images, d={xs[j].shape[1]}")
        if emb is not None:
            scatter(axes[1, j], emb[j], ys[j], names, f"{titles[j]}: t-SNE")
    h, lab = axes[0, 1].get_legend_handles_labels()
    if lab:
        fig.legend(h, lab, loc="lower center", ncol=min(len(lab), 10), fontsize=8, markerscale=3, frameon=False)
    fig.tight_layout(rect=(0, 0.05 / rows, 1, 1))
    fig.savefig(a.out, dpi=100)
    note = f"t-SNE {t_tsne:.0f} s" if emb is not None else (
        "no t-SNE (--tsne-seconds 0)" if a.tsne_seconds <= 0 else f"no t-SNE: not done within {a.tsne_seconds:g} s")
    print(f"{a.out}: PCA of {len(ys[0])} + {len(ys[1])} test features; {note}")


if __name__ == "__main__":
    main()
