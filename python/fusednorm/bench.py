"""Benchmark of fusednorm's fused ops against PyTorch: ``python -m fusednorm.bench`` (``make bench``).

Every case is one norm + activation (+ residual) on one shape, dtype and memory
layout, forward or forward+backward. For each it times

* the fused op (``fusednorm.functional.<norm>``),
* the same computation composed from PyTorch ops (norm, ``+ residual``, activation): "eager",
* that composite under ``torch.compile(fullgraph=True)``: "compile",
* a plain device copy of the input, in the same run, as the bandwidth yardstick,

and reports times, speedups, achieved bandwidth under a traffic model, the share
of the traffic limit, and the peak extra memory of forward+backward.

Timing. GPU: CUDA events around every call, the L2 cache flushed (a 256 MiB
buffer zeroed) before each call, warm-up first, median over many calls (the
method of ``triton.testing.do_bench``). CPU: ``torch.utils.benchmark.Timer``'s
``blocked_autorange``, median.

Traffic model (N = bytes of one input-sized tensor): the fewest bytes an
implementation must move. Norms whose statistics need their own pass over the
input (batch, group, instance norm: "two-pass statistics") move 3N forward (read
for statistics, read + write to normalize) and 8N forward+backward (+ read x, dy
for the gradient sums, read x, dy and write dx); norms of rows that fit on chip
(layer norm, RMS norm: "row") move 2N and 5N. A residual adds 1N forward and, for
forward+backward, 4N (two-pass) or 3N (row): it is read wherever the
pre-activation is recomputed, and its gradient is written. ``GB/s`` is the
model's bytes over the measured time; ``% of limit`` is that bandwidth as a
share of the plain copy's in the same run, i.e. the time the model's bytes take
at copy speed over the measured time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime
import math
import os
import platform
import re
import sys
import time
from collections.abc import Sequence
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import fusednorm

TWO_PASS = "two-pass statistics"
ROW = "row"
# Bytes moved, in units of N, per traffic model and mode; and what a residual adds.
TRAFFIC = {TWO_PASS: {"fwd": 3, "fwd+bwd": 8}, ROW: {"fwd": 2, "fwd+bwd": 5}}
RESIDUAL_TRAFFIC = {TWO_PASS: {"fwd": 1, "fwd+bwd": 4}, ROW: {"fwd": 1, "fwd+bwd": 3}}
MODES = ("fwd", "fwd+bwd")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
EPS = 1e-5
L2_FLUSH_BYTES = 256 * 2**20

ACTIVATIONS: dict[str, Callable] = {
    "identity": lambda z: z,
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
}

CSV_COLUMNS = [
    "case",
    "norm",
    "activation",
    "shape",
    "dtype",
    "layout",
    "residual",
    "mode",
    "traffic_model",
    "model_bytes",
    "fused_ms",
    "eager_ms",
    "compile_ms",
    "copy_ms",
    "speedup_vs_eager",
    "speedup_vs_compile",
    "fused_GBps",
    "eager_GBps",
    "compile_GBps",
    "copy_GBps",
    "fused_pct_of_limit",
    "eager_pct_of_limit",
    "compile_pct_of_limit",
    "fused_peak_MiB",
    "eager_peak_MiB",
    "compile_peak_MiB",
    "max_abs_diff",
    "status",
    "device",
    "torch",
]


# --------------------------------------------------------------------------- norms


@dataclasses.dataclass(frozen=True)
class Norm:
    """One norm family: how to build its parameters, the fused call and the PyTorch composite."""

    key: str  # short name used in case names (and by --case)
    label: str
    fused_name: str  # function in fusednorm.functional
    model: str  # traffic model
    spatial: bool  # (N, C, *spatial) input with NCHW / channels_last variants; else rows
    # (x) -> (parameters that get gradients, fused(x, res, act), composite(x, res, act_fn))
    build: Callable


def _param(size, dtype, device, fill):
    return fill(torch.empty(size, dtype=torch.float32, device=device)).to(dtype)


def _affine(size, x):
    weight = _param(size, x.dtype, x.device, lambda t: t.uniform_(0.5, 1.5))
    bias = _param(size, x.dtype, x.device, lambda t: t.normal_(0.0, 0.1))
    return weight, bias


def _build_batch_norm(x):
    C = x.shape[1]
    weight, bias = _affine(C, x)

    def stats():
        return torch.zeros(C, dtype=x.dtype, device=x.device), torch.ones(C, dtype=x.dtype, device=x.device)

    fused_stats, eager_stats = stats(), stats()

    def fused(x, res, act):
        return fused_function("batch_norm")(x, *fused_stats, weight, bias, True, 0.1, EPS, activation=act, residual=res)

    def composite(x, res, act_fn):
        return act_fn(_add(F.batch_norm(x, *eager_stats, weight, bias, True, 0.1, EPS), res))

    return [weight, bias], fused, composite


def _build_layer_norm(x):
    shape = (x.shape[-1],)
    weight, bias = _affine(shape, x)

    def fused(x, res, act):
        return fused_function("layer_norm")(x, shape, weight, bias, EPS, activation=act, residual=res)

    def composite(x, res, act_fn):
        return act_fn(_add(F.layer_norm(x, shape, weight, bias, EPS), res))

    return [weight, bias], fused, composite


def _build_rms_norm(x):
    shape = (x.shape[-1],)
    weight, _ = _affine(shape, x)

    def fused(x, res, act):
        return fused_function("rms_norm")(x, shape, weight, EPS, activation=act, residual=res)

    def composite(x, res, act_fn):
        return act_fn(_add(F.rms_norm(x, shape, weight, EPS), res))

    return [weight], fused, composite


GROUPS = 32


def _build_group_norm(x):
    weight, bias = _affine(x.shape[1], x)

    def fused(x, res, act):
        return fused_function("group_norm")(x, GROUPS, weight, bias, EPS, activation=act, residual=res)

    def composite(x, res, act_fn):
        return act_fn(_add(F.group_norm(x, GROUPS, weight, bias, EPS), res))

    return [weight, bias], fused, composite


def _build_instance_norm(x):
    # nn.InstanceNorm2d's defaults: no affine parameters, no running statistics.
    def fused(x, res, act):
        return fused_function("instance_norm")(x, None, None, None, None, True, 0.1, EPS, activation=act, residual=res)

    def composite(x, res, act_fn):
        return act_fn(_add(F.instance_norm(x, None, None, None, None, True, 0.1, EPS), res))

    return [], fused, composite


def _add(z, res):
    return z if res is None else z + res


NORMS = {
    norm.key: norm
    for norm in (
        Norm("bn2d", "BatchNorm2d", "batch_norm", TWO_PASS, True, _build_batch_norm),
        Norm("bn1d", "BatchNorm1d", "batch_norm", TWO_PASS, False, _build_batch_norm),
        Norm("ln", "LayerNorm", "layer_norm", ROW, False, _build_layer_norm),
        Norm("rms", "RMSNorm", "rms_norm", ROW, False, _build_rms_norm),
        Norm("gn32", "GroupNorm(32)", "group_norm", TWO_PASS, True, _build_group_norm),
        Norm("in2d", "InstanceNorm2d", "instance_norm", TWO_PASS, True, _build_instance_norm),
    )
}


class FusedUnavailable(Exception):
    """The fused function of a case does not exist (yet) in fusednorm.functional."""


def fused_function(name: str) -> Callable:
    fn = getattr(fusednorm.functional, name, None)
    if fn is None:
        raise FusedUnavailable(f"fusednorm.functional.{name} does not exist yet")
    return fn


# --------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    norm: str  # key of NORMS
    activation: str  # key of ACTIVATIONS
    shape: tuple
    dtype: str  # key of DTYPES
    layout: str  # "nchw", "cl" (channels_last) or "rows"
    residual: bool
    mode: str  # "fwd" or "fwd+bwd"

    @property
    def name(self) -> str:
        act = "" if self.activation == "identity" else "+" + self.activation
        layout = "" if self.layout == "rows" else " " + self.layout
        res = " +res" if self.residual else ""
        return f"{self.norm}{act} {'x'.join(map(str, self.shape))} {self.dtype}{layout}{res} {self.mode}"

    @property
    def traffic_model(self) -> str:
        return NORMS[self.norm].model

    def model_bytes(self) -> int:
        n_bytes = math.prod(self.shape) * DTYPES[self.dtype].itemsize
        units = TRAFFIC[self.traffic_model][self.mode]
        if self.residual:
            units += RESIDUAL_TRAFFIC[self.traffic_model][self.mode]
        return units * n_bytes


# (norm, activation, shapes, residual variants) per case family; every family
# runs in each dtype, layout (spatial norms: NCHW and channels_last) and mode.
FULL_FAMILIES = [
    ("bn2d", "relu", [(256, 64, 56, 56), (256, 256, 56, 56), (256, 2048, 7, 7)], (False,)),
    ("bn2d", "relu", [(256, 64, 56, 56)], (True,)),
    ("bn2d", "identity", [(256, 64, 56, 56)], (False,)),
    ("bn1d", "relu", [(8192, 1024)], (False,)),
    ("ln", "gelu", [(8192, 4096), (32768, 1024)], (False,)),
    ("ln", "gelu", [(8192, 4096)], (True,)),
    ("rms", "silu", [(8192, 4096), (32768, 1024)], (False,)),
    ("gn32", "silu", [(32, 256, 64, 64)], (False,)),
    ("in2d", "identity", [(32, 64, 128, 128)], (False,)),
]
# The same families at CPU sizes (about 1M elements each).
QUICK_FAMILIES = [
    ("bn2d", "relu", [(8, 64, 56, 56), (32, 512, 7, 7)], (False,)),
    ("bn2d", "relu", [(8, 64, 56, 56)], (True,)),
    ("bn2d", "identity", [(8, 64, 56, 56)], (False,)),
    ("bn1d", "relu", [(4096, 256)], (False,)),
    ("ln", "gelu", [(1024, 1024)], (False,)),
    ("ln", "gelu", [(1024, 1024)], (True,)),
    ("rms", "silu", [(1024, 1024)], (False,)),
    ("gn32", "silu", [(8, 128, 32, 32)], (False,)),
    ("in2d", "identity", [(8, 32, 64, 64)], (False,)),
]


# What `make gpu-check` measures in its short GPU window (--headline): bf16, one case
# per design risk of the CUDA kernels (layouts, 7x7 planes, (N, C) input, long rows,
# groups), most telling first, each forward and forward+backward.
HEADLINE = [
    ("bn2d", "relu", (256, 64, 56, 56), "cl", False),
    ("ln", "gelu", (8192, 4096), "rows", False),
    ("bn2d", "relu", (256, 64, 56, 56), "nchw", False),
    ("rms", "silu", (8192, 4096), "rows", False),
    ("gn32", "silu", (32, 256, 64, 64), "cl", False),
    ("bn2d", "relu", (256, 2048, 7, 7), "cl", False),
    ("bn1d", "relu", (8192, 1024), "rows", False),
    ("bn2d", "relu", (256, 64, 56, 56), "cl", True),
    ("in2d", "identity", (32, 64, 128, 128), "nchw", False),
]


def headline_cases(dtypes: Sequence[str] = ("bf16",)) -> list[Case]:
    return [
        Case(norm, activation, shape, dtype, layout, residual, mode)
        for norm, activation, shape, layout, residual in HEADLINE
        for dtype in dtypes
        for mode in MODES
    ]


def define_cases(quick: bool = False, dtypes: Sequence[str] = ("fp32", "bf16")) -> list[Case]:
    cases = []
    for norm, activation, shapes, residuals in QUICK_FAMILIES if quick else FULL_FAMILIES:
        layouts = ("nchw", "cl") if NORMS[norm].spatial else ("rows",)
        for shape in shapes:
            for residual in residuals:
                for dtype in dtypes:
                    for layout in layouts:
                        for mode in MODES:
                            cases.append(Case(norm, activation, shape, dtype, layout, residual, mode))
    return cases


def select_cases(cases: Sequence[Case], patterns: Optional[Sequence[str]]) -> list[Case]:
    """Cases whose name contains any of the patterns (all cases without patterns)."""
    if not patterns:
        return list(cases)
    return [c for c in cases if any(p in c.name for p in patterns)]


# --------------------------------------------------------------------------- timing and memory


class Clock:
    """Median seconds per call of fn on one device, measured as the module docstring says."""

    def __init__(self, device: torch.device, min_run_time: float):
        self.device = device
        self.min_run_time = min_run_time
        self._flush = None
        if device.type == "cuda":
            self._flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=device)

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.device.type == "cuda":
            return self._time_cuda(fn)
        return self._time_cpu(fn)

    def _time_cpu(self, fn):
        from torch.utils import benchmark

        fn()
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=self.min_run_time).median

    def _time_cuda(self, fn):
        fn()
        torch.cuda.synchronize(self.device)
        # Estimate the time of one flushed call to size warm-up and repetitions.
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            self._flush.zero_()
            fn()
        end.record()
        torch.cuda.synchronize(self.device)
        estimate = max(start.elapsed_time(end) / 5 / 1e3, 1e-6)
        for _ in range(max(1, int(0.025 / estimate))):
            fn()
        reps = max(10, min(1000, int(self.min_run_time / estimate)))
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(reps):
            self._flush.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize(self.device)
        times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
        return times[len(times) // 2] / 1e3


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak memory allocated by one call of fn beyond what was allocated before it.

    CUDA: the caching allocator's peak statistic. CPU: the allocation and free
    events of torch.profiler, replayed in time order (allocations at the start of
    the op that made them, frees at the end of the op that did them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    for event in prof.events():
        change = event.self_cpu_memory_usage
        if change > 0:
            events.append((event.time_range.start, change))
        elif change < 0:
            events.append((event.time_range.end, change))
    events.sort()
    current = peak = 0
    for _, change in events:
        current += change
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def _stderr_silenced():
    """Hides what the profiler's C++ side prints on every start and stop."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------- one case


