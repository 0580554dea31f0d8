"""The picture tools on a tiny 3-step run (build/bin/train, real Fashion-MNIST
shards): build/bin/reconstruct's file (shapes, ranges, the grey masked patches,
the centroid-replaced ones, the per-patch de-normalisation, recon == clean off
the scored patches), a checkpoint without a pixel head, and tools/scripts/make_figures.sh
writing every PNG (curves, reconstruction grid, centroid atlas, feature scatter)."""
import os, subprocess
import numpy as np
import pytest
from conftest import require

h5py = require("h5py", "python3-h5py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
PY = "/usr/bin/python3"
SHARDS = os.path.join(ROOT, "data", "fashion-mnist", "test-000000.tar")
TINY = ["--embed_dim=32", "--depth=3", "--num_heads=2", "--batch_size=32", "--num_centroids=32",
        "--tokenizer_images_per_class=20", "--tokenizer_iters=5", "--proj_hidden=64", "--proj_dim=32",
        "--warmup_steps=3", "--lr=1e-3", "--num_workers=2", "--shuffle_buffer_mb=4"]
N_IMAGES, P, N_MASK, N_REPLACE = 4, 4, 20, 5   # fashion_mnist.yaml: 7x7 patches, mask 0.4, replace 0.1


def run(cmd, **kw):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def train(out_dir, name, *extra):
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    run([os.path.join(BIN, "train"), "--config", os.path.join(ROOT, "configs", "fashion_mnist.yaml"),
         f"--output_dir={out_dir}", f"--run_name={name}"] + TINY + list(extra))
    return os.path.join(out_dir, name)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train(str(tmp_path_factory.mktemp("figures")), "tiny", "--steps=3")


def read_recon(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


def patches(img):
    """[n,C,H,W] -> [n,gh,gw,C*P*P] in (c,y,x) order, as the trainer's patchify."""
    n, c, h, w = img.shape
    return img.reshape(n, c, h // P, P, w // P, P).transpose(0, 2, 4, 1, 3, 5).reshape(n, h // P, w // P, c * P * P)


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 2000


def test_reconstruct_file(tiny_run, tmp_path):
    out = str(tmp_path / "recon.h5")
    p = run([os.path.join(BIN, "reconstruct"), os.path.join(tiny_run, "latest"), "--out", out, "--n", str(N_IMAGES)])
    assert "pixel head: MSE" in p.stdout and "token head: CE" in p.stdout
    d, at = read_recon(out)
    with h5py.File(os.path.join(tiny_run, "latest"), "r") as f:
        centroids = f["tokenizer/centroids"][()]
    shape, grid = (N_IMAGES, 1, 28, 28), (N_IMAGES, 7, 7)
    for k in ("clean", "corrupted", "recon_pixel", "recon_token"):
        assert d[k].shape == shape, f"{k}: {d[k].shape}"
        assert d[k].min() >= -1e-5 and d[k].max() <= 1 + 1e-5, f"{k} leaves [0,1]: {d[k].min()} {d[k].max()}"
    for k in ("mask", "replaced", "ids", "token_pred"):
        assert d[k].shape == grid, f"{k}: {d[k].shape}"
    assert at["step"] == 3 and at["has_pixel_head"] == 1 and at["has_token_head"] == 1 and at["grey"] == 0.5
    mask, repl = d["mask"] == 1, d["replaced"] == 1
    assert (mask.sum((1, 2)) == N_MASK).all() and (repl.sum((1, 2)) == N_REPLACE).all() and not (mask & repl).any()
    scored = mask | repl
    flat = np.nonzero(scored.reshape(-1))[0]
    assert np.array_equal(d["scored"], flat)
    M = len(flat)

    clean, cor = patches(d["clean"]), patches(d["corrupted"])
    assert (cor[mask] == 0.5).all(), "masked patches of the corrupted image are not grey"
    assert np.abs(cor[repl] - centroids[d["ids"][repl]]).max() < 1e-5, "replaced patches != their centroid's pixels"
    assert np.abs(cor[~scored] - clean[~scored]).max() < 1e-5, "de-normalised encoder input != clean crop"

    rp = patches(d["recon_pixel"])
    assert np.array_equal(rp[~scored], clean[~scored]), "pixel recon differs from clean off the scored patches"
    x = clean.reshape(-1, 16)[flat].astype(np.float64)
    want = d["pixel_pred"] * np.sqrt(x.var(1, ddof=1, keepdims=True) + 1e-6) + x.mean(1, keepdims=True)
    assert d["pixel_pred"].shape == (M, 16)
    assert np.abs(rp.reshape(-1, 16)[flat] - np.clip(want, 0, 1)).max() < 1e-5, "per-patch de-normalisation"
    assert not np.array_equal(rp[scored], clean[scored])

    rt = patches(d["recon_token"])
    assert np.array_equal(rt[~scored], clean[~scored]), "token recon differs from clean off the scored patches"
    tp = d["token_pred"]
    assert (tp[~scored] == -1).all() and (tp[scored] >= 0).all() and (tp[scored] < 32).all()
    assert np.abs(rt[scored] - centroids[tp[scored]]).max() < 1e-6, "token recon != the predicted centroids"
    assert 0 <= at["token_accuracy"] <= 1 and np.isfinite(at["loss_pixel"])

    png = str(tmp_path / "recon.png")
    run([PY, "tools/scripts/plot_reconstruction.py", out, png])
    assert is_png(png)


def test_reconstruct_without_pixel_head(tiny_run, tmp_path):
    run_dir = train(str(tmp_path), "tokens_only", "--steps=1", "--w_pixel=0", "--w_contrast=0",
                    f"--tokenizer_path={os.path.join(tiny_run, 'tokenizer.h5')}")
    out = str(tmp_path / "recon.h5")
    p = run([os.path.join(BIN, "reconstruct"), os.path.join(run_dir, "latest"), "--out", out, "--n", "2"])
    assert "pixel head: absent" in p.stdout
    d, at = read_recon(out)
    assert at["has_pixel_head"] == 0 and at["has_token_head"] == 1
    assert "recon_pixel" not in d and "pixel_pred" not in d and d["recon_token"].shape == (2, 1, 28, 28)
    png = str(tmp_path / "recon.png")
    p = run([PY, "tools/scripts/plot_reconstruction.py", out, png])
    assert "pixel head (empty)" in p.stdout and is_png(png)


def test_make_figures_writes_every_png(tiny_run):
    # eval --save-features files, made up (the real ones take minutes): 3 classes, 300 test images
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(tiny_run, "results"), exist_ok=True)
    for name, sep in (("random_init", 0.2), ("pretrained", 3.0)):
        y = np.repeat(np.arange(3), 100).astype(np.int32)
        x = (rng.normal(size=(300, 16)) + sep * np.eye(16)[y]).astype(np.float32)
        with h5py.File(os.path.join(tiny_run, "results", f"{name}_features.h5"), "w") as f:
            f["train_features"], f["train_labels"], f["test_features"], f["test_labels"] = x, y, x, y
    p = run(["bash", "tools/scripts/make_figures.sh", tiny_run, "3"], env=dict(os.environ, TSNE_SECONDS="60"))
    figs = os.path.join(tiny_run, "figures")
    for png in ("training_curves.png", "reconstruction.png", "centroid_atlas.png", "features.png", "neighbours.png"):
        path = os.path.join(figs, png)
        assert path in p.stdout and is_png(path), f"{png} missing or empty:\n{p.stdout}\n{p.stderr}"
    assert "; t-SNE" in p.stdout, f"t-SNE of 300 points did not finish in 60 s:\n{p.stdout}"
    _, at = read_recon(os.path.join(figs, "reconstruction.h5"))
    assert at["step"] == 3


def test_plot_metrics_reads_what_a_killed_or_fine_tune_run_leaves(tmp_path):
    """A last line cut short (a killed run) is skipped with a warning; a fine-tune's val_top1 line
    on the last training step does not hide that step's losses; a file with none of the plotted
    metrics is an error naming it."""
    require("matplotlib", "python3-matplotlib")
    m = tmp_path / "metrics.jsonl"
    m.write_text('{"step": 1, "loss": 3.0, "lr": 0.1}\n{"step": 2, "loss": 2.0, "lr": 0.1}\n'
                 '{"step": 2, "val_top1": 80.0}\n{"step": 3, "lo')
    p = subprocess.run([PY, os.path.join(ROOT, "tools/scripts/plot_metrics.py"), str(m), str(tmp_path / "c.png")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "cut short" in p.stdout and "over 2 steps (loss, lr)" in p.stdout, p.stdout + p.stderr
    assert is_png(tmp_path / "c.png")
    m.write_text('{"step": 1, "other": 1}\n')
    p = subprocess.run([PY, os.path.join(ROOT, "tools/scripts/plot_metrics.py"), str(m), str(tmp_path / "d.png")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "has none of the metrics" in p.stderr and str(m) in p.stderr, p.stderr
