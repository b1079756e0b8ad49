"""fusednorm.convert: the converted model against the very model it came from
(deep-copied before conversion), in training and eval mode: same outputs, same
gradients, same running statistics, state_dicts that load both ways, and a
report that counts what was converted and fused.

Norm classes whose fused module is not in fusednorm.nn yet are expected to be
reported as not converted; the expectations follow fusednorm.nn, so these tests
become full fusion tests when the classes land."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

import fusednorm
from fusednorm.convert import BatchNormAnyRank

DTYPE = torch.float64  # the oracle and the fused ops agree to ~1e-12 here, so any rewrite error shows


def has_fused(name):
    return getattr(fusednorm.nn, name, None) is not None


def run_steps(model, make_inputs, steps=2):
    """Outputs and gradients of a few training steps (SGD, so later steps see updated
    weights and running statistics), then an eval-mode output."""
    torch.manual_seed(1)  # same dropout masks for both models
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.01) if parameters else None
    outputs, grads = [], []
    model.train()
    for step in range(steps):
        model.zero_grad()
        out = model(*make_inputs(step))
        if out.requires_grad:
            out.square().mean().backward()
        outputs.append(out.detach())
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        if optimizer is not None:
            optimizer.step()
    model.eval()
    with torch.no_grad():
        outputs.append(model(*make_inputs(steps)))
    return outputs, grads


def assert_close_scaled(actual, expected, tol, what):
    """|actual - expected| <= tol * (|expected| + max|expected|) + 1e-12: deep networks
    amplify rounding differences, so small entries are held to the tensor's own scale;
    1e-12 for gradients that are zero up to rounding (a bias right before a batch norm)."""
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale + 1e-12, msg=lambda m: f"{what}: {m}")


def assert_same_computation(original, converted, make_inputs, steps=2, tol=1e-9):
    expected_out, expected_grads = run_steps(original, make_inputs, steps)
    out, grads = run_steps(converted, make_inputs, steps)
    for i, (a, b) in enumerate(zip(out, expected_out)):
        assert_close_scaled(a, b, tol, f"output {i}")
    for step, (g, expected) in enumerate(zip(grads, expected_grads)):
        assert g.keys() == expected.keys()
        for name in expected:
            assert_close_scaled(g[name], expected[name], tol, f"grad of {name} in step {step}")
    expected_state = original.state_dict()
    for name, value in converted.state_dict().items():
        if value.is_floating_point():
            assert_close_scaled(value, expected_state[name], tol, name)
        else:
            assert torch.equal(value, expected_state[name]), name


def inputs_of(shape, device, count=1):
    def make(step):
        generator = torch.Generator().manual_seed(100 + step)
        return [torch.randn(shape, generator=generator, dtype=DTYPE).to(device) for _ in range(count)]

    return make


def convert_copy(model, **kwargs):
    original = copy.deepcopy(model)
    converted, report = fusednorm.convert(model, **kwargs)
    return original, converted, report


# --------------------------------------------------------------------------- torchvision


def test_resnet18(device):
    model = torchvision.models.resnet18(weights=None, num_classes=10).to(device, DTYPE)
    original, converted, report = convert_copy(model)
    assert converted is model
    assert report.converted == {"BatchNorm2d": 20} and report.not_converted == {}
    # conv1's bn and every block's bn1 take the ReLU; every block's bn2 the residual add and
    # the ReLU; the three downsample BatchNorms end their Sequential and take nothing.
    assert report.fused_activations == {"relu": 17}
    assert report.residual_sites == 8
    assert isinstance(model.layer1[0].bn1, fusednorm.nn.BatchNorm2d)
    assert isinstance(model.layer1[0].bn1.activation, nn.ReLU)
    assert isinstance(model.layer2[0].downsample[1].activation, nn.Identity)
    assert report.layer("layer2.0.downsample.1").activation is None
    assert_same_computation(original, converted, inputs_of((4, 3, 16, 16), device), tol=1e-7)


def test_resnet50(device):
    model = torchvision.models.resnet50(weights=None, num_classes=10).to(device, DTYPE)
    original, converted, report = convert_copy(model)
    assert report.converted == {"BatchNorm2d": 53}
    assert report.fused_activations == {"relu": 49}  # 53 less the four downsample norms
    assert report.residual_sites == 16
    # A batch of 4: the last stages' 1x1 maps give batch statistics over 4 values (2 would
    # make them so ill-conditioned that even float64 rounding shows).
    assert_same_computation(original, converted, inputs_of((4, 3, 16, 16), device), steps=1, tol=1e-6)


def test_state_dict_loads_both_ways(device):
    original = torchvision.models.resnet18(weights=None, num_classes=10).to(device)
    converted, _ = fusednorm.convert(copy.deepcopy(original))
    assert list(converted.state_dict()) == list(original.state_dict())
    fresh_converted, _ = fusednorm.convert(torchvision.models.resnet18(weights=None, num_classes=10).to(device))
    fresh_converted.load_state_dict(original.state_dict())
    fresh_original = torchvision.models.resnet18(weights=None, num_classes=10).to(device)
    fresh_original.load_state_dict(converted.state_dict())
    x = torch.randn(2, 3, 32, 32, device=device)
    for model in (original, fresh_converted, fresh_original):
        model.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh_converted(x), original(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fresh_original(x), original(x))


# --------------------------------------------------------------------------- other norms


class UNetBlock(nn.Module):
    """A diffusion-UNet residual block: GroupNorm -> SiLU -> conv, twice, plus the skip."""

    def __init__(self, channels=8, groups=4):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.SiLU()
        self.out = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.out(x + h)


def test_unet_block_groupnorm_silu(device):
    model = UNetBlock().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    if has_fused("GroupNorm"):
        assert report.converted == {"GroupNorm": 3}
        assert report.fused_activations == {"silu": 3}
        assert isinstance(model.out[1], nn.Identity)
    else:
        assert report.not_converted == {"GroupNorm": 3} and report.converted == {}
        assert "fusednorm.nn has no GroupNorm" in str(report)
        assert type(model.norm1) is nn.GroupNorm and isinstance(model.out[1], nn.SiLU)
    assert_same_computation(original, converted, inputs_of((2, 8, 6, 6), device))


class TransformerBlock(nn.Module):
    """Pre-norm attention, then an MLP whose hidden layer is normalised before its
    GELU (NormFormer-style) and a functional tanh-GELU after the second norm."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.LayerNorm(4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(F.gelu(self.ln2(x), approximate="tanh"))


