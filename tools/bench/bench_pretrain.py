#!/usr/bin/python3
"""Side-by-side benchmark of one pretraining step (both views; token CE, pixel
MSE, NT-Xent; forward, backward, clipping, AdamW; tokenizer assignment and
masking included): ours (build/bin/bench_pretrain) in bf16 and in fp32 against
the PyTorch twin (tools/reference/torch_twin.Pretrainer) in fp32 and under
torch.autocast('cpu', dtype=torch.bfloat16), each at its best thread setting,
in alternating rounds of one run (tools/bench/bench_vit.py's compare says how).
--scaling-configs (ViT-S/16 and ViT-B/16 at 224 px; none unless asked, as
tools/bench/bench_pretrain.sh does) compare ours in bf16 with the twin in bf16 only,
with their own step and round counts: how the step scales with the model.
Ends with `bench:` lines (images/s; for memory, ratio = peer/ours).
"""
import os, sys, time
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
from bench_vit import bench_main, twin_autocast, worker_report  # the same command line, runner and report

ENC = dict(img_size=224, patch_size=16, in_chans=3, depth=12)
FMNIST = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3)
CONFIGS = {  # as in tools/bench/bench_pretrain.c
    "fmnist_28": dict(enc=FMNIST, K=512, batch=256),
    "fmnist_28_b64": dict(enc=FMNIST, K=512, batch=64),  # the full recipe's batch (configs/fashion_mnist_full.yaml)
    "vit_ti_224": dict(enc=dict(ENC, embed_dim=192, num_heads=3), K=8192, batch=32),
    "vit_s_224": dict(enc=dict(ENC, embed_dim=384, num_heads=6), K=8192, batch=32),
    "vit_b_224": dict(enc=dict(ENC, embed_dim=768, num_heads=12), K=8192, batch=16),
}


def torch_worker(name, threads, steps, warmup, precision):
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
        with torch.no_grad():  # tokenise, mask, replace: the twin's data-side work, in fp32
            view1, mask, rep, ids = torch_twin.corrupt_batch(model, clean1, cents, round(0.4 * N), round(0.1 * N), rng,
                                                             0.5, 0.25)
            images = torch.cat([view1, view2])
            mask_all = torch.cat([mask, torch.zeros_like(mask)])
        opt.zero_grad(set_to_none=True)
        with twin_autocast(precision):
            loss = model(images, clean1, mask_all, mask | rep, ids)[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    worker_report(times, B, precision)


def main():
    bench_main(__doc__, "fmnist_28,fmnist_28_b64,vit_ti_224", 4, 1, torch_worker, "build/bin/bench_pretrain", __file__,
               "pretrain_step", scaling="")

if __name__ == "__main__":
    main()
