"""Memory traffic of the fused ops on the CUDA path, counted by the emulator
(make traffic-report): $(BUILD_DIR)/traffic/traffic.csv with the columns

  case,op,shape,dtype,layout,pass,launches,bytes_per_element,min_bytes_per_element,sector_efficiency

plus launches.csv (every kernel launch and counted ATen op of every case) and
registers.csv (nvcc -Xptxas -v for sm_90, when nvcc is there).

How the figures are made (tests/emu/README.md has the details):
- Kernels: every global load and store of every CUDA thread goes through the
  emulator's access callbacks. A warp request is the k-th execution of one
  instruction by the lanes of a warp; its sectors are the distinct 32-byte
  sectors the lanes touch, its ideal the fewest sectors that hold the distinct
  bytes they ask for. sector_efficiency = sum(ideal) / sum(touched) over the
  kernels of the pass (1.0 = perfect). The bytes a kernel moves are the
  distinct bytes of device memory it reads plus those it writes (its footprint:
  what DRAM must deliver and take if caches hold what one launch re-reads, as
  a row re-read from L1 or a coefficient every warp loads); launches.csv also
  has the bytes the lanes asked for (no cache) and 32 x the sectors their
  requests touched (what L1 asks of L2).
- ATen ops between the kernels (the combine on [N, C, K] partials, the parameter
  gradients, the running statistics): torch.profiler's record of every ATen op
  the fused op runs. Each compute op counts as one launch (as on CUDA);
  allocations, views and metadata ops (NO_KERNEL below) count none; wrappers
  (WRAPPERS) count what they call; arithmetic on 0-d CPU scalars counts none (a
  kernel argument on CUDA). Their bytes are estimated from the recorded input
  shapes, strides and dtypes (inputs read once, broadcast dims counted once;
  outputs: the broadcast shape, the reduced shape, or the updated input).
- bytes_per_element = (kernel bytes + ATen bytes) / input elements;
  min_bytes_per_element: the input read and the output written once (forward),
  grad_output and input read and grad_input written once (backward), in the
  input's dtype; parameters and statistics (O(C)) are left out.
- Shapes are emulation-sized versions of the named cases (same structure, fewer
  elements); the launch planning is the real one for an H200 (132 SMs, register
  counts from nvcc when available).
"""

import argparse
import csv
import ctypes
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (case, op, module factory, input shape, dtype, layout)
CASES = [
    ("bn2d_relu_nchw_fp32", "BatchNorm2d+ReLU", "bn2d", (16, 64, 28, 28), "float32", "nchw"),
    ("bn2d_relu_nchw_bf16", "BatchNorm2d+ReLU", "bn2d", (16, 64, 28, 28), "bfloat16", "nchw"),
    ("bn2d_relu_cl_7x7_bf16", "BatchNorm2d+ReLU", "bn2d", (32, 256, 7, 7), "bfloat16", "channels_last"),
    ("bn1d_nc_fp32", "BatchNorm1d", "bn1d", (1024, 256), "float32", "nc"),
    ("layernorm_gelu_bf16", "LayerNorm+GELU", "ln", (16, 64, 768), "bfloat16", "rows"),
    ("rmsnorm_bf16", "RMSNorm", "rms", (16, 64, 1024), "bfloat16", "rows"),
    ("groupnorm32_silu_cl_bf16", "GroupNorm(32)+SiLU", "gn", (8, 128, 16, 16), "bfloat16", "channels_last"),
    ("instancenorm2d_bf16", "InstanceNorm2d", "in2d", (8, 64, 32, 32), "bfloat16", "nchw"),
]

