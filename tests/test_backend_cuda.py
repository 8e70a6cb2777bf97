"""Tests of the CUDA backend (graphc/backend/cuda.py, templates/cuda/), in three tiers:

* always: every op-family graph of tests/test_backend_c.py and every example produce CUDA sources,
  deterministically, with the C backend's ABI plus the device-pointer entry points; unsupported ops and
  options fail with clear errors; ``emit_only`` and ``graphc compile --backend cuda --emit-c`` need no
  nvcc;
* when nvcc is installed: those sources compile (one translation unit per model, in parallel, warnings
  as errors), and ``graphc compile --backend cuda`` builds a library that loads; with no GPU its first
  call raises RuntimeErrorC with create's "no CUDA device" message (and ``graphc run`` says so);
* when a GPU is present as well: the compiled models match the reference interpreter.

Without a GPU the numerics are checked by tests/test_cuda_emulation.py on a CPU emulation of CUDA.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.backend import cuda, generate, optimize_graph
from graphc.backend.compiled import RuntimeErrorC
from graphc.errors import CompileError, UnsupportedError
from graphc.ir import Graph
from tests.shared_build import shared_cache_dir
from tests.test_backend_c import (
    GB,
    check,
    elementwise_graph,
    matmul_graph,
    nn_graph,
    nn_ints,
    reduce_graph,
    shape_graph,
    shape_ints,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["mlp", "resnet", "transformer", "lora", "digits"]
FAMILIES = {"elementwise": elementwise_graph, "matmuls": matmul_graph, "reductions": reduce_graph,
            "shapes": shape_graph, "nnops": nn_graph}

HAVE_NVCC = cuda.nvcc_available()
HAVE_GPU = HAVE_NVCC and cuda.gpu_available()
needs_nvcc = pytest.mark.skipif(not HAVE_NVCC, reason="nvcc (or $NVCC) is not installed: the CUDA sources are only "
                                "generated, not compiled")


def example_graph(name: str) -> Graph:
    from graphc.trace import trace
    from tests.test_examples import load_example

    ns = load_example(name)
    g = optimize_graph(trace(ns["model"], ns["example_inputs"], ns.get("dynamic"), name=name), 2)
    g.name = name
    return g


@pytest.fixture(scope="module")
def graphs() -> dict[str, Graph]:
    """The op-family graphs (optimised as the C tests compile them) and the examples' optimised graphs."""
    out = {name: optimize_graph(fn(), 1 if name in ("shapes", "nnops") else 2) for name, fn in FAMILIES.items()}
    out.update({name: example_graph(name) for name in EXAMPLES})
    return out


@pytest.fixture(scope="module")
def sources(graphs: dict[str, Graph]) -> dict[str, dict[str, str]]:
    return {name: generate(g.copy(), backend="cuda", arch="sm_75")[1] for name, g in graphs.items()}


# ------------------------------------------------------------------------------------- sources
def test_every_family_and_example_produces_cuda_sources(sources: dict[str, dict[str, str]]) -> None:
    for name, files in sources.items():
        assert {f"{name}.h", f"{name}_internal.cuh", f"{name}_model.cu", f"{name}_kernels0.cu", "main.c", "Makefile",
                f"{name}_cffi.h"} <= set(files), name
        kernels = "".join(t for n, t in files.items() if "_kernels" in n)
        assert "__global__" in kernels and "<<<" in kernels, name
        assert not any(n.endswith(".c") and n != "main.c" for n in files), name


