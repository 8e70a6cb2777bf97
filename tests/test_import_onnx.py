"""graphc.from_onnx: models exported by torch.onnx, dynamic dims, errors, external data."""

from __future__ import annotations

import numpy as np
import pytest

import graphc


def _export(tmp_path, module, args, names, dynamic_axes):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    path = tmp_path / "m.onnx"
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names, output_names=["y"],
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    return path


def test_small_cnn_through_onnx_matches_torch_at_two_batch_sizes(tmp_path, shared_cache):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 5), nn.Softmax(-1)).eval()
    path = _export(tmp_path, m, (torch.randn(2, 3, 16, 16),), ["x"], {"x": {0: "batch"}})
    g = graphc.from_onnx(path, dims={"batch": (1, 8)})
    assert g.dims == {"batch": (1, 8)}
    assert any(p.endswith("weight") for p in g.params)
    lib = graphc.compile(g, cache_dir=shared_cache)
    for b in (1, 5):
        x = torch.randn(b, 3, 16, 16)
        np.testing.assert_allclose(lib(x.numpy()), m(x).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_unsupported_op_names_node_op_opset_and_docs():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["a", "b"], ["y"], name="my_einsum", equation="ij,jk->ik")
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 2]) for n in "ab"]
    graph = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(graphc.UnsupportedError, match=r"my_einsum.*Einsum, opset 17.*docs/importers.md"):
        graphc.from_onnx(model)
    old = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    with pytest.raises(graphc.UnsupportedError, match="opset 11"):
        graphc.from_onnx(old)
    assert onnx


def test_external_data_is_read_only_inside_the_model_folder(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from graphc.importers.onnx_load import OnnxLoadError

    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    init = numpy_helper.from_array(w, "w")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(w.tobytes())
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", "0"), ("length", "24")):
        e = init.external_data.add()
        e.key, e.value = k, v
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3])], [init])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m" / "model.onnx"))
    g = graphc.from_onnx(tmp_path / "m" / "model.onnx")
    x = np.ones((4, 2), np.float32)
    np.testing.assert_allclose(graphc.ir.interpret(g, x=x)["y"], x @ w)
    init = model.graph.initializer[0]
    init.external_data[0].value = "../w.bin"
    onnx.save(model, str(tmp_path / "m" / "bad.onnx"))
    with pytest.raises(OnnxLoadError, match="outside the model's folder"):
        graphc.from_onnx(tmp_path / "m" / "bad.onnx")
    init.external_data[0].value = "w.bin"
    init.external_data[1].value = "8"
    onnx.save(model, str(tmp_path / "m" / "short.onnx"))
    with pytest.raises(OnnxLoadError, match="offset 8"):
        graphc.from_onnx(tmp_path / "m" / "short.onnx")


