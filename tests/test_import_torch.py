"""graphc.from_torch: torch.nn modules and transformers models, imported through torch.export, compiled,
and compared with PyTorch itself (float32, 1e-4) at two batch sizes (and two sequence lengths).

The models are built here with random weights (nothing is downloaded): a ResNet-18 and a MobileNetV2-style
network written in torch.nn, torch.nn.TransformerEncoder, and transformers' BertModel and GPT2LMHeadModel
with small configs. Each is compiled once with dynamic dims and run at several sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.errors import UnsupportedError
from tests.shared_build import shared_cache_dir

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


def _torch():
    return pytest.importorskip("torch")


def _close(got, want, what: str) -> None:
    got = np.asarray(got.detach().numpy() if hasattr(got, "detach") else got)
    want = want.detach().numpy()
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs torch {want.shape}"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    assert err <= TOL * scale, f"{what}: max abs error {err:.3g} vs torch"


# ------------------------------------------------------------------------------------ the models
def resnet18(num_classes: int = 10):
    torch = _torch()
    nn = torch.nn

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + idt)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            chans, layers, cin = (64, 128, 256, 512), [], 64
            for i, c in enumerate(chans):
                stride = 1 if i == 0 else 2
                layers.append(nn.Sequential(Basic(cin, c, stride), Basic(c, c, 1)))
                cin = c
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18()


def mobilenet_v2(num_classes: int = 10):
    torch = _torch()
    nn = torch.nn

    def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
            super().__init__()
            hid = cin * expand
            self.use_res = stride == 1 and cin == cout
            layers = [cbr(cin, hid, 1)] if expand != 1 else []
            layers += [cbr(hid, hid, 3, stride, groups=hid), nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 1, 2), (6, 96, 1, 1)]
            layers, cin = [cbr(3, 32, 3, 2)], 32
            for t, c, n, s in cfg:
                for i in range(n):
                    layers.append(Inverted(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(cbr(cin, 256, 1))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(256, num_classes))

        def forward(self, x):
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.classifier(x)

    return MobileNetV2()


def _randomize_bn(model) -> None:
    """Random running statistics and affine parameters, so that BatchNorm folding is tested for real."""
    torch = _torch()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _cache(tmp_path_factory):
    return shared_cache_dir()  # the suite's (tests/shared_build.py)


# ------------------------------------------------------------------------------------ CNNs
@pytest.mark.parametrize("builder", [resnet18, mobilenet_v2])
def test_cnn_compiled_matches_torch(builder, tmp_path_factory):
    torch = _torch()
    torch.manual_seed(0)
    model = builder().eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 32, 32)
    imp = graphc.from_torch(model, (x,), {"x": {0: graphc.Dim("B", max=8)}})
    assert imp.graph.dims == {"B": (1, 8)}
    # parameters and buffers keep their state_dict names
    state = set(model.state_dict())
    assert set(imp.graph.params) <= state
    assert "layer1.0.conv1.weight" in imp.graph.params or "features.0.0.weight" in imp.graph.params
    lib = graphc.compile(imp, cache_dir=_cache(tmp_path_factory))
    for b in (1, 3):
        xb = torch.randn(b, 3, 32, 32)
        with torch.no_grad():
            want = model(xb)
        _close(lib(xb), want, f"{builder.__name__} B={b} (torch input)")
        _close(lib(xb.numpy()), want, f"{builder.__name__} B={b} (numpy input)")


def test_module_paths_and_lines():
    torch = _torch()

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.fc(x))  # the line the relu is recorded with

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.Sequential(Block(), Block())
            self.register_buffer("scale", torch.full((4,), 2.0))
            self.offset = torch.tensor([1.0, 2.0, 3.0, 4.0])  # a plain tensor attribute: a lifted constant

        def forward(self, x):
            return self.blocks(x) * self.scale + self.offset

    net = Net()
    imp = graphc.from_torch(net, (torch.randn(3, 4),))
    g = imp.graph
    assert {"blocks.0.fc.weight", "blocks.1.fc.bias", "scale"} <= set(g.params)
    consts = [p for p in g.params if p not in net.state_dict()]
    assert len(consts) == 1 and np.array_equal(g.param_data[consts[0]], [1.0, 2.0, 3.0, 4.0])
    import inspect

    relu_line = next(i for i, ln in enumerate(inspect.getsource(Block).splitlines())
                     if "return torch.relu" in ln) + inspect.getsourcelines(Block)[1]
    linears = [n for n in g.nodes if n.op == "linear"]
    relus = [n for n in g.nodes if n.op == "relu"]
    assert [n.scope for n in linears] == ["blocks.0.fc", "blocks.1.fc"]
    assert [n.scope for n in relus] == ["blocks.0", "blocks.1"]
    assert relus[0].loc == f"test_import_torch.py:{relu_line}"
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    from graphc.ir.interpreter import interpret

    got = interpret(g, {"x": x})["output"]
    with torch.no_grad():
        want = net(torch.from_numpy(x))
    _close(got, want, "interpreted import")


def test_unsupported_op_names_op_module_and_line():
    torch = _torch()

    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return torch.special.bessel_j0(self.fc(x))

    with pytest.raises(UnsupportedError) as e:
        graphc.from_torch(Odd(), (torch.randn(2, 4),))
    msg = str(e.value)
    assert "special_bessel_j0" in msg and "docs/importers.md" in msg
    assert "test_import_torch.py:" in msg


def test_dynamic_forms():
    torch = _torch()
    lin = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.GELU())
    x = torch.randn(3, 8)
    # graphc's form with a name only: torch works out the range, graphc keeps the name
    g1 = graphc.from_torch(lin, (x,), {"input": {0: "N"}}).graph
    assert g1.inputs[0].type.shape[0] == graphc.sym.Sym.var("N") and g1.dims["N"][0] == 1
    # torch's own Dim, inside graphc's dict or as dynamic_shapes
    d = torch.export.Dim("M", min=2, max=40)
    g2 = graphc.from_torch(lin, (x,), {"input": {0: d}}).graph
    g3 = graphc.from_torch(lin, (x,), dynamic_shapes={"input": {0: d}}).graph
    assert g2.dims == g3.dims == {"M": (2, 40)}
    with pytest.raises(ValueError, match="unknown input"):
        graphc.from_torch(lin, (x,), {"y": {0: "B"}})


def test_compile_torch_module_directly(tmp_path_factory):
    torch = _torch()

    class TwoOut(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(6, 3)
            self.b = torch.nn.Linear(6, 2)

        def forward(self, x, y):
            h = x * y.sigmoid()
            return {"first": self.a(h).softmax(-1), "rest": (self.b(h), h.sum(-1))}

    torch.manual_seed(0)
    m = TwoOut().eval()
    rng = np.random.default_rng(0)
    xs = (rng.standard_normal((2, 6)).astype(np.float32), rng.standard_normal((2, 6)).astype(np.float32))
    lib = graphc.compile(m, xs, {"x": {0: "B"}, "y": {0: "B"}}, cache_dir=_cache(tmp_path_factory))
    x, y = torch.randn(5, 6), torch.randn(5, 6)
    with torch.no_grad():
        want = m(x, y)
    for got in (lib(x, y), lib(x, y=y), lib(y=y, x=x)):
        assert set(got) == {"first", "rest"} and isinstance(got["rest"], tuple)
        _close(got["first"], want["first"], "first")
        _close(got["rest"][0], want["rest"][0], "rest[0]")
        _close(got["rest"][1], want["rest"][1], "rest[1]")
    with pytest.raises(ValueError, match="missing input"):
        lib(x)


def test_transformer_encoder(tmp_path_factory):
    torch = _torch()
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
    enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 8, 32)
    dyn = {"src": {0: "B", 1: graphc.Dim("T", max=32)}}
    imp = graphc.from_torch(enc, (x,), dyn)
    lib = graphc.compile(imp, cache_dir=_cache(tmp_path_factory))
    for b, t in ((1, 5), (3, 12)):
        xb = torch.randn(b, t, 32)
        with torch.no_grad():
            want = enc(xb)
        _close(lib(xb), want, f"TransformerEncoder B={b} T={t}")


# ------------------------------------------------------------------------------------ transformers
def _hf_inputs(torch, b: int, t: int, vocab: int):
    g = torch.Generator().manual_seed(b * 100 + t)
    ids = torch.randint(0, vocab, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t // 2:] = 0  # padding in the first sequence
    return ids, mask


HF_DYN = {"input_ids": {0: "B", 1: "T"}, "attention_mask": {0: "B", 1: "T"}}


def test_bert(tmp_path_factory):
    torch = _torch()
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tr.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = tr.BertModel(cfg).eval()
    ids, mask = _hf_inputs(torch, 2, 8, 100)
    imp = graphc.from_torch(model, {"input_ids": ids, "attention_mask": mask}, HF_DYN)
    assert imp.input_names == ["input_ids", "attention_mask"]
    assert imp.output_names == ["last_hidden_state", "pooler_output"]
    assert imp.graph.dims["T"] == (1, 64)  # from the position table, as torch.export found it
    lib = graphc.compile(imp, cache_dir=_cache(tmp_path_factory))
    for b, t in ((1, 5), (3, 12)):
        ids, mask = _hf_inputs(torch, b, t, 100)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask)
        got = lib(ids, attention_mask=mask)
        assert type(got) is type(want)
        _close(got.last_hidden_state, want.last_hidden_state, f"BERT last_hidden_state B={b} T={t}")
        _close(got["pooler_output"], want.pooler_output, f"BERT pooler_output B={b} T={t}")
    # the compiled graph: one attention op per layer, linear + bias fused, no view copies
    counts = _op_counts(imp.graph)
    assert counts.get("sdpa") == 2 and counts.get("linear") == 2 * 6 + 1 and counts.get("layer_norm") == 5
    assert "matmul" not in counts and "batch_norm" not in counts


def test_gpt2(tmp_path_factory):
    torch = _torch()
    tr = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tr.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                        bos_token_id=0, eos_token_id=0)
    model = tr.GPT2LMHeadModel(cfg).eval()
    ids, mask = _hf_inputs(torch, 2, 8, 100)
    imp = graphc.from_torch(model, {"input_ids": ids, "attention_mask": mask}, HF_DYN)
    assert imp.output_names == ["logits"]
    lib = graphc.compile(imp, cache_dir=_cache(tmp_path_factory))
    for b, t in ((1, 5), (3, 12)):
        ids, mask = _hf_inputs(torch, b, t, 100)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask)
        got = lib(input_ids=ids.numpy(), attention_mask=mask.numpy())
        _close(got.logits, want.logits, f"GPT-2 logits B={b} T={t}")


# ------------------------------------------------------------------------------------ same kernels as the twins
def _op_counts(g) -> dict[str, int]:
    from collections import Counter

    from graphc.backend import optimize_graph

    return dict(Counter(n.op for n in optimize_graph(g, 2).nodes))


def _kernels(g) -> list[str]:
    from graphc.backend import generate, optimize_graph

    prog, _, _ = generate(optimize_graph(g, 2), name="m")
    return sorted(k.template for k in prog.kernels)


def _example(name: str):
    import runpy

    return runpy.run_path(str(ROOT / "examples" / name / "model.py"))


@pytest.mark.parametrize("name", ["mlp", "resnet"])
def test_same_kernels_as_graphc_nn_twin(name):
    torch = _torch()
    sys.path.insert(0, str(ROOT))
    try:
        from bench.twins import load_twin
    finally:
        sys.path.remove(str(ROOT))
    ns = _example(name)
    model = ns["model"]
    twin = load_twin(name, model.state_dict())
    native = graphc.trace(model, ns["example_inputs"], ns["dynamic"])
    ex = tuple(torch.from_numpy(np.asarray(x.numpy())) for x in ns["example_inputs"])
    imported = graphc.from_torch(twin, ex, ns["dynamic"]).graph
    assert _kernels(imported) == _kernels(native)
    assert _op_counts(imported) == _op_counts(native)


def test_cli_model_file_with_torch_module(tmp_path, capsys):
    _torch()
    from graphc.cli import main

    (tmp_path / "net.py").write_text(
        "import torch\n\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc2(torch.relu(self.fc1(x)))\n\n\n"
        "torch.manual_seed(0)\nmodel = Net()\nexample_inputs = (torch.randn(2, 16),)\ndynamic = {'x': {0: 'B'}}\n")
    assert main(["trace", str(tmp_path / "net.py"), "-O2"]) == 0
    out = capsys.readouterr().out
    assert "linear(%x, @fc1.weight, @fc1.bias)  # fc1 @ net.py:10" in out and "dim B in" in out
    assert main(["compile", str(tmp_path / "net.py"), "-o", str(tmp_path / "out"), "--verify",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "max" in capsys.readouterr().out
    lib = graphc.load_compiled(tmp_path / "out")
    assert lib.input_names == ["x"] and lib(np.zeros((5, 16), np.float32)).shape == (5, 4)


def test_transformer_twin_same_compute_kernels():
    """nn.TransformerEncoderLayer imported from torch: the same GEMM, attention, norm and fused elementwise
    kernels as the graphc.nn twin (torch's batch_first attention still transposes [B,T,E] <-> [T,B,E]
    around the projections, which leaves strided copies the twin does not have)."""
    torch = _torch()
    sys.path.insert(0, str(ROOT))
    try:
        from bench.twins import load_twin
    finally:
        sys.path.remove(str(ROOT))
    ns = _example("transformer")
    twin = load_twin("transformer", ns["model"].state_dict())
    native = graphc.trace(ns["model"], ns["example_inputs"], ns["dynamic"])
    ex = tuple(torch.from_numpy(np.asarray(x.numpy())) for x in ns["example_inputs"])
    imported = graphc.from_torch(twin, ex, ns["dynamic"]).graph
    compute = [k for k in _kernels(native) if k != "strided.c.j2"]
    assert [k for k in _kernels(imported) if k != "strided.c.j2"] == compute


def test_scans_sorts_and_topk_match_torch(tmp_path_factory):
    """aten.cumsum / cumprod / sort (stable too) / argsort / topk / msort come through graphc's cumsum,
    cumprod and argsort (+ gather) ops, with a dynamic dim along the sorted one; ties in index order."""
    torch = _torch()

    class M(torch.nn.Module):
        def forward(self, x, n):
            v, i = torch.sort(x, dim=1, descending=True)
            t = torch.topk(x, 3, dim=1)
            u = torch.topk(x, 2, dim=0, largest=False)
            s = torch.sort(x, dim=-1, stable=True)
            return (torch.cumsum(x, 1), torch.cumprod(x, -1), v, i, torch.argsort(x, dim=0), s.values, s.indices,
                    t.values, t.indices, u.values, u.indices, torch.msort(x), torch.cumsum(n, 0))

    TIE_FREE = {3: 1, 4: 0, 8: 1, 10: 0}  # index outputs of sort, argsort and topk that are not stable=True: dim
    x = torch.randn(4, 6)
    n = torch.randint(-5, 5, (4, 6), dtype=torch.int32)
    imp = graphc.from_torch(M(), (x, n), {"x": {1: "N"}, "n": {1: "N"}})
    ops = {nd.op for nd in imp.graph.nodes}
    assert {"cumsum", "cumprod", "argsort", "gather"} <= ops
    lib = graphc.compile(imp, cache_dir=_cache(tmp_path_factory))
    for width in (6, 9):
        x = torch.randn(4, width)
        x[:, 1] = x[:, 3]  # ties
        n = torch.randint(-5, 5, (4, width), dtype=torch.int32)
        got, want = lib(x.numpy(), n.numpy()), M()(x, n)
        for k, (g, w) in enumerate(zip(got, want)):
            assert np.asarray(g).dtype == w.numpy().dtype, k
            if k in TIE_FREE:  # torch leaves the order of equal values open: the values they pick must agree
                dim = TIE_FREE[k]
                picked = torch.gather(x, dim, torch.from_numpy(np.asarray(g)))
                _close(picked, torch.gather(x, dim, w), f"output {k} (indices) at N={width}")
            else:
                _close(g, w, f"output {k} at N={width}")


def test_conv3d_and_3d_pools_match_torch(tmp_path_factory):
    """nn.Conv3d (groups, stride, dilation), MaxPool3d (ceil_mode) and AvgPool3d (padding without it in the
    count, divisor_override) with a dynamic batch: aten.max_pool3d_with_indices / avg_pool3d / convolution
    through graphc.nn.functional's 3-d functions."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2, ceil_mode=True),
                      nn.AvgPool3d(2, stride=1, padding=1, count_include_pad=False),
                      nn.Conv3d(4, 2, (1, 2, 3), stride=(1, 2, 1), dilation=(1, 1, 2), groups=2),
                      nn.AvgPool3d(1, divisor_override=3)).eval()
    imp = graphc.from_torch(m, (torch.randn(2, 2, 7, 8, 9),), {"input": {0: "B"}})
    lib = graphc.compile(imp, cache_dir=_cache(tmp_path_factory))
    for b in (1, 3):
        x = torch.randn(b, 2, 7, 8, 9)
        with torch.no_grad():
            want = m(x)
        _close(lib(x.numpy()), want, f"3-d CNN B={b}")
