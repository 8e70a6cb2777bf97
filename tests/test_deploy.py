"""Deploying an export folder the way a user's project does: rebuilding the library from the shipped
sources (make lib), new weights of an embed-mode export, the build files users integrate (CMake
add_subdirectory / find_package, pkg-config, a static library) and serial libraries without OpenMP.
Every program built here is run and its outputs compared with the eager model (numpy)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.export import read_manifest, write_weights
from tests.shared_build import shared_cache_dir

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")
TARGET = "x86-64-v2"  # one ISA level: the runtime is compiled once per file (fast rebuilds with make / CMake)


def _cache_dir() -> str:
    return shared_cache_dir()


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        return self.fc2(graphc.relu(self.fc1(x)))


def mlp(seed: int = 0) -> MLP:
    graphc.manual_seed(seed)
    return MLP().eval()


def export(out: Path, model: nn.Module | None = None, **kw):
    kw.setdefault("target", TARGET)
    return graphc.compile(model or mlp(), (graphc.randn(2, 8),), {"x": {0: graphc.Dim("B", 1, 16)}}, name="mlp",
                          out_dir=out, cache_dir=_cache_dir(), **kw)


def reference(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The MLP in numpy from its state_dict (independent of graphc's kernels)."""
    sd = {k: np.asarray(v.numpy()) for k, v in model.state_dict().items()}
    h = np.maximum(x @ sd["fc1.weight"].T + sd["fc1.bias"], 0)
    return h @ sd["fc2.weight"].T + sd["fc2.bias"]


def pattern(b: int) -> np.ndarray:
    """main.c's inputs when none are given: element i is ((i * 7) % 17) / 8 - 1."""
    return (((np.arange(b * 8) * 7) % 17) / 8.0 - 1.0).astype(np.float32).reshape(b, 8)


