"""torch.compile(fullgraph=True) and torch.export over models built from the
fused modules: same outputs, gradients and running statistics as eager."""

import copy

import torch
from torch import nn

import fusednorm


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = fusednorm.nn.BatchNorm2d(8, activation="relu")
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = fusednorm.nn.BatchNorm2d(8, activation=nn.LeakyReLU(0.1))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = self.bn1(self.conv1(x))
        h = self.bn2(self.conv2(h), residual=h)
        return self.head(h.mean((2, 3)))


def _compare_compiled(model, x, steps=2, rtol=1e-4, atol=1e-5):
    """Compiled (fullgraph) against eager: outputs, parameter gradients, buffers, then eval."""
    torch._dynamo.reset()
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    for _ in range(steps):
        out_c = compiled(x)
        out_e = eager(x)
        torch.testing.assert_close(out_c, out_e, rtol=rtol, atol=atol)
        out_c.sum().backward()
        out_e.sum().backward()
    # A gradient that a norm cancels to zero (a conv bias before instance norm) is
    # rounding noise of the size of the model's gradients, so atol scales with them.
    grad_scale = max(1.0, max(p.grad.abs().max().item() for p in eager.parameters()))
    for (name, p_c), p_e in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p_c.grad, p_e.grad, rtol=rtol, atol=atol * grad_scale, msg=f"grad of {name}")
    for (name, b_c), b_e in zip(model.named_buffers(), eager.buffers()):
        torch.testing.assert_close(b_c, b_e, msg=f"buffer {name}")
    model.eval()
    eager.eval()
    out = compiled(x)
    torch.testing.assert_close(out, eager(x), rtol=rtol, atol=atol)
    return out


def test_compile_fullgraph_small_cnn(device):
    _compare_compiled(SmallCNN().to(device), torch.randn(4, 3, 8, 8, device=device))


def test_export_eval_model(device):
    model = SmallCNN().to(device).eval()
    x = torch.randn(2, 3, 8, 8, device=device)
    exported = torch.export.export(model, (x,))
    assert any("fusednorm.batch_norm_act" in str(node.target) for node in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x), model(x))


class SmallTransformerBlock(nn.Module):
    """A pre-norm transformer block built from the fused row norms: RMSNorm before
    attention, LayerNorm + GELU inside the MLP, RMSNorm + SiLU with the residual."""

    def __init__(self, dim=16, hidden=32, heads=2):
        super().__init__()
        self.heads = heads
        self.norm_attn = fusednorm.nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = fusednorm.nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.norm_hidden = fusednorm.nn.LayerNorm(hidden, activation="gelu")
        self.fc2 = nn.Linear(hidden, dim)
        self.norm_out = fusednorm.nn.RMSNorm(dim, activation="silu")

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = x + self.proj(attn.transpose(1, 2).reshape(B, T, D))
        u = self.norm_hidden(self.fc1(self.norm_mlp(h)))
        return self.norm_out(self.fc2(u), residual=h)


def _check_compiled_matches_eager(model, inputs, dynamic):
    torch._dynamo.reset()
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic)
    for x in inputs:
        out_c = compiled(x)
        out_e = eager(x)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        out_c.square().sum().backward()
        out_e.square().sum().backward()
    for (name, p_c), p_e in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-4, atol=1e-5, msg=f"grad of {name}")


def test_compile_fullgraph_transformer_block(device):
    model = SmallTransformerBlock().to(device)
    x = torch.randn(3, 5, 16, device=device)
    _check_compiled_matches_eager(model, [x, x], dynamic=False)


def test_compile_fullgraph_transformer_block_dynamic_shapes(device):
    model = SmallTransformerBlock().to(device)
    inputs = [torch.randn(2, t, 16, device=device) for t in (4, 7, 9)]
    _check_compiled_matches_eager(model, inputs, dynamic=True)


def test_export_transformer_block(device):
    model = SmallTransformerBlock().to(device).eval()
    x = torch.randn(2, 6, 16, device=device)
    exported = torch.export.export(model, (x,))
    targets = {str(node.target) for node in exported.graph.nodes}
    assert any("fusednorm.layer_norm_act" in t for t in targets)
    assert any("fusednorm.rms_norm_act" in t for t in targets)
    torch.testing.assert_close(exported.module()(x), model(x))


