"""Runs everything the CUDA emulator checks (make emu-test) and prints one
`N passed, M failed` line; exits non-zero when anything failed.

Steps (two at a time by default):
  kernel tests (every kernel of both engines against a double reference) under
    the default schedule, the warp-priority schedule and a random one;
  the runtime's own tests and the planted-bug tests;
  the kernel tests and the planted out-of-bounds / misaligned bugs under
    AddressSanitizer + UndefinedBehaviorSanitizer;
  the mutants (planted bugs in copies of the real kernels): each must fail with
    its check's finding;
  the op-level Python tests with the CUDA kernels and the CUDA-side combine
    doing the work on CPU tensors (libfusednorm_emu.so), under the default
    schedule, and a covering selection of them under the warp-priority schedule.
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Step:
    def __init__(self, name, cmd, env=None, kind="gtest", expect=None, cwd=ROOT):
        self.name, self.cmd, self.env, self.kind, self.expect, self.cwd = name, cmd, env or {}, kind, expect, cwd
        self.passed = self.failed = 0
        self.seconds = 0.0
        self.notes = []


def parse_gtest(step, out, rc):
    ok = len(re.findall(r"^\[       OK \] ", out, re.M))
    failed = set(re.findall(r"^\[  FAILED  \] (\S+) \(", out, re.M))
    step.passed, step.failed = ok, len(failed)
    step.notes += sorted(failed)
    if rc != 0 and not failed:
        step.failed += 1
        step.notes.append(f"exit status {rc} without a failed test (crash?)")
    if ok == 0 and not failed and rc == 0:
        step.failed += 1
        step.notes.append("no test ran")


def parse_mutant(step, out, rc):
    # The mutant's kernel tests must fail, and the named check must say why.
    found = re.search(r"^emu: .*: " + re.escape(step.expect) + ": ", out, re.M) is not None
    if rc != 0 and found:
        step.passed = 1
    else:
        step.failed = 1
        step.notes.append(
            f"expected the kernel tests to fail with a '{step.expect}' finding; exit status {rc}, "
            f"finding {'present' if found else 'absent'}"
        )


def parse_pytest(step, out, rc):
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)", tail)}
    step.passed = counts.get("passed", 0) + counts.get("xfailed", 0)
    step.failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    step.notes += re.findall(r"^FAILED (\S+)", out, re.M)[:20]
    if rc != 0 and step.failed == 0:
        step.failed = 1
        step.notes.append(f"pytest exit status {rc}: {tail}")
    skipped = counts.get("skipped", 0)
    if skipped:
        step.notes.append(f"{skipped} skipped")


def run(step, log_dir):
    env = dict(os.environ, **step.env)
    t0 = time.time()
    proc = subprocess.run(step.cmd, cwd=step.cwd, env=env, capture_output=True, text=True, errors="replace")
    step.seconds = time.time() - t0
    out = proc.stdout + proc.stderr
    with open(os.path.join(log_dir, re.sub(r"[^\w.-]+", "_", step.name) + ".log"), "w") as f:
        f.write("$ " + " ".join(step.cmd) + "\n" + out)
    {"gtest": parse_gtest, "mutant": parse_mutant, "pytest": parse_pytest}[step.kind](step, out, proc.returncode)
    return step


def make_steps(args, build, lib):
    asan = {"ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    warp_priority = {"EMU_SCHED": "3", "EMU_SEED": "1"}
    pytest_base = [args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/python", "--emu-lib", lib]
    pyenv = {"PYTHONPATH": os.path.join(ROOT, "python") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    steps = [
        # The longest step first: the other worker runs the rest meanwhile.
        Step("op tests, CUDA path (emulated)", pytest_base + [f"--emu-every={args.pytest_every}"], pyenv, "pytest"),
    ]
    kernels = os.path.join(build, "test_kernels")
    kernels_asan = os.path.join(build, "test_kernels_asan")
    steps += [
        Step("kernel tests", [kernels]),
        Step("kernel tests, warp-priority schedule", [kernels], warp_priority),
        Step(
            "kernel tests, random schedule, 3 blocks interleaved",
            [kernels],
            {"EMU_SCHED": "2", "EMU_SEED": "5", "EMU_RESIDENT": "3"},
        ),
        # One SM: few slices and chunks, grid-stride loops that go round.
        Step("kernel tests, 1 SM", [kernels], {"EMU_SM_COUNT": "1"}),
        Step("runtime tests", [os.path.join(build, "test_runtime")]),
        Step("planted bugs (emulator checks)", [os.path.join(build, "test_checks")]),
        Step("kernel tests, ASan+UBSan", [kernels_asan], asan),
        Step("kernel tests, ASan+UBSan, warp-priority schedule", [kernels_asan], dict(asan, **warp_priority)),
        Step("planted bugs (ASan+UBSan)", [os.path.join(build, "test_checks_asan")], asan),
    ]
    mutants = json.loads(subprocess.check_output([args.python, os.path.join(HERE, "mutants.py"), "--describe"]))
    for name, m in mutants.items():
        cmd = [os.path.join(build, f"mutant_{name}"), f"--gtest_filter={m['filter']}"]
        steps.append(Step(f"mutant {name}", cmd, kind="mutant", expect=m["check"]))
    steps.append(
        Step(
            "op tests, CUDA path, warp-priority schedule, 4 SMs",
            pytest_base + [f"--emu-every={args.pytest_every_warp_priority}"],
            dict(pyenv, EMU_SM_COUNT="4", **warp_priority),
            "pytest",
        )
    )
    return steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "emu"))
    ap.add_argument("--lib", default=None, help="libfusednorm_emu.so (default: in --build)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("EMU_TEST_JOBS", "2")))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument(
        "--pytest-every",
        type=int,
        default=int(os.environ.get("EMU_PYTEST_EVERY", "2")),
        help="the op tests' --emu-every (1: all of them)",
    )
    ap.add_argument("--pytest-every-warp-priority", type=int, default=int(os.environ.get("EMU_PYTEST_EVERY_WP", "12")))
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    lib = os.path.abspath(args.lib or os.path.join(build, "libfusednorm_emu.so"))
    log_dir = os.path.join(build, "logs")
    os.makedirs(log_dir, exist_ok=True)
    steps = make_steps(args, build, lib)
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for step in pool.map(lambda s: run(s, log_dir), steps):
            status = "ok" if step.failed == 0 else "FAILED"
            print(
                f"  {status:6} {step.name}: {step.passed} passed, {step.failed} failed ({step.seconds:.0f} s)",
                flush=True,
            )
            for note in step.notes[:10]:
                print(f"           {note}")
    passed = sum(s.passed for s in steps)
    failed = sum(s.failed for s in steps)
    print(f"emu-test: {passed} passed, {failed} failed in {time.time() - t0:.0f} s (logs: {log_dir})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
