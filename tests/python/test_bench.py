"""The benchmark's machinery (python -m fusednorm.bench) on tiny CPU cases: the
traffic models, the case list, and that one run yields the live rows, the final
table, the CSV, the markdown table and the plot. No timing is asserted."""

import csv
import importlib.util
import io

import pytest
import torch

import fusednorm
from fusednorm import bench

TINY_BN = bench.Case("bn2d", "relu", (2, 4, 6, 6), "fp32", "nchw", False, "fwd+bwd")

# Columns the issue asks for, by the names the CSV gives them.
REQUIRED_COLUMNS = [
    "case",
    "traffic_model",
    "fused_ms",
    "eager_ms",
    "compile_ms",
    "speedup_vs_eager",
    "speedup_vs_compile",
    "fused_GBps",
    "copy_GBps",
    "fused_pct_of_limit",
    "fused_peak_MiB",
    "eager_peak_MiB",
    "compile_peak_MiB",
    "status",
]


def run(cases, tmp_path, use_compile=False):
    out = io.StringIO()
    rows = bench.run_cases(
        cases, torch.device("cpu"), use_compile=use_compile, min_run_time=0.001, out_dir=str(tmp_path), stream=out
    )
    return rows, out.getvalue()


def read_csv(tmp_path):
    with open(tmp_path / "results.csv", newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_traffic_models_are_the_issues():
    # Two-pass statistics norms move 3N forward and 8N forward+backward, row norms
    # 2N and 5N (N = bytes of the input); a residual is read (and its gradient
    # written) on top.
    n_bytes = 2 * 4 * 6 * 6 * 4
    bn = {mode: bench.Case("bn2d", "relu", (2, 4, 6, 6), "fp32", "nchw", False, mode) for mode in bench.MODES}
    assert bn["fwd"].model_bytes() == 3 * n_bytes
    assert bn["fwd+bwd"].model_bytes() == 8 * n_bytes
    ln = {mode: bench.Case("ln", "gelu", (8, 16), "bf16", "rows", False, mode) for mode in bench.MODES}
    assert ln["fwd"].model_bytes() == 2 * 8 * 16 * 2
    assert ln["fwd+bwd"].model_bytes() == 5 * 8 * 16 * 2
    residual = bench.Case("bn2d", "relu", (2, 4, 6, 6), "fp32", "nchw", True, "fwd")
    assert residual.model_bytes() == 4 * n_bytes
    assert bench.NORMS["gn32"].model == bench.NORMS["in2d"].model == bench.TWO_PASS
    assert bench.NORMS["rms"].model == bench.ROW


def test_full_case_list_covers_the_issue():
    cases = bench.define_cases(quick=False)
    names = {c.name for c in cases}
    for shape in ("256x64x56x56", "256x256x56x56", "256x2048x7x7"):
        for dtype in ("fp32", "bf16"):
            for layout in ("nchw", "cl"):
                for mode in bench.MODES:
                    assert f"bn2d+relu {shape} {dtype} {layout} {mode}" in names
    for norm, act in (("ln", "gelu"), ("rms", "silu")):
        for shape in ("8192x4096", "32768x1024"):
            assert f"{norm}+{act} {shape} bf16 fwd+bwd" in names
    assert "gn32+silu 32x256x64x64 bf16 cl fwd" in names
    assert "in2d 32x64x128x128 fp32 nchw fwd+bwd" in names
    # With and without residual for one batch-norm and one layer-norm case.
    assert "bn2d+relu 256x64x56x56 bf16 cl +res fwd+bwd" in names
    assert "ln+gelu 8192x4096 fp32 +res fwd" in names
    # Every norm family has a --quick counterpart.
    assert {c.norm for c in bench.define_cases(quick=True)} == set(bench.NORMS)


def test_headline_cases_are_the_gpu_checks_list():
    cases = bench.headline_cases()
    assert len(cases) == 2 * len(bench.HEADLINE) and {c.dtype for c in cases} == {"bf16"}
    names = [c.name for c in cases]
    assert names[:2] == ["bn2d+relu 256x64x56x56 bf16 cl fwd", "bn2d+relu 256x64x56x56 bf16 cl fwd+bwd"]
    assert "bn1d+relu 8192x1024 bf16 fwd+bwd" in names and "ln+gelu 8192x4096 bf16 fwd" in names


def test_time_budget_stops_starting_cases(tmp_path):
    cases = bench.select_cases(bench.define_cases(quick=True, dtypes=["fp32"]), ["bn1d"])
    out = io.StringIO()
    rows = bench.run_cases(
        cases,
        torch.device("cpu"),
        use_compile=False,
        min_run_time=0.001,
        out_dir=str(tmp_path),
        stream=out,
        time_budget=0.0,
    )
    assert len(rows) == 1 < len(cases)
    assert f"{len(cases) - 1} cases not run" in out.getvalue()


def test_case_filters():
    quick = bench.define_cases(quick=True)
    selected = bench.select_cases(quick, ["gn32", "in2d"])
    assert selected and all(("gn32" in c.name) or ("in2d" in c.name) for c in selected)
    assert len(bench.define_cases(quick=True, dtypes=["bf16"])) * 2 == len(quick)


def test_list_flag_prints_the_selected_cases(capsys):
    assert bench.main(["--quick", "--list", "--case", "ln+gelu", "--dtype", "bf16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith("ln+gelu") and " bf16 " in line for line in lines)


def test_one_case_gives_rows_table_csv_markdown_and_plot(tmp_path):
    rows, printed = run([TINY_BN], tmp_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok"
    for key in ("fused_ms", "eager_ms", "copy_ms", "fused_GBps", "copy_GBps", "fused_pct_of_limit"):
        assert row[key] > 0, key
    assert row["speedup_vs_eager"] == pytest.approx(row["eager_ms"] / row["fused_ms"])
    assert row["compile_ms"] is None  # not asked for
    # Forward+backward keeps at least its outputs: y and the input gradient.
    one_tensor_mib = 2 * 4 * 6 * 6 * 4 / 2**20
    assert row["fused_peak_MiB"] >= 2 * one_tensor_mib
    assert row["eager_peak_MiB"] >= 2 * one_tensor_mib
    # The fused op matches the eager composite it is timed against.
    assert row["max_abs_diff"] < 1e-4

    # Live row, then the final table (the row again), the model legend and the summary.
    assert printed.count(TINY_BN.name) == 2
    assert "two-pass statistics (BatchNorm2d" in printed and "3N forward, 8N forward+backward" in printed
    assert "row (LayerNorm, RMSNorm): 2N forward, 5N forward+backward" in printed
    header = bench.table_header()
    for title in ("fused ms", "eager ms", "compile ms", "x eager", "x compile", "GB/s", "%limit", "peak MiB"):
        assert title in header
    assert header in printed

    fieldnames, records = read_csv(tmp_path)
    assert fieldnames == bench.CSV_COLUMNS
    assert set(REQUIRED_COLUMNS) <= set(fieldnames)
    assert records[0]["case"] == TINY_BN.name and records[0]["traffic_model"] == bench.TWO_PASS
    assert float(records[0]["fused_ms"]) > 0
    markdown = (tmp_path / "results.md").read_text()
    assert TINY_BN.name in markdown and "x compile" in markdown
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "speedup.png").stat().st_size > 0


def test_missing_fused_function_is_a_not_available_row(tmp_path, monkeypatch):
    monkeypatch.delattr(fusednorm.functional, "batch_norm")
    rows, printed = run([TINY_BN], tmp_path)
    assert rows[0]["status"].startswith("not available")
    assert rows[0]["fused_ms"] is None and rows[0]["eager_ms"] > 0
    assert "not available" in printed
    _, records = read_csv(tmp_path)
    assert records[0]["case"] == TINY_BN.name and records[0]["status"].startswith("not available")


def test_compiled_composite_is_timed(tmp_path):
    case = bench.Case("bn2d", "relu", (2, 4, 6, 6), "fp32", "cl", False, "fwd")
    rows, _ = run([case], tmp_path, use_compile=True)
    assert rows[0]["status"] == "ok"
    assert rows[0]["compile_ms"] > 0 and rows[0]["speedup_vs_compile"] > 0
