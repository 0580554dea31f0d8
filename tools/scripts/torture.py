#!/usr/bin/python3
"""Kill the trainer anywhere, lose nothing.

  tools/scripts/torture.py [--kills 20] [--steps 60] [--save-every 3] [--seed 1] [--work DIR] [--no-disk-full]

1. An uninterrupted reference run of a short Fashion-MNIST job (every loss on).
2. The same job, SIGKILLed --kills times at random moments: first during the
   tokenizer's k-means at start-up, then after its first logged step but
   before its first checkpoint, then cycling through start-up, mid-step and
   mid-save (the moment a checkpoint's temporary file appears);
   each time it is restarted with --resume=auto, and once the newest checkpoint
   is damaged on purpose before a restart. Then it runs to the end.
   Checked: every checkpoint left in the folder verifies except the damaged one,
   every resume names a checkpoint that verified and never the damaged one,
   no temporary file is ever loaded, metrics.jsonl holds each step once, and
   the final checkpoint's datasets equal the reference's bit for bit.
3. Disk full: the job's run folder on a small tmpfs that holds one checkpoint
   but not two. The save that runs out of space must stop the run with a clear
   message, keep the previous checkpoint (it verifies) and leave no partial
   file; after the tmpfs grows, --resume=auto continues to a final checkpoint
   equal to the reference's. Needs root or unprivileged user namespaces
   (unshare -rm) to mount the tmpfs.

Prints a JSON summary last; exit 1 on any failure. Needs `make all shards`.
"""
import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from invariants import tensor_hashes  # noqa: E402

BIN = os.path.join(ROOT, "build", "bin")
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist.yaml")


def job_args(a, out, name):
    return [os.path.join(BIN, "train"), "--config", CONFIG, f"--output_dir={out}", f"--run_name={name}",
            f"--steps={a.steps}", f"--seed={a.seed}", "--log_every=1", f"--save_every={a.save_every}",
            "--keep_last=3", "--w_token=1", "--w_pixel=1", "--w_contrast=1", "--contrast_warmup_steps=0",
            "--tokenizer_images_per_class=60", "--tokenizer_iters=8", "--num_workers=1"]


def final_ckpt(run_dir, steps):
    return os.path.join(run_dir, f"ckpt_step{steps:08d}.h5")


def verifies(path):
    p = subprocess.run([os.path.join(BIN, "ckpt_info"), path, "--verify"], capture_output=True, text=True)
    return p.returncode == 0


def temp_files(run_dir, pid=None):
    """Temporary files in run_dir: a writer's "<name>.tmp.<pid>" (pid: only that process's)."""
    if not os.path.isdir(run_dir):
        return []
    return [f for f in os.listdir(run_dir) if (f".tmp.{pid}" if pid else ".tmp.") in f]


def metrics_steps(run_dir):
    steps = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                steps.append(rec["step"])
    return steps


class Failures(list):
    def check(self, ok, what):
        if not ok:
            self.append(what)
            print("FAIL:", what, flush=True)
        return ok


def checkpoints(run_dir):
    return set(glob.glob(os.path.join(run_dir, "ckpt_step*.h5")))


def wait_for(proc, cond, timeout=300):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None and not cond():
        time.sleep(0.002)


def kill_at(proc, run_dir, target, rng):
    """SIGKILL proc at a moment of the given kind; returns what it was doing then (or 'exited').
    startup: within its first second (the tokenizer's k-means on a first start, else loading);
    early: once the first step is logged, before the first checkpoint;
    step: mid-step, after this start has written a checkpoint (so the job progresses);
    save: while the checkpoint after that one is being written (its temporary file exists)."""
    before = checkpoints(run_dir)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if target == "early":  # steps logged, none saved yet: a restart starts afresh in a folder that has a log
        wait_for(proc, lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0)
    elif target == "startup":
        wait_for(proc, lambda: False, rng.uniform(0.05, 1.0))
    else:
        wait_for(proc, lambda: checkpoints(run_dir) - before)
        if target == "step":
            wait_for(proc, lambda: False, rng.uniform(0.1, 1.5))
        else:
            wait_for(proc, lambda: temp_files(run_dir, proc.pid))
    if proc.poll() is not None:
        return "exited"
    phase = ("save" if temp_files(run_dir, proc.pid)
             else "tokenizer" if not os.path.exists(os.path.join(run_dir, "tokenizer.h5"))
             else target if target in ("startup", "early") else "step")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return phase


def resumed_from(log_path):
    with open(log_path) as f:
        for line in f:
            if line.startswith("resume: ") and " at step " in line:
                return line[len("resume: "):].split(" at step ")[0]
    return None


