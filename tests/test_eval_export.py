"""Checkpoint consumers: the PyTorch export (timm names, features equal to the C
forward pass), h5ls/h5py readability, and build/bin/eval (its linear probe
against scikit-learn's LogisticRegression on the same features, its kNN
against a numpy transcription of DINO's weighted kNN, and a checkpoint's
features against the same weights built by --random-init).

Observed: export max |C - torch| on final tokens ~1e-6 (tolerance 1e-4);
probe accuracy equal to sklearn's on both feature sets (tolerance 0.3 points).
"""
import ctypes, json, os, subprocess, sys
import numpy as np
import pytest
from conftest import require, ROOT

torch = require("torch", "python3-torch")
h5py = require("h5py", "python3-h5py")
import torch_twin
import cbind
from cbind import ptr, f32, view

EVAL = os.path.join(ROOT, "build", "bin", "eval")
MODEL = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=48, depth=2, num_heads=2, mlp_ratio=4.0, qkv_bias=1,
             layer_scale_init=0.0, num_classes=0, use_mask_token=0)


@cbind.mirrors("CheckpointState")
class CheckpointState(ctypes.Structure):
    _fields_ = [("params", ctypes.c_void_p), ("opt", ctypes.c_void_p), ("tokenizer", ctypes.c_void_p),
                ("config_yaml", ctypes.c_char_p), ("code_version", ctypes.c_char_p), ("step", ctypes.c_int64),
                ("epoch", ctypes.c_int64), ("rng", ctypes.c_void_p), ("rng_size", ctypes.c_size_t),
                ("cursor", ctypes.c_void_p), ("cursor_size", ctypes.c_size_t), ("mode", ctypes.c_int)]


def config_yaml(tmp_path, **keys):
    """The effective config YAML for these keys (through build/bin/config_check). The encoders here are
    as shallow as 2 blocks, which the pixel head cannot train on: w_pixel 0 unless given."""
    keys.setdefault("w_pixel", 0)
    args = [f"--{k}={v}" for k, v in keys.items()]
    out = subprocess.run([os.path.join(ROOT, "build/bin/config_check")] + args, check=True, capture_output=True, text=True).stdout
    return out


def model_keys(m, seed):
    return dict(img_size=m["img_size"], patch_size=m["patch_size"], in_chans=m["in_chans"], embed_dim=m["embed_dim"],
                depth=m["depth"], num_heads=m["num_heads"], mlp_ratio=m["mlp_ratio"], seed=seed,
                layer_scale_init=m["layer_scale_init"], qkv_bias="true" if m["qkv_bias"] else "false")


def save_checkpoint(lib, cvit, path, yaml, step=123):
    lib.checkpoint_save.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    st = CheckpointState(params=cvit.table, config_yaml=yaml.encode(), code_version=b"test", step=step, epoch=1)
    err = ctypes.create_string_buffer(2048)
    assert lib.checkpoint_save(str(path).encode(), ctypes.byref(st), err, 2048) == 0, err.value.decode()


@pytest.fixture(scope="module")
def C():
    lib = cbind.load()
    cbind.setup_vit_views(lib)
    return lib


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Fashion-MNIST's test split as 4 shards of 2500: shards 0-1 serve as train, 3 as test."""
    out = tmp_path_factory.mktemp("fm") / "test"
    subprocess.run([os.path.join(ROOT, "build/bin/make_shards"), "--fashion-mnist", "/usr/share/datasets/fashion-mnist",
                    "--split", "test", "--out", str(out), "--per-shard", "2500"], check=True, capture_output=True)
    return f"{out}-{{000000..000001}}.tar", f"{out}-000003.tar"


