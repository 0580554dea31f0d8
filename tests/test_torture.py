"""The short kill-anywhere torture test (tools/scripts/torture.py; the long one is
`tools/scripts/torture.py --kills 20`): 5 SIGKILLs of a 16-step Fashion-MNIST job
(during the tokenizer build, after its first logged step, mid-step and mid-save),
one damaged checkpoint, restarts with --resume=auto, then a full disk during a save."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kill_anywhere_and_a_full_disk_lose_nothing(tmp_path):
    p = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "scripts", "torture.py"), "--kills", "5",
                        "--steps", "16", "--save-every", "2", "--work", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and not summary["failures"], p.stdout[-3000:] + p.stderr[-2000:]
    t = summary["torture"]
    assert t["kills"] == 5 and t["kills_by_phase"]["tokenizer"] == 1 and t["kills_by_phase"]["early"] == 1
    assert t["kills_by_phase"]["save"] >= 1 and t["resumes"] >= 2
    assert t["metrics_each_step_once"] and t["bit_exact"] and t["damaged_checkpoint_skipped"]
    d = summary["disk_full"]
    assert d["previous_kept"] and d["partial_files"] == [] and d["bit_exact_after_resume"]
