"""Tests of the instruction-set dispatch (runtime_c/gc_dispatch.c, build.py's targets).

A default-target library holds the runtime's kernels for three ISA levels and picks, at create, the best
the CPU has; GRAPHC_ISA=generic|avx2|avx512 can only lower that choice. Each level is run in a process of
its own (the choice is made once per process) on one library whose graph goes through the GEMM, conv,
pooling, norm, softmax, attention and embedding kernels, and must match the numpy reference interpreter.
A library built for a level the CPU lacks (x86-64-v4 on an AVX2 machine; or any level above the one
GRAPHC_ISA allows, which is how an AVX-512 machine plays a smaller CPU) is refused by create with the
missing features named, before any of their instructions runs.

The CPU's real level comes from /proc/cpuinfo, not from the code under test.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.backend.compiled import CompiledModel, RuntimeErrorC
from graphc.ir import Graph, interpret, verify
from graphc.ops import get_op
from graphc.ops.registry import TensorType
from tests.shared_build import shared_cache_dir

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="ISA levels are x86-64's")
ROOT = Path(__file__).resolve().parents[1]
f32, i64 = graphc.float32, graphc.int64


def cpu_level() -> str:
    """The best level this CPU has, from the kernel's view of its flags."""
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd"} <= flags:
        return "avx512"
    if {"avx", "avx2", "fma", "bmi1", "bmi2"} <= flags:
        return "avx2"
    return "generic"


LEVELS = ["generic", "avx2", "avx512"]


def narrowed(request: str) -> str:
    return LEVELS[min(LEVELS.index(request), LEVELS.index(cpu_level()))]


def node(g: Graph, op: str, *ins, **attrs):
    o = get_op(op)
    attrs = o.bind_attrs(attrs)
    return g.add_node(op, list(ins), attrs, o.infer_type([v.type for v in ins], attrs)).out


def kernels_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """One graph through the GEMM, conv, pool, norm, softmax, attention and embedding kernels."""
    rng = np.random.default_rng(3)
    g = Graph("isa_mix")
    x = g.add_input("x", TensorType((2, 3, 12, 12), f32))
    q = g.add_input("q", TensorType((2, 4, 9, 16), f32))
    ids = g.add_input("ids", TensorType((5,), i64))

    def param(name, *shape):
        return g.add_param(name, TensorType(shape, f32), rng.standard_normal(shape).astype(np.float32))

    conv = node(g, "conv", x, param("w", 8, 3, 3, 3), param("b", 8), stride=(1, 1), padding=(1, 1),
                dilation=(1, 1))
    pool = node(g, "max_pool2d", conv, kernel=(2, 2), stride=(2, 2), padding=(0, 0))
    flat = node(g, "reshape", pool, shape=(2, 8 * 36))
    lin = node(g, "linear", flat, param("lw", 40, 8 * 36), param("lb", 40))
    outs = [node(g, "layer_norm", lin, param("lnw", 40), param("lnb", 40), ndim=1, eps=1e-5),
            node(g, "softmax", lin, dim=1),
            node(g, "sdpa", q, q, q, scale=0.25, is_causal=True),
            node(g, "embedding", ids, param("emb", 11, 6))]
    g.set_outputs([(f"y{i}", o) for i, o in enumerate(outs)])
    verify(g)
    inputs = {"x": rng.standard_normal((2, 3, 12, 12)).astype(np.float32),
              "q": rng.standard_normal((2, 4, 9, 16)).astype(np.float32),
              "ids": np.array([0, 10, 3, 3, 7], np.int64)}
    return g, inputs


RUNNER = """
import json, sys
import numpy as np
from graphc.export import load_compiled
m = load_compiled(sys.argv[1])
ins = np.load(sys.argv[2])
outs = m(*[ins[k] for k in ("x", "q", "ids")])
np.savez(sys.argv[3], *outs)
print(json.dumps({"isa": m.isa}))
"""


