"""torch.library.opcheck on every op: schema, autograd registration, fake
(meta) kernels and AOT dispatch, with static and dynamic shapes."""

import pytest
import torch

import fusednorm  # noqa: F401


def batch_norm_cases(device):
    C = 3
    for dtype, layout in _layouts_and_dtypes():
        x, w, b, r = _norm_inputs(device, C, dtype, layout)
        rm, rv = torch.zeros(C, device=device), torch.ones(C, device=device)
        yield (x, w, b, rm, rv, r, True, 0.1, 1e-5, "silu", [], None, None)
        yield (x, None, None, rm, rv, None, False, 0.1, 1e-5, "relu", [], None, None)
        yield (x, w, b, None, None, None, True, 0.1, 1e-5, "leaky_relu", [0.2], None, None)
        prelu = torch.rand(C, device=device, requires_grad=True)
        yield (x, w, b, rm, rv, r, True, 0.1, 1e-5, "prelu", [], prelu, None)
        yield (x, w, b, rm, rv, None, True, 0.1, 1e-5, "rrelu", [0.1, 0.3], None, torch.tensor([7]))


def test_opcheck_batch_norm_act(device):
    for args in batch_norm_cases(device):
        torch.library.opcheck(torch.ops.fusednorm.batch_norm_act.default, args)


def test_opcheck_batch_norm_act_backward(device):
    C = 3
    x = torch.randn(2, C, 4, 5, device=device)
    w, b = torch.rand(C, device=device), torch.randn(C, device=device)
    r = torch.randn_like(x)
    out, mean, invstd = torch.ops.fusednorm.batch_norm_act(
        x, w, b, None, None, r, True, 0.1, 1e-5, "gelu", [], None, None
    )
    grad = torch.randn_like(out)
    for mask in ([True, True, True, True, False], [True, False, False, False, False], [False, True, True, True, False]):
        torch.library.opcheck(
            torch.ops.fusednorm._batch_norm_act_backward.default,
            (grad, x, w, b, r, mean, invstd, True, "gelu", [], None, None, mask),
        )


@pytest.mark.parametrize("bad", ["rank", "activation"])
def test_fake_kernel_rejects_bad_input(bad):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.randn(2, 3) if bad == "activation" else torch.randn(3)
        with pytest.raises(RuntimeError, match="activation|input must be"):
            torch.ops.fusednorm.batch_norm_act(
                x,
                None,
                None,
                None,
                None,
                None,
                True,
                0.1,
                1e-5,
                "nope" if bad == "activation" else "relu",
                [],
                None,
                None,
            )


def row_norm_cases(device):
    """(op, args) for layer_norm_act and rms_norm_act: both norms, several
    activations, residual or not, mixed-precision weights, strided input."""
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 3, 8, device=device, dtype=dtype, requires_grad=True)
        strided = torch.randn(3, 2, 8, device=device, dtype=dtype).transpose(0, 1).requires_grad_()
        w = torch.rand(8, device=device, requires_grad=True)
        b = torch.randn(8, device=device, requires_grad=True)
        r = torch.randn_like(x).requires_grad_()
        prelu = torch.rand(3, device=device, requires_grad=True)
        seed = torch.tensor([7])
        activations = [
            ("silu", [], None, None),
            ("leaky_relu", [0.2], None, None),
            ("prelu", [], prelu, None),
            ("rrelu", [0.1, 0.3], None, seed),
        ]
        for name, params, act_weight, act_seed in activations:
            tail = (name, params, act_weight, act_seed)
            yield torch.ops.fusednorm.layer_norm_act.default, (x, [8], w, b, r, 1e-5, *tail)
            yield torch.ops.fusednorm.rms_norm_act.default, (x, [8], w, r, None, *tail)
        yield (
            torch.ops.fusednorm.layer_norm_act.default,
            (strided, [3, 8], None, None, None, 1e-5, "relu", [], None, None),
        )
        yield torch.ops.fusednorm.rms_norm_act.default, (strided, [3, 8], None, None, 1e-6, "gelu", [], None, None)


def test_opcheck_row_norm_act(device):
    for op, args in row_norm_cases(device):
        torch.library.opcheck(op, args)


def test_opcheck_row_norm_act_backward(device):
    x = torch.randn(2, 3, 8, device=device)
    w, b = torch.rand(8, device=device), torch.randn(8, device=device)
    r = torch.randn_like(x)
    prelu = torch.rand(3, device=device)
    _, mean, rstd = torch.ops.fusednorm.layer_norm_act(x, [8], w, b, r, 1e-5, "prelu", [], prelu, None)
    grad = torch.randn_like(x)
    for mask in ([True, True, True, True, True], [True, False, False, False, False], [False, True, True, True, False]):
        torch.library.opcheck(
            torch.ops.fusednorm._layer_norm_act_backward.default,
            (grad, x, [8], w, b, r, mean, rstd, "prelu", [], prelu, None, mask),
        )
    _, rstd = torch.ops.fusednorm.rms_norm_act(x, [3, 8], None, r, None, "gelu", [], None, None)
    for mask in ([True, True, True, False], [True, False, False, False], [False, False, True, False]):
        torch.library.opcheck(
            torch.ops.fusednorm._rms_norm_act_backward.default,
            (grad, x, [3, 8], None, r, rstd, "gelu", [], None, None, mask),
        )


@pytest.mark.parametrize("bad", ["normalized_shape", "activation"])
def test_fake_row_norm_kernels_reject_bad_input(bad):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.randn(2, 3)
        shape = [4] if bad == "normalized_shape" else [3]
        activation = "nope" if bad == "activation" else "relu"
        with pytest.raises(RuntimeError, match="activation|must match the trailing"):
            torch.ops.fusednorm.layer_norm_act(x, shape, None, None, None, 1e-5, activation)
        with pytest.raises(RuntimeError, match="activation|must match the trailing"):
            torch.ops.fusednorm.rms_norm_act(x, shape, None, None, None, activation)


