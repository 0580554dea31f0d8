"""Each C kernel's forward and backward against PyTorch, plus a finite-difference
check of every backward against our own forward.

Reference: torch autograd in float64 on the same (float32) inputs, so the
observed difference is our float32 rounding alone. Metric: max |ours - ref| /
max |ref| over the tensor. float32's unit roundoff is 6e-8; our sums run over
at most a few hundred terms, and the observed errors are 3e-8..1.1e-6 (the
worst: attention at T=197), so the tolerance is 3e-6 (3x the worst observed).

Finite differences: along a random direction v of every input, the central
difference (L(x+ev) - L(x-ev)) / 2e with L = sum(R * out) in float64 must match
<grad, v> from our backward within 1% (float32 forward noise / e ~ 1e-4 and the
O(e^2) truncation term are below that; the worst observed is 3.5e-3, on the
scalar cross-entropy whose single float32 output carries the most noise).
"""
import ctypes
import numpy as np
import pytest
from conftest import require

torch = require("torch", "python3-torch")
import cbind
from cbind import ptr, f32

TOL = 3e-6
rng = np.random.default_rng(1234)


@pytest.fixture(scope="module")
def C():
    return cbind.load()


def rel_err(ours, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / (np.max(np.abs(ref)) + 1e-30))


def check(name, ours, ref, tol=TOL):
    e = rel_err(ours, ref)
    print(f"{name}: rel err {e:.2e} (tol {tol:.0e})")
    assert e < tol, f"{name}: relative error {e:.3e} exceeds {tol:.0e}"


def t64(a, grad=True):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def fd_check(name, forward, inputs, grads, out_shape, eps=3e-3, tol=1e-2, trials=3):
    """forward(inputs) -> float32 output; grads: our d(sum(R*out))/d input, for R below."""
    R = grads["__R__"]
    for t in range(trials):
        dirs = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in inputs.items()}
        analytic = sum(float(np.sum(grads[k].astype(np.float64) * dirs[k])) for k in inputs)
        plus = {k: f32(v + eps * dirs[k]) for k, v in inputs.items()}
        minus = {k: f32(v - eps * dirs[k]) for k, v in inputs.items()}
        numeric = (np.sum(R * forward(plus).astype(np.float64)) - np.sum(R * forward(minus).astype(np.float64))) / (2 * eps)
        e = abs(numeric - analytic) / (abs(analytic) + 1e-8)
        print(f"{name} finite differences: analytic {analytic:.6f} numeric {numeric:.6f} rel {e:.1e}")
        assert e < tol, f"{name}: finite-difference mismatch {e:.2e} (analytic {analytic}, numeric {numeric})"


# ---- linear ----------------------------------------------------------------------

def c_linear(C, x, w, b):
    M, I = x.shape
    O = w.shape[0]
    out = np.zeros((M, O), np.float32)
    C.linear_forward(ptr(out), ptr(x), ptr(w), ptr(b), M, I, O)
    return out


def test_linear(C):
    M, I, O = 37, 48, 29
    x, w, b = f32(rng.standard_normal((M, I))), f32(rng.standard_normal((O, I)) * 0.1), f32(rng.standard_normal(O))
    R = f32(rng.standard_normal((M, O)))
    out = c_linear(C, x, w, b)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    C.linear_backward(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), M, I, O)
    tx, tw, tb = t64(x), t64(w), t64(b)
    ref = torch.nn.functional.linear(tx, tw, tb)
    (ref * t64(R, False)).sum().backward()
    check("linear out", out, ref.detach())
    check("linear dx", dx, tx.grad)
    check("linear dw", dw, tw.grad)
    check("linear db", db, tb.grad)
    # accumulation: a second backward adds the same amount
    C.linear_backward(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), M, I, O)
    check("linear accumulates", dw, 2 * tw.grad)
    dx[:], dw[:], db[:] = 0, 0, 0
    C.linear_backward(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), M, I, O)
    fd_check("linear", lambda p: c_linear(C, p["x"], p["w"], p["b"]), {"x": x, "w": w, "b": b},
             {"x": dx, "w": dw, "b": db, "__R__": R}, (M, O))