def test_transformer_block_layernorm_gelu(device):
    model = TransformerBlock().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    if has_fused("LayerNorm"):
        assert report.converted == {"LayerNorm": 3}
        assert report.fused_activations == {"gelu": 1, "gelu_tanh": 1}
        assert report.layer("ln1").activation is None
    else:
        assert report.not_converted == {"LayerNorm": 3} and report.converted == {}
        assert isinstance(model.mlp[2], nn.GELU)
    assert_same_computation(original, converted, inputs_of((2, 5, 16), device))


def test_every_norm_type_is_swapped_when_available(device):
    layers = {
        "BatchNorm1d": (nn.BatchNorm1d(4), (3, 4, 5)),
        "BatchNorm2d": (nn.BatchNorm2d(4), (3, 4, 5, 5)),
        "BatchNorm3d": (nn.BatchNorm3d(4), (3, 4, 3, 3, 3)),
        "LayerNorm": (nn.LayerNorm(5, bias=False), (3, 4, 5)),
        "RMSNorm": (nn.RMSNorm(5), (3, 4, 5)),
        "GroupNorm": (nn.GroupNorm(2, 4), (3, 4, 5)),
        "InstanceNorm1d": (nn.InstanceNorm1d(4, affine=True), (3, 4, 5)),
        "InstanceNorm2d": (nn.InstanceNorm2d(4, track_running_stats=True), (3, 4, 5, 5)),
        "InstanceNorm3d": (nn.InstanceNorm3d(4), (3, 4, 3, 3, 3)),
    }
    for name, (layer, shape) in layers.items():
        model = nn.Sequential(layer, nn.ReLU()).to(device, DTYPE)
        original, converted, report = convert_copy(model)
        if has_fused(name):
            assert type(model[0]) is getattr(fusednorm.nn, name), name
            assert report.converted == {name: 1} and report.fused_activations == {"relu": 1}, name
            for key, tensor in original[0].state_dict().items():
                assert model[0].state_dict()[key].shape == tensor.shape, (name, key)
        else:
            assert type(model[0]) is type(layer) and report.not_converted == {name: 1}, name
        assert_same_computation(original, converted, inputs_of(shape, device))