class UNetResBlock(nn.Module):
    """A diffusion-UNet residual block: GroupNorm + SiLU, conv, GroupNorm + SiLU with
    the block's input as residual, conv."""

    def __init__(self, channels=8, groups=4):
        super().__init__()
        self.norm1 = fusednorm.nn.GroupNorm(groups, channels, activation="silu")
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = fusednorm.nn.GroupNorm(groups, channels, activation=nn.SiLU())
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        h = self.conv1(self.norm1(x))
        return self.conv2(self.norm2(h, residual=x))


def test_compile_fullgraph_unet_block_channels_last(device):
    model = UNetResBlock().to(device).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 8, 8, device=device).to(memory_format=torch.channels_last)
    _compare_compiled(model, x)
    # The norm's own output keeps the format, eager and compiled (meta kernel strides).
    norm = model.norm1.train()
    assert norm(x).is_contiguous(memory_format=torch.channels_last)
    assert torch.compile(norm, fullgraph=True)(x).is_contiguous(memory_format=torch.channels_last)


class InstanceAndBatchLayerNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.instance_norm = fusednorm.nn.InstanceNorm2d(6, affine=True, track_running_stats=True, activation="relu")
        # A float momentum: momentum=None reads num_batches_tracked on the host, which
        # fullgraph cannot trace (torch.nn.BatchNorm2d(momentum=None) neither).
        self.batch_layer_norm = fusednorm.nn.BatchLayerNorm2d(6, batch_size=4, momentum=0.1, activation=nn.PReLU(6))

    def forward(self, x):
        h = self.instance_norm(self.conv(x))
        return self.batch_layer_norm(h, residual=h)


def test_compile_fullgraph_instance_and_batch_layer_norm(device):
    _compare_compiled(InstanceAndBatchLayerNormNet().to(device), torch.randn(4, 3, 6, 6, device=device))


class _EveryFusedNorm(nn.Module):
    """Each fused module once, some with a residual, as a model torch.fx traces."""

    def __init__(self):
        super().__init__()
        self.bn = fusednorm.nn.BatchNorm2d(4, activation="relu")
        self.gn = fusednorm.nn.GroupNorm(2, 4, activation=nn.PReLU(4))
        self.inorm = fusednorm.nn.InstanceNorm2d(4, affine=True, track_running_stats=True, activation="silu")
        self.bln = fusednorm.nn.BatchLayerNorm2d(4, batch_size=3, activation="tanh")
        self.ln = fusednorm.nn.LayerNorm(5, activation="gelu")
        self.rms = fusednorm.nn.RMSNorm(5, activation="sigmoid")
        self.bn1 = fusednorm.nn.BatchNorm1d(4, momentum=None)

    def forward(self, x):
        y = self.bn(x)
        y = self.gn(y, x)
        y = self.inorm(y)
        y = self.bln(y, residual=x)
        y = self.rms(self.ln(y), y)
        return self.bn1(y.mean(-1))


def test_fx_symbolic_trace_keeps_fused_modules_as_leaves(device):
    # fx's default tracer treats torch.nn's norms as leaves but not ours (their module is
    # fusednorm.nn); the modules record themselves as call_module nodes instead, so tools
    # built on fx (torchvision's feature extraction, quantization, graph rewrites) work.
    torch.manual_seed(0)
    model = _EveryFusedNorm().to(device)
    traced = torch.fx.symbolic_trace(model)
    called = [node.target for node in traced.graph.nodes if node.op == "call_module"]
    assert called == ["bn", "gn", "inorm", "bln", "ln", "rms", "bn1"]
    reference = copy.deepcopy(model)
    x = torch.randn(3, 4, 6, 5, device=device)
    for _ in range(2):  # training: the running statistics move the same way in both
        torch.testing.assert_close(traced(x), reference(x))
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(traced.get_buffer(name), buffer, msg=name)
    traced.eval()
    reference.eval()
    torch.testing.assert_close(traced(x), reference(x))


def test_torchvision_feature_extractor_on_converted_resnet(device):
    import torchvision  # a test dependency (requirements-dev.txt), as in test_convert.py
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(device).eval()
    fusednorm.convert(model)
    extractor = create_feature_extractor(model, return_nodes={"layer2": "mid", "fc": "logits"})
    x = torch.randn(2, 3, 64, 64, device=device)
    with torch.no_grad():
        features = extractor(x)
        torch.testing.assert_close(features["logits"], model(x))
    assert features["mid"].shape == (2, 128, 8, 8)
