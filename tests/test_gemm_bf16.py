"""The bf16 products (precision: bf16; trainer/gemm_bf16.c) against float64.

Linear layers, per product and ragged shape, with a bound derived per output
element rather than a tolerance picked from observation:
- Against float64 on the bf16-rounded operands. Each product of two bf16 is
  exact in fp32 (8 + 8 significant bits), so the only error is the fp32
  accumulation: K FMAs after the starting value, each rounding once, which
  Higham's recursive-summation bound limits to gamma_K * (|c0| + sum_k |a_k b_k|),
  gamma_K = K u / (1 - K u), u = 2^-24.
- Against float64 on the fp32 operands. Rounding each operand to bf16 moves it by
  at most u_bf16 = 2^-8 of itself (8 significant bits, round to nearest), so a
  product by at most (2^-7 + 2^-16) of |a b|, on top of the accumulation term.

Both implementations run every product: the vdpbf16ps tiles (where the build
has them) and the portable emulation, whose results must be identical bit for
bit. The emulation is checked everywhere; the tiles where the CPU runs them.

Attention (softmax between two products, three in the backward) is checked
against float64 torch within 2e-2 of the tensor's max: five bf16-rounded
products in a chain, each up to 2^-7 relative, bound it by ~5 * 2^-7 (4e-2) in
the worst case; random signs make it far smaller, so 2e-2 still fails a wrong
product, and the observed errors print beside it.
"""
import ctypes
import numpy as np
import pytest
from conftest import require

torch = require("torch", "python3-torch")
import cbind
from cbind import ptr, f32
import test_kernels as tk

FP32, BF16, BF16_EMULATED = 0, 1, 2
U = 2.0 ** -24
OPERAND = 2.0 ** -7 + 2.0 ** -16


@pytest.fixture(scope="module")
def C():
    lib = cbind.load()
    yield lib
    lib.gemm_set_precision(FP32)


def paths(C):
    """The bf16 implementations this build runs: the emulation always, the tiles with vdpbf16ps."""
    return [BF16, BF16_EMULATED] if C.gemm_bf16_native() else [BF16_EMULATED]


