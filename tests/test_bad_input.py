"""Labels no class list could hold (a corrupt .cls): eval and fine-tuning's
validation refuse them by name instead of reading out of bounds, and config
checks refuse a corruption that selects no patch before any work starts."""
import io
import os
import subprocess
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "build", "bin")
SOURCE = os.path.join(ROOT, "data", "fashion-mnist", "test-000000.tar")
TINY = ["--embed_dim=32", "--depth=3", "--num_heads=2", "--batch_size=32", "--num_workers=2",
        "--shuffle_buffer_mb=4", "--warmup_steps=1"]


def shard_with_label(path, label, n=64):
    """n Fashion-MNIST samples with the first one's label replaced."""
    if not os.path.exists(SOURCE):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    with tarfile.open(SOURCE) as src, tarfile.open(path, "w") as dst:
        members = [m for m in src.getmembers() if m.isfile()][:2 * n]
        for k, m in enumerate(members):
            data = src.extractfile(m).read()
            if k == 1 and m.name.endswith(".cls"):
                data = str(label).encode()
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return str(path)


def run(args):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("label", [2000000000, 2147483647])
def test_eval_refuses_a_label_no_class_list_holds(tmp_path, label):
    bad = shard_with_label(tmp_path / "bad.tar", label)
    p = run([os.path.join(BIN, "eval"), "--raw-pixels", "--config", "configs/fashion_mnist.yaml", "--train", bad,
             "--test", SOURCE, "--no-probe", "--num_workers=1", "--out", str(tmp_path / "e.json")])
    assert p.returncode == 1, p.stderr[-2000:]
    assert f"has label {label}, outside [0, 100000)" in p.stderr and "bad.tar" in p.stderr


def test_finetune_validation_refuses_labels_beyond_num_classes(tmp_path):
    bad = shard_with_label(tmp_path / "val.tar", 99)
    p = run([os.path.join(BIN, "train"), "--config", "configs/fashion_mnist_finetune.yaml",
             f"--output_dir={tmp_path}", "--run_name=ft", f"--data_train={SOURCE}", f"--data_val={bad}",
             "--steps=1", "--save_every=0"] + TINY)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "data_val" in p.stderr and "has label 99, outside [0, num_classes = 10)" in p.stderr


def test_a_corruption_that_selects_no_patch_is_refused_before_any_work(tmp_path):
    p = run([os.path.join(BIN, "config_check"), "--config", "configs/fashion_mnist.yaml", "--mask_ratio=0",
             "--replace_ratio=0"])
    assert p.returncode != 0 and "select none of the 49 patches" in p.stderr


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_a_cut_jpeg_that_still_ends_in_eoi_is_skipped_and_counted(tmp_path, keep):
    from conftest import require
    require("PIL", "python3-pil")
    from PIL import Image
    import numpy as np
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    jpg = buf.getvalue()
    bad = jpg[:int(len(jpg) * keep)] + b"\xff\xd9"  # the scan cut short, the end-of-image marker put back
    shard = tmp_path / "d-000000.tar"
    with tarfile.open(shard, "w") as t:
        for key, data in (("good", jpg), ("bad", bad)):
            for ext, payload in ((".jpg", data), (".cls", b"0")):
                info = tarfile.TarInfo(key + ext)
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
    p = run([os.path.join(BIN, "check_data"), str(shard), "--full", "--max_skip_fraction=1"])
    assert "bad: corrupt image (1)" in p.stdout + p.stderr, p.stdout + p.stderr
    assert "damaged JPEG data" in p.stdout + p.stderr and "d-000000.tar bad" in p.stdout + p.stderr


def test_a_shard_longer_than_its_manifest_says_is_named(tmp_path):
    shard = shard_with_label(tmp_path / "m-000000.tar", 3, n=100)  # 100 samples
    with open(os.path.join(ROOT, "data", "fashion-mnist", "test-manifest.txt")) as f:
        manifest = f.read().replace("samples 10000", "samples 50").replace("shard test-000000.tar 10000",
                                                                           "shard m-000000.tar 50")
    (tmp_path / "m-manifest.txt").write_text(manifest)
    p = run([os.path.join(BIN, "eval"), "--raw-pixels", "--config", "configs/fashion_mnist.yaml", "--train", SOURCE,
             "--test", shard, "--no-probe", "--num_workers=1", "--out", str(tmp_path / "e.json")])
    assert p.returncode == 0, p.stderr[-2000:]
    assert "m-000000.tar holds 100 samples, its manifest says 50" in p.stderr
