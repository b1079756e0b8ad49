"""Bad input gets a clear error naming the problem, and leaves running
statistics untouched."""

import pytest
import torch
from torch import nn

import fusednorm
from fusednorm import functional as F


def running_stats(C, device):
    return torch.randn(C, device=device), torch.rand(C, device=device) + 0.5


def call(x, *, weight=None, bias=None, rm=None, rv=None, residual=None, training=True, activation="relu", params=()):
    return torch.ops.fusednorm.batch_norm_act(
        x, weight, bias, rm, rv, residual, training, 0.1, 1e-5, activation, list(params), None, None
    )


CASES = {
    "rank 1": (dict(shape=(6,)), r"input must be \(N, C\)"),
    "rank 6": (dict(shape=(2, 3, 2, 2, 2, 2)), r"input must be \(N, C\)"),
    "weight size": (dict(weight=torch.ones(4)), "weight must be a 1-d tensor of 3 elements"),
    "bias size": (dict(bias=torch.ones(2)), "bias must be a 1-d tensor of 3 elements"),
    "running_mean size": (dict(rm=torch.zeros(5)), "running_mean must be a 1-d tensor of 3 elements"),
    "running_var only": (dict(rm=None, rv=torch.ones(3)), "running_mean and running_var must be given together"),
    "integer input": (dict(dtype=torch.int32), "input must be float64, float32, float16 or bfloat16"),
    "one value per channel": (dict(shape=(1, 3)), "expected more than 1 value per channel when training"),
    "unknown activation": (dict(activation="swishy"), "unknown activation 'swishy'"),
    "too many params": (dict(activation="relu", params=(0.1,)), "takes at most 0 activation_params"),
    "residual shape": (dict(residual=torch.randn(2, 3, 4)), "residual must have the shape of input"),
    "residual dtype": (dict(residual=torch.randn(2, 3, 4, 4, dtype=torch.float64)), "residual must have input's dtype"),
    "weight on meta": (dict(weight=torch.ones(3, device="meta")), "weight is on meta but input is on cpu"),
    "eval without running stats": (dict(training=False, rm=None, rv=None), "required when training=False"),
    "prelu without weight": (dict(activation="prelu"), "activation 'prelu' needs activation_weight"),
}


def expect_clear_error(call, case, default_shape, running=None):
    """call(x, **running, **spec) for case = (spec, message) raises a RuntimeError
    matching message and leaves the running statistics untouched; spec's shape and
    dtype keys make x."""
    spec, message = case
    spec = dict(spec)
    shape = spec.pop("shape", default_shape)
    dtype = spec.pop("dtype", torch.float32)
    x = torch.randn(shape).to(dtype) if dtype.is_floating_point else torch.randint(0, 5, shape, dtype=dtype)
    running = running or {}
    before = {name: stat.clone() for name, stat in running.items()}
    with pytest.raises(RuntimeError, match=message):
        call(x, **{**running, **spec})
    for name, stat in running.items():
        torch.testing.assert_close(stat, before[name], rtol=0, atol=0, msg=f"{name} changed")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error(case):
    rm, rv = running_stats(3, "cpu")
    expect_clear_error(call, CASES[case], (2, 3, 4, 4), dict(rm=rm, rv=rv))


def test_module_errors():
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        fusednorm.nn.BatchNorm2d(3, activation="nope")
    with pytest.raises(ValueError, match="not supported"):
        fusednorm.nn.BatchNorm2d(3, activation=nn.Softplus())
    bn = fusednorm.nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="expected 4D input"):
        bn(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="unknown activation"):
        F.batch_norm(torch.randn(2, 3), None, None, training=True, activation="nope")


