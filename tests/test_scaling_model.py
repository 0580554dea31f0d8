"""tools/scripts/scaling_model.py on the committed docs/scaling_inputs.json: its FLOP
count against the bench log, its parameter count against the PyTorch twin, the
allreduce formula on a hand-computed case, the per-block pipeline against its
closed form, the hiding threshold, overlapped >= blocking where the per-bucket
latencies fit in the backward, efficiency falling with R, the inputs really read,
and docs/scaling.md's generated blocks and figure up to date."""
import copy, importlib.util, json, os, random, subprocess

import pytest
from conftest import require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "scripts", "scaling_model.py")
INPUTS = os.path.join(ROOT, "docs", "scaling_inputs.json")
FIGURE = os.path.join(ROOT, "docs", "figures", "scaling_model.png")
MODELS = ("vit_ti", "vit_s", "vit_b")


def load_module():
    spec = importlib.util.spec_from_file_location("scaling_model", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sm = load_module()


@pytest.fixture(scope="module")
def inputs():
    with open(INPUTS) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def cl(inputs):
    return sm.Cluster(inputs)


def summary_of(args):
    p = subprocess.run(["/usr/bin/python3", SCRIPT] + args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("scaling_summary: "), last
    return json.loads(last[len("scaling_summary: "):])


def test_script_runs_and_prints_its_summary():
    s = summary_of([])
    h = s["headline"]
    assert 0 < h["hiding_batch"] < 1e4 and 0 <= h["overlapped_loss_pct"] < h["blocking_loss_pct"] < 100
    assert set(s["models"]) == set(MODELS)


def test_flops_match_the_bench_log(cl, inputs):
    xc = inputs["cross_checks"]
    for n in MODELS:
        got = 3 * cl.models[n].forward_flops(xc["bench_batch"][n]) / 1e9
        want = xc["bench_model_gflop_per_image"][n]
        assert abs(got / want - 1) < 5e-3, f"{n}: {got:.2f} model GFLOP/image, the bench logged {want}"


def test_parameter_count_matches_the_twin(cl, inputs):
    torch = require("torch", "python3-torch")
    import torch_twin
    a = inputs["architecture"]
    torch.manual_seed(0)
    for n in MODELS:
        m = a["models"][n]
        enc = dict(img_size=a["img_size"], patch_size=a["patch_size"], in_chans=a["in_chans"], depth=a["depth"],
                   embed_dim=m["embed_dim"], num_heads=m["num_heads"])
        with torch.no_grad():
            twin = torch_twin.Pretrainer(enc, a["num_centroids"], 1.0, 1.0, 1.0, 0.2, a["proj_hidden"], a["proj_dim"])
        total = sum(p.numel() for p in twin.parameters())
        encoder = sum(p.numel() for p in twin.encoder.parameters())
        assert (cl.models[n].params, cl.models[n].encoder_params) == (total, encoder), n
        del twin


def test_allreduce_by_hand():
    # 100 MB over 4 ranks at 10 Gb/s, 20 us: 2 * 3/4 * 1e8 / 1.25e9 + 2 * 3 * 20e-6 = 0.12 + 0.00012 s
    assert sm.allreduce(1e8, 4, 10, 20e-6) == pytest.approx(0.12012, rel=1e-12)
    assert sm.allreduce(1e8, 1, 10, 20e-6) == 0
    # all-gather of 8 MiB at 25 Gb/s over 8 ranks: 7/8 * 8 MiB / 3.125e9 + 7 * 20 us
    assert sm.allgather(8 * 2 ** 20, 8, 25, 20e-6) == pytest.approx(7 / 8 * 8 * 2 ** 20 / 3.125e9 + 7 * 20e-6)


def test_pipeline_matches_its_closed_form():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 15)
        c = [rng.uniform(0, 1) for _ in range(n)]
        tau = sorted(rng.uniform(0, 1) for _ in range(n - 1)) + [1.0]
        bwd = rng.uniform(0.01, 10)
        closed = max(sum(c[k:]) - (1 - tau[k]) * bwd for k in range(n))
        assert sm.pipeline_exposed(c, tau, bwd) == pytest.approx(closed, abs=1e-12)
        assert sm.pipeline_exposed(c, tau, bwd) >= c[-1] - 1e-12


def test_hiding_threshold_is_where_only_the_last_bucket_shows(cl):
    for n in MODELS:
        for link in (10, 25, 100):
            for R in (2, 64, 1024):
                b = cl.hiding_batch(n, R, link, 64, "bf16")
                last = cl.bucket_comm(n, R, link)[-1]
                above = cl.step(n, R, b * 1.001, 64, "bf16", link, "local")["overlapped"]["exposed_s"]
                below = cl.step(n, R, b * 0.9, 64, "bf16", link, "local")["overlapped"]["exposed_s"]
                assert above == pytest.approx(last, rel=1e-9) and below > last * (1 + 1e-9), (n, link, R)


def test_overlapped_is_no_slower_where_its_latencies_fit(cl, inputs):
    """Per-block buckets pay the latency once per bucket: overlapped >= blocking is guaranteed only where
    (n - 1 - k) latencies fit into the backward after bucket k, for every k; always with zero latency."""
    lat0 = copy.deepcopy(inputs)
    lat0["network"]["latency_s"] = 0.0
    cl0 = sm.Cluster(lat0)
    checked = 0
    for n in MODELS:
        m = cl.models[n]
        nb = len(m.buckets)
        for link in (10, 25, 100):
            for R in inputs["sweep"]["ranks"]:
                for b in (1, 4, 16, 64, 256, 1024):
                    for C, prec in ((32, "fp32"), (64, "bf16")):
                        s0 = cl0.step(n, R, b, C, prec, link)
                        assert s0["overlapped"]["images_per_s"] >= s0["blocking"]["images_per_s"] * (1 - 1e-12)
                        s = cl.step(n, R, b, C, prec, link)
                        L = 2 * (R - 1) * cl.lat
                        if all((nb - 1 - k) * L <= (1 - m.tau[k]) * s["backward_s"] for k in range(nb)):
                            checked += 1
                            assert s["overlapped"]["images_per_s"] >= s["blocking"]["images_per_s"] * (1 - 1e-12), \
                                (n, link, R, b, C, prec)
    assert checked > 500, checked


def test_efficiency_falls_with_ranks_at_a_fixed_batch(cl, inputs):
    ranks = inputs["sweep"]["ranks"]
    for n in MODELS:
        for link in (10, 25, 100):
            for negatives in ("global", "local"):
                st = [cl.step(n, R, 64, 64, "bf16", link, negatives) for R in ranks]
                blk = [s["blocking"]["efficiency"] for s in st]
                ovl = [s["overlapped"]["efficiency"] for s in st]
                assert blk[0] == ovl[0] == 1.0
                assert all(x > y for x, y in zip(blk, blk[1:])), (n, link, negatives, blk)
                assert all(x >= y for x, y in zip(ovl, ovl[1:])), (n, link, negatives, ovl)


def test_the_inputs_are_read(tmp_path, inputs):
    """Twice the measured rate: the same compute threshold, twice the per-rank batch to reach it."""
    fast = copy.deepcopy(inputs)
    for p in ("fp32", "bf16"):
        fast["measured_step"][p]["images_per_s"] *= 2
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps(fast))
    base, twice = summary_of([]), summary_of(["--inputs", str(path)])
    assert twice["headline"]["hiding_compute_ms"] == pytest.approx(base["headline"]["hiding_compute_ms"])
    assert twice["headline"]["hiding_batch"] == pytest.approx(2 * base["headline"]["hiding_batch"])


def test_doc_and_figure_are_current(cl):
    sec = sm.report(cl)[0]
    stale = sm.doc_is_current(sec)
    assert not stale, (f"docs/scaling.md blocks {stale} differ from the script's output: run `/usr/bin/python3 "
                       "tools/scripts/scaling_model.py --write-doc --figure docs/figures/scaling_model.png`")
    assert os.path.getsize(FIGURE) < 150 * 1024