def torture(a, work, ref_hashes, fails):
    out, name = os.path.join(work, "out"), "torture"
    run_dir = os.path.join(out, name)
    rng = random.Random(a.seed)
    targets = ["startup", "step", "save"]
    kills = {"tokenizer": 0, "startup": 0, "early": 0, "step": 0, "save": 0, "exited": 0}
    resumes, damaged, attempt = 0, None, 0
    while True:
        log = os.path.join(work, f"attempt{attempt:03d}.log")
        with open(log, "w") as lf:
            proc = subprocess.Popen(job_args(a, out, name) + ["--resume=auto"], cwd=ROOT, stdout=lf, stderr=lf)
            killed = sum(kills.values()) - kills["exited"]
            if killed < a.kills:
                target = "startup" if killed == 0 else "early" if killed == 1 else targets[killed % 3]
                phase = kill_at(proc, run_dir, target, rng)
                kills[phase] += 1
            else:
                proc.wait()
        src = resumed_from(log)
        if src:
            resumes += 1
            fails.check(".tmp." not in src, f"attempt {attempt} resumed from a temporary file {src}")
            fails.check(src != damaged, f"attempt {attempt} loaded the damaged checkpoint {src}")
        if proc.returncode == 0:
            break
        fails.check(proc.returncode == -signal.SIGKILL, f"attempt {attempt} failed by itself (rc {proc.returncode}), see {log}")
        if proc.returncode != -signal.SIGKILL:
            return {}
        for ck in sorted(glob.glob(os.path.join(run_dir, "ckpt_step*.h5"))):
            fails.check(ck == damaged or verifies(ck), f"after kill {attempt}: {ck} does not verify")
        ckpts = sorted(glob.glob(os.path.join(run_dir, "ckpt_step*.h5")))
        if damaged is None and len(ckpts) >= 2 and sum(kills.values()) >= a.kills // 2:
            damaged = ckpts[-1]  # flip bytes in the middle of the newest checkpoint
            with open(damaged, "r+b") as f:
                f.seek(os.path.getsize(damaged) // 2)
                f.write(b"\xde\xad\xbe\xef" * 16)
        attempt += 1
    steps = metrics_steps(run_dir)
    once = steps == list(range(1, a.steps + 1))
    fails.check(once, f"metrics.jsonl steps are not each step once: {steps[:60]}")
    exact = tensor_hashes(final_ckpt(run_dir, a.steps)) == ref_hashes
    fails.check(exact, "the final checkpoint differs from the uninterrupted run's")
    fails.check(damaged is not None, "no checkpoint was damaged (too few checkpoints)")
    return {"kills": sum(kills.values()) - kills["exited"], "kills_by_phase": kills, "resumes": resumes,
            "damaged_checkpoint_skipped": damaged is not None, "attempts": attempt + 1,
            "metrics_each_step_once": once,
            "bit_exact": exact}


def disk_full(a, work, ref_hashes, fails):
    """Run in a mount namespace where we may mount a tmpfs (root, or unshare -rm)."""
    mnt = os.path.join(work, "small")
    os.makedirs(mnt, exist_ok=True)
    ref_ckpt = final_ckpt(os.path.join(work, "out", "reference"), a.steps)
    ck_size = os.path.getsize(ref_ckpt)
    tok = os.path.getsize(os.path.join(work, "out", "reference", "tokenizer.h5"))
    size = int(1.5 * ck_size + tok + (256 << 10))  # one checkpoint fits, a second beside it does not
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mnt]).returncode != 0:
        fails.check(False, "cannot mount a tmpfs (run as root, or enable unprivileged user namespaces)")
        return {}
    try:
        run_dir = os.path.join(mnt, "full")
        p = subprocess.run(job_args(a, mnt, "full") + ["--keep_last=1"], cwd=ROOT, capture_output=True, text=True)
        msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
        fails.check(p.returncode != 0, "the run did not stop when the disk filled")
        fails.check("No space left" in p.stderr and "previous checkpoint is kept" in p.stderr,
                    f"unclear disk-full message: {msg!r}")
        left = sorted(glob.glob(os.path.join(run_dir, "ckpt_step*.h5")))
        fails.check(len(left) == 1 and verifies(left[0]), f"the previous checkpoint is not kept intact: {left}")
        fails.check(not temp_files(run_dir), f"partial files left behind: {temp_files(run_dir)}")
        subprocess.run(["mount", "-o", f"remount,size={4 * size}", mnt], check=True)
        r = subprocess.run(job_args(a, mnt, "full") + ["--keep_last=1", "--resume=auto"], cwd=ROOT,
                           capture_output=True, text=True)
        fails.check(r.returncode == 0, f"resume after freeing space failed: {r.stderr[-500:]}")
        exact = r.returncode == 0 and tensor_hashes(final_ckpt(run_dir, a.steps)) == ref_hashes
        fails.check(exact, "the run resumed after a full disk differs from the uninterrupted run")
        return {"stopped_with": msg, "previous_kept": len(left) == 1, "partial_files": temp_files(run_dir),
                "stopped_at_checkpoint": os.path.basename(left[0]) if left else None, "bit_exact_after_resume": exact}
    finally:
        subprocess.run(["umount", mnt])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--save-every", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temporary one, removed after)")
    ap.add_argument("--no-disk-full", action="store_true")
    ap.add_argument("--disk-full-only", action="store_true", help=argparse.SUPPRESS)  # the unshare re-entry
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="ccvit-torture-")
    fails = Failures()
    ref_dir = os.path.join(work, "out", "reference")
    if not a.disk_full_only:
        shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
        t0 = time.time()
        subprocess.run(job_args(a, os.path.join(work, "out"), "reference"), cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"reference run: {time.time() - t0:.1f} s", flush=True)
    ref_hashes = tensor_hashes(final_ckpt(ref_dir, a.steps))
    summary = {}
    if not a.disk_full_only:
        summary["torture"] = torture(a, work, ref_hashes, fails)
    if not a.no_disk_full:
        if a.disk_full_only or os.geteuid() == 0:
            summary["disk_full"] = disk_full(a, work, ref_hashes, fails)
        else:  # a private mount namespace where this user may mount a tmpfs
            p = subprocess.run(["unshare", "-rm", sys.executable, os.path.abspath(__file__), "--disk-full-only",
                                "--work", work, "--steps", str(a.steps), "--save-every", str(a.save_every),
                                "--seed", str(a.seed)], capture_output=True, text=True)
            sys.stdout.write(p.stdout)
            try:
                summary["disk_full"] = json.loads(p.stdout.strip().splitlines()[-1])["disk_full"]
            except (ValueError, IndexError, KeyError):
                summary["disk_full"] = {}
            fails.check(p.returncode == 0, f"disk-full case failed or could not run (unshare -rm): {p.stderr[-500:]}")
    summary["failures"] = list(fails)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