@pytest.mark.parametrize("M", [4500, 9000, 17000])  # 2, 4 and 8 chunks
def test_linear_long_token_axis(C, M):
    """M >= 4096 takes the chunked weight-gradient path (2 chunks, 4 from 8192 rows, 8 from 16384:
    the ViT-Ti step reaches 8), where the bias gradient is summed per chunk next to its product;
    linear_backward_set_dinp writes dinp (the old contents do not matter) and accumulates the
    weight and bias gradients like linear_backward."""
    I, O = 24, 20
    rng = np.random.default_rng(11)  # its own stream: the other tests' inputs stay as they were
    x, w, b = f32(rng.standard_normal((M, I))), f32(rng.standard_normal((O, I)) * 0.1), f32(rng.standard_normal(O))
    R = f32(rng.standard_normal((M, O)))
    tx, tw, tb = t64(x), t64(w), t64(b)
    (torch.nn.functional.linear(tx, tw, tb) * t64(R, False)).sum().backward()
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    C.linear_backward(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), M, I, O)
    check(f"linear M={M} dx", dx, tx.grad)
    check(f"linear M={M} dw", dw, tw.grad)
    check(f"linear M={M} db", db, tb.grad)
    dx2, dw2, db2 = np.full_like(x, 1e30), np.ones_like(w), np.ones_like(b)
    C.linear_backward_set_dinp(ptr(dx2), ptr(dw2), ptr(db2), ptr(R), ptr(x), ptr(w), M, I, O)
    check("linear_backward_set_dinp dx", dx2, tx.grad)
    check("linear_backward_set_dinp dw accumulates", dw2 - 1, tw.grad)
    check("linear_backward_set_dinp db accumulates", db2 - 1, tb.grad)
    fd_check("linear_backward_set_dinp", lambda p: c_linear(C, p["x"], p["w"], p["b"]), {"x": x, "w": w, "b": b},
             {"x": dx2, "w": dw2 - 1, "b": db2 - 1, "__R__": R}, (M, O), trials=1)
    # without a weight gradient the bias gradient still comes (column sums)
    db3 = np.zeros_like(b)
    C.linear_backward(None, None, ptr(db3), ptr(R), ptr(x), ptr(w), M, I, O)
    check("linear db alone", db3, tb.grad)


AVX512 = " avx512f" in open("/proc/cpuinfo").read()


def test_gemm_tiles_are_on_with_avx512(C):
    """The build uses -march=native, so on an AVX-512 machine the linear layers and attention must
    run on our own tiles (trainer/gemm_tiles.c), not silently on the OpenBLAS fallback."""
    assert C.gemm_tiles_enabled() == int(AVX512), f"tiles enabled {C.gemm_tiles_enabled()}, avx512f {AVX512}"


@pytest.fixture(params=["tiles", "openblas"])
def gemm_path(C, request):
    """Runs a test on each implementation of the products: our tiles and OpenBLAS. Without AVX-512
    there are no tiles, and asking for them must leave every product on OpenBLAS."""
    C.gemm_tiles_set_enabled(int(request.param == "tiles"))
    assert C.gemm_tiles_enabled() == int(request.param == "tiles" and AVX512)
    yield request.param
    C.gemm_tiles_set_enabled(1)


# (M, IN, OUT): ragged tiles in every direction. M not a multiple of the 8-row strip; OUT and IN
# past a 32-column panel by < 16 and > 16 columns; IN and OUT > 384 (the row products' k chunk)
# and M > 128 (the weight gradient's m chunk), so partial sums are carried across chunks.
TILE_SHAPES = [(1, 5, 3), (37, 48, 29), (70, 400, 45), (9, 800, 70), (130, 192, 576), (300, 61, 17)]


@pytest.mark.parametrize("M,I,O", TILE_SHAPES)
def test_linear_tile_edges(C, gemm_path, M, I, O):
    """Both implementations of the three linear products, on the same inputs, against torch: the
    forward with its bias, dinp written and accumulated, and dW / db accumulated."""
    path = gemm_path
    r = np.random.default_rng(M * 1000 + I)
    x, w, b = f32(r.standard_normal((M, I))), f32(r.standard_normal((O, I)) * 0.1), f32(r.standard_normal(O))
    R = f32(r.standard_normal((M, O)))
    tx, tw, tb = t64(x), t64(w), t64(b)
    ref = torch.nn.functional.linear(tx, tw, tb)
    (ref * t64(R, False)).sum().backward()
    check(f"{path} {M}x{I}x{O} out", c_linear(C, x, w, b), ref.detach())
    out_nobias = np.zeros((M, O), np.float32)
    C.linear_forward(ptr(out_nobias), ptr(x), ptr(w), None, M, I, O)
    check(f"{path} out without bias", out_nobias, (ref - tb).detach())
    dx, dw, db = np.full_like(x, 1e30), np.ones_like(w), np.ones_like(b)
    C.linear_backward_set_dinp(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), M, I, O)
    check(f"{path} dx written", dx, tx.grad)
    check(f"{path} dw accumulated", dw - 1, tw.grad)
    check(f"{path} db accumulated", db - 1, tb.grad)
    C.linear_backward(ptr(dx), None, None, ptr(R), ptr(x), ptr(w), M, I, O)
    check(f"{path} dx accumulated", dx, 2 * tx.grad)


