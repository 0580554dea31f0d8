"""build_tokenizer end to end: loader -> patches in (c, y, x) order -> k-means -> HDF5.

Two 32x32 images, patch 16, K = 8 = the number of patches: every centroid must
be exactly one patch, so the file shows whether patches are cut and flattened
in the ViT's (c, y, x) order.
"""
import os, subprocess

import numpy as np
import pytest

from conftest import ROOT, require

BIN = os.path.join(ROOT, "build", "bin", "build_tokenizer")


def make_folder(tmp, channels):
    require("PIL", "python3-pil")
    from PIL import Image
    rng = np.random.default_rng(0)
    imgs = []
    for c in ("a", "b"):
        os.makedirs(tmp / c)
        shape = (32, 32, 3) if channels == 3 else (32, 32)
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        Image.fromarray(a).save(tmp / c / "x.png")
        imgs.append(a.astype(np.float32) / 255)
    return imgs


def expected_patches(img, channels):
    chw = img.transpose(2, 0, 1) if channels == 3 else img[None]
    return chw.reshape(channels, 2, 16, 2, 16).transpose(1, 3, 0, 2, 4).reshape(4, channels * 256)


@pytest.mark.parametrize("channels", [3, 1])
def test_build_tokenizer_patch_order(tmp_path, channels):
    h5py = require("h5py", "python3-h5py")
    if not os.path.exists(BIN):
        pytest.fail(f"{BIN} not built: run `make`", pytrace=False)
    imgs = make_folder(tmp_path / "data", channels)
    out = tmp_path / "tok.h5"
    r = subprocess.run([BIN, "--image-folder", str(tmp_path / "data"), "--image-size", "32", "--resize", "32", "--patch", "16",
                        "--channels", str(channels), "--k", "8", "--iters", "3", "--images-per-class", "1", "--seed", "3",
                        "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with h5py.File(out, "r") as f:
        g = f["tokenizer"]
        cent = g["centroids"][()]
        assert cent.shape == (8, channels * 256)
        assert int(g.attrs["patch_size"]) == 16 and int(g.attrs["channels"]) == channels
        assert g.attrs["pixel_order"].decode() == "c,y,x"
        assert list(g["counts"][()]) == [1] * 8
    want = np.concatenate([expected_patches(a, channels) for a in imgs])
    # Every expected patch is some centroid (the resize is the identity at 32 px).
    dist = ((want[:, None, :] - cent[None, :, :]) ** 2).max(axis=2)
    assert dist.min(axis=1).max() < (1.5 / 255) ** 2, dist.min(axis=1)


def test_build_tokenizer_errors(tmp_path):
    r = subprocess.run([BIN, "--image-folder", str(tmp_path / "missing"), "--out", str(tmp_path / "t.h5")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "missing" in r.stderr
    r = subprocess.run([BIN, "--out", str(tmp_path / "t.h5")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--image-folder" in r.stderr
