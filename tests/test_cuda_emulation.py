"""The CUDA backend's generated code run on the CPU, through a CUDA emulation: every kernel family and every
example against the numpy reference interpreter, on machines without a GPU (like this one and CI).

tests/cuda_emu/cuda_runtime.h stands in for the CUDA runtime and tests/cuda_emu/emulate.py builds the
generated sources with the host C++ compiler (see their docstrings: blocks run one after another, the
threads of a block are fibers that meet at every __syncthreads, launch configurations are checked,
fresh device memory is NaN). Grids are capped at 3 blocks per dim, so every grid-stride loop, row loop
and GEMM tile loop takes its striding path. What this cannot check is listed in docs/cuda-backend.md
(races a GPU would expose, warp behaviour, the real nvcc/ptxas code, speed); tests/test_backend_cuda.py
runs the same comparisons on a real GPU when one is present.

The op-family graphs and their tolerances are the C backend's (tests/test_backend_c.py); ``stress_graph``
adds the sizes that only matter on a GPU: several GEMM tiles and partial ones, rows longer than a block,
attention over several key chunks, value heads wider than a block, convolutions in several im2col passes.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc.backend import optimize_graph
from graphc.backend.compiled import RuntimeErrorC
from graphc.ir import Graph
from tests.cuda_emu import emulate
from tests.shared_build import shared_cache_dir
from tests.test_backend_c import (
    GB,
    B,
    check,
    elementwise_graph,
    feeds,
    matmul_graph,
    nn_graph,
    nn_ints,
    reduce_graph,
    shape_graph,
    shape_ints,
)

f32, f64, i64 = graphc.float32, graphc.float64, graphc.int64

pytestmark = pytest.mark.skipif(not emulate.available(), reason="needs a C++ compiler (g++ or $CXX) and a C compiler")


def stress_graph() -> Graph:
    gb = GB("stress", {"B": (1, 4)})
    a = gb.input("a", (B, 70, 40))
    bm = gb.input("bm", (40, 130))
    gb.out("mm", gb("matmul", a, bm))  # 2 x 3 tiles of 64, the last ones partial; k in 3 slices of 16
    gb.out("mm_batched", gb("matmul", a, gb.input("bb", (B, 40, 66))))
    gb.out("mm_i64", gb("matmul", gb.input("ai", (3, 70, 20), i64), gb.input("bi", (20, 65), i64)))
    gb.out("mm_f64", gb("matmul", gb("cast", a, dtype=f64), gb("cast", bm, dtype=f64)))
    gb.out("linear", gb("linear", a, gb.param("fc.weight", (129, 40)), gb.param("fc.bias", (129,)), scope="fc"))
    r = gb.input("r", (B, 3, 300))  # rows longer than a block of 256 threads
    for op in ("sum", "mean", "amax", "amin", "var"):
        gb.out(f"{op}_long", gb(op, r, dims=(2,)))
    gb.out("sum_cols", gb("sum", r, dims=(0, 1)))
    gb.out("argmax_long", gb("argmax", r, dim=2))
    gb.out("argmin_long", gb("argmin", r, dim=2))
    gb.out("softmax_long", gb("softmax", r, dim=2))
    gb.out("log_softmax_mid", gb("log_softmax", gb.input("rm", (2, 300, 3)), dim=1))
    gb.out("ln_long", gb("layer_norm", r, gb.param("ln.weight", (300,)), gb.param("ln.bias", (300,)), ndim=1,
                         eps=1e-5))
    gb.out("rms_long", gb("rms_norm", r, gb.param("rms.weight", (300,)), ndim=1, eps=1e-6))
    gb.out("gn_long", gb("group_norm", gb.input("gx", (B, 4, 10, 30)), gb.param("gn.weight", (4,)),
                         gb.param("gn.bias", (4,)), num_groups=2, eps=1e-5))
    q = gb.input("q", (B, 2, 3, 8))
    kv = gb.input("kv", (B, 2, 600, 8))  # three chunks of 256 keys
    gb.out("sdpa_long", gb("sdpa", q, kv, kv, gb.input("mask", (1, 1, 3, 600)), scale=0.4))
    qc = gb.input("qc", (1, 1, 300, 4))  # query rows past the first chunk of keys
    gb.out("sdpa_causal", gb("sdpa", qc, qc, qc, scale=0.5, is_causal=True))
    gb.out("sdpa_wide_v", gb("sdpa", q, kv, gb.input("vw", (B, 2, 600, 300)), scale=0.3))  # 2 columns per thread
    x = gb.input("x", (B, 6, 11, 9))
    gb.out("conv", gb("conv", x, gb.param("c.weight", (8, 3, 3, 2)), gb.param("c.bias", (8,)), stride=(2, 1),
                      padding=(1, 1), dilation=(1, 2), groups=2, scope="c"))
    gb.out("conv_1x1", gb("conv", x, gb.param("p.weight", (4, 3, 1, 1)), gb.param("p.bias", (4,)), stride=(1, 1),
                          padding=(0, 0), dilation=(1, 1), groups=2))
    gb.out("convt", gb("conv_transpose", x, gb.param("t.weight", (6, 2, 3, 3)), gb.param("t.bias", (4,)),
                       stride=(2, 2), padding=(1, 0), output_padding=(1, 1), dilation=(1, 1), groups=2))
    gb.out("maxpool", gb("max_pool2d", x, kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 1),
                         ceil_mode=True))
    gb.out("avgpool", gb("avg_pool2d", x, kernel=(3, 2), stride=(2, 2), padding=(1, 1), count_include_pad=True))
    gb.out("emb", gb("embedding", gb.input("ids", (B, 700), i64), gb.param("emb.weight", (50, 3))))
    return gb.graph()


def stress_ints(name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 50, shape) if name == "ids" else rng.integers(-4, 5, shape)


# (graph, opt_level, check arguments)
CASES: dict[str, tuple[Callable[[], Graph], int, dict[str, Any]]] = {
    "elementwise": (elementwise_graph, 2,
                    {"tol": {"pow_pos": (1e-5, 1e-5), "f64": (1e-12, 1e-12), "f64_gelu": (1e-6, 1e-6)}}),
    "matmuls": (matmul_graph, 2, {"rtol": 1e-4, "atol": 1e-4, "tol": {"f64": (1e-12, 1e-12)}}),
    "reductions": (reduce_graph, 2, {"rtol": 2e-5, "atol": 2e-5, "tol": {"mean_f64": (1e-12, 1e-12)}}),
    "shapes": (shape_graph, 1, {"ints": shape_ints}),
    "nnops": (nn_graph, 1, {"rtol": 1e-4, "atol": 1e-4, "ints": nn_ints}),
    "stress": (stress_graph, 2, {"rtol": 1e-4, "atol": 1e-4, "ints": stress_ints, "batches": (1, 3),
                                 "tol": {"mm_f64": (1e-12, 1e-12), "sum_cols": (1e-4, 1e-3)}}),
}
EXAMPLES = ["mlp", "resnet", "transformer", "lora", "digits"]


@pytest.fixture(scope="module")
def emu_cache() -> str:
    """The backend tests' build cache (content-addressed; GRAPHC_TEST_CACHE_DIR overrides its place)."""
    return shared_cache_dir()


