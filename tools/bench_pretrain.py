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
    # the full recipe's batch (configs/fashion_mnist_full.yaml)
    "fmnist_28_b64": dict(enc=dict(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3), K=512, batch=64),
    "vit_ti_224": dict(enc=dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3), K=8192, batch=32),
}


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
    N = (S // P) ** 2
    cents = torch.rand(K, C * P * P)
    clean1 = torch.rand(B, C, S, S)
    view2 = torch.randn(B, C, S, S)
    rng = np.random.default_rng(0)
    times = []
    for s in range(warmup + steps):
        t0 = time.perf_counter()
        with torch.no_grad():  # tokenise, mask, replace: the twin's data-side work
            view1, mask, rep, ids = torch_twin.corrupt_batch(model, clean1, cents, round(0.4 * N), round(0.1 * N), rng,
                                                             0.5, 0.25)
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
    bench_main(__doc__, "fmnist_28,fmnist_28_b64,vit_ti_224", 4, 1, torch_worker, "build/bin/bench_pretrain", __file__, "pretrain_step")

if __name__ == "__main__":
    main()