ROW_NORM_CASES = {
    "normalized_shape mismatch": (dict(shape=[5]), r"normalized_shape \[5\] must match the trailing dimensions"),
    "normalized_shape too long": (
        dict(shape=[1, 2, 3, 4]),
        r"normalized_shape \[1, 2, 3, 4\] must match the trailing dimensions of input of shape \[2, 3, 4\]",
    ),
    "empty normalized_shape": (dict(shape=[]), "normalized_shape must have at least one dimension"),
    "weight shape": (dict(weight=torch.ones(5)), r"weight must have shape normalized_shape \[4\]"),
    "weight dtype": (dict(weight=torch.ones(4, dtype=torch.int32)), "weight must be float64, float32"),
    "weight on meta": (dict(weight=torch.ones(4, device="meta")), "weight is on meta but input is on cpu"),
    "residual shape": (dict(residual=torch.randn(2, 3, 5)), "residual must have the shape of input"),
    "residual dtype": (dict(residual=torch.randn(2, 3, 4, dtype=torch.float64)), "residual must have input's dtype"),
    "integer input": (dict(dtype=torch.int32), "input must be float64, float32, float16 or bfloat16"),
    "unknown activation": (dict(activation="swishy"), "unknown activation 'swishy'"),
    "too many params": (dict(activation="silu", params=(0.1,)), "activation 'silu' takes at most 0 activation_params"),
    "prelu without weight": (dict(activation="prelu"), "activation 'prelu' needs activation_weight"),
    "prelu weight size": (
        dict(activation="prelu", act_weight=torch.ones(4)),
        "activation_weight must have 1 or 3 elements",
    ),
    "negative eps": (dict(eps=-1.0), "eps must be non-negative"),
}


def call_row_norm(
    op, x, *, shape=(4,), weight=None, residual=None, eps=1e-5, activation="relu", params=(), act_weight=None
):
    if op == "layer_norm_act":
        return torch.ops.fusednorm.layer_norm_act(
            x, list(shape), weight, None, residual, eps, activation, list(params), act_weight, None
        )
    return torch.ops.fusednorm.rms_norm_act(
        x, list(shape), weight, residual, eps, activation, list(params), act_weight, None
    )


@pytest.mark.parametrize("op", ["layer_norm_act", "rms_norm_act"])
@pytest.mark.parametrize("case", list(ROW_NORM_CASES))
def test_row_norm_bad_input_is_a_clear_error(op, case):
    spec, message = ROW_NORM_CASES[case]
    spec = dict(spec)
    dtype = spec.pop("dtype", torch.float32)
    x = torch.randn(2, 3, 4).to(dtype) if dtype.is_floating_point else torch.randint(0, 5, (2, 3, 4), dtype=dtype)
    with pytest.raises(RuntimeError, match=f"{op}: {message}"):
        call_row_norm(op, x, **spec)


def test_layer_norm_bias_shape_is_checked():
    with pytest.raises(RuntimeError, match=r"layer_norm_act: bias must have shape normalized_shape \[3, 4\]"):
        torch.ops.fusednorm.layer_norm_act(torch.randn(2, 3, 4), [3, 4], None, torch.ones(4), None, 1e-5, "relu")


@pytest.mark.parametrize("op", ["_layer_norm_act_backward", "_rms_norm_act_backward"])
def test_row_norm_backward_checks_saved_statistics(op):
    x = torch.randn(2, 3, 4)
    wrong = torch.ones(5)
    with pytest.raises(RuntimeError, match="rstd must have 6 elements"):
        if op == "_layer_norm_act_backward":
            torch.ops.fusednorm._layer_norm_act_backward(
                x, x, [4], None, None, None, torch.zeros(6), wrong, "relu", [], None, None, [True] * 5
            )
        else:
            torch.ops.fusednorm._rms_norm_act_backward(x, x, [4], None, None, wrong, "relu", [], None, None, [True] * 4)


def test_row_norm_module_errors():
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        fusednorm.nn.LayerNorm(3, activation="nope")
    with pytest.raises(ValueError, match="not supported"):
        fusednorm.nn.RMSNorm(3, activation=nn.Softplus())
    with pytest.raises(RuntimeError, match="must match the trailing dimensions"):
        fusednorm.nn.LayerNorm(3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="unknown activation"):
        F.rms_norm(torch.randn(2, 3), [3], activation="nope")


def call_group_norm(x, *, groups=3, weight=None, bias=None, residual=None, activation="relu", activation_weight=None):
    return torch.ops.fusednorm.group_norm_act(
        x, groups, weight, bias, residual, 1e-5, activation, [], activation_weight, None
    )