@pytest.fixture(scope="module")
def built(emu_cache: str) -> dict[str, Any]:
    """Every case and example built at once (the compiler runs in parallel); a failed build is re-raised by
    the test that needs it."""
    from graphc.backend import cuda
    from graphc.trace import trace
    from tests.test_examples import load_example

    jobs: dict[str, tuple[Graph, int]] = {}
    for name, (fn, level, _) in CASES.items():
        jobs[name] = (optimize_graph(fn(), level), level)
    for name in EXAMPLES:
        ns = load_example(name)
        g = optimize_graph(trace(ns["model"], ns["example_inputs"], ns.get("dynamic"), name=name), 2)
        g.name = name
        jobs[name] = (g, 2)
    old = cuda.IM2COL_FLOATS
    cuda.IM2COL_FLOATS = 3000  # the stress convolutions run in several im2col passes at B=3
    try:
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            futures = {name: pool.submit(emulate.build, g, emu_cache, opt_level=level)
                       for name, (g, level) in jobs.items()}
            out: dict[str, Any] = {}
            for name, f in futures.items():
                try:
                    out[name] = f.result()
                except Exception as e:  # noqa: BLE001 - reported by the test of that model
                    out[name] = e
    finally:
        cuda.IM2COL_FLOATS = old
    return out


def model(built: dict[str, Any], name: str) -> Any:
    m = built[name]
    if isinstance(m, Exception):
        raise m
    return m


@pytest.mark.parametrize("name", list(CASES))
def test_op_families_match_the_reference(built: dict[str, Any], name: str) -> None:
    fn, _, kw = CASES[name]
    check(model(built, name), fn(), **kw)


