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


def test_compile_fullgraph_small_cnn(device):
    torch._dynamo.reset()
    model = SmallCNN().to(device)
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(4, 3, 8, 8, device=device)
    for _ in range(2):
        out_c = compiled(x)
        out_e = eager(x)
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        out_c.sum().backward()
        out_e.sum().backward()
    for (name, p_c), p_e in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-4, atol=1e-5, msg=f"grad of {name}")
    for (name, b_c), b_e in zip(model.named_buffers(), eager.buffers()):
        torch.testing.assert_close(b_c, b_e, msg=f"buffer {name}")
    model.eval()
    eager.eval()
    torch.testing.assert_close(compiled(x), eager(x), rtol=1e-4, atol=1e-5)


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
