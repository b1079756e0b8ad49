"""The d2l batch-norm chapter's experiment, twice: LeNet with batch norm,
sigmoid activations and a large learning rate, trained on scikit-learn's
bundled handwritten digits (8x8 images, no download), once with torch.nn layers
and once after ``fusednorm.convert`` (same seed, same initial weights, same
batches). Prints a side-by-side table (loss, accuracy and time per epoch, peak
memory of a training step) and saves loss/accuracy curves as a PNG.

    python -m fusednorm.demo [--epochs 10] [--device cpu|cuda] [--bn-position before|after]

``--bn-position`` is the chapter's open question: batch norm between the
affine layer and the activation (the original paper, and the chapter) or after
the activation. Only "before" lets fusednorm fuse the sigmoid into the norm.
Needs scikit-learn, matplotlib and tqdm (requirements-demo.txt; ``make demo``
installs them).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

import fusednorm


def build_lenet(bn_position: str = "before") -> nn.Sequential:
    """d2l's LeNet with batch norm, sized for 8x8 digits: 3x3 convolutions padded
    to keep the map, two 2x2 max-pools (8 -> 4 -> 2), then the same 120-84-10 head."""

    def block(affine: nn.Module, norm: nn.Module) -> list[nn.Module]:
        if bn_position == "before":
            return [affine, norm, nn.Sigmoid()]
        return [affine, nn.Sigmoid(), norm]

    return nn.Sequential(
        *block(nn.Conv2d(1, 6, kernel_size=3, padding=1), nn.BatchNorm2d(6)),
        nn.MaxPool2d(kernel_size=2, stride=2),
        *block(nn.Conv2d(6, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16)),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        *block(nn.Linear(16 * 2 * 2, 120), nn.BatchNorm1d(120)),
        *block(nn.Linear(120, 84), nn.BatchNorm1d(84)),
        nn.Linear(84, 10),
    )


@dataclass
class Digits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits(
    device: torch.device, subset: Optional[int] = None, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Digits:
    """scikit-learn's 1797 8x8 digits, scaled to [0, 1], split 80/20 (stratified)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    images = torch.tensor(digits.images, dtype=dtype).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, random_state=seed, stratify=labels.numpy()
    )
    if subset is not None:
        train_idx, test_idx = train_idx[:subset], test_idx[: max(subset // 4, 10)]
    train_x, train_y = images[train_idx].to(device), labels[train_idx].to(device)
    return Digits(train_x, train_y, images[test_idx].to(device), labels[test_idx].to(device))


@dataclass
class RunResult:
    name: str
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    peak_memory_bytes: int = 0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


class _PeakTensorMemory(TorchDispatchMode):
    """Bytes of the storages that ops create while it is active, counted until they
    are freed, and their peak: activations saved for backward, gradients, temporaries."""

    def __init__(self):
        super().__init__()
        self.counted = WeakIdKeyDictionary()
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_leaves(out):
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                if storage not in self.counted:
                    self.counted[storage] = storage.nbytes()
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, storage.nbytes())
        return out

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes


def peak_step_memory(model: nn.Module, lr: float, x: torch.Tensor, y: torch.Tensor) -> int:
    """Peak bytes of the tensors one training step creates (beyond parameters, inputs
    and optimizer state): CUDA's allocator peak on a GPU, the peak of live storages
    created by ops on the CPU. Measured on a copy, outside the timed epochs."""
    model = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    training_step(model, optimizer, x, y)  # optimizer state and lazy initialisation first
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        baseline = torch.cuda.memory_allocated(x.device)
        training_step(model, optimizer, x, y)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - baseline
    with _PeakTensorMemory() as tracker:
        training_step(model, optimizer, x, y)
    return tracker.peak


def train(
    name: str,
    model: nn.Module,
    data: Digits,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = True,
) -> RunResult:
    from tqdm.auto import tqdm

    device = data.train_x.device
    result = RunResult(name)
    result.peak_memory_bytes = peak_step_memory(model, lr, data.train_x[:batch_size], data.train_y[:batch_size])
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)  # the same batches for both runs
    n = len(data.train_y)
    steps = (n + batch_size - 1) // batch_size
    bar = tqdm(total=epochs * steps, desc=f"{name:>17}", unit="step", disable=not progress)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        losses = []
        _synchronize(device)
        start = time.perf_counter()
        for step in range(steps):
            batch = order[step * batch_size : (step + 1) * batch_size]
            if len(batch) > 1:  # batch norm needs more than one value per channel
                losses.append(training_step(model, optimizer, data.train_x[batch], data.train_y[batch]))
                bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{losses[-1]:.3f}", refresh=False)
            bar.update()
        _synchronize(device)
        result.epoch_seconds.append(time.perf_counter() - start)
        result.step_losses += losses
        result.epoch_losses.append(sum(losses) / len(losses))
        result.train_accuracy.append(accuracy(model, data.train_x, data.train_y))
        result.test_accuracy.append(accuracy(model, data.test_x, data.test_y))
    bar.close()
    return result


