#!/usr/bin/python3
"""Runs every test and prints one summary line, `N passed, N failed`.

C tests: every binary in build/tests/ prints `PASS name` / `FAIL name: why`
lines (tests/check.h); a crash or non-zero exit without a FAIL line counts as
one failure. Python tests: tests/test_*.py under pytest, counted per test case.
A missing dependency fails (conftest.py says what to install); nothing skips.
Usage: tests/run_tests.py [-k substring]   (filters test files by name)
"""
import os, subprocess, sys, time, xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.chdir(ROOT)
filt = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""
passed = failed = 0
failures = []

for name in sorted(os.listdir("build/tests")) if os.path.isdir("build/tests") else []:
    if filt not in name:
        continue
    path = os.path.join("build/tests", name)
    t0 = time.time()
    print(f"== {name}", flush=True)
    # stderr apart: a message from a test's worker thread could otherwise land in
    # the middle of a PASS line and hide it from the count
    proc = subprocess.run([path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p = f = 0
    for line in proc.stderr.splitlines():
        print("   stderr: " + line)
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
    passed += p
    failed += f
    print(f"   ({p} passed, {f} failed, {time.time() - t0:.1f}s)", flush=True)

py_tests = sorted(x for x in os.listdir("tests") if x.startswith("test_") and x.endswith(".py") and filt in x)
if py_tests:
    xml = "build/pytest-report.xml"
    os.makedirs("build", exist_ok=True)
    print(f"== pytest {' '.join(py_tests)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
                           f"--junitxml={xml}"] + [os.path.join("tests", t) for t in py_tests])
    if os.path.exists(xml):
        root = ET.parse(xml).getroot()
        for case in root.iter("testcase"):
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            skipped = case.find("skipped")
            label = f"{case.get('classname')}::{case.get('name')}"
            if bad is not None or skipped is not None:
                failed += 1
                failures.append(label + ("  (skipped: skips count as failures)" if skipped is not None else ""))
            else:
                passed += 1
    if proc.returncode not in (0, 1) and not os.path.exists(xml):
        failed += 1
        failures.append(f"pytest exited with {proc.returncode}")

if failures:
    print("\nfailures:")
    for x in failures:
        print("  " + x)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or passed == 0 else 0)
