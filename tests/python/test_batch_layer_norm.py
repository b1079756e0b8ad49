"""fusednorm Batch-Layer Norm + activation (+ residual) against the paper's
equations written out in reference.batch_layer_norm, which is itself checked
against PyTorch's F.batch_norm and F.group_norm."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusednorm
import norm_cases as cases
from reference import BLN_ZETA, assert_close, batch_layer_norm, batch_layer_norm_act, oracle_dtype

EPS = 1e-3
DEFAULT_FLAGS = (True, True, False, False)


def make_running_stats(C, device, dtype):
    """(running_mean, running_var, running_feature_mean, running_feature_var), non-trivial."""
    return (
        (torch.randn(C, device=device) * 0.3).to(dtype),
        (torch.rand(C, device=device) + 0.5).to(dtype),
        (torch.randn(1, device=device) * 0.3).to(dtype),
        (torch.rand(1, device=device) + 0.5).to(dtype),
    )


def run_case(
    device,
    dtype,
    shape,
    layout,
    activation_name,
    with_residual,
    training=True,
    use_running_stats=DEFAULT_FLAGS,
    batch_size=None,
    affine=True,
    steps=1,
):
    N, C = shape[:2]
    param_dtype = torch.float32 if dtype in cases.LOW_PRECISION else dtype
    act, ref_act = cases.activation_pair(activation_name, C, device, dtype)
    weight, bias = cases.make_params(C, device, param_dtype, affine)
    running = make_running_stats(C, device, param_dtype)
    ref_running = tuple(t.to(oracle_dtype(dtype)) for t in running)
    flags = tuple(use_running_stats)
    options = (training, 0.1, EPS)

    def fused(input, residual, weight, bias):
        return fusednorm.functional.batch_layer_norm(
            input,
            *running,
            weight,
            bias,
            *options,
            batch_size=batch_size,
            use_running_stats=flags,
            activation=act,
            residual=residual,
        )

    def oracle(input, residual, weight, bias):
        args = (input, *ref_running, weight, bias, *options, batch_size, flags)
        return batch_layer_norm_act(*args, activation=ref_act, residual=residual)

    for step in range(steps):
        x, residual = cases.make_case_inputs(shape, dtype, layout, device, with_residual)
        per_channel = x.detach().transpose(0, 1).reshape(C, -1)
        scale = cases.gain(weight) * cases.max_invstd([per_channel, x.detach().reshape(N, -1)], EPS)
        inputs = dict(input=x, residual=residual, weight=weight, bias=bias)
        where = f"{activation_name} {dtype} {shape} {layout} training={training} flags={flags} step {step}"
        cases.compare_with_oracle(
            fused, oracle, inputs, dtype, where, act, ref_act, dict(input=cases.input_grad_magnitude(scale))
        )
        names = ("running_mean", "running_var", "running_feature_mean", "running_feature_var")
        for name, stat, ref_stat in zip(names, running, ref_running):
            assert_close(stat, ref_stat, param_dtype, f"{name} ({where})")


def test_reference_is_the_paper_mix_of_batch_and_layer_norm(device):
    """The oracle itself, against PyTorch's own batch norm and layer norm (group
    norm with one group): ((1/m - zeta) * LN(x) + (1 - 1/m - zeta) * BN(x)) / sqrt(C)."""
    x = torch.randn(5, 6, 4, 3, device=device, dtype=torch.float64) * 2 + 1
    w, b = torch.rand(6, device=device, dtype=torch.float64), torch.randn(6, device=device, dtype=torch.float64)
    m = 5
    mixed = (
        (1 / m - BLN_ZETA) * F.group_norm(x, 1, eps=EPS)
        + (1 - 1 / m - BLN_ZETA) * F.batch_norm(x, None, None, training=True, eps=EPS)
    ) / 6**0.5
    expected = mixed * w.view(1, 6, 1, 1) + b.view(1, 6, 1, 1)
    ref = batch_layer_norm(x, None, None, None, None, w, b, True, 0.1, EPS)
    torch.testing.assert_close(ref, expected)
    ours = fusednorm.functional.batch_layer_norm(x, weight=w, bias=b, training=True, eps=EPS)
    torch.testing.assert_close(ours, expected)
    # (N, C) input: the authors' per-feature batch statistics and per-sample layer statistics.
    x2 = torch.randn(8, 5, device=device, dtype=torch.float64)
    expected2 = (
        (1 / 8 - BLN_ZETA) * F.layer_norm(x2, [5], eps=EPS)
        + (1 - 1 / 8 - BLN_ZETA) * F.batch_norm(x2, None, None, training=True, eps=EPS)
    ) / 5**0.5
    torch.testing.assert_close(fusednorm.functional.batch_layer_norm(x2, training=True, eps=EPS), expected2)


@cases.every_activation
def test_every_activation(device, dtype, activation_name, layout, with_residual):
    run_case(device, dtype, (4, 6, 5, 5), layout, activation_name, with_residual)


SHAPES = [
    ((8, 5), ["contiguous", "strided"]),
    ((1, 5), ["contiguous"]),
    ((4, 3, 10), ["contiguous", "strided"]),
    ((1, 4, 3, 3), ["contiguous", "channels_last"]),
    ((3, 16, 1, 1), ["contiguous", "channels_last"]),
    *cases.ODD_SHAPES,
]


@cases.over_shapes(SHAPES)
def test_shapes_and_layouts(device, dtype, shape, layout, activation_name, with_residual):
    run_case(device, dtype, shape, layout, activation_name, with_residual)


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=4)), ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_inference_with_every_choice_of_statistics(device, flags, dtype, layout):
    """Each statistic from its running estimate or the mini-batch, gradients
    included; the mixing weights use the training batch size, not the input's."""
    run_case(device, dtype, (3, 5, 4, 3), layout, "silu", True, training=False, use_running_stats=flags, batch_size=8)


