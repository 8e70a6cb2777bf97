"""Graph passes and the optimisation pipeline.

Every pass is a :class:`Pass`: a named function ``Graph -> PassResult(graph, changed)`` that works on
a copy and never modifies its input (see ``base.py`` for the protocol and the rules passes keep).

=================  =====  ==================================================================
pass               level  rule (each pass's docstring has the details)
=================  =====  ==================================================================
remove_noops       -O1    identity, dropout, same-shape reshape/expand, identity permute,
                          same-dtype cast, full slice, zero pad, concat of one, x*1, x/1,
                          x+0, x-0 -> x
canonicalize       -O2    matmul with a (transposed) 2-d weight -> linear; linear + bias -> one
                          linear; x - c -> x + (-c); x / 2^k -> x * 2^-k
merge_lora         -O2    base linear + s * B(A(x)) -> linear with W + s*B@A (bake_weights only)
fold_batchnorm     -O2    conv/linear -> batch_norm -> one conv/linear with folded parameters
fold_constants     -O2    ops on parameters/constants only -> new parameters (`constant` if 0-d)
cse                -O1    same op + operands + attributes -> one node (constants by value+dtype)
dce                -O1    drop unused nodes, and unused parameters with their arrays
=================  =====  ==================================================================

:func:`optimize` runs the passes of a level in the order above (``PIPELINE``), repeated until no
pass changes the graph (at most ``MAX_ROUNDS`` rounds). Canonical forms come before folding so that
``matmul(x, permute(W))`` becomes ``linear(x, W)`` instead of a transposed copy of W, and no-ops go
first so that the LoRA and BatchNorm patterns are not hidden behind dropout/identity.
-O0 returns a copy of the graph as traced; -O3 is -O2 for now (reserved for rewrites that trade
precision or memory for speed).

The output depends only on the input graph's text and parameter *presence*, never on parameter
values: names and shapes of all parameters are the same when the C backend re-runs the pipeline on
a fine-tuned state_dict. Set ``GRAPHC_VERIFY_PASSES=1`` (or pass ``verify=True``) to run the IR
verifier after every pass.
"""

from __future__ import annotations

from ..errors import VerifyError
from ..ir.graph import Graph
from .base import (
    PASSES,
    Pass,
    PassError,
    PassResult,
    register_pass,
    run_pass,
    verify_enabled,
)
from .canonicalize import canonicalize
from .cleanup import cse, dce, remove_noops
from .fold import FOLD_SIZE_LIMIT, fold_batchnorm, fold_constants
from .lora import merge_lora

# The pipeline's order (a pass runs at -O<n> when its level is <= n).
PIPELINE: tuple[str, ...] = ("remove_noops", "canonicalize", "merge_lora", "fold_batchnorm",
                             "fold_constants", "cse", "dce")
MAX_LEVEL = 3
MAX_ROUNDS = 16


def passes_for_level(level: int, *, bake_weights: bool = True) -> list[Pass]:
    """The passes optimize() runs at -O<level>, in order."""
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"optimisation level must be an int in 0..{MAX_LEVEL}, got {level!r}")
    out = []
    for name in PIPELINE:
        p = PASSES[name]
        if p.level <= level and (bake_weights or not p.needs_baked_weights):
            out.append(p)
    return out


def optimize(g: Graph, level: int = 2, *, bake_weights: bool = True, verify: bool | None = None) -> Graph:
    """Optimise a graph (never modifying it) by running the level's passes to a fixed point.

    -O0: a copy of the graph as traced. -O1: remove_noops, cse, dce. -O2 and -O3: also
    canonicalize, fold_batchnorm, fold_constants, and merge_lora when ``bake_weights`` (LoRA
    adapters stay separate parameters otherwise, so they can be swapped at load time).
    ``verify`` (default: the GRAPHC_VERIFY_PASSES environment variable) checks the input and the
    output of every pass with the IR verifier. At most MAX_ROUNDS rounds are run.
    """
    passes = passes_for_level(level, bake_weights=bake_weights)
    check = verify_enabled(verify)
    if check:
        from ..ir.verify import verify as _verify

        try:
            _verify(g)
        except VerifyError as e:
            raise VerifyError(f"input of optimize(): {e}") from None
    out = g.copy()
    for _ in range(MAX_ROUNDS if passes else 0):
        changed = False
        for p in passes:
            out, ch = p(out, verify=check)
            changed = changed or ch
        if not changed:
            break
    return out


__all__ = [
    "FOLD_SIZE_LIMIT", "MAX_LEVEL", "PASSES", "PIPELINE", "Pass", "PassError", "PassResult", "canonicalize",
    "cse", "dce", "fold_batchnorm", "fold_constants", "merge_lora", "optimize", "passes_for_level",
    "register_pass", "remove_noops", "run_pass",
]
