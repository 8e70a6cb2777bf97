"""Clear errors instead of tracebacks or silence (issue 9): each bad option, file or name the command line
or graphc.compile is given is one line on stderr naming the place (exit 1, no traceback), and options are
validated instead of ignored; model names are checked (reserved names refused in any letter case,
default names read as the user wrote them). A failing C compiler's first error lines are
test_export.py::test_cli_shows_the_compilers_first_error_lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
import graphc.nn as nn
from graphc.cli import main
from graphc.errors import ExportError

ROOT = Path(__file__).resolve().parent.parent


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


class TwoOut(nn.Module):
    def forward(self, x):
        return {"double": x * 2.0, "total": x.sum(-1)}


X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
DYN = {"x": {0: graphc.Dim("B", 1, 16)}}

MODEL_FILE = """\
import numpy as np
import graphc.nn as nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


model = Tiny()
example_inputs = ((("B", 4), "float32"),)
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An exported one-output library (dim B=1..16) and a two-output one."""
    out = tmp_path_factory.mktemp("exports")
    graphc.manual_seed(0)
    m = Tiny()
    one = graphc.compile(m, (X,), DYN, out_dir=out / "tiny", name="tiny")
    two = graphc.compile(TwoOut(), (X,), DYN, out_dir=out / "two", name="two")
    return {"tiny": out / "tiny", "two": out / "two", "module": m, "cm": one, "cm2": two}


def error_line(capsys, argv: list[str]) -> str:
    """Run the CLI in this process: exit code 1 and exactly one line on stderr (returned)."""
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("graphc: error: "), err
    return err.strip()


def model_file(tmp_path: Path, name: str = "tiny.py", text: str = MODEL_FILE) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ files and folders
def test_run_input_that_is_a_folder_or_not_an_array_file(folders, tmp_path, capsys):
    (tmp_path / "xs").mkdir()
    err = error_line(capsys, ["run", folders["tiny"], "--input", f"x={tmp_path / 'xs'}"])
    assert err == f"graphc: error: --input x: {tmp_path / 'xs'} is a folder, expected a .npy file (or an .npz file)"
    (tmp_path / "x.npy").write_text("not an array\n")
    err = error_line(capsys, ["run", folders["tiny"], "--input", f"x={tmp_path / 'x.npy'}"])
    assert err.startswith(f"graphc: error: --input x: {tmp_path / 'x.npy'}: not a readable .npy or .npz file"), err


def test_compile_output_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    src = model_file(tmp_path)
    for extra in ([], ["--emit-c"]):
        err = error_line(capsys, ["compile", src, "-o", target, *extra])
        assert err == (f"graphc: error: -o {target}: is a file; compile writes a folder (give a new or an exported "
                       "folder)")
    assert target.read_text() == "mine\n"
    with pytest.raises(ExportError, match=r"out_dir .*notes.txt: is a file; an export is a folder"):
        graphc.compile(Tiny(), (X,), out_dir=target)
    assert target.read_text() == "mine\n"


def test_trace_and_show_output_that_is_a_folder(tmp_path, capsys):
    src = model_file(tmp_path)
    (tmp_path / "ir").mkdir()
    err = error_line(capsys, ["trace", src, "-o", tmp_path / "ir"])
    assert err == (f"graphc: error: -o {tmp_path / 'ir'}: is a folder; trace writes the IR text to a file "
                   "(e.g. -o graph.gir)")
    err = error_line(capsys, ["trace", src, "-o", tmp_path / "nowhere" / "g.gir"])
    assert err == f"graphc: error: -o {tmp_path / 'nowhere' / 'g.gir'}: folder {tmp_path / 'nowhere'} does not exist"
    err = error_line(capsys, ["show", src, "-o", tmp_path / "ir"])
    assert err == f"graphc: error: -o {tmp_path / 'ir'}: is a folder; give a .dot, .svg, .png or .pdf file name"
    assert main(["trace", str(src), "-o", str(tmp_path / "g.gir")]) == 0
    assert graphc.ir.parse((tmp_path / "g.gir").read_text()).name == "tiny"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _damage(folder: Path, to: Path, edit) -> Path:
    shutil.copytree(folder, to)
    m = json.loads((to / "manifest.json").read_text())
    edit(m)
    (to / "manifest.json").write_text(json.dumps(m))
    return to


DAMAGE = {
    "name": (lambda m: m.pop("name"), "key 'name' is missing"),
    "fingerprint": (lambda m: m.pop("fingerprint"), "key 'fingerprint' is missing"),
    "inputs": (lambda m: m.pop("inputs"), "key 'inputs' is missing"),
    "outputs": (lambda m: m.pop("outputs"), "key 'outputs' is missing"),
    "dims": (lambda m: m.pop("dims"), "key 'dims' is missing"),
    "options": (lambda m: m.pop("options"), "key 'options' is missing"),
    "input-shape": (lambda m: m["inputs"][0].pop("shape"), "key 'inputs[0].shape' is missing"),
    "dim-max": (lambda m: m["dims"][0].update(max="16"), "'dims[0].max' is not an integer"),
    "weights-mode": (lambda m: m["options"].pop("weights"), "'options.weights' is not 'embed' or 'file'"),
    "name-path": (lambda m: m.update(name="../../etc/x"), "'name' is '../../etc/x', not a model name"),
    "dtype": (lambda m: m["inputs"][0].update(dtype="float33"), "input/output 'x'"),
}


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_damaged_manifest_is_one_line_naming_the_key(folders, tmp_path, capsys, what):
    edit, words = DAMAGE[what]
    d = _damage(folders["tiny"], tmp_path / "dmg", edit)
    for argv in (["run", d], ["bench", d, "--runs", "1"]):
        err = error_line(capsys, argv)
        assert err.startswith(f"graphc: error: {d / 'manifest.json'}: damaged manifest") and words in err, err
        assert err.endswith("export the model again"), err
    with pytest.raises(ValueError, match="damaged manifest"):
        graphc.load_compiled(d)


def _one_block(**damage):
    """A memory-plan edit: one block (a drawable one but for `damage`)."""
    def edit(m):
        block = {"value": "t", "node": "t", "offset": "0", "size": "B*16", "first": 0, "last": 1, "values": ["t"]}
        block.update(damage)
        m["memory_plan"]["blocks"] = [{k: v for k, v in block.items() if v is not None}]
    return edit


PLAN_DAMAGE = {
    "not-an-object": (lambda m: m.update(memory_plan=3), "'memory_plan' is not an object"),
    "blocks": (lambda m: m["memory_plan"].update(blocks=3), "'memory_plan.blocks' is not a list"),
    "block": (lambda m: m["memory_plan"].update(blocks=["x"]), "'memory_plan.blocks[0]' is not an object"),
    "offset": (_one_block(offset="B*"), "'memory_plan.blocks[0].offset' is 'B*'"),
    "last": (_one_block(last="x"), "'memory_plan.blocks[0].last' is 'x'"),
    "size": (_one_block(size=None), "'memory_plan.blocks[0].size' is missing"),
    "arena": (lambda m: m["memory_plan"].update(arena_bytes=[1]), "'memory_plan.arena_bytes' is [1]"),
}


@pytest.mark.parametrize("what", list(PLAN_DAMAGE))
def test_show_memory_of_a_damaged_plan_is_one_line_naming_the_key(folders, tmp_path, capsys, what):
    """graphc show EXPORT --memory drew the manifest's memory plan unchecked: a traceback before."""
    edit, words = PLAN_DAMAGE[what]
    d = _damage(folders["two"], tmp_path / "dmg", edit)
    err = error_line(capsys, ["show", d, "--memory", "-o", tmp_path / "plan.svg"])
    assert err.startswith(f"graphc: error: {d / 'manifest.json'}: damaged manifest: ") and words in err, err
    assert not (tmp_path / "plan.svg").exists()
    good = _damage(folders["two"], tmp_path / "good", _one_block())  # undamaged it is drawn (B*16 at B=16)
    assert main(["show", str(good), "--memory", "-o", str(tmp_path / "plan.svg")]) == 0
    assert (tmp_path / "plan.svg").read_text().startswith("<svg") and "%t: 256 B at offset 0" in (
        tmp_path / "plan.svg").read_text()