# --------------------------------------------------------------------------- patterns


class FunctionalForms(nn.Module):
    """Every way of writing an activation after a norm that convert recognises."""

    forms = {
        "F.relu": (lambda h: F.relu(h), "relu"),
        "torch.relu_": (lambda h: torch.relu_(h), "relu"),
        "F.relu inplace": (lambda h: F.relu(h, inplace=True), "relu"),
        "Tensor.relu": (lambda h: h.relu(), "relu"),
        "F.leaky_relu": (lambda h: F.leaky_relu(h, 0.2), "leaky_relu(0.2)"),
        "F.leaky_relu_": (lambda h: F.leaky_relu_(h, negative_slope=0.3), "leaky_relu(0.3)"),
        "F.elu": (lambda h: F.elu(h, alpha=0.5), "elu(0.5)"),
        "F.selu": (lambda h: F.selu(h), "selu"),
        "F.celu": (lambda h: F.celu(h, 1.5), "celu(1.5)"),
        "F.gelu": (lambda h: F.gelu(h), "gelu"),
        "F.gelu tanh": (lambda h: F.gelu(h, approximate="tanh"), "gelu_tanh"),
        "F.silu inplace": (lambda h: F.silu(h, inplace=True), "silu"),
        "torch.sigmoid": (lambda h: torch.sigmoid(h), "sigmoid"),
        "Tensor.sigmoid_": (lambda h: h.sigmoid_(), "sigmoid"),
        "torch.tanh": (lambda h: torch.tanh(h), "tanh"),
    }

    def __init__(self, channels=3):
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in self.forms)
        self.elu_module = nn.ELU(0.7)
        self.norm_before_module = nn.BatchNorm2d(channels)

    def forward(self, x):
        total = self.elu_module(self.norm_before_module(x))
        for norm, (activation, _) in zip(self.norms, self.forms.values()):
            total = total + activation(norm(x))
        return total


def test_functional_activation_forms(device):
    model = FunctionalForms().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    for index, (form, (_, label)) in enumerate(FunctionalForms.forms.items()):
        assert report.layer(f"norms.{index}").activation == label, form
    assert report.layer("norm_before_module").activation == "elu(0.7)"
    assert sum(report.fused_activations.values()) == len(FunctionalForms.forms) + 1
    assert_same_computation(original, converted, inputs_of((4, 3, 5, 5), device))


class Residuals(nn.Module):
    """The residual patterns convert fuses, and the look-alikes it must not."""

    def __init__(self, channels=4):
        super().__init__()
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(8))
        self.embed = nn.Linear(channels, channels)

    def forward(self, x, skip, emb):
        bn = self.bns
        a = F.relu(bn[0](x) + skip)  # fused: residual and activation
        b = torch.relu(skip + bn[1](x))  # operands swapped
        out = bn[2](x)
        out += skip  # in-place add, as in torchvision's blocks
        c = F.silu(out)
        d = torch.add(bn[3](x), skip)  # a residual without activation
        e = bn[4](x)
        f = F.relu(e + e)  # adds the norm output to itself: not a residual
        g = bn[5](x)
        h = F.relu(g + skip) + g  # the norm output has a second user: not fused
        # A broadcasting add (a per-sample, per-channel bias): fused call site, but
        # the runtime guard has to take the unfused path.
        i = F.relu(bn[6](x) + self.embed(emb)[:, :, None, None])
        k = skip + bn[7](x)
        return a + b + c + d + f + h + i + k.sigmoid() + k  # k: the sum has two users


def test_residual_patterns(device):
    model = Residuals().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    fused = {index: report.layer(f"bns.{index}") for index in range(8)}
    assert [fused[i].activation for i in range(8)] == ["relu", "relu", "silu", None, None, None, "relu", None]
    assert [fused[i].residual_sites for i in range(8)] == [1, 1, 1, 1, 0, 0, 1, 1]

    def make(step):
        generator = torch.Generator().manual_seed(step)
        shapes = [(3, 4, 5, 5), (3, 4, 5, 5), (3, 4)]
        return [torch.randn(shape, generator=generator, dtype=DTYPE).to(device) for shape in shapes]

    assert_same_computation(original, converted, make)