def test_cli_compiles_an_onnx_file_with_a_dim_range(tmp_path, shared_cache):
    import os
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()
    path = _export(tmp_path, m, (torch.randn(2, 4),), ["x"], {"x": {0: "batch"}})
    env = {**os.environ, "GRAPHC_CACHE_DIR": str(shared_cache)}
    r = subprocess.run([sys.executable, "-m", "graphc", "compile", str(path), "-o", str(tmp_path / "out"), "--dim",
                        "batch=1..4"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = graphc.load_compiled(tmp_path / "out")
    x = torch.randn(3, 4)
    np.testing.assert_allclose(lib(x.numpy()), m(x).detach().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"batch=5 is outside 1\.\.4"):
        lib(np.zeros((5, 4), np.float32))  # outside the range given on the command line


def _model(nodes, inputs, outputs, inits=()):
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime's range
    return model


def _ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.mark.parametrize("dynamic", [False, True])
def test_gather_of_shape_at_a_0d_index_unsqueeze_concat_reshape(tmp_path, dynamic, shared_cache):
    """torch.onnx's x.view(x.size(0), -1, 2): Gather(Shape(x), 0-d index) is a 0-d value, Unsqueeze makes
    it [1], Concat joins it with constants into Reshape's shape; a 0-d constant must stay 0-d."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["b"], axis=0),
             helper.make_node("Gather", ["s", "i1"], ["t"], axis=0),
             helper.make_node("Unsqueeze", ["b", "ax"], ["b1"]),
             helper.make_node("Concat", ["b1", "m1", "two"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"]),
             helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["y", "tf"], ["z"])]  # a 0-d factor broadcast into z
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1"),
             numpy_helper.from_array(np.array([0], np.int64), "ax"),
             numpy_helper.from_array(np.array([-1], np.int64), "m1"),
             numpy_helper.from_array(np.array([2], np.int64), "two")]
    shape = ["B", 6, 4] if dynamic else [3, 6, 4]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    g = graphc.from_onnx(model, dims={"B": (1, 8)} if dynamic else None)
    lib = graphc.compile(g, cache_dir=shared_cache)
    for b in ((2, 5) if dynamic else (3,)):
        x = np.random.default_rng(b).standard_normal((b, 6, 4)).astype(np.float32)
        want = _ort(model, {"x": x})[0]
        assert want.shape == (b, 12, 2)
        np.testing.assert_allclose(lib(x), want, rtol=1e-6)
        np.testing.assert_allclose(graphc.ir.interpret(g, x=x)["z"], want, rtol=1e-6)


def test_a_0d_constant_and_initializer_stay_0d():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(2.5, np.float32))),
             helper.make_node("Add", ["c", "k"], ["y"])]
    model = _model(nodes, [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                   [numpy_helper.from_array(np.array(1.0, np.float32), "k")])
    g = graphc.from_onnx(model)
    y = graphc.ir.interpret(g)["y"]
    want = _ort(model, {})[0]
    assert np.asarray(y).shape == want.shape == ()
    np.testing.assert_allclose(y, want)


@pytest.mark.parametrize("dtype,fmod", [(np.int64, 0), (np.int32, 0), (np.int8, 0), (np.int64, 1), (np.int32, 1),
                                        (np.float32, 1), (np.float64, 1), (np.float32, 0)])
def test_mod_matches_onnxruntime(tmp_path, dtype, fmod, shared_cache):
    pytest.importorskip("onnx")
    from onnx import helper

    from graphc.importers.onnx import ONNX_DTYPES

    code = next(k for k, v in ONNX_DTYPES.items() if v.np == np.dtype(dtype))
    rng = np.random.default_rng(fmod)
    if np.issubdtype(dtype, np.integer):
        a = rng.integers(-40, 40, (3, 8)).astype(dtype)
        b = rng.integers(1, 9, (8,)).astype(dtype) * np.where(np.arange(8) % 2, 1, -1).astype(dtype)
    else:
        a = (rng.standard_normal((3, 8)) * 10).astype(dtype)
        b = (rng.standard_normal((8,)) * 3).astype(dtype)
    model = _model([helper.make_node("Mod", ["a", "b"], ["y"], fmod=fmod)],
                   [helper.make_tensor_value_info("a", code, ["N", 8]), helper.make_tensor_value_info("b", code, [8])],
                   [helper.make_tensor_value_info("y", code, None)])
    try:
        want = _ort(model, {"a": a, "b": b})[0]
    except Exception as e:  # onnxruntime builds without float fmod=0 (older releases refuse it)
        if "fmod" not in str(e) and "NOT_IMPLEMENTED" not in str(e):
            raise
        want = np.mod(a, b)
    lib = graphc.compile(graphc.from_onnx(model, dims={"N": (1, 4)}), cache_dir=shared_cache)
    got = lib(a, b)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    ref = np.fmod(a, b) if fmod else np.mod(a, b)  # the two sign rules really differ on these inputs
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert (np.sign(np.fmod(a, b)) != np.sign(np.mod(a, b))).any()


def test_mod_of_shape_values_with_dynamic_dims():
    """(2*B + 1) % 2 is 1 and 6 % 4 is 2 for every B; (2*B + 1) % 4 depends on B and is refused."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    def build(div):
        nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Mul", ["s", "two_one"], ["s2"]),
                 helper.make_node("Add", ["s2", "one_zero"], ["s3"]), helper.make_node("Mod", ["s3", "div"], ["r"]),
                 helper.make_node("ConstantOfShape", ["r"], ["y"],
                                  value=numpy_helper.from_array(np.array([7.0], np.float32)))]
        inits = [numpy_helper.from_array(np.array(v, np.int64), n)
                 for n, v in (("two_one", [2, 1]), ("one_zero", [1, 0]), ("div", div))]
        return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 6])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)

    model = build([2, 4])
    g = graphc.from_onnx(model)
    x = np.zeros((5, 6), np.float32)
    want = _ort(model, {"x": x})[0]
    assert want.shape == (1, 2)
    np.testing.assert_array_equal(graphc.ir.interpret(g, x=x)["y"], want)
    with pytest.raises(graphc.UnsupportedError, match=r"Mod.*depends on the value of a dynamic dim"):
        graphc.from_onnx(build([4, 4]))