def test_kernel_families_print_as_gpu_kernels(sources: dict[str, dict[str, str]]) -> None:
    kern = {name: "".join(t for n, t in files.items() if "_kernels" in n) for name, files in sources.items()}
    # elementwise groups: one grid-stride kernel per fused group, formulas as in C
    assert "gcx_t += (int64_t)gridDim.x * blockDim.x" in kern["elementwise"]
    assert "cudaError_t elementwise_abs_neg_tanh(" in kern["elementwise"]
    # matmul / linear / bilinear / conv: the shared tiled GEMM; reductions: shared-memory block reductions
    assert kern["matmuls"].count("gcx_gemm_tile<") >= 10
    assert "gcx_gemm_tile<int64_t, int64_t>" in kern["matmuls"] and "gcx_gemm_tile<double, double>" in kern["matmuls"]
    assert "gcx_block_reduce(" in kern["reductions"] and "__shared__" in kern["reductions"]
    assert "_im2col<<<" in kern["nnops"] and "*gcx_flag = 1;" in kern["nnops"]
    # nothing of the C runtime's kernels or OpenMP
    for name, text in kern.items():
        assert "gc_sgemm" not in text and "#pragma omp" not in text and "nthreads" not in text, name


def test_sources_are_deterministic() -> None:
    a = generate(nn_graph(), backend="cuda", arch="sm_80", weights="file")[1]
    b = generate(nn_graph(), backend="cuda", arch="sm_80", weights="file")[1]
    assert a == b
    c = generate(elementwise_graph(), backend="cuda", arch="sm_80")[1]
    d = generate(elementwise_graph(), backend="cuda", arch="sm_80")[1]
    assert c == d
    assert all("/tmp" not in t and "/home" not in t and "/root" not in t for t in (a | c).values())


def test_header_is_the_c_abi_plus_device_entry_points() -> None:
    g = matmul_graph()
    c_files = generate(g.copy())[1]
    cu_files = generate(g.copy(), backend="cuda", arch="sm_75")[1]

    def api(text: str) -> list[str]:
        return [line for line in text.splitlines() if "MATMULS_API" in line and "#define" not in line]

    c_api, cu_api = api(c_files["matmuls.h"]), api(cu_files["matmuls.h"])
    assert c_api and all(line in cu_api for line in c_api), "the CUDA header must declare the whole C ABI"
    extra = [line for line in cu_api if line not in c_api]
    assert len(extra) == 2 and "matmuls_run_device(" in extra[0] and "matmuls_run_device_v(" in extra[1]
    assert "MATMULS_ERR_DEVICE = -8" in cu_files["matmuls.h"] and "MATMULS_ERR_DEVICE = -8" in c_files["matmuls.h"]
    assert "HOST pointers" in cu_files["matmuls.h"] and "DEVICE pointers" in cu_files["matmuls.h"]
    assert "matmuls_run_device_v" in cu_files["matmuls_cffi.h"]


def test_every_registry_op_has_a_cuda_lowering() -> None:
    from graphc.backend.cuda import CudaBackend
    from graphc.ops import OPS

    be = CudaBackend()
    missing = [name for name, op in OPS.items() if not (op.family == "elementwise" and op.scalar)
               and op.family != "view" and be.lowering_for(op) is None]
    assert not missing, f"ops without a CUDA lowering: {missing}"
    # inherited C rules only move data and print through the backend's templates
    templates = ROOT / "templates" / "cuda"
    for family in ("strided", "concat", "pad", "fill", "copy", "elementwise"):
        assert (templates / f"{family}.cu.j2").exists()


def test_unsupported_names_op_dtype_and_module() -> None:
    gb = GB("bad")
    x = gb.input("x", (3,), graphc.float64)
    gb.out("y", gb("softmax", x, dim=0, scope="head.attn"))
    with pytest.raises(UnsupportedError, match=r"not supported by the CUDA backend: op softmax, dtype float64, at "
                                               r"module path head\.attn"):
        generate(gb.graph(), backend="cuda", arch="sm_75")


def test_arch_option() -> None:
    assert "-arch=sm_86" in generate(shape_graph(), backend="cuda", arch="sm_86")[2].nvcc_flags
    with pytest.raises(ValueError, match="arch must be"):
        generate(shape_graph(), backend="cuda", arch="volta")
    with pytest.raises(ValueError, match="arch is an option of the CUDA backend"):
        generate(shape_graph(), arch="sm_80")