@pytest.mark.parametrize("layer_scale", [0.0, 0.1])
def test_export_matches_c_forward(C, tmp_path, layer_scale):
    m = dict(MODEL, layer_scale_init=layer_scale, use_mask_token=1)
    cv = cbind.CVit(C, 4, seed=11, **m)
    ckpt, pt = tmp_path / "c.h5", tmp_path / "c.pt"
    save_checkpoint(C, cv, ckpt, config_yaml(tmp_path, **model_keys(m, 11)))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools/programs/export_torch.py"), str(ckpt), str(pt), "--print-config"],
                         check=True, capture_output=True, text=True).stdout
    assert "VisionTransformer(" in out and "patch_size=7" in out
    sd = torch.load(pt)
    assert "mask_token" not in sd and "blocks.1.attn.qkv.weight" in sd
    twin = torch_twin.VisionTransformer(**dict(m, use_mask_token=False))
    twin.load_state_dict(sd, strict=True)
    x = f32(np.random.default_rng(0).standard_normal((4, 1, 28, 28)))
    C.vit_forward(cv.handle, ptr(x), None, 4)
    c_final = view(C.vit_final_tokens(cv.handle), (4, 17, 48)).copy()
    with torch.no_grad():
        t_final = twin.forward_features(torch.from_numpy(x)).numpy()
    diff = np.abs(c_final - t_final).max()
    assert diff < 1e-4, f"exported model differs from the C forward by {diff}"
    # --with-heads adds the pretraining heads under their table names
    subprocess.run([sys.executable, os.path.join(ROOT, "tools/programs/export_torch.py"), str(ckpt), str(pt), "--with-heads"], check=True,
                   capture_output=True)
    assert "mask_token" in torch.load(pt)


def test_h5ls_and_h5py_see_every_tensor(C, tmp_path):
    cv = cbind.CVit(C, 2, seed=1, **dict(MODEL, use_mask_token=1))
    ckpt = tmp_path / "c.h5"
    save_checkpoint(C, cv, ckpt, "embed_dim: 48\n")
    listing = subprocess.run(["h5ls", "-r", str(ckpt)], check=True, capture_output=True, text=True).stdout
    with h5py.File(ckpt, "r") as f:
        for name in cv.names():
            where = "pretrain_heads/" if name == "mask_token" else "encoder/"
            assert f"/{where}{name} " in listing.replace("\\", ""), f"h5ls -r lacks {name}"
            np.testing.assert_array_equal(f[where + name][()], cv.tensor(name))
        assert int(f.attrs["step"]) == 123 and int(f.attrs["format_version"]) == 1
        assert f["encoder/pos_embed"].fletcher32 and f["encoder/pos_embed"].chunks
    info = subprocess.run([os.path.join(ROOT, "build/bin/ckpt_info"), str(ckpt), "--verify"], check=True, capture_output=True,
                          text=True).stdout
    for text in ("step / epoch    123 / 1", "blocks.1.attn.qkv.weight", "[144, 48]", "mask_token", "size on disk",
                 "embed_dim: 48", "good checksum"):
        assert text in info, f"ckpt_info lacks '{text}':\n{info}"


def dino_knn(tr, ytr, te, yte, k=20, T=0.07, classes=10):
    tr = tr / np.linalg.norm(tr, axis=1, keepdims=True)
    te = te / np.linalg.norm(te, axis=1, keepdims=True)
    sim = te.astype(np.float64) @ tr.T.astype(np.float64)
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    w = np.exp(np.take_along_axis(sim, idx, 1) / T)
    votes = np.zeros((len(te), classes))
    for c in range(classes):
        votes[:, c] = (w * (ytr[idx] == c)).sum(1)
    order = np.argsort(-votes, axis=1, kind="stable")
    return 100 * (order[:, 0] == yte).mean(), 100 * (order[:, :5] == yte[:, None]).any(1).mean()


