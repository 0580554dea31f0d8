"""metrics.jsonl parses line by line with Python's json module, numbers keep
every bit, NaN/inf are null; every YAML file in configs/ passes the trainer's
config check, and configs/README.md documents every key."""
import glob, json, math, os, struct, subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_RUNLOG = os.path.join(ROOT, "build", "tests", "test_runlog")
CONFIG_CHECK = os.path.join(ROOT, "build", "bin", "config_check")


def test_metrics_jsonl_parses(tmp_path):
    subprocess.run([TEST_RUNLOG, "--write", str(tmp_path)], check=True)
    assert (tmp_path / "py" / "config.yaml").read_text() == "lr: 1\n"
    raw = (tmp_path / "py" / "metrics.jsonl").read_bytes()
    lines = raw.decode("utf-8").split("\n")
    assert lines[-1] == "", "the file must end with a newline"
    rows = [json.loads(line) for line in lines[:-1]]
    want = [0.1, 1.0 / 3, 1e-300, 5e-324, -0.0, 1.7976931348623157e308, 123456789.0, None, None]
    assert len(rows) == len(want)
    for i, (row, x) in enumerate(zip(rows, want)):
        assert list(row) == ["i", "big", "x", "s", "b"]
        assert row["i"] == i and row["big"] == -9007199254740993 and row["b"] == bool(i % 2)
        if x is None:
            assert row["x"] is None
        else:  # bit-exact, including the sign of zero
            assert struct.pack("<d", float(row["x"])) == struct.pack("<d", x), (row["x"], x)
        assert row["s"] == "quote\" back\\ nl\n tab\t ctl\x01 del\x7f été €"


def test_configs_pass_config_check():
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))):
        proc = subprocess.run([CONFIG_CHECK, "--config", path], capture_output=True, text=True)
        assert proc.returncode == 0, f"{path}: {proc.stderr}"


def test_readme_documents_every_key():
    proc = subprocess.run([CONFIG_CHECK], capture_output=True, text=True, check=True)
    keys = [line.split(":")[0] for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    assert len(keys) > 50
    readme = open(os.path.join(ROOT, "configs", "README.md")).read()
    missing = [k for k in keys if f"  {k} " not in readme]
    assert not missing, f"configs/README.md lacks {missing}: regenerate its key list with build/bin/config_check --help"