def test_default_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_CUDA_ARCH", "sm_90")
    assert cuda.default_arch() == "sm_90"
    monkeypatch.delenv("GRAPHC_CUDA_ARCH")
    monkeypatch.setattr(cuda, "gpu_available", lambda: True)
    assert cuda.default_arch() == "native"
    monkeypatch.setattr(cuda, "gpu_available", lambda: False)
    monkeypatch.setattr(cuda, "nvcc_archs", lambda nvcc: ("sm_75", "sm_80"))  # CUDA 13 dropped sm_70
    assert cuda.default_arch() == "sm_75"
    monkeypatch.setattr(cuda, "nvcc_archs", lambda nvcc: ("sm_50", "sm_70", "sm_80"))
    assert cuda.default_arch() == "sm_70"


def test_emit_only_needs_no_nvcc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVCC", "/nonexistent/nvcc")
    out = tmp_path / "src"
    assert graphc.compile(matmul_graph(), backend="cuda", emit_only=True, out_dir=out, arch="sm_75") is None
    names = {p.name for p in out.iterdir()}
    assert {"matmuls.h", "matmuls_model.cu", "matmuls_kernels0.cu", "manifest.json", "matmuls.gir"} <= names
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["backend"] == "cuda" and manifest["options"]["arch"] == "sm_75"
    with pytest.raises(CompileError, match="cannot run the CUDA compiler '/nonexistent/nvcc'.*set NVCC"):
        graphc.compile(matmul_graph(), backend="cuda", cache_dir=tmp_path / "cache", arch="sm_75")


def test_cli_emits_cuda_sources(tmp_path: Path) -> None:
    from graphc.cli import main

    out = tmp_path / "mlp"
    assert main(["compile", str(ROOT / "examples" / "mlp" / "model.py"), "--backend", "cuda", "--emit-c", "-o",
                 str(out)]) == 0
    assert (out / "mlp_model.cu").exists() and (out / "mlp.h").exists()
    assert main(["compile", str(ROOT / "examples" / "mlp" / "model.py"), "--arch", "sm_80", "--emit-c", "-o",
                 str(tmp_path / "c")]) == 1  # --arch without --backend cuda


# ------------------------------------------------------------------------------------- nvcc
def _nvcc_compile(folder: Path, files: dict[str, str], flags: list[str]) -> tuple[str, int, str]:
    folder.mkdir(parents=True)
    for n, text in files.items():
        (folder / n).write_text(text)
    units = sorted(n for n in files if n.endswith(".cu"))
    (folder / "all.cu").write_text("".join(f'#include "{u}"\n' for u in units))
    cmd = [*cuda.nvcc(), *flags, "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra", "-I.",
           f"-I{ROOT / 'runtime_c'}", "-c", "all.cu", "-o", "all.o"]
    res = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    return folder.name, res.returncode, res.stderr[-4000:]


@needs_nvcc
def test_sources_compile_with_nvcc(sources: dict[str, dict[str, str]], tmp_path: Path) -> None:
    """Every family and example: its model and kernel units as one translation unit, all in parallel, with
    graphc's flags except host code at -O0 (the host compiler's optimiser is most of nvcc's time; ptxas
    still optimises the device code; test_cli_builds_a_library_that_reports_no_device builds at -O3)."""
    flags = generate(shape_graph(), backend="cuda", arch=cuda.default_arch())[2].nvcc_flags
    flags = ["-O0" if f == "-O3" else f for f in flags]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda item: _nvcc_compile(tmp_path / item[0], item[1], flags), sources.items()))
    failed = [f"{name}:\n{err}" for name, rc, err in results if rc != 0]
    assert not failed, "\n\n".join(failed)


@pytest.fixture(scope="module")
def cache_dir() -> str:
    return shared_cache_dir()


