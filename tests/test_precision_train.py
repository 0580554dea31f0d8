"""precision: bf16 through the trainer on real Fashion-MNIST shards, with the
tiny model of test_train.py: a short run tracks fp32's losses, gives the same
bits on 1 and 2 threads, resumes bit-exactly, and a checkpoint resumes in the
other precision (its master weights and moments are fp32 either way).

The 1000-update comparison with two seeds per precision is a study
(tools/scripts/studies.sh bf16, docs/studies/bf16_vs_fp32.json), not a test."""
import os
import numpy as np
import test_train as tt

COMMON = ["--log_every=1", "--save_every=0"]


def same_datasets(a_path, b_path):
    a, _ = tt.all_datasets(a_path)
    b, _ = tt.all_datasets(b_path)
    assert a.keys() == b.keys()
    return [k for k in a if not np.array_equal(a[k], b[k])]


def test_bf16_tracks_fp32_for_30_steps(tmp_path):
    """The same seed in both precisions: every step's losses within 2% of fp32's. bf16 perturbs each
    product by ~2^-8 relative; over 30 updates the two runs' weights drift apart by far less than the
    seeds' difference, and the losses of one batch are averages over thousands of tokens."""
    fp = tt.train(tmp_path, "fp32", "--steps=30", "--precision=fp32", *COMMON)
    bf = tt.train(tmp_path, "bf16", "--steps=30", "--precision=bf16", *COMMON)
    assert "precision: fp32" in fp.stdout
    native = " avx512_bf16" in open("/proc/cpuinfo").read()
    assert ("precision: bf16 products (vdpbf16ps" if native else "precision: bf16 products EMULATED") in bf.stdout, \
        bf.stdout[-2000:]
    a, b = tt.metrics(tmp_path, "fp32"), tt.metrics(tmp_path, "bf16")
    assert [l["step"] for l in a] == [l["step"] for l in b] == list(range(1, 31))
    worst = 0.0
    for la, lb in zip(a, b):
        for k in ("loss", "loss_token", "loss_pixel", "loss_contrast"):
            assert np.isfinite(lb[k]), f"step {lb['step']}: bf16 {k} is {lb[k]}"
            worst = max(worst, abs(lb[k] - la[k]) / abs(la[k]))
    print(f"worst relative loss gap over 30 steps: {worst:.4f}")
    assert worst <= 0.02, f"bf16 losses leave fp32's by {worst:.3f} (relative)"
    assert worst > 0, "bf16 gave fp32's losses to the bit: the products did not run in bf16"
    assert a[-1]["loss"] < a[0]["loss"] and b[-1]["loss"] < b[0]["loss"], "neither run learned"


def test_bf16_same_bits_on_1_and_2_threads(tmp_path):
    for threads in (1, 2):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        tt.train(tmp_path, f"t{threads}", "--steps=6", "--precision=bf16", *COMMON, env=env)
    diff = same_datasets(tmp_path / "t1" / "ckpt_step00000006.h5", tmp_path / "t2" / "ckpt_step00000006.h5")
    assert not diff, f"{len(diff)} datasets differ between 1 and 2 threads in bf16, e.g. {diff[:5]}"
    la, lb = tt.metrics(tmp_path, "t1"), tt.metrics(tmp_path, "t2")
    assert [l["loss"] for l in la] == [l["loss"] for l in lb]


def test_bf16_resume_bit_exact_and_across_precision(tmp_path):
    tt.train(tmp_path, "straight", "--steps=8", "--precision=bf16", *COMMON)
    tt.train(tmp_path, "resumed", "--steps=8", "--precision=bf16", "--stop_at_step=4", *COMMON)
    tt.train(tmp_path, "resumed", "--steps=8", "--precision=bf16", "--resume=auto", *COMMON)
    diff = same_datasets(tmp_path / "straight" / "ckpt_step00000008.h5", tmp_path / "resumed" / "ckpt_step00000008.h5")
    assert not diff, f"{len(diff)} datasets differ after a bf16 resume, e.g. {diff[:5]}"
    keys = ("loss", "loss_token", "loss_pixel", "loss_contrast", "grad_norm")
    assert [[l[k] for k in keys] for l in tt.metrics(tmp_path, "straight")] == \
        [[l[k] for k in keys] for l in tt.metrics(tmp_path, "resumed")]
    # an fp32 checkpoint resumes in bf16 (allowed: the checkpoint holds fp32 weights and moments); the
    # change is named, as any key that changes the numbers is
    tt.train(tmp_path, "switch", "--steps=8", "--precision=fp32", "--stop_at_step=4", *COMMON)
    p = tt.train(tmp_path, "switch", "--steps=8", "--precision=bf16", "--resume=auto", *COMMON)
    assert "precision: fp32 vs bf16" in p.stderr and "precision: bf16 products" in p.stdout, p.stderr[-2000:]
    lines = tt.metrics(tmp_path, "switch")
    assert [l["step"] for l in lines] == list(range(1, 9)) and all(np.isfinite(l["loss"]) for l in lines)
    ref = {l["step"]: l["loss"] for l in tt.metrics(tmp_path, "straight")}
    assert all(abs(l["loss"] - ref[l["step"]]) <= 0.02 * abs(ref[l["step"]]) for l in lines[4:]), \
        "the resumed-in-bf16 run leaves the bf16 run's losses"
