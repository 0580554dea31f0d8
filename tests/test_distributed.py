"""Data-parallel training under Open MPI (one OpenMP thread per rank, 2 and 4
ranks oversubscribed on this machine): R ranks at a global batch train the
same model as one process; global negatives and the gradient sums match one
process; stopping and resuming is bit-exact, also across a change of R; a
rank that dies or hangs ends the job with a message, keeping the last
checkpoint."""
import glob, os, shutil, signal, subprocess, time
import numpy as np
import pytest
from conftest import require
from test_train import ROOT, TRAIN, TINY, SHARDS, metrics, all_datasets, train

require("h5py", "python3-h5py")


def mpi_env():
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun missing: install Debian's openmpi-bin (run `make deps`)", pytrace=False)
    return dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_rmaps_base_oversubscribe="1")


def mpirun_command(tmp, name, *extra, np_=2):
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    env = mpi_env()
    cmd = ["mpirun", "-np", str(np_), "-x", "OMP_NUM_THREADS", TRAIN, "--config",
           os.path.join(ROOT, "configs", "fashion_mnist.yaml"), f"--output_dir={tmp}", f"--run_name={name}"]
    return cmd + TINY + list(extra), env


def mpirun(tmp, name, *extra, np_=2):
    cmd, env = mpirun_command(tmp, name, *extra, np_=np_)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, f"mpirun failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p


def test_two_ranks_train_and_resume_bit_exact(tmp_path):
    common = ["--steps=6", "--log_every=1", "--save_every=0"]
    p = mpirun(tmp_path, "straight", *common)
    assert "distributed: 2 ranks" in p.stdout
    lines = metrics(tmp_path, "straight")
    assert [l["step"] for l in lines] == list(range(1, 7))
    assert all(np.isfinite(l["loss"]) for l in lines)
    # each update sees both ranks' batches: 2 x 32 images
    assert abs(lines[-1]["epoch"] * 60000 - 6 * 64) < 1e-6
    mpirun(tmp_path, "resumed", *common, "--stop_at_step=3")
    mpirun(tmp_path, "resumed", *common, "--resume=auto")
    a, _ = all_datasets(tmp_path / "straight" / "ckpt_step00000006.h5")
    b, _ = all_datasets(tmp_path / "resumed" / "ckpt_step00000006.h5")
    diff = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not diff, f"{len(diff)} datasets differ after a 2-rank resume, e.g. {diff[:5]}"
    keys = ("loss", "grad_norm")
    la = {l["step"]: [l[k] for k in keys] for l in metrics(tmp_path, "straight")}
    lb = {l["step"]: [l[k] for k in keys] for l in metrics(tmp_path, "resumed")}
    assert la == lb


def test_build_without_mpi_refuses_to_run_under_mpirun(tmp_path):
    """A build with NO_MPI=1 started by mpirun would train N independent copies
    into one run folder; the no-MPI dist_init sees the launcher's world size
    and stops. Built here from distributed.c alone, without HAVE_MPI."""
    src = tmp_path / "main.c"
    src.write_text('#include "distributed.h"\n#include <stdio.h>\n'
                   'int main(int c, char **v) { dist_init(&c, &v); printf("world %d\\n", dist_world()); return 0; }\n')
    exe = tmp_path / "nompi"
    ground = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "ground", "*.c")))
    subprocess.run(["cc", "-std=gnu11", "-Iground", "-Itrainer", "-o", str(exe), str(src), "trainer/distributed.c",
                    *ground, "-fopenmp", "-lpthread", "-lm"], cwd=ROOT, check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")}
    alone = subprocess.run([str(exe)], capture_output=True, text=True, env=env)
    assert alone.returncode == 0 and "world 1" in alone.stdout, alone.stderr
    under = subprocess.run([str(exe)], capture_output=True, text=True, env=dict(env, OMPI_COMM_WORLD_SIZE="2"))
    assert under.returncode != 0, "ran as a world of one under mpirun"
    assert "this build has no MPI" in under.stderr and "OMPI_COMM_WORLD_SIZE" in under.stderr, under.stderr


def test_sigusr1_to_mpirun_stops_every_rank_with_a_checkpoint(tmp_path):
    """The README's way to stop an MPI job cleanly: mpirun forwards SIGUSR1 to
    every rank, the ranks agree on the stop, and rank 0 writes the checkpoint."""
    cmd, env = mpirun_command(tmp_path, "usr1", "--steps=100000", "--log_every=1", "--save_every=0")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    mfile = tmp_path / "usr1" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            mfile.exists() and len(mfile.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-1500:]}\n{err[-1500:]}"
    latest = os.path.realpath(tmp_path / "usr1" / "latest")
    assert os.path.basename(latest) in out, "the exit message must name the checkpoint"
    _, attrs = all_datasets(latest)
    assert attrs["step"] >= 3


