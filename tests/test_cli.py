"""The command line, driven as a user drives it: in a subprocess, reading its output and files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["mlp", "resnet", "transformer", "lora", "digits"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_cache):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["GRAPHC_CACHE_DIR"] = shared_cache
    e.pop("GRAPHC_DEBUG", None)
    return e


def cli(env, *args, cwd=None, ok=True):
    r = subprocess.run([sys.executable, "-m", "graphc", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=600)
    if ok and r.returncode != 0:
        raise AssertionError(f"graphc {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def eager_outputs(model_file: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import graphc
    from graphc.modelfile import load_model_file

    lm = load_model_file(model_file)
    lm.module.eval()
    out = lm.module(*[graphc.from_numpy(v) for v in feeds.values()])
    return out.numpy()


@pytest.fixture(scope="module")
def compiled(env, tmp_path_factory):
    """Every example compiled with --verify in both weight modes."""
    out = tmp_path_factory.mktemp("out")
    results = {}
    for name in EXAMPLES:
        r = cli(env, "compile", ROOT / "examples" / name / "model.py", "-o", out / name, "--verify")
        results[(name, "embed")] = (out / name, r)
    for name in EXAMPLES:
        d = out / f"{name}_file"
        r = cli(env, "compile", ROOT / "examples" / name / "model.py", "-o", d, "--weights", "file", "--verify")
        results[(name, "file")] = (d, r)
    return results


@pytest.mark.parametrize("mode", ["embed", "file"])
@pytest.mark.parametrize("name", EXAMPLES)
def test_compile_prints_phases_verify_and_files(compiled, name, mode):
    folder, r = compiled[(name, mode)]
    lines = r.stdout.splitlines()
    for phase in ("load", "trace", "passes", "codegen", "C compile"):
        assert any(re.match(rf"\s+{phase}\s+[\d.]+ ms$", ln) for ln in lines), (phase, r.stdout)
    errs = [float(m.group(1)) for m in re.finditer(r"max abs error ([\d.e+-]+)", r.stdout)]
    assert errs and max(errs) < 1e-4, r.stdout
    manifest = json.loads((folder / "manifest.json").read_text())
    lib = folder / f"lib{manifest['name']}.so"
    assert lib.exists() and (folder / f"{manifest['name']}.h").exists()
    assert re.search(rf"lib{manifest['name']}\.so\s+[\d.]+ (KB|MB)", r.stdout)
    assert manifest["options"]["weights"] == mode
    assert (folder / f"{manifest['name']}.safetensors").exists() == (mode == "file")
    assert (folder / "main.c").exists() and (folder / "Makefile").exists()


@pytest.mark.parametrize("name,mode", [("mlp", "embed"), ("mlp", "file"), ("resnet", "file"), ("digits", "embed")])
def test_run_matches_eager(env, compiled, tmp_path, name, mode):
    folder, _ = compiled[(name, mode)]
    manifest = json.loads((folder / "manifest.json").read_text())
    if mode == "file":
        assert (folder / f"{manifest['name']}.safetensors").exists()
    spec = manifest["inputs"][0]
    shape = [3 if not str(d).isdigit() else int(d) for d in spec["shape"]]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli(env, "run", folder, "--input", f"{spec['name']}=" + str(tmp_path / "x.npy"), "--save",
               tmp_path / "y.npz")
    assert "saved output" in r.stdout
    got = np.load(tmp_path / "y.npz")["output"]
    want = eager_outputs(ROOT / "examples" / name / "model.py", {spec["name"]: x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_run_random_inputs_and_bench(env, compiled):
    folder, _ = compiled[("mlp", "embed")]
    r = cli(env, "run", folder, "--dim", "B=4")
    assert re.search(r"output: float32\[4, 10\]", r.stdout)
    r = cli(env, "bench", folder, "--runs", "20", "--warmup", "2", "--threads", "1", "--dim", "B=8")
    assert re.search(r"mlp: 20 runs after 2 warm-up, threads=1, inputs x\[8, 784\]", r.stdout)
    assert re.search(r"median [\d.]+ ms\s+min [\d.]+ ms\s+max [\d.]+ ms", r.stdout)


def test_trace_prints_parseable_ir_and_gir_round_trip(env, tmp_path):
    import graphc

    r = cli(env, "trace", ROOT / "examples" / "mlp" / "model.py")
    assert r.stdout.startswith("graph mlp(%x : f32[B,784]) -> (output) {")
    assert "linear(%x, @fc1.weight, @fc1.bias)  # fc1 @ model.py:" in r.stdout
    g = graphc.ir.parse(r.stdout)
    assert str(g) == r.stdout
    (tmp_path / "m.gir").write_text(r.stdout)
    r2 = cli(env, "trace", tmp_path / "m.gir")
    assert r2.stdout == r.stdout
    opt = cli(env, "trace", ROOT / "examples" / "resnet" / "model.py", "-O2").stdout
    assert "batch_norm" not in opt and "bn_folded" in opt


def test_compile_gir_with_weights(env, tmp_path):
    import graphc
    from graphc.modelfile import load_model_file

    src = ROOT / "examples" / "mlp" / "model.py"
    gir = cli(env, "trace", src).stdout
    (tmp_path / "mlp.gir").write_text(gir)
    lm = load_model_file(src)
    graphc.save(lm.module.state_dict(), tmp_path / "mlp.safetensors")
    cli(env, "compile", tmp_path / "mlp.gir", "-o", tmp_path / "out", "--verify")
    x = np.random.default_rng(2).standard_normal((2, 784)).astype(np.float32)
    cm = graphc.load_compiled(tmp_path / "out")
    np.testing.assert_allclose(cm(x), lm.module(graphc.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
    r = cli(env, "compile", tmp_path / "mlp.gir", "--weights-file", tmp_path / "nothere.safetensors", ok=False)
    assert r.returncode == 1


def test_emit_c_writes_sources_only(env, tmp_path):
    cli(env, "compile", ROOT / "examples" / "mlp" / "model.py", "--emit-c", "-o", tmp_path / "src")
    files = {p.name for p in (tmp_path / "src").iterdir()}
    assert "mlp_model.c" in files and "mlp.h" in files and "manifest.json" in files
    assert not any(f.endswith(".so") for f in files)
    # what building the folder needs: the build files, the runtime's sources, the blob the .S bakes
    assert {"Makefile", "CMakeLists.txt", "mlp.pc", "mlp_weights.S", "mlp_weights.safetensors", "runtime"} <= files
    assert (tmp_path / "src" / "runtime" / "graphc_rt.h").is_file()


def test_no_openmp_is_recorded_and_leaves_openmp_out_of_every_build_file(env, tmp_path):
    out = tmp_path / "serial"
    cli(env, "compile", ROOT / "examples" / "mlp" / "model.py", "--emit-c", "--no-openmp", "-o", out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["options"]["openmp"] is False and "-pthread" in man["options"]["cflags"]
    assert "-fopenmp" not in (out / "Makefile").read_text() + (out / "mlp.pc").read_text()
    assert "option(MLP_OPENMP \"compile libmlp with OpenMP (OFF: a serial library)\" OFF)" in \
        (out / "CMakeLists.txt").read_text()
    assert "--no-openmp" in cli(env, "compile", "--help").stdout


def test_show_graph_and_memory_plan(env, compiled, tmp_path):
    cli(env, "show", ROOT / "examples" / "resnet" / "model.py", "-o", tmp_path / "g.dot")
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith('digraph "resnet"') and "conv" in dot and "stem" in dot
    svg_run = cli(env, "show", ROOT / "examples" / "resnet" / "model.py", "-o", tmp_path / "g.svg", ok=False)
    if shutil.which("dot"):
        assert svg_run.returncode == 0 and (tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")
    else:
        assert svg_run.returncode == 1
        assert "needs Graphviz's 'dot' program, which is not installed" in svg_run.stderr
        assert (tmp_path / "g.dot").exists()
    folder, _ = compiled[("resnet", "embed")]
    cli(env, "show", folder, "--memory", "-o", tmp_path / "plan.svg")
    svg = (tmp_path / "plan.svg").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert svg.startswith("<svg") and "memory plan of resnet" in svg
    assert svg.count("<rect") - 1 == len(manifest["memory_plan"]["blocks"])  # one box per block + background


ERRORS = [
    (["compile", "nothere.py"], "graphc: error: nothere.py: no such file"),
    (["compile", "{nomodel}"], "graphc: error: nomodel.py: defines no 'model' (define model = MyNet() or def "
                               "model(): return MyNet(); or pass --model NAME)"),
    (["compile", "{mlp}", "--input", "x:f33[B,784]"],
     "graphc: error: --input 'x:f33[B,784]': unknown dtype 'f33' (use f32, f64, f16, bf16, i64, i32, i8, u8, bool)"),
    (["compile", "{mlp}", "--input", "x:f32[B,784"],
     "graphc: error: --input 'x:f32[B,784': expected NAME:DTYPE[DIM,...], e.g. x:f32[B,784]"),
    (["compile", "{unsupported}", "-o", "{tmp}/u"],
     "graphc: error: not supported by the C backend: op sum, dtype float16, at module path <top level> "
     "(unsupported.py:11) (output 'output')"),
    (["run", "{tmp}"], "graphc: error: {tmp}: not an exported graphc folder (no manifest.json); run 'graphc "
                       "compile' first"),
    (["compile", "{raises}"], "graphc: error: raises.py:3: running the model file raised ZeroDivisionError: "
                              "division by zero"),
]


@pytest.mark.parametrize("argv,message", ERRORS, ids=[e[0][1] + "-" + str(i) for i, e in enumerate(ERRORS)])
def test_documented_errors_are_one_line(env, tmp_path, argv, message):
    (tmp_path / "nomodel.py").write_text("import graphc\nnet = 3\n")
    (tmp_path / "raises.py").write_text("import graphc\n\nx = 1 / 0\n")
    (tmp_path / "unsupported.py").write_text(
        "import graphc\nimport graphc.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = nn.Linear(4, 4)\n\n    def forward(self, x):\n"
        "        return self.fc(x).half().sum(-1)\n\n\nmodel = Net()\nexample_inputs = (graphc.randn(2, 4),)\n")
    subst = {"nomodel": tmp_path / "nomodel.py", "raises": tmp_path / "raises.py", "tmp": tmp_path,
             "unsupported": tmp_path / "unsupported.py", "mlp": ROOT / "examples" / "mlp" / "model.py"}
    args = [a.format(**subst) for a in argv]
    r = cli(env, *args, cwd=tmp_path, ok=False)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == message.format(**subst), r.stderr
    assert "Traceback" not in r.stderr


def test_debug_shows_traceback_and_usage_errors_exit_2(env, tmp_path):
    r = cli(env, "--debug", "compile", tmp_path / "nothere.py", ok=False)
    assert r.returncode == 1 and "Traceback" in r.stderr
    r = cli(env, "compile", ok=False)
    assert r.returncode == 2 and "the following arguments are required: model_file" in r.stderr
    r = cli(env, "frobnicate", ok=False)
    assert r.returncode == 2


def test_version_and_help(env):
    import graphc

    assert cli(env, "--version").stdout.strip() == f"graphc {graphc.__version__}"
    for cmd in ("compile", "run", "bench", "trace", "show"):
        r = cli(env, cmd, "--help")
        assert "examples:" in r.stdout and f"graphc {cmd}" in r.stdout
