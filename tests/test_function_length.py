"""Every C function in the product's folders fits on a screen or two (at most 100
lines), and the trainer's main at most 120: a long function is where the next
feature gets tangled in."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDERS = ["ground", "trainer", "data_loaders", "tools"]
LIMIT, MAIN_LIMIT = 100, 120


def function_lengths(path):
    """(name, first line, lines) of each top-level brace block that follows a call-like header."""
    src = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), path.read_text(), flags=re.S)
    lines = src.split("\n")
    depth, start, header = 0, None, ""
    for i, line in enumerate(lines):
        code = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|//.*', "", line)
        if depth == 0 and "{" in code:
            start, header = i, " ".join(lines[max(0, i - 3):i + 1])
        depth += code.count("{") - code.count("}")
        if depth == 0 and start is not None and "}" in code:
            if "(" in header and "=" not in header.split("(")[0]:
                names = re.findall(r"(\w+)\s*\(", header)
                yield (names[-1] if names else "?"), start + 1, i - start + 1
            start = None


def test_the_scanner_measures_a_known_function(tmp_path):
    f = tmp_path / "x.c"
    f.write_text("static int add(int a,\n            int b) {\n    return a + b;\n}\nint t[] = {1, 2};\n")
    assert list(function_lengths(f)) == [("add", 2, 3)]


def test_no_function_is_longer_than_a_screen_or_two():
    too_long = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.c")):
            for name, line, n in function_lengths(path):
                limit = MAIN_LIMIT if path.name == "train.c" and name == "main" else LIMIT
                if n > limit:
                    too_long.append(f"{path.relative_to(ROOT)}:{line} {name} is {n} lines (limit {limit})")
    assert not too_long, "split these into named steps:\n" + "\n".join(too_long)