# ATen ops that launch no kernel on CUDA: allocation, views, metadata.
NO_KERNEL = {
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::view",
    "aten::_reshape_alias",
    "aten::as_strided",
    "aten::expand",
    "aten::permute",
    "aten::squeeze",
    "aten::unsqueeze",
    "aten::select",
    "aten::slice",
    "aten::t",
    "aten::transpose",
    "aten::alias",
    "aten::detach",
    "aten::_unsafe_view",
    "aten::resize_",
    "aten::lift_fresh",
    "aten::result_type",
    "aten::size",
    "aten::stride",
    "aten::is_nonzero",
}
# Ops whose work is done by the ops they call (each counted there).
WRAPPERS = {
    "aten::reshape",
    "aten::expand_as",
    "aten::contiguous",
    "aten::to",
    "aten::_to_copy",
    "aten::clone",
    "aten::zeros",
    "aten::zeros_like",
    "aten::ones",
    "aten::ones_like",
    "aten::full",
    "aten::full_like",
    "aten::square",
    "aten::square_",
    "aten::type_as",
    "aten::view_as",
    "aten::reshape_as",
    "aten::flatten",
    "aten::sum_to_size",
    "aten::new_zeros",
    "aten::new_empty",
}
REDUCTIONS = {"aten::sum", "aten::mean", "aten::amax", "aten::amin", "aten::prod", "aten::var", "aten::std"}
WRITE_ONLY = {"aten::fill_", "aten::zero_", "aten::normal_", "aten::uniform_"}
ELEMENT_BYTES = {
    "float": 4,
    "double": 8,
    "c10::Half": 2,
    "c10::BFloat16": 2,
    "long int": 8,
    "int": 4,
    "bool": 1,
    "unsigned char": 1,
    "signed char": 1,
    "short int": 2,
}


def load(lib_path):
    # This checkout's fusednorm, whose library the plugin links against (not
    # another checkout an editable install may point at).
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import torch

    import fusednorm  # noqa: F401  (loads fusednorm's library first)

    lib = ctypes.CDLL(os.path.abspath(lib_path), mode=ctypes.RTLD_GLOBAL)
    lib.emu_take_launch_log.restype = ctypes.c_char_p
    assert lib.emu_installed() == 1
    return torch, lib


def make_case(torch, kind, shape, dtype, layout):
    import fusednorm

    dt = getattr(torch, dtype)
    C = shape[1] if kind != "ln" and kind != "rms" else shape[-1]
    param_dtype = torch.float32
    if kind == "bn2d":
        module = fusednorm.nn.BatchNorm2d(C, activation="relu")
    elif kind == "bn1d":
        module = fusednorm.nn.BatchNorm1d(C)
    elif kind == "ln":
        module = fusednorm.nn.LayerNorm(C, activation="gelu")
    elif kind == "rms":
        module = fusednorm.nn.RMSNorm(C)
    elif kind == "gn":
        module = fusednorm.nn.GroupNorm(32, C, activation="silu")
    elif kind == "in2d":
        module = fusednorm.nn.InstanceNorm2d(C, affine=True)
    else:
        raise ValueError(kind)
    module = module.to(param_dtype).train()
    x = torch.randn(shape).to(dt)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    return module, x


def tensor_bytes(shape, strides, dtype):
    if not shape:
        return 0  # 0-d: a scalar, a kernel argument on CUDA
    size = ELEMENT_BYTES.get(dtype, 4)
    n = 1
    for i, s in enumerate(shape):
        if strides is None or i >= len(strides) or strides[i] != 0:
            n *= s
    return n * size