def test_residual_of_another_dtype_takes_the_unfused_path(device):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x, skip):
            return F.relu(self.bn(x) + skip)

    model = Block().to(device)
    original, converted, report = convert_copy(model)
    assert report.residual_sites == 1
    x = torch.randn(4, 3, 5, device=device)
    skip = torch.randn(4, 3, 5, device=device, dtype=torch.float64)  # promotes the sum to float64
    out = converted(x, skip)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, original(x, skip))


def test_sequential_fusion_keeps_indices_and_state_dict_keys(device):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.2),
        nn.Conv2d(4, 4, 1),
        nn.BatchNorm2d(4),
        nn.PReLU(),  # would move its weight into the norm's state_dict: not fused
        nn.BatchNorm2d(4),
        nn.RReLU(),  # random slopes drawn differently: not fused
    ).to(device, DTYPE)
    keys = list(model.state_dict())
    original, converted, report = convert_copy(model)
    assert isinstance(model[2], nn.Identity) and isinstance(model[5], nn.Identity)
    assert isinstance(model[8], nn.PReLU) and isinstance(model[10], nn.RReLU)
    assert report.fused_activations == {"relu": 1, "leaky_relu(0.2)": 1}
    assert list(model.state_dict()) == keys
    # RReLU's training-mode slopes are random: compare with it in eval mode, the rest training.
    model[10].eval()
    original[10].eval()
    x = torch.randn(4, 3, 9, 9, dtype=DTYPE, device=device)
    torch.testing.assert_close(model(x), original(x), rtol=1e-9, atol=1e-9)
    model.eval()
    original.eval()
    torch.testing.assert_close(model(x), original(x), rtol=1e-9, atol=1e-9)


def test_sequential_subclass_with_sequentials_forward(device):
    block = torchvision.ops.Conv2dNormActivation(3, 4, kernel_size=3).to(device, DTYPE)  # conv, bn, relu
    original, converted, report = convert_copy(block)
    assert report.fused_activations == {"relu": 1} and isinstance(block[2], nn.Identity)
    assert type(block) is torchvision.ops.Conv2dNormActivation  # no traced forward needed
    assert_same_computation(original, converted, inputs_of((2, 3, 6, 6), device))


def test_fuse_false_only_swaps(device):
    model = torchvision.models.resnet18(weights=None, num_classes=10).to(device, DTYPE)
    original, converted, report = convert_copy(model, fuse=False)
    assert report.converted == {"BatchNorm2d": 20}
    assert report.fused_activations == {} and report.residual_sites == 0
    assert all(
        isinstance(m.activation, nn.Identity) for m in model.modules() if isinstance(m, fusednorm.nn.BatchNorm2d)
    )
    assert type(model.layer1[0]) is torchvision.models.resnet.BasicBlock
    assert "fuse=False" in str(report)
    assert_same_computation(original, converted, inputs_of((4, 3, 16, 16), device), steps=1)


# --------------------------------------------------------------------------- what carries over


def test_parameters_buffers_and_flags_carry_over(device):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=None, eps=1e-3), nn.ReLU()).to(device, DTYPE)
    bn = model[1]
    bn.weight.requires_grad_(False)
    bn.eval()  # a frozen norm inside a model in training mode
    bn.note = "user attribute"
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.num_batches_tracked.fill_(7)
    weight, bias, buffers = bn.weight, bn.bias, dict(bn.named_buffers())
    fusednorm.convert(model)
    fused = model[1]
    assert type(fused) is fusednorm.nn.BatchNorm2d
    assert fused.weight is weight and fused.bias is bias  # the same objects: optimizers keep working
    assert all(buffer is buffers[name] for name, buffer in fused.named_buffers())
    assert not fused.weight.requires_grad and fused.bias.requires_grad
    assert not fused.training and model.training and model[0].training
    assert fused.momentum is None and fused.eps == 1e-3 and fused.note == "user attribute"
    assert fused.weight.device.type == device and fused.weight.dtype == DTYPE


