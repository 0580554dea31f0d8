"""The CCViT objective (blockwise mask + centroid replacement, token CE, pixel
MSE through two extra blocks, NT-Xent over two views) in C against its PyTorch
twin (tools/reference/torch_twin.Pretrainer), on the same weights, inputs, masks and
centroid ids: the corrupted encoder input, every loss term and every parameter
gradient (encoder, mask token, token head, pixel head, projector), also with
the EMA teacher taking view2 (teacher_momentum > 0) and with multi-crop's local views
(local_crops: windows cut from the views, the encoder at their size, more contrastive
anchors); then 5 AdamW steps. Also the mask generator's exact counts and the loss switches.

Reference in float64; observed relative errors (max |diff| / max |ref| per
tensor): losses <= 4e-8, gradients <= 5.3e-6 without a teacher (tolerance
2e-5) and <= 1.6e-5 with one (the first block's; one view of B rows instead of
2B: tolerance 5e-5). After 5
AdamW steps the updates w - w0 (not the weights, whose initial values would
hide an error in a small update) agree to 6.2e-4 of each tensor's largest
update: Adam divides by sqrt(v), so an element whose gradient is at float32
rounding level moves by ~lr in whichever direction its noise points. The
tolerance 3e-3 still fails a 1% error in an update.
"""
import ctypes
import numpy as np
import pytest
from conftest import require

torch = require("torch", "python3-torch")
import torch_twin
import cbind
from cbind import ptr, f32, view

c_int, c_float, c_void = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
TOL_LOSS, TOL_GRAD, TOL_GRAD_TEACHER, TOL_UPDATE = 2e-7, 2e-5, 5e-5, 3e-3


@cbind.mirrors("ObjectiveConfig")
class ObjectiveConfig(ctypes.Structure):
    _fields_ = [("mask_ratio", c_float), ("min_mask_patches", c_int), ("replace_ratio", c_float),
                ("w_token", c_float), ("w_pixel", c_float), ("w_contrast", c_float), ("temperature", c_float),
                ("negatives_global", c_int),
                ("proj_hidden", c_int), ("proj_dim", c_int), ("mask_both_views", c_int),
                ("mean", c_float * 3), ("std", c_float * 3), ("seed", ctypes.c_uint64),
                ("teacher_momentum", c_float), ("local_crops", c_int), ("local_crop_size", c_int)]


@cbind.mirrors("ObjectiveLosses")
class Losses(ctypes.Structure):
    _fields_ = [("token", ctypes.c_double), ("pixel", ctypes.c_double), ("contrast", ctypes.c_double),
                ("total", ctypes.c_double), ("scored", c_int)]


ENC = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=48, depth=4, num_heads=3, mlp_ratio=2.0, qkv_bias=1,
           layer_scale_init=0.0, num_classes=0)
K, B = 24, 6
MEAN, STD = 0.3, 0.35


@pytest.fixture(scope="module")
def C():
    lib = cbind.load()
    lib.tokenizer_from_centroids.restype = c_void
    lib.tokenizer_from_centroids.argtypes = [c_void, c_void, c_int, c_int, c_int]
    lib.objective_create.restype = c_void
    lib.objective_create.argtypes = [c_void, c_void, c_void, c_int, ctypes.c_uint64]
    lib.objective_forward.restype = Losses
    lib.objective_forward.argtypes = [c_void, c_void, c_void, c_void, c_int, ctypes.c_int64, c_float]
    lib.objective_backward.argtypes = [c_void, c_float]
    lib.objective_destroy.argtypes = [c_void]
    lib.objective_vit.restype = c_void
    lib.objective_vit.argtypes = [c_void]
    lib.vit_freeze_patch_embed.argtypes = [c_void]
    lib.objective_teacher_update.argtypes = [c_void, c_float]
    for f, t in (("objective_params", c_void), ("objective_mask", ctypes.POINTER(ctypes.c_uint8)),
                 ("objective_replaced", ctypes.POINTER(ctypes.c_uint8)), ("objective_ids", ctypes.POINTER(ctypes.c_int32)),
                 ("objective_images", cbind.FP), ("objective_local_images", cbind.FP),
                 ("objective_local_pos_rows", ctypes.POINTER(ctypes.c_int32))):
        getattr(lib, f).restype = t
        getattr(lib, f).argtypes = [c_void]
    lib.block_mask_generate.argtypes = [c_void, c_int, c_int, c_int, c_int, c_void]
    lib.replacement_generate.argtypes = [c_void, c_void, c_int, c_int, c_void]
    lib.rng_seed.argtypes = [c_void, ctypes.c_uint64, ctypes.c_uint64]
    return lib


