"""The examples: each model file follows the convention, traces, and its graph computes what eager does.

Also: the digits demo's shipped weights classify the shipped test set as well in graphc as in PyTorch,
the torch twins the benchmark uses (bench/twins.py) compute the same function as the graphc examples,
and, once the C backend exists, every example compiles and the demo passes end to end.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import graphc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = ["mlp", "resnet", "transformer", "lora", "digits"]
TWINNED = ["mlp", "resnet", "transformer"]  # bench/twins.py


def load_example(name: str) -> dict[str, Any]:
    """Run examples/<name>/model.py as `graphc compile` does; `model` built, its weights loaded."""
    path = EXAMPLES / name / "model.py"
    sys.path.insert(0, str(path.parent))
    try:
        ns = runpy.run_path(str(path), run_name="__graphc_model__")
    finally:
        sys.path.remove(str(path.parent))
    model = ns["model"]
    if not isinstance(model, graphc.nn.Module):
        model = model()
    assert isinstance(model, graphc.nn.Module), f"{name}: model is a {type(model).__name__}"
    if ns.get("weights"):
        model.load_state_dict(graphc.load(str(path.parent / ns["weights"])))
    ns["model"] = model.eval()
    return ns


def inputs_like(example_inputs: tuple, batch: int, seed: int = 1) -> list[np.ndarray]:
    """Fresh inputs shaped like the examples with dim 0 (the dynamic batch) set to batch."""
    rng = np.random.default_rng(seed)
    out = []
    for x in example_inputs:
        a = x.numpy()
        shape = (batch, *a.shape[1:])
        if np.issubdtype(a.dtype, np.floating):
            out.append(rng.standard_normal(shape).astype(a.dtype))
        else:  # token ids: stay within the range the example uses
            out.append(rng.integers(int(a.min()), int(a.max()) + 1, size=shape).astype(a.dtype))
    return out


def eager(model: graphc.nn.Module, xs: list[np.ndarray]) -> np.ndarray:
    return model(*(graphc.from_numpy(x) for x in xs)).numpy()


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal to float32 round-off (relative to the output's scale)."""
    scale = max(1.0, float(np.abs(b).max()))
    return a.shape == b.shape and float(np.abs(a - b).max()) <= 1e-5 * scale


@pytest.fixture(scope="module", params=NAMES)
def example(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, load_example(request.param)


def test_follows_the_convention(example: tuple[str, dict[str, Any]]) -> None:
    name, ns = example
    assert isinstance(ns["example_inputs"], tuple) and ns["example_inputs"]
    from graphc.trace import input_names

    names = input_names(ns["model"], len(ns["example_inputs"]))
    dynamic = ns.get("dynamic")
    assert dynamic, f"{name}: declares no dynamic batch dim"
    assert set(dynamic) <= set(names), f"{name}: dynamic names {sorted(dynamic)}, inputs {names}"
    if ns.get("weights"):
        assert (EXAMPLES / name / ns["weights"]).is_file()


def test_trace_matches_eager(example: tuple[str, dict[str, Any]]) -> None:
    from graphc.ir.interpreter import interpret
    from graphc.trace import input_names

    name, ns = example
    model = ns["model"]
    g = graphc.trace(model, ns["example_inputs"], ns.get("dynamic"))
    assert [v.name for v in g.inputs] == input_names(model, len(ns["example_inputs"]))
    assert g.dims, f"{name}: the traced graph has no dynamic dim"
    for batch in (1, 3):  # the traced batch is 1 or 2; other sizes exercise the dynamic dim
        xs = inputs_like(ns["example_inputs"], batch)
        out = interpret(g, {v.name: x for v, x in zip(g.inputs, xs)})
        got = next(iter(out.values()))
        want = eager(model, xs)
        assert close(got, want), f"{name} batch {batch}: max diff {np.abs(got - want).max()}"


def digits_test_set() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(EXAMPLES / "digits" / "digits_test.npz")
    return data["images"], data["labels"]


def test_digits_test_set_is_small_and_well_formed() -> None:
    images, labels = digits_test_set()
    assert images.shape == (360, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (360,) and labels.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(np.unique(labels)) == set(range(10))
    for f in ("digits_test.npz", "digits.safetensors"):
        assert (EXAMPLES / "digits" / f).stat().st_size < 200_000


def test_digits_accuracy_matches_torch() -> None:
    ns = load_example("digits")
    images, labels = digits_test_set()
    logits = eager(ns["model"], [images])
    acc = float((logits.argmax(1) == labels).mean())
    assert acc >= 0.9, acc

    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(EXAMPLES / "digits"))
    try:
        from train import DigitsNet
    finally:
        sys.path.remove(str(EXAMPLES / "digits"))
    net = DigitsNet()
    net.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in graphc.load(
        str(EXAMPLES / "digits" / "digits.safetensors")).items()})
    with torch.inference_mode():
        ref = net.eval()(torch.from_numpy(images)).numpy()
    assert float((ref.argmax(1) == labels).mean()) == acc
    assert close(logits, ref), np.abs(logits - ref).max()