@dataclasses.dataclass
class Result:
    case: Case
    device: str
    fused_s: Optional[float] = None
    eager_s: Optional[float] = None
    compile_s: Optional[float] = None
    copy_s: Optional[float] = None
    fused_peak: Optional[int] = None
    eager_peak: Optional[int] = None
    compile_peak: Optional[int] = None
    max_abs_diff: Optional[float] = None
    status: str = "ok"
    notes: list = dataclasses.field(default_factory=list)

    def speedup(self, other_s):
        return other_s / self.fused_s if self.fused_s and other_s else None

    def gbps(self, seconds):
        return self.case.model_bytes() / seconds / 1e9 if seconds else None

    def copy_gbps(self):
        if not self.copy_s:
            return None
        return 2 * math.prod(self.case.shape) * DTYPES[self.case.dtype].itemsize / self.copy_s / 1e9

    def pct_of_limit(self, seconds):
        achieved, copy = self.gbps(seconds), self.copy_gbps()
        return 100.0 * achieved / copy if achieved and copy else None

    def row(self) -> dict:
        c = self.case
        mib = 2.0**20
        values = {
            "case": c.name,
            "norm": NORMS[c.norm].label,
            "activation": c.activation,
            "shape": "x".join(map(str, c.shape)),
            "dtype": c.dtype,
            "layout": c.layout,
            "residual": c.residual,
            "mode": c.mode,
            "traffic_model": c.traffic_model,
            "model_bytes": c.model_bytes(),
            "fused_ms": _scaled(self.fused_s, 1e3),
            "eager_ms": _scaled(self.eager_s, 1e3),
            "compile_ms": _scaled(self.compile_s, 1e3),
            "copy_ms": _scaled(self.copy_s, 1e3),
            "speedup_vs_eager": self.speedup(self.eager_s),
            "speedup_vs_compile": self.speedup(self.compile_s),
            "fused_GBps": self.gbps(self.fused_s),
            "eager_GBps": self.gbps(self.eager_s),
            "compile_GBps": self.gbps(self.compile_s),
            "copy_GBps": self.copy_gbps(),
            "fused_pct_of_limit": self.pct_of_limit(self.fused_s),
            "eager_pct_of_limit": self.pct_of_limit(self.eager_s),
            "compile_pct_of_limit": self.pct_of_limit(self.compile_s),
            "fused_peak_MiB": _scaled(self.fused_peak, 1 / mib),
            "eager_peak_MiB": _scaled(self.eager_peak, 1 / mib),
            "compile_peak_MiB": _scaled(self.compile_peak, 1 / mib),
            "max_abs_diff": self.max_abs_diff,
            "status": "; ".join([self.status] + self.notes),
            "device": self.device,
            "torch": torch.__version__,
        }
        return {key: values[key] for key in CSV_COLUMNS}


