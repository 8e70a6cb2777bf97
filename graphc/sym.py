"""Symbolic dimensions.

A dim is an ``int`` or a :class:`Sym`: a polynomial with integer coefficients over named size
symbols (``B``, ``T``, ``B*256``, ``B*T*4``, ``T+1``). Arithmetic on Syms stays exact; division is
allowed only when it is exact for every value of the symbols, so ``x.view(x.shape[0], -1)`` keeps
the batch dim symbolic. Results that are constant collapse back to ``int``.

Ordering comparisons (``<``, ``>=`` ..., and ``bool(d)``) are decided by the declared ranges of the
dims while :func:`graphc.trace` runs (:func:`dim_ranges`): with ``T`` in 1..64, ``T <= 64`` is True
and ``T > 64`` False (nanoGPT's ``assert T <= block_size``), from interval bounds of the polynomial.
A comparison the ranges do not decide (``T <= 32``), and using a Sym as a Python int (``range(B)``)
or float (``math.sqrt(T)``), raise a :class:`~graphc.errors.TraceError`. Equality is decided the same
way in the user's code (``B == 0`` is False for B in 1..64, ``B == B`` True, and ``if x.shape[0] == 1``
with B in 1..64 a TraceError: either branch would be wrong for some run). Inside graphc, equality is
structural (``B == 3`` is False: a dynamic dim differs from every constant), which is what graphc's own
shape logic (broadcasting, view strides) asks; the caller's file tells the two apart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Union

from .errors import TraceError

Monomial = tuple[str, ...]  # sorted symbol names, repeated for powers; () is the constant term

# the {name: (min, max)} ranges of the dims of the traces running now (innermost last)
_RANGES: list[Mapping[str, tuple[int, int]]] = []


@contextmanager
def dim_ranges(ranges: Mapping[str, tuple[int, int]]) -> Iterator[None]:
    """Let comparisons of Syms use these dim ranges (graphc.trace holds its graph's dims here)."""
    _RANGES.append(ranges)
    try:
        yield
    finally:
        _RANGES.pop()


_PACKAGE_DIR = os.path.dirname(__file__) + os.sep


def _called_from_user_code() -> bool:
    """Whether the code that compared a Sym (the caller of Sym.__eq__/__ne__) lies outside graphc."""
    try:
        f = sys._getframe(3)  # _called_from_user_code <- _equals <- __eq__/__ne__ <- the comparing code
    except ValueError:
        return False
    return not f.f_code.co_filename.startswith(_PACKAGE_DIR)


def _range_of(name: str) -> tuple[int, int] | None:
    for r in reversed(_RANGES):
        if name in r:
            return r[name]
    return None


class Sym:
    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Mapping[Monomial, int]):
        self.terms: tuple[tuple[Monomial, int], ...] = tuple(sorted((m, c) for m, c in terms.items() if c))
        self._hash = hash(self.terms)

    # construction ------------------------------------------------------------------------------
    @staticmethod
    def var(name: str) -> Sym:
        if not name.isidentifier():
            raise ValueError(f"a dynamic dim name must be an identifier, got {name!r}")
        return Sym({(name,): 1})

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({s for m, _ in self.terms for s in m}))

    @property
    def is_var(self) -> bool:
        return len(self.terms) == 1 and len(self.terms[0][0]) == 1 and self.terms[0][1] == 1

    def coeffs(self) -> dict[Monomial, int]:
        return dict(self.terms)

    # arithmetic --------------------------------------------------------------------------------
    def __add__(self, other: DimLike) -> Dim:
        o = _poly(other)
        if o is None:
            return self._nonpoly(other, "+")
        out = dict(self.terms)
        for m, c in o.items():
            out[m] = out.get(m, 0) + c
        return simplify(Sym(out))

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return simplify(Sym({m: -c for m, c in self.terms}))

    def __sub__(self, other: DimLike) -> Dim:
        o = _poly(other)
        if o is None:
            return self._nonpoly(other, "-")
        return self + Sym({m: -c for m, c in o.items()})

    def __rsub__(self, other: DimLike) -> Dim:
        if _poly(other) is None:
            return self._nonpoly(other, "-")
        return (-self) + other

    def __mul__(self, other: DimLike) -> Dim:
        o = _poly(other)
        if o is None:
            return self._nonpoly(other, "*")
        out: dict[Monomial, int] = {}
        for m1, c1 in self.terms:
            for m2, c2 in o.items():
                m = tuple(sorted(m1 + m2))
                out[m] = out.get(m, 0) + c1 * c2
        return simplify(Sym(out))

    __rmul__ = __mul__

    def __pow__(self, other: object) -> Dim:
        if isinstance(other, bool) or not isinstance(other, int):
            return self._nonpoly(other, "**")
        if other < 0:
            raise TraceError(f"'{self} ** {other}' is a float, which needs the dynamic size's value; keep it in "
                             f"tensor arithmetic (graphc.tensor({self}) is its run-time value as a 0-d tensor)")
        out: Dim = 1
        for _ in range(other):
            out = out * self
        return out

    def __rpow__(self, other: object) -> Dim:
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            raise TraceError(f"'{other} ** {self}' needs the value of the dynamic size {self}, which is unknown "
                             f"while tracing; keep it in tensor arithmetic (graphc.tensor({self}) is its run-time "
                             "value as a 0-d tensor)")
        return NotImplemented

    def _nonpoly(self, other: object, op: str):
        """The result for an operand that is not a dim: NotImplemented (a Tensor then handles
        `T * x` itself), or a TraceError for a float."""
        if isinstance(other, float):
            raise TraceError(
                f"'{self} {op} {other}': a dynamic size in float arithmetic needs its value, which is "
                f"unknown while tracing; keep it in tensor arithmetic (x * {self} and x / {self} work, "
                f"graphc.tensor({self}) is its run-time value as a 0-d tensor)")
        return NotImplemented

    def __floordiv__(self, other: DimLike) -> Dim:
        if _poly(other) is None:
            return self._nonpoly(other, "/")
        q = exact_div(self, other)
        if q is None:
            raise TraceError(
                f"cannot divide the dynamic size {self} by {other} exactly; "
                "graphc keeps dynamic dims symbolic and needs divisions that hold for every size"
            )
        return q

    def __rfloordiv__(self, other: DimLike) -> Dim:
        if _poly(other) is None:
            return self._nonpoly(other, "/")
        q = exact_div(other, self)
        if q is None:
            raise TraceError(f"cannot divide {other} by the dynamic size {self} exactly")
        return q

    __truediv__ = __floordiv__

    def __mod__(self, other: DimLike) -> int:
        if _poly(other) is None:
            return self._nonpoly(other, "%")
        if exact_div(self, other) is not None:
            return 0
        raise TraceError(f"'{self} % {other}' depends on the value of a dynamic dim")

    # comparisons -------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return self._equals(other, "==")

    def __ne__(self, other: object) -> bool:
        eq = self._equals(other, "!=")
        return eq if eq is NotImplemented else not eq

    def _equals(self, other: object, op: str) -> bool:
        """self == other: structural inside graphc; in the user's code (the caller of __eq__/__ne__)
        while a trace runs, decided by the dims' ranges like the ordering comparisons, else a TraceError
        (structural equality took `if x.shape[0] == 1` as False for a B in 1..64, silently wrong at B=1)."""
        if isinstance(other, Sym):
            if self.terms == other.terms:
                return True
        elif hasattr(other, "_tracer"):
            return NotImplemented  # a Tensor: T == x compares elementwise
        elif isinstance(other, float) and other.is_integer():
            other = int(other)
        o = _poly(other)
        if o is None:
            return False  # not a size (a str, None, 2.5): never equal
        if not _RANGES or not _called_from_user_code():
            return False  # structurally different polynomials
        diff = self - Sym(o)
        b = (diff, diff) if not isinstance(diff, Sym) else diff.bounds()
        if b is None:
            return False
        if b[0] == b[1] == 0:
            return True
        if b[0] > 0 or b[1] < 0:
            return False
        return self._undecidable(other, op)

    def __hash__(self) -> int:
        return self._hash

    def bounds(self) -> tuple[int, int] | None:
        """(lowest, highest) value over the declared dim ranges (interval arithmetic), or None when a
        symbol has no known range."""
        lo = hi = 0
        for m, c in self.terms:
            tlo = thi = 1
            for s in m:
                r = _range_of(s)
                if r is None:
                    return None
                cands = (tlo * r[0], tlo * r[1], thi * r[0], thi * r[1])
                tlo, thi = min(cands), max(cands)
            lo, hi = lo + min(c * tlo, c * thi), hi + max(c * tlo, c * thi)
        return lo, hi

    def _compare(self, other: object, op: str) -> bool:
        """self - other against 0 by its bounds: decided when the ranges decide it, else TraceError."""
        if isinstance(other, float) and other.is_integer():
            other = int(other)
        o = _poly(other)
        if o is None:
            return NotImplemented
        diff = self - Sym(o)
        b = (diff, diff) if not isinstance(diff, Sym) else diff.bounds()
        if b is not None:
            lo, hi = b
            decided = {"<": (hi < 0, lo >= 0), "<=": (hi <= 0, lo > 0), ">": (lo > 0, hi <= 0),
                       ">=": (lo >= 0, hi < 0)}[op]
            if decided[0]:
                return True
            if decided[1]:
                return False
        return self._undecidable(other, op)

    def _ranges_text(self) -> str:
        known = [f"{s} in {r[0]}..{r[1]}" for s in self.symbols if (r := _range_of(s)) is not None]
        return f" ({', '.join(known)} does not decide it)" if known else ""

    def _undecidable(self, other: object, op: str):
        raise TraceError(
            f"'{self} {op} {other}' depends on the value of a dynamic dim{self._ranges_text()}; Python "
            "control flow may only use static sizes or comparisons the dims' ranges decide (make the dim "
            "static, narrow its range, or move the decision out of forward())"
        )

    def __lt__(self, other):
        return self._compare(other, "<")

    def __le__(self, other):
        return self._compare(other, "<=")

    def __gt__(self, other):
        return self._compare(other, ">")

    def __ge__(self, other):
        return self._compare(other, ">=")

    def __bool__(self) -> bool:
        b = self.bounds()
        if b is None or b[0] > 0 or b[1] < 0:
            return True  # no range known (outside a trace): a dim is taken to be nonzero
        if b is not None and b[0] == b[1] == 0:
            return False
        raise TraceError(f"bool({self}) (an `if` on a dynamic size) depends on the value of a dynamic "
                         f"dim{self._ranges_text()}; compare it with a bound the dim's range decides")

    def __index__(self) -> int:
        raise TraceError(
            f"the dynamic size {self} was used where a concrete int is needed (range(), indexing a list, "
            "numpy); graphc cannot specialise a dynamic dim"
        )

    __int__ = __index__

    def __float__(self) -> float:
        raise TraceError(
            f"float() or a math function (math.sqrt, math.log ...) of the dynamic size {self} needs its "
            f"value, which is unknown while tracing; keep it in tensor arithmetic: x / {self} works, and "
            f"graphc.tensor({self}).float().sqrt() is math.sqrt({self}) as a 0-d tensor")

    # printing / evaluation --------------------------------------------------------------------------
    def __str__(self) -> str:
        parts = []
        # symbols first, biggest monomials first, constant last: B*T*4 + B + 1
        for m, c in sorted(self.terms, key=lambda t: (-len(t[0]), t[0])):
            if not m:
                parts.append(str(c))
                continue
            body = "*".join(m)
            if c == 1:
                parts.append(body)
            elif c == -1:
                parts.append("-" + body)
            elif c < 0:
                parts.append(f"-{body}*{-c}")  # not B*-3: parse_dim and the IR parser read -B*3
            else:
                parts.append(f"{body}*{c}")
        s = "+".join(parts)
        return s.replace("+-", "-")

    def __repr__(self) -> str:
        return f"Sym({self})"

    def evaluate(self, env: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms:
            v = c
            for s in m:
                try:
                    v *= env[s]
                except KeyError:
                    raise KeyError(f"no value for dynamic dim {s!r}") from None
            total += v
        return total

    def to_c(self, name=lambda s: s) -> str:
        """A C expression (int64 arithmetic) with symbol names mapped by `name`."""
        parts = []
        for m, c in sorted(self.terms, key=lambda t: (-len(t[0]), t[0])):
            factors = [name(s) for s in m]
            if c != 1 or not factors:
                factors.append(str(c) if c >= 0 else f"({c})")
            parts.append("*".join(factors))
        return "(" + " + ".join(parts) + ")"


Dim = Union[int, Sym]
DimLike = Union[int, Sym]


def _poly(x: object) -> dict[Monomial, int] | None:
    if isinstance(x, Sym):
        return dict(x.terms)
    if isinstance(x, bool):
        return None
    if isinstance(x, int):
        return {(): x}
    return None


def simplify(s: Sym) -> Dim:
    if not s.terms:
        return 0
    if len(s.terms) == 1 and s.terms[0][0] == ():
        return s.terms[0][1]
    return s


def exact_div(a: DimLike, b: DimLike) -> Dim | None:
    """a / b when the quotient is a polynomial with integer coefficients, else None."""
    pa, pb = _poly(a), _poly(b)
    if pa is None or pb is None or not pb:
        return None
    if len(pb) != 1:
        # only the trivial case of dividing a polynomial by itself (or a multiple of it)
        if isinstance(a, Sym) and isinstance(b, Sym) and a == b:
            return 1
        return None
    (mb, cb), = pb.items()
    out: dict[Monomial, int] = {}
    for m, c in pa.items():
        rest = list(m)
        for s in mb:
            if s in rest:
                rest.remove(s)
            else:
                return None
        if c % cb:
            return None
        out[tuple(rest)] = c // cb
    return simplify(Sym(out))


def floor_div(a: DimLike, s: int) -> Dim | None:
    """floor(a / s) for a positive int s, when it is a polynomial for every value of the symbols: the
    non-constant coefficients divisible by s (then floor((s*q + c) / s) = q + floor(c / s))."""
    if not isinstance(a, Sym):
        return a // s
    const = 0
    out: dict[Monomial, int] = {}
    for m, c in a.terms:
        if not m:
            const = c
        elif c % s:
            return None
        else:
            out[m] = c // s
    out[()] = const // s
    return simplify(Sym(out))


def is_static(d: object) -> bool:
    return isinstance(d, int) and not isinstance(d, bool)


def prod(dims: Iterable[DimLike]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = out * d
    return out


def evaluate(d: DimLike, env: Mapping[str, int]) -> int:
    return d.evaluate(env) if isinstance(d, Sym) else int(d)


def parse_dim(text: str) -> Dim:
    """Parse 'B', '256', 'B*256', 'B*T+1' (the IR's dim syntax)."""
    text = text.replace(" ", "")
    if not text:
        raise ValueError("empty dim")
    total: Dim = 0
    for sign, term in _split_terms(text):
        val: Dim = sign
        for f in term.split("*"):
            if f.isdigit():
                val = val * int(f)
            elif f.isidentifier():
                val = val * Sym.var(f)
            else:
                raise ValueError(f"bad dim factor {f!r} in {text!r}")
        total = total + val
    return total


def _split_terms(text: str):
    term, sign = "", 1
    for ch in text:
        if ch in "+-":
            if term:
                yield sign, term
            elif ch == "-" and not term and sign == -1:
                raise ValueError(f"bad dim {text!r}")
            term, sign = "", (1 if ch == "+" else -1)
        else:
            term += ch
    if not term:
        raise ValueError(f"bad dim {text!r}")
    yield sign, term