@pytest.mark.parametrize("M,I,O", TILE_SHAPES)
def test_linear_gelu_fused(C, gemm_path, M, I, O):
    """fc1 with bias and GELU in the product's epilogue, and the input gradient into it with GELU's
    backward (and GELU recomputed) in the epilogue, on both implementations, against torch."""
    path = gemm_path
    r = np.random.default_rng(M * 7 + O)
    x, w, b = f32(r.standard_normal((M, I))), f32(r.standard_normal((O, I)) * 0.2), f32(r.standard_normal(O))
    pre, out = np.full((M, O), 1e30, np.float32), np.full((M, O), 1e30, np.float32)
    C.linear_bias_gelu_forward(ptr(out), ptr(pre), ptr(x), ptr(w), ptr(b), M, I, O)
    ref_pre = torch.nn.functional.linear(t64(x, False), t64(w, False), t64(b, False))
    check(f"{path} {M}x{I}x{O} pre", pre, ref_pre)
    check(f"{path} {M}x{I}x{O} gelu out", out, torch.nn.functional.gelu(ref_pre))
    # backward: the hidden layer (width O) feeds a linear O -> I whose output gradient is dy [M, I]
    w2, dy = f32(r.standard_normal((I, O)) * 0.2), f32(r.standard_normal((M, I)))
    tp = t64(pre)
    y = torch.nn.functional.linear(torch.nn.functional.gelu(tp), t64(w2, False))
    (y * t64(dy, False)).sum().backward()
    dh, g = np.full((M, O), 1e30, np.float32), np.full((M, O), 1e30, np.float32)
    C.linear_gelu_backward_dinp(ptr(dh), ptr(g), ptr(dy), ptr(w2), ptr(pre), M, O, I)
    check(f"{path} {M}x{I}x{O} d(pre)", dh, tp.grad)
    check(f"{path} {M}x{I}x{O} gelu recomputed", g, torch.nn.functional.gelu(tp).detach())


@pytest.mark.parametrize("N,C_", [(1, 7), (63, 48), (64, 192), (200, 37)])
def test_layernorm_param_grads_chunked(C, N, C_):
    """layernorm's weight and bias gradients are summed per 64-row chunk in the dinp pass: row
    counts below, at and past a chunk, with and without dinp, against torch."""
    r = np.random.default_rng(N + C_)
    x, w, b = f32(r.standard_normal((N, C_)) * 2 + 1), f32(r.standard_normal(C_)), f32(r.standard_normal(C_))
    R = f32(r.standard_normal((N, C_)))
    out, mean, rstd = np.zeros_like(x), np.zeros(N, np.float32), np.zeros(N, np.float32)
    C.layernorm_forward(ptr(out), ptr(mean), ptr(rstd), ptr(x), ptr(w), ptr(b), N, C_)
    tx, tw, tb = t64(x), t64(w), t64(b)
    ref = torch.nn.functional.layer_norm(tx, (C_,), tw, tb, eps=1e-6)
    (ref * t64(R, False)).sum().backward()
    dx, dw, db = np.ones_like(x), np.ones_like(w), np.ones_like(b)
    C.layernorm_backward(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), ptr(mean), ptr(rstd), N, C_)
    check(f"layernorm {N}x{C_} dx", dx - 1, tx.grad)
    check(f"layernorm {N}x{C_} dw", dw - 1, tw.grad)
    check(f"layernorm {N}x{C_} db", db - 1, tb.grad)
    dw2, db2 = np.zeros_like(w), np.zeros_like(b)
    C.layernorm_backward(None, ptr(dw2), ptr(db2), ptr(R), ptr(x), ptr(w), ptr(mean), ptr(rstd), N, C_)
    check(f"layernorm {N}x{C_} dw without dx", dw2, tw.grad)
    check(f"layernorm {N}x{C_} db without dx", db2, tb.grad)


