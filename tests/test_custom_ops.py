"""graphc.library.custom_op: ops defined in user code, eager (their numpy reference), traced, interpreted,
compiled into the C library (their C source in its own translation unit, renamed) and run on the
emulated CUDA backend (their CUDA source), against the numpy reference written here; and the errors: a
duplicate or malformed name, C source that does not compile (the compiler's lines, numbered as in the
user's string), a failing call, a missing CUDA source. Every op a test registers is removed after it,
so the op-table tests (which require a sample case per registry op) never see them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import library
from graphc.errors import CompileError, UnsupportedError
from tests.shared_build import shared_cache_dir

ROOT = Path(__file__).resolve().parent.parent

SOFTCLIP_C = r"""
static float clip1(float v, double limit) { return (float)(tanh(v / limit) * limit); }

int softclip(const float *x, const int64_t *x_shape, float *out, const int64_t *out_shape, double limit)
{
    int64_t n = x_shape[0] * x_shape[1];
    (void)out_shape;
    for (int64_t i = 0; i < n; i++)
        out[i] = clip1(x[i], limit);
    return 0;
}
"""

# the sums of adjacent pairs along the last dim, plus an integer offset: [..., 2m] -> [..., m]; int64 and float
PAIRSUM_C = r"""
int pairsum(const double *x, const int64_t *x_shape, double *out, const int64_t *out_shape, int64_t offset,
            int negate)
{
    int64_t rows = x_shape[0], m = out_shape[1];
    if (x_shape[1] != 2 * m)
        return 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < m; j++) {
            double s = x[r * 2 * m + 2 * j] + x[r * 2 * m + 2 * j + 1] + (double)offset;
            out[r * m + j] = negate ? -s : s;
        }
    return 0;
}
"""

SOFTCLIP_CU = r"""
__global__ void softclip_kernel(const float *x, float *out, int64_t n, double limit)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = (float)(tanh(x[i] / limit) * limit);
}

