#!/usr/bin/python3
"""Side-by-side benchmark of one ViT training step (forward, backward, clipping,
AdamW): our C trainer (build/bin/bench_vit) against the PyTorch twin
(tools/reference/torch_twin.py) in the same run, on the same machine, in fp32 and in bf16.

Sides: ours in bf16 (--precision bf16) and in fp32, ours in fp32 with every
product on OpenBLAS (CCVIT_GEMM=blas), the twin in fp32 and the twin under
torch.autocast('cpu', dtype=torch.bfloat16) around the forward and the loss.
Each twin precision gets its best thread setting: torch.set_num_threads 1 and 2
crossed with OPENBLAS_NUM_THREADS 1 and 2, each in a fresh process, pick the
fastest; then --rounds (default 3) alternating rounds of every side, each run a
fresh process, give the medians that are reported. MFU is against the sgemm
yardstick and against the hardware's fp32 FMA and bf16 vdpbf16ps limits, all
measured by our runs. Ends with `bench:` lines (images/s; for memory, ratio = peer/ours).
Usage: tools/bench/bench_vit.py [--configs vit_ti_224,fmnist_28] [--steps N] [--rounds N]
"""
import argparse, os, resource, subprocess, sys, time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "vit_ti_224": dict(model=dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3,
                                  num_classes=1000), batch=32),
    "fmnist_28": dict(model=dict(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3,
                                 num_classes=10), batch=256),
}

# A side is <who>_<precision>; "blas" is ours in fp32 with every product on OpenBLAS.
FOUR_WAY = ("ours_bf16", "ours_fp32", "ours_blas", "twin_fp32", "twin_bf16")
BF16_ONLY = ("ours_bf16", "twin_bf16")
LABELS = {"ours_bf16": "ours bf16 (C, 2 threads)", "ours_fp32": "ours fp32 (C, 2 threads)",
          "ours_blas": "ours fp32, OpenBLAS only", "twin_fp32": "torch fp32", "twin_bf16": "torch bf16 autocast"}
# (torch threads, OPENBLAS_NUM_THREADS) settings the twin tries
FULL_SWEEP = ((1, 1), (1, 2), (2, 1), (2, 2))
THREAD_SWEEP = ((1, 2), (2, 2))  # OPENBLAS_NUM_THREADS does not matter to an OpenMP OpenBLAS (see run_twin)


