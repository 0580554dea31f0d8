#!/usr/bin/python3
"""Side-by-side benchmark of one pretraining step (both views; token CE, pixel
MSE, NT-Xent; forward, backward, clipping, AdamW; tokenizer assignment and
masking included): ours (build/bin/bench_pretrain) against the PyTorch twin
(tools/torch_twin.Pretrainer) at its best thread setting, in one run.
Ends with `bench:` lines (images/s; for memory, ratio = peer/ours).
"""
import os, resource, sys, time
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from bench_vit import bench_main  # the same command line, side-by-side runner and report

CONFIGS = {
    "fmnist_28": dict(enc=dict(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3), K=512, batch=256),
    "vit_ti_224": dict(enc=dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3), K=8192, batch=32),
}


def block_mask(grid, count, rng):
    """BEiT-style blockwise mask with the exact count (numpy, for the twin)."""
    m = np.zeros((grid, grid), bool)
    while m.sum() < count:
        left = count - m.sum()
        for _ in range(10):
            area = rng.uniform(4, max(left, 4))
            ar = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
            h, w = int(round(np.sqrt(area * ar))), int(round(np.sqrt(area / ar)))
            if 0 < h < grid and 0 < w < grid:
                t, l = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
                new = h * w - m[t:t + h, l:l + w].sum()
                if 0 < new <= left:
                    m[t:t + h, l:l + w] = True
                    break
        else:
            break
    flat = m.reshape(-1)
    idx = np.flatnonzero(~flat)
    rng.shuffle(idx)
    flat[idx[:max(0, count - flat.sum())]] = True
    return flat


def torch_worker(name, threads, steps, warmup):
    import torch, torch_twin
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = CONFIGS[name]
    e, K, B = c["enc"], c["K"], c["batch"]
    model = torch_twin.Pretrainer(e, K, 1.0, 1.0, 1.0, 0.2, 1024, 256)
    groups = torch_twin.adamw_param_groups(model, 0.05)
    opt = torch.optim.AdamW(groups, lr=1e-4)
    S, C, P = e["img_size"], e["in_chans"], e["patch_size"]
    g, N = S // P, (S // P) ** 2
    cents = torch.rand(K, C * P * P)
    clean1 = torch.rand(B, C, S, S)
    view2 = torch.randn(B, C, S, S)
    rng = np.random.default_rng(0)
    times = []
    for s in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.no_grad():  # tokenise, mask, replace: the twin's data-side work
            patches = model.patchify(clean1)
            d2 = (patches ** 2).sum(-1, keepdim=True) - 2 * patches @ cents.t() + (cents ** 2).sum(-1)
            ids = d2.argmin(-1)
            mask = torch.tensor(np.stack([block_mask(g, round(0.4 * N), rng) for _ in range(B)]))
            rep = torch.zeros(B, N, dtype=torch.bool)
            for b in range(B):
                free = torch.nonzero(~mask[b]).flatten()
                rep[b, free[torch.randperm(len(free))[:round(0.1 * N)]]] = True
            cp = torch.where(rep[..., None], cents[ids], patches)
            view1 = (cp.reshape(B, g, g, C, P, P).permute(0, 3, 1, 4, 2, 5).reshape(B, C, S, S) - 0.5) / 0.25
            images = torch.cat([view1, view2])
            mask_all = torch.cat([mask, torch.zeros_like(mask)])
        opt.zero_grad(set_to_none=True)
        loss = model(images, clean1, mask_all, mask | rep, ids)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"step_ms={step*1e3:.1f} images_per_s={B/step:.2f} peak_rss_bytes={rss}")


def main():
    bench_main(__doc__, "fmnist_28,vit_ti_224", 4, 1, torch_worker, "build/bin/bench_pretrain", __file__, "pretrain_step")

if __name__ == "__main__":
    main()
