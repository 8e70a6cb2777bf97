"""The compiled library's runtime behaviour and the Python loader (issue 9): libraries are closed with
their last user, misaligned inputs reach C as aligned copies, inputs by keyword, the weights-file
contract, internal calls bound inside the library, the arena sized for the run, the ABI version.

The libraries are built once per module into the shared test cache (content-addressed, so never stale).
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.backend import compiled as compiled_mod
from graphc.backend import load_compiled
from tests.shared_build import shared_cache_dir


def _cache_dir() -> str:
    return shared_cache_dir()


class Two(nn.Module):
    """Two named inputs, a GEMM (the kernel UBSan saw misaligned loads in) and a dynamic batch."""

    def __init__(self, d: int = 32, h: int = 64) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, 8)

    def forward(self, x: graphc.Tensor, scale: graphc.Tensor) -> graphc.Tensor:
        return self.fc2(graphc.relu(self.fc1(x))) * scale


def _model(seed: int = 0, d: int = 32, h: int = 64) -> Two:
    graphc.manual_seed(seed)
    return Two(d, h).eval()


def _numpy(model: Two, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    sd = {k: np.asarray(v.numpy(), np.float64) for k, v in model.state_dict().items()}
    h = np.maximum(x.astype(np.float64) @ sd["fc1.weight"].T + sd["fc1.bias"], 0)
    return (h @ sd["fc2.weight"].T + sd["fc2.bias"]) * s


def _compile(model: Two, out: Path, name: str = "two", weights: str = "embed", d: int = 32):
    return graphc.compile(model, (graphc.randn(2, d), graphc.randn(1, 8)), {"x": {0: graphc.Dim("B", 1, 64)}},
                          name=name, weights=weights, out_dir=out, cache_dir=_cache_dir())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("abi_runtime")
    model = _model()
    return {"model": model, "base": base, "embed": _compile(model, base / "embed"),
            "file": _compile(model, base / "file", weights="file")}


def _inputs(b: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, 32)).astype(np.float32), rng.standard_normal((1, 8)).astype(np.float32)


# ------------------------------------------------------------------------------ keyword inputs
def test_keyword_inputs(built):
    """lib(x=..., scale=...) binds by input name, mixed with positionals; equal to the positional call."""
    m = built["embed"]
    x, s = _inputs()
    want = m(x, s)
    np.testing.assert_allclose(want, _numpy(built["model"], x, s), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(m(x=x, scale=s), want)
    np.testing.assert_array_equal(m(scale=s, x=x), want)
    np.testing.assert_array_equal(m(x, scale=s), want)


def test_keyword_input_errors(built):
    m = built["embed"]
    x, s = _inputs()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'scal' \(did you mean 'scale'\?\).*"
                                        r"\['x', 'scale'\]"):
        m(x=x, scal=s)
    with pytest.raises(TypeError, match=r"missing input\(s\) \['scale'\]"):
        m(x=x)
    with pytest.raises(TypeError, match=r"multiple values for input 'x' \(positional 1 and keyword\)"):
        m(x, x=x, scale=s)
    with pytest.raises(TypeError, match=r"takes 2 input\(s\) \(x, scale\), got 3 positional"):
        m(x, s, s, scale=s)


# ------------------------------------------------------------------------------ alignment
def _misaligned(a: np.ndarray, offset: int) -> np.ndarray:
    """a's values in a buffer whose data starts `offset` bytes past a 64-byte boundary."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + offset
    view = raw[start:start + a.nbytes].view(a.dtype) if offset % a.itemsize == 0 else \
        np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=start)
    view = view.reshape(a.shape)
    view[...] = a
    assert view.ctypes.data % 64 == offset
    return view


@pytest.mark.parametrize("offset", [1, 2, 4, 36])
def test_misaligned_inputs_give_exact_results(built, offset):
    """An input at an odd byte offset (not aligned to its element size: a misaligned load in C) is copied
    to an aligned buffer; 4-byte aligned but not 64 goes as it is. Either way the result is the aligned
    call's, bit for bit, and the caller's array is untouched."""
    m = built["embed"]
    x, s = _inputs(7)
    want = m(x, s)
    xm, sm = _misaligned(x, offset), _misaligned(s, offset)
    assert xm.flags.aligned == (offset % 4 == 0)
    seen = []
    real = m._lib.run_v

    class Spy:  # the pointers that reach the library
        def __call__(self, ctx, dims, ins, outs):
            seen.extend(int(m._lib.ffi.cast("uintptr_t", ins[k])) for k in range(2))
            return real(ctx, dims, ins, outs)

    other = m.new_context()
    other._ctx.run_v = Spy()
    np.testing.assert_array_equal(other(xm, sm), want)
    np.testing.assert_array_equal(other(x=xm, scale=sm), want)
    assert seen and all(p % 4 == 0 for p in seen)
    if offset % 4:
        assert all(p % compiled_mod.ALIGN == 0 for p in seen)  # the copies are 64-byte aligned
    np.testing.assert_array_equal(xm, x)


