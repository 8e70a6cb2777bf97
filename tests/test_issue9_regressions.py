"""Issue 9's acceptance review: what a new user or an attacker tried beyond the other issue 9 tests, each a
regression test of a fix (each failed before it).

* In-place writes through every other kind of view and alias (chunk/split/unbind pieces, detach()/.data,
  narrow/select/movedim/flatten/unflatten/mT, the no-op aliases float()/to()/contiguous()/reshape, the
  in-place forms the fallback builds: cumsum_, addmm_ ...): eager, traced, compiled and PyTorch agree.
* In-place methods that relayout a tensor in PyTorch (t_, transpose_, squeeze_, unsqueeze_, ...) are
  refused, naming the user's line while tracing: graphc's value write made a square x.t_() wrong through
  a view taken before it, and the others failed with a misleading shape message.
* `==` / `!=` on a dynamic dim in the user's code is decided by the dims' ranges or refused at the line:
  structural equality took `if x.shape[0] == 3` as False for B in 1..64, silently wrong at B=3.
* A dynamic dim to a power, and as the value of full/new_full/fill_/masked_fill, works (a raw TypeError
  about Sym, or an AttributeError with no line, before); 2 ** B and B ** -1 are one-line errors.
* A cache record of the wrong shape is an untrusted entry under `python -O` too (an assert decided it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.errors import TraceError
from graphc.ir.interpreter import interpret

ROOT = Path(__file__).resolve().parent.parent


def _line(marker: str) -> str:
    src = open(__file__).read().splitlines()
    n = next(i for i, s in enumerate(src, 1) if s.rstrip().endswith(f"# <{marker}>"))
    return f"test_issue9_regressions.py:{n}"


# --------------------------------------------------------------------- writes through views and aliases
def view_cases(lib, x):
    """{name: result} for writes through views and aliases not in test_inplace.py (x: [B, 4, 6])."""
    F = lib.nn.functional
    out = {}
    t = x.clone()
    a, _ = t.chunk(2, dim=1)
    a.mul_(10)
    out["chunk"] = t
    t = x.clone()
    _, b = t.split([1, 3], dim=1)
    b.add_(5)
    out["split"] = t
    t = x.clone()
    t.unbind(1)[2].fill_(-3)
    out["unbind"] = t
    t = x.clone()
    t.detach().add_(1)
    out["detach"] = t
    t = x.clone()
    t.data.mul_(2)
    out["data"] = t
    t = x.clone()
    t.narrow(1, 1, 2).zero_()
    out["narrow"] = t
    t = x.clone()
    t.select(1, 0).fill_(4)
    out["select"] = t
    t = x.clone()
    t.flatten(1)[:, 0] = 7
    out["flatten"] = t
    t = x.clone()
    t.permute(2, 0, 1)[0] += 1
    out["permute"] = t
    t = x.clone()
    t.movedim(2, 0)[1] += 1
    out["movedim"] = t
    t = x.clone()
    t.mT[:, 0] = 1
    out["mT"] = t
    t = x.clone()
    t.unflatten(2, (2, 3))[:, :, 0] = 0
    out["unflatten"] = t
    t = x.clone()
    t[:, :1].squeeze(1).add_(1)
    out["squeeze"] = t
    t = x.clone()
    t[:, None][:, 0, 0] = 3
    t[..., 0] = 3
    t[:, -1] *= 0
    t[0, 1, 2] = 100.0
    out["indexing"] = t
    t = x.clone()
    t[:, 0].cumsum_(1)
    t[:, 1].cumprod_(-1)
    t[:, 2].abs_().log1p_()
    t[:, 3].expm1_()
    out["fallback_methods"] = t
    t = x.clone()
    m = t[:, :, :4].clone()
    t[:, :, :4].baddbmm_(m, m[:, :4, :4], beta=0.5, alpha=2.0)
    out["baddbmm_"] = t
    t = x.clone()
    F.threshold(t[:, 0], 0.1, 20.0, inplace=True)
    lib.nn.Threshold(0.1, 20.0, inplace=True)(t[:, 1])
    lib.nn.RReLU(inplace=True).eval()(t[:, 2])
    F.alpha_dropout(t[:, 3], 0.5, training=False, inplace=True)
    out["activations"] = t
    t = x.clone()
    aliases = [t.float(), t.to(lib.float32), t.contiguous(), t.reshape(t.shape), t.type_as(t), t[:], t[...],
               t.requires_grad_(False)]
    for k, v in enumerate(aliases):
        v.add_(k)  # each is t itself or a view of all of it, as in PyTorch
    out["no_op_aliases"] = t
    t = x.clone()
    kept = [t, t[:, 0]]
    t += 1
    out["list_alias"] = kept[1] * 1.0
    t = x.clone()
    y = t * 2
    z = t[:, 0] + 0  # values read before the write keep the old values
    t.add_(100)
    out["read_before_write"] = z + y[:, 0]
    t = x.clone()
    e = t[:, :1].expand_as(t)
    t[:, 0] = 0
    out["expand_as_sees_base"] = e * 1
    t = x.clone() > 0
    s = t[:, 0]
    t &= x < 0.5
    out["iand_view"] = s.float()
    x.mul_(2)  # the forward's own input
    out["input"] = x * 1
    return out


class ViewCases(graphc.nn.Module):
    def forward(self, x):
        return view_cases(graphc, x)


def test_writes_through_every_view_kind_eager_traced_compiled_and_torch_agree(tmp_path, shared_cache):
    torch = pytest.importorskip("torch")
    x0 = np.random.RandomState(0).randn(2, 4, 6).astype(np.float32)
    dyn = {"x": {0: "B"}}
    g = graphc.trace(ViewCases(), (x0.copy(),), dyn)
    cm = graphc.compile(ViewCases(), (x0.copy(),), dyn, cache_dir=shared_cache)
    for b in (2, 3):
        x = np.random.RandomState(b).randn(b, 4, 6).astype(np.float32)
        with torch.no_grad():
            ref = {k: v.numpy().astype(np.float32) for k, v in view_cases(torch, torch.tensor(x)).items()}
        eager = {k: v.numpy() for k, v in ViewCases()(graphc.tensor(x.copy())).items()}
        traced = interpret(g, {"x": x.copy()})
        compiled = dict(zip(eager, cm(x.copy())))
        assert list(ref) == list(eager) == list(traced)
        for k in ref:
            for name, got in (("eager", eager[k]), ("traced", traced[k]), ("compiled", compiled[k])):
                np.testing.assert_allclose(got.astype(np.float32), ref[k], rtol=1e-4, atol=1e-4,
                                           err_msg=f"{name} {k} B={b}")


# -------------------------------------------------------------------- in-place methods that relayout
RELAYOUT = {"t_": (), "transpose_": (0, 1), "swapaxes_": (0, 1), "swapdims_": (0, 1), "squeeze_": (),
            "unsqueeze_": (0,)}


class Relayout(graphc.nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, x):
        t = x.clone()
        getattr(t, self.method)(*RELAYOUT[self.method])  # <relayout>
        return t


@pytest.mark.parametrize("method", list(RELAYOUT))
def test_inplace_relayout_methods_are_refused(method):
    torch = pytest.importorskip("torch")
    assert hasattr(torch.Tensor, method)  # PyTorch has it: graphc refuses it, never computes something else
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    words = f"{method}: graphc does not change a tensor's shape or strides in place"
    with pytest.raises(RuntimeError, match=re.escape(words)):
        Relayout(method)(graphc.tensor(x))
    with pytest.raises(RuntimeError, match=re.escape(words)) as ei:
        graphc.trace(Relayout(method), (x,))
    assert _line("relayout") in str(ei.value) and "\n" not in str(ei.value)


def test_a_square_t_never_rewrites_a_view_taken_before_it():
    # the value write made v the first column of the old x (PyTorch: v keeps the first row)
    x = graphc.tensor(np.arange(9, dtype=np.float32).reshape(3, 3))
    v = x[0]
    with pytest.raises(RuntimeError, match="t_: graphc does not change"):
        x.t_()
    assert v.tolist() == [0.0, 1.0, 2.0] and x.tolist()[1] == [3.0, 4.0, 5.0]


def test_view_methods_have_no_inplace_form_as_in_torch():
    torch = pytest.importorskip("torch")
    for name in ("permute_", "view_", "reshape_", "expand_", "narrow_", "contiguous_", "flatten_"):
        assert not hasattr(torch.Tensor, name)
        with pytest.raises(AttributeError, match=f"no attribute '{name}'"):
            getattr(graphc.ones(2, 2), name)


# ------------------------------------------------------------------------ == and != on dynamic dims
class DimEquality(graphc.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        B, T = x.shape
        if self.mode == "eq":
            if B == 3:  # <eq>
                return x * 2
        elif self.mode == "ne":
            if T != 1:  # <ne>
                return x * 2
        elif self.mode == "two_dims":
            if B == T:  # <two_dims>
                return x * 2
        elif self.mode == "in":
            if B in (1, 2):  # <in>
                return x * 2
        return x


@pytest.mark.parametrize("mode,words", [("eq", "'B == 3'"), ("ne", "'T != 1'"), ("two_dims", "'B == T'"),
                                        ("in", "'B == 1'")])
def test_equality_the_range_cannot_decide_is_refused_at_the_users_line(mode, words):
    with pytest.raises(TraceError) as ei:
        graphc.trace(DimEquality(mode), (np.ones((3, 5), np.float32),),
                     {"x": {0: graphc.Dim("B", 1, 64), 1: graphc.Dim("T", 1, 64)}})
    msg = str(ei.value)
    assert f"{words} depends on the value of a dynamic dim" in msg and _line(mode) in msg and "\n" not in msg, msg


class DecidedEquality(graphc.nn.Module):
    def forward(self, x):
        B, T = x.shape
        assert B != 0 and T != 0 and not B == 100 and T == T and B * T == x.numel()
        assert x.shape[1:] == (T,) and tuple(x.shape) == (B, T) and B != 2.5
        y = x * 2 if B != 1 else x  # B in 2..8: decided
        return y + 1 if T == 5 else y  # T in 5..5 is decided too


def test_equality_the_range_decides_is_decided_and_compiled(tmp_path, shared_cache):
    torch = pytest.importorskip("torch")
    dyn = {"x": {0: graphc.Dim("B", 2, 8), 1: graphc.Dim("T", 5, 5)}}
    x0 = np.ones((2, 5), np.float32)
    g = graphc.trace(DecidedEquality(), (x0,), dyn)
    cm = graphc.compile(DecidedEquality(), (x0,), dyn, cache_dir=shared_cache)
    for b in (2, 7):
        x = np.random.RandomState(b).randn(b, 5).astype(np.float32)
        ref = DecidedEquality()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(interpret(g, {"x": x})["output"], ref, rtol=1e-6)
        np.testing.assert_allclose(cm(x), ref, rtol=1e-6)


# ------------------------------------------------------------ dynamic dims as powers and fill values
def dim_values(lib, x):
    B = x.shape[0]
    t = x.clone()
    t.fill_(B)
    return {"pow": x * B ** 2 + B ** 0, "full": lib.full((2, 3), B) * 1,
            "full_float": lib.full((2,), B, dtype=lib.float32), "new_full": x.new_full((1, 6), B), "fill_": t,
            "masked_fill": x.masked_fill(x > 0, B)}


class DimValues(graphc.nn.Module):
    def forward(self, x):
        return dim_values(graphc, x)


def test_dynamic_dims_as_powers_and_fill_values_eager_traced_compiled(tmp_path, shared_cache):
    torch = pytest.importorskip("torch")
    x0 = np.ones((2, 6), np.float32)
    dyn = {"x": {0: "B"}}
    g = graphc.trace(DimValues(), (x0,), dyn)
    cm = graphc.compile(DimValues(), (x0,), dyn, cache_dir=shared_cache)
    for b in (2, 5):
        x = np.random.RandomState(b).randn(b, 6).astype(np.float32)
        ref = {k: v.numpy() for k, v in dim_values(torch, torch.tensor(x)).items()}
        traced = interpret(g, {"x": x})
        compiled = dict(zip(traced, cm(x)))
        eager = {k: v.numpy() for k, v in DimValues()(graphc.tensor(x)).items()}
        for k in ref:
            for name, got in (("eager", eager[k]), ("traced", traced[k]), ("compiled", compiled[k])):
                assert got.dtype == ref[k].dtype, (name, k, got.dtype, ref[k].dtype)
                np.testing.assert_allclose(got, ref[k], rtol=1e-6, err_msg=f"{name} {k} B={b}")


class DimFloatPowers(graphc.nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        B = x.shape[0]
        if self.mode == "rpow":
            return x * 2 ** B  # <rpow>
        return x * B ** -1  # <negpow>


@pytest.mark.parametrize("mode,words", [("rpow", "'2 ** B' needs the value of the dynamic size B"),
                                        ("negpow", "'B ** -1' is a float")])
def test_dynamic_dims_in_float_powers_are_one_line_errors(mode, words):
    with pytest.raises(TraceError) as ei:
        graphc.trace(DimFloatPowers(mode), (np.ones((2, 3), np.float32),), {"x": {0: "B"}})
    msg = str(ei.value)
    assert words in msg and _line(mode) in msg and "\n" not in msg, msg


# --------------------------------------------------------------------------- cache records under -O
def test_a_malformed_cache_record_is_untrusted_under_python_O(tmp_path):
    records = ['{"files": 5}', '{"files": {"libm.so": 5}}', '{"files": {"libm.so": {"size": "1", "sha256": "0"}}}',
               '{"files": []}', '[]', 'garbage{']
    folders = []
    for i, rec in enumerate(records):
        d = tmp_path / f"entry{i}"
        d.mkdir()
        (d / "libm.so").write_bytes(b"x")
        (d / "graphc-entry.json").write_text(rec)
        folders.append(str(d))
    code = ("import json, sys\nfrom graphc.backend.build import entry_problem\n"
            "print(json.dumps([entry_problem(__import__('pathlib').Path(f), ['libm.so']) for f in sys.argv[1:]]))")
    for flags in ([], ["-O"]):
        r = subprocess.run([sys.executable, *flags, "-c", code, *folders], capture_output=True, text=True,
                           cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
        assert r.returncode == 0, r.stderr
        problems = json.loads(r.stdout)
        assert all(p and "graphc-entry.json" in p for p in problems), (flags, problems)


# ------------------------------------------------------------------------- squeeze of a dynamic dim
class SqueezeDynamic(graphc.nn.Module):
    def forward(self, x):
        return x.squeeze(0) * 2  # <squeeze>


def test_squeeze_of_a_dynamic_dim_that_may_be_1_is_refused_at_the_users_line():
    # the trace kept the dim, so at B=1 the library's output had PyTorch's shape plus a leading 1
    with pytest.raises(TraceError) as ei:
        graphc.trace(SqueezeDynamic(), (np.ones((1, 5), np.float32),), {"x": {0: "B"}})
    msg = str(ei.value)
    assert "squeeze(0) of the dynamic size B (B in 1..256)" in msg and _line("squeeze") in msg, msg
    torch = pytest.importorskip("torch")
    g = graphc.trace(SqueezeDynamic(), (np.ones((2, 5), np.float32),), {"x": {0: graphc.Dim("B", 2, 8)}})
    x = np.random.RandomState(0).randn(3, 5).astype(np.float32)  # B >= 2: the dim is kept, as by PyTorch
    np.testing.assert_array_equal(interpret(g, {"x": x})["output"], SqueezeDynamic()(torch.tensor(x)).numpy())
    g = graphc.trace(SqueezeDynamic(), (np.ones((1, 5), np.float32),))  # static 1: squeezed
    np.testing.assert_array_equal(interpret(g, {"x": x[:1]})["output"], x[0] * 2)
