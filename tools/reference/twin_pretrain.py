#!/usr/bin/python3
"""The PyTorch twin of the trainer, for the same-wall-clock comparison:
the same recipe as a config file (model, K, masking, replacement, the three
losses, the contrastive ramp, augmentation, AdamW + warmup/cosine, clipping,
frozen patch embedding), trained in PyTorch for a wall-clock budget on
Fashion-MNIST read from Debian's IDX files, with the same centroid tokenizer.

The twin's weights are written into a copy of a C checkpoint of the same config
(--template), so build/bin/eval scores both trainers with the same code.

usage: tools/reference/twin_pretrain.py --config configs/fashion_mnist.yaml \
         --tokenizer data/tokenizers/fashion_mnist_p4_k512.h5 \
         --template checkpoints/main-latest/latest --minutes 9 --out twin.h5
Needs python3-torch, python3-torchvision, python3-h5py, python3-yaml (Debian); run with /usr/bin/python3.
"""
import argparse, gzip, json, os, shutil, sys, time
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, h, w)


def number(v):
    """PyYAML reads "5e-4" (no dot) as a string; the trainer's config reads it as a number."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return [number(x) for x in v] if isinstance(v, list) else v


def make_augment(cfg):
    """torchvision's versions of the loader's train transforms (data_loaders/augment.c)."""
    import torch
    import torchvision.transforms as T
    cj = cfg["color_jitter"]
    ops = [T.RandomResizedCrop(cfg["img_size"], scale=tuple(cfg["scale"]), ratio=tuple(cfg["ratio"]),
                               interpolation=T.InterpolationMode.BICUBIC if cfg["interpolation"] == "bicubic"
                               else T.InterpolationMode.BILINEAR, antialias=True),
           T.RandomHorizontalFlip(cfg["hflip"]),
           T.RandomApply([T.ColorJitter(cj, cj, cj, cj / 4)], p=cfg["color_jitter_prob"]),
           T.RandomApply([T.GaussianBlur(int(0.1 * cfg["img_size"]) | 1, sigma=(0.1, 2.0))], p=cfg["blur_prob"])]
    tf = T.Compose(ops)

    def augment(u8):  # [C,H,W] uint8 -> [C,S,S] float in [0,1]
        return tf(torch.tensor(u8, dtype=torch.float32).div_(255)).clamp_(0, 1)
    return augment


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--tokenizer", required=True, help="the centroid tokenizer HDF5 the C run used")
    ap.add_argument("--template", required=True, help="a C checkpoint of the same config (its layout is reused)")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    ap.add_argument("--out", required=True, help="checkpoint to write (HDF5, read by build/bin/eval)")
    ap.add_argument("--fashion-mnist", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", help="write one JSON line per log step here")
    ap.add_argument("--no-fit-schedule", action="store_true",
                    help="keep the config's `steps` even when the budget ends first (by default the cosine is "
                         "shortened, after 20 timed updates, to the updates that fit the budget, as the C config's "
                         "`steps` was sized to the C trainer's speed)")
    a = ap.parse_args()

    import h5py, torch, yaml
    import torch_twin

    cfg = yaml.safe_load(open(a.config))
    with h5py.File(a.template, "r") as f:  # the effective config: the file's keys plus every default
        full = yaml.safe_load(f.attrs["config_yaml"])
    full.update(cfg)
    cfg = {k: number(v) for k, v in full.items()}
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    S, P, C = cfg["img_size"], cfg["patch_size"], cfg["in_chans"]
    N = (S // P) ** 2
    enc = dict(img_size=S, patch_size=P, in_chans=C, embed_dim=cfg["embed_dim"], depth=cfg["depth"],
               num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"], qkv_bias=bool(cfg["qkv_bias"]),
               layer_scale_init=cfg["layer_scale_init"])
    with h5py.File(a.tokenizer, "r") as f:
        cents = torch.from_numpy(f["tokenizer/centroids"][()].astype(np.float32))
    K = cents.shape[0]
    w_tok, w_pix, w_con = cfg["w_token"], cfg["w_pixel"], cfg["w_contrast"]
    if float(cfg.get("teacher_momentum", 0)) > 0:
        sys.exit("twin_pretrain: the config sets teacher_momentum > 0 (an EMA teacher); this twin trains NT-Xent "
                 "over two views only, so it would not be the same recipe")
    model = torch_twin.Pretrainer(enc, K, w_tok, w_pix, w_con, cfg["temperature"], cfg["proj_hidden"], cfg["proj_dim"])
    if cfg["freeze_patch_embed"]:
        for p in model.encoder.patch_embed.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(torch_twin.adamw_param_groups(model, cfg["weight_decay"]), lr=cfg["lr"])

    images = read_idx_images(os.path.join(a.fashion_mnist, "train-images-idx3-ubyte.gz"))
    augment = make_augment(cfg)
    B = cfg["batch_size"]
    total, warmup = cfg["steps"], cfg["warmup_steps"]
    mean, std = cfg["mean"][0], cfg["std"][0]
    n_mask, n_rep = int(round(cfg["mask_ratio"] * N)), int(round(cfg["replace_ratio"] * N))
    order = rng.permutation(len(images))
    pos = 0
    log = open(a.metrics, "w") if a.metrics else None
    t_start = time.perf_counter()
    step = 0
    while step < total and time.perf_counter() - t_start < a.minutes * 60:
        if pos + B > len(order):
            order, pos = rng.permutation(len(images)), 0
        idx = order[pos:pos + B]
        pos += B
        v1 = torch.stack([augment(images[i]) for i in idx])
        view1, mask, rep, ids = torch_twin.corrupt_batch(model, v1, cents, n_mask, n_rep, rng, mean, std)
        with torch.no_grad():
            if w_con > 0:
                v2 = (torch.stack([augment(images[i]) for i in idx]) - mean) / std
                inp, mask_all = torch.cat([view1, v2]), torch.cat([mask, torch.zeros_like(mask)])
            else:
                inp, mask_all = view1, mask
        ramp = min(1.0, (step + 1) / cfg["contrast_warmup_steps"]) if cfg["contrast_warmup_steps"] > 0 else 1.0
        model.w = (w_tok, w_pix, w_con * ramp)
        lr = torch_twin.lr_at_step(step, cfg["lr"], cfg["min_lr"], warmup, total)
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss, ce, mse, nce = model(inp, v1, mask_all, mask | rep, ids)
        if not torch.isfinite(loss):
            sys.exit(f"error: non-finite loss at step {step + 1}")
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg["clip_grad"])
        opt.step()
        step += 1
        if step == 20 and not a.no_fit_schedule:
            fit = int(20 * a.minutes * 60 / (time.perf_counter() - t_start))
            if fit < total:
                print(f"twin: {total} updates will not fit {a.minutes} min at this speed; cosine over {fit}")
                total = fit
        if step % cfg["log_every"] == 0 or step == 1:
            el = time.perf_counter() - t_start
            rec = dict(step=step, loss=loss.item(), token_ce=ce.item(), pixel_mse=mse.item(), nce=nce.item(), lr=lr,
                       grad_norm=float(gnorm), images_per_s=step * B / el, elapsed_s=el)
            print(f"twin step {step}/{total} | loss {rec['loss']:.4f} tok {rec['token_ce']:.3f} pix {rec['pixel_mse']:.4f}"
                  f" nce {rec['nce']:.3f} lr {lr:.2e} | {rec['images_per_s']:.1f} img/s | {el/60:.1f} min", flush=True)
            if log:
                log.write(json.dumps(rec) + "\n")
                log.flush()
    el = time.perf_counter() - t_start
    print(f"twin: {step} updates, {step * B} images ({step * B / len(images):.3f} epoch) in {el/60:.2f} min, "
          f"{step * B / el:.1f} img/s")

    # The twin's encoder into a copy of the C checkpoint's layout (names are timm's on both sides).
    tmp = a.out + ".tmp"
    shutil.copyfile(a.template, tmp)
    sd = {model.c_name(k): v.detach().numpy() for k, v in model.state_dict().items()}
    with h5py.File(tmp, "r+") as f:
        for name in list(f["encoder"].keys()):
            if name not in sd:
                sys.exit(f"error: template tensor encoder/{name} has no twin counterpart")
            if f["encoder"][name].shape != sd[name].shape:
                sys.exit(f"error: encoder/{name}: template shape {f['encoder'][name].shape} vs twin {sd[name].shape}")
            f["encoder"][name][...] = sd[name]
        for grp in ("optimizer", "pretrain_heads"):  # the template's, not the twin's: drop them
            if grp in f:
                del f[grp]
        f.attrs["step"] = np.int64(step)
        f.attrs["code_version"] = np.bytes_("tools/reference/twin_pretrain.py (PyTorch twin)")  # fixed-length, as the C side writes
    os.replace(tmp, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
