"""The whole C ViT against its PyTorch twin (tools/reference/torch_twin.py, timm's
structure), on the same weights and inputs: final tokens, an intermediate
block's output, logits, loss and every parameter gradient, with a masked subset
of positions and a gradient injected at an intermediate block (the path CCViT's
pixel head uses). Then 10 AdamW steps with warmup, clipping and weight decay:
every loss and every final weight.

The reference runs in float64, so the differences are the C model's float32
rounding. Observed per-tensor relative errors (max |diff| / max |ref|):
activations and loss <= 4.4e-7, gradients <= 2.8e-6, fine-tune weights after
4 steps <= 1.3e-5; the tolerances are about 4x those. The 10 AdamW steps compare
the updates w - w0 (relative to each tensor's largest update): <= 1.2e-4,
tolerance 1e-3 (Adam moves an element whose gradient is float32 noise by ~lr
either way; see test_objective_twin.py).
"""
import ctypes
import numpy as np
import pytest
from conftest import require

torch = require("torch", "python3-torch")
import torch_twin
import cbind
from cbind import ptr, f32, view

CONFIGS = {
    "plain": dict(img_size=32, patch_size=4, in_chans=3, embed_dim=64, depth=3, num_heads=2, mlp_ratio=4.0,
                  qkv_bias=1, layer_scale_init=0.0, num_classes=10, use_mask_token=1),
    "layerscale_nobias_grey": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=48, depth=3, num_heads=3,
                                   mlp_ratio=2.0, qkv_bias=0, layer_scale_init=0.1, num_classes=7, use_mask_token=1),
}
B = 8
TOL_ACT, TOL_GRAD, TOL_WEIGHT, TOL_UPDATE = 2e-6, 1e-5, 5e-5, 1e-3


@pytest.fixture(scope="module")
def C():
    lib = cbind.load()
    cbind.setup_vit_views(lib)
    return lib


def rel(a, b):
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) + 1e-30))


def twin_from_c(cm, cfg):
    tm = torch_twin.VisionTransformer(**{k: v for k, v in cfg.items()}).double()
    sd = tm.state_dict()
    names = cm.names()
    assert sorted(names) == sorted(sd.keys()), f"names differ: {set(names) ^ set(sd.keys())}"
    for n in names:
        assert tuple(sd[n].shape) == cm.tensor(n).shape, f"{n}: shape {tuple(sd[n].shape)} vs {cm.tensor(n).shape}"
        sd[n] = torch.tensor(cm.tensor(n), dtype=torch.float64)
    tm.load_state_dict(sd)
    return tm