int softclip(const float *x, const int64_t *x_shape, float *out, const int64_t *out_shape, double limit,
             cudaStream_t stream)
{
    const int64_t n = x_shape[0] * x_shape[1];
    (void)out_shape;
    if (n > 0)
        softclip_kernel<<<(unsigned)((n + 127) / 128), 128, 0, stream>>>(x, out, n, limit);
    return 0;
}
"""


@pytest.fixture(scope="module")
def cache():
    """The backend tests' build cache: the runtime's objects build once (see tests/test_backend_c.py)."""
    return shared_cache_dir()


@pytest.fixture(autouse=True)
def _clean_registry():
    before = set(library.CUSTOM_OPS)
    yield
    for name in set(library.CUSTOM_OPS) - before:
        library.remove(name)


def _softclip(cuda_source=None):
    @library.custom_op("testlib::softclip", attrs={"limit": 1.0}, c_source=SOFTCLIP_C, cuda_source=cuda_source)
    def softclip(x, limit):
        return np.tanh(x.astype(np.float64) / limit) * limit

    return softclip


def _pairsum():
    def rule(x, offset, negate):
        if x.dtype is not graphc.float64 or x.ndim != 2:
            raise graphc.ShapeError(f"pairsum takes a 2-d float64 tensor, got {x}")
        return x.with_shape((x.shape[0], x.shape[1] // 2))

    return library.custom_op("testlib::pairsum", lambda x, offset, negate: (
        (-1 if negate else 1) * (x[:, 0::2] + x[:, 1::2] + offset)), attrs={"offset": "int", "negate": False},
        shape=rule, c_source=PAIRSUM_C)


class Model(graphc.nn.Module):
    def __init__(self, softclip, pairsum):
        super().__init__()
        self.lin = graphc.nn.Linear(6, 6)
        self.softclip, self.pairsum = softclip, pairsum

    def forward(self, x):
        y = self.softclip(self.lin(x), limit=1.5)
        z = self.pairsum(y.to(graphc.float64), offset=3, negate=True)
        return y * 2, z


def _want(m, x):
    y = np.tanh((x @ m.lin.weight.numpy().T + m.lin.bias.numpy()).astype(np.float64) / 1.5) * 1.5
    y = y.astype(np.float32)
    return y * 2, -(y[:, 0::2].astype(np.float64) + y[:, 1::2] + 3)


def test_custom_op_eager_traced_interpreted_and_compiled(cache):
    graphc.manual_seed(0)
    m = Model(_softclip(), _pairsum())
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    want = _want(m, x)
    got = m(graphc.tensor(x))  # eager: the numpy references
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-6)
    g = graphc.trace(m, (graphc.tensor(x),), {"x": {0: "B"}})
    text = str(g)
    assert "testlib.softclip[limit=1.5]" in text and "testlib.pairsum[negate=true, offset=3]" in text
    from graphc.ir import interpret, parse, print_graph

    assert print_graph(parse(text)) == print_graph(g)  # the IR text round-trips (the op is registered)
    out = interpret(g, {"x": x})
    np.testing.assert_allclose(out["output0"], want[0], rtol=1e-6)
    np.testing.assert_allclose(out["output1"], want[1], rtol=1e-6)
    lib = graphc.compile(m, (graphc.tensor(x),), {"x": {0: "B"}}, name="custom_model", cache_dir=cache)
    for b in (1, 5):
        xb = np.random.default_rng(b).standard_normal((b, 6)).astype(np.float32)
        res = lib.run(x=xb)
        w0, w1 = _want(m, xb)
        np.testing.assert_allclose(res["output0"], w0, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(res["output1"], w1, rtol=1e-6, atol=1e-6)


def test_generated_sources_rename_the_function_and_keep_the_users_line_numbers():
    m = Model(_softclip(), _pairsum())
    g = graphc.trace(m, (graphc.randn(2, 6),))
    from graphc.backend import generate

    _, files, _ = generate(g, name="gen")
    unit = files["gen_custom_testlib_softclip.c"]
    assert "#define softclip gen_custom_testlib_softclip" in unit and '#line 1 "testlib::softclip (c_source)"' in unit
    assert unit.rstrip().endswith("#undef softclip") and SOFTCLIP_C.strip() in unit
    assert "gen_custom_testlib_pairsum.c" in files["Makefile"]
    kernels = "".join(v for k, v in files.items() if "_kernels" in k)
    assert "gen_custom_testlib_pairsum(" in kernels and ", 3, 1)" in kernels  # offset, negate
    assert files == generate(g, name="gen")[1]  # byte-identical for the same input


def test_names_and_duplicates_are_clear_errors():
    _softclip()
    with pytest.raises(ValueError, match=r"'testlib::softclip' is already registered \(at test_custom_ops\.py:\d+\).*"
                                         r"graphc\.library\.remove"):
        _softclip()
    with pytest.raises(ValueError, match="namespace::name"):
        library.custom_op("softclip", lambda x: x, c_source=SOFTCLIP_C)
    with pytest.raises(ValueError, match="int, float and bool attributes"):
        library.custom_op("testlib::bad", lambda x, s: x, attrs={"s": "str"}, c_source=SOFTCLIP_C)
    library.remove("testlib::softclip")
    _softclip()  # redefinable after remove
    with pytest.raises(KeyError, match="no custom op named 'testlib::nothing'"):
        library.remove("testlib::nothing")
    from graphc.ops import OPS

    assert "relu" in OPS and "testlib.softclip" in OPS
    with pytest.raises(KeyError):
        library.remove("relu")  # built-ins are not custom ops


def test_c_source_that_does_not_compile_shows_the_compilers_lines(cache):
    broken = "int broken(const float *x, const int64_t *x_shape, float *out, const int64_t *out_shape)\n{\n" \
             "    return undefined_name;\n}\n"
    op = library.custom_op("testlib::broken", lambda x: x, c_source=broken)

    class M(graphc.nn.Module):
        def forward(self, x):
            return op(x)

    with pytest.raises(CompileError) as e:
        graphc.compile(M(), (graphc.randn(2, 3),), cache_dir=cache)
    msg = str(e.value)
    assert "testlib::broken (c_source):3" in msg and "undefined_name" in msg, msg


def test_a_function_that_does_not_match_its_prototype_is_a_compile_error(cache):
    op = library.custom_op("testlib::wrongsig", lambda x: x,
                           c_source="int wrongsig(const float *x, float *out) { (void)x; (void)out; return 0; }\n")

    class M(graphc.nn.Module):
        def forward(self, x):
            return op(x)

    with pytest.raises(CompileError, match=r"(?s)conflicting types.*testlib::wrongsig \(c_source\):1:"):
        graphc.compile(M(), (graphc.randn(2, 3),), cache_dir=cache)


def test_a_nonzero_return_fails_the_run_naming_the_op(cache):
    m = Model(_softclip(), _pairsum())

    class Odd(graphc.nn.Module):  # pairsum's C function refuses an odd row (its rule floors the size)
        def forward(self, x):
            return m.pairsum(x, offset=0)

    lib = graphc.compile(Odd(), (graphc.randn(2, 5).to(graphc.float64),), cache_dir=cache)
    with pytest.raises(graphc.GraphcError, match=r"custom op testlib::pairsum: its C function returned an error"):
        lib.run(x=np.ones((2, 5)))


def test_cuda_backend_needs_a_cuda_source_and_runs_it_on_the_emulation(tmp_path):
    from graphc.backend import generate

    softclip = _softclip()

    class M(graphc.nn.Module):
        def forward(self, x):
            return softclip(x, limit=0.7) + 1

    g = graphc.trace(M(), (graphc.randn(3, 4),), {"x": {0: "B"}})
    with pytest.raises(UnsupportedError, match=r"^not supported by the CUDA backend: op testlib\.softclip, .*"
                                               r"no CUDA source: pass cuda_source="):
        generate(g, backend="cuda")
    library.remove("testlib::softclip")
    softclip = _softclip(cuda_source=SOFTCLIP_CU)
    g = graphc.trace(M(), (graphc.randn(3, 4),), {"x": {0: "B"}})
    files = generate(g, backend="cuda", name="cu")[1]
    assert "cu_custom_testlib_softclip.cu" in files and "cudaStream_t stream" in files["cu_custom_testlib_softclip.cu"]
    from tests.cuda_emu import emulate

    if not emulate.available():
        pytest.skip("needs a C++ compiler for the CUDA emulation")
    model = emulate.build(g, tmp_path, cxx_opt="-O0")
    for b in (1, 6):
        x = np.random.default_rng(b).standard_normal((b, 4)).astype(np.float32)
        want = (np.tanh(x.astype(np.float64) / 0.7) * 0.7).astype(np.float32) + 1
        np.testing.assert_allclose(model.run(x=x)["output"], want, rtol=1e-6, atol=1e-6)


def test_the_worked_example_of_the_docs_runs(cache, monkeypatch):
    text = (ROOT / "docs" / "custom-ops.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("GRAPHC_CACHE_DIR", cache)
    exec(compile(code, "docs/custom-ops.md", "exec"), {"__name__": "custom_ops_doc"})  # it asserts itself
    assert "mylib.softclip" in library.CUSTOM_OPS


def test_cli_verify_compares_the_compiled_op_with_its_reference(tmp_path, cache):
    (tmp_path / "model.py").write_text(textwrap.dedent(f'''
        import numpy as np
        import graphc

        SRC = {SOFTCLIP_C!r}

        @graphc.library.custom_op("filelib::softclip", attrs={{"limit": 1.0}}, c_source=SRC)
        def softclip(x, limit):
            return np.tanh(x / limit) * limit

        class M(graphc.nn.Module):
            def forward(self, x):
                return softclip(x, limit=2.0).relu()

        model = M()
        example_inputs = (graphc.randn(2, 5),)
        dynamic = {{"x": {{0: "B"}}}}
    '''))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GRAPHC_CACHE_DIR=cache)
    r = subprocess.run([sys.executable, "-m", "graphc", "compile", "model.py", "-o", "out", "--verify"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify" in r.stdout and "max abs error" in r.stdout
    assert (tmp_path / "out").is_dir()
