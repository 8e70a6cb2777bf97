"""The arena's memory plan (graphc/backend/memplan.py): no two values live at one step share a byte, for
any value of the dims, on random schedules (static and symbolic sizes, in-place chains, kernel
scratch); the free bytes a step offers a runtime-sized scratch (free_at) hold no live value; the plan
is the same for the same input; a compiled model whose convolutions' scratch goes into those free bytes
computes what numpy does and its arena stays within 10% of the largest sum of the values live at one
step plus that step's scratch."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import nn
from graphc.backend.memplan import Step, free_at, plan_memory
from graphc.sym import Sym, evaluate


class V:
    """A stand-in for an IR value: the planner only hashes values and asks their base and size."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _random_schedule(rng: random.Random, symbolic: bool):
    """Steps of a random dataflow graph: each writes one value from one to three earlier ones, some
    are views of their input, some may be written in place, some take scratch."""
    B = Sym.var("B") if symbolic else 1
    values: list[V] = []
    base: dict[V, V] = {}
    nbytes: dict[V, object] = {}
    steps: list[Step] = []
    for i in range(rng.randint(2, 24)):
        out = V(f"v{i}")
        reads = rng.sample(values, min(len(values), rng.randint(1, 3))) if values else []
        if reads and rng.random() < 0.15:  # a view: no step, the bytes of its input's base
            base[out] = base.get(reads[0], reads[0])
            values.append(out)
            continue
        size = rng.choice([4, 60, 64, 100, 4096, 12288, 50000]) * (B if rng.random() < 0.6 else 1)
        if symbolic and rng.random() < 0.2:
            size = size + rng.choice([-4, 8, 128])
        nbytes[out] = size
        scratch = [(f"s{i}", rng.choice([64, 777, 20000]) * (B if rng.random() < 0.5 else 1))] \
            if rng.random() < 0.3 else []
        inplace = [r for r in reads if base.get(r, r) in nbytes and nbytes[base.get(r, r)] == size]
        steps.append(Step(f"n{i}", reads, [out], scratch, inplace[:1]))
        values.append(out)
    arena_values = [w for st in steps for w in st.writes]
    return steps, arena_values, base, nbytes, {v: v.name for v in arena_values}


def _check(plan, steps, points) -> None:
    for env in points:
        for i in range(len(steps)):
            live = [b for b in plan.blocks if b.first <= i <= b.last]
            spans = sorted((evaluate(b.offset, env), evaluate(b.end, env), b.name) for b in live)
            for (o1, e1, n1), (o2, e2, n2) in zip(spans, spans[1:]):
                assert e1 <= o2, f"step {i}, dims {env}: {n1} [{o1}, {e1}) overlaps {n2} [{o2}, {e2})"
            for o, e, _ in spans:
                assert o % 64 == 0 and 0 <= o <= e <= evaluate(plan.arena, env)
            gaps, top = free_at(plan, i, {"B": 8})
            for go, room in gaps:
                lo, hi = evaluate(go, env), evaluate(go, env) + evaluate(room, env)
                assert all(e <= lo or hi <= o for o, e, _ in spans), f"step {i}: gap [{lo}, {hi}) holds a value"
            t = evaluate(top, env)
            assert all(e <= t for _, e, _ in spans) and t <= evaluate(plan.arena, env)


@pytest.mark.parametrize("symbolic", [False, True])
def test_random_plans_never_overlap_live_values(symbolic):
    rng = random.Random(12 + symbolic)
    points = [{"B": b} for b in (1, 2, 3, 8)] if symbolic else [{}]
    for _ in range(150):
        steps, vals, base, nbytes, names = _random_schedule(rng, symbolic)
        plan = plan_memory(steps, vals, base, nbytes, names, {"B": 8})
        _check(plan, steps, points)
        again = plan_memory(steps, vals, base, nbytes, names, {"B": 8})
        assert [(b.name, str(b.offset)) for b in again.blocks] == [(b.name, str(b.offset)) for b in plan.blocks]


def test_plan_reaches_the_live_bound_on_a_chain_with_a_branch():
    """A wide value live across a step, then a chain of narrower ones: the arena is the largest sum of
    the values live at one step (the greedy by size places the wide one first)."""
    vs = [V(f"v{i}") for i in range(6)]
    sizes = [4096, 1024, 1024, 2048, 1024, 512]
    nbytes = dict(zip(vs, sizes))
    steps = [Step("a", [], [vs[0]]), Step("b", [vs[0]], [vs[1]]), Step("c", [vs[1]], [vs[2]]),
             Step("d", [vs[0], vs[2]], [vs[3]]), Step("e", [vs[3]], [vs[4]]), Step("f", [vs[4]], [vs[5]])]
    plan = plan_memory(steps, vs, {}, nbytes, {v: v.name for v in vs}, {})
    bound = max(sum(evaluate(b.size, {}) for b in plan.blocks if b.first <= i <= b.last) for i in range(6))
    assert plan.arena == bound


# ------------------------------------------------------------------------------ compiled
class Net(nn.Module):
    """Convolutions with scratch (their packed columns) at steps where a large value is live and a
    large one died: the scratch fits in the hole."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        h = graphc.relu(self.c1(x))
        h = graphc.relu(self.c2(h))
        h = graphc.relu(self.c3(h)) + h.mean(dim=1, keepdim=True)
        return self.fc(h.mean(dim=(2, 3)))


def _numpy(sd: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    def conv(h: np.ndarray, name: str, stride: int) -> np.ndarray:
        hp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        win = sliding_window_view(hp, (3, 3), axis=(2, 3))[:, :, ::stride, ::stride]
        return np.einsum("bchwij,ocij->bohw", win, sd[f"{name}.weight"]) + sd[f"{name}.bias"][None, :, None, None]

    h = np.maximum(conv(x.astype(np.float64), "c1", 1), 0)
    h = np.maximum(conv(h, "c2", 2), 0)
    h = np.maximum(conv(h, "c3", 1), 0) + h.mean(axis=1, keepdims=True)
    return h.mean(axis=(2, 3)) @ sd["fc.weight"].T + sd["fc.bias"]


@pytest.mark.parametrize("threads", [2])
def test_scratch_in_the_free_bytes_matches_numpy_and_the_bound(threads, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from run import arena_lower_bound, kernel_work_bytes

    graphc.manual_seed(0)
    model = Net().eval()
    sd = {k: np.asarray(v.numpy(), np.float64) for k, v in model.state_dict().items()}
    x = np.random.default_rng(1).standard_normal((1, 3, 40, 40)).astype(np.float32)
    cm = graphc.compile(model, (x,), name="mp", threads=threads, out_dir=tmp_path / "mp")
    np.testing.assert_allclose(cm(x), _numpy(sd, x), rtol=1e-4, atol=1e-4)
    man = cm.manifest
    assert man["memory_plan"]["work"], "the convolutions take runtime-sized scratch"
    work = kernel_work_bytes(cm.directory, man, cm.isa, threads)
    assert work is not None
    bound = arena_lower_bound(man, work)
    assert bound <= cm.arena_bytes() <= 1.1 * bound