def inputs(cfg, seed):
    r = np.random.default_rng(seed)
    n = (cfg["img_size"] // cfg["patch_size"]) ** 2
    img = f32(r.standard_normal((B, cfg["in_chans"], cfg["img_size"], cfg["img_size"])))
    mask = (r.random((B, n)) < 0.4).astype(np.uint8)
    labels = r.integers(0, cfg["num_classes"], B).astype(np.int32)
    return img, mask, labels


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("pool", [0, 1])
def test_forward_backward_matches_twin(C, name, pool):
    cfg = CONFIGS[name]
    cm = cbind.CVit(C, B, seed=7, **cfg)
    tm = twin_from_c(cm, cfg)
    img, mask, labels = inputs(cfg, 3)
    L, T, D = cfg["depth"], (cfg["img_size"] // cfg["patch_size"]) ** 2 + 1, cfg["embed_dim"]
    R = f32(np.random.default_rng(5).standard_normal((B, T, D)) * 0.01)

    # C: loss = CE(head(pool(final))) + sum(R * blocks[L-3].out)
    C.vit_forward(cm.handle, ptr(img), ptr(mask), B)
    loss = C.vit_head_forward(cm.handle, ptr(labels), B, pool)
    C.vit_head_backward(cm.handle, ptr(labels), B, pool, ctypes.c_float(1.0))
    dblock = (ctypes.c_void_p * L)()
    dblock[L - 3] = R.ctypes.data
    C.vit_backward(cm.handle, C.vit_head_dfinal(cm.handle), dblock, B)  # the head filled vit->dfinal

    final = view(C.vit_final_tokens(cm.handle), (B, T, D)).copy()
    inter = view(C.vit_block_output(cm.handle, L - 3), (B, T, D)).copy()
    logits = view(C.vit_logits(cm.handle), (B, cfg["num_classes"])).copy()

    timg = torch.tensor(img, dtype=torch.float64)
    feats, outs = tm.forward_features(timg, torch.tensor(mask.astype(bool)), return_blocks=True)
    tlogits = tm.forward_head(feats, "mean" if pool else "cls")
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.tensor(labels, dtype=torch.long))
    (tloss + (outs[L - 3] * torch.tensor(R, dtype=torch.float64)).sum()).backward()

    errs = {"final tokens": rel(final, feats.detach()), f"block {L-3} output": rel(inter, outs[L - 3].detach()),
            "logits": rel(logits, tlogits.detach()), "loss": abs(loss - tloss.item()) / abs(tloss.item())}
    for k, e in errs.items():
        print(f"{name} pool={pool} {k}: {e:.2e}")
        assert e < TOL_ACT, f"{k}: relative error {e:.2e} > {TOL_ACT}"
    worst = 0
    for n, p in tm.named_parameters():
        e = rel(cm.grad(n), p.grad)
        worst = max(worst, e)
        assert e < TOL_GRAD, f"gradient of {n}: relative error {e:.2e} > {TOL_GRAD}"
    print(f"{name} pool={pool} worst gradient error over {len(list(tm.parameters()))} tensors: {worst:.2e}")


def test_adamw_steps_match_twin(C):
    cfg = CONFIGS["plain"]
    cm = cbind.CVit(C, B, seed=11, **cfg)
    tm = twin_from_c(cm, cfg)
    initial = {n: cm.tensor(n).copy() for n in cm.names()}
    base_lr, min_lr, warmup, total, clip, wd = 2e-3, 1e-4, 4, 10, 0.5, 0.05
    opt = cbind.AdamWState()
    C.adamw_init(ctypes.byref(opt), ctypes.c_void_p(cm.table), 0.9, 0.999, 1e-8, wd)
    topt = torch.optim.AdamW(torch_twin.adamw_param_groups(tm, wd), lr=base_lr, betas=(0.9, 0.999), eps=1e-8)
    clipped = 0
    for step in range(total):
        img, mask, labels = inputs(cfg, 100 + step)
        lr = C.lr_at_step(step, base_lr, min_lr, warmup, total)
        assert abs(lr - torch_twin.lr_at_step(step, base_lr, min_lr, warmup, total)) < 1e-15
        C.params_zero_grad(ctypes.c_void_p(cm.table))
        C.vit_forward(cm.handle, ptr(img), ptr(mask), B)
        loss = C.vit_head_forward(cm.handle, ptr(labels), B, 0)
        C.vit_head_backward(cm.handle, ptr(labels), B, 0, ctypes.c_float(1.0))
        C.vit_backward(cm.handle, C.vit_head_dfinal(cm.handle), None, B)
        D = cfg["embed_dim"]
        # the key bias's true gradient is 0 (see below): C's must be rounding noise,
        # observed <= 6.2e-9 of the q/v bias gradient (a real gradient would be ~1e-1)
        for l in range(cfg["depth"]):
            g = cm.grad(f"blocks.{l}.attn.qkv.bias")
            key_share = np.max(np.abs(g[D:2 * D])) / np.max(np.abs(np.concatenate([g[:D], g[2 * D:]])))
            assert key_share < 1e-6, f"blocks.{l}: key-bias gradient {key_share:.1e} of the q/v bias gradient"
        norm = C.clip_grad_norm(ctypes.byref(opt), ctypes.c_void_p(cm.table), clip)
        C.adamw_step(ctypes.byref(opt), ctypes.c_void_p(cm.table), ctypes.c_float(lr))

        topt.zero_grad()
        feats = tm.forward_features(torch.tensor(img, dtype=torch.float64), torch.tensor(mask.astype(bool)))
        tloss = torch.nn.functional.cross_entropy(tm.forward_head(feats, "cls"), torch.tensor(labels, dtype=torch.long))
        tloss.backward()
        tnorm = torch.nn.utils.clip_grad_norm_(tm.parameters(), clip).item()
        for g in topt.param_groups:
            g["lr"] = lr
        topt.step()
        clipped += tnorm > clip
        assert abs(norm - tnorm) / tnorm < TOL_GRAD, f"step {step}: global gradient norm C {norm} vs torch {tnorm}"
        e = abs(loss - tloss.item()) / abs(tloss.item())
        print(f"step {step}: lr {lr:.2e} loss C {loss:.6f} torch {tloss.item():.6f} (rel {e:.1e}) grad norm {norm:.4f} / {tnorm:.4f}")
        assert e < TOL_ACT * 4, f"step {step}: loss differs by {e:.2e}"
    assert clipped >= 3, "the test should exercise clipping"
    worst = 0
    D = cfg["embed_dim"]
    for n, p in tm.named_parameters():
        # the updates, not the weights: a norm's weight of ~1 would hide an error in its small update
        ours, ref = cm.tensor(n) - initial[n], p.detach().numpy() - initial[n]
        if n.endswith("attn.qkv.bias"):
            # The key bias adds the same constant to every score of a query row,
            # which softmax ignores: its true gradient is 0, and both sides hold
            # rounding noise (1e-17 in float64, 1e-9 in float32) that Adam's
            # normalisation turns into steps of up to lr. Compare q and v; the key
            # bias's gradient is checked to be noise at every step above.
            ours, ref = np.concatenate([ours[:D], ours[2 * D:]]), np.concatenate([ref[:D], ref[2 * D:]])
        e = rel(ours, ref)
        worst = max(worst, e)
        assert e < TOL_UPDATE, f"{n}: its update over {total} steps has relative error {e:.2e}"
    print(f"worst update error after {total} AdamW steps: {worst:.2e}")


def test_finetune_step_matches_twin(C):
    """Fine-tuning pieces: stochastic depth (the same per-image branch scales on
    both sides), label smoothing 0.1, layer-wise lr decay 0.75 as per-tensor lr,
    mean-pool head; 4 AdamW steps must match."""
    cfg = dict(CONFIGS["layerscale_nobias_grey"], use_mask_token=0)
    cm = cbind.CVit(C, B, seed=13, **cfg)
    tm = twin_from_c(cm, cfg)
    L = cfg["depth"]
    C.vit_set_regularisation(cm.handle, 0.3, 0.1)
    names = cm.names()
    lr_scale = {n: 0.75 ** (L + 1 - torch_twin.layer_id(n, L)) for n in names}
    C.vit_set_layer_decay(cm.handle, 0.75)  # what train.c calls
    for i, n in enumerate(names):
        ours = C.params_lr_scale(ctypes.c_void_p(cm.table), i)
        assert abs(ours - lr_scale[n]) <= 1e-7 * lr_scale[n], f"{n}: lr scale {ours} vs BEiT's {lr_scale[n]}"
    opt = cbind.AdamWState()
    C.adamw_init(ctypes.byref(opt), ctypes.c_void_p(cm.table), 0.9, 0.999, 1e-8, 0.05)
    groups = []
    for n, p in tm.named_parameters():
        nd = p.ndim <= 1 or n.endswith(".bias") or n in ("pos_embed", "cls_token")
        groups.append({"params": [p], "lr": 1e-3 * lr_scale[n], "scale": lr_scale[n], "weight_decay": 0.0 if nd else 0.05})
    topt = torch.optim.AdamW(groups, lr=1e-3, eps=1e-8)
    dropped = 0
    for step in range(4):
        img, _, labels = inputs(cfg, 200 + step)
        C.params_zero_grad(ctypes.c_void_p(cm.table))
        C.vit_sample_drop_path(cm.handle, B, 5, step, 0)
        scales = view(C.vit_drop_scales(cm.handle), (L, 2, B)).copy()
        dropped += int((scales == 0).sum())
        for l in range(L):  # a survivor is scaled by 1 / keep, keep = 1 - 0.3 l / (L - 1) (timm's linspace)
            keep = 1 - 0.3 * l / (L - 1)
            assert np.all((scales[l] == 0) | (np.abs(scales[l] - 1 / keep) < 1e-6)), f"block {l}: scales {scales[l]}"
        C.vit_forward(cm.handle, ptr(img), None, B)
        loss = C.vit_head_forward(cm.handle, ptr(labels), B, 1)
        C.vit_head_backward(cm.handle, ptr(labels), B, 1, ctypes.c_float(1.0))
        C.vit_backward(cm.handle, C.vit_head_dfinal(cm.handle), None, B)
        topt.zero_grad()
        drop = [(torch.tensor(scales[l, 0], dtype=torch.float64), torch.tensor(scales[l, 1], dtype=torch.float64))
                for l in range(L)]
        feats = tm.forward_features(torch.tensor(img, dtype=torch.float64), drop=drop)
        tloss = torch.nn.functional.cross_entropy(tm.forward_head(feats, "mean"), torch.tensor(labels, dtype=torch.long),
                                                  label_smoothing=0.1)
        tloss.backward()
        for n, p in tm.named_parameters():  # Adam hides a gradient's scale: compare the gradients themselves
            e = rel(cm.grad(n), p.grad)
            assert e < TOL_GRAD, f"finetune step {step}: gradient of {n}: relative error {e:.2e}"
        C.adamw_step(ctypes.byref(opt), ctypes.c_void_p(cm.table), ctypes.c_float(1e-3))
        topt.step()
        e = abs(loss - tloss.item()) / abs(tloss.item())
        print(f"finetune step {step}: C {loss:.6f} torch {tloss.item():.6f} rel {e:.1e}")
        assert e < TOL_ACT * 4, f"step {step}: loss differs by {e:.2e}"
    assert dropped > 0, "stochastic depth dropped no branch: the test would not exercise it"
    assert (scales[0] == 1).all(), "block 0 has drop rate 0 (timm's linspace)"
    worst = 0
    for n, p in tm.named_parameters():
        e = rel(cm.tensor(n), p.detach())
        worst = max(worst, e)
        assert e < TOL_WEIGHT, f"weight {n} after 4 fine-tune steps: relative error {e:.2e}"
    print(f"fine-tune: worst weight error {worst:.2e}, {dropped} branch drops")


def test_drop_path_rates_per_block(C):
    """Over 300 draws of 8 images, each block's branches are dropped at its rate
    0.3 l / (L - 1) (timm's linspace), within 4 binomial standard deviations."""
    cfg = dict(CONFIGS["layerscale_nobias_grey"], use_mask_token=0)
    L = cfg["depth"]
    cm = cbind.CVit(C, B, seed=13, **cfg)
    C.vit_set_regularisation(cm.handle, 0.3, 0.0)
    drops = np.zeros(L)
    steps = 300
    for step in range(steps):
        C.vit_sample_drop_path(cm.handle, B, 9, step, 0)
        drops += (view(C.vit_drop_scales(cm.handle), (L, 2, B)) == 0).sum(axis=(1, 2))
    n = steps * 2 * B
    for l in range(L):
        rate = 0.3 * l / (L - 1)
        sd = np.sqrt(n * rate * (1 - rate))
        print(f"block {l}: dropped {drops[l] / n:.3f}, rate {rate:.3f}")
        assert abs(drops[l] - n * rate) <= 4 * sd + 1e-9, f"block {l}: dropped {drops[l] / n:.3f} of branches, want {rate}"
