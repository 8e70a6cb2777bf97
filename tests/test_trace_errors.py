"""What real model code does at trace time: comparisons the dims' ranges decide, dynamic sizes in
tensor arithmetic, and the one-line errors (naming the user's line) for what graphc refuses: too few
example_inputs, a failing model factory or forward, sys.exit in a model file, bad parameter names,
torch pickles given to graphc.load."""

from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest

import graphc
from graphc.errors import TraceError, VerifyError
from graphc.ir.graph import Graph
from graphc.ir.interpreter import interpret
from graphc.ops.registry import TensorType


def _line(marker: str) -> str:
    src = open(__file__).read().splitlines()
    n = next(i for i, s in enumerate(src, 1) if s.rstrip().endswith(f"# <{marker}>"))
    return f"test_trace_errors.py:{n}"


DYN = {"x": {0: "B", 1: graphc.Dim("T", 1, 64)}}


# ------------------------------------------------------------------------- dim-range comparisons
class RangeChecks(graphc.nn.Module):
    def forward(self, x):
        B, T = x.shape
        assert T <= 64, "block size"  # nanoGPT / minGPT
        assert not T > 64
        assert 0 < T and T >= 1 and B * T >= 1
        if T > 0:
            x = x + 1
        n = min(T, 64)  # decided by the range: T
        return x * n


def test_comparisons_the_range_decides_are_decided():
    g = graphc.trace(RangeChecks(), (np.ones((2, 5), np.float32),), DYN)
    for shape in [(2, 5), (3, 64), (1, 1)]:
        x = np.random.RandomState(0).randn(*shape).astype(np.float32)
        np.testing.assert_allclose(interpret(g, {"x": x})["output"], (x + 1) * shape[1], rtol=1e-6)


class Undecided(graphc.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        T = x.shape[1]
        if self.mode == "le32":
            if T <= 32:  # <le32>
                return x
        if self.mode == "float":
            return x * (T * 0.5)  # <float>
        if self.mode == "sqrt":
            return x / math.sqrt(T)  # <sqrt>
        if self.mode == "range":
            return sum(x[:, i] for i in range(T))  # <range>
        return -x


@pytest.mark.parametrize("mode,words", [
    ("le32", "'T <= 32' depends on the value of a dynamic dim (T in 1..64 does not decide it)"),
    ("float", "'T * 0.5': a dynamic size in float arithmetic needs its value"),
    ("sqrt", "float() or a math function (math.sqrt, math.log ...) of the dynamic size T"),
    ("range", "the dynamic size T was used where a concrete int is needed"),
])
def test_undecidable_uses_of_a_dynamic_dim_name_the_line(mode, words):
    with pytest.raises(TraceError) as ei:
        graphc.trace(Undecided(mode), (np.ones((2, 5), np.float32),), DYN)
    msg = str(ei.value)
    assert words in msg and _line(mode) in msg and "\n" not in msg, msg


def test_a_static_dim_in_math_still_works():
    g = graphc.trace(Undecided("sqrt"), (np.ones((2, 4), np.float32),), {"x": {0: "B"}})
    np.testing.assert_allclose(interpret(g, {"x": np.ones((3, 4), np.float32)})["output"], 0.5)


# ------------------------------------------------------------------ dynamic sizes as graph values
class DimArithmetic(graphc.nn.Module):
    def forward(self, x, i):
        B, T = x.shape
        scale = graphc.tensor(T).float().sqrt()  # math.sqrt(T) as a run-time value
        return {
            "mul": x * x.shape[0],
            "div": x / T,
            "rsub": T - x,
            "poly": x * (B * T + 3),
            "sqrt": x / scale,
            "int": i * B + T,  # int64 stays int64
            "cmp": (x < T).float(),
        }


def _dim_ref(x, i):
    B, T = x.shape
    return {"mul": x * B, "div": x / T, "rsub": T - x, "poly": x * (B * T + 3), "sqrt": x / math.sqrt(T),
            "int": i * B + T, "cmp": (x < T).astype(np.float32)}


def test_dynamic_sizes_in_tensor_arithmetic_eager_traced_compiled(tmp_path, shared_cache):
    x0, i0 = np.ones((2, 5), np.float32), np.ones((2, 5), np.int64)
    dyn = {"x": DYN["x"], "i": DYN["x"]}
    g = graphc.trace(DimArithmetic(), (x0, i0), dyn)
    cm = graphc.compile(DimArithmetic(), (x0, i0), dyn, cache_dir=shared_cache)
    for shape in [(2, 5), (3, 17), (1, 64)]:
        rs = np.random.RandomState(shape[1])
        x = (rs.randn(*shape) * 4).astype(np.float32)
        i = rs.randint(-5, 5, size=shape).astype(np.int64)
        ref = _dim_ref(x, i)
        eager = {k: v.numpy() for k, v in DimArithmetic()(graphc.tensor(x), graphc.tensor(i)).items()}
        traced = interpret(g, {"x": x, "i": i})
        compiled = dict(zip(ref, cm(x, i)))
        for k in ref:
            for name, got in (("eager", eager[k]), ("traced", traced[k]), ("compiled", compiled[k])):
                assert got.dtype == ref[k].dtype or (k in ("div", "sqrt") and got.dtype == np.float32), (name, k)
                np.testing.assert_allclose(got, ref[k], rtol=1e-5, err_msg=f"{name} {k} {shape}")


# ------------------------------------------------------------------------------ one-line errors
class TwoInputs(graphc.nn.Module):
    def forward(self, x, mask, scale=1.0):
        return x * mask * scale


def test_too_few_and_too_many_example_inputs():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"too few example_inputs: TwoInputs.forward\(x, mask, scale\) needs 2 "
                                         r"positional input\(s\), example_inputs gives 1 \(missing 'mask'\)"):
        graphc.trace(TwoInputs(), (x,))
    with pytest.raises(ValueError, match="too many example_inputs: .* takes 3 positional input"):
        graphc.trace(TwoInputs(), (x, x, x, x))


