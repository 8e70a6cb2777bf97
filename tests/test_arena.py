"""The arena sized by the runs (issue 9): NAME_create allocates none, a run allocates what its dims need
(NAME_context_arena_bytes) when the context holds less, a run with the same or smaller dims allocates
nothing; NAME_set_arena runs a context in the caller's memory (64-byte aligned, never grown: a run that
needs more fails before writing anything); NAME_arena_bytes is 0 for dims out of range.

One small model (a convolution, whose kernel scratch depends on the thread count, then a linear layer)
with a dynamic batch 1..256, built target="portable" so valgrind can run its C host. The C host program
below counts every malloc/calloc/realloc/aligned_alloc/posix_memalign made during each run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.backend import RuntimeErrorC
from graphc.backend.compiled import aligned_empty
from tests.shared_build import sanitized_cache_dir, shared_cache_dir


def _cache_dir() -> str:
    return shared_cache_dir()


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        return self.fc(graphc.flatten(graphc.relu(self.conv(x)), 1))


MAX_B = 256


def _compile(model: Net, out: Path, **kw):
    return graphc.compile(model, (graphc.randn(2, 3, 6, 6),), {"x": {0: graphc.Dim("B", 1, MAX_B)}}, name="ar",
                          weights="embed", out_dir=out,
                          cache_dir=sanitized_cache_dir() if kw.get("sanitize") else _cache_dir(), **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    graphc.manual_seed(0)
    model = Net().eval()
    base = tmp_path_factory.mktemp("arena")
    m = _compile(model, base / "ar", target="portable")
    sd = {k: np.asarray(v.numpy(), np.float64) for k, v in model.state_dict().items()}
    return {"m": m, "sd": sd, "model": model, "base": base}


def _x(b: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((b, 3, 6, 6)).astype(np.float32)


def _numpy(sd: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = sliding_window_view(xp, (3, 3), axis=(2, 3))  # [B, C, H, W, 3, 3]
    h = np.einsum("bchwij,ocij->bohw", win, sd["conv.weight"]) + sd["conv.bias"][None, :, None, None]
    h = np.maximum(h, 0).reshape(len(x), -1)
    return h @ sd["fc.weight"].T + sd["fc.bias"]


def _close(got: np.ndarray, sd: dict[str, np.ndarray], x: np.ndarray) -> None:
    np.testing.assert_allclose(got, _numpy(sd, x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ from Python
def test_create_allocates_no_arena_and_runs_size_it(built):
    """A fresh context holds no arena; each run grows it to exactly what its batch needs, a smaller or equal
    batch keeps it; the arena for the dims' maxima is never reached by small runs."""
    m = built["m"].new_context()
    assert m.arena_capacity == 0
    seen = []
    for b in (4, 4, 2, 64, 3, 64, 1):
        x = _x(b, seed=b)
        _close(m(x), built["sd"], x)
        seen.append(m.arena_capacity)
    need = {b: m.context_arena_bytes(B=b) for b in (1, 2, 3, 4, 64)}
    assert seen == [need[4], need[4], need[4], need[64], need[64], need[64], need[64]]
    assert 0 < need[4] < need[64] < m.arena_bytes() == m.arena_bytes(B=MAX_B)
    assert m.arena_bytes() > 30 * need[4]  # what create used to allocate for B=256


def test_arena_bytes_grows_with_the_batch_and_refuses_dims_out_of_range(built):
    m = built["m"]
    sizes = [m.arena_bytes(B=b) for b in (1, 2, 17, 100, MAX_B)]
    assert sizes == sorted(sizes) and all(s % 64 == 0 for s in sizes)
    for bad in (0, MAX_B + 1, -1):
        with pytest.raises(ValueError, match=rf"ar: dim B={bad} is outside 1\.\.{MAX_B}"):
            m.arena_bytes(B=bad)
    with pytest.raises(ValueError, match="ar has no dynamic dim 'T'"):
        m.arena_bytes(T=3)
    # the C function itself: 0 for every dim out of range (it used to return wrapped sizes)
    lib = m._lib
    arena_bytes = lib.lib.ar_arena_bytes
    for bad in (0, -1, MAX_B + 1, 2**62, 2**63 - 1, -2**63):
        assert arena_bytes(lib.ffi.new("int64_t[]", [bad])) == 0, bad
    assert arena_bytes(lib.ffi.NULL) == m.arena_bytes(B=MAX_B)
    ctx_bytes = lib.lib.ar_context_arena_bytes
    assert ctx_bytes(m._ctx.ptr, lib.ffi.new("int64_t[]", [MAX_B + 1])) == 0
    assert ctx_bytes(lib.ffi.NULL, lib.ffi.new("int64_t[]", [1])) == 0


