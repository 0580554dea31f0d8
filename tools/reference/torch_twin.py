"""PyTorch twin of the C ViT: timm's VisionTransformer structure and names
(pre-norm blocks, LayerNorm eps 1e-6, exact GELU, fused qkv [3D, D]) written
in plain torch, because Debian has no timm package. Used by the tests (as the
reference), the benchmarks (as the peer) and the export check.
"""
import math
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (D // self.heads) ** -0.5
        att = att.softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, D))


class LayerScale(nn.Module):
    def __init__(self, dim, init):
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0, qkv_bias=True, layer_scale=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio)))
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()

    def forward(self, x, drop=None):
        """drop: None, or per-image branch scales (attn [B], mlp [B]) for stochastic depth."""
        a = self.ls1(self.attn(self.norm1(x)))
        if drop is not None:
            a = a * drop[0][:, None, None]
        x = x + a
        m = self.ls2(self.mlp(self.norm2(x)))
        if drop is not None:
            m = m * drop[1][:, None, None]
        return x + m


class PatchEmbed(nn.Module):
    def __init__(self, img, patch, chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(chans, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3,
                 mlp_ratio=4.0, qkv_bias=True, layer_scale_init=0.0, num_classes=0, use_mask_token=False):
        super().__init__()
        n = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim))
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        if use_mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, layer_scale_init) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else None
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward_features(self, x, mask=None, return_blocks=False, drop=None):
        """x [B,C,H,W]; mask [B,N] bool (True: replace by mask_token); drop: None or,
        per block, (attn [B], mlp [B]) stochastic-depth scales. Returns the
        final-norm tokens [B,T,D] (and every block's output when asked)."""
        e = self.patch_embed(x)
        if mask is not None:
            e = torch.where(mask[..., None], self.mask_token.expand_as(e), e)
        x = torch.cat([self.cls_token.expand(e.shape[0], -1, -1), e], dim=1) + self.pos_embed
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, None if drop is None else drop[i])
            outs.append(x)
        x = self.norm(x)
        return (x, outs) if return_blocks else x

    def forward_window(self, x, pos_rows):
        """Multi-crop's local views: x [B,C,S,S] smaller than img_size, whose token n takes
        pos_embed row pos_rows[b, n] (1-based; a window of the grid). Final-norm tokens."""
        e = self.patch_embed(x)
        pos = self.pos_embed[0]
        x = torch.cat([(self.cls_token + pos[0]).expand(e.shape[0], -1, -1), e + pos[pos_rows]], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, feats, pool="cls"):
        f = feats[:, 0] if pool == "cls" else feats[:, 1:].mean(1)
        return self.head(f)