def _scaled(value, factor):
    return None if value is None else value * factor


def _error_text(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line[:160]}"


def make_inputs(case: Case, device: torch.device):
    dtype = DTYPES[case.dtype]
    x = torch.randn(case.shape, device=device, dtype=torch.float32).mul_(2.0).add_(0.5).to(dtype)
    res = torch.randn(case.shape, device=device, dtype=dtype) if case.residual else None
    if case.layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
        res = res.contiguous(memory_format=torch.channels_last) if res is not None else None
    return x, res


def _runner(fn, x, res, params, mode, grad_out):
    """A no-argument callable doing one forward (and backward) of fn."""
    if mode == "fwd":
        return lambda: fn(x, res)
    inputs = [x] + ([res] if res is not None else []) + list(params)

    def forward_backward():
        out = fn(x, res)
        return torch.autograd.grad(out, inputs, grad_out)

    return forward_backward


def run_case(case: Case, device: torch.device, clock: Clock, use_compile: bool = True, rounds: int = 1) -> Result:
    """Times one case: fused, eager composite, compiled composite and a plain copy,
    `rounds` times in turn (median of the rounds, for machines whose load drifts)."""
    result = Result(case, _device_name(device))
    x, res = make_inputs(case, device)
    params, fused, composite = NORMS[case.norm].build(x)
    act_fn = ACTIVATIONS[case.activation]
    backward = case.mode == "fwd+bwd"
    for t in [x, res] + params:
        if t is not None:
            t.requires_grad_(backward)
    grad_out = torch.randn_like(x) if backward else None

    copy_dst = torch.empty_like(x)
    src = x.detach()

    def fused_call(x, res):
        return fused(x, res, case.activation)

    def eager_call(x, res):
        return composite(x, res, act_fn)

    eager_run = _runner(eager_call, x, res, params, case.mode, grad_out)
    with torch.no_grad():
        reference = eager_call(x, res).float()
    fused_run = None
    try:
        with torch.no_grad():
            result.max_abs_diff = (fused_call(x, res).float() - reference).abs().max().item()
        fused_run = _runner(fused_call, x, res, params, case.mode, grad_out)
        fused_run()
    except FusedUnavailable as error:
        result.status = f"not available ({error})"
        fused_run = None
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
        result.status = f"fused failed ({_error_text(error)})"
        fused_run = None

    compiled_run = None
    if use_compile:
        torch._dynamo.reset()
        compiled = torch.compile(eager_call, fullgraph=True)
        compiled_run = _runner(compiled, x, res, params, case.mode, grad_out)
        try:
            compiled_run()
        except Exception as error:  # noqa: BLE001 - any compiler failure is reported, not fatal
            result.notes.append(f"compile failed ({_error_text(error)})")
            compiled_run = None

    runs = {"copy": lambda: copy_dst.copy_(src), "eager": eager_run, "fused": fused_run, "compile": compiled_run}
    times = {name: [] for name, run in runs.items() if run is not None}
    for _ in range(rounds):
        for name in times:
            times[name].append(clock(runs[name]))
    medians = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    result.copy_s, result.eager_s = medians["copy"], medians["eager"]
    result.fused_s, result.compile_s = medians.get("fused"), medians.get("compile")

    if backward:
        result.eager_peak = peak_extra_bytes(eager_run, device)
        if fused_run is not None:
            result.fused_peak = peak_extra_bytes(fused_run, device)
        if compiled_run is not None:
            result.compile_peak = peak_extra_bytes(compiled_run, device)
    return result


