#!/usr/bin/python3
"""Side-by-side benchmark of one ViT training step (forward, backward, clipping,
AdamW): our C trainer (build/bin/bench_vit) against the PyTorch twin
(tools/torch_twin.py) in the same run, on the same machine.

PyTorch gets its best thread setting: torch.set_num_threads 1 and 2 crossed with
OPENBLAS_NUM_THREADS 1 and 2, each in a fresh process, pick the fastest; then
--rounds (default 3) alternating runs of ours and the twin at that setting give
the medians that are reported. Ends with `bench:` lines (images/s; for memory, ratio = peer/ours).
Usage: tools/bench_vit.py [--configs vit_ti_224,fmnist_28] [--steps N]
"""
import argparse, os, resource, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "vit_ti_224": dict(model=dict(img_size=224, patch_size=16, in_chans=3, embed_dim=192, depth=12, num_heads=3,
                                  num_classes=1000), batch=32),
    "fmnist_28": dict(model=dict(img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3,
                                 num_classes=10), batch=256),
}


def torch_worker(name, threads, steps, warmup):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tools"))
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
        loss = torch.nn.functional.cross_entropy(model.forward_head(model.forward_features(x), "cls"), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s >= warmup:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"step_ms={step*1e3:.1f} images_per_s={c['batch']/step:.2f} peak_rss_bytes={rss}")


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