def test_stress_convolutions_run_in_several_passes(built: dict[str, Any]) -> None:
    src = model(built, "stress").sources["stress_kernels0.cu"]
    assert "gcx_n0 += 1)" in src or "gcx_n0 += 2)" in src, "the im2col chunk should be one or two images"


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_match_the_reference(built: dict[str, Any], name: str) -> None:
    from graphc.ir import interpret
    from tests.test_examples import inputs_like, load_example

    m = model(built, name)
    ns = load_example(name)
    for batch in (1, 2):
        xs = inputs_like(ns["example_inputs"], batch)
        f = dict(zip(m.input_names, xs))
        want = interpret(optimize_graph(graphc.trace(ns["model"], ns["example_inputs"], ns.get("dynamic"),
                                                     name=name), 2), f)
        got = m.run(**f)
        for k, w in want.items():
            scale = max(1.0, float(np.abs(w).max()))
            np.testing.assert_allclose(got[k], w, rtol=0, atol=2e-5 * scale, err_msg=f"{name} {k} B={batch}")


def test_index_out_of_range_is_reported_after_the_run(built: dict[str, Any]) -> None:
    g = shape_graph()
    m = model(built, "shapes")
    f = feeds(g, 2, ints=shape_ints)
    f["si"] = np.array([0, 1, 6, 2], dtype=np.int64)
    with pytest.raises(RuntimeErrorC, match="index_select.*out of range") as e:
        m.run(**f)
    assert e.value.status == -6
    f = feeds(g, 2, ints=shape_ints)  # the flag is cleared by the next run
    m.run(**f)


def test_run_device_takes_device_pointers(built: dict[str, Any]) -> None:
    """NAME_run_device_v (zero-copy): the emulation's device pointers are host pointers, so numpy buffers
    serve as device memory; the outputs equal run()'s."""
    g = matmul_graph()
    m = model(built, "matmuls")
    f = feeds(g, 3)
    want = m.run(**f)
    lib, ctx = m._lib, m._ctx
    ffi = lib.ffi
    outs = [np.empty(s.resolve({"B": 3}), s.np) for s in m.outputs]
    arrays = [np.ascontiguousarray(f[n]) for n in m.input_names]
    keep = [ffi.from_buffer(a) for a in arrays + outs]
    dims = ffi.new("int64_t[]", [3])
    ins = ffi.new("void *[]", keep[:len(arrays)])
    ous = ffi.new("void *[]", keep[len(arrays):])
    run_device_v = getattr(lib.lib, f"{m.name}_run_device_v")
    assert run_device_v(ctx.ptr, dims, ins, ous) == 0
    for k, o in zip(m.output_names, outs):
        np.testing.assert_array_equal(o, want[k], err_msg=k)
    dims[0] = 99
    assert run_device_v(ctx.ptr, dims, ins, ous) == -1
    assert "dim B=99 is outside 1..16" in ffi.string(lib.last_error(ctx.ptr)).decode()



def test_misaligned_pointers_are_refused(built: dict[str, Any]) -> None:
    """A host or device pointer not aligned to its element size is one INVALID_ARGUMENT naming the tensor
    and its address's alignment (on a GPU, a kernel's load through it is a misaligned-address fault that
    spoils the context); the context runs afterwards."""
    import re

    g = matmul_graph()
    m = model(built, "matmuls")
    f = feeds(g, 3)
    lib, ctx = m._lib, m._ctx
    ffi = lib.ffi
    arrays = [np.ascontiguousarray(f[n]) for n in m.input_names]
    outs = [np.empty(s.resolve({"B": 3}), s.np) for s in m.outputs]
    keep = [ffi.from_buffer(a) for a in arrays + outs]
    spare = np.zeros(max(a.nbytes for a in arrays + outs) + 16, np.uint8)
    dims = ffi.new("int64_t[]", [3])
    run_v = getattr(lib.lib, f"{m.name}_run_v")
    run_device_v = getattr(lib.lib, f"{m.name}_run_device_v")
    checked = 0
    for k, spec in enumerate([*m.inputs, *m.outputs]):
        size = spec.dtype.itemsize
        for off in (1, 2, 4):
            if off >= size:
                continue
            ptrs = list(keep)
            ptrs[k] = ffi.cast("char *", ffi.from_buffer(spare)) + off
            ins = ffi.new("void *[]", ptrs[:len(arrays)])
            ous = ffi.new("void *[]", ptrs[len(arrays):])
            kind = "input" if k < len(arrays) else "output"
            want = (rf"{kind} '{spec.name}' \({spec.dtype.short}\) at 0x[0-9a-f]+ is "
                    rf"aligned to {off} bytes?, its element size needs {size}$")
            for fn in (run_v, run_device_v):
                assert fn(ctx.ptr, dims, ins, ous) == -1
                assert re.match(want, ffi.string(lib.last_error(ctx.ptr)).decode()), \
                    ffi.string(lib.last_error(ctx.ptr)).decode()
            checked += 1
    assert checked >= 3
    want = m.run(**f)
    ins = ffi.new("void *[]", keep[:len(arrays)])
    ous = ffi.new("void *[]", keep[len(arrays):])
    assert run_v(ctx.ptr, dims, ins, ous) == 0
    for k, o in zip(m.output_names, outs):
        np.testing.assert_array_equal(o, want[k], err_msg=k)