def run_in_process(folder: Path, inputs_file: Path, out_file: Path, isa: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GRAPHC_ISA", None)
    if isa is not None:
        env["GRAPHC_ISA"] = isa
    return subprocess.run([sys.executable, "-c", RUNNER, str(folder), str(inputs_file), str(out_file)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def cache_dir():
    """The build cache the backend tests share (the runtime's objects are built once for all of them)."""
    return shared_cache_dir()


@pytest.fixture(scope="module")
def default_export(tmp_path_factory, cache_dir):
    d = tmp_path_factory.mktemp("isa")
    g, inputs = kernels_graph()
    graphc.compile(g, out_dir=d / "lib", cache_dir=cache_dir)
    np.savez(d / "inputs.npz", **inputs)
    ref = interpret(g, inputs)
    return d, inputs, ref


@pytest.mark.parametrize("isa", [None, "generic", "avx2", "avx512"])
def test_default_target_picks_each_level_and_matches_numpy(default_export, isa):
    d, _, ref = default_export
    res = run_in_process(d / "lib", d / "inputs.npz", d / f"out-{isa}.npz", isa)
    assert res.returncode == 0, res.stderr
    chosen = json.loads(res.stdout.strip().splitlines()[-1])["isa"]
    assert chosen == narrowed(isa or "avx512")
    got = np.load(d / f"out-{isa}.npz")
    ref_list = list(ref.values()) if isinstance(ref, dict) else list(ref)
    for i, want in enumerate(ref_list):
        np.testing.assert_allclose(got[f"arr_{i}"], want, rtol=2e-4, atol=2e-4 * max(1.0, float(np.abs(want).max())))


def test_bad_isa_value_is_refused(default_export):
    d, _, _ = default_export
    res = run_in_process(d / "lib", d / "inputs.npz", d / "out-bad.npz", "avx9000")
    assert res.returncode != 0
    assert "GRAPHC_ISA='avx9000' is not one of generic, avx2, avx512" in res.stderr


def _tiny(target: str, cache: str, name: str = "isa_tiny") -> CompiledModel:
    g = Graph(f"{name}_{target.replace('-', '_')}")
    x = g.add_input("x", TensorType((4, 8), f32))
    g.set_outputs([("y", node(g, "relu", x))])
    return graphc.compile(g, cache_dir=cache, target=target)


def test_library_for_a_missing_level_is_refused(monkeypatch, cache_dir):
    """x86-64-v4 on a CPU without AVX-512 (this machine, or an AVX-512 one under GRAPHC_ISA=avx2) and
    x86-64-v3 under GRAPHC_ISA=generic: create fails with the missing features named. Each library keeps
    its own choice, made at its first create, so every library here is new to this process."""
    cases = [("x86-64-v3", "generic", "avx2")]
    if cpu_level() != "generic":
        cases.append(("x86-64-v4", "avx2" if cpu_level() == "avx512" else None, "avx512f"))
    for target, isa, feature in cases:
        if isa is None:
            monkeypatch.delenv("GRAPHC_ISA", raising=False)
        else:
            monkeypatch.setenv("GRAPHC_ISA", isa)
        with pytest.raises(RuntimeErrorC, match=rf"this CPU lacks [^;]*\b{feature}\b.*compiled to use") as e:
            _tiny(target, cache_dir)
        assert e.value.status == -8  # GC_ERR_DEVICE
    # where the CPU has the level, the same kind of library runs (and says it is one fixed level)
    monkeypatch.delenv("GRAPHC_ISA", raising=False)
    target = {"generic": "x86-64-v2", "avx2": "x86-64-v3", "avx512": "x86-64-v4"}[cpu_level()]
    m = _tiny(target, cache_dir, "isa_runs")
    x = np.arange(32, dtype=np.float32).reshape(4, 8) - 16
    np.testing.assert_array_equal(m(x), np.maximum(x, 0))
    assert m.isa == "fixed" and f"-march={target}" in m.manifest["options"]["cflags"]


def test_required_features_follow_the_flags():
    """What create checks is what the compiler was told to use: -march levels, and extra -m flags."""
    from graphc.backend.build import compiler, required_isa

    cc = tuple(compiler())
    v2 = required_isa(cc, ("-march=x86-64-v2",)).split()
    assert {"sse4.2", "popcnt"} <= set(v2) and "avx" not in v2
    v3 = required_isa(cc, ("-march=x86-64-v3",)).split()
    assert {"avx", "avx2", "fma", "bmi2"} <= set(v3) and "avx512f" not in v3
    assert {"avx512f", "avx512bw", "avx512vl"} <= set(required_isa(cc, ("-march=x86-64-v4",)).split())
    assert "avx512f" in required_isa(cc, ("-march=x86-64-v2", "-mavx512f")).split()


def test_targets_flags(monkeypatch):
    from graphc.backend.build import DISPATCH_FLAG, cflags

    monkeypatch.delenv("GRAPHC_CFLAGS", raising=False)
    default = cflags("default")
    assert "-march=x86-64-v2" in default and DISPATCH_FLAG in default and "-march=native" not in default
    assert DISPATCH_FLAG not in cflags("x86-64-v3") and "-march=x86-64-v3" in cflags("x86-64-v3")
    assert "-march=native" in cflags("native") and "-march=x86-64-v2" in cflags("portable")
    with pytest.raises(ValueError, match="target must be one of"):
        cflags("x86-64-v5")
