"""Data-parallel training under Open MPI (mpirun -np 2, one OpenMP thread per
rank): the run trains and checkpoints, and stopping and resuming a 2-rank run
is bit-exact (every rank's data cursor is in the checkpoint)."""
import glob, os, shutil, signal, subprocess, time
import numpy as np
import pytest
from conftest import require
from test_train import ROOT, TRAIN, TINY, SHARDS, metrics, all_datasets

require("h5py", "python3-h5py")


def mpirun_command(tmp, name, *extra, np_=2):
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun missing: install Debian's openmpi-bin (run `make deps`)", pytrace=False)
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
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