def test_memory_format_and_no_affine_carry_over(device):
    conv = nn.Conv2d(4, 4, 1)
    model = nn.Sequential(conv, nn.BatchNorm2d(4, affine=False, track_running_stats=False), nn.Tanh())
    model.to(device, memory_format=torch.channels_last)
    original, converted, report = convert_copy(model)
    assert model[1].weight is None and model[1].running_mean is None
    assert report.fused_activations == {"tanh": 1}
    x = torch.randn(2, 4, 5, 5, device=device).to(memory_format=torch.channels_last)
    out, expected = model(x), original(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert out.is_contiguous(memory_format=torch.channels_last) == expected.is_contiguous(
        memory_format=torch.channels_last
    )


def test_sync_batch_norm_becomes_batch_norm_of_any_rank(device):
    model = nn.Sequential(nn.SyncBatchNorm(4), nn.ReLU()).to(device, DTYPE)
    original, converted, report = convert_copy(model)
    assert type(model[0]) is BatchNormAnyRank and isinstance(model[1], nn.Identity)
    assert report.converted == {"SyncBatchNorm": 1} and report.fused_activations == {"relu": 1}
    assert "fusednorm.convert.BatchNormAnyRank" in str(report)
    for shape in [(3, 4), (3, 4, 5), (3, 4, 5, 5), (3, 4, 2, 3, 3)]:
        assert_same_computation(original, converted, inputs_of(shape, device), steps=1)
    with pytest.raises(ValueError, match="expected at least 2D input"):
        model(torch.randn(4, device=device, dtype=DTYPE))


def test_model_that_is_a_norm(device):
    bn = nn.BatchNorm1d(3).to(device)
    fused, report = fusednorm.convert(bn)
    assert type(fused) is fusednorm.nn.BatchNorm1d and fused.weight is bn.weight
    assert report.converted == {"BatchNorm1d": 1}


# --------------------------------------------------------------------------- shared modules and hooks


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)  # called twice, ReLU both times: fused
        self.mixed = nn.BatchNorm2d(3)  # called twice, ReLU once: swapped only
        self.relu = nn.ReLU()
        self.alias = self.bn  # the same layer under a second name

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        h = self.relu(self.alias(self.conv(h)))
        return self.relu(self.mixed(h)) + self.mixed(x)


def test_shared_modules(device):
    model = Shared().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    assert model.bn is model.alias and type(model.bn) is fusednorm.nn.BatchNorm2d
    assert [layer.name for layer in report.layers] == ["bn", "mixed"]  # one entry per layer object
    assert report.layer("bn").activation == "relu"
    assert report.layer("mixed").activation is None
    assert "differ in what follows" in report.layer("mixed").note
    assert_same_computation(original, converted, inputs_of((2, 3, 5, 5), device))


def test_hooks_are_kept_and_block_fusion(device):
    model = Shared().to(device, DTYPE)
    seen = {}
    handle = model.mixed.register_forward_hook(lambda m, args, out: seen.setdefault("mixed", []).append(out.clone()))
    model.relu.register_forward_pre_hook(lambda m, args: None)  # the activation is watched too
    original, converted, report = convert_copy(model)
    assert "hooks" in report.layer("mixed").note
    assert report.fused_activations == {}  # the shared ReLU has a hook, so no norm takes it
    seen.clear()
    x = torch.randn(2, 3, 5, 5, device=device, dtype=DTYPE)
    converted.eval()
    original.eval()
    converted(x)
    hooked_by_converted = seen.pop("mixed")
    original(x)  # the deep copy carries a copy of the hook
    for a, b in zip(hooked_by_converted, seen["mixed"]):
        torch.testing.assert_close(a, b)
    handle.remove()  # the handle taken before conversion still removes the hook
    seen.clear()
    converted(x)
    assert "mixed" not in seen


def test_global_hooks_block_fusion(device):
    model = nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()).to(device)
    handle = nn.modules.module.register_module_forward_hook(lambda m, args, out: None)
    try:
        _, report = fusednorm.convert(model)
    finally:
        handle.remove()
    assert report.converted == {"BatchNorm1d": 1} and report.fused_activations == {}
    assert "global module hooks" in report.layer("0").note


# --------------------------------------------------------------------------- where tracing cannot help


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.inner = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU())
        self.block = ResidualMLP()

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace this forward
            x = -x
        return self.block(self.inner(F.relu(self.bn(x))))


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return F.relu(self.bn(self.linear(x)) + x)


