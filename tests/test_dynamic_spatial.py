"""Dynamic image sizes: conv, pooling and the norms accept symbolic H and W. A stride-1 layer keeps
any size; strided ones need the size declared as a multiple of the total stride
(``8 * graphc.Dim("h", 1, 8)``), so that every output size and the memory plan stay polynomials of the
dims. A ResNet-style stem and block and a MobileNetV2-style inverted residual, compiled once with
dynamic batch, height and width, match eager graphc and PyTorch at several image sizes."""

from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.errors import ShapeError
from graphc.ir.interpreter import interpret
from graphc.sym import Sym


def build(lib):
    nn = lib.nn

    class Block(nn.Module):  # torchvision BasicBlock with a stride-2 downsample
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.bn1(self.conv1(x)).relu()
            return (self.bn2(self.conv2(y)) + self.down(x)).relu()

    class InvertedResidual(nn.Module):  # MobileNetV2: expand, depthwise (ReLU6), project
        def __init__(self, c, t):
            super().__init__()
            self.expand = nn.Sequential(nn.Conv2d(c, c * t, 1, bias=False), nn.BatchNorm2d(c * t), nn.ReLU6(True))
            self.dw = nn.Sequential(nn.Conv2d(c * t, c * t, 3, 1, 1, groups=c * t, bias=False),
                                    nn.BatchNorm2d(c * t), nn.ReLU6(inplace=True))
            self.project = nn.Sequential(nn.Conv2d(c * t, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.project(self.dw(self.expand(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
            self.block = Block(8, 16)
            self.ir = InvertedResidual(16, 2)
            self.gn = nn.GroupNorm(4, 16)
            self.pool = nn.AvgPool2d(1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

        def forward(self, x):
            feat = self.pool(self.gn(self.ir(self.block(self.stem(x)))))
            return {"logits": self.head(feat), "feat": feat}

    return Net().eval()


def _randomised(net):
    rs = np.random.RandomState(0)
    for k, v in net.state_dict().items():
        arr = v.numpy()
        if "running_var" in k:
            arr[...] = rs.uniform(0.5, 1.5, arr.shape)
        elif arr.dtype.kind == "f":
            arr[...] = rs.randn(*arr.shape) * 0.3
    return net


DYN = {"x": {0: "B", 2: 8 * graphc.Dim("h", 1, 8), 3: 8 * graphc.Dim("w", 1, 8)}}


def test_resnet_and_mobilenet_blocks_with_a_dynamic_image_size(tmp_path, shared_cache):
    net = _randomised(build(graphc))
    x0 = np.random.RandomState(1).randn(2, 3, 32, 24).astype(np.float32)
    g = graphc.trace(net, (x0,), DYN)
    assert g.inputs[0].type.shape[2:] == (Sym.var("h") * 8, Sym.var("w") * 8)
    cm = graphc.compile(net, (x0,), DYN, cache_dir=shared_cache)
    sizes = [str(b["size"]) for b in cm.memory_plan]
    assert any("h" in s and "w" in s for s in sizes), sizes  # the plan is a polynomial of the dims
    torch = pytest.importorskip("torch")
    tnet = build(torch)
    tnet.load_state_dict({k: torch.tensor(v.numpy()) for k, v in net.state_dict().items()})
    for shape in [(2, 3, 32, 24), (1, 3, 64, 8), (3, 3, 16, 40)]:
        x = np.random.RandomState(shape[2]).randn(*shape).astype(np.float32)
        with torch.no_grad():
            ref = {k: v.numpy() for k, v in tnet(torch.tensor(x)).items()}
        eager = {k: v.numpy() for k, v in net(graphc.tensor(x)).items()}
        traced = interpret(g, {"x": x})
        compiled = dict(zip(ref, cm(x)))
        for k in ref:
            for name, got in (("eager", eager[k]), ("traced", traced[k]), ("compiled", compiled[k])):
                np.testing.assert_allclose(got, ref[k], rtol=1e-4, atol=1e-4, err_msg=f"{name} {k} {shape}")
    with pytest.raises(ValueError, match="not a multiple of 8"):
        graphc.trace(net, (np.ones((1, 3, 20, 24), np.float32),), DYN)


def test_stride_one_layers_take_any_size_and_strided_ones_ask_for_a_multiple():
    class Same(graphc.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = graphc.nn.Conv2d(3, 4, 3, padding=1)
            self.norm = graphc.nn.BatchNorm2d(4)

        def forward(self, x):
            return graphc.nn.functional.max_pool2d(self.norm(self.conv(x)), 3, 1, 1)

    m = Same().eval()
    g = graphc.trace(m, (np.ones((1, 3, 9, 7), np.float32),), {"x": {2: "H", 3: "W"}})
    x = np.random.RandomState(0).randn(1, 3, 5, 11).astype(np.float32)
    np.testing.assert_allclose(interpret(g, {"x": x})["output"], m(graphc.tensor(x)).numpy(), rtol=1e-5, atol=1e-6)

    class Strided(graphc.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = graphc.nn.Conv2d(3, 4, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ShapeError, match=r"conv: the output size \(H-1\)//2 \+ 1 of a dynamic spatial dim is not "
                                         r"a polynomial .* multiple of the total stride"):
        graphc.trace(Strided(), (np.ones((1, 3, 8, 8), np.float32),), {"x": {2: "H"}})


def test_the_cuda_backend_with_a_dynamic_image_size_under_emulation(tmp_path, shared_cache):
    from graphc.backend import optimize_graph
    from tests.cuda_emu import emulate

    if not emulate.available():
        pytest.skip("no host C++ compiler for the CUDA emulation")
    net = _randomised(build(graphc))
    g = optimize_graph(graphc.trace(net, (np.ones((1, 3, 16, 16), np.float32),), DYN), 2)
    m = emulate.build(g, shared_cache)
    for shape in [(1, 3, 16, 16), (2, 3, 8, 24)]:
        x = np.random.RandomState(shape[3]).randn(*shape).astype(np.float32)
        want = interpret(g, {"x": x})
        got = m.run(x=x)
        for k, w in want.items():
            np.testing.assert_allclose(got[k], w, rtol=0, atol=2e-5 * max(1.0, float(np.abs(w).max())),
                                       err_msg=f"{k} {shape}")
