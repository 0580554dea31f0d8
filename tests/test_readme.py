"""The README stays a user's document: at most 12 KB (studies, benchmark
history and design notes go in docs/), and every file it points to exists."""
import os, re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 12 * 1024


def test_readme_is_short():
    size = os.path.getsize(os.path.join(ROOT, "README.md"))
    assert size <= LIMIT, f"README.md is {size} bytes, over {LIMIT}: move studies, history and design notes to docs/"


def test_readme_paths_exist():
    text = open(os.path.join(ROOT, "README.md")).read()
    paths = {p.rstrip(".") for p in re.findall(r"(?<![\w/])((?:docs|configs|ground|tools|tests|trainer|data_loaders)/[\w./-]+)", text)}
    paths |= {f"docs/{m}" for m in re.findall(r"`(\w+\.md)`", text) if not m.startswith("README")}
    assert len(paths) > 10, f"found only {sorted(paths)}: the pattern no longer matches the README's paths"
    missing = sorted(p for p in paths if not os.path.exists(os.path.join(ROOT, p)))
    assert not missing, f"README.md points to missing files: {missing}"
