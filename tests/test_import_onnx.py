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


def test_small_cnn_through_onnx_matches_torch_at_two_batch_sizes(tmp_path):
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
    lib = graphc.compile(g, cache_dir=tmp_path / "cache")
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


def test_cli_compiles_an_onnx_file_with_a_dim_range(tmp_path):
    import os
    import subprocess
    import sys

    torch = pytest.importorskip("torch")
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()
    path = _export(tmp_path, m, (torch.randn(2, 4),), ["x"], {"x": {0: "batch"}})
    env = {**os.environ, "GRAPHC_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "graphc", "compile", str(path), "-o", str(tmp_path / "out"), "--dim",
                        "batch=1..4"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = graphc.load_compiled(tmp_path / "out")
    x = torch.randn(3, 4)
    np.testing.assert_allclose(lib(x.numpy()), m(x).detach().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"batch=5 is outside 1\.\.4"):
        lib(np.zeros((5, 4), np.float32))  # outside the range given on the command line
