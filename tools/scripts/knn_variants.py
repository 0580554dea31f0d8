#!/usr/bin/python3
"""kNN-20 on saved features (eval --save-features F.h5) under label-free
preprocessings: none (eval's protocol: cosine, exp(sim/T) votes), centred,
standardised, and PCA-whitened with a few shrinkages. The "plain" row repeats
eval's kNN and must agree with it to the image. For asking whether a fixed
transform of the features, rather than the features, moves kNN: run it on the
raw-pixel and random-init features too (eval --raw-pixels / --random-init).

usage: /usr/bin/python3 tools/scripts/knn_variants.py FEATURES.h5 [--k 20] [--t 0.07]
"""
import argparse

import h5py
import numpy as np
import torch


def knn_top1(train, ytrain, test, ytest, k, T, classes):
    tr = torch.nn.functional.normalize(torch.from_numpy(train).float(), dim=1)
    te = torch.nn.functional.normalize(torch.from_numpy(test).float(), dim=1)
    labels = torch.from_numpy(ytrain).long()
    hits = 0
    for i in range(0, len(te), 1000):
        sims, idx = (te[i:i + 1000] @ tr.T).topk(k, dim=1)
        votes = torch.zeros(len(sims), classes, dtype=torch.float64)
        votes.scatter_add_(1, labels[idx], (sims.double() / T).exp())
        hits += int((votes.argmax(1).numpy() == ytest[i:i + 1000]).sum())
    return 100.0 * hits / len(te)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--t", type=float, default=0.07)
    a = ap.parse_args()
    with h5py.File(a.features, "r") as f:
        xtr, ytr = f["train_features"][:].astype(np.float64), f["train_labels"][:]
        xte, yte = f["test_features"][:].astype(np.float64), f["test_labels"][:]
    classes = int(max(ytr.max(), yte.max())) + 1
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    eigval, eigvec = np.linalg.eigh(np.cov((xtr - mu).T))  # ascending
    eigval, eigvec = eigval[::-1].clip(min=0), eigvec[:, ::-1]
    variants = [("plain (eval's protocol)", lambda x: x), ("centred", lambda x: x - mu),
                ("standardised", lambda x: (x - mu) / sd)]
    for shrink in (1e-2, 1e-3, 1e-4, 1e-5):  # whitening scale 1/sqrt(eigval + shrink * top eigval)
        proj = eigvec / np.sqrt(eigval + shrink * eigval[0])
        variants.append((f"PCA-whitened, shrinkage {shrink:g}", lambda x, p=proj: (x - mu) @ p))
    print(f"{a.features}: {len(xtr)} train / {len(xte)} scored, {xtr.shape[1]} dims, k={a.k}, T={a.t}")
    for name, transform in variants:
        print(f"  {name:32s} kNN top-1 {knn_top1(transform(xtr), ytr, transform(xte), yte, a.k, a.t, classes):6.2f}")


if __name__ == "__main__":
    main()