@pytest.mark.parametrize("bad", ["w\udc80", "w\x00b"])
def test_unwritable_parameter_names_are_refused(bad, tmp_path):
    class M(graphc.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_parameter(bad, graphc.nn.Parameter(graphc.ones(3)))

        def forward(self, x):
            return x * getattr(self, bad)

    with pytest.raises(ValueError, match=r"parameter name .* contains (a NUL character|a lone surrogate "
                                         r"\(U\+DC80\))"):
        graphc.compile(M(), (np.ones((2, 3), np.float32),), emit_only=True, out_dir=tmp_path / "out")
    g = Graph("m")
    x = g.add_input("x", TensorType((3,), graphc.float32))
    w = g.add_param(bad, TensorType((3,), graphc.float32), np.ones(3, np.float32))
    g.set_outputs([("y", g.add_node("add", [x, w], {}, TensorType((3,), graphc.float32)).out)])
    from graphc.ir.verify import verify

    with pytest.raises(VerifyError, match="NUL or a lone surrogate"):
        verify(g)


def test_graphc_load_refuses_torch_pickles_by_their_magic(tmp_path):
    torch = pytest.importorskip("torch")
    for legacy in (False, True):
        path = tmp_path / f"w{legacy}.pt"
        torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(ValueError) as ei:
            graphc.load(str(path))
        msg = str(ei.value)
        assert "is a torch.save pickle" in msg and "graphc never unpickles" in msg
        assert ("a pickle stream" if legacy else "a zip archive") in msg
        assert "save a safetensors file" in msg.lower() and "\n" not in msg


# ------------------------------------------------------------------------------- model files
def _model_file(tmp_path, body: str):
    p = tmp_path / "net.py"
    p.write_text(textwrap.dedent("""\
        import sys
        import numpy as np
        import graphc
        import graphc.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                return self.fc(x)

        example_inputs = (np.ones((1, 4), np.float32),)
    """) + textwrap.dedent(body))
    return p


def _cli_error(capsys, argv) -> str:
    from graphc.cli import main

    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


def _lineno(p, text: str) -> int:
    return next(i for i, s in enumerate(p.read_text().splitlines(), 1) if text in s)


def test_a_failing_model_factory_names_the_users_line(tmp_path, capsys):
    p = _model_file(tmp_path, """
        def model():
            raise RuntimeError("no checkpoint here")
    """)
    err = _cli_error(capsys, ["trace", str(p)])
    assert err == (f"graphc: error: net.py:{_lineno(p, 'no checkpoint')}: calling 'model' raised RuntimeError: "
                   "no checkpoint here")


def test_a_failing_forward_names_the_users_line(tmp_path, capsys):
    p = _model_file(tmp_path, """
        class Bad(Net):
            def forward(self, x):
                return self.fc(x) @ self.missing

        model = Bad()
    """)
    for argv in (["trace", str(p)], ["compile", str(p), "-o", str(tmp_path / "out"), "--emit-c"]):
        err = _cli_error(capsys, argv)
        assert f"net.py:{_lineno(p, 'self.missing')}: forward() raised AttributeError" in err, err


def test_a_model_file_calling_sys_exit_is_one_clear_error(tmp_path, capsys):
    p = _model_file(tmp_path, """
        model = Net()
        sys.exit(main())  if False else sys.exit(3)
    """)
    err = _cli_error(capsys, ["trace", str(p)])
    assert f"net.py:{_lineno(p, 'sys.exit(3)')}: running the model file called sys.exit(3)" in err, err


def test_model_files_see_their_own_argv(tmp_path, capsys):
    p = _model_file(tmp_path, """
        assert sys.argv == [__file__], sys.argv
        model = Net()
    """)
    from graphc.cli import main

    saved = list(sys.argv)
    assert main(["trace", str(p)]) == 0, capsys.readouterr().err
    assert sys.argv == saved
    assert "linear" in capsys.readouterr().out
