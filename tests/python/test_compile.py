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
