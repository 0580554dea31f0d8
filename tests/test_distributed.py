"""Data-parallel training under Open MPI (mpirun -np 2, one OpenMP thread per
rank): the run trains and checkpoints, and stopping and resuming a 2-rank run
is bit-exact (every rank's data cursor is in the checkpoint)."""
import os, shutil, subprocess
import numpy as np
import pytest
from conftest import require
from test_train import ROOT, TRAIN, TINY, SHARDS, metrics, all_datasets

require("h5py", "python3-h5py")


def mpirun(tmp, name, *extra, np_=2):
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun missing: install Debian's openmpi-bin (run `make deps`)", pytrace=False)
    if not os.path.exists(SHARDS):
        pytest.fail("Fashion-MNIST shards missing: run `make shards`", pytrace=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["mpirun", "-np", str(np_), "-x", "OMP_NUM_THREADS", TRAIN, "--config",
           os.path.join(ROOT, "configs", "fashion_mnist.yaml"), f"--output_dir={tmp}", f"--run_name={name}"]
    p = subprocess.run(cmd + TINY + list(extra), cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
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