@pytest.mark.parametrize("dtype", cases.DTYPES, ids=str)
def test_running_stats_over_several_steps(device, dtype):
    run_case(device, dtype, (4, 6, 3, 3), "contiguous", "relu", False, steps=3)


def test_without_affine(device):
    run_case(device, torch.float32, (4, 6, 3, 3), "channels_last", "elu", True, affine=False)


@pytest.mark.parametrize(
    "fused_cls,shape", [(fusednorm.nn.BatchLayerNorm1d, (6, 5, 7)), (fusednorm.nn.BatchLayerNorm2d, (6, 5, 4, 3))]
)
def test_module_training_then_inference(device, fused_cls, shape):
    """momentum=None: the running statistics are the average over the training
    batches (the authors' population estimate); inference uses them as configured."""
    N, C = shape[:2]
    module = fused_cls(C, batch_size=N, activation="relu").to(device)
    assert set(module.state_dict()) == {
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
        "running_feature_mean",
        "running_feature_var",
    }
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
    batches = [torch.randn(shape, device=device) * 2 + 1 for _ in range(3)]
    per_channel = [d for d in range(len(shape)) if d != 1]
    for x in batches:
        y = module(x)
        torch.testing.assert_close(
            y, F.relu(batch_layer_norm(x, None, None, None, None, module.weight, module.bias, True, 0.1, EPS))
        )
    stacked = torch.stack(batches)
    n = stacked[0].numel() // C
    torch.testing.assert_close(module.running_mean, torch.stack([x.mean(per_channel) for x in batches]).mean(0))
    torch.testing.assert_close(
        module.running_var, torch.stack([x.var(per_channel, unbiased=False) * n / (n - 1) for x in batches]).mean(0)
    )
    d = stacked[0].numel() // N
    torch.testing.assert_close(
        module.running_feature_mean, stacked.reshape(3, N, -1).mean(-1).mean().reshape(1), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        module.running_feature_var,
        (stacked.reshape(3, N, -1).var(-1, unbiased=False) * d / (d - 1)).mean().reshape(1),
    )
    assert module.num_batches_tracked.item() == 3
    module.eval()
    x = torch.randn((2,) + shape[1:], device=device)  # a smaller batch: the weights keep m = N
    skip = torch.randn_like(x)
    running = (module.running_mean, module.running_var, module.running_feature_mean, module.running_feature_var)
    expected = batch_layer_norm(x, *running, module.weight, module.bias, False, 0.1, EPS, N, DEFAULT_FLAGS)
    torch.testing.assert_close(module(x, residual=skip), F.relu(expected + skip))
    module.reset_running_stats()
    assert module.running_feature_mean.item() == 0 and module.running_feature_var.item() == 1
    assert "batch_size=6" in repr(module) and "activation=ReLU()" in repr(module)