# --------------------------------------------------------------------------- output

TABLE_COLUMNS = [
    ("case", "case", 44, "s"),
    ("fused_ms", "fused ms", 9, ".3f"),
    ("eager_ms", "eager ms", 9, ".3f"),
    ("compile_ms", "compile ms", 10, ".3f"),
    ("speedup_vs_eager", "x eager", 7, ".2f"),
    ("speedup_vs_compile", "x compile", 9, ".2f"),
    ("fused_GBps", "GB/s", 8, ".1f"),
    ("copy_GBps", "copy GB/s", 9, ".1f"),
    ("fused_pct_of_limit", "%limit", 6, ".0f"),
    ("eager_pct_of_limit", "eager%", 6, ".0f"),
    ("compile_pct_of_limit", "comp%", 6, ".0f"),
    ("fused_peak_MiB", "peak MiB f", 10, ".1f"),
    ("eager_peak_MiB", "e", 7, ".1f"),
    ("compile_peak_MiB", "c", 7, ".1f"),
    ("status", "status", 0, "s"),
]


def _cell(value, fmt):
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, fmt)
    return str(value)


def table_header() -> str:
    return " ".join(
        f"{title:>{width}}" if width and key != "case" else f"{title:<{width}}"
        for key, title, width, _ in TABLE_COLUMNS
    ).rstrip()