def op_bytes(e):
    """(read, written) estimate of one counted ATen op from its recorded inputs."""
    shapes, dtypes = e.input_shapes or [], e.input_dtypes or []
    strides = getattr(e, "structured_input_strides", None) or [None] * len(shapes)
    tensors = [
        (sh, st, dt)
        for sh, st, dt in zip(shapes, strides, dtypes)
        if isinstance(sh, list) and sh and dt in ELEMENT_BYTES
    ]
    if not tensors:
        return 0, 0
    reads = [tensor_bytes(sh, st, dt) for sh, st, dt in tensors]
    first_shape, _, first_dtype = tensors[0]
    if e.name in WRITE_ONLY:
        return 0, reads[0]
    if e.name.endswith("_") or e.name == "aten::copy_":
        # In place: the updated tensor is written (copy_ only writes it).
        read = sum(reads[1:]) if e.name == "aten::copy_" else sum(reads)
        return read, tensor_bytes(first_shape, None, first_dtype)
    if e.name in REDUCTIONS:
        concrete = e.concrete_inputs or []
        dims = concrete[1] if len(concrete) > 1 and isinstance(concrete[1], list) else None
        n = math.prod(first_shape)
        if dims:
            for d in dims:
                n //= first_shape[d]
        else:
            n = 1
        return sum(reads), n * ELEMENT_BYTES.get(first_dtype, 4)
    # Elementwise: the broadcast shape of the inputs.
    rank = max(len(sh) for sh, _, _ in tensors)
    out = [1] * rank
    for sh, _, _ in tensors:
        for i, s in enumerate(sh[::-1]):
            out[rank - 1 - i] = max(out[rank - 1 - i], s)
    return sum(reads), math.prod(out) * ELEMENT_BYTES.get(first_dtype, 4)


def counted_ops(event):
    """The ATen ops under `event` that launch a kernel on CUDA."""
    out = []
    for c in event.cpu_children:
        if c.name in NO_KERNEL:
            continue
        if c.name in WRAPPERS or not c.name.startswith("aten::"):
            out += counted_ops(c)
            continue
        shapes = [s for s in (c.input_shapes or []) if isinstance(s, list)]
        if shapes and all(len(s) == 0 for s in shapes):
            continue  # arithmetic on 0-d CPU scalars
        out.append(c)
    return out


def fused_events(prof):
    """The fusednorm op calls of a profile (forward op or _backward op), outermost ones."""
    found = []
    for e in prof.events():
        if e.name.startswith("fusednorm::"):
            p = e.cpu_parent
            while p is not None and not p.name.startswith("fusednorm::"):
                p = p.cpu_parent
            if p is None:
                found.append(e)
    return found