def run_eval(args, tmp_path, name, env=None):
    out, feats = tmp_path / f"{name}.json", tmp_path / f"{name}.h5"
    p = subprocess.run([EVAL] + args + ["--out", str(out), "--save-features", str(feats), "--num_workers=1"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    with h5py.File(feats, "r") as f:
        data = [f[k][()] for k in ("train_features", "train_labels", "test_features", "test_labels")]
    return json.load(open(out)), data, p.stdout


def sklearn_probe_top1(r, Xtr, ytr, Xte, yte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    sc = StandardScaler().fit(Xtr.astype(np.float64))
    clf = LogisticRegression(C=r["probe_sklearn_C"], max_iter=5000, tol=1e-6).fit(sc.transform(Xtr), ytr)
    return 100 * (clf.predict(sc.transform(Xte)) == yte).mean()


@pytest.mark.parametrize("mode", ["raw-pixels", "random-init"])
def test_eval_agrees_with_sklearn_and_dino_knn(tmp_path, shards, mode):
    require("sklearn", "python3-sklearn")
    train, test = shards
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config_yaml(tmp_path, **model_keys(MODEL, 3)))
    # sklearn's own solver is slow on weakly regularised raw pixels, so that case tries strong L2 only
    lambdas = "1e-2,1e-1" if mode == "raw-pixels" else "1e-5,1e-4,1e-2"
    r, (Xtr, ytr, Xte, yte), stdout = run_eval([f"--{mode}", "--config", str(cfg), "--train", train, "--test", test,
                                                "--limit-train", "1500", "--limit-test", "500", "--lambdas", lambdas], tmp_path, mode)
    assert "kNN" in stdout and "linear probe" in stdout
    assert Xtr.shape == (1500, 784 if mode == "raw-pixels" else 96) and Xte.shape[0] == 500
    top1, top5 = dino_knn(Xtr, ytr, Xte, yte)
    assert abs(top1 - r["knn_top1"]) <= 0.2 and abs(top5 - r["knn_top5"]) <= 0.2, (top1, top5, r)
    sk = sklearn_probe_top1(r, Xtr, ytr, Xte, yte)
    assert abs(sk - r["probe_top1"]) <= 0.3, f"C probe {r['probe_top1']:.2f} vs sklearn {sk:.2f} at C={r['probe_sklearn_C']}"
    assert r["probe_grad_max"] < 1e-6, f"the refit did not converge: largest gradient entry {r['probe_grad_max']}"


def test_probe_is_the_same_on_1_and_2_threads(tmp_path, shards):
    """The probe's objective sums in a fixed order, so its line searches, its stop,
    the chosen L2 and the weights do not depend on the thread count."""
    train, test = shards
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config_yaml(tmp_path, **model_keys(MODEL, 3)))
    args = ["--random-init", "--config", str(cfg), "--train", train, "--test", test, "--limit-train", "1500",
            "--limit-test", "500", "--lambdas", "1e-5,1e-3", "--no-knn"]
    runs = [run_eval(args, tmp_path, f"t{n}", env=dict(os.environ, OMP_NUM_THREADS=str(n)))[0] for n in (1, 2)]
    keys = ("probe_top1", "probe_iters", "probe_grad_max", "probe_l2", "probe_train_top1")
    assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys], [[r[k] for k in keys] for r in runs]