def test_more_threads_may_need_more_scratch(built):
    """The convolution's scratch grows with the thread count: context_arena_bytes follows the context's
    count, a run after set_num_threads grows the arena to it."""
    m = built["m"].new_context(threads=1)
    x = _x(8)
    _close(m(x), built["sd"], x)
    one = m.context_arena_bytes(B=8)
    assert m.arena_capacity == one
    m.set_num_threads(4)
    four = m.context_arena_bytes(B=8)
    assert four >= one
    _close(m(x), built["sd"], x)
    assert m.arena_capacity == four


def test_caller_arena(built):
    """set_arena: runs use the buffer (capacity is its size), one needing more raises naming the bytes
    needed and given and leaves the context usable; set_arena(None) returns to an owned arena."""
    m = built["m"].new_context()
    need8 = m.context_arena_bytes(B=8)
    buf = aligned_empty(need8)
    m.set_arena(buf)
    assert m.arena_capacity == need8
    for b in (8, 3, 8):
        x = _x(b, seed=b)
        _close(m(x), built["sd"], x)
        assert m.arena_capacity == need8
    need9 = m.context_arena_bytes(B=9)
    with pytest.raises(RuntimeErrorC, match=rf"the arena given by ar_set_arena has {need8} bytes, this run needs "
                                            rf"{need9}") as e:
        m(_x(9))
    assert e.value.status == -5
    x = _x(5)
    _close(m(x), built["sd"], x)  # still usable after the refusal
    m.set_arena(None)
    assert m.arena_capacity == 0
    x = _x(9)
    _close(m(x), built["sd"], x)
    assert m.arena_capacity == need9


def test_caller_arena_must_be_aligned(built):
    m = built["m"].new_context()
    x = _x(2)
    m(x)
    before = m.arena_capacity
    raw = aligned_empty(m.arena_bytes(B=2) + 64)
    for off in (1, 8, 32):
        with pytest.raises(ValueError, match=r"the arena must be AR_ARENA_ALIGN \(64\) byte aligned; 0x[0-9a-f]+ is "
                                             r"not"):
            m.set_arena(raw[off:])
    assert m.arena_capacity == before  # refused: the context keeps its own arena
    _close(m(x), built["sd"], x)
    with pytest.raises(ValueError, match="ar: the arena must be writable, contiguous memory"):
        m.set_arena(b"\0" * 4096)  # read-only memory
    with pytest.raises(ValueError, match="ar: the arena must be writable, contiguous memory"):
        m.set_arena(aligned_empty(8192)[::2])


def test_caller_arena_moves_with_load_state_dict(built):
    """load_state_dict re-creates the context: the caller's buffer goes to the new one (never both)."""
    m = built["m"].new_context()
    buf = aligned_empty(m.context_arena_bytes(B=4))
    m.set_arena(buf)
    old = m._ctx
    graphc.manual_seed(5)
    other = Net().eval()
    m.load_state_dict(other.state_dict())
    assert m._ctx is not old and m._ctx.arena is buf and old.arena is None
    assert m.arena_capacity == len(buf)
    sd = {k: np.asarray(v.numpy(), np.float64) for k, v in other.state_dict().items()}
    x = _x(4)
    _close(m(x), sd, x)


# ------------------------------------------------------------------------------ from C
HOST = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ar.h"

#ifdef COUNT_ALLOCS
/* every allocation of the process while `counting` is set (the library's calls bind to these) */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static int counting;
static long allocs;
static void count(void) { if (counting) __atomic_add_fetch(&allocs, 1, __ATOMIC_RELAXED); }
void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
int posix_memalign(void **p, size_t a, size_t n) { count(); *p = __libc_memalign(a, n); return *p ? 0 : 12; }
#define BEGIN (allocs = 0, counting = 1)
#define END (counting = 0, allocs)
#else
#define BEGIN ((void)0)
#define END (0L)
#endif

#define SENTINEL 12345.0f
static float x[256 * 3 * 6 * 6], y[256 * 4];