# ---- layernorm ----------------------------------------------------------------------

def c_layernorm(C, x, w, b):
    N, D = x.shape
    out, mean, rstd = np.zeros_like(x), np.zeros(N, np.float32), np.zeros(N, np.float32)
    C.layernorm_forward(ptr(out), ptr(mean), ptr(rstd), ptr(x), ptr(w), ptr(b), N, D)
    return out, mean, rstd


def test_layernorm(C):
    N, D = 53, 40  # D not a multiple of 16: covers the tail of the column blocks
    x = f32(rng.standard_normal((N, D)) * 3 + 1.5)
    w, b = f32(1 + 0.2 * rng.standard_normal(D)), f32(0.2 * rng.standard_normal(D))
    R = f32(rng.standard_normal((N, D)))
    out, mean, rstd = c_layernorm(C, x, w, b)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    C.layernorm_backward(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), ptr(mean), ptr(rstd), N, D)
    tx, tw, tb = t64(x), t64(w), t64(b)
    ref = torch.nn.functional.layer_norm(tx, (D,), tw, tb, eps=1e-6)
    (ref * t64(R, False)).sum().backward()
    check("layernorm out", out, ref.detach())
    check("layernorm dx", dx, tx.grad)
    check("layernorm dw", dw, tw.grad)
    check("layernorm db", db, tb.grad)
    fd_check("layernorm", lambda p: c_layernorm(C, p["x"], p["w"], p["b"])[0], {"x": x, "w": w, "b": b},
             {"x": dx, "w": dw, "b": db, "__R__": R}, (N, D))


def test_residual_layernorm_forward(C):
    """The fused residual add + norm: the same bits as residual_forward then layernorm_forward, also
    in place (x = a), and torch's values."""
    N, D = 37, 40
    a, b = f32(rng.standard_normal((N, D)) * 2), f32(rng.standard_normal((N, D)) + 1.0)
    w, bias = f32(1 + 0.2 * rng.standard_normal(D)), f32(0.2 * rng.standard_normal(D))
    x, out = np.zeros_like(a), np.zeros_like(a)
    mean, rstd = np.zeros(N, np.float32), np.zeros(N, np.float32)
    x_in_place = a.copy()
    out2, mean2, rstd2 = np.zeros_like(a), np.zeros(N, np.float32), np.zeros(N, np.float32)
    C.residual_layernorm_forward(ptr(x), ptr(out), ptr(mean), ptr(rstd), ptr(a), ptr(b), ptr(w), ptr(bias), N, D)
    C.residual_layernorm_forward(ptr(x_in_place), ptr(out2), ptr(mean2), ptr(rstd2), ptr(x_in_place), ptr(b),
                                 ptr(w), ptr(bias), N, D)
    sep_x = np.zeros_like(a)
    C.residual_forward(ptr(sep_x), ptr(a), ptr(b), ctypes.c_long(a.size))
    sep_out, sep_mean, sep_rstd = c_layernorm(C, sep_x, w, bias)
    for name, got in (("x", x), ("x in place", x_in_place)):
        assert np.array_equal(got, sep_x), f"fused residual {name} differs from residual_forward"
    for got in ((out, mean, rstd), (out2, mean2, rstd2)):
        assert all(np.array_equal(g, r) for g, r in zip(got, (sep_out, sep_mean, sep_rstd))), \
            "fused norm differs from layernorm_forward"
    ref = torch.nn.functional.layer_norm(t64(a, False) + t64(b, False), (D,), t64(w, False), t64(bias, False), eps=1e-6)
    check("residual_layernorm out", out, ref)


# ---- GELU, residual, layer scale ----------------------------------------------------------

def c_gelu(C, x):
    out = np.zeros_like(x)
    C.gelu_forward(ptr(out), ptr(x), ctypes.c_long(x.size))
    return out


