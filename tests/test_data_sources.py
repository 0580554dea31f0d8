"""Data as users have it: shards without labels, gzip-compressed shards, flat
folders and list files, and check_data. A small slice of the Fashion-MNIST
test shard (`make shards`) is rewritten by Python's tarfile in each form."""
import ctypes, gzip, os, shutil, subprocess, tarfile
import numpy as np
import pytest

import cbind
import test_loader as tl
import test_train as tt

ROOT = tt.ROOT
BIN = os.path.join(ROOT, "build", "bin")
TEST_SHARD = os.path.join(ROOT, "data", "fashion-mnist", "test-000000.tar")
N_SAMPLES, PER_SHARD = 240, 120


def first_samples(n):
    """(key, png bytes, label) of the first n samples of the Fashion-MNIST test shard."""
    if not os.path.exists(TEST_SHARD):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    out, cur = [], {}
    with tarfile.open(TEST_SHARD) as t:
        for m in t:
            key, ext = m.name.split(".", 1)
            cur.setdefault(key, {})[ext] = t.extractfile(m).read()
            if len(cur) > n:
                break
    for key in sorted(cur)[:n]:
        out.append((key, cur[key]["png"], int(cur[key]["cls"])))
    return out


def write_shards(folder, prefix, samples, labels=True, compress=False):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(0, len(samples), PER_SHARD):
        path = os.path.join(folder, f"{prefix}-{i // PER_SHARD:06d}.tar" + (".gz" if compress else ""))
        raw = path[:-3] if compress else path
        with tarfile.open(raw, "w", format=tarfile.USTAR_FORMAT) as t:
            for key, png, label in samples[i:i + PER_SHARD]:
                parts = [("png", png)] + ([("cls", str(label).encode())] if labels else [])
                for ext, data in parts:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    t.addfile(info, __import__("io").BytesIO(data))
        if compress:
            with open(raw, "rb") as f, gzip.open(path, "wb") as g:
                g.write(f.read())
            os.remove(raw)
        paths.append(path)
    ext = ".tar.gz" if compress else ".tar"
    return os.path.join(folder, f"{prefix}-{{000000..{len(paths) - 1:06d}}}{ext}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    s = first_samples(N_SAMPLES)
    src = {"labelled": write_shards(str(d), "lab", s), "unlabelled": write_shards(str(d), "unl", s, labels=False),
           "gzip": write_shards(str(d), "gz", s, compress=True)}
    flat = d / "flat"
    for i, (key, png, _) in enumerate(s):  # two levels, as a crawl would leave them
        sub = flat / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{key}.png").write_bytes(png)
    src["folder"] = str(flat)
    with open(d / "list.txt", "w") as f:
        f.write("# images of the flat folder, every other one labelled\n")
        for i, (key, _, label) in enumerate(s):
            f.write(f"flat/part{i % 3}/{key}.png" + (f" {label}\n" if i % 2 == 0 else "\n"))
    src["list"] = str(d / "list.txt")
    return src


def train_batches(lib, shards, steps, cursor_at=None, **opts):
    """view1, view2 and clean1 of `steps` training batches (seeded, two views); with cursor_at, the
    loader is closed after that many batches and a fresh one resumes from the saved cursor."""
    cfg = dict(shards=shards, mode="train", batch_size=16, image_size=28, channels=1, two_views=1, seed=5,
               num_threads=2, shuffle_bytes=1 << 16, require_labels=0)
    cfg.update(opts)
    L, out, b = tl.PyLoader(lib, **cfg), [], tl.Batch()
    for s in range(steps):
        if cursor_at is not None and s == cursor_at:
            buf = ctypes.create_string_buffer(lib.loader_cursor_size())
            lib.loader_cursor_save(L.h, buf)
            L.close()
            L = tl.PyLoader(lib, **cfg)
            assert lib.loader_cursor_restore(L.h, buf) == 1
        assert lib.loader_next(L.h, ctypes.byref(b)) == 1
        shape = (b.n, b.channels, b.height, b.width)
        out.append([np.ctypeslib.as_array(p, shape=shape).copy() for p in (b.view1, b.view2, b.clean1)])
    L.close()
    return out


def same(a, b):
    return all(np.array_equal(x.view(np.uint32), y.view(np.uint32)) for u, v in zip(a, b) for x, y in zip(u, v))


@pytest.fixture(scope="module")
def lib():
    return cbind.load()


def test_labels_do_not_change_the_stream(lib, data):
    """The same images with and without .cls entries: the same pretraining batches, bit for bit."""
    steps = N_SAMPLES // 16
    assert same(train_batches(lib, data["labelled"], steps), train_batches(lib, data["unlabelled"], steps))


def test_gzip_shards_give_the_plain_batches_and_resume_mid_shard(lib, data):
    steps = N_SAMPLES // 16 * 2  # two epochs; the cursor at batch 5 sits inside the first shard
    plain = train_batches(lib, data["labelled"], steps, require_labels=1)
    assert same(plain, train_batches(lib, data["gzip"], steps, require_labels=1))
    assert same(plain, train_batches(lib, data["gzip"], steps, cursor_at=5, require_labels=1))


def test_truncated_gzip_and_non_archives_are_named(lib, data, tmp_path):
    shard = data["gzip"].replace("{000000..000001}", "000000")
    cut = tmp_path / "cut-000000.tar.gz"
    cut.write_bytes(open(shard, "rb").read()[:-200])
    junk = tmp_path / "junk-000000.tar"
    junk.write_bytes(b"this is not an archive\n" * 100)
    for path, reason, detail in ((cut, "truncated tar", "gzip stream truncated or corrupt"),
                                 (junk, "unreadable shard", "neither a tar archive nor gzip")):
        p = subprocess.run([os.path.join(BIN, "check_data"), str(path), "--max_skip_fraction=0"], capture_output=True,
                           text=True)
        assert p.returncode == 1 and f"bad: {reason} (1)" in p.stdout and detail in p.stdout, p.stdout


def test_unlabelled_sources_pretrain_checkpoint_and_resume(tmp_path, data):
    for name, source, fmt in (("shards", data["unlabelled"], "shards"), ("folder", data["folder"], "folder"),
                              ("list", data["list"], "list")):
        common = [f"--data_train={source}", f"--data_format={fmt}", "--steps=6", "--log_every=1", "--save_every=0",
                  "--batch_size=16", "--tokenizer_images_per_class=100"]
        p = tt.train(tmp_path, f"{name}_straight", *common)
        assert "live kNN: off" in p.stdout and not any("knn20" in l for l in tt.metrics(tmp_path, f"{name}_straight"))
        tt.train(tmp_path, f"{name}_resumed", *common, "--stop_at_step=3")
        tt.train(tmp_path, f"{name}_resumed", *common, "--resume=auto")
        a, _ = tt.all_datasets(tmp_path / f"{name}_straight" / "ckpt_step00000006.h5")
        b, _ = tt.all_datasets(tmp_path / f"{name}_resumed" / "ckpt_step00000006.h5")
        diff = [k for k in a if not np.array_equal(a[k], b[k])]
        assert not diff, f"{name}: {len(diff)} datasets differ after resume, e.g. {diff[:3]}"


def test_finetune_and_eval_refuse_unlabelled_data(tmp_path, data):
    p = tt.train(tmp_path, "ft", f"--data_train={data['unlabelled']}", "--task=finetune", "--steps=2", check=False)
    assert p.returncode != 0 and f"fine-tuning: {N_SAMPLES} of {N_SAMPLES} samples of data_train" in p.stderr, p.stderr
    p = tt.train(tmp_path, "ft_list", f"--data_train={data['list']}", "--data_format=list", "--task=finetune",
                 "--steps=2", check=False)
    assert p.returncode != 0 and f"{N_SAMPLES // 2} of {N_SAMPLES} samples of data_train" in p.stderr, p.stderr
    tt.train(tmp_path, "pre", f"--data_train={data['labelled']}", "--steps=2", "--save_every=0",
             "--tokenizer_images_per_class=10")
    ck = str(tmp_path / "pre" / "ckpt_step00000002.h5")
    p = subprocess.run([os.path.join(BIN, "eval"), ck, "--train", data["unlabelled"], "--test", data["labelled"],
                        "--no-probe", "--out", str(tmp_path / "e.json")], capture_output=True, text=True)
    assert p.returncode != 0 and f"evaluation (kNN and the linear probe): {N_SAMPLES} of {N_SAMPLES} samples of train" \
        in p.stderr, p.stderr


def test_check_data_reports_exactly_the_bad_samples(data, tmp_path):
    """Four bad samples of known kinds among good ones: each is reported under its reason with its shard and
    key, and the exit code follows the skip limit."""
    s = first_samples(60)
    bad = [(s[0][0], s[0][1][:40], 0), (s[1][0], b"neither", 1), (s[2][0], b"\xff\xd8\xff junk", 2)]
    shards = write_shards(str(tmp_path), "mix", bad + s[3:], labels=True)
    with tarfile.open(str(tmp_path / "mix-000000.tar"), "a") as t:  # a sample with a label only
        info = tarfile.TarInfo("zz_orphan.cls")
        info.size = 1
        t.addfile(info, __import__("io").BytesIO(b"3"))
    cmd = [os.path.join(BIN, "check_data"), shards.replace("{000000..000000}", "000000"), "--full"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = p.stdout
    # a truncated PNG (corrupt), bytes of no format and JPEG bytes under .png (wrong format), a label alone
    assert "61 samples" in out and "bad: corrupt image (1)" in out and "bad: wrong format (2)" in out, out
    assert "bad: missing image or label (1)" in out and "zz_orphan: no .jpg/.jpeg/.png" in out, out
    for key, _, _ in bad:
        assert key in out, f"{key} missing from the report:\n{out}"
    assert p.returncode == 1, "4 of 61 bad is above the 0.05 limit"
    p = subprocess.run(cmd + ["--max_skip_fraction=0.1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout
