"""The main job (`make run` = tools/scripts/main_job.sh) end to end with a tiny model and
budget (depth 4: the reported feature is the last 4 blocks'): shards (reused), the
tokenizer, 3 pretraining updates with a checkpoint,
the evaluation of raw pixels / random init / this run on 300 train and 100 test
images, the figures, and the results table. A second run reuses the cached
baselines."""
import json, os, re, subprocess
import pytest
from conftest import ROOT

TINY = ("--steps=3 --warmup_steps=1 --embed_dim=32 --depth=4 --num_heads=2 --batch_size=16 "
        "--proj_hidden=64 --proj_dim=32 --save_every=3 --num_workers=2")


def main_job(tmp_path):
    env = dict(os.environ, TRAIN_MINUTES="2", EXTRA=TINY, EVAL_ARGS="--limit-train 300 --limit-test 100",
               OUT=str(tmp_path / "runs"), BASELINES=str(tmp_path / "baselines"), TSNE_SECONDS="5")
    p = subprocess.run(["bash", "tools/scripts/main_job.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"main job failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def test_main_job_whole_chain(tmp_path):
    if not os.path.exists(os.path.join(ROOT, "data/fashion-mnist/test-000000.tar")):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    out = main_job(tmp_path)
    for stage in ("1/6 shards", "2/6 centroid tokenizer", "3/6 pretraining", "4/6 evaluation", "5/6 figures", "6/6 results"):
        assert stage in out, f"stage '{stage}' missing:\n{out[-3000:]}"
    assert "eval: raw pixels" in out and "eval: random init" in out  # the first run computes both baselines
    rows = re.findall(r"^(raw pixels|random-init encoder|this run \(ckpt_step00000003\.h5\))\s+([0-9.]+)%\s+([0-9.]+)%$",
                      out, re.M)
    assert len(rows) == 3, f"results table incomplete:\n{out[-2000:]}"
    run = os.path.realpath(tmp_path / "runs" / "main-latest")
    for name in ("raw_pixels", "random_init", "pretrained"):
        r = json.load(open(os.path.join(run, "results", name + ".json")))
        assert r["n_train"] == 300 and r["n_test"] == 100 and 10 <= r["probe_top1"] <= 100 and 10 <= r["knn_top1"] <= 100
    assert json.load(open(os.path.join(run, "results", "pretrained.json")))["step"] == 3
    for png in ("training_curves.png", "reconstruction.png", "centroid_atlas.png", "features.png", "neighbours.png"):
        assert os.path.getsize(os.path.join(run, "figures", png)) > 2000, png
    assert "CLS + mean-pooled patch tokens of the last 4 blocks" in out  # the table says which feature, and why
    # again: the tokenizer and the random-init baseline are reused, not rebuilt; a cached result
    # cut short (as an interrupted write left them before eval wrote atomically) is recomputed
    (cached,) = [os.path.join(d, "raw_pixels.json") for d, _, files in os.walk(tmp_path / "baselines")
                 if "raw_pixels.json" in files]
    text = open(cached).read()
    open(cached, "w").write(text[: len(text) // 2])
    out2 = main_job(tmp_path)
    assert "reusing data/tokenizers/" in out2
    assert "does not read back" in out2 and "eval: raw pixels" in out2, out2[-3000:]
    assert "eval: random init" not in out2, out2[-3000:]