def table_line(row: dict) -> str:
    cells = []
    for key, _, width, fmt in TABLE_COLUMNS:
        text = _cell(row[key], fmt)
        cells.append(f"{text:<{width}}" if key == "case" else f"{text:>{width}}")
    return " ".join(cells).rstrip()


def traffic_legend() -> str:
    lines = ["Traffic models (N = bytes of one input-sized tensor; % limit = GB/s over the plain copy's GB/s):"]
    for model in (TWO_PASS, ROW):
        norms = ", ".join(n.label for n in NORMS.values() if n.model == model)
        fwd, both = TRAFFIC[model]["fwd"], TRAFFIC[model]["fwd+bwd"]
        rf, rb = RESIDUAL_TRAFFIC[model]["fwd"], RESIDUAL_TRAFFIC[model]["fwd+bwd"]
        lines.append(f"  {model} ({norms}): {fwd}N forward, {both}N forward+backward; a residual adds {rf}N / {rb}N")
    return "\n".join(lines)


def _geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _times(value):
    return "n/a" if value is None else f"x{value:.2f}"


def summary_lines(rows: Sequence[dict]) -> list[str]:
    lines = ["Geometric-mean speedup of the fused op (cases where it ran):"]
    groups = [
        ("norm+activation", lambda r: r["activation"] != "identity"),
        ("plain norm", lambda r: r["activation"] == "identity"),
    ]
    for group, keep in groups:
        for mode in MODES:
            sel = [r for r in rows if keep(r) and r["mode"] == mode and r["fused_ms"] is not None]
            if not sel:
                continue
            eager = _geomean([r["speedup_vs_eager"] for r in sel])
            comp = _geomean([r["speedup_vs_compile"] for r in sel])
            limit = _geomean([r["fused_pct_of_limit"] for r in sel])
            lines.append(
                f"  {group:<16} {mode:<8} {len(sel):3d} cases: {_times(eager)} vs eager, "
                f"{_times(comp)} vs compile, {_cell(limit, '.0f')}% of the traffic limit"
            )
    missing = [r for r in rows if r["fused_ms"] is None]
    if missing:
        lines.append(f"  {len(missing)} cases without a fused time (see their status)")
    return lines