def test_device_arena_is_sized_by_the_runs(built: dict[str, Any]) -> None:
    """create allocates no device arena; a run allocates what its batch needs, a smaller one keeps it; the
    caller's device memory (NAME_set_arena: numpy buffers are device memory here) runs without growing, and a
    run needing more than it is refused before anything runs; NAME_arena_bytes is 0 out of range."""
    from graphc.backend.compiled import aligned_empty

    g = matmul_graph()
    m = model(built, "matmuls").new_context()
    tol = {"rtol": 1e-4, "atol": 1e-4, "tol": {"f64": (1e-12, 1e-12)}}
    assert m.arena_capacity == 0
    for b, cap in ((3, 3), (5, 5), (2, 5), (16, 16), (1, 16)):
        check(m, g, batches=(b,), **tol)
        assert m.arena_capacity == m.arena_bytes(B=cap) > 0
    lib, ctx = m._lib, m._ctx
    ffi = lib.ffi
    for bad in (0, 17, -1, 2**63 - 1):
        assert lib.arena_bytes(ffi.new("int64_t[]", [bad])) == 0
    set_arena = getattr(lib.lib, f"{m.name}_set_arena")
    need = m.arena_bytes(B=4)
    buf = aligned_empty(need + 64)
    assert set_arena(ctx.ptr, ffi.from_buffer(buf[8:]), need) == -1
    assert "must be MATMULS_ARENA_ALIGN (64) byte aligned" in ffi.string(lib.last_error(ctx.ptr)).decode()
    assert set_arena(ctx.ptr, ffi.from_buffer(buf), need) == 0
    assert m.arena_capacity == need
    check(m, g, batches=(4, 1), **tol)
    assert m.arena_capacity == need
    with pytest.raises(RuntimeErrorC, match=rf"the arena given by matmuls_set_arena has {need} bytes, this run needs "
                                            rf"{m.arena_bytes(B=7)}: nothing was run") as e:
        m.run(**feeds(g, 7))
    assert e.value.status == -5
    with pytest.raises(graphc.GraphcError, match="device memory"):
        m.set_arena(buf)
    assert set_arena(ctx.ptr, ffi.NULL, 0) == 0 and m.arena_capacity == 0
    check(m, g, batches=(7,), **tol)
    assert m.arena_capacity == m.arena_bytes(B=7)


def test_no_device_is_a_clear_error(built: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from graphc.backend import load_compiled

    monkeypatch.setenv("GC_EMU_NO_DEVICE", "1")
    m = load_compiled(model(built, "mlp").directory)
    with pytest.raises(RuntimeErrorC, match=r"mlp_create failed: no CUDA device \(cudaGetDeviceCount: no CUDA-capable"
                                            r" device is detected\)") as e:
        m(np.zeros((1, 784), np.float32))
    assert e.value.status == -8


def test_weights_of_another_model_are_refused(built: dict[str, Any]) -> None:
    from graphc.backend import load_compiled

    other = model(built, "lora")
    m = load_compiled(model(built, "mlp").directory, weights=other.weights_path)
    with pytest.raises(RuntimeErrorC, match="holds the weights of model 'lora', not 'mlp'") as e:
        m(np.zeros((1, 784), np.float32))
    assert e.value.status == -4


def test_no_call_inside_the_library_goes_through_the_plt(built: dict[str, Any]) -> None:
    """NAME_run / NAME_run_device reach the run bodies without a dynamic relocation to one of the library's
    own symbols (issue 9: a host holding another library of the same model name must not divert them)."""
    import shutil
    import subprocess

    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("needs readelf")
    m = model(built, "matmuls")
    out = subprocess.run([readelf, "-rW", str(m.lib_path)], capture_output=True, text=True, check=True).stdout
    own = [line for line in out.splitlines() if f" {m.name}_" in line]
    assert own == []
