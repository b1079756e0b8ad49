"""python -m fusednorm.demo, one short epoch on a subset of the digits: it writes
its table, results and PNG, and the converted model learns what the torch.nn one
does: exactly in float64; in float32 until the large learning rate has amplified
rounding (the demo's default run drifts apart after some ten steps, as torch.nn
does against itself with another thread count)."""

import json
import os

import pytest
import torch

from fusednorm import demo


def run_demo(out, device, bn_position, dtype):
    return demo.main(
        [
            "--dtype",
            dtype,
            "--epochs",
            "1",
            "--subset",
            "256",
            "--batch-size",
            "32",
            "--device",
            device,
            "--bn-position",
            bn_position,
            "--out",
            str(out),
            "--no-progress",
        ]
    )


@pytest.mark.parametrize("bn_position", ["before", "after"])
def test_demo_short_run(tmp_path, device, bn_position, capsys):
    out = tmp_path / "demo"
    results = run_demo(out, device, bn_position, "float64")
    printed = capsys.readouterr().out
    assert "torch.nn" in printed and "fusednorm.convert" in printed and "peak memory" in printed
    assert (out / "demo_table.txt").read_text().count("\n") > 5
    with open(out / "demo_curves.png", "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(out / "demo_curves.png") > 10_000
    saved = json.loads((out / "demo_results.json").read_text())
    reference, converted = saved["runs"]
    assert [reference["name"], converted["name"]] == ["torch.nn", "fusednorm.convert"]
    assert len(reference["step_losses"]) == 256 // 32
    # Before the sigmoid, all four norms take it; after it, they are swapped but have nothing to fuse.
    expected_fused = "4 fused with an activation" if bn_position == "before" else "0 fused with an activation"
    assert expected_fused in saved["report"]
    # Same seed, same initial weights, same batches: the same learning, up to float64 rounding.
    torch.testing.assert_close(
        torch.tensor(converted["step_losses"]), torch.tensor(reference["step_losses"]), rtol=1e-9, atol=1e-12
    )
    assert converted["test_accuracy"] == reference["test_accuracy"]
    assert converted["train_accuracy"] == reference["train_accuracy"]
    assert reference["peak_memory_bytes"] > 0 and converted["peak_memory_bytes"] > 0
    assert results["runs"][0]["epoch_seconds"][0] > 0


def test_demo_float32_starts_out_the_same(tmp_path, device):
    saved = run_demo(tmp_path / "demo", device, "before", "float32")
    reference, converted = saved["runs"]
    # The first steps, before the learning rate amplifies rounding differences.
    torch.testing.assert_close(
        torch.tensor(converted["step_losses"][:3]), torch.tensor(reference["step_losses"][:3]), rtol=1e-4, atol=1e-6
    )
    assert os.path.exists(tmp_path / "demo" / "demo_curves.png")


def test_lenet_matches_the_chapter_layout():
    model = demo.build_lenet("before")
    kinds = [type(m).__name__ for m in model]
    assert kinds[:3] == ["Conv2d", "BatchNorm2d", "Sigmoid"]
    assert demo.build_lenet("after")[1].__class__.__name__ == "Sigmoid"
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
