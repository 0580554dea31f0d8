"""PyTorch twin of the C ViT: timm's VisionTransformer structure and names
(pre-norm blocks, LayerNorm eps 1e-6, exact GELU, fused qkv [3D, D]) written
in plain torch, because Debian has no timm package. Used by the tests (as the
reference), the benchmarks (as the peer) and the export check.
"""
import math
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

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


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

    def forward_features(self, x, mask=None, return_blocks=False):
        """x [B,C,H,W]; mask [B,N] bool (True: replace by mask_token). Returns the
        final-norm tokens [B,T,D] (and every block's output when asked)."""
        e = self.patch_embed(x)
        if mask is not None:
            e = torch.where(mask[..., None], self.mask_token.expand_as(e), e)
        x = torch.cat([self.cls_token.expand(e.shape[0], -1, -1), e], dim=1) + self.pos_embed
        outs = []
        for blk in self.blocks:
            x = blk(x)
            outs.append(x)
        x = self.norm(x)
        return (x, outs) if return_blocks else x

    def forward_head(self, feats, pool="cls"):
        f = feats[:, 0] if pool == "cls" else feats[:, 1:].mean(1)
        return self.head(f)


def adamw_param_groups(model, weight_decay):
    """timm's rule: no decay for 1-D tensors, biases, pos_embed, cls/mask tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token", "mask_token"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at_step(step, base, min_lr, warmup, total):
    """Same schedule as trainer/optim.c lr_at_step."""
    if step < warmup:
        return base * (step + 1) / warmup
    if total <= warmup:
        return base
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * progress))
