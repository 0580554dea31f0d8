#!/usr/bin/python3
"""Export a CCViT checkpoint (HDF5, trainer/checkpoint.h) to a PyTorch state dict
with timm's key names, loadable by timm.models.VisionTransformer (or
tools/reference/torch_twin.VisionTransformer) with load_state_dict(strict=True).

usage: tools/programs/export_torch.py CHECKPOINT.h5 OUT.pt [--with-heads] [--print-config]
  --with-heads     also the pretraining heads ("mask_token", "pretrain.*"); timm
                   models will need strict=False for those
  --print-config   print the keyword arguments of the matching timm model
By default only the encoder goes out (what fine-tuning and feature extraction need).
Needs Debian's python3-h5py and python3-torch (run with /usr/bin/python3).
"""
import argparse, sys

FORMAT_VERSION = 1


def read_checkpoint(path, with_heads=False):
    """Returns (state dict of numpy arrays, root attributes)."""
    import h5py
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        sys.exit(f"error: cannot open '{path}' as HDF5 ({e}); is it a complete checkpoint?")
    with f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        version = int(attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            sys.exit(f"error: '{path}' has checkpoint format version {version}; this script reads {FORMAT_VERSION}")
        sd = {}
        for name, ds in f["encoder"].items():
            sd[name] = ds[()]
        if with_heads and "pretrain_heads" in f:
            for name, ds in f["pretrain_heads"].items():
                sd[name if name == "mask_token" else "pretrain." + name] = ds[()]
    return sd, attrs


def timm_kwargs(attrs):
    """The timm VisionTransformer arguments of the checkpoint's config."""
    import yaml  # python3-yaml ships with Debian's python3
    cfg = yaml.safe_load(attrs["config_yaml"].decode() if isinstance(attrs["config_yaml"], bytes) else attrs["config_yaml"])
    return dict(img_size=cfg["img_size"], patch_size=cfg["patch_size"], in_chans=cfg["in_chans"],
                embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
                mlp_ratio=cfg["mlp_ratio"], qkv_bias=bool(cfg["qkv_bias"]),
                init_values=cfg["layer_scale_init"] or None, num_classes=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--with-heads", action="store_true")
    ap.add_argument("--print-config", action="store_true")
    a = ap.parse_args()
    import torch
    sd, attrs = read_checkpoint(a.checkpoint, a.with_heads)
    state = {k: torch.from_numpy(v.astype("float32", copy=False)).contiguous() for k, v in sorted(sd.items())}
    torch.save(state, a.out)
    n = sum(v.numel() for v in state.values())
    print(f"{a.out}: {len(state)} tensors, {n:,} parameters, from step {int(attrs.get('step', -1))}")
    if a.print_config:
        print("timm.models.vision_transformer.VisionTransformer(", ", ".join(f"{k}={v!r}" for k, v in timm_kwargs(attrs).items()), ")")


if __name__ == "__main__":
    main()