def test_eval_checkpoint_uses_its_weights(C, tmp_path, shards):
    """A checkpoint of the C init with seed 3 gives the same features as --random-init --seed=3."""
    train, test = shards
    yaml = config_yaml(tmp_path, **model_keys(MODEL, 3))
    cv = cbind.CVit(C, 2, seed=3, **MODEL)
    ckpt = tmp_path / "ckpt_step00000123.h5"
    save_checkpoint(C, cv, ckpt, yaml)
    args = ["--train", train, "--test", test, "--limit-train", "300", "--limit-test", "100", "--no-probe"]
    r, a, _ = run_eval([str(ckpt)] + args, tmp_path, "ckpt")
    assert r["step"] == 123
    (tmp_path / "cfg.yaml").write_text(yaml)
    _, b, _ = run_eval(["--random-init", "--config", str(tmp_path / "cfg.yaml")] + args, tmp_path, "rand")
    np.testing.assert_array_equal(a[0], b[0])
    # a different seed's weights differ
    _, c, _ = run_eval(["--random-init", "--config", str(tmp_path / "cfg.yaml"), "--seed=4"] + args, tmp_path, "rand4")
    assert not np.array_equal(a[0], c[0])
    # default JSON location: beside the checkpoint
    p = subprocess.run([EVAL, str(ckpt)] + args + ["--num_workers=1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.load(open(tmp_path / "ckpt_step00000123.eval.json"))["n_train"] == 300


def test_eval_refuses_bad_checkpoint(tmp_path, shards):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    p = subprocess.run([EVAL, str(bad), "--train", shards[0], "--test", shards[1]], capture_output=True, text=True)
    assert p.returncode != 0 and "not an HDF5 file" in p.stderr


def test_eval_block_features(C, tmp_path, shards):
    """--block L gives the tokens out of blocks.L: for the last block, the default (final-norm) CLS
    feature is exactly its layer norm (the init's norm weight 1, bias 0); other blocks differ; a block
    out of range is refused with the valid range."""
    train, test = shards
    yaml = config_yaml(tmp_path, **model_keys(MODEL, 3))
    ckpt = tmp_path / "ckpt.h5"
    save_checkpoint(C, cbind.CVit(C, 2, seed=3, **MODEL), ckpt, yaml)
    args = [str(ckpt), "--train", train, "--test", test, "--limit-train", "200", "--limit-test", "50", "--no-probe"]
    r_fin, fin, _ = run_eval(args, tmp_path, "final")
    r_b1, b1, _ = run_eval(args + ["--block", "1"], tmp_path, "b1")
    _, b0, _ = run_eval(args + ["--block", "0"], tmp_path, "b0")
    assert r_fin["block"] == -1 and r_b1["block"] == 1
    D = MODEL["embed_dim"]
    cls = b1[0][:, :D].astype(np.float64)
    normed = (cls - cls.mean(1, keepdims=True)) / np.sqrt(cls.var(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(fin[0][:, :D], normed, rtol=1e-4, atol=1e-4)
    assert np.abs(b0[0] - b1[0]).max() > 1e-2
    p = subprocess.run([EVAL] + args + ["--block", "2"], capture_output=True, text=True)
    assert p.returncode != 0 and "blocks 0..1" in p.stderr, p.stderr


def test_eval_last_blocks_concatenates_normed_blocks(C, tmp_path, shards):
    """--last-blocks N (DINO's linear-eval features): the features of the last N blocks side by side,
    each block's tokens through the final norm; N 1 is the default; the last part is the default
    feature; N beyond the blocks up to --block is refused."""
    train, test = shards
    yaml = config_yaml(tmp_path, **model_keys(MODEL, 3))
    ckpt = tmp_path / "ckpt.h5"
    save_checkpoint(C, cbind.CVit(C, 2, seed=3, **MODEL), ckpt, yaml)
    args = [str(ckpt), "--train", train, "--test", test, "--limit-train", "200", "--limit-test", "50", "--no-probe",
            "--features", "cls"]
    _, fin, _ = run_eval(args, tmp_path, "final")
    _, b0, _ = run_eval(args + ["--block", "0"], tmp_path, "b0")
    r2, two, _ = run_eval(args + ["--last-blocks", "2"], tmp_path, "two")
    D = MODEL["embed_dim"]
    assert r2["last_blocks"] == 2 and two[0].shape == (200, 2 * D) and two[2].shape == (50, 2 * D)
    np.testing.assert_array_equal(two[0][:, D:], fin[0])      # the last block's part is the default feature
    np.testing.assert_array_equal(two[2][:, D:], fin[2])
    cls0 = b0[0].astype(np.float64)                           # the first part: blocks.0's CLS through the norm
    normed = (cls0 - cls0.mean(1, keepdims=True)) / np.sqrt(cls0.var(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(two[0][:, :D], normed, rtol=1e-4, atol=1e-4)
    _, both, _ = run_eval(args[:-2] + ["--last-blocks", "2"], tmp_path, "both")
    assert both[0].shape == (200, 4 * D)
    p = subprocess.run([EVAL] + args + ["--block", "0", "--last-blocks", "2"], capture_output=True, text=True)
    assert p.returncode != 0 and "--last-blocks 2: need 1..1" in p.stderr, p.stderr


def test_eval_refuses_bad_options_overrides_and_nan_weights(C, tmp_path, shards):
    """Option values are parsed whole; a --key that changes the checkpoint's encoder, the same data
    as train and test, and weights that give NaN features are errors that say so."""
    train, test = shards
    yaml = config_yaml(tmp_path, **model_keys(MODEL, 3))
    ckpt = tmp_path / "ckpt.h5"
    cv = cbind.CVit(C, 2, seed=3, **MODEL)
    save_checkpoint(C, cv, ckpt, yaml)
    args = [str(ckpt), "--train", train, "--test", test, "--limit-train", "200", "--limit-test", "50", "--no-probe"]

    def fails(extra, want, base=args):
        p = subprocess.run([EVAL] + base + extra, capture_output=True, text=True)
        assert p.returncode != 0 and want in p.stderr, (extra, p.stderr)

    fails(["--block", "x"], "--block: 'x' is not an integer")
    fails(["--k", "20x"], "--k: '20x' is not an integer")
    fails(["--lambdas", ",".join(["1e-3"] * 17)], "--lambdas: more than 16 values")
    fails(["--num_heads=4"], "change the encoder")
    fails(["--mean=0.5"], "mean: [0.286] vs [0.5]")
    fails([], "are the same data", base=[str(ckpt), "--train", train, "--test", train])
    cv.tensor("pos_embed")[...] = np.nan
    save_checkpoint(C, cv, tmp_path / "nan.h5", yaml)
    fails([], "NaN or infinite", base=[str(tmp_path / "nan.h5")] + args[1:])


def test_eval_val_from_train_never_reads_the_test_split(tmp_path, shards):
    """--val-from-train N scores N train images (a seeded draw) against the other train images:
    the features are the train split's own rows, the test split is not read, and the result is
    the same whatever --test names."""
    train, test = shards
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config_yaml(tmp_path, **model_keys(MODEL, 3)))
    base = ["--random-init", "--config", str(cfg), "--train", train, "--limit-train", "600", "--no-probe"]
    r, (Xtr, ytr, Xva, yva), _ = run_eval(base + ["--test", test], tmp_path, "all")   # full train rows for reference
    rv, (Btr, btr, Bva, bva), _ = run_eval(base + ["--val-from-train", "100", "--test", "/no/such/split"], tmp_path, "val")
    assert rv["val_from_train"] == 100 and Bva.shape[0] == 100 and Btr.shape[0] == 500
    rows = {tuple(x) for x in Xtr}
    assert all(tuple(x) in rows for x in Bva) and all(tuple(x) in rows for x in Btr)   # every row is a train row
    assert not ({tuple(x) for x in Bva} & {tuple(x) for x in Btr})                     # disjoint
    top1, _ = dino_knn(Btr, btr, Bva, bva)
    assert abs(top1 - rv["knn_top1"]) <= 0.2, (top1, rv)


def test_knn_variants_plain_row_repeats_eval(tmp_path, shards):
    """tools/scripts/knn_variants.py's plain row is eval's kNN on the same saved features (the README's whitening
    table rests on that); every variant prints a top-1 in [0, 100]."""
    train, test = shards
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config_yaml(tmp_path, **model_keys(MODEL, 3)))
    r, _, _ = run_eval(["--random-init", "--config", str(cfg), "--train", train, "--test", test,
                        "--limit-train", "1500", "--limit-test", "500", "--no-probe"], tmp_path, "variants")
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "scripts", "knn_variants.py"), str(tmp_path / "variants.h5")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = {line.split("kNN top-1")[0].strip(): float(line.split()[-1]) for line in p.stdout.splitlines()
            if "kNN top-1" in line}
    assert len(rows) == 7 and all(0 <= v <= 100 for v in rows.values()), p.stdout
    assert abs(rows["plain (eval's protocol)"] - r["knn_top1"]) <= 0.2, (rows, r["knn_top1"])  # one image of 500