def test_conv3d_pools3d_cumsum_topk_through_torch_onnx_export(tmp_path):
    """A 3-d CNN (Conv with 3 spatial dims, MaxPool / AveragePool 3-d) ending in CumSum and TopK, exported
    by torch.onnx with a dynamic batch: compiled, it matches PyTorch at two batch sizes."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv3d(2, 4, 3, padding=1)
            self.c2 = nn.Conv3d(4, 6, (2, 3, 3), stride=(1, 2, 2), dilation=(2, 1, 1), groups=2)
            self.pool = nn.MaxPool3d(2, ceil_mode=True)
            self.avg = nn.AvgPool3d((1, 2, 2), padding=(0, 1, 1), count_include_pad=False)

        def forward(self, x):
            h = self.avg(self.pool(torch.relu(self.c1(x))))
            h = self.c2(h).flatten(1)
            v, i = torch.topk(h, 4, dim=1)
            return torch.cumsum(h, 1), v, i

    torch.manual_seed(0)
    m = Net().eval()
    path = tmp_path / "m.onnx"
    with torch.no_grad():
        torch.onnx.export(m, (torch.randn(2, 2, 9, 11, 11),), str(path), input_names=["x"],
                          output_names=["c", "v", "i"], dynamic_axes={"x": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    g = graphc.from_onnx(path, dims={"batch": (1, 4)})
    assert {"cumsum", "argsort"} <= {n.op for n in g.nodes}
    lib = graphc.compile(g)
    for b in (1, 3):
        x = torch.randn(b, 2, 9, 11, 11)
        with torch.no_grad():
            want = m(x)
        got = lib(x.numpy())
        for k, (gv, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(gv, w.numpy(), atol=1e-4, rtol=1e-4, err_msg=f"output {k}, batch {b}")


@pytest.mark.parametrize("exclusive,reverse", [(0, 1), (1, 0), (1, 1)])
def test_cumsum_exclusive_reverse_on_a_dynamic_axis_matches_onnxruntime(exclusive, reverse):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "T"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "T"])],
                   [numpy_helper.from_array(np.array(-1, np.int64), "axis")])
    lib = graphc.compile(graphc.from_onnx(model, dims={"T": (1, 16)}))
    for t in (1, 7):
        x = np.random.default_rng(t).standard_normal((2, t)).astype(np.float32)
        np.testing.assert_allclose(lib(x), _ort(model, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_conv3d_same_upper_asymmetric_pads_matches_onnxruntime():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 2, 3, 2)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 1, 2]),
             helper.make_node("Conv", ["x", "w"], ["z"], pads=[0, 1, 1, 1, 0, 0])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6, 7])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(w, "w")])
    x = rng.standard_normal((1, 2, 5, 6, 7)).astype(np.float32)
    got = graphc.compile(graphc.from_onnx(model))(x)
    for g, want in zip(got, _ort(model, {"x": x})):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["sdpa", "explicit"])
def test_attention_exported_as_matmul_softmax_matmul_becomes_one_sdpa(tmp_path, form):
    """torch.onnx writes attention as MatMul(q*a, Transpose(k)*b) [/ c] + mask -> Softmax -> MatMul: the import
    gives graphc's one sdpa op (as graphc.nn's attention), dynamic batch, matching PyTorch; a softmax over
    another axis is left as it is."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = torch.nn.Linear(16, 48)

        def forward(self, x, mask):
            b, t, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, 2, 8).permute(2, 0, 3, 1, 4)
            if form == "sdpa":
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                y = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5 + mask, dim=-1) @ v
            other = torch.softmax(q @ v.transpose(-1, -2), dim=-2) @ k  # not attention: stays matmul/softmax
            return y.transpose(1, 2).reshape(b, t, 16), other

    torch.manual_seed(0)
    m = Attn().eval()
    path = _export(tmp_path, m, (torch.randn(2, 5, 16), torch.randn(2, 1, 5, 5)), ["x", "mask"], {"x": {0: "B"},
                   "mask": {0: "B"}})
    g = graphc.from_onnx(path, dims={"B": (1, 4)})
    ops = [n.op for n in g.nodes]
    assert ops.count("sdpa") == 1 and ops.count("softmax") == 1
    lib = graphc.compile(g)
    for b in (1, 3):
        x, mask = torch.randn(b, 5, 16), torch.randn(b, 1, 5, 5)
        with torch.no_grad():
            want = m(x, mask)
        for got, w in zip(lib(x.numpy(), mask.numpy()), want):
            np.testing.assert_allclose(got, w.numpy(), atol=1e-5, rtol=1e-4)


