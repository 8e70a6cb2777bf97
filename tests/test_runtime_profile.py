"""The per-kernel profile: CompiledModel.enable_profile()/profile(), `graphc bench --profile`, and
GRAPHC_PROFILE=1 for C hosts (destroy prints the table on stderr).

The work each kernel reports is checked against counts computed here from the layer sizes (2*M*N*K for
a linear layer, one op per element for an activation; bytes of the operands), and the runs against the
number of calls. Times are only checked to be positive: nothing here asserts on speed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
import graphc.nn as nn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory, shared_cache):
    cache = shared_cache
    model = nn.Sequential(nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 7))
    x = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32)
    out = tmp_path_factory.mktemp("profile") / "mlp"
    cm = graphc.compile(model, (x,), name="pmlp", out_dir=out, cache_dir=cache)
    return cm, x, out


def test_profile_counts_every_kernel(mlp):
    cm, x, _ = mlp
    cm.enable_profile()
    for _ in range(5):
        cm(x)
    rows = cm.profile()
    assert [r["runs"] for r in rows] == [5] * len(rows)
    linears = [r for r in rows if r["op"].startswith("linear")]
    assert [r["module"] for r in linears] == ["0", "2"]
    # 2*M*N*K per run (+ one op per output element for a fused activation), over 5 runs
    first = linears[0]
    assert first["flops"] == pytest.approx(5 * (2 * 3 * 24 * 40 + (3 * 24 if "relu" in first["op"] else 0)))
    assert linears[1]["flops"] == pytest.approx(5 * 2 * 3 * 7 * 24)
    # bytes: input, weight, bias and output of the last layer, 4 bytes each
    assert linears[1]["bytes"] == pytest.approx(5 * 4 * (3 * 24 + 7 * 24 + 7 + 3 * 7))
    assert all(r["seconds"] > 0 for r in rows)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert all(r["kernel"].startswith("pmlp_") for r in rows)
    cm.enable_profile(False)
    cm(x)
    assert all(r["runs"] == 0 and r["flops"] == 0 for r in cm.profile())


def test_bench_cli_profile(mlp):
    _, _, out = mlp
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "graphc", "bench", str(out), "--runs", "7", "--warmup", "1",
                        "--profile"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "per-kernel profile (7 runs" in r.stdout
    table = r.stdout.split("per-kernel profile")[1].splitlines()[1:]
    assert table[0].split() == ["us/run", "share", "GFLOP/s", "GB/s", "kernel", "op", "module"]
    assert {line.split()[-1] for line in table[1:]} >= {"0", "2"}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_c_host_prints_profile_at_destroy(mlp):
    _, _, out = mlp
    r = subprocess.run(["make", "-s", "main"], cwd=out, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    quiet = subprocess.run(["./main"], cwd=out, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and "graphc profile" not in quiet.stderr
    r = subprocess.run(["./main"], cwd=out, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "GRAPHC_PROFILE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == quiet.stdout  # profiling changes no result
    assert "graphc profile of pmlp: 1 runs" in r.stderr
    lines = r.stderr.splitlines()
    assert lines[1].split() == ["us/run", "share", "GFLOP/s", "GB/s", "kernel", "op", "module"]
    assert len(lines) - 2 == len(mlp[0].profile())


def test_pool_and_adaptive_threads_change_no_result(tmp_path, monkeypatch, shared_cache):
    """A 2-thread context runs its GEMMs on the context's pool and, by measured run times, sometimes on
    one thread (adaptive threads): every run equals the 1-thread context's bit for bit, and the OpenMP
    fallback (GRAPHC_THREADING=openmp) does too."""
    cache = shared_cache
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128))
    x = np.random.default_rng(1).standard_normal((64, 256)).astype(np.float32)
    cm = graphc.compile(model, (x,), name="pool_mlp", cache_dir=cache)
    one = cm.new_context(threads=1)
    want = one(x)
    np.testing.assert_allclose(want, model(graphc.tensor(x)).numpy(), rtol=1e-4, atol=1e-4)
    two = cm.new_context(threads=2)
    for _ in range(40):
        np.testing.assert_array_equal(two(x), want)
    monkeypatch.setenv("GRAPHC_THREADING", "openmp")
    monkeypatch.setenv("GRAPHC_ADAPTIVE_THREADS", "0")
    omp = cm.new_context(threads=2)
    for _ in range(3):
        np.testing.assert_array_equal(omp(x), want)