@needs_nvcc
@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device is present: the models run in test_models_match_on_the_gpu")
def test_cli_builds_a_library_that_reports_no_device(cache_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """graphc compile --backend cuda builds the .so with nvcc (at -O3, warnings as errors); without a GPU,
    opening it works and the first call fails in NAME_create with a clear error (status -8)."""
    from graphc.backend import load_compiled
    from graphc.cli import main

    monkeypatch.setenv("GRAPHC_NVCCFLAGS", "-Werror all-warnings -Xcompiler -Wall,-Wextra")
    out = tmp_path / "mlp"
    assert main(["compile", str(ROOT / "examples" / "mlp" / "model.py"), "--backend", "cuda", "-o", str(out),
                 "--cache-dir", cache_dir]) == 0
    assert (out / "libmlp.so").exists() and (out / "runtime" / "gc_safetensors.c").exists()
    capsys.readouterr()
    assert main(["run", str(out)]) == 1
    assert "graphc: error: mlp_create failed: no CUDA device (cudaGetDeviceCount: " in capsys.readouterr().err
    m = load_compiled(out)
    assert m.backend == "cuda" and re.search(r"-arch=\S+", " ".join(m.manifest["options"]["nvcc_flags"]))
    with pytest.raises(RuntimeErrorC, match=r"mlp_create failed: no CUDA device \(cudaGetDeviceCount: ") as e:
        m(np.ones((2, 784), np.float32))
    assert e.value.status == -8


# ------------------------------------------------------------------------------------- GPU
@pytest.mark.skipif(not HAVE_GPU, reason="needs a CUDA device (nvidia-smi -L / cuDeviceGetCount found none) and nvcc; "
                    "without one the numerics are checked on a CPU emulation in tests/test_cuda_emulation.py")
def test_models_match_on_the_gpu(graphs: dict[str, Graph], cache_dir: str) -> None:
    tols = {"elementwise": {"tol": {"pow_pos": (1e-5, 1e-5), "f64": (1e-12, 1e-12), "f64_gelu": (1e-6, 1e-6)}},
            "matmuls": {"rtol": 1e-4, "atol": 1e-4, "tol": {"f64": (1e-12, 1e-12)}},
            "reductions": {"rtol": 2e-5, "atol": 2e-5, "tol": {"mean_f64": (1e-12, 1e-12)}},
            "shapes": {"ints": shape_ints}, "nnops": {"rtol": 1e-4, "atol": 1e-4, "ints": nn_ints}}
    for name, fn in FAMILIES.items():
        level = 1 if name in ("shapes", "nnops") else 2
        check(graphc.compile(fn(), backend="cuda", cache_dir=cache_dir, opt_level=level), fn(), **tols[name])
    from graphc.ir import interpret
    from tests.test_examples import inputs_like, load_example

    for name in EXAMPLES:
        g = graphs[name]
        m = graphc.compile(g.copy(), backend="cuda", cache_dir=cache_dir, optimized=g.copy())
        ns = load_example(name)
        for batch in (1, 5):
            f = dict(zip(m.input_names, inputs_like(ns["example_inputs"], batch)))
            want, got = interpret(g, f), m.run(**f)
            for k, w in want.items():
                scale = max(1.0, float(np.abs(w).max()))
                np.testing.assert_allclose(got[k], w, rtol=0, atol=2e-5 * scale, err_msg=f"{name} {k} B={batch}")


@pytest.mark.parametrize("op", ["amax", "argmin"])
def test_max_min_over_a_dim_that_can_be_empty_is_refused(op, tmp_path):
    """The C backend fails such a run with a status; the CUDA kernels cannot, so compile refuses them."""
    from graphc.ir.graph import Graph
    from graphc.ops import get_op
    from graphc.ops.registry import TensorType
    from graphc.sym import Sym

    for lo, refused in ((0, True), (1, False)):
        g = Graph("red")
        x = g.add_input("x", TensorType((Sym.var("B"), 3), graphc.float32))
        g.dims["B"] = (lo, 4)
        o = get_op(op)
        attrs = o.bind_attrs({"dims": [0]} if op == "amax" else {"dim": 0})
        n = g.add_node(op, [x], attrs, o.infer_type([x.type], attrs))
        g.set_outputs([("y", n.out)])
        if refused:
            with pytest.raises(graphc.UnsupportedError, match=f"op {op}.*a reduced dim that can be empty"):
                graphc.compile(g, backend="cuda", emit_only=True, out_dir=tmp_path / f"{lo}")
        else:
            graphc.compile(g, backend="cuda", emit_only=True, out_dir=tmp_path / f"{lo}")