def adamw_param_groups(model, weight_decay):
    """timm's rule: no decay for 1-D tensors, biases, pos_embed, cls/mask tokens.
    Works on a VisionTransformer and on a Pretrainer (whose encoder names carry "encoder.")."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        short = name[len("encoder."):] if name.startswith("encoder.") else name
        if p.ndim <= 1 or name.endswith(".bias") or short in ("pos_embed", "cls_token", "mask_token"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def layer_id(name, depth):
    """timm/BEiT layer-wise lr decay: embeddings 0, blocks.i -> i+1, the rest depth+1."""
    if name in ("cls_token", "pos_embed", "mask_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def lr_at_step(step, base, min_lr, warmup, total):
    """Same schedule as trainer/optim.c lr_at_step."""
    if step < warmup:
        return base * (step + 1) / warmup
    if total <= warmup:
        return base
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * progress))


# ---- the pretraining objective ------------------------------------------------------

class PixelHead(nn.Module):
    """Two fresh blocks on [CLS of the last block | patch tokens of block depth-3], LN, Linear(D -> P*P*C)."""

    def __init__(self, dim, heads, mlp_ratio, qkv_bias, layer_scale, patch_dim):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias, layer_scale) for _ in range(2)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, patch_dim)


class Projector(nn.Module):
    def __init__(self, dim, hidden, out):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x):
        return F.normalize(self.fc2(F.gelu(self.fc1(x))), dim=-1)


class PretrainHeads(nn.Module):
    def __init__(self, enc_cfg, K, patch_dim, w_token, w_pixel, w_contrast, proj_hidden, proj_dim):
        super().__init__()
        D = enc_cfg["embed_dim"]
        if w_token > 0:
            self.token_head = nn.Linear(D, K)
        if w_pixel > 0:
            self.pixel_head = PixelHead(D, enc_cfg["num_heads"], enc_cfg.get("mlp_ratio", 4.0), enc_cfg.get("qkv_bias", True),
                                        enc_cfg.get("layer_scale_init", 0.0), patch_dim)
        if w_contrast > 0:
            self.projector = Projector(D, proj_hidden, proj_dim)


class Pretrainer(nn.Module):
    """The CCViT objective in PyTorch. Parameter names: "encoder.<timm name>" and
    "pretrain.<head>" (the C side's "pretrain.*" names, and the encoder's timm names)."""

    def __init__(self, enc_cfg, K, w_token=1.0, w_pixel=1.0, w_contrast=1.0, temperature=0.2, proj_hidden=1024,
                 proj_dim=256, teacher=False):
        super().__init__()
        self.encoder = VisionTransformer(**enc_cfg, use_mask_token=True)
        P, C = enc_cfg["patch_size"], enc_cfg["in_chans"]
        self.pretrain = PretrainHeads(enc_cfg, K, C * P * P, w_token, w_pixel, w_contrast, proj_hidden, proj_dim)
        self.teacher = teacher  # teacher_momentum > 0: view2 through a frozen copy (C: "pretrain.teacher.*")
        if teacher:
            self.teacher_encoder = VisionTransformer(**enc_cfg, use_mask_token=True).requires_grad_(False)
            self.teacher_projector = Projector(enc_cfg["embed_dim"], proj_hidden, proj_dim).requires_grad_(False)
        self.w = (w_token, w_pixel, w_contrast)
        self.tau = temperature
        self.P, self.C = P, C

    def c_name(self, torch_name):
        for twin, c in (("encoder.", ""), ("teacher_encoder.", "pretrain.teacher."),
                        ("teacher_projector.", "pretrain.teacher.projector.")):
            if torch_name.startswith(twin):
                return c + torch_name[len(twin):]
        return torch_name

    def patchify(self, img):
        B, C, H, W = img.shape
        P = self.P
        return img.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5).reshape(B, (H // P) * (W // P), C * P * P)

    def forward(self, images, clean1, mask, scored, ids, view2=None, local=None):
        """images [V*B,C,H,W]: the encoder input (view1 already corrupted, then view2;
        with a teacher view1 alone, and view2 [B,C,H,W] goes to the teacher);
        clean1 [B,C,H,W]; mask [V*B,N] bool; scored [B,N] bool (masked | replaced);
        ids [B,N] long. local: None, or multi-crop's (images [L*B,C,S,S], pos_rows [L*B,Nl] long,
        positive column [L*B] long): more anchors against the same columns; the contrastive
        term is then the mean over all anchors. Returns (total, token CE, pixel MSE, NT-Xent or InfoNCE)."""
        w_tok, w_pix, w_con = self.w
        B = clean1.shape[0]
        feats, outs = self.encoder.forward_features(images, mask, return_blocks=True)
        zero = feats.new_zeros(())
        ce = mse = nce = zero
        if w_tok > 0:
            sel = feats[:B, 1:][scored]
            ce = F.cross_entropy(self.pretrain.token_head(sel), ids[scored])
        if w_pix > 0:
            ph = self.pretrain.pixel_head
            x = torch.cat([outs[-1][:B, :1], outs[-3][:B, 1:]], dim=1)
            for blk in ph.blocks:
                x = blk(x)
            pred = ph.proj(ph.norm(x[:, 1:][scored]))
            tgt = self.patchify(clean1)[scored]
            tgt = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, unbiased=True, keepdim=True) + 1e-6).sqrt()
            mse = F.mse_loss(pred, tgt)
        if w_con > 0 and self.teacher:
            q = self.pretrain.projector(feats[:, 0])
            with torch.no_grad():
                k = self.teacher_projector(self.teacher_encoder.forward_features(view2, None)[:, 0])
            nce = F.cross_entropy(q @ k.t() / self.tau, torch.arange(B))
            cols = k
        elif w_con > 0:
            z = self.pretrain.projector(feats[:, 0])
            R = z.shape[0]
            sim = z @ z.t() / self.tau
            sim = sim.masked_fill(torch.eye(R, dtype=torch.bool), float("-inf"))
            pos = torch.cat([torch.arange(R // 2, R), torch.arange(0, R // 2)])
            nce = F.cross_entropy(sim, pos)
            cols = z
        if w_con > 0 and local is not None:
            limg, rows, lpos = local
            zl = self.pretrain.projector(self.encoder.forward_window(limg, rows)[:, 0])
            R, RL = (B if self.teacher else 2 * B), zl.shape[0]
            nce = (R * nce + RL * F.cross_entropy(zl @ cols.t() / self.tau, lpos)) / (R + RL)
        return w_tok * ce + w_pix * mse + w_con * nce, ce, mse, nce


# ---- the data-side corruption (numpy/torch versions of trainer/masking.c) ------------

def block_mask(grid, count, rng):
    """BEiT-style blockwise mask with the exact count, as a flat bool array of grid*grid."""
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


@torch.no_grad()
def corrupt_batch(model, clean, cents, n_mask, n_replace, rng, mean, std):
    """clean [B,C,S,S] in [0,1] -> (view1 normalised with n_mask blockwise-masked and n_replace
    centroid-replaced patches, mask [B,N], replaced [B,N], the clean patches' centroid ids [B,N])."""
    B, C, S, _ = clean.shape
    P = model.P
    g, N = S // P, (S // P) ** 2
    patches = model.patchify(clean)
    mask = torch.tensor(np.stack([block_mask(g, n_mask, rng) for _ in range(B)]))
    rep = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        free = torch.nonzero(~mask[b]).flatten()
        rep[b, free[torch.randperm(len(free))[:n_replace]]] = True
    # Only the scored (masked or replaced) patches are tokenised, as in the C
    # objective: the others' ids are never read (-1 there).
    scored = mask | rep
    sel = patches[scored]
    d2 = (sel ** 2).sum(-1, keepdim=True) - 2 * sel @ cents.t() + (cents ** 2).sum(-1)
    ids = torch.full((B, N), -1, dtype=torch.long)
    ids[scored] = d2.argmin(-1)
    cp = torch.where(rep[..., None], cents[ids.clamp(min=0)], patches)
    view1 = (cp.reshape(B, g, g, C, P, P).permute(0, 3, 1, 4, 2, 5).reshape(B, C, S, S) - mean) / std
    return view1, mask, rep, ids