def twin_autocast(precision):
    """What a PyTorch user writes for bf16 on a CPU: autocast around the forward and the
    loss; backward and the optimizer step stay outside it, as autocast is meant to be used."""
    import torch
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def torch_worker(name, threads, steps, warmup, precision):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
    import torch_twin
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = CONFIGS[name]
    m = c["model"]
    model = torch_twin.VisionTransformer(**m)
    opt = torch.optim.AdamW(torch_twin.adamw_param_groups(model, 0.05), lr=1e-4)
    x = torch.randn(c["batch"], m["in_chans"], m["img_size"], m["img_size"])
    y = torch.randint(0, m["num_classes"], (c["batch"],))
    times = []
    for s in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with twin_autocast(precision):
            loss = torch.nn.functional.cross_entropy(model.forward_head(model.forward_features(x), "cls"), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    worker_report(times, c["batch"], precision)


def worker_report(times, batch, precision):
    step = sorted(times)[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"step_ms={step*1e3:.1f} images_per_s={batch/step:.2f} peak_rss_bytes={rss} precision={precision}")


def parse(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("openblas_config="):
            out["openblas_config"] = line.split("=", 1)[1]
            continue
        for kv in line.split():
            if "=" in kv:
                k, v = kv.split("=", 1)
                out[k] = v
    return out


def run(cmd, env=None):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"bench_vit: {' '.join(cmd)} failed:\n{p.stderr}")
    if p.stderr.strip():  # e.g. the sgemm peak moved during the run: the machine is busy
        print(p.stderr.strip(), file=sys.stderr, flush=True)
    return parse(p.stdout)


class Bench(NamedTuple):
    """One group of configs compared the same way."""
    ours_binary: str
    worker_script: str
    prefix: str  # of the `bench:` line names
    steps: int
    warmup: int
    rounds: int
    sides: tuple
    sweep: tuple  # the twin's thread settings
    sweep_steps: int  # timed steps of each sweep run


def bench_main(doc, configs, steps, warmup, worker, ours_binary, script, prefix, scaling=None):
    """Command line shared by the side-by-side benchmarks: as --torch-worker,
    run one PyTorch measurement; otherwise compare ours with every side. With
    `scaling` (the default of --scaling-configs, '' for none), those configs are
    compared in bf16 only (ours against the twin), with their own, smaller, step
    and round counts."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=configs, help="compared on every side ('' for none)")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of every side; medians are reported")
    if scaling is not None:
        ap.add_argument("--scaling-configs", default=scaling, help="ours bf16 against the twin in bf16 only")
        ap.add_argument("--scaling-steps", type=int, default=2)
        ap.add_argument("--scaling-warmup", type=int, default=1)
        ap.add_argument("--scaling-rounds", type=int, default=2)
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        return worker(a.torch_worker, a.threads, a.steps, a.warmup, a.precision)
    groups = [(a.configs, Bench(ours_binary, script, prefix, a.steps, a.warmup, a.rounds, FOUR_WAY, FULL_SWEEP,
                                a.steps))]
    if scaling is not None:  # one step ranks 1 against 2 threads on these models: the twin's step takes seconds
        groups.append((a.scaling_configs, Bench(ours_binary, script, prefix, a.scaling_steps, a.scaling_warmup,
                                                a.scaling_rounds, BF16_ONLY, THREAD_SWEEP, 1)))
    t0, lines = time.time(), []
    for names, b in groups:
        lines += compare([n for n in names.split(",") if n], b)
    print(f"total {time.time() - t0:.0f} s")
    for l in lines:
        print(l)


def main():
    bench_main(__doc__, "vit_ti_224,fmnist_28", 5, 2, torch_worker, "build/bin/bench_vit", __file__, "vit_step")


def compare(configs, b):
    """For each config: the twin's best thread setting per precision, then
    b.rounds alternating rounds of every side, each run in a fresh process. The
    figures are the medians of those rounds: one run of either side moves by
    ~4% on this machine, and alternating spreads the neighbours' load over all.
    Returns the `bench:` lines."""
    lines = []
    if configs:
        twins = sum(s.startswith("twin") for s in b.sides)
        print(f"{','.join(configs)}: each {twins * len(b.sweep)} sweep runs of the twin ({b.warmup}+{b.sweep_steps} "
              f"steps), then {b.rounds} rounds of {len(b.sides)} runs ({b.warmup}+{b.steps} steps), fresh processes")
        print(f"{'config':<14} {'who':<36} {'img/s':>8} {'step ms':>9} {'peak RSS MB':>12} {'MFU':>6}")
    for name in configs:
        t0 = time.time()
        best = {p: best_twin_setting(name, p, b) for p in ("fp32", "bf16") if f"twin_{p}" in b.sides}
        runs = alternate_rounds(name, b, best)
        summary(name, b, runs, best)
        lines += report_lines(name, b, runs)
        print(f"{name:<14} {time.time() - t0:.0f} s for this config\n", flush=True)
    return lines


def best_twin_setting(name, precision, b):
    best = None
    for tt, ob in b.sweep:
        r = run_twin(b.worker_script, name, tt, ob, b.sweep_steps, b.warmup, precision)
        print_run(name, f"{LABELS['twin_' + precision]} t={tt} ob={ob} sweep", r)
        if best is None or float(r["images_per_s"]) > float(best[2]["images_per_s"]):
            best = (tt, ob, r)
    return best[:2]


def alternate_rounds(name, b, best):
    runs = {s: [] for s in b.sides}
    for k in range(b.rounds):
        t0 = time.time()
        for side in b.sides:
            r = run_side(side, name, b, best)
            runs[side].append(r)
            print_run(name, f"{side_label(side, best)} #{k+1}", r, detail=side != "ours_blas")
        if k == 0 and b.rounds > 1:
            dt = time.time() - t0
            print(f"{name:<14} round 1 took {dt:.0f} s: about {dt * (b.rounds - 1):.0f} s more for this config",
                  flush=True)
    return runs


def side_label(side, best):
    who, precision = side.split("_")
    return f"{LABELS[side]} t={best[precision][0]} ob={best[precision][1]}" if who == "twin" else LABELS[side]


def run_side(side, name, b, best):
    who, precision = side.split("_")
    if who == "twin":
        return run_twin(b.worker_script, name, *best[precision], b.steps, b.warmup, precision)
    # the label says 2 threads: an OMP_NUM_THREADS left in the caller's environment must not change that
    env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 2))
    if precision == "blas":  # the same binary with every product on OpenBLAS: what our GEMM tiles buy
        env["CCVIT_GEMM"], precision = "blas", "fp32"
    return run([os.path.join(ROOT, b.ours_binary), "--config", name, "--steps", str(b.steps), "--warmup",
                str(b.warmup), "--precision", precision], env)


def print_run(name, label, r, detail=False):
    mfu = f" {float(r['mfu'])*100:>5.1f}%" if "mfu" in r else ""
    print(f"{name:<14} {label:<36} {float(r['images_per_s']):>8.1f} {float(r['step_ms']):>9.1f} "
          f"{int(r['peak_rss_bytes'])/2**20:>12.0f}{mfu}", flush=True)
    if detail and "hw_mfu" in r:
        print(f"{'':<14} {r['precision']} products (bf16_native={r['bf16_native']}, on our GEMM tiles: "
              f"{'yes' if r.get('gemm_tiles') == '1' else 'no'}); {float(r['gflops']):.0f} "
              f"GFLOP/s against sgemm {float(r['sgemm_peak_gflops']):.0f}, FMA {float(r['fma_peak_gflops']):.0f}, "
              f"vdpbf16ps {float(r['bf16_peak_gflops']):.0f}: hw MFU {float(r['hw_mfu'])*100:.1f}% of the "
              f"{r['hw_peak']} peak; threads: {r['os_threads']} OS threads for {r['threads']} OpenMP threads "
              f"(OpenBLAS reports {r['openblas_threads']}); {r['involuntary_switches_per_step']} involuntary "
              f"context switches per timed step; OpenBLAS: {r['openblas_config']}")


def spread(runs):
    v = [float(x["images_per_s"]) for x in runs]
    return f"{min(v):.1f}–{max(v):.1f}"


def peak_rss_mb(side, runs):
    """Ours: the highest of the rounds; the twin: the lowest. Any doubt goes against us."""
    pick = max if side.startswith("ours") else min
    return pick(int(x["peak_rss_bytes"]) for x in runs[side]) / 2**20


def hw_limits(runs):
    """GFLOP per image (model FLOPs: the same model on every side) and the highest FMA and
    vdpbf16ps peaks our runs measured (the higher limit: any doubt goes against us)."""
    ours = [r for s in runs if s.startswith("ours") for r in runs[s]]
    gpi = float(ours[0]["gflops"]) / float(ours[0]["images_per_s"])
    return gpi, max(float(r["fma_peak_gflops"]) for r in ours), max(float(r["bf16_peak_gflops"]) for r in ours)


def summary(name, b, runs, best):
    """The table of every side's medians, with its MFU against both hardware limits."""
    med = {s: float(median_run(runs[s])["images_per_s"]) for s in b.sides}
    gpi, fma, bf16 = hw_limits(runs)
    print(f"{name}: medians of {b.rounds} rounds, {gpi:.2f} model GFLOP/image; limits measured in our runs: "
          f"fp32 FMA {fma:.0f} GFLOP/s, bf16 vdpbf16ps {bf16:.0f} GFLOP/s")
    peers = [s for s in ("twin_fp32", "twin_bf16") if s in b.sides]
    print(f"  {'side':<36} {'img/s':>8} {'runs':>12} {'peak RSS MB':>12} {'MFU fp32':>9} {'MFU bf16':>9}"
          + "".join(f" {'vs ' + p.replace('twin_', 'torch '):>14}" for p in peers))
    for s in b.sides:
        mfu = lambda peak: f"{med[s] * gpi / peak * 100:>8.1f}%" if peak > 0 else f"{'-':>9}"
        print(f"  {side_label(s, best):<36} {med[s]:>8.2f} {spread(runs[s]):>12} {peak_rss_mb(s, runs):>12.0f} "
              f"{mfu(fma)} {mfu(bf16)}" + "".join(f" {med[s] / med[p]:>14.3f}" for p in peers))
    if "ours_fp32" in runs and "flop_util" in median_run(runs["ours_fp32"]):
        o = median_run(runs["ours_fp32"])
        print(f"  ours fp32: MFU {float(o['mfu'])*100:.1f}% of the sgemm yardstick, all executed GEMM FLOPs "
              f"(with the tokenizer's) {float(o['flop_util'])*100:.1f}%")


def report_lines(name, b, runs):
    med = {s: median_run(runs[s]) for s in runs}
    ips = {s: float(med[s]["images_per_s"]) for s in runs}
    gpi, fma, bf16 = hw_limits(runs)
    p = f"bench: {b.prefix}_{name}"
    ratio = lambda suffix, o, q, unit: f"{p}{suffix} ours={o:.2f} peer={q:.2f} ratio={o/q:.3f} unit={unit}"
    fraction = lambda suffix, v, unit: f"{p}{suffix} ours={v:.3f} peer=1 ratio={v:.3f} unit={unit}"
    lines = []
    fp32 = "ours_fp32" in runs and "twin_fp32" in runs
    if fp32:  # today's lines, with today's meaning: fp32 against fp32, _mfu against the sgemm yardstick
        o = med["ours_fp32"]
        lines.append(ratio("", ips["ours_fp32"], ips["twin_fp32"], "images/s"))
        if "ours_blas" in runs:
            lines.append(f"{p}_gemm_tiles_vs_openblas ours={ips['ours_fp32']:.2f} peer={ips['ours_blas']:.2f} "
                         f"ratio={ips['ours_fp32']/ips['ours_blas']:.3f} unit=images/s")
        lines.append(rss_line(p + "_peak_rss", peak_rss_mb("ours_fp32", runs), peak_rss_mb("twin_fp32", runs)))
        # one pool: the process holds exactly the OpenMP team (ratio 1), no OpenBLAS pool beside it
        ost, omp = max(int(x["os_threads"]) for x in runs["ours_fp32"]), int(o["threads"])
        lines.append(f"{p}_one_thread_pool ours={ost} peer={omp} ratio={omp/ost:.3f} unit=os_threads")
        lines.append(fraction("_mfu", float(o["mfu"]), "fraction_of_sgemm_peak"))
        if "flop_util" in o:
            lines.append(fraction("_flop_util", float(o["flop_util"]), "fraction_of_sgemm_peak"))
    if "ours_bf16" in runs and "twin_bf16" in runs:
        lines.append(ratio("_bf16_vs_torch_bf16", ips["ours_bf16"], ips["twin_bf16"], "images/s"))
        # without the fp32 sides, _peak_rss is the bf16 pair's
        lines.append(rss_line(p + ("_bf16_peak_rss" if fp32 else "_peak_rss"), peak_rss_mb("ours_bf16", runs),
                              peak_rss_mb("twin_bf16", runs)))
    if "ours_bf16" in runs and "ours_fp32" in runs:
        lines.append(ratio("_bf16_vs_fp32", ips["ours_bf16"], ips["ours_fp32"], "images/s"))
    if "ours_bf16" in runs and bf16 > 0:
        lines.append(fraction("_bf16_hw_mfu", ips["ours_bf16"] * gpi / bf16, "fraction_of_bf16_peak"))
    if "ours_fp32" in runs and fma > 0:
        lines.append(fraction("_fp32_hw_mfu", ips["ours_fp32"] * gpi / fma, "fraction_of_fma_peak"))
    return lines


def rss_line(name, ours, peer):
    return f"{name} ours={ours:.0f} peer={peer:.0f} ratio={peer/ours:.3f} unit=MB"


def run_twin(worker_script, name, tt, ob, steps, warmup, precision):
    # OPENBLAS_NUM_THREADS is kept as a setting for a pthreads OpenBLAS; Debian's
    # default libopenblas0 is the OpenMP build, which follows torch.set_num_threads.
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(ob))
    env.pop("OMP_NUM_THREADS", None)
    return run([sys.executable, worker_script, "--torch-worker", name, "--threads", str(tt), "--steps", str(steps),
                "--warmup", str(warmup), "--precision", precision], env)


def median_run(runs):
    """The run with the median images/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: float(r["images_per_s"]))[(len(runs) - 1) // 2]

if __name__ == "__main__":
    main()