# ------------------------------------------------------------------------------ libraries are closed
def _mapped(pattern: str) -> set[str]:
    """Paths of the files mapped into this process whose name contains pattern."""
    with open("/proc/self/maps") as f:
        return {line.split(None, 5)[5].strip() for line in f
                if len(line.split(None, 5)) == 6 and pattern in line.split(None, 5)[5]}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_dropped_models_close_their_libraries(built, tmp_path):
    """60 load/run/drop cycles of distinct library files (copies of one export, ~0.5 MB of baked weights
    each): once the last model and context of a library are gone it is unmapped, so the process keeps
    no more than the libraries in use (before: every one stayed mapped, its weights resident)."""
    graphc.manual_seed(1)
    big = Two(256, 512).eval()  # 128 K + 4 K parameters: ~0.5 MB in the library
    src = _compile(big, tmp_path / "src", name="bigtwo", d=256)
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    s = np.ones((1, 8), np.float32)
    want = src(x, s)
    del src
    gc.collect()
    base_libs = compiled_mod.open_libraries()
    rss0 = None
    for i in range(60):
        d = tmp_path / f"copy{i}"
        shutil.copytree(tmp_path / "src", d)
        m = load_compiled(d)
        np.testing.assert_array_equal(m(x, s), want)
        if i % 3 == 0:  # a context outliving its model keeps the library open
            other = m.new_context()
            del m
            gc.collect()
            np.testing.assert_array_equal(other(x, s), want)
            m = other
            del other
        del m
        gc.collect()
        shutil.rmtree(d)
        if i == 9:
            rss0 = _rss_kib()
        assert not _mapped(str(d)), f"cycle {i}: the dropped model's library is still mapped"
    assert compiled_mod.open_libraries() == base_libs
    # 50 more cycles of 0.5 MB each would be 25 MB resident if libraries were kept
    assert _rss_kib() - rss0 < 12 * 1024


def test_a_recompiled_model_after_a_drop(built, tmp_path):
    """The cache hit of a model whose library was closed opens it again (and gives the same result)."""
    model = _model(3)
    x, s = _inputs(4, 3)
    a = _compile(model, tmp_path / "a")(x, s)
    gc.collect()
    b = _compile(model, tmp_path / "a")(x=x, scale=s)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, _numpy(model, x, s), rtol=1e-4, atol=1e-5)



# ------------------------------------------------------------------------------ internal calls stay inside
HOST_TWO = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include "twin.h" /* model A's header: the host is linked with libtwin.so of A */

typedef int (*create_fn)(twin_ctx **, const char *, char *, size_t);
typedef int (*run_fn)(twin_ctx *, int64_t, const float *, const float *, float *);
typedef void (*destroy_fn)(twin_ctx *);

