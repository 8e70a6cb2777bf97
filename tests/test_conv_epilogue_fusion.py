"""Conv epilogue fusion (graphc/backend/epilogue.py) end to end: a model with every fusable activation
after convolutions of each runtime path (depthwise, one input channel, 1x1, spatial), residual adds
before and after the activation, hardswish's decomposition and a squeeze-excitation chain, compiled and
compared with PyTorch; the profile shows which groups went into their conv's kernel. Chains that must
not fuse (a conv result used twice, a broadcast operand) still compute the right values; a global average
pool of a fused result (squeeze-excitation) comes out of the same kernel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import graphc


def build(nn: Any, F: Any) -> Any:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 1, 1)
            self.bn = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
            self.pw = nn.Conv2d(8, 8, 1)
            self.pw2 = nn.Conv2d(8, 8, 1)
            self.dw5 = nn.Conv2d(8, 8, 5, 2, 2, groups=8)
            self.c3 = nn.Conv2d(8, 8, 3, 1, 1)
            self.c4 = nn.Conv2d(8, 8, 3, 1, 1, bias=False)
            self.c5 = nn.Conv2d(8, 8, 1)
            self.se1 = nn.Conv2d(8, 4, 1)
            self.se2 = nn.Conv2d(4, 8, 1)
            self.c6 = nn.Conv2d(8, 8, 3, 1, 1)
            self.c7 = nn.Conv2d(8, 8, 1)
            self.c8 = nn.Conv2d(8, 8, 1)
            self.c9 = nn.Conv2d(8, 8, 3, 1, 1)
            self.one = nn.Conv2d(1, 4, 5)  # one input channel: the direct path

        def forward(self, x: Any, g: Any) -> Any:
            h = F.relu6(self.bn(self.stem(x)))
            h = F.silu(self.dw(h))
            h = F.relu(self.pw(h) + h)                  # residual, then the activation
            h = F.hardswish(self.pw2(h))
            h = F.gelu(self.dw5(h), approximate="tanh")
            h = h + F.relu(self.c3(h))                  # the activation, then the residual
            h = F.gelu(self.c4(h))
            h = torch_like_tanh(self.c5(h))
            s = F.adaptive_avg_pool2d(h, 1)
            h = h * F.sigmoid(self.se2(F.silu(self.se1(s))))
            a = self.c6(h)
            h = F.relu(a) + a                           # used twice: not an epilogue
            h = h + self.c7(h)                          # a residual alone
            t = self.c8(h)
            h = t + self.c9(F.relu(t))                  # the residual is a conv result read elsewhere too
            o = F.hardtanh(self.one(g), -0.5, 0.5)
            return h, o

    def torch_like_tanh(t: Any) -> Any:
        return t.tanh()

    return Net()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, shared_cache):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tm = build(torch.nn, torch.nn.functional).eval()
    tm.bn.running_mean.uniform_(-0.2, 0.2)
    tm.bn.running_var.uniform_(0.5, 1.5)
    gm = build(graphc.nn, graphc.nn.functional)
    gm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    gm.eval()
    rng = np.random.default_rng(0)
    xs = (rng.standard_normal((2, 3, 13, 11)).astype(np.float32), rng.standard_normal((2, 1, 9, 10)).astype(np.float32))
    cm = graphc.compile(gm, xs, cache_dir=shared_cache)
    with torch.inference_mode():
        ref = [t.numpy() for t in tm(*(torch.from_numpy(x) for x in xs))]
    return cm, xs, ref


@pytest.mark.parametrize("threads", [1, 2])
def test_fused_model_matches_torch(compiled, threads):
    cm, xs, ref = compiled
    cm.set_num_threads(threads)
    got = cm(*xs)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=2e-5)


def test_epilogues_fused_into_the_convs(compiled):
    cm, xs, _ = compiled
    cm.enable_profile()
    cm(*xs)
    ops = {r["module"]: r["op"] for r in cm.profile()}
    cm.enable_profile(False)
    assert ops["stem"] == "conv+hardtanh"  # batch norm folded into the conv, ReLU6 in its store
    assert ops["dw"] == "conv+silu"
    assert ops["pw"] == "conv+add+relu"
    assert ops["pw2"] == "conv+constant+add+hardtanh+mul+div"
    assert ops["dw5"] == "conv+gelu"
    assert ops["c4"] == "conv+gelu"
    assert ops["c5"] == "conv+tanh+adaptive_avg_pool2d"  # the squeeze's pool too, as a second output
    assert ops["se1"] == "conv+silu" and ops["se2"] == "conv+sigmoid"
    assert ops["c6"] == "conv"  # its result is read twice
    assert ops["c8"] == "conv" and ops["c9"] == "conv+add"
    assert ops["one"] == "conv+hardtanh"
    fused = [op for op in ops.values() if op.startswith("conv+")]
    assert len(fused) >= 12, ops


def build_se(nn: Any, F: Any) -> Any:
    """Squeeze-excitation blocks: the scaled tensor feeds a 1x1 conv (with a residual add, and without one)."""

    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dw = nn.Conv2d(6, 6, 3, 1, 1, groups=6)
            self.se1 = nn.Conv2d(6, 3, 1)
            self.se2 = nn.Conv2d(3, 6, 1)
            self.project = nn.Conv2d(6, 6, 1)
            self.down = nn.Conv2d(6, 40, 3, 4, 1)
            self.se3 = nn.Conv2d(40, 40, 1)
            self.small = nn.Conv2d(40, 12, 1)  # 12 outputs >= 3 x 3 positions: the mul stays a kernel

        def forward(self, x: Any) -> Any:
            h = F.silu(self.dw(x))
            h = h * F.sigmoid(self.se2(F.silu(self.se1(F.adaptive_avg_pool2d(h, 1)))))
            h = x + self.project(h)
            d = self.down(h)
            d = self.small(d * F.sigmoid(self.se3(F.adaptive_avg_pool2d(d, 1))))
            return h, d

    return SE()


def test_squeeze_excitation_scale_in_the_1x1_conv(tmp_path, shared_cache):
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    tm = build_se(torch.nn, torch.nn.functional).eval()
    gm = build_se(graphc.nn, graphc.nn.functional)
    gm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    gm.eval()
    x = np.random.default_rng(2).standard_normal((2, 6, 9, 11)).astype(np.float32)
    cm = graphc.compile(gm, (x,), cache_dir=shared_cache)
    with torch.inference_mode():
        ref = [t.numpy() for t in tm(torch.from_numpy(x))]
    for threads in (1, 2):
        cm.set_num_threads(threads)
        for a, b in zip(cm(x), ref):
            np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=2e-5)
    cm.enable_profile()
    cm(x)
    ops = {r["module"]: r["op"] for r in cm.profile()}
    assert ops["project"] == "mul+conv+add"  # the scale in the weights, the residual in the store
    assert ops["small"] == "conv" and "mul" in ops.values()