def bf16(a):
    """float32 -> bf16 -> float32, round to nearest even, denormals to zero (no NaN in these tests)."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    r = np.where((u & 0x7F800000) == 0, (u & 0x80000000).astype(np.uint32), r)
    return r.view(np.float32)


def gamma(n):
    return n * U / (1 - n * U)


def within_bound(name, ours, exact, scale, k_terms, operand=0.0):
    """|ours - exact| <= (gamma_K + operand) * scale, element by element."""
    bound = (gamma(k_terms + 1) + operand) * scale
    excess = np.abs(np.asarray(ours, np.float64) - exact) / np.maximum(bound, 1e-300)
    worst = float(np.max(excess))
    print(f"{name}: worst error / bound = {worst:.3f}")
    assert worst <= 1.0, f"{name}: an error exceeds its bound by {worst:.2f}x"


def run_linear(C, precision, x, w, b, R):
    C.gemm_set_precision(precision)
    M, I = x.shape
    O = w.shape[0]
    out = np.full((M, O), 1e30, np.float32)
    C.linear_forward(ptr(out), ptr(x), ptr(w), ptr(b), M, I, O)
    dx, dw, db = np.full_like(x, 1e30), np.ones_like(w), np.ones_like(b)
    C.linear_backward_set_dinp(ptr(dx), ptr(dw), ptr(db), ptr(R), ptr(x), ptr(w), M, I, O)
    C.gemm_set_precision(FP32)
    return out, dx, dw - 1, db - 1  # dw, db accumulated onto ones


@pytest.mark.parametrize("M,I,O", tk.TILE_SHAPES)
def test_linear_products_within_the_derived_bound(C, M, I, O):
    r = np.random.default_rng(M * 31 + I)
    x, w, b = f32(r.standard_normal((M, I))), f32(r.standard_normal((O, I)) * 0.1), f32(r.standard_normal(O))
    R = f32(r.standard_normal((M, O)))
    xr, wr, Rr = (bf16(a).astype(np.float64) for a in (x, w, R))
    x64, w64, R64 = (a.astype(np.float64) for a in (x, w, R))
    results = {p: run_linear(C, p, x, w, b, R) for p in paths(C)}
    for p, (out, dx, dw, db) in results.items():
        tag = {BF16: "vdpbf16ps", BF16_EMULATED: "emulated"}[p]
        # against the rounded operands: accumulation error only (dw started from 1, so its c0 is 1)
        within_bound(f"{tag} {M}x{I}x{O} out", out, xr @ wr.T + b, np.abs(xr) @ np.abs(wr).T + np.abs(b), I)
        within_bound(f"{tag} dx", dx, Rr @ wr, np.abs(Rr) @ np.abs(wr), O)
        within_bound(f"{tag} dw", dw, Rr.T @ xr, np.abs(Rr).T @ np.abs(xr) + 1, M)
        within_bound(f"{tag} db (fp32 sums)", db, R64.sum(0), np.abs(R64).sum(0) + 1, M)
        # against the fp32 operands: the operands' rounding on top
        within_bound(f"{tag} out vs fp32 inputs", out, x64 @ w64.T + b, np.abs(x64) @ np.abs(w64).T + np.abs(b), I,
                     OPERAND)
        within_bound(f"{tag} dw vs fp32 inputs", dw, R64.T @ x64, np.abs(R64).T @ np.abs(x64) + 1, M, OPERAND)
    if len(results) == 2:
        for name, a, e in zip(("out", "dx", "dw", "db"), results[BF16], results[BF16_EMULATED]):
            assert np.array_equal(a.view(np.uint32), e.view(np.uint32)), \
                f"{M}x{I}x{O} {name}: vdpbf16ps and the emulation differ in {int(np.sum(a != e))} elements"


@pytest.mark.parametrize("M,I,O", tk.TILE_SHAPES)
def test_linear_gelu_fused_bf16(C, M, I, O):
    """fc1 + GELU in the epilogue and its input gradient: the tiles equal the emulation bit for bit, and
    the pre-activation is within the derived bound of float64 on the rounded operands."""
    r = np.random.default_rng(M * 7 + O)
    x, w, b = f32(r.standard_normal((M, I))), f32(r.standard_normal((O, I)) * 0.2), f32(r.standard_normal(O))
    w2, dy = f32(r.standard_normal((I, O)) * 0.2), f32(r.standard_normal((M, I)))
    got = {}
    for p in paths(C):
        C.gemm_set_precision(p)
        pre, out = np.full((M, O), 1e30, np.float32), np.full((M, O), 1e30, np.float32)
        C.linear_bias_gelu_forward(ptr(out), ptr(pre), ptr(x), ptr(w), ptr(b), M, I, O)
        dh, g = np.full((M, O), 1e30, np.float32), np.full((M, O), 1e30, np.float32)
        C.linear_gelu_backward_dinp(ptr(dh), ptr(g), ptr(dy), ptr(w2), ptr(pre), M, O, I)
        C.gemm_set_precision(FP32)
        got[p] = (pre, out, dh, g)
        xr, wr = bf16(x).astype(np.float64), bf16(w).astype(np.float64)
        within_bound(f"precision {p} {M}x{I}x{O} pre", pre, xr @ wr.T + b, np.abs(xr) @ np.abs(wr).T + np.abs(b), I)
        tk.check(f"precision {p} gelu of pre", out, torch.nn.functional.gelu(torch.tensor(pre, dtype=torch.float64)))
    if len(got) == 2:
        for name, a, e in zip(("pre", "gelu", "d(pre)", "gelu recomputed"), got[BF16], got[BF16_EMULATED]):
            assert np.array_equal(a.view(np.uint32), e.view(np.uint32)), f"{name}: tiles and emulation differ"


ATTN_TOL = 2e-2


@pytest.mark.parametrize("B,T,D,H", [(3, 17, 24, 3), (2, 50, 32, 2), (2, 197, 192, 3), (1, 66, 160, 2)])
def test_attention_bf16(C, B, T, D, H):
    """attention's six products in bf16: forward and backward against float64 torch, and the tiles
    against the emulation bit for bit."""
    r = np.random.default_rng(B * 100 + T)
    qkv = f32(r.standard_normal((B, T, 3 * D)))
    R = f32(r.standard_normal((B, T, D)))
    tq = tk.t64(qkv)
    ref, att = tk.torch_attention(tq, B, T, D, H)
    (ref * tk.t64(R, False)).sum().backward()
    got = {}
    for p in paths(C):
        C.gemm_set_precision(p)
        out, probs = tk.c_attention(C, qkv, B, T, D, H)
        dqkv = np.full_like(qkv, 1e30)
        C.attention_backward(ptr(dqkv), ptr(tk.attn_scratch(C, T, D)), ptr(R), ptr(qkv), ptr(probs), None, B, T, D, H)
        C.gemm_set_precision(FP32)
        got[p] = (out, probs, dqkv)
        tk.check(f"precision {p} attention out", out, ref.detach(), ATTN_TOL)
        tk.check(f"precision {p} attention probs", probs.reshape(B, H, T, T), att.detach(), ATTN_TOL)
        tk.check(f"precision {p} attention dqkv", dqkv, tq.grad, ATTN_TOL)
    if len(got) == 2:
        for name, a, e in zip(("out", "probs", "dqkv"), got[BF16], got[BF16_EMULATED]):
            assert np.array_equal(a.view(np.uint32), e.view(np.uint32)), f"attention {name}: tiles and emulation differ"


def test_precision_switch(C):
    """bf16 runs every product on our code (even where fp32 would use OpenBLAS), and asking for the
    tiles on a build without vdpbf16ps gives the emulation."""
    C.gemm_set_precision(BF16)
    assert C.gemm_precision() == (BF16 if C.gemm_bf16_native() else BF16_EMULATED)
    C.gemm_tiles_set_enabled(0)
    assert C.gemm_tiles_enabled() == 1
    C.gemm_tiles_set_enabled(1)
    C.gemm_set_precision(FP32)
    assert C.gemm_precision() == FP32
    assert C.gemm_bf16_native() == int(" avx512_bf16" in open("/proc/cpuinfo").read()), \
        "the CPU has AVX512_BF16 but this -march=native build does not use it (or the reverse)"


@pytest.mark.parametrize("B,T,D,H", [(3, 17, 24, 3), (2, 50, 96, 3), (1, 66, 160, 2)])
def test_attention_with_bf16_storage(C, B, T, D, H):
    """qkv and the output kept in bf16 (what the ViT lays out under precision bf16): the same probs and
    gradients, bit for bit, as the fp32 qkv these were rounded from, and the output equals the fp32
    path's rounded to bf16; on the tiles and the emulation alike. Heads of 8, 32 and 80: the softmax
    scale is not a power of two, so it must scale the rounded operand in both."""
    r = np.random.default_rng(T * 7 + D)
    qkv = bf16(f32(r.standard_normal((B, T, 3 * D))))  # already on the bf16 grid: storing it loses nothing
    qkv16 = np.ascontiguousarray((qkv.view(np.uint32) >> 16).astype(np.uint16))
    dout = f32(r.standard_normal((B, T, D)))
    for p in paths(C):
        C.gemm_set_precision(p)
        out, probs = tk.c_attention(C, qkv, B, T, D, H)
        dqkv = np.full_like(qkv, 1e30)
        C.attention_backward(ptr(dqkv), ptr(tk.attn_scratch(C, T, D)), ptr(dout), ptr(qkv), ptr(probs), None, B, T, D, H)
        out16 = np.zeros((B, T, D), np.uint16)
        probs16 = np.zeros_like(probs)
        C.attention_forward_bf16(ptr(out16), ptr(probs16), ptr(tk.attn_scratch(C, T, D)), ptr(qkv16), None, B, T, D, H)
        dqkv16 = np.full_like(qkv, 1e30)
        C.attention_backward_bf16(ptr(dqkv16), ptr(tk.attn_scratch(C, T, D)), ptr(dout), ptr(qkv16), ptr(probs16), None,
                                  B, T, D, H)
        C.gemm_set_precision(FP32)
        assert np.array_equal(probs.view(np.uint32), probs16.view(np.uint32)), f"precision {p}: probs differ"
        assert np.array_equal(dqkv.view(np.uint32), dqkv16.view(np.uint32)), f"precision {p}: dqkv differs"
        rounded = (bf16(out).view(np.uint32) >> 16).astype(np.uint16)
        assert np.array_equal(out16, rounded), f"precision {p}: the bf16 output is not the fp32 output rounded"
