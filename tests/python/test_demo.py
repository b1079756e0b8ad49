"""python -m fusednorm.demo, one short epoch on a subset of the digits: it writes
its table, results and PNG, and the converted model learns exactly what the
torch.nn one does."""

import json
import os

import pytest
import torch

from fusednorm import demo


@pytest.mark.parametrize("bn_position", ["before", "after"])
def test_demo_short_run(tmp_path, device, bn_position, capsys):
    out = tmp_path / "demo"
    results = demo.main(
        [
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
    # Same seed, same initial weights, same batches: the same learning, up to float rounding.
    torch.testing.assert_close(
        torch.tensor(converted["step_losses"]), torch.tensor(reference["step_losses"]), rtol=1e-4, atol=1e-5
    )
    assert converted["test_accuracy"] == reference["test_accuracy"]
    assert converted["train_accuracy"] == reference["train_accuracy"]
    assert reference["peak_memory_bytes"] > 0 and converted["peak_memory_bytes"] > 0
    assert results["runs"][0]["epoch_seconds"][0] > 0


def test_lenet_matches_the_chapter_layout():
    model = demo.build_lenet("before")
    kinds = [type(m).__name__ for m in model]
    assert kinds[:3] == ["Conv2d", "BatchNorm2d", "Sigmoid"]
    assert demo.build_lenet("after")[1].__class__.__name__ == "Sigmoid"
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