def _norm_inputs(device, C, dtype, layout):
    x = torch.randn(2, C, 4, 5, device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    w = torch.rand(C, device=device, requires_grad=True)
    b = torch.randn(C, device=device, requires_grad=True)
    r = torch.randn_like(x).requires_grad_()
    return x.requires_grad_(), w, b, r


def _layouts_and_dtypes():
    for dtype in (torch.float32, torch.bfloat16):
        for layout in ("contiguous", "channels_last"):
            yield dtype, layout


def group_norm_cases(device):
    C = 6
    for dtype, layout in _layouts_and_dtypes():
        x, w, b, r = _norm_inputs(device, C, dtype, layout)
        prelu = torch.rand(C, device=device, requires_grad=True)
        yield (x, 3, w, b, r, 1e-5, "silu", [], None, None)
        yield (x, 1, None, None, None, 1e-5, "relu", [], None, None)
        yield (x, 6, w, b, None, 1e-5, "prelu", [], prelu, None)
        yield (x, 2, w, b, r, 1e-5, "rrelu", [0.1, 0.3], None, torch.tensor([7]))


def instance_norm_cases(device):
    C = 3
    for dtype, layout in _layouts_and_dtypes():
        x, w, b, r = _norm_inputs(device, C, dtype, layout)
        rm, rv = torch.zeros(C, device=device), torch.ones(C, device=device)
        yield (x, w, b, rm, rv, r, True, 0.1, 1e-5, "gelu", [], None, None)
        yield (x, None, None, None, None, None, True, 0.1, 1e-5, "relu", [], None, None)
        yield (x, w, b, rm, rv, r, False, 0.1, 1e-5, "leaky_relu", [0.2], None, None)


def batch_layer_norm_cases(device):
    C = 3
    for dtype, layout in _layouts_and_dtypes():
        x, w, b, r = _norm_inputs(device, C, dtype, layout)
        stats = [torch.zeros(C, device=device), torch.ones(C, device=device)]
        stats += [torch.zeros(1, device=device), torch.ones(1, device=device)]
        yield (x, w, b, *stats, r, True, 2, 0.1, 1e-3, [True, True, False, False], "silu", [], None, None)
        yield (x, None, None, None, None, None, None, None, True, 5, 0.1, 1e-3, [False] * 4, "relu", [], None, None)
        yield (x, w, b, *stats, r, False, 8, 0.1, 1e-3, [True, False, False, True], "tanh", [], None, None)


def test_opcheck_group_norm_act(device):
    for args in group_norm_cases(device):
        torch.library.opcheck(torch.ops.fusednorm.group_norm_act.default, args)


def test_opcheck_instance_norm_act(device):
    for args in instance_norm_cases(device):
        torch.library.opcheck(torch.ops.fusednorm.instance_norm_act.default, args)


def test_opcheck_batch_layer_norm_act(device):
    for args in batch_layer_norm_cases(device):
        torch.library.opcheck(torch.ops.fusednorm.batch_layer_norm_act.default, args)


BACKWARD_MASKS = ([True, True, True, True, False], [True, False, False, False, False], [False, True, True, True, False])


def test_opcheck_group_norm_act_backward(device):
    x, w, b, r = (t.detach() for t in _norm_inputs(device, 6, torch.float32, "channels_last"))
    out, mean, invstd = torch.ops.fusednorm.group_norm_act(x, 3, w, b, r, 1e-5, "gelu", [], None, None)
    grad = torch.randn_like(out)
    for mask in BACKWARD_MASKS:
        torch.library.opcheck(
            torch.ops.fusednorm._group_norm_act_backward.default,
            (grad, x, 3, w, b, r, mean, invstd, "gelu", [], None, None, mask),
        )


@pytest.mark.parametrize("use_input_stats", [True, False])
def test_opcheck_instance_norm_act_backward(device, use_input_stats):
    x, w, b, r = (t.detach() for t in _norm_inputs(device, 3, torch.float32, "contiguous"))
    rm, rv = torch.zeros(3, device=device), torch.ones(3, device=device)
    out, mean, invstd = torch.ops.fusednorm.instance_norm_act(
        x, w, b, rm, rv, r, use_input_stats, 0.1, 1e-5, "silu", [], None, None
    )
    grad = torch.randn_like(out)
    for mask in BACKWARD_MASKS:
        torch.library.opcheck(
            torch.ops.fusednorm._instance_norm_act_backward.default,
            (grad, x, w, b, r, mean, invstd, use_input_stats, "silu", [], None, None, mask),
        )


@pytest.mark.parametrize("training,flags", [(True, [True, True, False, False]), (False, [True, False, False, True])])
def test_opcheck_batch_layer_norm_act_backward(device, training, flags):
    x, w, b, r = (t.detach() for t in _norm_inputs(device, 3, torch.float32, "contiguous"))
    stats = [torch.zeros(3, device=device), torch.ones(3, device=device)]
    stats += [torch.zeros(1, device=device), torch.ones(1, device=device)]
    out, *saved = torch.ops.fusednorm.batch_layer_norm_act(
        x, w, b, *stats, r, training, 2, 0.1, 1e-3, flags, "silu", [], None, None
    )
    grad = torch.randn_like(out)
    for mask in BACKWARD_MASKS:
        torch.library.opcheck(
            torch.ops.fusednorm._batch_layer_norm_act_backward.default,
            (grad, x, w, b, r, *saved, training, 2, flags, "silu", [], None, None, mask),
        )