def test_gelu(C):
    x = f32(rng.standard_normal(2500) * 3)  # more than GELU_BLOCK (1024): the kernels' block loop and tail
    R = f32(rng.standard_normal(2500))
    out = c_gelu(C, x)
    dx = np.zeros_like(x)
    C.gelu_backward(ptr(dx), ptr(R), ptr(x), ctypes.c_long(x.size))
    tx = t64(x)
    ref = torch.nn.functional.gelu(tx)
    (ref * t64(R, False)).sum().backward()
    check("gelu out", out, ref.detach())
    check("gelu dx", dx, tx.grad)
    d2 = R.copy()
    C.gelu_backward_inplace(ptr(d2), ptr(x), ctypes.c_long(x.size))
    check("gelu dx in place", d2, tx.grad)
    d3, out3 = R.copy(), np.full_like(x, 1e30)  # the fused backward: GELU recomputed + dx in place
    C.gelu_backward_recompute(ptr(out3), ptr(d3), ptr(x), ctypes.c_long(x.size))
    check("gelu recompute out", out3, ref.detach())
    check("gelu recompute dx", d3, tx.grad)
    for name, d in (("gelu", dx), ("gelu in place", d2), ("gelu recompute", d3)):
        fd_check(name, lambda p: c_gelu(C, p["x"]), {"x": x}, {"x": d, "__R__": R}, x.shape)


def test_bias_gelu_forward(C):
    """The fused bias add + GELU: pre gets the biased pre-activation (the backward recomputes GELU
    from it), out = GELU(pre)."""
    M, N = 7, 45
    rng = np.random.default_rng(12)
    x, b = f32(rng.standard_normal((M, N)) * 2), f32(rng.standard_normal(N))
    pre, out = x.copy(), np.zeros_like(x)
    C.bias_gelu_forward(ptr(out), ptr(pre), ptr(b), M, N)
    ref_pre = t64(x, False) + t64(b, False)
    check("bias_gelu pre", pre, ref_pre)
    check("bias_gelu out", out, torch.nn.functional.gelu(ref_pre))


def test_residual_and_layerscale(C):
    N, D = 20, 24
    a, b = f32(rng.standard_normal((N, D))), f32(rng.standard_normal((N, D)))
    g = f32(rng.standard_normal(D))
    R = f32(rng.standard_normal((N, D)))
    out = np.zeros_like(a)
    C.residual_forward(ptr(out), ptr(a), ptr(b), ctypes.c_long(a.size))
    check("residual out", out, a.astype(np.float64) + b)
    da, db = np.zeros_like(a), np.zeros_like(b)
    C.residual_backward(ptr(da), ptr(db), ptr(R), ctypes.c_long(a.size))
    check("residual da", da, R)
    check("residual db", db, R)

    def res(p):
        o = np.zeros_like(p["a"])
        C.residual_forward(ptr(o), ptr(p["a"]), ptr(p["b"]), ctypes.c_long(o.size))
        return o
    fd_check("residual", res, {"a": a, "b": b}, {"a": da, "b": db, "__R__": R}, a.shape)

    def ls(p):
        o = np.zeros_like(p["x"])
        C.layerscale_forward(ptr(o), ptr(p["x"]), ptr(p["g"]), N, D)
        return o
    out = ls({"x": a, "g": g})
    dx, dg = np.zeros_like(a), np.zeros_like(g)
    C.layerscale_backward(ptr(dx), ptr(dg), ptr(R), ptr(a), ptr(g), N, D)
    tx, tg = t64(a), t64(g)
    ref = tx * tg
    (ref * t64(R, False)).sum().backward()
    check("layerscale out", out, ref.detach())
    check("layerscale dx", dx, tx.grad)
    check("layerscale dgamma", dg, tg.grad)
    fd_check("layerscale", ls, {"x": a, "g": g}, {"x": dx, "g": dg, "__R__": R}, a.shape)


# ---- attention ----------------------------------------------------------------------------

def attn_scratch(C, T, D):
    return np.zeros(C.kernel_max_threads() * C.attention_scratch_floats(T, D), np.float32)


@cbind.mirrors("RowSet")
class RowSet(ctypes.Structure):
    _fields_ = [("start", ctypes.c_void_p), ("index", ctypes.c_void_p), ("total", ctypes.c_int)]


def row_set(kept):
    """kept: per image, ascending token rows -> (RowSet, arrays kept alive)."""
    start = np.cumsum([0] + [len(k) for k in kept]).astype(np.int32)
    index = np.ascontiguousarray(np.concatenate([np.asarray(k, np.int32) for k in kept] + [np.zeros(0, np.int32)]))
    return RowSet(ptr(start), ptr(index), int(start[-1])), (start, index)