def side_by_side_table(runs: list[RunResult]) -> str:
    columns = ("loss", "train acc", "test acc", "time (s)")
    width = 10
    group = width * len(columns)
    lines = [
        "epoch  " + " | ".join(run.name.center(group) for run in runs),
        "       " + " | ".join("".join(c.rjust(width) for c in columns) for _ in runs),
    ]
    for epoch in range(len(runs[0].epoch_losses)):
        cells = []
        for run in runs:
            cells.append(
                f"{run.epoch_losses[epoch]:>{width}.4f}{run.train_accuracy[epoch]:>{width}.4f}"
                f"{run.test_accuracy[epoch]:>{width}.4f}{run.epoch_seconds[epoch]:>{width}.3f}"
            )
        lines.append(f"{epoch + 1:>5}  " + " | ".join(cells))
    lines.append(
        "peak memory of a training step: "
        + ", ".join(f"{run.name} {run.peak_memory_bytes / 2**10:.1f} KiB" for run in runs)
    )
    lines.append("total training time: " + ", ".join(f"{run.name} {sum(run.epoch_seconds):.2f} s" for run in runs))
    return "\n".join(lines)


def plot(runs: list[RunResult], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    # Colour: what is measured; line style and marker: which run (the runs overlap when they agree).
    for run, style, marker in zip(runs, ("-", "--"), ("o", "x")):
        steps_per_epoch = len(run.step_losses) / len(run.epoch_losses)
        steps = [(i + 1) / steps_per_epoch for i in range(len(run.step_losses))]
        loss_axis.plot(steps, run.step_losses, style, label=run.name)
        epochs = range(1, len(run.test_accuracy) + 1)
        accuracy_axis.plot(epochs, run.train_accuracy, style, color="C0", marker=marker, label=f"{run.name} train")
        accuracy_axis.plot(epochs, run.test_accuracy, style, color="C1", marker=marker, label=f"{run.name} test")
    loss_axis.set(xlabel="epoch", ylabel="training loss (per step)", yscale="log", title="loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fusednorm.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    use_cuda = torch.cuda.is_available() and fusednorm.has_cuda_kernels()
    parser.add_argument("--device", default="cuda" if use_cuda else "cpu")
    parser.add_argument("--batch-size", type=int, default=256, help="as in the chapter (default 256)")
    parser.add_argument("--lr", type=float, default=1.0, help="large, as in the chapter (default 1.0)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="float64 keeps the two runs together for longer: at this learning rate training amplifies "
        "float32 rounding until the runs drift apart",
    )
    parser.add_argument("--bn-position", choices=("before", "after"), default="before")
    parser.add_argument("--out", default="demo_output", help="directory for the table, results and PNG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=None, help="train on the first N samples only (smoke runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: at LeNet's size, splitting an op across threads costs more than it gains, "
        "and timings stay steady on a busy machine)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, device)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, device: torch.device) -> dict:
    os.makedirs(args.out, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    data = load_digits(device, args.subset, args.seed, dtype)
    torch.manual_seed(args.seed)
    reference = build_lenet(args.bn_position).to(device, dtype)
    converted, report = fusednorm.convert(copy.deepcopy(reference))  # the same initial weights
    threads = f" ({args.threads} thread{'s' if args.threads > 1 else ''})" if device.type == "cpu" else ""
    print(
        f"LeNet + batch norm ({args.bn_position} the sigmoid) on sklearn digits: {len(data.train_y)} training, "
        f"{len(data.test_y)} test images; {args.epochs} epochs, batch {args.batch_size}, SGD lr {args.lr}, "
        f"{args.dtype}, device {device}{threads}"
    )
    print(report)
    runs = []
    for name, model in (("torch.nn", reference), ("fusednorm.convert", converted)):
        runs.append(
            train(name, model, data, args.epochs, args.batch_size, args.lr, args.seed, progress=not args.no_progress)
        )
    table = side_by_side_table(runs)
    print(table)
    png = os.path.join(args.out, "demo_curves.png")
    title = f"LeNet + batch norm {args.bn_position} sigmoid, lr {args.lr}, {args.dtype}: torch.nn vs fusednorm.convert"
    plot(runs, png, title)
    with open(os.path.join(args.out, "demo_table.txt"), "w") as out:
        out.write(str(report) + "\n\n" + table + "\n")
    results = {
        "args": vars(args),
        "report": str(report),
        "runs": [vars(run) for run in runs],
        "png": png,
    }
    with open(os.path.join(args.out, "demo_results.json"), "w") as out:
        json.dump(results, out, indent=1)
    print(f"curves: {png}; table and results: {args.out}/demo_table.txt, demo_results.json")
    return results


if __name__ == "__main__":
    main()
