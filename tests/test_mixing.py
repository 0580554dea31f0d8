"""Mixup and cutmix for fine-tuning (trainer/mixing.c) and the soft-target cross-entropy
they train against (kernels.c), against PyTorch and numpy re-computations.

Mixing is exact arithmetic on given draws (a lambda-weighted sum, or a box copy), so
the images are checked against numpy to float32 rounding (1e-6) and the targets to
1e-6. The draws are checked by their statistics: Beta(a, a) has mean 1/2 and variance
1 / (4 (2a + 1)); over 4000 draws the sample mean's standard error is < 0.005 and the
variance's < 0.003, so the tolerances 0.02 and 0.01 are 4 standard errors and fail a
wrong alpha (a = 0.8 vs 1 changes the variance by 0.013).
"""
import ctypes
import numpy as np
import pytest
from conftest import require

torch = require("torch", "python3-torch")
import cbind
from cbind import ptr, f32

c_int, c_float, c_void = ctypes.c_int, ctypes.c_float, ctypes.c_void_p


@cbind.mirrors("MixConfig")
class MixConfig(ctypes.Structure):
    _fields_ = [("mixup_alpha", c_float), ("cutmix_alpha", c_float), ("smoothing", c_float), ("num_classes", c_int),
                ("seed", ctypes.c_uint64)]


@pytest.fixture(scope="module")
def C():
    lib = cbind.load()
    lib.mix_batch.argtypes = [c_void] * 6 + [c_int] * 4 + [c_void, ctypes.c_int64, ctypes.c_int64]
    lib.softmax_xent_soft_forward.restype = c_float
    lib.softmax_xent_soft_forward.argtypes = [c_void, c_void, c_void, c_int, c_int]
    lib.softmax_xent_soft_backward.argtypes = [c_void, c_void, c_void, c_int, c_int, c_float]
    return lib


def mix(C, images, labels, cfg, step, first=0):
    B, Ch, H, W = images.shape
    out, targets = np.zeros_like(images), np.zeros((B, cfg.num_classes), np.float32)
    lam, box = np.zeros(B, np.float32), np.zeros((B, 4), np.int32)
    C.mix_batch(ptr(out), ptr(targets), ptr(lam), ptr(box), ptr(images), ptr(labels), B, Ch, H, W,
                ctypes.byref(cfg), step, first)
    return out, targets, lam, box


def smoothed(y, K, eps):
    q = np.full(K, eps / K)
    q[y] += 1 - eps
    return q


def test_soft_target_cross_entropy_matches_torch():
    """Loss and logit gradient against torch's -(t * log_softmax).sum(-1).mean() in float64,
    relative 1e-6 (float32 rounding over K = 10 terms), and its gradient by finite differences."""
    C_ = cbind.load()
    C_.softmax_xent_soft_forward.restype = c_float
    r = np.random.default_rng(0)
    N, K = 9, 10
    logits = f32(r.standard_normal((N, K)) * 3)
    t = r.random((N, K))
    t = f32(t / t.sum(1, keepdims=True))
    probs, dl = np.zeros_like(logits), np.zeros_like(logits)
    loss = C_.softmax_xent_soft_forward(ptr(probs), ptr(logits), ptr(t), N, K)
    C_.softmax_xent_soft_backward(ptr(dl), ptr(probs), ptr(t), N, K, c_float(0.7))
    tl = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    ref = -(torch.tensor(t, dtype=torch.float64) * torch.log_softmax(tl, -1)).sum(-1).mean()
    (0.7 * ref).backward()
    assert abs(loss - ref.item()) <= 1e-6 * abs(ref.item())
    assert np.max(np.abs(dl - tl.grad.numpy())) <= 1e-6 * np.max(np.abs(tl.grad.numpy()))
    v = r.standard_normal((N, K))
    e = 1e-3
    f = lambda x: C_.softmax_xent_soft_forward(ptr(np.zeros_like(logits)), ptr(f32(x)), ptr(t), N, K)
    numeric = (f(logits + e * v) - f(logits - e * v)) / (2 * e)
    analytic = float(np.sum(dl / 0.7 * v))
    assert abs(numeric - analytic) <= 1e-2 * abs(analytic), (numeric, analytic)


@pytest.mark.parametrize("kind", ["mixup", "cutmix", "both"])
def test_mixed_images_and_targets(C, kind):
    r = np.random.default_rng(1)
    B, Ch, H, W, K, eps = 7, 2, 12, 10, 10, 0.1
    images = f32(r.standard_normal((B, Ch, H, W)))
    labels = r.integers(0, K, B).astype(np.int32)
    cfg = MixConfig(mixup_alpha=0.8 if kind != "cutmix" else 0, cutmix_alpha=1.0 if kind != "mixup" else 0,
                    smoothing=eps, num_classes=K, seed=5)
    kinds = set()
    for step in range(12):
        out, targets, lam, box = mix(C, images, labels, cfg, step)
        assert np.allclose(targets.sum(1), 1, atol=1e-6)
        for a in range(0, B - 1, 2):
            b = a + 1
            assert lam[a] == lam[b] and (box[a] == box[b]).all(), "a pair shares its draws"
            l = float(lam[a])
            if box[a].any():  # cutmix: the box swapped, lambda from its area
                kinds.add("cutmix")
                y0, y1, x0, x1 = box[a]
                assert abs(l - (1 - (y1 - y0) * (x1 - x0) / (H * W))) < 1e-6
                for i, j in ((a, b), (b, a)):
                    want = images[i].copy()
                    want[:, y0:y1, x0:x1] = images[j][:, y0:y1, x0:x1]
                    assert np.array_equal(out[i], want)
            else:
                kinds.add("mixup")
                for i, j in ((a, b), (b, a)):
                    assert np.allclose(out[i], l * images[i] + (1 - l) * images[j], atol=1e-6)
            for i, j in ((a, b), (b, a)):
                want = l * smoothed(labels[i], K, eps) + (1 - l) * smoothed(labels[j], K, eps)
                assert np.allclose(targets[i], want, atol=1e-6)
        assert np.array_equal(out[B - 1], images[B - 1]) and lam[B - 1] == 1, "the unpaired last image is kept"
        assert np.allclose(targets[B - 1], smoothed(labels[B - 1], K, eps), atol=1e-6)
    assert kinds == ({"mixup", "cutmix"} if kind == "both" else {kind})


def test_lambda_follows_beta_and_both_kinds_take_turns(C):
    B, K, n = 2, 3, 4000
    images, labels = np.zeros((B, 1, 4, 4), np.float32), np.zeros(B, np.int32)
    for alpha in (0.8, 2.0):
        cfg = MixConfig(mixup_alpha=alpha, cutmix_alpha=0, smoothing=0, num_classes=K, seed=11)
        lam = np.array([mix(C, images, labels, cfg, s)[2][0] for s in range(n)], np.float64)
        var = 1 / (4 * (2 * alpha + 1))
        assert abs(lam.mean() - 0.5) < 0.02 and abs(lam.var() - var) < 0.01, (alpha, lam.mean(), lam.var(), var)
    cfg = MixConfig(mixup_alpha=1.0, cutmix_alpha=1.0, smoothing=0, num_classes=K, seed=12)
    images = np.ones((B, 1, 16, 16), np.float32)
    cut = np.mean([mix(C, images, labels, cfg, s)[3][0].any() for s in range(1000)])
    assert 0.43 < cut < 0.57, f"cutmix took {cut:.2f} of the pairs, not half"


def test_ranks_holding_halves_mix_as_one_process(C):
    """Pairs never straddle a rank's even slice, and draws depend on the global image: two halves
    mixed with first_image 0 and 4 give the whole batch's result, bit for bit."""
    r = np.random.default_rng(3)
    images, labels = f32(r.standard_normal((8, 1, 8, 8))), r.integers(0, 10, 8).astype(np.int32)
    cfg = MixConfig(mixup_alpha=0.8, cutmix_alpha=1.0, smoothing=0.1, num_classes=10, seed=4)
    whole = mix(C, images, labels, cfg, 5)
    halves = [mix(C, np.ascontiguousarray(images[h:h + 4]), np.ascontiguousarray(labels[h:h + 4]), cfg, 5, h)
              for h in (0, 4)]
    for k in range(4):
        assert np.array_equal(whole[k], np.concatenate([halves[0][k], halves[1][k]]))
    assert not np.array_equal(whole[0], images), "nothing was mixed"