def c_attention(C, qkv, B, T, D, H, rows=None):
    R = rows.total if rows else B * T
    out = np.zeros((R, D), np.float32)
    probs = np.zeros(B * H * T * T, np.float32)
    C.attention_forward(ptr(out), ptr(probs), ptr(attn_scratch(C, T, D)), ptr(qkv),
                        ctypes.byref(rows) if rows else None, B, T, D, H)
    return (out if rows else out.reshape(B, T, D)), probs


def torch_attention(qkv, B, T, D, H):
    q, k, v = qkv.reshape(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
    att = ((q @ k.transpose(-2, -1)) * (D // H) ** -0.5).softmax(-1)
    return (att @ v).transpose(1, 2).reshape(B, T, D), att


# shapes include the ViT-Ti one (T=197, head 64) and odd T and head widths
@pytest.mark.parametrize("B,T,D,H", [(3, 17, 24, 3), (2, 50, 32, 2), (2, 197, 192, 3), (1, 66, 160, 2)])
def test_attention(C, gemm_path, B, T, D, H):
    qkv = f32(rng.standard_normal((B, T, 3 * D)))
    R = f32(rng.standard_normal((B, T, D)))
    out, probs = c_attention(C, qkv, B, T, D, H)
    dqkv = np.full_like(qkv, 1e30)  # written, not accumulated: the old contents must not matter
    C.attention_backward(ptr(dqkv), ptr(attn_scratch(C, T, D)), ptr(R), ptr(qkv), ptr(probs), None, B, T, D, H)
    tq = t64(qkv)
    ref, att = torch_attention(tq, B, T, D, H)
    (ref * t64(R, False)).sum().backward()
    check("attention out", out, ref.detach())
    check("attention probs", probs.reshape(B, H, T, T), att.detach())
    check("attention dqkv", dqkv, tq.grad)
    fd_check("attention", lambda p: c_attention(C, p["qkv"], B, T, D, H)[0], {"qkv": qkv},
             {"qkv": dqkv, "__R__": R}, out.shape)


# Kept query rows (the pretraining objective's last blocks): per image a
# different count, including none and all; out, probs and dqkv against torch's
# full attention read at those rows.
@pytest.mark.parametrize("B,T,D,H", [(4, 17, 24, 3), (3, 50, 32, 2)])
def test_attention_kept_rows(C, gemm_path, B, T, D, H):
    kept = [[0, 3, 4, 9], [], list(range(T)), [0]][:B] if B == 4 else [[0, 5, 6, 7, 20, 49], [0], [1, 2]]
    rows, keep_alive = row_set(kept)
    qkv = f32(rng.standard_normal((B, T, 3 * D)))
    R = f32(rng.standard_normal((rows.total, D)))
    out, probs = c_attention(C, qkv, B, T, D, H, rows)
    dqkv = np.full_like(qkv, 1e30)
    C.attention_backward(ptr(dqkv), ptr(attn_scratch(C, T, D)), ptr(R), ptr(qkv), ptr(probs), ctypes.byref(rows),
                         B, T, D, H)
    tq = t64(qkv)
    ref, att = torch_attention(tq, B, T, D, H)
    flat = [b * T + t for b in range(B) for t in kept[b]]
    ref_rows = ref.reshape(B * T, D)[flat]
    (ref_rows * t64(R, False)).sum().backward()
    check("attention kept rows out", out, ref_rows.detach())
    ref_probs = np.concatenate([att.detach().numpy()[b][:, kept[b]].reshape(-1) for b in range(B)])
    check("attention kept rows probs", probs[:ref_probs.size], torch.tensor(ref_probs))
    check("attention kept rows dqkv", dqkv, tq.grad)
    fd_check("attention kept rows", lambda p: c_attention(C, p["qkv"], B, T, D, H, rows)[0], {"qkv": qkv},
             {"qkv": dqkv, "__R__": R}, out.shape)


# ---- patch embedding, mask token, cls/pos, mean pooling --------------------------------

def test_patchify_matches_conv(C):
    B, Cc, H, P, D = 2, 3, 12, 4, 8
    img = f32(rng.standard_normal((B, Cc, H, H)))
    w, b = f32(rng.standard_normal((D, Cc, P, P)) * 0.1), f32(rng.standard_normal(D))
    N = (H // P) ** 2
    patches = np.zeros((B, N, Cc * P * P), np.float32)
    C.patchify(ptr(patches), ptr(img), B, Cc, H, H, P)
    emb = c_linear(C, patches.reshape(B * N, -1), f32(w.reshape(D, -1)), b).reshape(B, N, D)
    ref = torch.nn.functional.conv2d(t64(img, False), t64(w, False), t64(b, False), stride=P).flatten(2).transpose(1, 2)
    check("patch embedding = conv2d", emb, ref)
    back = np.zeros_like(img)
    C.unpatchify(ptr(back), ptr(patches), B, Cc, H, H, P)
    assert np.array_equal(back, img), "unpatchify(patchify(x)) != x"


def test_mask_token(C):
    B, N, D = 3, 10, 20
    emb = f32(rng.standard_normal((B, N, D)))
    tok = f32(rng.standard_normal(D))
    mask = (rng.random((B, N)) < 0.4).astype(np.uint8)
    out = emb.copy()
    C.mask_token_forward(ptr(out), ptr(tok), ptr(mask), B, N, D)
    ref = np.where(mask[..., None].astype(bool), tok[None, None], emb)
    assert np.array_equal(out, ref)
    R = f32(rng.standard_normal((B, N, D)))
    demb, dtok = R.copy(), np.zeros_like(tok)
    C.mask_token_backward(ptr(demb), ptr(dtok), ptr(mask), B, N, D)
    te, tt = t64(emb), t64(tok)
    r = torch.where(torch.tensor(mask.astype(bool))[..., None], tt.expand(B, N, D), te)
    (r * t64(R, False)).sum().backward()
    check("mask token demb", demb, te.grad)
    check("mask token dtoken", dtok, tt.grad)

    def fwd(p):
        o = p["emb"].copy()
        C.mask_token_forward(ptr(o), ptr(p["tok"]), ptr(mask), B, N, D)
        return o
    fd_check("mask token", fwd, {"emb": emb, "tok": tok}, {"emb": demb, "tok": dtok, "__R__": R}, emb.shape)


def test_cls_pos(C):
    B, N, D = 3, 9, 16
    emb, cls, pos = f32(rng.standard_normal((B, N, D))), f32(rng.standard_normal(D)), f32(rng.standard_normal((N + 1, D)))
    x = np.zeros((B, N + 1, D), np.float32)
    C.cls_pos_forward(ptr(x), ptr(emb), ptr(cls), ptr(pos), B, N, D)
    R = f32(rng.standard_normal(x.shape))
    demb, dcls, dpos = np.zeros_like(emb), np.zeros_like(cls), np.zeros_like(pos)
    C.cls_pos_backward(ptr(demb), ptr(dcls), ptr(dpos), ptr(R), B, N, D)
    te, tc, tp = t64(emb), t64(cls), t64(pos)
    ref = torch.cat([tc.expand(B, 1, D), te], 1) + tp
    (ref * t64(R, False)).sum().backward()
    check("cls/pos out", x, ref.detach())
    check("cls/pos demb", demb, te.grad)
    check("cls/pos dcls", dcls, tc.grad)
    check("cls/pos dpos", dpos, tp.grad)

    def fwd(p):
        o = np.zeros((B, N + 1, D), np.float32)
        C.cls_pos_forward(ptr(o), ptr(p["emb"]), ptr(p["cls"]), ptr(p["pos"]), B, N, D)
        return o
    fd_check("cls/pos", fwd, {"emb": emb, "cls": cls, "pos": pos}, {"emb": demb, "cls": dcls, "pos": dpos, "__R__": R},
             x.shape)


def test_cls_pos_window(C):
    """Multi-crop's local views: 2 x 2 windows of a 4 x 4 position grid, several tokens per row of pos."""
    B, g, lg, D = 3, 4, 2, 16
    N = lg * lg
    emb, cls, pos = f32(rng.standard_normal((B, N, D))), f32(rng.standard_normal(D)), f32(rng.standard_normal((g * g + 1, D)))
    corners = [(0, 0), (2, 1), (0, 1)]
    rows = np.array([[1 + (gy + n // lg) * g + gx + n % lg for n in range(N)] for gy, gx in corners], np.int32)
    x = np.zeros((B, N + 1, D), np.float32)
    C.cls_pos_window_forward(ptr(x), ptr(emb), ptr(cls), ptr(pos), ptr(rows), B, N, D)
    R = f32(rng.standard_normal(x.shape))
    demb, dcls, dpos = np.zeros_like(emb), np.zeros_like(cls), np.zeros_like(pos)
    C.cls_pos_window_backward(ptr(demb), ptr(dcls), ptr(dpos), ptr(R), ptr(rows), B, N, D)
    te, tc, tp = t64(emb), t64(cls), t64(pos)
    ref = torch.cat([(tc + tp[0]).expand(B, 1, D), te + tp[torch.tensor(rows, dtype=torch.long)]], 1)
    (ref * t64(R, False)).sum().backward()
    check("cls/pos window out", x, ref.detach())
    check("cls/pos window demb", demb, te.grad)
    check("cls/pos window dcls", dcls, tc.grad)
    check("cls/pos window dpos", dpos, tp.grad)
    assert not dpos[1 + 3 * g + 3].any(), "a position no window covers has a gradient"

    def fwd(p):
        o = np.zeros((B, N + 1, D), np.float32)
        C.cls_pos_window_forward(ptr(o), ptr(p["emb"]), ptr(p["cls"]), ptr(p["pos"]), ptr(rows), B, N, D)
        return o
    fd_check("cls/pos window", fwd, {"emb": emb, "cls": cls, "pos": pos},
             {"emb": demb, "cls": dcls, "pos": dpos, "__R__": R}, x.shape)


def test_meanpool(C):
    B, T, D = 4, 11, 12
    x = f32(rng.standard_normal((B, T, D)))
    out = np.zeros((B, D), np.float32)
    C.meanpool_forward(ptr(out), ptr(x), B, T, D, 1)
    R = f32(rng.standard_normal((B, D)))
    dx = np.zeros_like(x)
    C.meanpool_backward(ptr(dx), ptr(R), B, T, D, 1)
    tx = t64(x)
    ref = tx[:, 1:].mean(1)
    (ref * t64(R, False)).sum().backward()
    check("meanpool out", out, ref.detach())
    check("meanpool dx", dx, tx.grad)

    def fwd(p):
        o = np.zeros((B, D), np.float32)
        C.meanpool_forward(ptr(o), ptr(p["x"]), B, T, D, 1)
        return o
    fd_check("meanpool", fwd, {"x": x}, {"x": dx, "__R__": R}, out.shape)


# ---- softmax cross-entropy --------------------------------------------------------------

def test_softmax_xent(C):
    N, K = 33, 17
    logits = f32(rng.standard_normal((N, K)) * 4)
    logits[0, 3] = 90.0  # a near-one-hot row: the label's probability underflows
    labels = rng.integers(0, K, N).astype(np.int32)
    labels[0] = 5
    probs = np.zeros_like(logits)
    for eps in (0.0, 0.1):
        loss = C.softmax_xent_forward(ptr(probs), ptr(logits), ptr(labels), N, K, ctypes.c_float(eps))
        dl = np.zeros_like(logits)
        C.softmax_xent_backward(ptr(dl), ptr(probs), ptr(labels), N, K, ctypes.c_float(eps), ctypes.c_float(0.5))
        tl = t64(logits)
        ref = torch.nn.functional.cross_entropy(tl, torch.tensor(labels, dtype=torch.long), label_smoothing=eps)
        (0.5 * ref).backward()
        check(f"xent loss (smoothing {eps})", np.array([loss]), np.array([ref.item()]))
        check(f"xent dlogits (smoothing {eps})", dl, tl.grad)

        def f(p):
            pr = np.zeros_like(p["l"])
            return np.array([C.softmax_xent_forward(ptr(pr), ptr(p["l"]), ptr(labels), N, K, ctypes.c_float(eps))], np.float32)
        # a scalar float32 loss: its rounding (~1e-7 of ~2.3) over 2*eps is the numeric derivative's noise,
        # so a step of 3e-2 (curvature error ~eps^2, 1e-3 here) keeps the noise well under the tolerance
        fd_check(f"xent (smoothing {eps})", f, {"l": logits}, {"l": dl * 2, "__R__": np.ones(1, np.float32)}, (1,),
                 eps=3e-2)