def test_bench_bert_layer_through_onnx_has_the_twins_attention_and_gemm_kernels(tmp_path):
    """bench/models.py's BERT layer exported by torch.onnx: the q/k/v Gathers of one index become slices that
    fold into the attention kernel like the graphc.nn twin's, attention is one sdpa and GELU written with Erf
    is graphc's gelu (in the GEMM's epilogue), so the compiled library has the twin's kernels; it matches
    PyTorch."""
    torch = pytest.importorskip("torch")
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "bench"))
    try:
        from models import MODELS
    finally:
        sys.path.remove(str(root / "bench"))
    from graphc.backend import generate, optimize_graph

    def kernels(g):
        return sorted(k.template for k in generate(optimize_graph(g, 2), name="m")[0].kernels)

    spec = MODELS["bert_layer"]
    x = np.random.default_rng(0).standard_normal((1, 16, 384)).astype(np.float32)
    torch.manual_seed(0)
    tm = spec.build(torch.nn, torch.nn.functional).eval()
    gm = spec.build(graphc.nn, graphc.nn.functional)
    gm.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    gm.eval()
    path = _export(tmp_path, tm, (torch.from_numpy(x),), ["x"], {"x": {0: "B"}})
    g = graphc.from_onnx(path, dims={"B": (1, 2)})
    twin = kernels(graphc.trace(gm, (x,), {"input": {0: "B"}}))
    got = kernels(g)
    assert got == twin
    lib = graphc.compile(g)
    for b in (1, 2):
        xb = torch.randn(b, 16, 384)
        with torch.no_grad():
            want = tm(xb).numpy()
        np.testing.assert_allclose(lib(xb.numpy()), want, atol=1e-4, rtol=1e-4)


def test_cnn_through_onnx_has_the_kernels_of_its_torch_import(tmp_path):
    """Conv + BatchNorm + ReLU6 + residual + GlobalAveragePool + Gemm through torch.onnx: ONNX's Clip(0, 6) and
    GlobalAveragePool come in as hardtanh and adaptive_avg_pool2d, so the convolutions take them into their
    epilogues and the library has the kernels of the same module through from_torch (graphc.nn's)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from graphc.backend import generate, optimize_graph

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.c2 = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            h = torch.nn.functional.relu6(self.b1(self.c1(x)))
            h = torch.relu(self.c2(h) + h)
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))

    def kernels(g):
        return sorted(k.template for k in generate(optimize_graph(g, 2), name="m")[0].kernels)

    torch.manual_seed(0)
    m = Net().eval()
    x = torch.randn(2, 3, 12, 12)
    path = _export(tmp_path, m, (x,), ["x"], {"x": {0: "B"}})
    g = graphc.from_onnx(path, dims={"B": (1, 4)})
    assert kernels(g) == kernels(graphc.from_torch(m, (x,), {"x": {0: "B"}}).graph)
    lib = graphc.compile(g)
    for b in (1, 3):
        xb = torch.randn(b, 3, 12, 12)
        with torch.no_grad():
            np.testing.assert_allclose(lib(xb.numpy()), m(xb).numpy(), atol=1e-4, rtol=1e-4)