class Table:
    """Name -> numpy views of a C ParamTable."""

    def __init__(self, lib, table):
        self.lib, self.t = lib, table
        n = lib.params_count(table)
        self.index = {lib.params_name(table, i).decode(): i for i in range(n)}

    def _view(self, name, getter):
        i = self.index[name]
        shape = [self.lib.params_dim(self.t, i, k) for k in range(self.lib.params_ndim(self.t, i))]
        return np.ctypeslib.as_array(getter(self.t, i), shape=(self.lib.params_numel(self.t, i),)).reshape(shape)

    def data(self, name):
        return self._view(name, self.lib.params_data)

    def grad(self, name):
        return self._view(name, self.lib.params_grad)


LOCAL_SIZE = 12  # multi-crop windows: 3 x 3 of the 7 x 7 patch grid


def make(C, w_token=1.0, w_pixel=1.0, w_contrast=1.0, mask_both=0, seed=3, twin_w_contrast=None, teacher=0.0,
         perturb_teacher=True, local_crops=0):
    """C objective and its float64 twin on the same weights. twin_w_contrast: the
    twin's NT-Xent weight when C's is overridden per step (the phase-in). teacher:
    C's teacher_momentum; the teacher's weights are then moved off the student's
    (which it starts as), so that a teacher read from the student's tensors fails."""
    r = np.random.default_rng(seed)
    d = ENC["in_chans"] * ENC["patch_size"] ** 2
    cents = f32(r.random((K, d)))
    tok = C.tokenizer_from_centroids(ptr(cents), None, K, ENC["patch_size"], ENC["in_chans"])
    oc = ObjectiveConfig(mask_ratio=0.4, min_mask_patches=4, replace_ratio=0.1, w_token=w_token, w_pixel=w_pixel,
                         w_contrast=w_contrast, temperature=0.2, proj_hidden=40, proj_dim=16,
                         mask_both_views=mask_both, seed=seed, teacher_momentum=teacher, local_crops=local_crops,
                         local_crop_size=LOCAL_SIZE)
    oc.mean[0], oc.std[0] = MEAN, STD
    vc = cbind.VitConfig(**ENC, use_mask_token=1)
    o = C.objective_create(ctypes.byref(vc), ctypes.byref(oc), tok, B, seed)
    table = Table(C, C.objective_params(o))
    twc = w_contrast if twin_w_contrast is None else twin_w_contrast
    if teacher and perturb_teacher:
        r2 = np.random.default_rng(seed + 100)
        for n in table.index:
            if n.startswith("pretrain.teacher."):
                w = table.data(n)
                w += f32(r2.standard_normal(w.shape) * 0.02)
    twin = torch_twin.Pretrainer({k: v for k, v in ENC.items()}, K, w_token, w_pixel, twc, 0.2, 40, 16,
                                 teacher=bool(teacher)).double()
    sd = twin.state_dict()
    for n in sd:
        cn = twin.c_name(n)
        assert cn in table.index, f"twin tensor {n} ({cn}) missing in C"
        sd[n] = torch.tensor(table.data(cn), dtype=torch.float64)
    assert len(sd) == len(table.index), f"C has extra tensors: {set(table.index) - {twin.c_name(n) for n in sd}}"
    twin.load_state_dict(sd)
    return o, table, twin, cents