static int run(ar_ctx *ctx, int64_t b)
{
    for (int64_t i = 0; i < b * 3 * 6 * 6; i++)
        x[i] = (float)((i * 7 + 3) % 17) / 8.0f - 1.0f;
    for (int64_t i = 0; i < b * 4; i++)
        y[i] = SENTINEL;
    BEGIN;
    const int rc = ar_run(ctx, b, x, y);
    const long n = END;
    int untouched = 1;
    for (int64_t i = 0; i < b * 4; i++)
        untouched &= y[i] == SENTINEL;
    const int64_t dims[1] = {b};
    printf("run B=%lld rc=%d allocs=%ld capacity=%zu need=%zu untouched=%d y0=%.9g\n", (long long)b, rc, n,
           ar_arena_capacity(ctx), ar_context_arena_bytes(ctx, dims), untouched, (double)y[0]);
    if (rc != AR_OK)
        printf("error %s\n", ar_last_error(ctx));
    return rc;
}

int main(int argc, char **argv)
{
    char err[256];
    ar_ctx *ctx;
    if (ar_create(&ctx, NULL, err, sizeof err) != AR_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("created capacity=%zu\n", ar_arena_capacity(ctx));
    if (argc > 1 && strcmp(argv[1], "owned") == 0) {
        const int64_t seq[] = {4, 4, 2, 64, 3, 64, 1, 256, 17};
        for (size_t k = 0; k < sizeof seq / sizeof seq[0]; k++)
            run(ctx, seq[k]);
    } else {
        run(ctx, 1); /* the first run starts the context's worker threads (pthread_create allocates) */
        const int64_t d8[1] = {8};
        const size_t bytes = ar_context_arena_bytes(ctx, d8);
        unsigned char *buf = aligned_alloc(AR_ARENA_ALIGN, bytes);
        printf("misaligned rc=%d\n", ar_set_arena(ctx, buf + 16, bytes - 64));
        printf("error %s\n", ar_last_error(ctx));
        const int set = ar_set_arena(ctx, buf, bytes);
        printf("set rc=%d capacity=%zu bytes=%zu\n", set, ar_arena_capacity(ctx), bytes);
        run(ctx, 8);
        run(ctx, 1);
        run(ctx, 9);
        run(ctx, 256);
        run(ctx, 8);
        const int owned = ar_set_arena(ctx, NULL, 0);
        printf("owned rc=%d capacity=%zu\n", owned, ar_arena_capacity(ctx));
        run(ctx, 9);
        free(buf);
    }
    const int64_t bad[][1] = {{0}, {257}, {-1}, {INT64_MAX}, {INT64_MIN}};
    for (int k = 0; k < 5; k++)
        printf("arena_bytes(%lld)=%zu\n", (long long)bad[k][0], ar_arena_bytes(bad[k]));
    const int64_t top[1] = {256};
    printf("arena_bytes(NULL)=%zu arena_bytes(256)=%zu\n", ar_arena_bytes(NULL), ar_arena_bytes(top));
    ar_destroy(ctx);
    return 0;
}
"""


def _cc() -> str:
    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler")
    return cc


def _host(built, tmp_path: Path, count: bool, lib_dir: Path | None = None, flags: tuple[str, ...] = ()) -> Path:
    d = lib_dir or built["m"].directory
    (tmp_path / "host.c").write_text(HOST)
    exe = tmp_path / ("host_count" if count else "host")
    cmd = [_cc(), *flags, "-O1", "-std=c11", "-Wall", "-Werror", "-o", str(exe), "host.c", f"-I{d}", f"-L{d}",
           "-lar", f"-Wl,-rpath,{d}"]
    if count:
        cmd[1:1] = ["-DCOUNT_ALLOCS", "-rdynamic"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    return exe


def _runs(text: str) -> list[dict[str, int | float]]:
    return [{k: float(v) if k == "y0" else int(v) for k, v in re.findall(r"(\w+)=(\S+)", line)}
            for line in text.splitlines() if line.startswith("run ")]


def _y0(built, b: int) -> float:
    i = np.arange(b * 3 * 6 * 6)
    x = ((((i * 7 + 3) % 17).astype(np.float32) / np.float32(8.0)) - np.float32(1.0)).reshape(b, 3, 6, 6)
    return float(_numpy(built["sd"], x)[0, 0])


def test_c_host_owned_arena_allocates_only_to_grow(built, tmp_path):
    """From C, counting every heap allocation of the process during each run: the first run and the runs
    with a larger batch than any before allocate, every other run allocates nothing at all."""
    res = subprocess.run([str(_host(built, tmp_path, count=True)), "owned"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "created capacity=0" in res.stdout
    runs = _runs(res.stdout)
    assert [r["B"] for r in runs] == [4, 4, 2, 64, 3, 64, 1, 256, 17]
    grew = [r["B"] for r in runs if r["allocs"] > 0]
    assert grew == [4, 64, 256], res.stdout
    assert all(r["rc"] == 0 and r["untouched"] == 0 for r in runs)
    top = 0
    for r in runs:
        top = max(top, r["need"])
        assert r["capacity"] == top, res.stdout
        assert r["y0"] == pytest.approx(_y0(built, r["B"]), rel=1e-4, abs=1e-4)


def _check_caller_output(built, out: str) -> None:
    runs = {r["B"]: r for r in _runs(out)[1:5]}
    given = int(re.search(r"set rc=0 capacity=(\d+) bytes=\1", out).group(1))
    assert "misaligned rc=-1" in out and "error the arena must be AR_ARENA_ALIGN (64) byte aligned" in out
    for b in (8, 1):
        assert runs[b]["rc"] == 0 and runs[b]["capacity"] == given and runs[b]["untouched"] == 0
        assert runs[b]["y0"] == pytest.approx(_y0(built, b), rel=1e-4, abs=1e-4)
    for b in (9, 256):  # refused before anything is written
        assert runs[b]["rc"] == -5 and runs[b]["untouched"] == 1 and runs[b]["capacity"] == given
        assert f"error the arena given by ar_set_arena has {given} bytes, this run needs {runs[b]['need']} " in out
    assert "owned rc=0 capacity=0" in out
    last = _runs(out)[-1]
    assert last["B"] == 9 and last["rc"] == 0 and last["capacity"] == last["need"]
    for bad in (0, 257, -1, 2**63 - 1, -2**63):
        assert f"arena_bytes({bad})=0\n" in out
    top = re.search(r"arena_bytes\(NULL\)=(\d+) arena_bytes\(256\)=(\d+)", out)
    assert top.group(1) == top.group(2) != "0"


def test_c_host_caller_arena(built, tmp_path):
    """The caller's arena from C: no allocation in any run on it (refused ones included), outputs untouched
    by a refused run, the misaligned one refused, NULL gives back an owned arena."""
    res = subprocess.run([str(_host(built, tmp_path, count=True)), "caller"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    _check_caller_output(built, res.stdout)
    runs = _runs(res.stdout)
    assert [r["allocs"] for r in runs[1:6]] == [0] * 5, res.stdout
    assert runs[6]["allocs"] > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_c_host_arenas_clean_under_valgrind(built, tmp_path):
    """memcheck over both hosts: the caller's buffer is exactly the bytes asked for, so a run writing past
    the arena it was given, or reading arena bytes it never wrote, is an error; nothing leaks."""
    exe = _host(built, tmp_path, count=False)
    vg = ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
          "-q", str(exe)]
    for mode in ("caller", "owned"):
        res = subprocess.run([*vg, mode], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-6000:]
        if mode == "caller":
            _check_caller_output(built, res.stdout)


def test_c_host_arenas_clean_under_asan_ubsan(built, tmp_path, monkeypatch):
    """Both hosts against a sanitized build of the model (ASan/UBSan, the arena's dead bytes poisoned): the
    caller's buffer is exactly the bytes asked for, and a refused run leaves none of it poisoned."""
    from graphc.backend.build import SANITIZE_FLAGS
    from tests.test_hardening import _SAN_PROBLEM, REPORT, SAN_ENV, STRICT

    if _SAN_PROBLEM is not None:
        pytest.skip(_SAN_PROBLEM)
    monkeypatch.setenv("GRAPHC_CFLAGS", os.environ.get("GRAPHC_TEST_CFLAGS", STRICT))  # tests/test_hardening's
    san = built["base"] / "san"
    _compile(built["model"], san, sanitize=True)
    exe = _host(built, tmp_path, count=False, lib_dir=san, flags=tuple(SANITIZE_FLAGS))
    for mode in ("caller", "owned"):
        res = subprocess.run([str(exe), mode], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, **SAN_ENV))
        assert res.returncode == 0 and not REPORT.search(res.stderr), res.stderr[-6000:]
        if mode == "caller":
            _check_caller_output(built, res.stdout)
