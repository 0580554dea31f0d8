"""Random erasing for fine-tuning (trainer/erasing.c), against timm's RandomErasing
procedure (mode 'pixel', one box) re-run in numpy.

The erasing itself is exact (values outside the box untouched, inside replaced), so those
checks are exact. The draws are checked by their statistics over n = 20000 images:
  - the share erased is prob; binomial standard error at 0.25 is 0.003, tolerance 0.015;
  - the box's area share and aspect follow timm's attempts; their means are compared with
    the numpy re-run's (its own 20000 draws), tolerance 5 standard errors of the difference;
    a wrong area range (e.g. [0.02, 0.4]) or a missing rounding shifts the mean area share
    by > 10 standard errors at 28 x 28;
  - the noise is N(0, 1): over > 1e6 erased values mean within 0.01 and variance within 0.01.
"""
import ctypes
import math
import numpy as np
import pytest

import cbind
from cbind import ptr, f32

c_int, c_float, c_void = ctypes.c_int, ctypes.c_float, ctypes.c_void_p


@pytest.fixture(scope="module")
def C():
    lib = cbind.load()
    lib.erase_batch.argtypes = [c_void, c_void] + [c_int] * 4 + [c_float, ctypes.c_uint64, ctypes.c_int64,
                                                                   ctypes.c_int64]
    return lib


def erase(C, images, prob, seed, step, first=0):
    out = images.copy()
    box = np.zeros((len(images), 4), np.int32)
    B, Ch, H, W = images.shape
    C.erase_batch(ptr(out), ptr(box), B, Ch, H, W, prob, seed, step, first)
    return out, box


def timm_box(rng, H, W):
    """timm.data.random_erasing.RandomErasing._erase's box, count 1 (numpy draws)."""
    area = H * W
    for _ in range(10):
        target = rng.uniform(0.02, 1 / 3) * area
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if w < W and h < H:
            top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
            return top, top + h, left, left + w
    return None


def test_only_the_box_changes_and_the_noise_is_standard_normal(C):
    r = np.random.default_rng(0)
    images = f32(r.standard_normal((64, 2, 28, 28)) + 5)  # +5: noise is told from the image
    noise, erased = [], 0
    for step in range(40):
        out, box = erase(C, images, 0.5, 7, step)
        for i in range(len(images)):
            y0, y1, x0, x1 = box[i]
            outside = np.ones((28, 28), bool)
            outside[y0:y1, x0:x1] = False
            assert np.array_equal(out[i][:, outside], images[i][:, outside])
            if box[i].any():
                erased += 1
                assert 0 <= y0 < y1 < 28 + 1 and 0 <= x0 < x1 <= 28 and (y1 - y0) < 28 and (x1 - x0) < 28
                noise.append(out[i][:, y0:y1, x0:x1].ravel())
    noise = np.concatenate(noise).astype(np.float64)
    assert erased > 1000 and noise.size > 200_000
    assert abs(noise.mean()) < 0.01 and abs(noise.var() - 1) < 0.01, (noise.mean(), noise.var())


def test_draws_follow_timm(C):
    n, H, W = 20000, 28, 28
    images = np.zeros((n, 1, H, W), np.float32)
    _, box = erase(C, images, 0.25, 3, 0)
    hit = box.any(1)
    assert abs(hit.mean() - 0.25) < 0.015, hit.mean()
    _, box = erase(C, images, 1.0, 3, 1)
    rng = np.random.default_rng(0)
    ref = np.array([timm_box(rng, H, W) or (0, 0, 0, 0) for _ in range(n)])
    for name, b in (("ours", box), ("timm", ref)):
        assert b.any(1).all(), f"{name}: at 28 x 28 some attempt always fits"

    def stats(b):
        h, w = (b[:, 1] - b[:, 0]).astype(float), (b[:, 3] - b[:, 2]).astype(float)
        return {"area": h * w / (H * W), "log_aspect": np.log(h / w), "top": b[:, 0].astype(float)}
    ours, theirs = stats(box), stats(ref)
    for k in ours:
        se = math.sqrt(ours[k].var() / n + theirs[k].var() / n)
        assert abs(ours[k].mean() - theirs[k].mean()) < 5 * se, (k, ours[k].mean(), theirs[k].mean(), se)
        assert abs(ours[k].std() - theirs[k].std()) < 0.03 * theirs[k].std() + 1e-9, (k, ours[k].std(), theirs[k].std())


def test_ranks_holding_halves_erase_as_one_process(C):
    r = np.random.default_rng(1)
    images = f32(r.standard_normal((8, 1, 12, 12)))
    whole = erase(C, images, 0.7, 9, 4)
    halves = [erase(C, np.ascontiguousarray(images[h:h + 4]), 0.7, 9, 4, h) for h in (0, 4)]
    for k in range(2):
        assert np.array_equal(whole[k], np.concatenate([halves[0][k], halves[1][k]]))
    assert not np.array_equal(whole[0], images), "nothing was erased"
    assert not np.array_equal(whole[0], erase(C, images, 0.7, 9, 5)[0]), "the step picks the draws"