static void fill(float *x, int n, int k) { for (int i = 0; i < n; i++) x[i] = (float)((i * 7 + k) % 13) / 6.5f - 1.0f; }
static void show(const char *tag, const float *y, int n) {
    printf("%s", tag);
    for (int i = 0; i < n; i++) printf(" %.9g", y[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    (void)argc;
    float x[3 * 32], s[8], ya[3 * 8], yb[3 * 8];
    fill(x, 3 * 32, 1);
    fill(s, 8, 2);
    char err[256];
    /* A through the link */
    twin_ctx *a;
    if (twin_create(&a, NULL, err, sizeof err) != TWIN_OK) { fprintf(stderr, "A: %s\n", err); return 2; }
    /* B: another library of the same model name, opened at run time (RTLD_LOCAL) */
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { fprintf(stderr, "%s\n", dlerror()); return 3; }
    create_fn create_b = (create_fn)dlsym(h, "twin_create");
    run_fn run_b = (run_fn)dlsym(h, "twin_run");
    destroy_fn destroy_b = (destroy_fn)dlsym(h, "twin_destroy");
    if (!create_b || !run_b || !destroy_b) { fprintf(stderr, "dlsym failed\n"); return 4; }
    twin_ctx *b;
    if (create_b(&b, NULL, err, sizeof err) != TWIN_OK) { fprintf(stderr, "B: %s\n", err); return 5; }
    for (int round = 0; round < 2; round++) {
        if (run_b(b, 3, x, s, yb) != TWIN_OK) { fprintf(stderr, "run B failed\n"); return 6; }
        if (twin_run(a, 3, x, s, ya) != TWIN_OK) { fprintf(stderr, "run A: %s\n", twin_last_error(a)); return 7; }
    }
    show("A", ya, 3 * 8);
    show("B", yb, 3 * 8);
    destroy_b(b);
    twin_destroy(a);
    dlclose(h);
    return 0;
}
"""


def _fill(n: int, k: int) -> np.ndarray:
    i = np.arange(n)
    return (((i * 7 + k) % 13).astype(np.float32) / np.float32(6.5) - np.float32(1.0)).astype(np.float32)


EXIT_SCRIPT = """
import sys
import numpy as np
import graphc
from graphc.backend import compiled
cm = graphc.load_compiled(sys.argv[1])
# the control run has no pool workers: with them, the unpinned dlclose below can crash the process
# (a worker spinning in the unmapped code) before it prints what it checks
cm.set_num_threads(2 if sys.argv[2] == "pin" else 1)
rng = np.random.default_rng(0)
y = cm(rng.standard_normal((64, 32)).astype(np.float32), np.ones((1, 8), np.float32))
path = str(cm.lib_path.resolve())
if sys.argv[2] == "pin":
    compiled._pin_open_libraries()  # what the interpreter's exit runs
lib = next(v for v in compiled._LIBS.values() if str(v.path.resolve()) == path)
lib.ffi.dlclose(lib.lib)  # what the last collection at exit does through cffi's dealloc
lib.lib = None
with open("/proc/self/maps") as f:
    print(int(any(path in line for line in f)))
"""


def test_open_libraries_stay_mapped_at_exit(built):
    """Contexts are not destroyed at interpreter exit, so their pool workers may still be spinning in the
    library's code when the last collection frees cffi's library object, which dlcloses it: a busy
    machine made every such exit a SIGSEGV (test_gemm_epilogue's ISA subprocesses). The atexit hook
    marks open libraries RTLD_NODELETE: a dlclose after it leaves the library mapped (and without it
    the same dlclose unmaps it, so the check can tell)."""
    out = {}
    for mode in ("pin", "nopin"):
        res = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, str(built["embed"].directory), mode],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        out[mode] = res.stdout.strip()
    assert out == {"pin": "1", "nopin": "0"}


def test_two_same_named_models_in_one_host(tmp_path):
    """A C host linked with one library of model 'twin' dlopens another 'twin' (other weights and another
    hidden size): each library's twin_run must run its own twin_run_v on its own context. Before, B's
    twin_run called twin_run_v through the PLT, which the dynamic loader bound to A's: A's code on B's
    context (wrong shapes over B's weights: garbage or SIGSEGV)."""
    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler")
    ma, mb = _model(0, 32, 64), _model(1, 32, 48)
    a = _compile(ma, tmp_path / "a", name="twin")
    b = _compile(mb, tmp_path / "b", name="twin")
    (tmp_path / "host.c").write_text(HOST_TWO)
    subprocess.run([cc, "-O1", "-o", "host", "host.c", f"-I{a.directory}", f"-L{a.directory}", "-ltwin",
                    f"-Wl,-rpath,{a.directory}", "-ldl"], cwd=tmp_path, check=True, capture_output=True)
    res = subprocess.run([str(tmp_path / "host"), str(b.lib_path)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, f"host exited with {res.returncode}: {res.stderr}"
    got = {line.split()[0]: np.array([float(v) for v in line.split()[1:]], np.float32).reshape(3, 8)
           for line in res.stdout.splitlines()}
    x, s = _fill(96, 1).reshape(3, 32), _fill(8, 2).reshape(1, 8)
    np.testing.assert_allclose(got["A"], _numpy(ma, x, s), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["B"], _numpy(mb, x, s), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["A"], a(x, s))
    np.testing.assert_array_equal(got["B"], b(x, s))


def _dynamic_relocations(lib: Path) -> list[str]:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("needs readelf")
    out = subprocess.run([readelf, "-rW", str(lib)], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "R_X86_64" in line or "R_AARCH64" in line]


def test_no_call_inside_the_library_goes_through_the_plt(built):
    """No dynamic relocation of a library refers to one of its own NAME_ symbols: every internal call
    and address is bound at link time (a host's or another library's same-named symbol cannot win)."""
    for mode in ("embed", "file"):
        m = built[mode]
        own = [r for r in _dynamic_relocations(m.lib_path) if f" {m.name}_" in r]
        assert own == [], f"{mode}: {own}"


# ------------------------------------------------------------------------------ ABI version
HOST_VERSION = r"""
#include <stdio.h>
#include "two.h"
#if !defined(TWO_ABI_VERSION) || !defined(TWO_VERSION)
#error "the header has no version macros"
#endif
int main(void) {
    printf("%d %d %s %s\n", TWO_ABI_VERSION, two_abi_version(), TWO_VERSION, two_version());
    return two_abi_version() == TWO_ABI_VERSION ? 0 : 1;
}
"""


def test_abi_version_macro_and_query(built, tmp_path):
    """The header's TWO_ABI_VERSION / TWO_VERSION equal what the library's two_abi_version() /
    two_version() return, from C and from Python: graphc's ABI revision and release."""
    from graphc.backend.base import ABI_VERSION

    cc = shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler")
    m = built["embed"]
    header = (m.directory / "two.h").read_text()
    assert f"#define TWO_ABI_VERSION {ABI_VERSION}\n" in header
    assert f'#define TWO_VERSION "{graphc.__version__}"\n' in header
    (tmp_path / "host.c").write_text(HOST_VERSION)
    subprocess.run([cc, "-o", "host", "host.c", f"-I{m.directory}", f"-L{m.directory}", "-ltwo",
                    f"-Wl,-rpath,{m.directory}"], cwd=tmp_path, check=True, capture_output=True)
    res = subprocess.run([str(tmp_path / "host")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(ABI_VERSION), str(ABI_VERSION), graphc.__version__, graphc.__version__]
    assert m.abi_version == ABI_VERSION >= 2
    assert m.version == graphc.__version__


# ------------------------------------------------------------------------------ the weights file contract
DISTURB = r"""
import os, sys
import numpy as np
from graphc.backend import load_compiled
folder, how, mode = sys.argv[1], sys.argv[2], sys.argv[3]
m = load_compiled(folder, map_weights=mode == "map")
x = np.linspace(-1, 1, 5 * 32, dtype=np.float32).reshape(5, 32)
s = np.linspace(0.5, 2, 8, dtype=np.float32).reshape(1, 8)
before = m(x, s)
path = os.path.join(folder, "two.safetensors")
if how == "truncate":
    os.truncate(path, 64)
else:  # overwrite in place with another model's weights file of the same size
    other = open(sys.argv[4], "rb").read()
    with open(path, "r+b") as f:
        f.write(other)
after = m(x, s)
print("same" if np.array_equal(before, after) else "changed")
"""


def _disturb(tmp_path, built, how: str, mode: str) -> subprocess.CompletedProcess:
    folder = tmp_path / f"{how}-{mode}"
    shutil.copytree(built["file"].directory, folder)
    other = tmp_path / "other.safetensors"
    if not other.exists():
        from graphc.backend import write_weights

        write_weights(folder, _model(7).state_dict(), path=other)
    assert other.stat().st_size == (folder / "two.safetensors").stat().st_size
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(graphc.__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", DISTURB, str(folder), how, mode, str(other)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("how", ["truncate", "overwrite"])
def test_weights_file_changed_after_create_does_not_reach_the_context(built, tmp_path, how):
    """Default contract: create reads the file, so truncating it (before: SIGBUS in the next run) or
    overwriting it in place with other weights (before: the outputs changed silently) does nothing to a
    context that is already open."""
    res = _disturb(tmp_path, built, how, "copy")
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr[-2000:]}"
    assert res.stdout.split() == ["same"]


def test_mapped_weights_are_the_file(built, tmp_path):
    """NAME_CREATE_MAP_WEIGHTS really maps: an in-place overwrite changes what the context computes (the
    documented price of the option; graphc's own writers never do it)."""
    res = _disturb(tmp_path, built, "overwrite", "map")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["changed"]


@pytest.mark.parametrize("map_weights", [False, True])
def test_graphc_weight_updates_never_disturb_a_running_context(built, tmp_path, map_weights):
    """write_weights and load_state_dict replace the file atomically (new file, rename): a context opened
    on the old file, mapped or not, keeps computing with the old weights; a new context sees the new."""
    from graphc.backend import write_weights

    folder = tmp_path / "f"
    shutil.copytree(built["file"].directory, folder)
    m = load_compiled(folder, map_weights=map_weights)
    keep = m.new_context()
    x, s = _inputs(6, 4)
    old = m(x, s)
    np.testing.assert_allclose(old, _numpy(built["model"], x, s), rtol=1e-4, atol=1e-5)
    new1, new2 = _model(11), _model(12)
    write_weights(folder, new1.state_dict())
    np.testing.assert_array_equal(keep(x, s), old)
    np.testing.assert_array_equal(m(x, s), old)  # m's context was opened before the write too
    np.testing.assert_allclose(load_compiled(folder, map_weights=map_weights)(x, s), _numpy(new1, x, s),
                               rtol=1e-4, atol=1e-5)
    m.load_state_dict(new2.state_dict())
    np.testing.assert_allclose(m(x, s), _numpy(new2, x, s), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(keep(x, s), old)


def test_create_ex_refuses_unknown_flags(built):
    m = built["file"]
    lib = m._lib
    out = lib.ffi.new("two_ctx **")
    err = lib.ffi.new("char[]", 256)
    rc = lib.create_ex(out, str(m.weights_path).encode(), 6, err, 256)
    assert rc == -1 and out[0] == lib.ffi.NULL
    assert lib.ffi.string(err).decode() == "two_create_ex: unknown flags"