def test_a_manifest_that_is_not_json_or_a_folder_without_its_library(folders, tmp_path, capsys):
    d = tmp_path / "dmg"
    shutil.copytree(folders["tiny"], d)
    (d / "manifest.json").write_text('{"name": "tiny", ')
    err = error_line(capsys, ["run", d])
    assert err.startswith(f"graphc: error: {d / 'manifest.json'}: damaged manifest, not readable JSON"), err
    shutil.copy(folders["tiny"] / "manifest.json", d / "manifest.json")
    (d / "libtiny.so").unlink()
    err = error_line(capsys, ["bench", d])
    assert err == (f"graphc: error: {d}: libtiny.so is missing (the manifest names model 'tiny'); export the model "
                   "again")


def test_errors_reach_the_terminal_without_a_traceback(folders, tmp_path):
    """The issue's four cases as a user meets them: a real `graphc` process, its stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("GRAPHC_DEBUG", None)
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    dmg = _damage(folders["tiny"], tmp_path / "dmg", lambda m: m.pop("inputs"))
    src = model_file(tmp_path)
    for argv in (["run", folders["tiny"], "--input", f"x={tmp_path / 'dir'}"],
                 ["compile", src, "-o", tmp_path / "file"], ["trace", src, "-o", tmp_path / "dir"], ["run", dmg]):
        r = subprocess.run([sys.executable, "-m", "graphc", *map(str, argv)], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("graphc: error: "), r.stderr


# ------------------------------------------------------------------------------ validated options
def test_an_unknown_dim_name_is_refused_by_compile_trace_run_and_bench(folders, tmp_path, capsys):
    src = model_file(tmp_path)
    err = error_line(capsys, ["compile", src, "--dim", "Q=1..4", "--emit-c", "-o", tmp_path / "o"])
    assert err == "graphc: error: --dim Q=1..4: the model has no dynamic dim 'Q' (its dynamic dims: B)"
    assert not (tmp_path / "o").exists()
    err = error_line(capsys, ["trace", src, "--dim", "b=1..4"])
    assert err == "graphc: error: --dim b=1..4: the model has no dynamic dim 'b' (its dynamic dims: B)"
    for cmd in (["run"], ["bench", "--runs", "1"]):
        err = error_line(capsys, [cmd[0], folders["tiny"], *cmd[1:], "--dim", "Q=3"])
        assert err == "graphc: error: --dim Q=3: tiny has no dynamic dim 'Q' (its dynamic dims: B=1..16)"
        err = error_line(capsys, [cmd[0], folders["tiny"], *cmd[1:], "--dim", "B=17"])
        assert err == "graphc: error: --dim B=17: B must be 1..16 for tiny"
    assert main(["run", str(folders["tiny"]), "--dim", "B=5"]) == 0
    assert "output: float32[5, 3]" in capsys.readouterr().out


@pytest.mark.parametrize("threads", ["0", "-1", "1025"])
def test_thread_counts_out_of_range_are_refused(folders, tmp_path, capsys, threads):
    for argv in (["run", folders["tiny"]], ["bench", folders["tiny"], "--runs", "1"],
                 ["compile", model_file(tmp_path), "--emit-c", "-o", tmp_path / "o"]):
        err = error_line(capsys, [*argv, "--threads", threads])
        assert err == f"graphc: error: --threads {threads}: the thread count must be 1..1024"
    assert main(["bench", str(folders["tiny"]), "--runs", "1", "--warmup", "0", "--threads", "1"]) == 0
    assert "threads=1" in capsys.readouterr().out


def test_bench_needs_a_run_and_a_warm_up_count_of_zero_or_more(folders, capsys):
    err = error_line(capsys, ["bench", folders["tiny"], "--runs", "0"])
    assert err == "graphc: error: --runs 0: bench times at least 1 run"
    err = error_line(capsys, ["bench", folders["tiny"], "--warmup", "-1"])
    assert err == "graphc: error: --warmup -1: the warm-up run count must be 0 or more"


def test_save_writes_exactly_the_named_file(folders, tmp_path, capsys):
    np.save(tmp_path / "x.npy", X)
    feed = f"x={tmp_path / 'x.npy'}"
    want = folders["module"](graphc.from_numpy(X)).numpy()
    assert main(["run", str(folders["tiny"]), "--input", feed, "--save", str(tmp_path / "y.npy")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "y.npy"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-5, atol=1e-6)
    assert main(["run", str(folders["tiny"]), "--input", feed, "--save", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as z:
        assert z.files == ["output"]
        np.testing.assert_allclose(z["output"], want, rtol=1e-5, atol=1e-6)
    assert main(["run", str(folders["two"]), "--input", feed, "--save", str(tmp_path / "two.npz")]) == 0
    with np.load(tmp_path / "two.npz") as z:
        assert sorted(z.files) == ["double", "total"]
        np.testing.assert_allclose(z["double"], X * 2, rtol=1e-6)
        np.testing.assert_allclose(z["total"], X.sum(-1), rtol=1e-5)
    capsys.readouterr()
    err = error_line(capsys, ["run", folders["two"], "--save", tmp_path / "two.npy"])
    assert err == (f"graphc: error: --save {tmp_path / 'two.npy'}: the model has 2 outputs (double, total); a .npy "
                   "file holds one array: save them to two.npz")
    err = error_line(capsys, ["run", folders["tiny"], "--save", tmp_path / "y.out"])
    assert err == (f"graphc: error: --save {tmp_path / 'y.out'}: give a .npy file (one output) or an .npz file "
                   "(every output by name)")
    err = error_line(capsys, ["run", folders["tiny"], "--save", tmp_path])
    assert err == f"graphc: error: --save {tmp_path}: is a folder; give a .npy or .npz file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.npz", "x.npy", "y.npy", "y.npz"]


# ------------------------------------------------------------------------------ model names
RESERVED = ["gc", "GC", "Gc_net", "GCX", "graphc", "Graphc_rt", "OMP", "omp_net", "stdint", "Stddef", "MATH", "stdio",
            "stdlib", "String", "time", "Limits", "immintrin", "cuda_runtime", "int", "Static", "main", "NULL",
            "memcpy"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_model_names_are_refused_in_any_letter_case(tmp_path, capsys, name):
    with pytest.raises(ValueError, match=rf"model name '{name}': .*; choose another \(name=\.\.\. or --name\)"):
        graphc.compile(Tiny(), (X,), name=name, emit_only=True, out_dir=tmp_path / "o")
    err = error_line(capsys, ["compile", model_file(tmp_path), "--name", name, "--emit-c", "-o", tmp_path / "o"])
    assert err.startswith(f"graphc: error: --name {name}: "), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["tiny", "Tiny2", "my_model", "mathx", "gcnet", "timeline"])
def test_names_near_reserved_ones_are_fine(tmp_path, name):
    graphc.compile(Tiny(), (X,), name=name, emit_only=True, out_dir=tmp_path / "o")
    assert (tmp_path / "o" / f"{name}.h").exists()


def _named(cls_name: str) -> type:
    return type(cls_name, (Tiny,), {})


@pytest.mark.parametrize("cls_name,want", [("GPT", "gpt"), ("ResNet", "resnet"), ("TinyCNN", "tinycnn"),
                                           ("my_net", "my_net"), ("MLP2", "mlp2"), ("Stdio", "stdio_model"),
                                           ("GC", "m_gc"), ("Gc_Block", "m_gc_block")])
def test_default_names_read_as_the_user_wrote_them(tmp_path, cls_name, want):
    m = _named(cls_name)()
    assert graphc.trace(m, (X,)).name == want
    graphc.compile(m, (X,), emit_only=True, out_dir=tmp_path / "o")
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["name"] == want


@pytest.mark.parametrize("stem,want", [("GPT", "gpt"), ("ResNet", "resnet"), ("my-net", "my_net"),
                                       ("math", "math_model"), ("2layer", "m_2layer")])
def test_the_cli_names_a_model_file_by_the_same_rule(tmp_path, capsys, stem, want):
    src = model_file(tmp_path, f"{stem}.py")
    assert main(["trace", str(src)]) == 0
    assert capsys.readouterr().out.startswith(f"graph {want}(%x : f32[B,4])")
    assert main(["compile", str(src), "--emit-c", "-o", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["name"] == want


def test_torch_modules_are_named_by_the_same_rule():
    torch = pytest.importorskip("torch")

    class ResNet(torch.nn.Module):
        def forward(self, x):
            return x * 2

    assert graphc.from_torch(ResNet(), (torch.ones(2, 3),)).graph.name == "resnet"


def test_a_reserved_default_name_still_builds_and_runs(tmp_path):
    """A class named Math: the library is math_model, whose header cannot shadow <math.h>."""
    m = _named("Math")()
    cm = graphc.compile(m, (X,), out_dir=tmp_path / "o")
    assert cm.name == "math_model" and (tmp_path / "o" / "math_model.h").exists()
    np.testing.assert_allclose(cm(X), m(graphc.from_numpy(X)).numpy(), rtol=1e-5, atol=1e-6)