def test_collectives_and_global_negatives_match_one_process():
    """tests/mpi_collectives.c on 2 and 4 ranks: the rank-order gradient sums (one slice and many
    polled slices, bit for bit) and NT-Xent / InfoNCE with global negatives against one process, without
    and with multi-crop's local views as extra anchors."""
    exe = os.path.join(ROOT, "build", "tests_mpi", "mpi_collectives")
    for n in (2, 4):
        p = subprocess.run(["mpirun", "-np", str(n), exe], capture_output=True, text=True, env=mpi_env(), timeout=300)
        passes = [l for l in p.stdout.splitlines() if l.startswith("PASS")]
        fails = [l for l in p.stdout.splitlines() if l.startswith("FAIL")]
        assert p.returncode == 0 and not fails and len(passes) == 18 * n, f"{n} ranks:\n{p.stdout}\n{p.stderr[-2000:]}"


# Every loss on from the first update, so that 10 steps exercise them all; fp32, the precision the
# tolerances below are derived for (the main config trains in bf16).
ALL_LOSSES = ["--global_batch_size=32", "--steps=10", "--log_every=1", "--save_every=0", "--contrast_warmup_steps=0",
              "--w_contrast=0.5", "--seed=3", "--precision=fp32"]
LOSS_KEYS = ("loss", "loss_token", "loss_pixel", "loss_contrast")


def weights(path):
    data, _ = all_datasets(path)
    return {k: v for k, v in data.items() if k.startswith(("encoder/", "pretrain/"))}


def test_ranks_at_a_global_batch_train_the_same_model_as_one_process(tmp_path):
    """1 process x 32 images against 2 ranks x 16 and 4 ranks x 8, through the real loader and
    trainer, 10 updates with every loss on. The data, augmentations and masks are the same, so
    the losses agree to rounding; only the order of the gradient sums differs (rank by rank,
    against one GEMM over the whole batch). Tolerance: the step-1 losses (same weights) within
    1e-5 relative: float rounding, where other data or masks move them by > 1e-2; after 10 AdamW
    updates, per tensor, the difference from one process within 2% of that tensor's own change
    over updates 2-10 (rounding differences of ~1e-6 in a gradient are amplified only where the
    gradient is near 0, where AdamW's m / sqrt(v) can move by up to 1 lr per step)."""
    train(tmp_path, "one", *ALL_LOSSES, "--save_every=1", "--keep_last=20")
    tok = str(tmp_path / "one" / "tokenizer.h5")
    ref_lines = metrics(tmp_path, "one")
    first = weights(tmp_path / "one" / "ckpt_step00000001.h5")
    ref = weights(tmp_path / "one" / "ckpt_step00000010.h5")
    for n in (2, 4):
        name = f"ranks{n}"
        p = mpirun(tmp_path, name, *ALL_LOSSES, f"--tokenizer_path={tok}", np_=n)
        assert f"global batch 32 = {n} ranks x {32 // n}" in p.stdout
        lines = metrics(tmp_path, name)
        assert len(lines) == len(ref_lines) == 10
        for k in LOSS_KEYS:
            a, b = ref_lines[0][k], lines[0][k]
            assert abs(a - b) <= 1e-5 * abs(a), f"{n} ranks, step 1 {k}: {b} vs one process {a}"
            for la, lb in zip(ref_lines, lines):
                assert abs(la[k] - lb[k]) <= 1e-3 * abs(la[k]), f"{n} ranks, step {la['step']} {k}: {lb[k]} vs {la[k]}"
        got = weights(tmp_path / name / "ckpt_step00000010.h5")
        worst, worst_key = 0, None
        for k, w in ref.items():
            moved = np.linalg.norm(w - first[k])  # the change over updates 2..10
            if moved > 0 and np.linalg.norm(got[k] - w) / moved > worst:
                worst, worst_key = np.linalg.norm(got[k] - w) / moved, k
        print(f"{n} ranks: worst tensor {worst_key} differs from one process by {worst:.2e} of its change")
        assert worst <= 0.02, f"{n} ranks: {worst_key} differs from one process's by {worst:.3f} of its change"