def batch(seed):
    r = np.random.default_rng(seed)
    S = ENC["img_size"]
    clean1 = f32(r.random((B, 1, S, S)))
    clean2 = f32(r.random((B, 1, S, S)))
    return f32((clean1 - MEAN) / STD), clean1, f32((clean2 - MEAN) / STD)


def run_c(C, o, v1, c1, v2, step, w_contrast_now=-1.0, dloss=1.0):
    L = C.objective_forward(o, ptr(v1), ptr(c1), ptr(v2), B, step, w_contrast_now)
    C.objective_backward(o, dloss)
    return L


def c_state(C, o, views, corrupt=True):
    N = (ENC["img_size"] // ENC["patch_size"]) ** 2
    mask = view(C.objective_mask(o), (views * B, N)).astype(bool)
    # without masked modeling there are no replacement or id buffers
    rep = view(C.objective_replaced(o), (B, N)).astype(bool) if corrupt else np.zeros((B, N), bool)
    ids = view(C.objective_ids(o), (B, N)).astype(np.int64) if corrupt else np.zeros((B, N), np.int64)
    S = ENC["img_size"]
    images = view(C.objective_images(o), (views * B, 1, S, S)).copy()
    return mask, rep, ids, images


def expected_images(v1, v2, rep, ids, cents, views):
    """view1 with replaced patches set to their centroid's normalised pixels, then view2."""
    P, S = ENC["patch_size"], ENC["img_size"]
    img = v1.copy()
    g = S // P
    for b, n in zip(*np.nonzero(rep)):
        py, px = divmod(n, g)
        img[b, 0, py * P:(py + 1) * P, px * P:(px + 1) * P] = ((cents[ids[b, n]] - MEAN) / STD).reshape(P, P)
    return np.concatenate([img, v2]) if views == 2 else img


def rel(a, b):
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / (np.max(np.abs(b)) + 1e-30))


def brute_ids(c1, cents):
    P = ENC["patch_size"]
    p = torch_twin.Pretrainer.patchify(type("x", (), {"P": P})(), torch.tensor(c1)).numpy()
    dist = ((p[..., None, :].astype(np.float64) - cents[None, None].astype(np.float64)) ** 2).sum(-1)
    return dist.argmin(-1)


# (w_token, w_pixel, w_contrast, NT-Xent weight this step (-1: w_contrast), dloss, mask_both_views
# [, teacher_momentum [, local_crops]]).
# "weighted" is what real runs set: weights other than 1, the phase-in's per-step NT-Xent
# weight and dloss = 1/accum_steps; a backward that dropped or squared any of them passes at 1.
CASES = {
    "all": (1, 1, 1, -1, 1, 0),
    "ccvit": (1, 1, 0, -1, 1, 0),
    "contrastive": (0, 0, 1, -1, 1, 0),
    "pixel": (0, 1, 0, -1, 1, 0),
    "weighted": (0.7, 1.3, 0.25, 0.1, 0.5, 0),
    "mask_both": (1, 1, 1, -1, 1, 1),
    "contrastive_mask_both": (0, 0, 1, -1, 1, 1),
    "teacher": (1, 1, 1, -1, 1, 0, 0.99),
    "teacher_weighted": (0.7, 1.3, 0.25, 0.1, 0.5, 0, 0.99),
    "teacher_contrastive": (0, 0, 1, -1, 1, 0, 0.99),
    "multicrop": (1, 1, 1, -1, 1, 0, 0.0, 3),
    "multicrop_weighted": (0.7, 1.3, 0.25, 0.1, 0.5, 0, 0.0, 4),
    "multicrop_teacher": (1, 1, 1, -1, 1, 0, 0.99, 2),
}


def case_of(name):
    c = CASES[name]
    return c + (0.0,) * (7 - len(c)) + (0,) * (8 - max(len(c), 7))


