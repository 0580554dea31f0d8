#!/usr/bin/python3
"""The numbers a restructuring must not change: fixed-seed
runs of the trainer and eval whose every checkpoint tensor is hashed.

  tools/scripts/invariants.py record DIR   run them and write DIR/<case>.json
  tools/scripts/invariants.py check DIR    run them again and compare with DIR (exit 1 on a difference)

Cases: a 30-step run of configs/fashion_mnist.yaml with every loss on; the same
with the EMA teacher; on 2 MPI ranks; in bf16; a 10-step fine-tune of the first
run's checkpoint; eval's kNN and probe of it on a fixed small split. Each JSON
holds a sha256 per checkpoint dataset (bytes, dtype and shape) and the eval
figures. Needs `make all shards`, mpirun and python3-h5py; ~4 minutes on 2 cores.
"""
import hashlib, json, os, shutil, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "build", "bin")
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist.yaml")
TEST_SPLIT = os.path.join(ROOT, "data", "fashion-mnist", "test-000000.tar")
COMMON = ["--steps=30", "--seed=0", "--log_every=10", "--save_every=0", "--w_token=1", "--w_pixel=1",
          "--w_contrast=1", "--contrast_warmup_steps=0", "--tokenizer_images_per_class=50", "--tokenizer_iters=5",
          "--precision=fp32", "--knn_every=0"]  # the cases name their precision: the config's default may change
MPI_ENV = {"OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}


def run(cmd, env=None):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if p.returncode != 0:
        sys.exit(f"invariants: {' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def tensor_hashes(ckpt):
    import h5py
    out = {}
    with h5py.File(ckpt, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                a = obj[()]
                out[name] = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]
        f.visititems(visit)
    return out


def train(work, name, *extra, mpi=False):
    cmd = [os.path.join(BIN, "train"), "--config", CONFIG, f"--output_dir={work}", f"--run_name={name}"] + COMMON
    if mpi:
        cmd = ["mpirun", "-np", "2", "-x", "OMP_NUM_THREADS"] + cmd
    run(cmd + list(extra), MPI_ENV if mpi else None)
    return os.path.join(work, name, "ckpt_step00000030.h5")


def cases(work):
    base = train(work, "all_losses")
    yield "pretrain_all_losses", tensor_hashes(base)
    yield "pretrain_teacher", tensor_hashes(train(work, "teacher", "--teacher_momentum=0.99"))
    yield "pretrain_2_ranks", tensor_hashes(train(work, "two_ranks", mpi=True))
    yield "pretrain_bf16", tensor_hashes(train(work, "bf16", "--precision=bf16"))
    run([os.path.join(BIN, "train"), "--config", os.path.join(ROOT, "configs", "fashion_mnist_finetune.yaml"),
         f"--output_dir={work}", "--run_name=finetune", f"--finetune={base}", "--steps=10", "--warmup_steps=2",
         "--save_every=0", f"--data_val={TEST_SPLIT}",
         # the recorded run's augmentation and drop path, pinned so that recipe changes leave the invariant alone
         "--scale=0.6,1.0", "--drop_path=0.1"])
    yield "finetune_10_steps", tensor_hashes(os.path.join(work, "finetune", "ckpt_step00000010.h5"))
    out = os.path.join(work, "eval.json")
    run([os.path.join(BIN, "eval"), base, "--limit-train", "2000", "--limit-test", "500", "--lambdas", "1e-4,1e-2",
         "--out", out])
    r = json.load(open(out))
    yield "eval_knn_probe", {k: r[k] for k in ("knn_top1", "probe_top1")}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("record", "check"):
        sys.exit(__doc__)
    mode, folder = sys.argv[1], sys.argv[2]
    os.makedirs(folder, exist_ok=True)
    work = tempfile.mkdtemp(prefix="ccvit-invariants-")
    bad = 0
    try:
        for name, value in cases(work):
            path = os.path.join(folder, f"{name}.json")
            if mode == "record":
                json.dump(value, open(path, "w"), indent=1, sort_keys=True)
                print(f"{name}: {len(value)} entries recorded")
                continue
            want = json.load(open(path))
            diff = sorted(k for k in set(want) | set(value) if want.get(k) != value.get(k))
            bad += bool(diff)
            print(f"{name}: " + ("identical" if not diff else f"{len(diff)} differ, e.g. {diff[:3]}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
