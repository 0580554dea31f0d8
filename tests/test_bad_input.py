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


def png_bytes(width, height, rows=None):
    """A grey 8-bit PNG; rows: the raw scanlines (filter byte + pixels), zeros by default."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = rows if rows is not None else bytes((width + 1) * height)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def shard_of(path, samples):
    """samples: (key, {ext: bytes})"""
    with tarfile.open(path, "w") as t:
        for key, parts in samples:
            for ext, payload in parts.items():
                info = tarfile.TarInfo(key + ext)
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
    return str(path)


def check_data(*args):
    p = run([os.path.join(BIN, "check_data")] + [str(a) for a in args] + ["--max_skip_fraction=1"])
    return p.stdout + p.stderr


@pytest.mark.parametrize("width,height", [(0, 28), (28, 0)])
def test_an_image_with_a_zero_side_is_skipped_as_corrupt(tmp_path, width, height):
    shard = shard_of(tmp_path / "z-000000.tar", [("good", {".png": png_bytes(28, 28), ".cls": b"1"}),
                                                 ("flat", {".png": png_bytes(width, height, b""), ".cls": b"1"})])
    out = check_data(shard, "--full")
    assert "bad: corrupt image (1)" in out and "z-000000.tar flat" in out, out


@pytest.mark.parametrize("label", [b"seven", b"-1", b"3.0", b""])
def test_a_label_that_is_not_a_class_index_is_skipped_and_counted(tmp_path, label):
    shard = shard_of(tmp_path / "l-000000.tar", [("good", {".png": png_bytes(28, 28), ".cls": b"1"}),
                                                 ("odd", {".png": png_bytes(28, 28), ".cls": label})])
    out = check_data(shard, "--task=finetune")
    assert "bad: missing image or label (1)" in out and "l-000000.tar odd" in out, out


def test_a_png_bomb_is_refused_from_its_header(tmp_path):
    bomb = png_bytes(8001, 8000)  # 64 MB of pixels in ~62 KB
    assert len(bomb) < 200_000
    shard = shard_of(tmp_path / "b-000000.tar", [("bomb", {".png": bomb, ".cls": b"1"}),
                                                 ("good", {".png": png_bytes(28, 28), ".cls": b"1"})])
    out = check_data(shard, "--full")
    assert "bad: too many pixels (1)" in out and "b-000000.tar bomb" in out, out


def test_a_finetune_training_label_beyond_num_classes_stops_naming_it(tmp_path):
    bad = shard_with_label(tmp_path / "t.tar", 99)
    p = run([os.path.join(BIN, "train"), "--config", "configs/fashion_mnist_finetune.yaml",
             f"--output_dir={tmp_path}", "--run_name=ft", f"--data_train={bad}", "--steps=3", "--save_every=0",
             "--shuffle_buffer_mb=0"] + TINY)
    assert p.returncode == 1 and "label 99 of a training image is outside [0, num_classes = 10)" in p.stderr, p.stderr


@pytest.mark.parametrize("kind", ["end_marker_only", "zero_bytes"])
def test_an_empty_shard_stops_training_and_eval_by_name(tmp_path, kind):
    path = tmp_path / "e-000000.tar"
    if kind == "zero_bytes":
        path.write_bytes(b"")
    else:
        shard_of(path, [])
    p = run([os.path.join(BIN, "train"), "--config", "configs/fashion_mnist.yaml", f"--output_dir={tmp_path}",
             "--run_name=e", f"--data_train={path}", "--steps=1", "--w_token=0", "--w_pixel=0"] + TINY)
    assert p.returncode == 1 and "0 samples" in p.stderr, p.stderr[-1500:]
    p = run([os.path.join(BIN, "eval"), "--raw-pixels", "--config", "configs/fashion_mnist.yaml", "--train", SOURCE,
             "--test", str(path), "--no-probe", "--num_workers=1", "--out", str(tmp_path / "e.json")])
    assert p.returncode == 1 and "gave no images" in p.stderr, p.stderr[-1500:]


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path):
    p = run([os.path.join(BIN, "train"), "--config", "configs/fashion_mnist.yaml", f"--output_dir={tmp_path}",
             "--run_name=tok", f"--data_train={SOURCE}", "--steps=1", "--num_centroids=16",
             "--tokenizer_images_per_class=5", "--tokenizer_iters=2", "--w_contrast=0", "--save_every=0"] + TINY)
    assert p.returncode == 0, p.stderr[-1500:]
    tok = tmp_path / "tok" / "tokenizer.h5"
    p = run([os.path.join(BIN, "config_check"), "--config", "configs/fashion_mnist.yaml"])  # sanity: the config is fine
    assert p.returncode == 0, p.stderr
    for extra, want in ((["--patch_size=7"], "has patch size 4 and 1 channels, but the model (patch_size, in_chans) "
                                             "uses patch size 7"),
                        ([], "no-such-tokenizer.h5")):
        path = tok if extra else tmp_path / "no-such-tokenizer.h5"
        p = run([os.path.join(BIN, "train"), "--config", "configs/fashion_mnist.yaml", f"--output_dir={tmp_path}",
                 "--run_name=t2", f"--data_train={SOURCE}", "--steps=1", f"--tokenizer_path={path}",
                 "--w_contrast=0"] + TINY + extra)
        assert p.returncode == 1 and want in p.stderr, p.stderr[-1500:]


def test_a_checkpoint_that_crashes_libhdf5_fails_verification_instead(tmp_path):
    """libhdf5 can crash on a damaged file (tests/fuzz/regress/hdf5_library/): verification runs
    in a child process, so the crash is a failed verification and the caller lives on."""
    ckpt = os.path.join(ROOT, "tests", "fuzz", "regress", "hdf5_library", "checkpoint_segv_in_H5Lvisit.h5")
    env = dict(os.environ, CCVIT_FAULT_VERIFY_CRASH="1")  # the child dies as libhdf5 would
    p = subprocess.run([os.path.join(BIN, "ckpt_info"), ckpt, "--verify"], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "crashed libhdf5 (signal 11" in p.stdout + p.stderr, p.stdout + p.stderr
    p = subprocess.run([os.path.join(BIN, "train"), "--config", "configs/fashion_mnist.yaml", f"--output_dir={tmp_path}",
                        "--run_name=r", f"--resume={ckpt}"] + TINY, cwd=ROOT, capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "resume:" in p.stderr and "crashed libhdf5" in p.stderr, p.stderr[-1500:]


def test_fine_tuning_keys_in_a_pretraining_config_are_named():
    """They do nothing in pretraining: the user hears which, and from where, and the config still runs."""
    p = run([os.path.join(BIN, "config_check"), "--config", "configs/fashion_mnist.yaml", "--mixup=0.8"])
    assert p.returncode == 0 and "warning: task pretrain ignores the fine-tuning keys set: mixup (--mixup=0.8)" in p.stderr, \
        p.stderr
    p = run([os.path.join(BIN, "config_check"), "--config", "configs/fashion_mnist.yaml"])
    assert p.returncode == 0 and "ignores" not in p.stderr, p.stderr
