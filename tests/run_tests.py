#!/usr/bin/python3
"""Runs every test and prints one summary line, `N passed, N failed`.

C tests: every binary in build/tests/ prints `PASS name` / `FAIL name: why`
lines (tests/check.h); a crash or non-zero exit without a FAIL line counts as
one failure. Python tests: tests/test_*.py under pytest, counted per test case.
A missing dependency fails (conftest.py says what to install); nothing skips.
Usage: tests/run_tests.py [-k substring] [--fast] [--build DIR] [--c-only]
  -k: filters test files by name; --fast: the C tests and the Python tests that
  take seconds (FAST below; `make test-fast`, under a minute), not the trainer
  end-to-end ones; --build: the build tree whose tests/ holds the C test
  binaries (default build; `make test` also runs build-asan and build-nonative);
  --c-only: the C tests alone (the Python tests use build/ whatever --build says).
A sanitizer report on a C test's stderr (AddressSanitizer, LeakSanitizer, UBSan's
`runtime error:`) fails that test even when its PASS lines and exit status look
clean, e.g. a report from a forked child whose exit status the test ignores.
"""
import os, subprocess, sys, time, xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
filt = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""
fast = "--fast" in sys.argv
build = sys.argv[sys.argv.index("--build") + 1] if "--build" in sys.argv else "build"
c_only = "--c-only" in sys.argv
SANITIZER_REPORT = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "WARNING: AddressSanitizer")
FAST = {"test_bindings.py", "test_gemm_bf16.py", "test_kernels.py", "test_kmeans_assign.py", "test_loader.py", "test_objective_twin.py",
        "test_function_length.py", "test_readme.py", "test_runlog.py", "test_scaling_model.py", "test_tokenizer_build.py", "test_vit_kept_rows.py", "test_vit_twin.py"}
C_TIMEOUT, PYTEST_TIMEOUT = 600, 1800  # seconds; the whole suite takes ~2 minutes on 2 idle cores
passed = failed = 0
failures = []

# Every tests/test_*.c must have its binary: a test that was not built must not
# pass unnoticed.
c_tests = sorted(x[:-2] for x in os.listdir("tests") if x.startswith("test_") and x.endswith(".c") and filt in x)
built = set(os.listdir(f"{build}/tests")) if os.path.isdir(f"{build}/tests") else set()
for name in c_tests:
    if name not in built:
        failed += 1
        failures.append(f"{name}: {build}/tests/{name} is missing (run `make`)")
for name in c_tests:
    if name not in built:
        continue
    path = os.path.join(build, "tests", name)
    t0 = time.time()
    print(f"== {name}", flush=True)
    # stderr apart: a message from a test's worker thread could otherwise land in
    # the middle of a PASS line and hide it from the count
    try:
        proc = subprocess.run([path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=C_TIMEOUT)
    except subprocess.TimeoutExpired as e:  # a hang must not eat the CI run's time; counted as a failure below
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        proc = subprocess.CompletedProcess(e.cmd, f"killed after {C_TIMEOUT} s (hung?)", out, err)
    p = f = 0
    reports = 0
    for line in proc.stderr.splitlines():
        print("   stderr: " + line)
        if any(s in line for s in SANITIZER_REPORT):
            reports += 1
            if reports == 1:
                failures.append(f"{name}: sanitizer report: {line.strip()}")
    for line in proc.stdout.splitlines():
        print("   " + line)
        if line.startswith("PASS "):
            p += 1
        elif line.startswith("FAIL "):
            f += 1
            failures.append(f"{name}: {line[5:]}")
    if proc.returncode != 0 and f == 0:
        f = 1
        failures.append(f"{name}: exited with {proc.returncode} without a FAIL line")
    elif p == 0 and f == 0:  # a binary that checked nothing is not a pass
        f = 1
        failures.append(f"{name}: printed no PASS or FAIL line")
    if reports:
        f += 1
    passed += p
    failed += f
    print(f"   ({p} passed, {f} failed, {time.time() - t0:.1f}s)", flush=True)

py_tests = sorted(x for x in os.listdir("tests") if x.startswith("test_") and x.endswith(".py") and filt in x
                  and (not fast or x in FAST) and not c_only)
if py_tests:
    xml = "build/pytest-report.xml"
    os.makedirs("build", exist_ok=True)
    if os.path.exists(xml):
        os.remove(xml)  # a report left by an earlier run must not be counted as this one's
    print(f"== pytest {' '.join(py_tests)}", flush=True)
    returncode = None
    if subprocess.run([sys.executable, "-c", "import pytest"], stderr=subprocess.DEVNULL).returncode != 0:
        failures.append(f"pytest is missing for {sys.executable}: install Debian's python3-pytest (run `make deps`)")
        failed += 1
    else:
        try:
            returncode = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
                                         f"--junitxml={xml}"] + [os.path.join("tests", t) for t in py_tests],
                                        timeout=PYTEST_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            failures.append(f"pytest killed after {PYTEST_TIMEOUT} s (hung?)")
            failed += 1
    if returncode not in (None, 0, 1):  # 2 interrupted, 3 internal error, 4 usage error, 5 nothing collected
        failed += 1
        failures.append(f"pytest exited with {returncode}: not a clean run, whatever its report says")
    py_failed = 0
    if os.path.exists(xml):
        root = ET.parse(xml).getroot()
        for case in root.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            skipped = case.find("skipped")
            label = f"{case.get('classname')}::{case.get('name')}"
            if bad is not None or skipped is not None:
                py_failed += 1
                failures.append(label + ("  (skipped: skips count as failures)" if skipped is not None else ""))
            else:
                passed += 1
        failed += py_failed
        if returncode == 1 and py_failed == 0:  # pytest saw a failure its report does not show
            failed += 1
            failures.append("pytest exited with 1 but its report records no failing test")
    elif returncode in (0, 1):  # pytest ran but wrote no report (other codes are counted above)
        failed += 1
        failures.append(f"pytest exited with {returncode} and wrote no report")

if failures:
    print("\nfailures:")
    for x in failures:
        print("  " + x)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or passed == 0 else 0)
