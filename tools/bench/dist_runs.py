#!/usr/bin/python3
"""Data parallelism on this machine, through the real trainer and loader: one rank with
2 OpenMP threads against 2 ranks (mpirun) with 1 thread each at the same global batch,
and with 2 ranks the gradient reduction overlapped with the backward pass against one
blocking reduction after it. Per config, ROUNDS alternating rounds (the order rotates);
each run's images/s is taken over its updates after SKIP (start-up excluded); medians.
Also the share of a step in communication (comm_share: time in the per-step
collectives, i.e. the part the step does not hide) and the MFU against the sgemm peak
each run measures at start-up. Ends with `bench:` lines. Needs `make all shards
shards-imagenet` and mpirun."""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "build", "bin", "train")
CONFIGS = {  # name: (config file, global batch, updates, updates skipped, extra keys)
    "fmnist_28": ("configs/fashion_mnist.yaml", 32, 60, 10, []),
    "vit_ti_224": ("configs/imagenet_vit_ti.yaml", 32, 12, 3,
                   ["--tokenizer_images_per_class=5", "--tokenizer_iters=2", "--shuffle_buffer_mb=64"]),
}
SIDES = ("one_rank", "two_ranks_overlap", "two_ranks_blocking")


def run(out, name, cfg, side, tok):
    path, G, steps, skip, extra = CONFIGS[cfg]
    args = [TRAIN, "--config", os.path.join(ROOT, path), f"--output_dir={out}", f"--run_name={name}",
            f"--global_batch_size={G}", f"--steps={steps}", "--log_every=1", "--save_every=0",
            "--contrast_warmup_steps=0", *extra] + ([f"--tokenizer_path={tok}"] if tok else [])
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if side == "one_rank":
        env["OMP_NUM_THREADS"] = "2"
        cmd = args
    else:
        env["OMP_NUM_THREADS"] = "1"
        overlap = "true" if side == "two_ranks_overlap" else "false"
        cmd = ["mpirun", "-np", "2", "--bind-to", "none", "-x", "OMP_NUM_THREADS", *args, f"--reduce_overlap={overlap}"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{cfg} {side} failed:\n{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
    rows = [json.loads(l) for l in open(os.path.join(out, name, "metrics.jsonl"))]
    first, last = next(r for r in rows if r["step"] == skip), rows[-1]
    timed = [r for r in rows if r["step"] > skip]
    ips = (last["step"] - first["step"]) * G / (last["elapsed_s"] - first["elapsed_s"])
    comm = statistics.mean(r.get("comm_share", 0.0) for r in timed)
    mfu = statistics.median(r["mfu"] for r in timed)
    return ips, comm, mfu, os.path.join(out, name, "tokenizer.h5")


def bench(cfg, rounds, out):
    res = {s: [] for s in SIDES}
    tok = None
    for k in range(rounds):
        order = SIDES[k % 3:] + SIDES[:k % 3]
        for side in order:
            name = f"{cfg}_{side}_{k}"
            ips, comm, mfu, made = run(out, name, cfg, side, tok)
            tok = tok or made
            res[side].append((ips, comm, mfu))
            print(f"{cfg} round {k + 1} {side:20s} {ips:8.2f} img/s  comm share {comm:.3f}  mfu {mfu:.3f}", flush=True)
    return {s: [statistics.median(v[i] for v in res[s]) for i in range(3)] for s in SIDES}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", 3)))
    ap.add_argument("--configs", default="fmnist_28,vit_ti_224")
    a = ap.parse_args()
    if shutil.which("mpirun") is None:
        sys.exit("mpirun missing: install Debian's openmpi-bin (make deps)")
    out = tempfile.mkdtemp(prefix="ccvit-dist.")
    lines = []
    try:
        for cfg in a.configs.split(","):
            m = bench(cfg, a.rounds, out)
            one, ov, bl = m["one_rank"], m["two_ranks_overlap"], m["two_ranks_blocking"]
            print(f"{cfg} medians of {a.rounds} rounds: 1 rank x 2 threads {one[0]:.2f} img/s (mfu {one[2]:.3f}); "
                  f"2 ranks x 1 thread {ov[0]:.2f} img/s overlapped (comm share {ov[1]:.3f}, mfu {ov[2]:.3f}), "
                  f"{bl[0]:.2f} img/s blocking (comm share {bl[1]:.3f})")
            lines.append(f"bench: dist_{cfg}_2ranks_vs_1rank ours={ov[0]:.2f} peer={one[0]:.2f} "
                         f"ratio={ov[0] / one[0]:.3f} unit=images/s")
            lines.append(f"bench: dist_{cfg}_overlap_vs_blocking ours={ov[0]:.2f} peer={bl[0]:.2f} "
                         f"ratio={ov[0] / bl[0]:.3f} unit=images/s")
            lines.append(f"bench: dist_{cfg}_comm_share_overlap_vs_blocking ours={ov[1]:.4f} peer={bl[1]:.4f} "
                         f"ratio={ov[1] / bl[1] if bl[1] else 0:.3f} unit=fraction_of_step")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
