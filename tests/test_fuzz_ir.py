"""The IR parser on mutated text: it either parses (and the result verifies and prints back stably) or
raises IRParseError with a position — never another exception, never a hang."""

from __future__ import annotations

import random

import pytest

import graphc
from graphc.errors import IRParseError
from graphc.ir import parse
from graphc.nn import functional as F

TOKENS = ["%", "@", "[", "]", "(", ")", ",", "=", ":", "#", "{", "}", "\n", " ", "none", "f32", "i64", "B", "-1",
          "1e-05", "nan", '"', "\\", "..", "return", "param", "dim", "graph", "%x", "@w", "add", "linear", "*"]


def _seed_texts() -> list[str]:
    class Net(graphc.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = graphc.nn.Linear(8, 4)
            self.ln = graphc.nn.LayerNorm(4)

        def forward(self, x, y):
            h = self.ln(F.gelu(self.fc(x)))
            return {"probs": h.softmax(-1), "mix": (h * 0.5 + y[:, :4]).sum(-1, keepdim=True)}

    g = graphc.trace(Net(), (graphc.randn(2, 8), graphc.randn(2, 6)), dynamic={"x": {0: "B"}, "y": {0: "B"}})
    return [str(g)]


def _mutate(rng: random.Random, text: str) -> str:
    s = list(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        i = rng.randrange(len(s) + 1)
        if op < 0.35 and s:
            del s[min(i, len(s) - 1):min(i + rng.randint(1, 6), len(s))]
        elif op < 0.7:
            s[i:i] = list(rng.choice(TOKENS))
        elif s:
            j = min(i, len(s) - 1)
            s[j] = chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000)]))
    return "".join(s)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_ir_parses_or_fails_cleanly(seed):
    rng = random.Random(seed)
    base = _seed_texts()
    accepted = 0
    for _ in range(300):
        text = _mutate(rng, rng.choice(base))
        try:
            g = parse(text)
        except IRParseError as e:
            assert e.line >= 1 and e.column >= 1, (str(e), text)
            continue
        accepted += 1
        assert str(parse(str(g))) == str(g)
    assert accepted < 300  # the mutations do break the text