@pytest.mark.parametrize("name", TWINNED)
def test_bench_twin_computes_the_same_function(name: str) -> None:
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from twins import load_twin
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ns = load_example(name)
    twin = load_twin(name, ns["model"].state_dict())
    xs = inputs_like(ns["example_inputs"], 3)
    with torch.inference_mode():
        ref = twin(*(torch.from_numpy(x) for x in xs)).numpy()
    got = eager(ns["model"], xs)
    assert close(got, ref), f"{name}: max diff {np.abs(got - ref).max()}"


def test_lora_merge_keeps_the_function_and_drops_the_adapters_from_the_graph() -> None:
    ns = load_example("lora")
    model = ns["model"]
    xs = inputs_like(ns["example_inputs"], 3)
    before = eager(model, xs)
    unmerged = ns["build"](merge=False)
    assert close(eager(unmerged, xs), before)
    other = ns["build"](adapter="support", merge=False)
    assert not close(eager(other, xs), before), "the two adapters should give different outputs"
    keys = set(unmerged.state_dict())
    assert {"fc1.base_layer.weight", "fc1.lora_A.sales.weight", "fc2.lora_B.support.weight"} <= keys

    merged_params = set(graphc.trace(model, ns["example_inputs"], ns["dynamic"]).params)
    assert not any("lora_" in p for p in merged_params), sorted(merged_params)
    unmerged_params = set(graphc.trace(unmerged, ns["example_inputs"], ns["dynamic"]).params)
    assert {"fc1.lora_A.sales.weight", "fc1.lora_B.sales.weight"} <= unmerged_params
    assert not any("support" in p for p in unmerged_params), "only the active adapter is traced"


@pytest.mark.parametrize("weights", ["embed", "file"])
@pytest.mark.parametrize("name", NAMES)
def test_compiled_matches_eager_and_torch(name: str, weights: str, tmp_path: Path) -> None:
    """Every example compiles in both weight modes and matches eager execution to float32 round-off,
    and PyTorch (the bench twin) where torch is installed."""
    from graphc.backend import compile as compile_

    ns = load_example(name)
    compiled = compile_(ns["model"], ns["example_inputs"], dynamic=ns.get("dynamic"), weights=weights,
                        out_dir=tmp_path / name)
    if weights == "file":
        assert (tmp_path / name / f"{compiled.name}.safetensors").exists()
    twin = None
    if name in TWINNED and importlib.util.find_spec("torch") is not None:
        sys.path.insert(0, str(ROOT / "bench"))
        try:
            from twins import load_twin
        finally:
            sys.path.remove(str(ROOT / "bench"))
        twin = load_twin(name, ns["model"].state_dict())
    for batch in (1, 5):
        xs = inputs_like(ns["example_inputs"], batch)
        got = np.asarray(compiled(*xs))
        want = eager(ns["model"], xs)
        assert close(got, want), f"{name} batch {batch}: max diff {np.abs(got - want).max()}"
        if twin is not None:
            import torch

            with torch.inference_mode():
                ref = twin(*(torch.from_numpy(x) for x in xs)).numpy()
            assert close(got, ref), f"{name} batch {batch} vs torch: max diff {np.abs(got - ref).max()}"


def test_digits_demo_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(EXAMPLES / "digits" / "demo.py"), str(tmp_path / "digits")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: the compiled C library classifies the test set exactly as eager execution does" in r.stdout
    assert (tmp_path / "digits" / "manifest.json").is_file()
