"""The trainer program end to end on real Fashion-MNIST shards (`make shards`)
with a tiny model: a smoke run with metrics and checkpoints, bit-exact resume,
a clean stop on SIGTERM, the non-finite-loss stop, and config errors."""
import json, os, signal, subprocess, time
import numpy as np
import pytest
from conftest import require

h5py = require("h5py", "python3-h5py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "build", "bin", "train")
SHARDS = os.path.join(ROOT, "data", "fashion-mnist", "train-000000.tar")
TINY = ["--embed_dim=32", "--depth=3", "--num_heads=2", "--batch_size=32", "--num_centroids=32",
        "--tokenizer_images_per_class=20", "--tokenizer_iters=5", "--proj_hidden=64", "--proj_dim=32",
        "--warmup_steps=3", "--lr=1e-3", "--num_workers=2", "--shuffle_buffer_mb=4"]


def train(tmp, name, *extra, env=None, check=True):
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    cmd = [TRAIN, "--config", os.path.join(ROOT, "configs", "fashion_mnist.yaml"), f"--output_dir={tmp}",
           f"--run_name={name}"] + TINY + list(extra)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"train failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def metrics(tmp, name):
    with open(os.path.join(tmp, name, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


def all_datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        attrs = {k: f.attrs[k] for k in ("step", "epoch")}
    return out, attrs


def build_code_version():
    with open(os.path.join(ROOT, "build", "gen", "code_version.h")) as f:
        return f.read().split('"')[1]


def test_smoke_run_writes_metrics_and_checkpoints(tmp_path):
    # GIT_DIR points nowhere: the recorded code version must come from the build, not from
    # asking git at run time (which would see this directory, or none, instead of the binary's tree)
    env = dict(os.environ, GIT_DIR=str(tmp_path / "no-git-here"))
    p = train(tmp_path, "smoke", "--steps=12", "--log_every=4", "--save_every=6", env=env)
    lines = metrics(tmp_path, "smoke")
    assert [l["step"] for l in lines] == [1, 4, 8, 12]
    for l in lines:
        for k in ("loss", "loss_token", "loss_pixel", "loss_contrast", "lr", "grad_norm", "images_per_s",
                  "data_wait_share", "cls_top5_variance_share", "epoch"):
            assert k in l and l[k] is not None and np.isfinite(l[k]), f"metric {k} missing or not finite: {l}"
    run = tmp_path / "smoke"
    assert (run / "config.yaml").exists() and (run / "tokenizer.h5").exists()
    assert (run / "ckpt_step00000006.h5").exists() and (run / "ckpt_step00000012.h5").exists()
    assert os.path.realpath(run / "latest").endswith("ckpt_step00000012.h5")
    assert "checkpoint" in p.stdout and "ckpt_step00000012.h5" in p.stdout
    tensors, attrs = all_datasets(run / "ckpt_step00000012.h5")
    assert attrs["step"] == 12
    assert "encoder/blocks.2.mlp.fc2.weight" in tensors and tensors["encoder/pos_embed"].shape == (1, 50, 32)
    assert "pretrain_heads/mask_token" in tensors and "pretrain_heads/token_head.weight" in tensors
    with h5py.File(run / "ckpt_step00000012.h5", "r") as f:
        recorded = f.attrs["code_version"]
    recorded = recorded.decode() if isinstance(recorded, bytes) else str(recorded)
    assert recorded == build_code_version() and recorded != "unknown", \
        f"checkpoint records code version {recorded!r}, the build is {build_code_version()!r}"


def test_resume_is_bit_exact(tmp_path):
    common = ["--steps=8", "--log_every=1", "--save_every=0", "--knn_every=3", "--knn_images=300"]
    train(tmp_path, "straight", *common)
    train(tmp_path, "resumed", *common, "--stop_at_step=4")
    assert (tmp_path / "resumed" / "ckpt_step00000004.h5").exists()
    # a run killed after its last checkpoint logged steps past it, the last line cut short;
    # the resume drops them so that metrics.jsonl holds each step once
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 123.0}\n{"step": 6, "lo')
    # the resumed run reuses the run's tokenizer file and the checkpoint's cursor
    p = train(tmp_path, "resumed", *common, "--resume=auto", "--time_limit_minutes=30")
    assert "dropped 2 metrics lines of steps after 4" in p.stdout, p.stdout[-2000:]
    assert "differ from the config" not in p.stderr, p.stderr  # a steering key (time limit) is not a change
    a, aa = all_datasets(tmp_path / "straight" / "ckpt_step00000008.h5")
    b, ba = all_datasets(tmp_path / "resumed" / "ckpt_step00000008.h5")
    assert aa["step"] == ba["step"] == 8
    assert a.keys() == b.keys()
    diff = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not diff, f"{len(diff)} datasets differ after resume, e.g. {diff[:5]}"
    la, lb = metrics(tmp_path, "straight"), metrics(tmp_path, "resumed")
    keys = ("loss", "loss_token", "loss_pixel", "loss_contrast", "grad_norm", "lr")
    sa = {l["step"]: [l[k] for k in keys] for l in la}
    sb = {l["step"]: [l[k] for k in keys] for l in lb}
    assert [l["step"] for l in lb] == list(range(1, 9))
    for s in range(1, 9):
        assert sa[s] == sb[s], f"step {s}: logged values differ: {sa[s]} vs {sb[s]}"
    # the live kNN: after updates 3, 6 and at the end, the same values after a resume
    ka, kb = ({l["step"]: l["knn20"] for l in m if "knn20" in l} for m in (la, lb))
    assert list(ka) == [3, 6, 8] and ka == kb, (ka, kb)
    # a key that changes the numbers is named when a resume changes it
    p = train(tmp_path, "resumed", "--steps=9", "--log_every=1", "--save_every=0", "--knn_every=3", "--knn_images=300",
              "--resume=auto", "--lr=2e-3")
    assert "resume: 2 keys differ" in p.stderr and "lr: 0.001 vs 0.002" in p.stderr and "steps: 8 vs 9" in p.stderr, \
        p.stderr
    # unfreezing the patch embedding on resume would start its AdamW moments mid-run: refused
    p = train(tmp_path, "resumed", "--steps=10", "--resume=auto", "--freeze_patch_embed=false", check=False)
    assert p.returncode != 0 and "freeze_patch_embed was true" in p.stderr, p.stderr


def test_resume_from_an_older_checkpoint_sets_the_later_ones_aside(tmp_path):
    # a run to step 6; then (as after a NaN) a resume from its step-2 file with a lower lr, stopped at 3
    common = ["--steps=6", "--log_every=1", "--save_every=2", "--keep_last=10"]
    train(tmp_path, "branch", *common)
    run = tmp_path / "branch"
    p = train(tmp_path, "branch", *common, f"--resume={run / 'ckpt_step00000002.h5'}", "--lr=5e-4",
              "--stop_at_step=3")
    aside = run / "set_aside_after_step00000002"
    assert sorted(os.listdir(aside)) == ["ckpt_step00000004.h5", "ckpt_step00000006.h5"], p.stderr
    assert "2 checkpoints of steps after 2" in p.stderr and str(aside) in p.stderr, p.stderr
    assert os.path.realpath(run / "latest").endswith("ckpt_step00000003.h5")
    # auto now continues the new branch (step 3), not the abandoned one (step 6)
    p = train(tmp_path, "branch", *common, "--resume=auto", "--lr=5e-4")
    assert "at step 3 " in p.stdout, p.stdout[-2000:]
    assert os.path.realpath(run / "latest").endswith("ckpt_step00000006.h5")
    assert [l["step"] for l in metrics(tmp_path, "branch")] == [1, 2, 3, 4, 5, 6]


def test_sigterm_writes_checkpoint_and_exits_zero(tmp_path):
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    cmd = [TRAIN, "--config", os.path.join(ROOT, "configs", "fashion_mnist.yaml"), f"--output_dir={tmp_path}",
           "--run_name=term", "--steps=100000", "--log_every=1", "--save_every=0"] + TINY
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mfile = tmp_path / "term" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (mfile.exists() and len(mfile.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{err[-2000:]}"
    assert "SIGTERM" in out, out[-1000:]
    latest = os.path.realpath(tmp_path / "term" / "latest")
    assert os.path.basename(latest) in out, "the exit message must name the checkpoint"
    tensors, attrs = all_datasets(latest)
    assert attrs["step"] >= 3 and len(tensors) > 50


def test_nonfinite_loss_stops_without_update(tmp_path):
    env = dict(os.environ, CCVIT_FAULT_NAN_STEP="3")
    p = train(tmp_path, "nan", "--steps=10", "--save_every=2", "--log_every=1", env=env, check=False)
    assert p.returncode != 0
    assert "step 3" in p.stderr and "token cross-entropy" in p.stderr and "no update" in p.stderr, p.stderr[-1000:]
    run = tmp_path / "nan"
    assert os.path.realpath(run / "latest").endswith("ckpt_step00000002.h5")
    assert not (run / "ckpt_step00000004.h5").exists()
    tensors, attrs = all_datasets(run / "ckpt_step00000002.h5")
    assert attrs["step"] == 2


def short_shard(tmp, samples, claimed):
    """A shard holding the first `samples` samples of the real train shard, and a manifest claiming `claimed`."""
    import tarfile
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    d = tmp / "short"
    d.mkdir()
    with tarfile.open(SHARDS) as src, tarfile.open(d / "s-000000.tar", "w", format=tarfile.USTAR_FORMAT) as dst:
        for m in src.getmembers()[:2 * samples]:  # .png + .cls per sample
            dst.addfile(m, src.extractfile(m))
    with open(os.path.join(ROOT, "data", "fashion-mnist", "train-manifest.txt")) as f:
        classes = [l for l in f if l.startswith("class")]
    (d / "s-manifest.txt").write_text(f"ccvit-manifest 1\nsamples {claimed}\n" + "".join(classes) +
                                      f"shard s-000000.tar {claimed}\n")
    return str(d / "s-000000.tar")


def test_shard_shorter_than_manifest_passes_over_empty_batches(tmp_path):
    # 40 real samples where the manifest plans 160: each epoch's last 7 of 10 batches of 16
    # hold no image at all; those must be passed over, not averaged into a 0/0 = NaN loss
    shard = short_shard(tmp_path, 40, 160)
    p = train(tmp_path, "short", f"--data_train={shard}", "--batch_size=16", "--steps=8", "--log_every=1",
              "--save_every=0")
    assert "empty batches passed over:" in p.stdout and "no usable image" in p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    losses = [l["loss"] for l in metrics(tmp_path, "short")]
    assert len(losses) == 8 and all(np.isfinite(losses)), losses


def test_no_usable_image_stops_with_a_clear_error(tmp_path):
    shard = short_shard(tmp_path, 0, 160)
    # pure NT-Xent: no tokenizer to build, so the trainer's own check is what stops it
    p = train(tmp_path, "none", f"--data_train={shard}", "--batch_size=16", "--steps=8", "--w_token=0",
              "--w_pixel=0", "--w_contrast=1", check=False)
    assert p.returncode != 0 and "no usable image (two epochs)" in p.stderr and "s-000000.tar" in p.stderr, \
        p.stderr[-2000:]


def test_config_errors_name_the_key(tmp_path):
    p = train(tmp_path, "bad", "--lr_min=0.1", check=False)
    assert p.returncode != 0 and "unknown key 'lr_min'" in p.stderr and "min_lr" in p.stderr, p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("img_size: 28\ndepth: six\n")
    p = subprocess.run([TRAIN, "--config", str(bad)], capture_output=True, text=True)
    assert p.returncode != 0 and "depth" in p.stderr and ":2:" in p.stderr, p.stderr
    p = train(tmp_path, "bad2", "--w_token=0", "--w_pixel=0", "--w_contrast=0", check=False)
    assert p.returncode != 0 and "w_token" in p.stderr, p.stderr
    p = train(tmp_path, "bad3", "--steps=0", "--epochs=0", "--time_limit_minutes=1", check=False)
    assert p.returncode != 0 and "sched cosine (default) needs the run's length" in p.stderr, p.stderr
    # 0.99 of the 49 patches rounds to all 49: the encoder would see nothing
    p = train(tmp_path, "bad4", "--mask_ratio=0.99", "--replace_ratio=0", check=False)
    assert p.returncode != 0 and "mask_ratio 0.99" in p.stderr and "no clean patch" in p.stderr, p.stderr
    p = subprocess.run([TRAIN, "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "batch_size" in p.stdout


def test_head_combinations_are_refused_before_any_work(tmp_path):
    """Combinations the pretraining heads cannot run stop in config_check and in train at start-up,
    before a run folder exists, with the key and where it was set."""
    check = os.path.join(ROOT, "build", "bin", "config_check")
    for extra, message in ((["--teacher_momentum=0.9", "--w_contrast=0"], "needs the contrastive term"),
                           (["--depth=2"], "the pixel head reads block depth-3, so depth (--depth=2) must be >= 3"),
                           (["--teacher_momentum=0.9", "--mask_both_views"], "mask_both_views (--mask_both_views) masks"),
                           (["--steps=0", "--epochs=0", "--time_limit_minutes=1"], "needs the run's length")):
        p = subprocess.run([check, "--config", os.path.join(ROOT, "configs", "fashion_mnist.yaml")] + extra,
                           capture_output=True, text=True)
        assert p.returncode != 0 and message in p.stderr, (extra, p.stderr)
        p = train(tmp_path, "combo", *extra, check=False)
        assert p.returncode != 0 and message in p.stderr, (extra, p.stderr)
        assert not (tmp_path / "combo").exists(), f"{extra}: train made a run folder before refusing"
    # fine-tuning has no pretraining heads: a shallow encoder is fine there
    p = subprocess.run([check, "--config", os.path.join(ROOT, "configs", "fashion_mnist_finetune.yaml"), "--depth=2"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_finetune_from_checkpoint_and_from_scratch(tmp_path):
    """task=finetune: the encoder comes from a pretraining checkpoint (its heads
    are dropped), a new head is trained with label smoothing, drop path and
    layer decay, and top-1 on data_val is logged; without a checkpoint it is
    the from-scratch baseline."""
    train(tmp_path, "pre", "--steps=4", "--save_every=0")
    ckpt = os.path.realpath(tmp_path / "pre" / "latest")
    ft = ["--task=finetune", "--steps=5", "--log_every=1", "--save_every=0", "--drop_path=0.1", "--smoothing=0.1",
          "--layer_decay=0.75"]
    p = train(tmp_path, "ft", *ft, f"--finetune={ckpt}")
    assert "encoder from" in p.stdout
    train(tmp_path, "scratch", *ft)
    p = train(tmp_path, "mixed", *ft, "--mixup=0.8", "--cutmix=1.0", f"--finetune={ckpt}")  # soft targets
    assert "mixup 0.8, cutmix 1" in p.stdout
    p = train(tmp_path, "erased", *ft, "--reprob=1", f"--finetune={ckpt}")
    assert "random erasing 1" in p.stdout
    first_loss = lambda run: [l["loss"] for l in metrics(tmp_path, run) if "loss" in l][0]
    assert first_loss("erased") != first_loss("ft"), "erasing changed no training image"
    for run in ("ft", "scratch", "mixed", "erased"):
        lines = metrics(tmp_path, run)
        assert [l["step"] for l in lines if "loss" in l] == [1, 2, 3, 4, 5]
        top1 = [l["val_top1"] for l in lines if "val_top1" in l]
        assert len(top1) == 1 and 0.0 <= top1[0] <= 1.0
    a, _ = all_datasets(ckpt)
    b, _ = all_datasets(tmp_path / "ft" / "ckpt_step00000005.h5")
    assert "encoder/head.weight" in b and b["encoder/head.weight"].shape == (10, 32)
    assert not any(k.startswith("pretrain_heads/") for k in b), "fine-tune checkpoints carry no pretraining heads"
    p = train(tmp_path, "ft_bad", *ft, f"--finetune={tmp_path}/missing.h5", check=False)
    assert p.returncode != 0 and "missing.h5" in p.stderr


def test_a_stop_logs_the_update_it_ends_on(tmp_path):
    # log_every 50, stopped at update 7: the partial window (updates 2-7) is logged, not dropped
    train(tmp_path, "partial", "--steps=100", "--log_every=50", "--save_every=0", "--stop_at_step=7")
    assert [l["step"] for l in metrics(tmp_path, "partial")] == [1, 7]
    assert os.path.realpath(tmp_path / "partial" / "latest").endswith("ckpt_step00000007.h5")


def test_tokenizer_with_nan_centroid_is_refused(tmp_path):
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    bad = tmp_path / "nan_tokenizer.h5"
    subprocess.run([os.path.join(ROOT, "build", "bin", "build_tokenizer"), "--shards", SHARDS, "--image-size", "28",
                    "--patch", "4", "--channels", "1", "--images-per-class", "20", "--k", "32", "--iters", "3",
                    "--out", str(bad)], check=True, capture_output=True)
    with h5py.File(bad, "r+") as f:
        c = f["tokenizer/centroids"]
        row = c[3]
        row[0] = np.nan
        c[3] = row
    p = train(tmp_path, "nan_tok", f"--tokenizer_path={bad}", "--steps=2", check=False)
    assert p.returncode != 0 and "centroid 3 holds a NaN" in p.stderr, p.stderr[-2000:]


def test_teacher_run_trains_checkpoints_and_resumes_bit_exact(tmp_path):
    """teacher_momentum > 0: the EMA teacher's tensors are in the checkpoint
    (/pretrain_heads/teacher.*), move between checkpoints, and a resume is
    bit-exact for the student and the teacher alike."""
    common = ["--steps=6", "--log_every=1", "--save_every=0", "--teacher_momentum=0.9"]
    p = train(tmp_path, "straight", *common)
    assert "EMA teacher" in p.stdout, p.stdout[-2000:]
    assert all(np.isfinite(l["loss_contrast"]) for l in metrics(tmp_path, "straight"))
    train(tmp_path, "resumed", *common, "--stop_at_step=3")
    early, _ = all_datasets(tmp_path / "resumed" / "ckpt_step00000003.h5")
    train(tmp_path, "resumed", *common, "--resume=auto")
    a, _ = all_datasets(tmp_path / "straight" / "ckpt_step00000006.h5")
    b, _ = all_datasets(tmp_path / "resumed" / "ckpt_step00000006.h5")
    teacher = [k for k in a if k.startswith("pretrain_heads/teacher.")]
    assert "pretrain_heads/teacher.blocks.0.attn.qkv.weight" in teacher and \
        "pretrain_heads/teacher.projector.fc2.weight" in teacher, sorted(a)[:20]
    assert any(not np.array_equal(a[k], early[k]) for k in teacher), "the teacher did not move between steps 3 and 6"
    diff = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not diff, f"{len(diff)} datasets differ after a resume with a teacher, e.g. {diff[:5]}"
    # eval --teacher reads the teacher's copies: other features than the student's
    ck = str(tmp_path / "straight" / "ckpt_step00000006.h5")
    test_split = os.path.join(ROOT, "data", "fashion-mnist", "test-000000.tar")
    feats = {}
    for who in ("student", "teacher"):
        out = tmp_path / f"{who}.h5"
        p = subprocess.run([os.path.join(ROOT, "build", "bin", "eval"), ck, "--train", test_split, "--test", SHARDS,
                            "--limit-train", "200", "--limit-test", "50", "--no-probe", "--num_workers=1",
                            "--save-features", str(out), "--out", str(tmp_path / f"{who}.json")]
                           + (["--teacher"] if who == "teacher" else []), capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        with h5py.File(out, "r") as f:
            feats[who] = f["train_features"][()]
    assert not np.array_equal(feats["student"], feats["teacher"])
    # ... and exactly the teacher's: a copy whose encoder tensors are the teacher's gives, without
    # --teacher, the same features bit for bit
    import shutil
    swapped = tmp_path / "swapped.h5"
    shutil.copy(ck, swapped)
    with h5py.File(swapped, "r+") as f:
        for name in list(f["encoder"].keys()):
            f["encoder"][name][...] = f["pretrain_heads"]["teacher." + name][()]
    out = tmp_path / "swapped_feats.h5"
    p = subprocess.run([os.path.join(ROOT, "build", "bin", "eval"), str(swapped), "--train", test_split, "--test", SHARDS,
                        "--limit-train", "200", "--limit-test", "50", "--no-probe", "--num_workers=1",
                        "--save-features", str(out), "--out", str(tmp_path / "swapped.json")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["train_features"][()], feats["teacher"]), "eval --teacher did not read the teacher's tensors"
    # the reconstruction figure works on a teacher run (its second view goes to the teacher)
    p = subprocess.run([os.path.join(ROOT, "build", "bin", "reconstruct"), ck, "--out", str(tmp_path / "rec.h5"), "--n", "4",
                        "--test", test_split], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    # a checkpoint without a teacher says so
    train(tmp_path, "plain", "--steps=1", "--save_every=0")
    p = subprocess.run([os.path.join(ROOT, "build", "bin", "eval"), str(tmp_path / "plain" / "ckpt_step00000001.h5"),
                        "--teacher", "--limit-train", "10", "--limit-test", "10"], capture_output=True, text=True)
    assert p.returncode != 0 and "teacher_momentum" in p.stderr, p.stderr
