"""The encoder with a RowSet on its last block (what the pretraining objective
uses: only CLS and the scored patches go through that block's queries, proj and
MLP) against the full PyTorch twin read at the same rows: the kept final tokens
and every parameter gradient of L = sum(R * final[kept]) + sum(R2 * blocks[L-3]
.out), with masking, layer scale and stochastic depth (the twin gets C's drop
scales). Images keep different numbers of rows, one keeps none but CLS, one
keeps all. Tolerances as tests/test_vit_twin.py (float64 reference).
"""
import ctypes
import numpy as np
import pytest
from conftest import require

torch = require("torch", "python3-torch")
import cbind
from cbind import ptr, f32, view
from test_kernels import row_set
from test_vit_twin import CONFIGS, twin_from_c, rel, TOL_ACT, TOL_GRAD

B = 6


@pytest.fixture(scope="module")
def C():
    lib = cbind.load()
    cbind.setup_vit_views(lib)
    lib.vit_set_last_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("drop_path", [0.0, 0.5])
def test_kept_rows_match_full_twin(C, name, drop_path):
    cfg = CONFIGS[name]
    L, D = cfg["depth"], cfg["embed_dim"]
    N = (cfg["img_size"] // cfg["patch_size"]) ** 2
    T = N + 1
    r = np.random.default_rng(21)
    kept = [[0] + sorted(r.choice(np.arange(1, T), 12, replace=False).tolist()), [0], list(range(T)),
            [0, 1, T - 1], [0] + list(range(5, 30)), [0, 7]]
    rows, keep_alive = row_set(kept)
    flat = [b * T + t for b in range(B) for t in kept[b]]
    img = f32(r.standard_normal((B, cfg["in_chans"], cfg["img_size"], cfg["img_size"])))
    mask = (r.random((B, N)) < 0.4).astype(np.uint8)
    R = f32(r.standard_normal((rows.total, D)))
    R2 = f32(r.standard_normal((B, T, D)) * 0.01)

    cm = cbind.CVit(C, B, seed=9, **cfg)
    tm = twin_from_c(cm, cfg)
    drop = None
    if drop_path:
        C.vit_set_regularisation(cm.handle, ctypes.c_float(drop_path), ctypes.c_float(0.0))
        C.vit_sample_drop_path(cm.handle, B, 3, 1, 0)
        scales = view(C.vit_drop_scales(cm.handle), (L, 2, B)).copy()
        assert (scales[L - 1] == 0).any() and (scales[L - 1] != 0).any(), "the last block's drop path is not exercised"
        drop = [(torch.tensor(scales[l, 0], dtype=torch.float64), torch.tensor(scales[l, 1], dtype=torch.float64))
                for l in range(L)]
    C.vit_set_last_rows(cm.handle, ctypes.byref(rows))
    C.vit_forward(cm.handle, ptr(img), ptr(mask), B)
    dfinal = np.zeros((B * T, D), np.float32)
    dfinal[flat] = R
    dblock = (ctypes.c_void_p * L)()
    dblock[L - 3] = R2.ctypes.data
    C.vit_backward(cm.handle, ptr(dfinal), dblock, B)
    C.vit_set_last_rows(cm.handle, None)
    final = view(C.vit_final_tokens(cm.handle), (B * T, D))[flat].copy()

    feats, outs = tm.forward_features(torch.tensor(img, dtype=torch.float64), torch.tensor(mask.astype(bool)),
                                      return_blocks=True, drop=drop)
    ref = feats.reshape(B * T, D)[flat]
    ((ref * torch.tensor(R, dtype=torch.float64)).sum() + (outs[L - 3] * torch.tensor(R2, dtype=torch.float64)).sum()).backward()
    e = rel(final, ref.detach())
    print(f"{name} drop {drop_path}: kept final tokens {e:.2e}")
    assert e < TOL_ACT, f"kept final tokens: relative error {e:.2e}"
    worst = 0
    for n, p in tm.named_parameters():
        if p.grad is None:  # not on the loss's path (the head): C must not write one either
            assert not np.any(cm.grad(n)), f"{n}: twin has no gradient but C does"
            continue
        e = rel(cm.grad(n), p.grad)
        worst = max(worst, e)
        assert e < TOL_GRAD, f"gradient of {n}: relative error {e:.2e} > {TOL_GRAD}"
    print(f"{name} drop {drop_path}: worst gradient error {worst:.2e}")
