"""examples/c_api/classify.c, built against an exported digits library with its Makefile, prints the
same logits and accuracy as the Python side; the library needs no Python or numpy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs make and a C compiler")


def test_classify_c_program_matches_python(tmp_path, monkeypatch, shared_cache):
    import graphc
    from graphc.modelfile import load_model_file

    monkeypatch.setenv("GRAPHC_CACHE_DIR", shared_cache)
    lm = load_model_file(ROOT / "examples" / "digits" / "model.py")
    out = tmp_path / "digits"
    cm = graphc.compile(lm.module, lm.example_inputs, lm.dynamic, name="digits", out_dir=out)

    sys.path.insert(0, str(ROOT / "examples" / "c_api"))
    try:
        from export_testset import export
    finally:
        sys.path.pop(0)
    testset = export(tmp_path / "testset")
    build = tmp_path / "build"
    shutil.copytree(ROOT / "examples" / "c_api", build, ignore=shutil.ignore_patterns("classify", "__pycache__"))
    r = subprocess.run(["make", "-s", f"MODEL_DIR={out}"], cwd=build, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(build / "classify"), str(testset), "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()

    data = np.load(ROOT / "examples" / "digits" / "digits_test.npz")
    images, labels = data["images"], data["labels"]
    logits_py = cm(images)
    rows = np.array([[float(v) for v in ln.split()[3:]] for ln in lines[:-1]], np.float32)
    np.testing.assert_array_equal(rows, logits_py)  # same library, same inputs: bit-identical
    preds = [int(ln.split()[2]) for ln in lines[:-1]]
    assert preds == logits_py.argmax(1).tolist()
    acc = float((logits_py.argmax(1) == labels).mean())
    assert lines[-1] == f"accuracy {int(round(acc * len(labels)))}/{len(labels)} = {acc:.4f}"
    eager = lm.module.eval()(graphc.from_numpy(images)).numpy()
    np.testing.assert_allclose(rows, eager, rtol=1e-4, atol=1e-4)

    ldd = subprocess.run(["ldd", str(out / "libdigits.so")], capture_output=True, text=True).stdout
    assert "python" not in ldd.lower() and "numpy" not in ldd.lower()
