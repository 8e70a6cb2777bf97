"""The error for a torch name graphc does not have: what is missing, the nearest names that exist and
where the supported API is listed. The modules graphc, graphc.nn and graphc.nn.functional raise it
from their module ``__getattr__``.

It is an :class:`AttributeError` (and a :class:`graphc.GraphcError`), so ``hasattr`` and
``getattr(mod, name, default)`` probes, as numpy, pytest or inspect make them, keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .errors import GraphcError

DOCS = "docs/torch-compat.md (the PyTorch API graphc has) and docs/ops.md (its ops)"


class MissingNameError(GraphcError, AttributeError):
    """``graphc.<name>`` (or graphc.nn / graphc.nn.functional) that graphc does not provide."""


def missing(module: str, name: str, names: Iterable[str]) -> AttributeError:
    if name.startswith("_"):  # private and dunder probes: the plain message, nothing to suggest
        return MissingNameError(f"module '{module}' has no attribute '{name}'", name=name)
    public = sorted({n for n in names if not n.startswith("_")})
    close = difflib.get_close_matches(name, public, n=4, cutoff=0.6)
    torch_name = "torch" + module[len("graphc"):] + "." + name
    hint = f" Nearest supported names: {', '.join(module + '.' + c for c in close)}." if close else ""
    return MissingNameError(
        f"{module}.{name} is not supported: graphc has no counterpart of {torch_name}.{hint} "
        f"See {DOCS}.", name=name)
