"""Registers, spills, stack and static shared memory of every CUDA kernel for
sm_90, from `nvcc -Xptxas -v` on the real .cu files (the flags setup.py's
extension build gives them). Writes a CSV the emulator also reads
(EMU_PTXAS_CSV) so that its occupancy model uses the real register counts.

usage: ptxas_report.py --cuda-dir csrc/cuda --out build/traffic/registers.csv [--nvcc PATH]
Exit status 2 (and no file) when nvcc is not available.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

# What torch's CUDAExtension and setup.py give nvcc for these files.
NVCC_FLAGS = [
    "-O3",
    "-std=c++20",
    "--expt-relaxed-constexpr",
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
    "-gencode=arch=compute_90,code=sm_90",
    "-Xptxas",
    "-v",
]


def demangle(names):
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out))


def parse(text):
    """{mangled: {registers, spill_stores, spill_loads, stack_frame, shared_bytes}}"""
    kernels, current = {}, None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for 'sm_90'", line)
        if m:
            current = m.group(1)
            kernels.setdefault(current, {})
            continue
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = m.group(1) if m.group(1) in kernels else None
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and current:
            kernels[current].update(stack_frame=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and current:
            smem = re.search(r"(\d+) bytes smem", line)
            kernels[current].update(registers=int(m[1]), shared_bytes=int(smem[1]) if smem else 0)
    return kernels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cuda-dir", required=True)
    ap.add_argument("--include", action="append", default=["csrc", "csrc/include"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--nvcc", default=None)
    args = ap.parse_args()
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    nvcc = args.nvcc or shutil.which("nvcc") or os.path.join(cuda_home, "bin", "nvcc")
    if not os.path.exists(nvcc):
        print("ptxas_report: nvcc not found; no register report", file=sys.stderr)
        return 2
    kernels = {}
    sources = sorted(f for f in os.listdir(args.cuda_dir) if f.endswith(".cu"))
    for src in sources:
        cmd = [nvcc, *NVCC_FLAGS, *[f"-I{i}" for i in args.include], "-c", os.path.join(args.cuda_dir, src)]
        cmd += ["-o", os.devnull]
        print("ptxas_report: " + " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            return 1
        for name, k in parse(proc.stdout + proc.stderr).items():
            k["source"] = src
            kernels[name] = k
    names = demangle(sorted(kernels))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("kernel_mangled,registers,spill_stores,spill_loads,stack_frame,shared_bytes,source,kernel\n")
        for name in sorted(kernels, key=lambda n: names[n]):
            k = kernels[name]
            kernel = names[name].replace('"', "'")
            f.write(
                f"{name},{k.get('registers', 0)},{k.get('spill_stores', 0)},{k.get('spill_loads', 0)},"
                f'{k.get("stack_frame", 0)},{k.get("shared_bytes", 0)},{k["source"]},"{kernel}"\n'
            )
    print(f"ptxas_report: {len(kernels)} kernels -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