def test_untraceable_forward_swaps_without_fusing_there(device):
    model = DataDependent().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    assert report.converted == {"BatchNorm1d": 3}
    assert report.layer("bn").activation is None
    assert "could not trace" in report.layer("bn").note
    assert any(note.startswith("(model) (DataDependent): torch.fx could not trace it") for note in report.notes)
    assert "not traced:" in str(report)
    # Below the untraceable forward, the Sequential and the traced block are still fused.
    assert report.layer("inner.1").activation == "relu"
    assert report.layer("block.bn").activation == "relu" and report.layer("block.bn").residual_sites == 1
    assert_same_computation(original, converted, inputs_of((4, 3), device))


class OptionalArgument(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x, scale=None):
        h = F.relu(self.bn(x))
        return h if scale is None else h * scale


def test_forward_with_optional_arguments_is_not_traced(device):
    model = OptionalArgument().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    assert report.fused_activations == {} and "optional 'scale'" in report.layer("bn").note
    x = torch.randn(4, 3, device=device, dtype=DTYPE)
    torch.testing.assert_close(converted(x, 2.0), original(x, 2.0))
    torch.testing.assert_close(converted(x), original(x))


class ModeDependent(nn.Module):
    """A forward whose Python code differs between training and eval mode."""

    def __init__(self):
        super().__init__()
        self.bn1 = nn.BatchNorm1d(3)
        self.bn2 = nn.BatchNorm1d(3)

    def forward(self, x):
        h = F.gelu(self.bn1(x))
        if self.training:
            h = h * 2
        h = F.dropout(h, p=0.5, training=self.training)
        return F.silu(self.bn2(h) + x)


def test_forward_that_depends_on_training_mode(device):
    model = ModeDependent().to(device, DTYPE)
    original, converted, report = convert_copy(model)
    assert report.fused_activations == {"gelu": 1, "silu": 1} and report.residual_sites == 1
    assert_same_computation(original, converted, inputs_of((6, 3), device), steps=2)


# --------------------------------------------------------------------------- the converted model as an object


def test_deepcopy_pickle_and_fx_of_converted_model(device):
    model = torchvision.models.resnet18(weights=None, num_classes=10).to(device, DTYPE).eval()
    fusednorm.convert(model)
    x = torch.randn(2, 3, 32, 32, device=device, dtype=DTYPE)
    with torch.no_grad():
        expected = model(x)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        for restored in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
            assert type(restored.layer1[0]).__name__ == "BasicBlock"
            assert isinstance(restored.layer1[0], torchvision.models.resnet.BasicBlock)
            torch.testing.assert_close(restored(x), expected)

        traced = fx.symbolic_trace(model)  # fx's default tracer keeps the fused norms as leaves
        torch.testing.assert_close(traced(x), expected)
    _, again = fusednorm.convert(model)
    assert again.layers == []  # nothing left to convert


def test_compile_converted_model(device):
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), ResidualConv()).to(device)
    original, converted, report = convert_copy(model)
    assert report.residual_sites == 1
    compiled = torch.compile(converted, fullgraph=True)
    x = torch.randn(2, 3, 6, 6, device=device)
    torch.testing.assert_close(compiled(x), original(x), rtol=1e-4, atol=1e-5)
    converted.eval()
    original.eval()
    torch.testing.assert_close(compiled(x), original(x), rtol=1e-4, atol=1e-5)


class ResidualConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return F.leaky_relu(self.bn(self.conv(x)) + x, 0.1)


def test_report_table():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.ReLU(), nn.LayerNorm(3), nn.BatchNorm1d(3))
    _, report = fusednorm.convert(model)
    text = str(report)
    lines = text.splitlines()
    assert lines[0].startswith("fusednorm.convert: ")
    assert lines[1].split() == ["torch.nn", "fused", "as", "layers", "+", "activation", "+", "residual"]
    assert lines[2].split() == ["BatchNorm1d", "fusednorm.nn.BatchNorm1d", "2", "relu", "x1", "0"]
    if has_fused("LayerNorm"):
        assert report.converted == {"BatchNorm1d": 2, "LayerNorm": 1}
    else:
        assert report.converted == {"BatchNorm1d": 2} and report.not_converted == {"LayerNorm": 1}
        assert lines[3].split() == ["LayerNorm", "(not", "converted)", "1", "-", "-"]
    assert f"{sum(report.converted.values())} of 3 norm layers converted, 1 fused" in lines[0]
