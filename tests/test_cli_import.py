"""`graphc trace / show / compile` on what the importers take: an .onnx file (graphc.from_onnx) and a model
file whose `model` is a torch.nn.Module (graphc.from_torch); outputs checked against onnxruntime / torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ROOT = Path(__file__).resolve().parent.parent

TORCH_FILE = """import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.mean(dim=(2, 3)))


torch.manual_seed(0)
model = Net().eval()
example_inputs = (((("B", 3, 8, 8)), "float32"),)
"""


def _net(tmp_path: Path):
    (tmp_path / "net.py").write_text(TORCH_FILE)
    import runpy

    return runpy.run_path(str(tmp_path / "net.py"))["model"]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    m = _net(tmp)
    path = tmp / "net.onnx"
    with torch.no_grad():
        torch.onnx.export(m, (torch.randn(2, 3, 8, 8),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_trace_onnx_prints_the_imported_ir(onnx_file, capsys):
    assert main(["trace", str(onnx_file), "--dim", "batch=1..16"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("graph net(%x : f32[batch,3,8,8]) -> (y) {")
    assert "dim batch in 1..16" in text and "= conv[" in text and '# conv @ "Conv /conv/Conv"' in text
    assert "param @fc.weight : f32[5,8]" in text  # initializers keep their names
    assert main(["trace", str(onnx_file), "-O2"]) == 0
    assert "= conv[" in capsys.readouterr().out


def test_trace_onnx_writes_a_gir_file_that_parses_back(onnx_file, tmp_path, capsys):
    from graphc.ir import parse

    out = tmp_path / "net.gir"
    assert main(["trace", str(onnx_file), "-o", str(out)]) == 0
    g = parse(out.read_text())
    assert [v.name for v in g.inputs] == ["x"] and "batch" in g.dims


def test_show_onnx_and_torch_model_file_write_dot(onnx_file, tmp_path, capsys):
    _net(tmp_path)
    for src, out in ((onnx_file, tmp_path / "o.dot"), (tmp_path / "net.py", tmp_path / "t.dot")):
        assert main(["show", str(src), "-O2", "-o", str(out)]) == 0
        dot = out.read_text()
        assert dot.startswith("digraph") and "conv" in dot and "linear" in dot
        assert "batch_norm" not in dot  # -O2: folded into the convolution
    assert f"wrote {tmp_path / 't.dot'}" in capsys.readouterr().out


def test_compile_onnx_matches_onnxruntime(onnx_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compile", str(onnx_file), "-o", str(out), "--dim", "batch=1..8", "--verify"]) == 0
    assert "verify" in capsys.readouterr().out
    lib = graphc.load_compiled(out)
    assert lib.input_names == ["x"] and lib.dims == {"batch": (1, 8)}
    rng = np.random.default_rng(0)
    for b in (1, 6):
        x = rng.standard_normal((b, 3, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(lib(x), _ort(onnx_file, x), atol=1e-4, rtol=1e-4)


def test_torch_model_file_trace_and_compile_match_torch(tmp_path, capsys):
    m = _net(tmp_path)
    assert main(["trace", str(tmp_path / "net.py"), "--dim", "B=1..4"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("graph net(%x : f32[B,3,8,8])") and "dim B in 1..4" in text
    assert "# conv @ net.py:13" in text  # the module path and line torch.export recorded
    assert "= batch_norm[" in text  # -O0: as imported
    out = tmp_path / "out"
    assert main(["compile", str(tmp_path / "net.py"), "-o", str(out), "--dim", "B=1..4"]) == 0
    lib = graphc.load_compiled(out)
    for b in (1, 3):
        x = torch.randn(b, 3, 8, 8)
        with torch.no_grad():
            want = m(x).numpy()
        np.testing.assert_allclose(lib(x.numpy()), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("flags,named", [(["--input", "x:f32[B,3,8,8]"], "--input"),
                                         (["--dynamic", "x:0"], "--dynamic"),
                                         (["--weights-file", "w.safetensors"], "--weights-file"),
                                         (["--model", "net"], "--model")])
def test_onnx_file_refuses_flags_of_python_model_files(onnx_file, capsys, flags, named):
    assert main(["trace", str(onnx_file), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"graphc: error: net.onnx: {named} does not apply to an ONNX file") and err.count("\n") == 1


def test_onnx_dim_that_the_file_does_not_have_is_one_line(onnx_file, capsys):
    assert main(["show", str(onnx_file), "--dim", "T=1..9", "-o", "x.dot"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("graphc: error: net.onnx: ") and "'T'" in err and "batch" in err


def test_trace_torch_model_file_prints_no_torch_warnings(tmp_path):
    """A user running `graphc trace` on a torch model sees the IR, not torch.export's internal warnings."""
    _net(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRAPHC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONWARNINGS", None)
    r = subprocess.run([sys.executable, "-m", "graphc", "trace", str(tmp_path / "net.py")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("graph net(") and r.stderr == ""
