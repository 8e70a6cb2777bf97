"""Tests of the compiled library as a product: the exported folder, its C ABI used from C programs
(the shipped main.c + Makefile, eight pthreads with their own contexts), the weights file checks, and
the Python wrapper's input checks, state_dict reloading and thread safety.

Two libraries are built (one model, weights="file" and weights="embed"); the build cache is shared with
tests/test_backend_c.py and kept between sessions (it is content-addressed, so never stale).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.backend import RuntimeErrorC, load_compiled, write_weights
from graphc.backend.weights import read_safetensors, write_safetensors
from graphc.ir import interpret
from tests.shared_build import shared_cache_dir


def _cache_dir() -> str:
    return shared_cache_dir()


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: graphc.Tensor, scale: graphc.Tensor):
        h = graphc.relu(self.fc1(x))
        logits = self.fc2(h) * scale
        return {"probs": graphc.softmax(logits, dim=1), "hidden": h.sum(dim=1)}


def _tiny() -> Tiny:
    graphc.manual_seed(0)
    return Tiny().eval()


EXAMPLE = (graphc.randn(2, 8), graphc.randn(1, 4))
DYNAMIC = {"x": {0: graphc.Dim("B", 1, 32)}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model exported with weights in a file, and the same model with baked weights."""
    base = tmp_path_factory.mktemp("abi")
    model = _tiny()
    t0 = time.perf_counter()
    file_mode = graphc.compile(model, EXAMPLE, DYNAMIC, name="tiny", weights="file", out_dir=base / "tiny_file",
                               cache_dir=_cache_dir())
    t1 = time.perf_counter()
    embed = graphc.compile(model, EXAMPLE, DYNAMIC, name="tiny", weights="embed", out_dir=base / "tiny_embed",
                           cache_dir=_cache_dir())
    return {"file": file_mode, "embed": embed, "base": base, "model": model, "compile_s": t1 - t0}


def inputs(b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, 8)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32)


def reference(model, x, s):
    out = model(graphc.tensor(x), graphc.tensor(s))
    return {k: v.numpy() for k, v in out.items()}


# ------------------------------------------------------------------------------------------ folder
def test_exported_folder(exported):
    d = exported["file"].directory
    names = {p.name for p in d.iterdir()}
    for f in ("tiny.h", "libtiny.so", "tiny.safetensors", "manifest.json", "tiny.gir", "tiny.source.gir",
              "main.c", "Makefile", "tiny_model.c", "tiny_kernels0.c", "runtime"):
        assert f in names, f
    assert (d / "runtime" / "graphc_rt.h").exists()
    man = json.loads((d / "manifest.json").read_text())
    assert [i["name"] for i in man["inputs"]] == ["x", "scale"]
    assert man["inputs"][0]["shape"] == ["B", "8"]
    assert man["dims"] == [{"name": "B", "min": 1, "max": 32}]
    assert [o["name"] for o in man["outputs"]] == ["probs", "hidden"]
    assert man["memory_plan"]["blocks"] and man["fingerprint"] == exported["file"].fingerprint
    # no absolute paths anywhere: the folder can be moved
    for p in d.iterdir():
        if p.is_file() and p.suffix != ".so" and p.suffix != ".safetensors":
            text = p.read_text()
            assert str(d) not in text and str(Path.home()) not in text and _cache_dir() not in text, p.name


def test_both_modes_match_eager(exported):
    for mode in ("file", "embed"):
        m = exported[mode]
        for b in (1, 7):
            x, s = inputs(b)
            got = m.run(x=x, scale=s)
            want = reference(exported["model"], x, s)
            for k in want:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


def test_library_depends_on_no_python(exported):
    lib = exported["file"].lib_path
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout
    assert "python" not in out.lower() and "numpy" not in out.lower(), out
    syms = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True).stdout
    exported_syms = {line.split()[-1] for line in syms.splitlines() if " T " in line}
    assert exported_syms and all(s.startswith("tiny_") for s in exported_syms), exported_syms
    assert "tiny_run" in exported_syms and "tiny_run_v" in exported_syms


def test_header_compiles_as_cplusplus(exported, tmp_path):
    if not shutil.which("c++"):
        pytest.skip("no C++ compiler")
    src = tmp_path / "t.cpp"
    src.write_text('#include "tiny.h"\nint main() { return tiny_num_inputs() == 2 ? 0 : 1; }\n')
    d = exported["file"].directory
    subprocess.run(["c++", "-Wall", "-Werror", "-I", str(d), str(src), "-c", "-o", str(tmp_path / "t.o")],
                   check=True)