def test_module_without_running_stats_uses_batch_statistics(device):
    module = fusednorm.nn.BatchLayerNorm2d(4, batch_size=3, track_running_stats=False).to(device).eval()
    assert module.running_feature_mean is None
    x = torch.randn(3, 4, 5, 5, device=device)
    torch.testing.assert_close(
        module(x), batch_layer_norm(x, None, None, None, None, module.weight, module.bias, True, 0.1, EPS)
    )


def test_module_argument_errors():
    with pytest.raises(ValueError, match="expected 4D input"):
        fusednorm.nn.BatchLayerNorm2d(3, batch_size=2)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        fusednorm.nn.BatchLayerNorm1d(3, batch_size=2)(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch_size must be positive"):
        fusednorm.nn.BatchLayerNorm1d(3, batch_size=0)
    with pytest.raises(ValueError, match="4 entries"):
        fusednorm.nn.BatchLayerNorm1d(3, batch_size=2, use_running_stats=(True,))


@pytest.mark.parametrize(
    "training,flags",
    [
        (True, DEFAULT_FLAGS),
        (False, (False, False, False, False)),
        (False, (True, False, False, True)),
        (False, (False, True, True, False)),
        (False, (True, True, True, True)),
    ],
    ids=str,
)
@pytest.mark.parametrize("activation", ["silu", "prelu"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck(device, training, flags, activation, layout):
    running = make_running_stats(3, device, torch.float64)

    def call(x, w, b, r, *activation_args):
        args = (x, w, b, *[t.clone() for t in running], r, training, 4, 0.1, EPS, list(flags))
        return torch.ops.fusednorm.batch_layer_norm_act(*args, *activation_args)

    cases.check_gradients((3, 3, 3, 2), layout, device, activation, call)


def test_autocast_casts_residual(device):
    cases.check_autocast_casts_residual(
        device,
        (4, 3, 4, 4),
        lambda x, skip: fusednorm.functional.batch_layer_norm(x, training=True, residual=skip, activation="relu"),
        lambda x: batch_layer_norm(x, None, None, None, None, None, None, True, 0.1, EPS),
    )


def test_prelu_module_is_a_trained_submodule(device):
    bln = fusednorm.nn.BatchLayerNorm2d(4, batch_size=2, activation=nn.PReLU(4, init=0.1)).to(device)
    assert "activation.weight" in bln.state_dict()
    bln(torch.randn(2, 4, 3, 3, device=device)).sum().backward()
    assert bln.activation.weight.grad.abs().sum() > 0


def test_empty_batch(device):
    """N = 0 gives an empty output and leaves the running statistics alone, as torch's batch norm."""
    norm = fusednorm.nn.BatchLayerNorm2d(3, batch_size=4, momentum=0.1).to(device)
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    y = norm(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.equal(norm.running_mean, torch.zeros(3, device=device))
    assert torch.equal(norm.running_feature_var, torch.ones(1, device=device))