def run_pass(torch, lib, fn):
    from torch.profiler import ProfilerActivity, profile

    lib.emu_take_launch_log()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        result = fn()
    launches = json.loads(lib.emu_take_launch_log().decode())
    ops = [op for e in fused_events(prof) for op in counted_ops(e)]
    return result, launches, ops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True, help="build/emu/libfusednorm_emu.so")
    ap.add_argument("--out", required=True, help="output directory (build/traffic)")
    ap.add_argument("--cuda-dir", default="csrc/cuda")
    ap.add_argument("--no-ptxas", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    registers_csv = os.path.join(args.out, "registers.csv")
    if not args.no_ptxas:
        rc = subprocess.call(
            [sys.executable, os.path.join(HERE, "ptxas_report.py"), "--cuda-dir", args.cuda_dir, "--out", registers_csv]
        )
        if rc == 2:
            print("traffic_report: no nvcc: occupancy from the emulator's default of 32 registers", file=sys.stderr)
        elif rc != 0:
            return rc
    if os.path.exists(registers_csv):
        os.environ["EMU_PTXAS_CSV"] = os.path.abspath(registers_csv)  # read at the first launch
    os.environ.setdefault("EMU_SM_COUNT", "132")
    torch, lib = load(args.lib)
    lib.emu_set_launch_log(1)
    torch.manual_seed(0)

    rows, details = [], []
    t0 = time.time()
    for case, op, kind, shape, dtype, layout in CASES:
        module, x = make_case(torch, kind, shape, dtype, layout)
        numel = x.numel()
        elsize = x.element_size()
        out, fwd_launches, fwd_ops = run_pass(torch, lib, lambda m=module, t=x: m(t))
        grad = torch.randn_like(out)
        _, bwd_launches, bwd_ops = run_pass(torch, lib, lambda o=out, g=grad: o.backward(g))
        for pass_name, launches, ops, min_bytes in (
            ("fwd", fwd_launches, fwd_ops, 2 * elsize),
            ("bwd", bwd_launches, bwd_ops, 3 * elsize),
        ):
            failed = [k for k in launches if k["error"] != 0 or k["findings"] != 0]
            if failed:
                print(f"traffic_report: {case} {pass_name}: launch failed: {failed}", file=sys.stderr)
                return 1
            # The distinct bytes each kernel reads and writes (see the module docstring).
            kernel_bytes = sum(k["unique_bytes_read"] + k["unique_bytes_written"] for k in launches)
            aten_bytes = 0
            for k in launches:
                details.append(
                    dict(
                        case=case,
                        pass_=pass_name,
                        kind="kernel",
                        name=k["kernel"],
                        config=f"grid {tuple(k['grid'])} block {tuple(k['block'])}",
                        bytes_read=k["unique_bytes_read"],
                        bytes_written=k["unique_bytes_written"],
                        requested_bytes=k["bytes_read"] + k["bytes_written"],
                        sector_bytes=32 * k["sectors"],
                        requests=k["requests"],
                        sectors=k["sectors"],
                        ideal_sectors=k["ideal_sectors"],
                        registers=k["registers"],
                        static_shared=k["static_shared"],
                    )
                )
            for e in ops:
                r, w = op_bytes(e)
                aten_bytes += r + w
                details.append(
                    dict(
                        case=case,
                        pass_=pass_name,
                        kind="aten",
                        name=e.name,
                        config=" ".join(str(s) for s in e.input_shapes),
                        bytes_read=r,
                        bytes_written=w,
                        requested_bytes="",
                        sector_bytes="",
                        requests="",
                        sectors="",
                        ideal_sectors="",
                        registers="",
                        static_shared="",
                    )
                )
            sectors = sum(k["sectors"] for k in launches)
            ideal = sum(k["ideal_sectors"] for k in launches)
            rows.append(
                dict(
                    case=case,
                    op=op,
                    shape="x".join(str(s) for s in shape),
                    dtype=dtype,
                    layout=layout,
                    **{"pass": pass_name},
                    launches=len(launches) + len(ops),
                    bytes_per_element=f"{(kernel_bytes + aten_bytes) / numel:.3f}",
                    min_bytes_per_element=f"{min_bytes:.3f}",
                    sector_efficiency=f"{ideal / sectors:.3f}" if sectors else "",
                )
            )
            print(
                f"  {case:28} {pass_name}: {len(launches)} kernels + {len(ops)} ATen ops, "
                f"{kernel_bytes / numel:.2f} + {aten_bytes / numel:.2f} B/elem (min {min_bytes}), "
                f"requested {sum(k['bytes_read'] + k['bytes_written'] for k in launches) / numel:.2f}, "
                f"sectors {32 * sum(k['sectors'] for k in launches) / numel:.2f}, "
                f"sectors {ideal}/{sectors}",
                file=sys.stderr,
                flush=True,
            )
    columns = [
        "case",
        "op",
        "shape",
        "dtype",
        "layout",
        "pass",
        "launches",
        "bytes_per_element",
        "min_bytes_per_element",
        "sector_efficiency",
    ]
    with open(os.path.join(args.out, "traffic.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    detail_columns = list(details[0].keys())
    with open(os.path.join(args.out, "launches.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=detail_columns)
        w.writeheader()
        w.writerows(details)
    # Cross-check: the emulator's static shared memory (from the symbol table)
    # against ptxas's, for every kernel the report launched.
    if os.path.exists(registers_csv):
        ptxas = {r["kernel"]: r for r in csv.DictReader(open(registers_csv))}
        for d in details:
            if d["kind"] == "kernel" and d["name"] in ptxas:
                want = int(ptxas[d["name"]]["shared_bytes"])
                if int(d["static_shared"]) != want:
                    print(
                        f"traffic_report: {d['name']}: emulator counts {d['static_shared']} bytes of static shared "
                        f"memory, ptxas {want}",
                        file=sys.stderr,
                    )
                    return 1
    print(f"traffic_report: {os.path.join(args.out, 'traffic.csv')} ({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