# ------------------------------------------------------------------------------------------ C programs
def _pattern(shape, k: int, dtype=np.float32) -> np.ndarray:
    i = np.arange(int(np.prod(shape)))
    return (((i * 7 + k * 3) % 17) / 8.0 - 1.0).astype(dtype).reshape(shape)


def _parse_main_output(text: str) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^(\w+) \w+\[", line)
        if m:
            name = m.group(1)
            out[name] = []
        else:
            out[name].append(float(line))
    return {k: np.array(v) for k, v in out.items()}


def test_shipped_main_builds_in_a_moved_folder(exported, tmp_path):
    if not shutil.which("make"):
        pytest.skip("no make")
    moved = tmp_path / "moved"
    shutil.copytree(exported["file"].directory, moved)
    subprocess.run(["make", "-s"], cwd=moved, check=True, capture_output=True)
    res = subprocess.run(["./main", "B=3"], cwd=moved, capture_output=True, text=True, check=True)
    got = _parse_main_output(res.stdout)
    m = load_compiled(moved)
    want = m.run(x=_pattern((3, 8), 0), scale=_pattern((1, 4), 1))
    for k in want:
        np.testing.assert_array_equal(got[k].astype(np.float32), want[k].reshape(-1), err_msg=k)
    # inputs from a binary file
    x, s = inputs(5, seed=3)
    (moved / "in.bin").write_bytes(x.tobytes() + s.tobytes())
    res = subprocess.run(["./main", "-i", "in.bin", "B=5", "-t", "2"], cwd=moved, capture_output=True, text=True,
                         check=True)
    got = _parse_main_output(res.stdout)
    want = m.run(x=x, scale=s)
    for k in want:
        np.testing.assert_array_equal(got[k].astype(np.float32), want[k].reshape(-1), err_msg=k)
    # an out-of-range dim is an error code with a message, not a crash
    res = subprocess.run(["./main", "B=33"], cwd=moved, capture_output=True, text=True)
    assert res.returncode == 1 and "dim B=33 is outside 1..32" in res.stderr


THREADS_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "tiny.h"

#define NT 8
#define RUNS 1000
static const char *weights;
static float x[5 * 8], scale[4], ref_probs[5 * 4], ref_hidden[5];
static int failures[NT];

static void *work(void *arg)
{
    int id = (int)(long)arg;
    char err[256];
    tiny_ctx *ctx;
    if (tiny_create(&ctx, weights, err, sizeof err) != TINY_OK) {
        fprintf(stderr, "%s\n", err);
        failures[id] = -1;
        return NULL;
    }
    tiny_set_num_threads(ctx, 1 + id % 2);
    float probs[5 * 4], hidden[5];
    for (int r = 0; r < RUNS; r++) {
        if (tiny_run(ctx, 5, x, scale, probs, hidden) != TINY_OK) { failures[id]++; continue; }
        if (memcmp(probs, ref_probs, sizeof probs) || memcmp(hidden, ref_hidden, sizeof hidden)) failures[id]++;
    }
    tiny_destroy(ctx);
    return NULL;
}

int main(int argc, char **argv)
{
    weights = argc > 1 ? argv[1] : NULL;
    for (int i = 0; i < 5 * 8; i++) x[i] = (float)((i * 13) % 11) / 5.0f - 1.0f;
    for (int i = 0; i < 4; i++) scale[i] = 0.5f + (float)i;
    char err[256];
    tiny_ctx *ctx;
    if (tiny_create(&ctx, weights, err, sizeof err) != TINY_OK) { fprintf(stderr, "%s\n", err); return 1; }
    tiny_set_num_threads(ctx, 1);
    if (tiny_run(ctx, 5, x, scale, ref_probs, ref_hidden) != TINY_OK) return 1;
    tiny_destroy(ctx);
    pthread_t th[NT];
    for (long i = 0; i < NT; i++) pthread_create(&th[i], NULL, work, (void *)i);
    int bad = 0;
    for (int i = 0; i < NT; i++) { pthread_join(th[i], NULL); bad += failures[i]; }
    printf("%s %d\n", bad ? "FAIL" : "OK", bad);
    return bad != 0;
}
"""


@pytest.mark.parametrize("mode", ["file", "embed"])
def test_eight_threads_own_contexts_bit_identical(exported, tmp_path, mode):
    d = exported[mode].directory
    src = tmp_path / "threads.c"
    src.write_text(THREADS_C)
    exe = tmp_path / "threads"
    subprocess.run(["cc", "-O2", "-pthread", "-I", str(d), str(src), "-o", str(exe), "-L", str(d), "-ltiny",
                    f"-Wl,-rpath,{d}"], check=True)
    args = [str(exe)] + ([str(d / "tiny.safetensors")] if mode == "file" else [])
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("OK"), res.stdout + res.stderr


# ------------------------------------------------------------------------------------------ weights files
def _create_error(m, path) -> RuntimeErrorC:
    with pytest.raises(RuntimeErrorC) as e:
        load_compiled(m.directory, weights=path)
    return e.value


def test_bad_weights_files(exported, tmp_path):
    m = exported["file"]
    good = m.directory / "tiny.safetensors"
    e = _create_error(m, tmp_path / "missing.safetensors")
    assert e.status == -2 and "cannot open weights file" in str(e) and "missing.safetensors" in str(e)

    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    e = _create_error(m, tmp_path / "trunc.safetensors")
    assert e.status == -3, str(e)

    bad = bytearray(data)
    bad[10:20] = b"@@@@@@@@@@"
    (tmp_path / "corrupt.safetensors").write_bytes(bytes(bad))
    e = _create_error(m, tmp_path / "corrupt.safetensors")
    assert e.status == -3 and "corrupt.safetensors" in str(e)

    tensors, meta = read_safetensors(good)
    write_safetensors(tmp_path / "other.safetensors", tensors, {**meta, "graphc.model": "other_model"})
    e = _create_error(m, tmp_path / "other.safetensors")
    assert e.status == -4 and "holds the weights of model 'other_model', not 'tiny'" in str(e)

    write_safetensors(tmp_path / "fp.safetensors", tensors, {**meta, "graphc.fingerprint": "0" * 64})
    e = _create_error(m, tmp_path / "fp.safetensors")
    assert e.status == -4 and "another graph" in str(e)

    shapes = dict(tensors)
    name = next(k for k in shapes if shapes[k].ndim == 2)
    shapes[name] = np.zeros((shapes[name].shape[0], shapes[name].shape[1] + 1), np.float32)
    write_safetensors(tmp_path / "shape.safetensors", shapes, meta)
    e = _create_error(m, tmp_path / "shape.safetensors")
    assert e.status == -4 and f"tensor '{name}': expected f32[" in str(e)

    missing = {k: v for k, v in tensors.items() if k != name}
    write_safetensors(tmp_path / "miss.safetensors", missing, meta)
    e = _create_error(m, tmp_path / "miss.safetensors")
    assert e.status == -4 and f"'{name}' not found" in str(e)


def test_weights_file_is_plain_safetensors(exported):
    from safetensors.numpy import load_file

    path = exported["file"].directory / "tiny.safetensors"
    loaded = load_file(str(path))
    ours, meta = read_safetensors(path)
    assert set(loaded) == set(ours)
    for k in loaded:
        np.testing.assert_array_equal(loaded[k], ours[k])
    raw = path.read_bytes()
    assert (8 + int.from_bytes(raw[:8], "little")) % 64 == 0
    assert meta["graphc.model"] == "tiny" and meta["graphc.fingerprint"] == exported["file"].fingerprint


def test_embed_mode_loads_a_weights_file_instead(exported):
    m = load_compiled(exported["embed"].directory, weights=exported["file"].directory / "tiny.safetensors")
    x, s = inputs(4)
    np.testing.assert_array_equal(m(x, s)[0], exported["embed"](x, s)[0])


def test_load_state_dict_without_recompiling(exported, tmp_path):
    graphc.manual_seed(1)
    other = Tiny().eval()
    sd = other.state_dict()
    for mode in ("file", "embed"):
        m = load_compiled(exported[mode].directory) if mode == "file" else exported[mode]
        if mode == "file":
            shutil.copytree(exported[mode].directory, tmp_path / "copy")
            m = load_compiled(tmp_path / "copy")
        m.load_state_dict(sd)
        x, s = inputs(3)
        want = reference(other, x, s)
        got = m.run(x=x, scale=s)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"state_dict\['fc1.weight'\]: expected f32\[16,8\]"):
        exported["embed"].load_state_dict({**sd, "fc1.weight": np.zeros((16, 9), np.float32)})
    with pytest.raises(KeyError, match="missing key in state_dict: 'fc2.bias'"):
        exported["embed"].load_state_dict({k: v for k, v in sd.items() if k != "fc2.bias"})
    # write_weights for an exported folder, then the C side loads it
    path = write_weights(tmp_path / "copy", sd, path=tmp_path / "new.safetensors")
    m2 = load_compiled(tmp_path / "copy", weights=path)
    x, s = inputs(2)
    np.testing.assert_allclose(m2(x, s)[0], reference(other, x, s)["probs"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ Python side
def test_wrong_inputs_name_the_input(exported):
    m = exported["file"]
    x, s = inputs(3)
    with pytest.raises(ValueError, match=r"input 'x': expected f32\[B,8\] with 1 <= B <= 32, got float64 array "
                                         r"of shape \(3, 8\)"):
        m(x.astype(np.float64), s)
    with pytest.raises(ValueError, match=r"input 'x': expected f32\[B,8\].*shape \(3, 9\)"):
        m(np.zeros((3, 9), np.float32), s)
    with pytest.raises(ValueError, match=r"input 'scale': expected f32\[1,4\], got float32 array of shape \(4,\)"):
        m(x, s.reshape(4))
    with pytest.raises(ValueError, match=r"input 'x': dim B=40 is outside 1..32"):
        m(np.zeros((40, 8), np.float32), s)
    with pytest.raises(ValueError, match=r"takes 2 input\(s\) \(x, scale\), got 1"):
        m(x)
    with pytest.raises(ValueError, match=r"missing input\(s\) \['scale'\]"):
        m.run(x=x)


def test_noncontiguous_and_tensor_inputs(exported):
    m = exported["file"]
    x, s = inputs(6)
    xt = np.asfortranarray(x)
    np.testing.assert_array_equal(m(xt, s)[0], m(x, s)[0])
    np.testing.assert_array_equal(m(graphc.tensor(x), graphc.tensor(s))[1], m(x, s)[1])


def test_c_run_checks_dims_and_pointers(exported):
    m = exported["file"]
    ffi, lib = m._lib.ffi, m._lib
    x, s = inputs(2)
    outs = [np.empty((2, 4), np.float32), np.empty((2,), np.float32)]
    keep = [ffi.from_buffer(a) for a in (x, s, *outs)]
    ins = ffi.new("void *[]", keep[:2])
    ous = ffi.new("void *[]", keep[2:])
    ctx = m._ctx.ptr
    assert lib.run_v(ctx, ffi.new("int64_t[]", [300]), ins, ous) == -1
    assert ffi.string(lib.last_error(ctx)).decode() == "dim B=300 is outside 1..32"
    assert lib.run_v(ctx, ffi.NULL, ins, ous) == -1
    ins[1] = ffi.NULL
    assert lib.run_v(ctx, ffi.new("int64_t[]", [2]), ins, ous) == -1
    assert ffi.string(lib.last_error(ctx)).decode() == "input 'scale' is NULL"
    ins[1] = keep[1]
    assert lib.run_v(ctx, ffi.new("int64_t[]", [2]), ins, ous) == 0
    assert ffi.string(lib.last_error(ctx)).decode() == ""
    assert ffi.string(lib.status_string(-4)).decode().startswith("the weights belong to another model")


def test_contexts_and_python_threads(exported):
    m = exported["embed"]
    x, s = inputs(7)
    want = m(x, s)
    results = []

    def worker(model):
        for _ in range(50):
            results.append(model(x, s))

    threads = [threading.Thread(target=worker, args=(m if i % 2 else m.new_context(threads=1),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    for r in results:
        np.testing.assert_array_equal(r[0], want[0])
    m.set_num_threads(1)
    assert m.num_threads == 1
    np.testing.assert_array_equal(m(x, s)[0], want[0])


def test_interpreter_agrees_and_arena_bytes(exported):
    m = exported["file"]
    g = m.source_graph()
    x, s = inputs(5)
    want = interpret(g, x=x, scale=s)
    got = m.run(x=x, scale=s)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert m.arena_bytes(B=1) <= m.arena_bytes(B=32)


def test_call_overhead_is_small(exported, capsys):
    m = exported["embed"]
    x, s = inputs(1)
    m(x, s)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        m(x, s)
    per_call = (time.perf_counter() - t0) / n
    with capsys.disabled():
        print(f"\n[graphc] tiny model: {per_call * 1e6:.1f} us per Python call (compile {exported['compile_s']:.2f}s)")
    assert per_call < 2e-3