def run(cmd: list, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"$ {' '.join(map(str, cmd))}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def main_outputs(text: str) -> np.ndarray:
    """The values main.c prints after its 'name dtype[shape]' line."""
    lines = text.strip().splitlines()
    assert lines[0].split()[1].startswith("f32["), lines[0]
    shape = [int(d) for d in lines[0].split("[")[1].rstrip("]").split(",")]
    return np.array([float(v) for v in lines[1:]], np.float32).reshape(shape)


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["GRAPHC_CACHE_DIR"] = _cache_dir()
    return subprocess.run([sys.executable, "-m", "graphc", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


# ------------------------------------------------------------------------ make lib
@pytest.mark.parametrize("weights", ["embed", "file", "emit-only"])
def test_make_lib_rebuilds_the_library_from_the_shipped_files(tmp_path, weights):
    out = tmp_path / "mlp"
    if weights == "emit-only":  # the sources only (graphc compile --emit-c): make lib builds the library
        export(out, emit_only=True)
    else:
        export(out, weights=weights)
        (out / "libmlp.so").unlink()
    if weights != "file":
        assert (out / "mlp_weights.safetensors").is_file()  # what mlp_weights.S bakes
    run(["make", "-s", "lib"], cwd=out)
    run(["make", "-s"], cwd=out)
    got = main_outputs(run(["./main", "B=3"], cwd=out))
    np.testing.assert_allclose(got, reference(mlp(), pattern(3)), rtol=1e-5, atol=1e-5)
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(graphc.load_compiled(out)(x), reference(mlp(), x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ new weights of an embed-mode export
def test_new_weights_of_an_embed_export_are_used_by_every_loader_from_then_on(tmp_path):
    out = tmp_path / "mlp"
    cm = export(out)  # weights baked into libmlp.so
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_allclose(graphc.load_compiled(out)(x), reference(mlp(0), x), rtol=1e-5, atol=1e-5)
    assert read_manifest(out)["weights_file"] is None

    cm.load_state_dict(mlp(1).state_dict())  # the Python API: the folder now uses mlp.safetensors
    np.testing.assert_allclose(cm(x), reference(mlp(1), x), rtol=1e-5, atol=1e-5)
    man = read_manifest(out)
    assert man["weights_file"] == "mlp.safetensors" and "mlp.safetensors" in man["files"]["all"]
    np.testing.assert_allclose(graphc.load_compiled(out)(x), reference(mlp(1), x), rtol=1e-5, atol=1e-5)

    np.save(tmp_path / "x.npy", x)  # graphc run says which weights it uses, and uses them
    r = cli("run", out, "--input", f"x={tmp_path / 'x.npy'}", "--save", tmp_path / "y.npy")
    assert r.returncode == 0, r.stderr
    assert "weights: mlp.safetensors" in r.stdout and "baked" in r.stdout
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference(mlp(1), x), rtol=1e-5, atol=1e-5)

    run(["make", "-s"], cwd=out)  # the exported main picks the file up too
    r = subprocess.run(["./main", "B=2"], cwd=out, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "mlp.safetensors" in r.stderr
    np.testing.assert_allclose(main_outputs(r.stdout), reference(mlp(1), pattern(2)), rtol=1e-5, atol=1e-5)

    write_weights(out, mlp(2).state_dict())  # write_weights into the folder: the same
    np.testing.assert_allclose(graphc.load_compiled(out)(x), reference(mlp(2), x), rtol=1e-5, atol=1e-5)
    got = main_outputs(run(["./main", "B=2"], cwd=out))
    np.testing.assert_allclose(got, reference(mlp(2), pattern(2)), rtol=1e-5, atol=1e-5)
    # a file written elsewhere changes nothing in the folder; weights= picks it explicitly
    other = write_weights(out, mlp(3).state_dict(), path=tmp_path / "elsewhere.safetensors")
    np.testing.assert_allclose(graphc.load_compiled(out)(x), reference(mlp(2), x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(graphc.load_compiled(out, weights=other)(x), reference(mlp(3), x), rtol=1e-5,
                               atol=1e-5)

    (out / "mlp.safetensors").unlink()  # the manifest names it: a clear error, not the stale baked weights
    with pytest.raises(FileNotFoundError, match="mlp.safetensors is missing.*baked"):
        graphc.load_compiled(out)
    r = cli("run", out)
    assert r.returncode == 1 and "mlp.safetensors is missing" in r.stderr, r.stderr

    export(out, mlp(4))  # a re-export bakes its own weights again and forgets the file
    assert read_manifest(out)["weights_file"] is None and not (out / "mlp.safetensors").exists()
    np.testing.assert_allclose(graphc.load_compiled(out)(x), reference(mlp(4), x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ serial libraries (no OpenMP)
def test_no_openmp_builds_a_serial_library_that_matches(tmp_path):
    out = tmp_path / "serial"
    r = cli("compile", ROOT / "examples" / "mlp" / "model.py", "-o", out, "--name", "mlp", "--target", TARGET,
            "--no-openmp")
    assert r.returncode == 0, r.stderr
    man = read_manifest(out)
    assert man["options"]["openmp"] is False and "-fopenmp" not in man["options"]["cflags"] + man["options"]["ldflags"]
    for lib in (out / "libmlp.so",):
        symbols = run(["nm", "-D", lib]) + run(["nm", lib])
        assert "GOMP" not in symbols and "omp_get" not in symbols
        assert "libgomp" not in run(["ldd", lib])
    # no source of the library includes omp.h (the preprocessor's dependency list)
    flags = [f for f in man["options"]["cflags"] if f.startswith(("-std", "-m", "-D", "-f", "-p"))]
    deps = run(["cc", *flags, "-I.", "-Iruntime", "-M", "mlp_model.c", "mlp_kernels0.c",
                *sorted(str(p.relative_to(out)) for p in (out / "runtime").glob("*.c"))], cwd=out)
    assert "gc_omp.h" in deps and not re.search(r"[\s/]omp\.h", deps)
    # the same model with OpenMP, as the reference of the serial build's outputs (and numpy's)
    from graphc.modelfile import load_model_file

    lm = load_model_file(ROOT / "examples" / "mlp" / "model.py")
    x = np.random.default_rng(2).standard_normal((4, 784)).astype(np.float32)
    want = lm.module.eval()(graphc.tensor(x)).numpy()
    serial = graphc.load_compiled(out)
    assert serial.num_threads == 1
    np.testing.assert_allclose(serial(x), want, rtol=1e-4, atol=1e-5)
    serial.set_num_threads(2)  # the runtime's pthread pool still spreads the GEMMs, same results
    np.testing.assert_allclose(serial(x), want, rtol=1e-4, atol=1e-5)
    (out / "libmlp.so").unlink()  # make lib rebuilds it without OpenMP, and main runs it
    run(["make", "-s", "lib"], cwd=out)
    assert "GOMP" not in run(["nm", "-D", out / "libmlp.so"])
    run(["make", "-s"], cwd=out)
    got = main_outputs(run(["./main", "B=2"], cwd=out))
    xp = (((np.arange(2 * 784) * 7) % 17) / 8.0 - 1.0).astype(np.float32).reshape(2, 784)
    np.testing.assert_allclose(got, lm.module(graphc.tensor(xp)).numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ build files users integrate
APP = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "{n}.h"

/* a consumer of model {n}: B=3 rows of main.c's input pattern, the outputs one per line */
int main(int argc, char **argv)
{{
    const char *weights = argc > 1 && argv[1][0] ? argv[1] : NULL;
    {n}_ctx *ctx = NULL;
    char err[256];
    if ({n}_abi_version() != {M}_ABI_VERSION || strcmp({n}_version(), {M}_VERSION) != 0) {{
        fprintf(stderr, "header and library disagree\n");
        return 3;
    }}
    if ({n}_create(&ctx, weights, err, sizeof err) != {M}_OK) {{
        fprintf(stderr, "%s\n", err);
        return 1;
    }}
    float x[3 * 8], y[3 * 4];
    for (int i = 0; i < 3 * 8; i++)
        x[i] = (float)((i * 7) % 17) / 8.0f - 1.0f;
    const int64_t dims[1] = {{3}};
    const void *ins[1] = {{x}};
    void *outs[1] = {{y}};
    if ({n}_run_v(ctx, dims, ins, outs) != {M}_OK) {{
        fprintf(stderr, "%s\n", {n}_last_error(ctx));
        return 2;
    }}
    for (int i = 0; i < 3 * 4; i++)
        printf("%.9g\n", (double)y[i]);
    {n}_destroy(ctx);
    return 0;
}}
"""


def app_source(folder: Path, name: str = "mlp") -> Path:
    src = folder / "app.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(APP.format(n=name, M=name.upper()))
    return src


def app_outputs(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()], np.float32).reshape(3, 4)


def cmake_project(folder: Path, body: str, after: str = "") -> Path:
    app_source(folder)
    head = "cmake_minimum_required(VERSION 3.16)\nproject(app C)\n"
    tail = "add_executable(app app.c)\ntarget_link_libraries(app PRIVATE graphc::mlp)\n"
    (folder / "CMakeLists.txt").write_text(head + body + tail + after)
    return folder


def cmake_build(src: Path, build: Path, *args: str) -> None:
    run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", *args])
    run(["cmake", "--build", build, "-j2"])


needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")


@needs_cmake
def test_cmake_install_find_package_and_pkg_config_consumers(tmp_path):
    out = tmp_path / "mlp"
    export(out)
    want = reference(mlp(), pattern(3))
    prefix = tmp_path / "prefix"
    cmake_build(out, tmp_path / "build")
    run(["cmake", "--install", tmp_path / "build", "--prefix", prefix])
    assert (prefix / "include" / "mlp.h").is_file() and (prefix / "lib" / "libmlp.so").is_file()
    assert (prefix / "lib" / "cmake" / "mlp" / "mlpConfig.cmake").is_file()
    pc = (prefix / "lib" / "pkgconfig" / "mlp.pc").read_text()
    assert f"Version: {graphc.__version__}" in pc and "abi_version=" in pc

    # find_package(mlp CONFIG) from another project, against the installed prefix
    app = cmake_project(tmp_path / "app", "find_package(mlp CONFIG REQUIRED)\n"
                        "message(STATUS \"mlp ${mlp_VERSION} abi ${mlp_ABI_VERSION} weights '${mlp_WEIGHTS_FILE}'\")\n")
    run(["cmake", "-S", app, "-B", app / "build", f"-DCMAKE_PREFIX_PATH={prefix}"])
    run(["cmake", "--build", app / "build"])
    np.testing.assert_allclose(app_outputs(run([app / "build" / "app"])), want, rtol=1e-5, atol=1e-5)
    assert str(prefix / "lib" / "libmlp.so") in run(["ldd", app / "build" / "app"])

    # pkg-config, against the installed prefix and against the export folder itself
    if shutil.which("pkg-config") is None:
        pytest.skip("needs pkg-config")
    for where, libdir in ((prefix / "lib" / "pkgconfig", prefix / "lib"), (out, out)):
        env = {**os.environ, "PKG_CONFIG_PATH": str(where)}
        assert run(["pkg-config", "--modversion", "mlp"], env=env).strip() == graphc.__version__
        flags = run(["pkg-config", "--cflags", "--libs", "mlp"], env=env).split()
        exe = tmp_path / f"pc-{where.name}"
        run(["cc", "-O2", "-o", exe, app_source(tmp_path / "pc"), *flags, f"-Wl,-rpath,{libdir}"])
        np.testing.assert_allclose(app_outputs(run([exe])), want, rtol=1e-5, atol=1e-5)


@needs_cmake
def test_cmake_add_subdirectory_builds_a_static_library_into_the_program(tmp_path):
    out = tmp_path / "mlp"
    export(out, weights="file")
    app = cmake_project(tmp_path / "app", f"add_subdirectory({out.as_posix()} mlp)\n"
                        "message(STATUS \"weights '${mlp_WEIGHTS_FILE}'\")\n")
    run(["cmake", "-S", app, "-B", app / "build", "-DBUILD_SHARED_LIBS=OFF"])
    log = (app / "build" / "CMakeCache.txt").read_text()
    assert "MLP_SHARED:BOOL=OFF" in log
    run(["cmake", "--build", app / "build", "-j2"])
    exe = app / "build" / "app"
    assert "libmlp" not in run(["ldd", exe])  # linked in statically
    got = app_outputs(run([exe, out / "mlp.safetensors"]))
    np.testing.assert_allclose(got, reference(mlp(), pattern(3)), rtol=1e-5, atol=1e-5)
    static = next((app / "build" / "mlp").glob("libmlp.a"))
    exported = [ln.split()[-1] for ln in run(["nm", static]).splitlines() if " T " in ln]
    assert exported and all(s.startswith("mlp_") for s in exported), exported


def test_make_static_libraries_of_two_models_link_into_one_program(tmp_path):
    folders = {}
    for name, seed in (("mlp", 0), ("mlp2", 1)):
        out = tmp_path / name
        graphc.compile(mlp(seed), (graphc.randn(2, 8),), {"x": {0: graphc.Dim("B", 1, 16)}}, name=name,
                       out_dir=out, cache_dir=_cache_dir(), target=TARGET)
        run(["make", "-s", "static"], cwd=out)
        folders[name] = out
    main = tmp_path / "both.c"
    main.write_text(APP.format(n="mlp", M="MLP").replace("int main(int argc", "static int run_mlp(int argc")
                    + APP.format(n="mlp2", M="MLP2").replace("int main(int argc", "static int run_mlp2(int argc")
                    .replace("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n", "")
                    + "int main(int argc, char **argv) { return run_mlp(argc, argv) || run_mlp2(argc, argv); }\n")
    exe = tmp_path / "both"
    # the runtime's gc_* symbols are local to each archive: no clash, each model keeps its own
    run(["cc", "-O2", "-o", exe, main, f"-I{folders['mlp']}", f"-I{folders['mlp2']}", folders["mlp"] / "libmlp.a",
         folders["mlp2"] / "libmlp2.a", "-fopenmp", "-lm"])
    vals = np.array(run([exe]).split(), np.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(vals[0], reference(mlp(0), pattern(3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vals[1], reference(mlp(1), pattern(3)), rtol=1e-5, atol=1e-5)


@needs_cmake
def test_cmake_static_install_find_package_and_pkg_config_static(tmp_path):
    out = tmp_path / "mlp"
    model = mlp(5)
    export(out, model)
    write_weights(out, mlp(6).state_dict())  # new weights: installed, and named by the CMake/pkg-config files
    prefix = tmp_path / "prefix"
    cmake_build(out, tmp_path / "build", "-DBUILD_SHARED_LIBS=OFF")
    run(["cmake", "--install", tmp_path / "build", "--prefix", prefix])
    assert (prefix / "lib" / "libmlp.a").is_file() and not (prefix / "lib" / "libmlp.so").exists()
    installed_weights = prefix / "share" / "mlp" / "mlp.safetensors"
    assert installed_weights.is_file()
    pc = (prefix / "lib" / "pkgconfig" / "mlp.pc").read_text()
    assert "-fopenmp" in pc.split("Libs:")[1].splitlines()[0]  # a static library names what it needs
    # find_package: the target brings OpenMP, pthreads and libm; mlp_WEIGHTS_FILE names the installed file
    app = cmake_project(tmp_path / "app", "find_package(mlp CONFIG REQUIRED)\n",
                        "target_compile_definitions(app PRIVATE \"WEIGHTS=\\\"${mlp_WEIGHTS_FILE}\\\"\")\n")
    src = app / "app.c"
    src.write_text(src.read_text().replace("argc > 1 && argv[1][0] ? argv[1] : NULL", "WEIGHTS"))
    run(["cmake", "-S", app, "-B", app / "build", f"-DCMAKE_PREFIX_PATH={prefix}"])
    run(["cmake", "--build", app / "build"])
    assert "libmlp" not in run(["ldd", app / "build" / "app"])
    np.testing.assert_allclose(app_outputs(run([app / "build" / "app"])), reference(mlp(6), pattern(3)),
                               rtol=1e-5, atol=1e-5)
    if shutil.which("pkg-config") is None:
        pytest.skip("needs pkg-config")
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    assert Path(run(["pkg-config", "--variable=weights", "mlp"], env=env).strip()).resolve() == \
        installed_weights.resolve()
    exe = tmp_path / "pc-static"
    run(["cc", "-O2", "-o", exe, app_source(tmp_path / "pc"),
         *run(["pkg-config", "--cflags", "--libs", "mlp"], env=env).split()])
    np.testing.assert_allclose(app_outputs(run([exe])), reference(model, pattern(3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(app_outputs(run([exe, installed_weights])), reference(mlp(6), pattern(3)),
                               rtol=1e-5, atol=1e-5)


def test_a_hand_edited_weights_file_entry_is_one_clear_error(tmp_path):
    import json

    out = tmp_path / "mlp"
    export(out)
    man = json.loads((out / "manifest.json").read_text())
    for bad in ("../elsewhere.safetensors", "/etc/passwd", 7, "sub/mlp.safetensors"):
        man["weights_file"] = bad
        (out / "manifest.json").write_text(json.dumps(man))
        with pytest.raises(ValueError, match="damaged manifest: 'weights_file'"):
            graphc.load_compiled(out)