def bench_main(doc, configs, steps, warmup, worker, ours_binary, script, prefix):
    """Command line shared by the side-by-side benchmarks: as --torch-worker,
    run one PyTorch measurement; otherwise compare ours with every setting."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=configs)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--warmup", type=int, default=warmup)
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of ours and the twin; medians are reported")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        return worker(a.torch_worker, a.threads, a.steps, a.warmup)
    compare(a.configs.split(","), ours_binary, script, prefix, a.steps, a.warmup, a.rounds)


def main():
    bench_main(__doc__, "vit_ti_224,fmnist_28", 5, 2, torch_worker, "build/bin/bench_vit", __file__, "vit_step")


def compare(configs, ours_binary, worker_script, prefix, steps, warmup, rounds):
    """For each config: the PyTorch worker (worker_script --torch-worker) at
    every thread setting picks the twin's best; then `rounds` alternating runs
    of our binary and the twin at that setting, each in a fresh process. The
    figures are the medians of those rounds: one run of either side moves by
    ~4% on this machine, and alternating spreads the neighbours' load over both."""
    lines = []
    print(f"{'config':<12} {'who':<28} {'img/s':>8} {'step ms':>9} {'peak RSS MB':>12} {'MFU':>6}")
    for name in configs:
        best = None
        for tt in (1, 2):
            for ob in (1, 2):
                r = run_twin(worker_script, name, tt, ob, steps, warmup)
                print(f"{name:<12} {twin_label(tt, ob, 'sweep'):<28} {float(r['images_per_s']):>8.1f} "
                      f"{float(r['step_ms']):>9.1f} {int(r['peak_rss_bytes'])/2**20:>12.0f}", flush=True)
                if best is None or float(r["images_per_s"]) > float(best[2]["images_per_s"]):
                    best = (tt, ob, r)
        tt, ob = best[0], best[1]
        ours_runs, twin_runs, blas_runs = [], [], []
        for k in range(rounds):
            # the label says 2 threads: an OMP_NUM_THREADS left in the caller's environment must not change that
            o = run([os.path.join(ROOT, ours_binary), "--config", name, "--steps", str(steps), "--warmup", str(warmup)],
                    env=dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 2)))
            ours_runs.append(o)
            print(f"{name:<12} {f'ours (C, 2 threads) #{k+1}':<28} {float(o['images_per_s']):>8.1f} "
                  f"{float(o['step_ms']):>9.1f} {int(o['peak_rss_bytes'])/2**20:>12.0f} {float(o['mfu'])*100:>5.1f}%   "
                  f"(sgemm peak {float(o['sgemm_peak_gflops']):.0f} GFLOP/s, ours {float(o['gflops']):.0f})", flush=True)
            print(f"{'':<12} threads: {o['os_threads']} OS threads in our process for {o['threads']} OpenMP threads "
                  f"(OpenBLAS reports {o['openblas_threads']}); {o['involuntary_switches_per_step']} involuntary "
                  f"context switches per timed step; OpenBLAS: {o['openblas_config']}; "
                  f"linear layers and attention on our GEMM tiles: {'yes' if o.get('gemm_tiles') == '1' else 'no'}")
            # the same binary with every product on OpenBLAS: what our own GEMM tiles (trainer/gemm_tiles.c) buy
            b = run([os.path.join(ROOT, ours_binary), "--config", name, "--steps", str(steps), "--warmup", str(warmup)],
                    env=dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count() or 2), CCVIT_GEMM="blas"))
            blas_runs.append(b)
            print(f"{name:<12} {f'ours, OpenBLAS only #{k+1}':<28} {float(b['images_per_s']):>8.1f} "
                  f"{float(b['step_ms']):>9.1f} {int(b['peak_rss_bytes'])/2**20:>12.0f} {float(b['mfu'])*100:>5.1f}%", flush=True)
            r = run_twin(worker_script, name, tt, ob, steps, warmup)
            twin_runs.append(r)
            print(f"{name:<12} {twin_label(tt, ob, f'#{k+1}'):<28} {float(r['images_per_s']):>8.1f} "
                  f"{float(r['step_ms']):>9.1f} {int(r['peak_rss_bytes'])/2**20:>12.0f}", flush=True)
        ours, twin = median_run(ours_runs), median_run(twin_runs)
        o, p = float(ours["images_per_s"]), float(twin["images_per_s"])
        spread = lambda runs: "–".join(f"{v:.1f}" for v in (min(float(x["images_per_s"]) for x in runs),
                                                              max(float(x["images_per_s"]) for x in runs)))
        util = f", all executed GEMM FLOPs (with the tokenizer's) {float(ours['flop_util'])*100:.1f}%" if "flop_util" in ours else ""
        print(f"{name:<12} median of {rounds} rounds: ours {o:.2f} img/s (runs {spread(ours_runs)}), "
              f"twin {p:.2f} (runs {spread(twin_runs)}), ratio {o/p:.3f}; MFU {float(ours['mfu'])*100:.1f}%{util}")
        lines.append(f"bench: {prefix}_{name} ours={o:.2f} peer={p:.2f} ratio={o/p:.3f} unit=images/s")
        ob_ = float(median_run(blas_runs)["images_per_s"])
        print(f"{name:<12} our GEMM tiles vs OpenBLAS for the same products: {o:.2f} vs {ob_:.2f} img/s "
              f"(OpenBLAS-only runs {spread(blas_runs)}), ratio {o/ob_:.3f}")
        lines.append(f"bench: {prefix}_{name}_gemm_tiles_vs_openblas ours={o:.2f} peer={ob_:.2f} ratio={o/ob_:.3f} unit=images/s")
        orss = max(int(x["peak_rss_bytes"]) for x in ours_runs)
        prss = min(int(x["peak_rss_bytes"]) for x in twin_runs)
        lines.append(f"bench: {prefix}_{name}_peak_rss ours={orss/2**20:.0f} peer={prss/2**20:.0f} ratio={prss/orss:.3f} unit=MB")
        # one pool: the process holds exactly the OpenMP team (ratio 1), no OpenBLAS pool beside it
        ost, omp = max(int(x["os_threads"]) for x in ours_runs), int(ours["threads"])
        lines.append(f"bench: {prefix}_{name}_one_thread_pool ours={ost} peer={omp} ratio={omp/ost:.3f} unit=os_threads")
        lines.append(f"bench: {prefix}_{name}_mfu ours={float(ours['mfu']):.3f} peer=1 ratio={float(ours['mfu']):.3f} unit=fraction_of_sgemm_peak")
        if "flop_util" in ours:
            u = float(ours["flop_util"])
            lines.append(f"bench: {prefix}_{name}_flop_util ours={u:.3f} peer=1 ratio={u:.3f} unit=fraction_of_sgemm_peak")
    print()
    for l in lines:
        print(l)


def twin_label(tt, ob, tag):
    return f"torch t={tt} ob={ob} {tag}"


def run_twin(worker_script, name, tt, ob, steps, warmup):
    # OPENBLAS_NUM_THREADS is kept as a setting for a pthreads OpenBLAS; Debian's
    # default libopenblas0 is the OpenMP build, which follows torch.set_num_threads.
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(ob))
    env.pop("OMP_NUM_THREADS", None)
    return run([sys.executable, worker_script, "--torch-worker", name, "--threads", str(tt), "--steps", str(steps),
                "--warmup", str(warmup)], env)


def median_run(runs):
    """The run with the median images/s (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: float(r["images_per_s"]))[(len(runs) - 1) // 2]

if __name__ == "__main__":
    main()