def local_views(C, o, v1, v2, local_crops, teacher):
    """C's local views of the last forward, checked against the views they were cut from:
    each is the window of its pos_embed rows, of view2 (even crops, NT-Xent) or view1.
    Returns the twin's (images, pos_rows, positive column)."""
    P, S, LB = ENC["patch_size"], ENC["img_size"], local_crops * B
    grid, lg = S // P, LOCAL_SIZE // P
    imgs = view(C.objective_local_images(o), (LB, 1, LOCAL_SIZE, LOCAL_SIZE)).copy()
    rows = view(C.objective_local_pos_rows(o), (LB, lg * lg)).astype(np.int64)
    pos, corners = np.zeros(LB, np.int64), set()
    for k in range(local_crops):
        for b in range(B):
            i = k * B + b
            gy, gx = divmod(int(rows[i, 0]) - 1, grid)
            corners.add((gy, gx))
            want = [1 + (gy + n // lg) * grid + gx + n % lg for n in range(lg * lg)]
            assert list(rows[i]) == want, f"local view {i}: pos_embed rows {rows[i]} are not a window"
            from_view2 = not teacher and k % 2 == 0
            src = (v2 if from_view2 else v1)[b, :, gy * P:gy * P + LOCAL_SIZE, gx * P:gx * P + LOCAL_SIZE]
            assert np.array_equal(imgs[i], src), f"local view {i} is not its window of view {2 if from_view2 else 1}"
            pos[i] = b if teacher or from_view2 else B + b
    assert len(corners) > 1, "every local view has the same window"
    return torch.tensor(imgs, dtype=torch.float64), torch.tensor(rows), torch.tensor(pos)


@pytest.mark.parametrize("case", list(CASES))
def test_objective_matches_twin(C, case):
    wt, wp, wc, w_now, dloss, mask_both, teacher, local_crops = case_of(case)
    o, table, twin, cents = make(C, wt, wp, wc, mask_both, twin_w_contrast=w_now if w_now >= 0 else None,
                                 teacher=teacher, local_crops=local_crops)
    views = 2 if wc > 0 and not teacher else 1  # the teacher takes view2
    v1, c1, v2 = batch(10)
    L = run_c(C, o, v1, c1, v2, 0, w_now, dloss)
    corrupt = wt > 0 or wp > 0
    mask, rep, ids, images = c_state(C, o, views, corrupt)
    N = mask.shape[1]
    if corrupt:
        assert (mask[:B].sum(1) == round(0.4 * N)).all(), "mask count is not exact"
        assert (rep.sum(1) == round(0.1 * N)).all(), "replacement count is not exact"
        assert not (mask[:B] & rep).any(), "a replaced patch is also masked"
        scored = mask[:B] | rep
        assert (ids[~scored] == -1).all(), "only scored patches are tokenised"
        agree = (ids[scored] == brute_ids(c1, cents)[scored]).mean()
        assert agree > 0.999, f"token ids agree with float64 brute force on only {agree:.4f}"
    else:
        assert not mask[:B].any()
    if views == 2:
        if mask_both:
            assert (mask[B:].sum(1) == round(0.4 * N)).all(), "view2's mask count is not exact"
            assert (mask[B:] != mask[:B]).any(), "view2 reuses view1's mask"
        else:
            assert not mask[B:].any(), "view2 is masked without mask_both_views"
    exp = expected_images(v1, v2, rep, ids, cents, views)
    assert rel(images, exp) < 1e-6, "encoder input (centroid replacement) differs"

    tot, ce, mse, nce = twin(torch.tensor(images, dtype=torch.float64), torch.tensor(c1, dtype=torch.float64),
                             torch.tensor(mask), torch.tensor(mask[:B] | rep), torch.tensor(ids),
                             view2=torch.tensor(v2, dtype=torch.float64),
                             local=local_views(C, o, v1, v2, local_crops, teacher) if local_crops else None)
    (dloss * tot).backward()
    for name, ours, ref in (("token", L.token, ce), ("pixel", L.pixel, mse), ("contrast", L.contrast, nce), ("total", L.total, tot)):
        e = abs(ours - ref.item()) / (abs(ref.item()) + 1e-12)
        print(f"{case} {name}: C {ours:.6f} torch {ref.item():.6f} rel {e:.1e}")
        assert e < TOL_LOSS, f"{name} loss differs: {ours} vs {ref.item()}"
    worst, count = 0, 0
    for n, p in twin.named_parameters():
        if p.grad is None:
            assert not np.any(table.grad(twin.c_name(n))), f"{n}: twin has no gradient but C does"
            continue
        e = rel(table.grad(twin.c_name(n)), p.grad)
        worst, count = max(worst, e), count + 1
        tol = TOL_GRAD_TEACHER if teacher else TOL_GRAD
        assert e < tol, f"gradient of {twin.c_name(n)}: relative error {e:.2e}"
    print(f"{case}: worst gradient error over {count} tensors {worst:.2e}")
    C.objective_destroy(o)


def test_objective_adamw_steps_match_twin(C):
    """5 steps with the patch embedding frozen (every config sets
    freeze_patch_embed) and clipping active: the global norm C clips by matches
    torch's, the frozen tensors keep their initial values bit for bit and get no
    gradient, and every other weight follows torch's AdamW."""
    o, table, twin, cents = make(C, seed=5)
    C.vit_freeze_patch_embed(c_void(C.objective_vit(o)))
    frozen = ("patch_embed.proj.weight", "patch_embed.proj.bias")
    initial = {n: table.data(n).copy() for n in table.index}
    for n, p in twin.named_parameters():
        if twin.c_name(n) in frozen:
            p.requires_grad_(False)
    opt = cbind.AdamWState()
    C.adamw_init(ctypes.byref(opt), c_void(C.objective_params(o)), 0.9, 0.999, 1e-8, 0.05)
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
              for g in torch_twin.adamw_param_groups(twin.encoder, 0.05)]
    heads = list(twin.pretrain.named_parameters())
    groups[0]["params"] += [p for n, p in heads if p.ndim >= 2]
    groups[1]["params"] += [p for n, p in heads if p.ndim < 2]
    topt = torch.optim.AdamW(groups, lr=1e-3, eps=1e-8)
    for step in range(5):
        v1, c1, v2 = batch(100 + step)
        C.params_zero_grad(c_void(C.objective_params(o)))
        L = run_c(C, o, v1, c1, v2, step)
        norm = C.clip_grad_norm(ctypes.byref(opt), c_void(C.objective_params(o)), 0.5)
        for n in frozen:
            assert not table.grad(n).any(), f"{n} is frozen but has a gradient"
        C.adamw_step(ctypes.byref(opt), c_void(C.objective_params(o)), c_float(1e-3))
        mask, rep, ids, images = c_state(C, o, 2)
        topt.zero_grad()
        tot = twin(torch.tensor(images, dtype=torch.float64), torch.tensor(c1, dtype=torch.float64),
                   torch.tensor(mask), torch.tensor(mask[:B] | rep), torch.tensor(ids))[0]
        tot.backward()
        tnorm = torch.nn.utils.clip_grad_norm_([p for p in twin.parameters() if p.requires_grad], 0.5).item()
        topt.step()
        e = abs(L.total - tot.item()) / abs(tot.item())
        en = abs(norm - tnorm) / tnorm
        print(f"step {step}: C {L.total:.6f} torch {tot.item():.6f} rel {e:.1e}; grad norm C {norm:.6f} torch {tnorm:.6f} rel {en:.1e}")
        assert e < TOL_LOSS * 4
        assert tnorm > 0.5, "the test means clipping to be active"
        assert en < TOL_GRAD, f"global gradient norm: C {norm} vs torch {tnorm}"
    D = ENC["embed_dim"]
    for n in frozen:
        assert np.array_equal(table.data(n), initial[n]), f"{n} is frozen but moved"
    # The updates (w - w0) are compared, not the weights: a layer norm's weight
    # of ~1 moving by ~0.005 would hide a 1% error in its update.
    worst = 0
    for n, p in twin.named_parameters():
        cn = twin.c_name(n)
        if cn in frozen:
            continue
        ours, ref = table.data(cn) - initial[cn], p.detach().numpy() - initial[cn]
        if n.endswith("attn.qkv.bias"):  # key bias: zero true gradient, see test_vit_twin.py
            ours, ref = np.concatenate([ours[:D], ours[2 * D:]]), np.concatenate([ref[:D], ref[2 * D:]])
        e = rel(ours, ref)
        worst = max(worst, e)
        assert e < TOL_UPDATE, f"{cn}: its update over 5 steps has relative error {e:.2e}"
    print(f"worst update error after 5 steps: {worst:.2e}")
    C.objective_destroy(o)


def test_mask_generator_counts_and_blocks(C):
    """Exact counts at several ratios and grid sizes, and the blocks are blocks:
    most masked patches have a masked 4-neighbour (random scatter would not)."""
    rng = cbind.np.zeros(4, np.uint64)
    for grid, ratio in ((7, 0.4), (14, 0.4), (14, 0.75), (8, 0.1)):
        n = grid * grid
        target = round(ratio * n)
        neigh = []
        for s in range(50):
            C.rng_seed(ptr(rng), 1, s)
            m = np.zeros(n, np.uint8)
            C.block_mask_generate(ptr(m), grid, grid, target, 4, ptr(rng))
            assert m.sum() == target, f"grid {grid} ratio {ratio}: {m.sum()} masked, want {target}"
            r = np.zeros(n, np.uint8)
            C.replacement_generate(ptr(r), ptr(m), n, round(0.1 * n), ptr(rng))
            assert r.sum() == round(0.1 * n) and not (r & m).any()
            g = m.reshape(grid, grid).astype(bool)
            nb = np.zeros_like(g)
            nb[1:] |= g[:-1]; nb[:-1] |= g[1:]; nb[:, 1:] |= g[:, :-1]; nb[:, :-1] |= g[:, 1:]
            neigh.append((g & nb).sum() / max(1, g.sum()))
        print(f"grid {grid} ratio {ratio}: share of masked patches with a masked neighbour {np.mean(neigh):.2f}")
        assert np.mean(neigh) > 0.8


@pytest.mark.parametrize("case", ["all", "weighted", "teacher_weighted", "multicrop_weighted"])
def test_objective_gradient_matches_finite_differences(C, case):
    """The whole objective's gradient against its own forward, with no twin
    involved: along a direction v over every parameter, the central difference
    (L(w + e v) - L(w - e v)) / 2e of the C loss matches <grad, v>. Two
    directions: the gradient itself (the most sensitive to a wrong scale) and a
    random one with each tensor's part scaled to that tensor's gradient RMS (so
    a small tensor's wrong gradient still shows). Masks, replacements and ids
    are fixed by the step and the clean images, so only the weights move.
    e = 3e-4 over a unit v: the truncation error grows as e^2 (the loss is
    curved along the gradient: 6e-3 at e = 1e-3, 5.6e-2 at 3e-3) and the
    float32 noise of the loss (~1e-5) as 1/e. Observed relative errors <= 6e-4
    (gradient direction) and <= 1.1e-4 (random); tolerance 5e-3."""
    wt, wp, wc, w_now, dloss, mask_both, teacher, local_crops = case_of(case)
    o, table, _, _ = make(C, wt, wp, wc, mask_both, seed=7, teacher=teacher, local_crops=local_crops)
    tp = c_void(C.objective_params(o))
    v1, c1, v2 = batch(20)
    C.params_zero_grad(tp)
    run_c(C, o, v1, c1, v2, 3, w_now, dloss)
    names = sorted(n for n in table.index if not n.startswith("pretrain.teacher."))  # the teacher is a constant
    grads = {n: table.grad(n).astype(np.float64) / dloss for n in names}  # d total / d w
    w0 = {n: table.data(n).copy() for n in names}
    r = np.random.default_rng(8)
    rand = {n: r.standard_normal(grads[n].shape) * np.sqrt(np.mean(grads[n] ** 2)) for n in names}
    for label, v in (("gradient", grads), ("random", rand)):
        norm = np.sqrt(sum(np.sum(v[n] ** 2) for n in names))
        v = {n: v[n] / norm for n in names}
        analytic = sum(float(np.sum(grads[n] * v[n])) for n in names)
        eps, losses = 3e-4, []
        for sgn in (1, -1):
            for n in names:
                table.data(n)[...] = f32(w0[n] + sgn * eps * v[n])
            losses.append(C.objective_forward(o, ptr(v1), ptr(c1), ptr(v2), B, 3, w_now).total)
        for n in names:
            table.data(n)[...] = w0[n]
        numeric = (losses[0] - losses[1]) / (2 * eps)
        e = abs(numeric - analytic) / abs(analytic)
        print(f"{case} {label} direction: analytic {analytic:.6f} numeric {numeric:.6f} rel {e:.1e}")
        assert e < 5e-3, f"{case}: finite differences along the {label} direction differ by {e:.2e}"
    C.objective_destroy(o)


def test_teacher_starts_as_the_student_and_follows_it_by_ema(C):
    """teacher_momentum > 0: every "pretrain.teacher.*" tensor starts equal to its
    student tensor, is frozen (AdamW leaves it alone, it gets no gradient), and
    objective_teacher_update(m) moves it to m * teacher + (1 - m) * student."""
    o, table, _, _ = make(C, teacher=0.99, seed=9, perturb_teacher=False)
    tp = c_void(C.objective_params(o))
    teacher = [n for n in table.index if n.startswith("pretrain.teacher.")]
    student = {n: ("pretrain." if n.startswith("pretrain.teacher.projector.") else "") + n[len("pretrain.teacher."):]
               for n in teacher}
    enc = [n for n in table.index if not n.startswith("pretrain.")]
    assert len(teacher) == len(enc) + 4, "the teacher is the encoder plus the projector's 4 tensors"
    for n in teacher:  # as objective_create left it
        assert np.array_equal(table.data(n), table.data(student[n])), f"{n} does not start as {student[n]}"
    r = np.random.default_rng(4)
    for n in teacher:
        w = table.data(n)
        w += f32(r.standard_normal(w.shape))
    before = {n: table.data(n).copy() for n in teacher}
    v1, c1, v2 = batch(30)
    opt = cbind.AdamWState()
    C.adamw_init(ctypes.byref(opt), tp, 0.9, 0.999, 1e-8, 0.05)
    C.params_zero_grad(tp)
    run_c(C, o, v1, c1, v2, 0)
    for n in teacher:
        assert not table.grad(n).any(), f"{n} got a gradient"
    C.adamw_step(ctypes.byref(opt), tp, c_float(1e-2))
    for n in teacher:
        assert np.array_equal(table.data(n), before[n]), f"AdamW moved the frozen {n}"
    C.objective_teacher_update(o, 0.9)
    for n in teacher:
        want = f32(np.float32(0.9) * before[n] + np.float32(0.1) * table.data(student[n]))
        assert np.allclose(table.data(n), want, rtol=1e-6, atol=1e-7), f"{n}: EMA differs"
    C.objective_destroy(o)


def test_teacher_momentum_schedules(C):
    """constant: m0 at every update; cosine (BYOL/DINO): 1 - (1 - m0)(cos(pi t/T) + 1)/2,
    m0 at the start, (1 + m0)/2 halfway, 1 at the end and after it."""
    C.ema_momentum_at.restype = ctypes.c_double
    C.ema_momentum_at.argtypes = [ctypes.c_long, ctypes.c_double, ctypes.c_long, c_int]
    m0, T = 0.99, 1000
    for t in (0, 1, 250, 999, 1000, 5000):
        assert C.ema_momentum_at(t, m0, T, 0) == m0
        want = 1 - (1 - m0) * (np.cos(np.pi * min(t, T) / T) + 1) / 2
        assert abs(C.ema_momentum_at(t, m0, T, 1) - want) < 1e-15, t
    assert abs(C.ema_momentum_at(500, m0, T, 1) - (1 + m0) / 2) < 1e-15
    assert C.ema_momentum_at(T, m0, T, 1) == 1.0