def write_csv(rows: Sequence[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_markdown(rows: Sequence[dict], path: str, environment: dict) -> None:
    keys = [key for key, *_ in TABLE_COLUMNS]
    titles = [title for _, title, *_ in TABLE_COLUMNS]
    titles[titles.index("e")], titles[titles.index("c")] = "peak MiB e", "peak MiB c"
    with open(path, "w") as f:
        f.write("# fusednorm benchmark\n\n")
        for key, value in environment.items():
            f.write(f"- {key}: {value}\n")
        f.write("\n" + traffic_legend().replace("\n  ", "\n- ") + "\n\n")
        f.write("| " + " | ".join(titles) + " |\n")
        f.write("|" + "|".join("---" for _ in titles) + "|\n")
        for row in rows:
            f.write("| " + " | ".join(_cell(row[k], fmt) for k, (_, _, _, fmt) in zip(keys, TABLE_COLUMNS)) + " |\n")
        f.write("\n" + "\n".join(summary_lines(rows)).replace("\n  ", "\n- ") + "\n")


def write_plot(rows: Sequence[dict], path: str, title: str) -> Optional[str]:
    """Speedup of the fused op over eager and over torch.compile, per case. Returns
    why not, when it cannot (no matplotlib, nothing measured)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed"
    measured = [r for r in rows if r["speedup_vs_eager"] or r["speedup_vs_compile"]]
    if not measured:
        return "no case has a fused time"
    height = 1.5 + 0.28 * len(measured)
    fig, ax = plt.subplots(figsize=(10, height))
    ys = range(len(measured))
    bar = 0.38
    eager = [r["speedup_vs_eager"] or 0 for r in measured]
    comp = [r["speedup_vs_compile"] or 0 for r in measured]
    ax.barh([y - bar / 2 for y in ys], eager, height=bar, label="vs PyTorch eager", color="#4c72b0")
    ax.barh([y + bar / 2 for y in ys], comp, height=bar, label="vs torch.compile", color="#dd8452")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r["case"] for r in measured], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    # Powers of two from below the smallest to above the largest speedup, each labelled,
    # and the value written at the end of every bar.
    values = [v for v in eager + comp if v > 0]
    low = 2.0 ** math.floor(math.log2(min(values + [1.0])))
    high = 2.0 ** math.ceil(math.log2(max(values + [1.0])))
    if high / low < 4:
        low, high = low / 2, high * 2
    ticks = [low * 2.0**i for i in range(int(round(math.log2(high / low))) + 1)]
    ax.set_xlim(low, high * 1.6)
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for offset, series in ((-bar / 2, eager), (bar / 2, comp)):
        for y, value in zip(ys, series):
            if value > 0:
                ax.text(value * 1.02, y + offset, f"{value:.2f}x", va="center", fontsize=6)
    ax.set_xlabel("speedup of the fused op (higher is better; log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()}, {torch.get_num_threads()} threads"


def default_out_dir(device: torch.device) -> str:
    if device.type == "cuda":
        name = _slug(torch.cuda.get_device_name(device))
    else:
        name = f"cpu-{_slug(_cpu_model())}-{torch.get_num_threads()}t"
    return os.path.join("benchmarks", "results", name)


def environment(device: torch.device, args_line: str) -> dict:
    env = {
        "device": _device_name(device),
        "torch": torch.__version__,
        "fusednorm": fusednorm.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": args_line,
    }
    if device.type == "cpu":
        env["cpu capability"] = torch.backends.cpu.get_cpu_capability()
    else:
        env["cuda"] = torch.version.cuda
    return env


def run_cases(
    cases: Sequence[Case],
    device: torch.device,
    use_compile: bool = True,
    min_run_time: float = 0.2,
    out_dir: Optional[str] = None,
    stream=sys.stdout,
    command: str = "",
    rounds: int = 1,
    notes: Sequence[str] = (),
    time_budget: Optional[float] = None,
) -> list[dict]:
    """Runs the cases, printing a row as each finishes, then the table and summary;
    writes results.csv, results.md and speedup.png to out_dir when given. With a
    time budget (seconds), no further case starts once it is spent (the first always runs)."""
    clock = Clock(device, min_run_time)
    print(f"fusednorm benchmark on {_device_name(device)}, torch {torch.__version__}", file=stream)
    for note in notes:
        print(note, file=stream)
    print(traffic_legend(), file=stream)
    print(table_header(), file=stream, flush=True)
    rows = []
    started = time.perf_counter()
    for case in cases:
        row = run_case(case, device, clock, use_compile, rounds).row()
        rows.append(row)
        print(table_line(row), file=stream, flush=True)
        left = len(cases) - len(rows)
        if left and time_budget is not None and time.perf_counter() - started > time_budget:
            print(f"time budget of {time_budget:.0f} s spent: {left} cases not run", file=stream)
            notes = [*notes, f"time budget spent: {left} of {len(cases)} cases not run"]
            break
    print(f"\n{len(rows)} cases in {time.perf_counter() - started:.0f} s. Final table:", file=stream)
    print(table_header(), file=stream)
    for row in rows:
        print(table_line(row), file=stream)
    print("\n".join(summary_lines(rows)), file=stream)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_csv(rows, os.path.join(out_dir, "results.csv"))
        env = environment(device, command)
        if notes:
            env["notes"] = "; ".join(notes)
        write_markdown(rows, os.path.join(out_dir, "results.md"), env)
        why_not = write_plot(rows, os.path.join(out_dir, "speedup.png"), f"fusednorm on {_device_name(device)}")
        written = "results.csv, results.md" + (", speedup.png" if why_not is None else "")
        print(f"wrote {written} to {out_dir}" + (f" (no plot: {why_not})" if why_not else ""), file=stream)
    return rows


def keep_freed_memory() -> bool:
    """Asks glibc's malloc to keep freed memory for reuse (no returning it to the
    OS, no fresh mmap per large tensor), as a caching allocator would. Otherwise
    each large CPU tensor costs page faults whose number depends on what ran
    before it, which swamps the kernels being compared. True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    largest_heap_allocation = 32 * 2**20  # glibc's upper limit for M_MMAP_THRESHOLD
    return bool(libc.mallopt(m_mmap_threshold, largest_heap_allocation)) and bool(
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    )


def _parse_dtypes(text: str) -> list[str]:
    names = []
    for part in text.split(","):
        key = DTYPE_ALIASES.get(part.strip().lower(), part.strip().lower())
        if key not in DTYPES:
            raise argparse.ArgumentTypeError(f"unknown dtype {part!r}; expected some of {', '.join(DTYPES)}")
        names.append(key)
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fusednorm.bench",
        description="Fused norm+activation ops against PyTorch eager and torch.compile.",
        epilog="Case names read like 'bn2d+relu 256x64x56x56 bf16 cl +res fwd+bwd'; --case matches substrings.",
    )
    parser.add_argument("--quick", action="store_true", help="small CPU-sized shapes and short timing")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", type=_parse_dtypes, default=None, help="comma list: fp32,bf16,fp16")
    parser.add_argument("--case", action="append", help="keep cases whose name contains this (repeatable)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile composite")
    parser.add_argument("--out", default=None, help="output directory (default: benchmarks/results/<device>/)")
    parser.add_argument("--min-run-time", type=float, default=None, help="seconds per measurement")
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds of measurements per case, median taken (default: 3 on CPU)"
    )
    parser.add_argument("--headline", action="store_true", help="the GPU check's short list of cases (bf16 by default)")
    parser.add_argument("--time-budget", type=float, default=None, help="start no further case after this many seconds")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.headline:
        cases = headline_cases(args.dtype or ["bf16"])
    else:
        cases = define_cases(args.quick, args.dtype or ["fp32", "bf16"])
    cases = select_cases(cases, args.case)
    if not cases:
        parser.error("no case matches the filters")
    if args.list:
        for case in cases:
            print(f"{case.name:<48} {case.traffic_model}")
        return 0
    min_run_time = args.min_run_time
    if min_run_time is None:
        min_run_time = 0.03 if args.quick else 0.1 if args.headline else 0.25
    rounds = args.repeats if args.repeats is not None else (3 if device.type == "cpu" else 1)
    malloc_note = None
    if device.type == "cpu" and keep_freed_memory():
        malloc_note = "glibc malloc keeps freed memory (mallopt M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 2 GiB)"
    command = "python -m fusednorm.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    run_cases(
        cases,
        device,
        use_compile=not args.no_compile,
        min_run_time=min_run_time,
        out_dir=args.out or default_out_dir(device),
        command=command.strip(),
        rounds=rounds,
        notes=[malloc_note] if malloc_note else [],
        time_budget=args.time_budget,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
