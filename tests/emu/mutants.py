"""Planted bugs in copies of the real CUDA kernels (never in the shipped files).

Each mutant is one textual change to one file of the kernel sources; the build
copies the sources, applies the change, compiles the translation units that
include the changed file (or only `units`, those that use the changed code),
and links them with the kernel test program
(tests/test_kernels.cpp). run_emu_tests.py then runs that program and expects
it to fail with the named check's finding on stderr.

A change that no longer matches its file exactly once fails the build with a
message: after a kernel rewrite, point the mutant at the new code.

usage:
  mutants.py --list                         names, one line
  mutants.py --describe                     JSON: name -> {check, filter, what}
  mutants.py --make NAME --src DIR --out DIR  copy DIR (and link its siblings), apply NAME
  mutants.py --affected NAME --src DIR      the .cu files that (transitively) include the changed file
"""

import argparse
import json
import os
import re
import shutil
import sys

MUTANTS = {
    "missing_syncthreads": dict(
        file="row_norm_kernel.cuh",
        old="  __syncthreads();\n  // Every warp combines all warps' values itself",
        new="  // Every warp combines all warps' values itself",
        check="shared-memory race",
        filter="RowKernels.*Block*",
        what="the __syncthreads between the warps' writes of their partial and the reads of all partials"
        " in row_allreduce removed",
    ),
    "shuffle_exchanges_nothing": dict(
        file="channel_norm_kernel.cuh",
        old="""  const acc_t nb = __shfl_xor_sync(0xffffffffu, w.n, lane_mask);
  const acc_t mb = __shfl_xor_sync(0xffffffffu, w.mean, lane_mask);
  const acc_t m2b = __shfl_xor_sync(0xffffffffu, w.m2, lane_mask);""",
        new="""  const acc_t nb = __shfl_xor_sync(0xffffffffu, w.n, lane_mask & 0);
  const acc_t mb = __shfl_xor_sync(0xffffffffu, w.mean, lane_mask & 0);
  const acc_t m2b = __shfl_xor_sync(0xffffffffu, w.m2, lane_mask & 0);""",
        units=["channel_norm_kernel.cu"],
        check="shuffle exchanging nothing",
        filter="ChannelKernels.Moments*",
        what="welford_shfl_merge's shuffles read the lane itself (lane mask 0): the warp's Welford merge"
        " exchanges nothing",
    ),
    "tail_off_by_one": dict(
        file="channel_norm_kernel.cuh",
        old="for (int e = i + lane * VEC; e < len; e += kWarpSize * VEC) {",
        new="for (int e = i + lane * VEC; e <= len; e += kWarpSize * VEC) {",
        units=["channel_norm_kernel.cu"],
        check="out-of-bounds global access",
        filter="ChannelKernels.Moments*",
        what="moments_cf_kernel's tail loop runs one vector too far (e <= len)",
    ),
    "shared_race": dict(
        file="channel_norm_kernel.cuh",
        old="  return p.block_x >= kWarpSize || (threadIdx.x % kWarpSize) < p.block_x;",
        new="  return true;",
        units=["channel_norm_kernel.cu"],
        check="shared-memory race",
        filter="ChannelKernels.Moments*",
        what="every thread, not only one per channel and warp, writes its partial to the channels-last"
        " reductions' shared slots: lanes of a warp write the same entry",
    ),
    "misaligned_pack": dict(
        file="row_norm_kernel.cu",
        old="plan.vec = g.N % width == 0 && aligned16(tensors) ? width : 1;",
        new="plan.vec = g.N % width == 0 ? width : 1;",
        check="misaligned access",
        filter="RowKernels.Forward*",
        what="plan_rows no longer tests the tensors' 16-byte alignment: Pack loads of misaligned rows",
    ),
    "uninitialised_shared": dict(
        file="channel_norm_kernel.cuh",
        old="""  const int slots = cl_num_slots(p);
  for (int s = 1; s < slots; ++s) {""",
        new="""  const int slots = cl_num_slots(p);
  for (int s = 1; s <= slots; ++s) {""",
        units=["channel_norm_kernel.cu"],
        check="uninitialised shared-memory read",
        filter="ChannelKernels.Moments*",
        what="moments_cl_kernel's combine over the shared slots reads one slot more than the warps wrote",
    ),
    "divergent_syncthreads": dict(
        file="row_norm_kernel.cuh",
        old="  __syncthreads();  // the previous row's readers are done with `shared`",
        new="  if (lane == 0) __syncthreads();  // the previous row's readers are done with `shared`",
        check="divergent barrier",
        filter="RowKernels.*Block*",
        what="row_allreduce's first __syncthreads only in lane 0 of each warp",
    ),
}


def includes(path):
    with open(path) as f:
        return re.findall(r'^\s*#\s*include\s+"([^"]+)"', f.read(), re.M)


def affected(name, src):
    """The .cu files of src whose include closure has the mutated file."""
    target = MUTANTS[name]["file"]
    out = []
    for cu in sorted(f for f in os.listdir(src) if f.endswith(".cu")):
        seen, todo = set(), [cu]
        while todo:
            f = todo.pop()
            if f in seen or not os.path.exists(os.path.join(src, f)):
                continue
            seen.add(f)
            todo += [os.path.basename(i) for i in includes(os.path.join(src, f)) if "/" not in i or i.startswith("./")]
        if target in seen:
            out.append(cu)
    return out


def make(name, src, out):
    m = MUTANTS[name]
    src = os.path.abspath(src)
    if os.path.exists(out):
        shutil.rmtree(out)
    shutil.copytree(src, out)
    # Relative includes of the sources ("../math/...") resolve through links to
    # the originals' siblings.
    parent = os.path.dirname(src)
    for entry in os.listdir(parent):
        link = os.path.join(os.path.dirname(out), entry)
        if entry != os.path.basename(src) and not os.path.exists(link):
            os.symlink(os.path.join(parent, entry), link)
    path = os.path.join(out, m["file"])
    text = open(path).read()
    count = text.count(m["old"])
    if count != 1:
        sys.exit(
            f"mutants.py: mutant {name}: the text to change occurs {count} times in {m['file']} (expected once);"
            " the kernel changed: update MUTANTS in tests/emu/mutants.py"
        )
    with open(path, "w") as f:
        f.write(text.replace(m["old"], m["new"]))
    with open(os.path.join(out, "AFFECTED"), "w") as f:
        f.write("\n".join(m.get("units") or affected(name, src)) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--describe", action="store_true")
    ap.add_argument("--make")
    ap.add_argument("--affected")
    ap.add_argument("--src")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.list:
        print(" ".join(MUTANTS))
    elif a.describe:
        print(json.dumps({k: {f: v[f] for f in ("check", "filter", "what", "file")} for k, v in MUTANTS.items()}))
    elif a.make:
        make(a.make, a.src, a.out)
    elif a.affected:
        print(" ".join(affected(a.affected, a.src)))


if __name__ == "__main__":
    main()