def test_overlapped_reduction_gives_the_blocking_bits_on_4_ranks(tmp_path):
    """Each block's gradients reduced during the backward pass (reduce_overlap: true, the default)
    against one reduction after it: the final weights are equal bit for bit on 4 ranks, where a
    sum's order could show (with 2 ranks a + b = b + a either way)."""
    common = ["--global_batch_size=32", "--steps=4", "--save_every=0", "--contrast_warmup_steps=0"]
    mpirun(tmp_path, "overlap", *common, "--reduce_overlap=true", np_=4)
    tok = str(tmp_path / "overlap" / "tokenizer.h5")
    mpirun(tmp_path, "blocking", *common, "--reduce_overlap=false", f"--tokenizer_path={tok}", np_=4)
    a, b = weights(tmp_path / "overlap" / "ckpt_step00000004.h5"), weights(tmp_path / "blocking" / "ckpt_step00000004.h5")
    diff = [k for k in a if not np.array_equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ between overlapped and blocking reductions, e.g. {diff[:3]}"


def rank_pid(rank, train_pids):
    for pid in train_pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"OMPI_COMM_WORLD_RANK={rank}".encode() in f.read().split(b"\0"):
                    return pid
        except OSError:
            pass
    return None


def children_train_pids(mpirun_pid):
    out = subprocess.run(["pgrep", "-P", str(mpirun_pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def start_and_wait_for_steps(tmp_path, name, steps, *extra):
    cmd, env = mpirun_command(tmp_path, name, "--steps=100000", "--log_every=1", *extra)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    mfile = tmp_path / name / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (
            mfile.exists() and len(mfile.read_text().splitlines()) >= steps):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    pids = children_train_pids(proc.pid)
    return proc, pids


def check_last_checkpoint_loads(tmp_path, name):
    latest = os.path.realpath(tmp_path / name / "latest")
    info = subprocess.run([os.path.join(ROOT, "build", "bin", "ckpt_info"), latest], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    _, attrs = all_datasets(latest)
    assert attrs["step"] >= 5


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_rank_that_dies_or_hangs_ends_the_job(tmp_path, how):
    """SIGKILL: mpirun sees the rank exit and ends the job, naming the rank. SIGSTOP (a hung rank):
    the others' next collective waits dist_timeout_s, then they end the job with a message. Either
    way within 60 s, no process left, and the last checkpoint still loads."""
    timeout = 8
    proc, pids = start_and_wait_for_steps(tmp_path, how, 12, "--save_every=5", f"--dist_timeout_s={timeout}")
    victim = rank_pid(1, pids)
    assert victim, f"rank 1 not found among {pids}"
    t0 = time.time()
    os.kill(victim, getattr(signal, how))
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pytest.fail(f"the job did not end within 60 s of {how} to rank 1")
    took = time.time() - t0
    print(f"{how} to rank 1: the job ended in {took:.1f} s with exit code {proc.returncode}")
    assert proc.returncode != 0
    if how == "SIGKILL":
        assert "rank 1" in err and "signal 9" in err, err[-2000:]
    else:
        assert "rank 0 of 2:" in err and "waited" in err and "dist_timeout_s" in err, err[-2000:]
        assert took >= timeout
    time.sleep(0.5)
    left = [p for p in pids if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert not left, f"processes left after {how}: {left}"
    check_last_checkpoint_loads(tmp_path, how)


def test_resume_on_another_number_of_ranks_continues_the_same_run(tmp_path):
    """2 ranks stop after update 4, 4 ranks go on to 6, one process finishes at 8: the global
    stream, masks and schedule continue, so every update's losses equal the uninterrupted 2-rank
    run's to rounding (the step after each resume starts from the same weights: 1e-5), and the
    final weights are within the tolerance of the R-ranks-vs-one-process test."""
    common = ["--global_batch_size=32", "--steps=8", "--log_every=1", "--save_every=0", "--contrast_warmup_steps=0",
              "--w_contrast=0.5", "--save_every=1", "--keep_last=20", "--precision=fp32"]
    mpirun(tmp_path, "straight", *common)
    tok = f"--tokenizer_path={tmp_path / 'straight' / 'tokenizer.h5'}"
    mpirun(tmp_path, "moved", *common, tok, "--stop_at_step=4")
    p = mpirun(tmp_path, "moved", *common, tok, "--stop_at_step=6", "--resume=auto", np_=4)
    assert "resume:" in p.stdout and "global batch 32 = 4 ranks x 8" in p.stdout
    train(tmp_path, "moved", *common, tok, "--resume=auto")
    a, b = metrics(tmp_path, "straight"), metrics(tmp_path, "moved")
    assert [l["step"] for l in b] == list(range(1, 9))
    for la, lb in zip(a, b):
        tol = 1e-5 if la["step"] in (5, 7) else 1e-3
        for k in LOSS_KEYS:
            assert abs(la[k] - lb[k]) <= tol * abs(la[k]), f"step {la['step']} {k}: {lb[k]} vs {la[k]}"
        assert la["epoch"] == lb["epoch"]
    first, ref = weights(tmp_path / "straight" / "ckpt_step00000001.h5"), weights(tmp_path / "straight" / "ckpt_step00000008.h5")
    got = weights(tmp_path / "moved" / "ckpt_step00000008.h5")
    worst = max(np.linalg.norm(got[k] - w) / np.linalg.norm(w - first[k]) for k, w in ref.items()
                if np.linalg.norm(w - first[k]) > 0)
    assert worst <= 0.02, worst