GROUP_NORM_CASES = {
    "channels not divisible by groups": (
        dict(groups=4),
        r"channels of input \(6\) must be divisible by num_groups \(4\)",
    ),
    "zero groups": (dict(groups=0), "num_groups must be positive"),
    "rank 1": (dict(shape=(6,)), r"input must be \(N, C, \*\) with at least 2 dimensions"),
    "integer input": (dict(dtype=torch.int32), "input must be float64, float32, float16 or bfloat16"),
    "weight size": (dict(weight=torch.ones(4)), "weight must be a 1-d tensor of 6 elements"),
    "bias 2-d": (dict(bias=torch.ones(6, 1)), "bias must be a 1-d tensor of 6 elements"),
    "residual shape": (dict(residual=torch.randn(2, 6, 4)), "residual must have the shape of input"),
    "residual dtype": (dict(residual=torch.randn(2, 6, 4, 4, dtype=torch.float64)), "residual must have input's dtype"),
    "unknown activation": (dict(activation="swishy"), "unknown activation 'swishy'"),
    "prelu weight size": (
        dict(activation="prelu", activation_weight=torch.ones(4)),
        "activation_weight must have 1 or 6 elements",
    ),
}


@pytest.mark.parametrize("case", list(GROUP_NORM_CASES))
def test_group_norm_bad_input_is_a_clear_error(case):
    expect_clear_error(call_group_norm, GROUP_NORM_CASES[case], (2, 6, 4, 4))


def test_group_norm_module_errors():
    with pytest.raises(ValueError, match="must be divisible by num_groups"):
        fusednorm.nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        fusednorm.nn.GroupNorm(2, 6, activation="nope")


def call_instance_norm(x, *, weight=None, bias=None, rm=None, rv=None, residual=None, use_input_stats=True):
    return torch.ops.fusednorm.instance_norm_act(
        x, weight, bias, rm, rv, residual, use_input_stats, 0.1, 1e-5, "relu", [], None, None
    )


INSTANCE_NORM_CASES = {
    "rank 6": (dict(shape=(2, 3, 2, 2, 2, 2)), r"input must be \(N, C\)"),
    "one spatial element": (dict(shape=(2, 3, 1, 1)), "expected more than 1 spatial element"),
    "weight size": (dict(weight=torch.ones(4)), "weight must be a 1-d tensor of 3 elements"),
    "running_mean size": (dict(rm=torch.zeros(5)), "running_mean must be a 1-d tensor of 3 elements"),
    "running_var only": (dict(rm=None), "running_mean and running_var must be given together"),
    "running stats needed": (dict(rm=None, rv=None, use_input_stats=False), "required when use_input_stats=False"),
    "residual shape": (dict(residual=torch.randn(2, 3, 4, 5)), "residual must have the shape of input"),
}


@pytest.mark.parametrize("case", list(INSTANCE_NORM_CASES))
def test_instance_norm_bad_input_is_a_clear_error(case):
    rm, rv = running_stats(3, "cpu")
    expect_clear_error(call_instance_norm, INSTANCE_NORM_CASES[case], (2, 3, 4, 4), dict(rm=rm, rv=rv))


def call_batch_layer_norm(x, *, rm, rv, rfm, rfv, weight=None, residual=None, training=True, batch_size=2, flags=()):
    flags = [bool(f) for f in flags] or [True, True, False, False]
    return torch.ops.fusednorm.batch_layer_norm_act(
        x, weight, None, rm, rv, rfm, rfv, residual, training, batch_size, 0.1, 1e-3, flags, "relu", [], None, None
    )


BATCH_LAYER_NORM_CASES = {
    "weight size": (dict(weight=torch.ones(4)), "weight must be a 1-d tensor of 3 elements"),
    "feature stat size": (dict(rfm=torch.zeros(3)), "running_feature_mean must be a 1-d tensor of 1 element"),
    "feature stats apart": (dict(rfv=None), "running_feature_mean and running_feature_var must be given together"),
    "batch stat size": (dict(rv=torch.ones(2)), "running_var must be a 1-d tensor of 3 elements"),
    "batch_size zero": (dict(batch_size=0), r"batch_size \(the m of the mixing weights 1/m\) must be positive"),
    "running statistic missing at inference": (
        dict(training=False, flags=(1, 1, 1, 0), rfm=None, rfv=None),
        r"use_running_stats\[2\] asks for running_feature_mean when training=False",
    ),
    "residual dtype": (dict(residual=torch.randn(2, 3, 4, 4, dtype=torch.float64)), "residual must have input's dtype"),
}


@pytest.mark.parametrize("case", list(BATCH_LAYER_NORM_CASES))
def test_batch_layer_norm_bad_input_is_a_clear_error(case):
    rm, rv = running_stats(3, "cpu")
    running = dict(rm=rm, rv=rv, rfm=torch.zeros(1), rfv=torch.ones(1))
    expect_clear_error(call_batch_layer_norm, BATCH_LAYER_NORM_CASES[case], (2, 3, 4, 4), running)
