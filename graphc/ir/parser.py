"""Read the IR text form (printer.py; grammar in grammar.lark) back into a verified Graph.

``parse(print_graph(g))`` rebuilds ``g``: same names, types, attributes, scopes, source lines, dims,
parameter declarations and outputs (the parameters' arrays are not part of the text; ``parse_file``
can load them from a safetensors file). Attributes go through each op's ``bind_attrs``, so a file may
leave defaulted attributes out; every node's declared type is checked against its op's type rule.

Every problem is an :class:`~graphc.errors.IRParseError` with the line, column, offending token and
what was expected, formatted like a compiler diagnostic::

    model.gir:3:17: unexpected token ')' — expected one of: '*', '+', ',', '-', ']'
      3 |   %h : f32[B,256) = relu(%x)
        |                 ^

Semantic errors (unknown value or op, duplicate definition, a type that disagrees with the op's rule,
an undeclared dim ...) point at the offending token the same way.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from .._dtype import ALL_DTYPES, as_dtype, from_numpy_dtype
from ..errors import GraphcError, IRParseError, VerifyError
from ..ops.registry import OPS, OpDef, TensorType
from ..sym import Dim, Sym, is_static
from .graph import Graph, Value
from .verify import verify

__all__ = ["parse", "parse_file"]

_GRAMMAR = Path(__file__).with_name("grammar.lark")

# words that mean something else where an attribute value is expected, so a dim cannot be named so
RESERVED_DIM_NAMES = frozenset({"true", "false", "none", "inf", "nan"} | {d.short for d in ALL_DTYPES})

_DESCRIBE = {
    "NAME": "a name",
    "STRING": "a string",
    "VAR": "a value (%name)",
    "PARAM": "a parameter (@name)",
    "DIMNAME": "a dim name",
    "DTYPE": "a dtype (" + ", ".join(d.short for d in ALL_DTYPES) + ")",
    "INT": "an integer",
    "FLOAT": "a float",
    "LOC": "a source location (file.py:12)",
    "_NL": "end of line",
    **{kw.upper(): f"'{kw}'" for kw in ("none", "true", "false", "inf", "nan", "return")},
    **{"_" + kw.upper(): f"'{kw}'" for kw in ("graph", "dim", "in", "param")},
    "$END": "end of input",
}
_IGNORED = {"WS", "COMMENT"}
_WORD = re.compile(r'"(?:[^"\\\n]|\\.)*"?|[%@]?[A-Za-z0-9_.]+|\S')


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(_GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="contextual",
                maybe_placeholders=True)


# ------------------------------------------------------------------------------------------ diagnostics
def _quote(s: str) -> str:
    if len(s) > 40:
        s = s[:37] + "..."
    return f"'{s}'" if "'" not in s and s.isprintable() else json.dumps(s)


def _describe(term: str) -> str:
    if term in _DESCRIBE:
        return _DESCRIBE[term]
    try:
        pattern = _lark().get_terminal(term).pattern
    except KeyError:
        return term
    return _quote(pattern.value) if isinstance(pattern, PatternStr) else term


def _expected(terms: Iterable[str]) -> tuple[str, ...]:
    shown = {_describe(t) for t in terms if t not in _IGNORED}
    # literal tokens first, then the descriptions of token classes
    return tuple(sorted(shown, key=lambda s: (not s.startswith("'"), s)))


def _line_of(text: str, line: int) -> str:
    lines = text.split("\n")
    return lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""


def _end_pos(text: str) -> tuple[int, int]:
    lines = text.rstrip().split("\n")
    return len(lines), len(lines[-1].rstrip("\r")) + 1


def _error(text: str, source: str, line: int, column: int, message: str, token: str = "",
           expected: Iterable[str] = ()) -> IRParseError:
    src = _line_of(text, line)
    caret = "".join("\t" if c == "\t" else " " for c in src[:max(column - 1, 0)]) + "^"
    gutter = len(str(line)) + 2
    full = (f"{source}:{line}:{column}: {message}\n"
            f"{str(line).rjust(gutter)} |{' ' + src if src else ''}\n"
            f"{' ' * gutter} | {caret}")
    return IRParseError(full, line, column, token, tuple(expected))


def _syntax_error(e: UnexpectedInput, text: str, source: str) -> IRParseError:
    if isinstance(e, UnexpectedToken):
        tok = e.token
        expected = _expected(e.accepts or e.expected or ())
        if tok.type == "$END":
            line, column = _end_pos(text)
            token, shown = "", "end of input"
        elif tok.type == "_NL":
            line, column = tok.line, tok.column
            token, shown = "\n", "end of line"
        else:
            line, column = tok.line, tok.column
            token, shown = str(tok.value), f"token {_quote(str(tok.value))}"
    elif isinstance(e, UnexpectedCharacters):
        line, column = e.line, e.column
        m = _WORD.match(text, e.pos_in_stream)
        token = m.group() if m else text[e.pos_in_stream:e.pos_in_stream + 1]
        shown = f"token {_quote(token)}"
        expected = _expected(e.allowed or ())
    elif isinstance(e, UnexpectedEOF):
        line, column = _end_pos(text)
        token, shown = "", "end of input"
        expected = _expected(e.expected or ())
    else:  # pragma: no cover - lark has no other UnexpectedInput kinds
        line, column = getattr(e, "line", 0), getattr(e, "column", 0)
        token, shown, expected = "", "input", ()
    msg = f"unexpected {shown}"
    if expected:
        msg += " — expected " + (expected[0] if len(expected) == 1 else "one of: " + ", ".join(expected))
    return _error(text, source, line, column, msg, token, expected)


# ------------------------------------------------------------------------------------------- builder
class _Builder:
    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.g: Graph | None = None
        self.values: dict[str, Value] = {}
        self.value_pos: dict[str, Token] = {}
        self.later: dict[str, Token] = {}  # node names defined further down (for "used before defined")
        self.dim_pos: dict[str, Token] = {}
        self.param_pos: dict[str, Token] = {}
        self.node_pos: dict[str, Token] = {}

    # errors ------------------------------------------------------------------------------------
    def error(self, tok: Token | Tree | None, message: str, expected: Iterable[str] = ()) -> IRParseError:
        t = _first_token(tok) if tok is not None else None
        if t is None:
            line, col, value = 1, 1, ""
        else:
            line, col, value = t.line, t.column, str(t.value)
        return _error(self.text, self.source, line, col, message, value, expected)

    # leaves --------------------------------------------------------------------------------------
    def string(self, tok: Token, text: str | None = None) -> str:
        s = tok.value if text is None else text
        try:
            out = json.loads(s)
        except ValueError as e:
            raise self.error(tok, f"invalid string literal {s}: {e.args[0].split(':')[0]}",
                             ("a JSON string",)) from None
        if not isinstance(out, str):  # pragma: no cover - the token regex admits only strings
            raise self.error(tok, f"invalid string literal {s}")
        return out

    def name(self, tree: Tree) -> tuple[str, Token]:
        tok = tree.children[0]
        return (self.string(tok) if tok.type == "STRING" else str(tok.value)), tok

    def ref_name(self, tok: Token) -> str:
        body = tok.value[1:]
        return self.string(tok, body) if body.startswith('"') else body

    def dim(self, tree: Tree) -> Dim:
        kind, ch = tree.data, tree.children
        if kind == "dim_int":
            return int(ch[0])
        if kind == "dim_var":
            tok = ch[0]
            if tok.value not in self.g.dims:
                raise self.error(tok, f"dynamic dim {tok.value} is not declared; add a line "
                                      f"`dim {tok.value} in MIN..MAX` to the graph", ("a declared dim",))
            return Sym.var(tok.value)
        if kind == "dim_neg":
            return -self.dim(ch[0])
        a, b = self.dim(ch[0]), self.dim(ch[1])
        if kind == "dim_add":
            return a + b
        if kind == "dim_sub":
            return a - b
        if kind == "dim_mul":
            return a * b
        raise AssertionError(kind)  # pragma: no cover

    def type(self, tree: Tree) -> TensorType:
        dt_tok, *dims = tree.children
        shape = []
        for d in dims:
            if d is None:
                continue
            v = self.dim(d)
            if is_static(v) and v < 0:
                raise self.error(d, f"dim {v} is negative", ("a size >= 0",))
            shape.append(v)
        return TensorType(tuple(shape), as_dtype(str(dt_tok.value)))

    def value(self, tree: Tree) -> Any:
        kind, ch = tree.data, tree.children
        if kind == "v_string":
            return self.string(ch[0])
        if kind == "v_true":
            return True
        if kind == "v_false":
            return False
        if kind == "v_none":
            return None
        if kind == "v_dtype":
            return as_dtype(str(ch[0].value))
        if kind == "v_float":
            return float(ch[0])
        if kind == "v_negfloat":
            return -float(ch[0])
        if kind == "v_inf":
            return math.inf
        if kind == "v_neginf":
            return -math.inf
        if kind == "v_nan":
            return math.nan
        if kind == "v_dim":
            return self.dim(ch[0])
        if kind == "v_list":
            return tuple(self.value(c) for c in ch if c is not None)
        raise AssertionError(kind)  # pragma: no cover

    # references -------------------------------------------------------------------------------
    def use(self, tok: Token) -> Value:
        if tok.type == "PARAM":
            name = self.ref_name(tok)
            v = self.g.params.get(name)
            if v is None:
                raise self.error(tok, f"unknown parameter @{name}{_did_you_mean(name, self.g.params, '@')}",
                                 ("a declared parameter",))
            return v
        name = self.ref_name(tok)
        v = self.values.get(name)
        if v is not None:
            return v
        if name in self.later:
            raise self.error(tok, f"value %{name} is used before its definition on line {self.later[name].line}",
                             ("a value defined above",))
        raise self.error(tok, f"unknown value %{name}{_did_you_mean(name, self.values, '%')}",
                         ("a value defined above",))

    def define(self, tok: Token) -> str:
        name = self.ref_name(tok)
        if name in self.values:
            first = self.value_pos[name]
            raise self.error(tok, f"duplicate definition of %{name} (first defined on line {first.line})",
                             ("a new value name",))
        return name

    # statements --------------------------------------------------------------------------------
    def build(self, tree: Tree) -> Graph:
        graph = next(c for c in tree.children if isinstance(c, Tree) and c.data == "graph")
        name_tree, inputs, header_outs, body, ret = graph.children
        gname, _ = self.name(name_tree)
        g = self.g = Graph(gname)
        stmts = [s for s in body.children if isinstance(s, Tree)]
        # dims and parameters are graph-wide: declare them first, in text order
        for s in stmts:
            if s.data == "dim_decl":
                self.dim_decl(s)
        for s in stmts:
            if s.data == "param_decl":
                self.param_decl(s)
        for s in stmts:
            if s.data == "node":
                tok = s.children[0]
                self.later.setdefault(self.ref_name(tok), tok)
        for inp in (inputs.children if inputs is not None else []):
            tok, ty = inp.children
            name = self.define(tok)
            self.values[name] = g.add_input(name, self.type(ty))
            self.value_pos[name] = tok
        for s in stmts:
            if s.data == "node":
                self.node(s)
        self.outputs(header_outs, ret)
        try:
            verify(g)
        except VerifyError as e:  # every invariant is checked above with a position; this is a backstop
            raise self.error(self._node_in(str(e)) or name_tree, f"the graph does not verify: {e}") from None
        return g

    def _node_in(self, message: str) -> Token | None:
        for name, tok in self.node_pos.items():
            if f"%{name} " in message:
                return tok
        return None

    def dim_decl(self, tree: Tree) -> None:
        tok, lo_tok, hi_tok = tree.children
        name = str(tok.value)
        if not name.isidentifier():
            raise self.error(tok, f"'{name}' cannot name a dim: it is not an identifier", ("a dim name",))
        if name in RESERVED_DIM_NAMES:
            raise self.error(tok, f"'{name}' cannot name a dim: it is a keyword or dtype of the text form",
                             ("a dim name",))
        if name in self.g.dims:
            raise self.error(tok, f"dim {name} is declared twice (first on line {self.dim_pos[name].line})",
                             ("a new dim name",))
        lo, hi = int(lo_tok), int(hi_tok)
        if lo > hi:
            raise self.error(hi_tok, f"dim {name}: empty range {lo}..{hi} (the maximum is below the minimum)",
                             (f"an integer >= {lo}",))
        self.g.dims[name] = (lo, hi)
        self.dim_pos[name] = tok

    def param_decl(self, tree: Tree) -> None:
        tok, ty = tree.children
        name = self.ref_name(tok)
        if name in self.g.params:
            raise self.error(tok, f"duplicate declaration of parameter @{name} (first on line "
                                  f"{self.param_pos[name].line})", ("a new parameter name",))
        self.g.add_param(name, self.type(ty))
        self.param_pos[name] = tok

    def node(self, tree: Tree) -> None:
        out_tok, ty, op_tok, attrs_tree, operands_tree, meta = tree.children
        name = self.define(out_tok)
        declared = self.type(ty)
        opname = str(op_tok.value)
        op = OPS.get(opname)
        if op is None:
            close = difflib.get_close_matches(opname, OPS, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise self.error(op_tok, f"unknown op '{opname}'{hint}", tuple(close) or ("an op name",))
        where = f"node %{name}"
        attrs, attr_toks = self.attrs(attrs_tree, where)
        bound = self.bind(op, attrs, attr_toks, op_tok, where)
        toks = [c.children[0] for c in operands_tree.children] if operands_tree is not None else []
        inputs = [None if t.type == "NONE" else self.use(t) for t in toks]
        n_in = len(inputs)
        lo, hi = op.min_inputs, op.max_inputs
        if n_in < lo or (hi is not None and n_in > hi):
            at = toks[hi] if hi is not None and n_in > hi else op_tok
            want = f"{lo}" if hi == lo else (f"{lo} to {hi}" if hi is not None else f"at least {lo}")
            raise self.error(at, f"{where}: {opname} takes {want} operand(s) ({', '.join(op.inputs) or 'none'}), "
                                 f"got {n_in}", (f"{want} operand(s)",))
        for i, v in enumerate(inputs):
            if v is None and not op.inputs[min(i, len(op.inputs) - 1)].endswith("?"):
                raise self.error(toks[i], f"{where}: operand '{op.input_name(i)}' of {opname} is required, "
                                          "got none", ("a value",))
        try:
            inferred = op.infer_type([None if v is None else v.type for v in inputs], bound)
        except Exception as e:  # a type rule rejects the operands: ShapeError, or a rule tripping on odd input
            raise self.error(op_tok, f"{where}: {e}") from None
        if inferred != declared:
            raise self.error(ty, f"type mismatch for {where}: declared {declared} but {opname}'s type rule "
                                 f"gives {inferred}", (str(inferred),))
        scope, loc = "", ""
        if meta is not None:
            scope_tree, loc_tree = meta.children
            if scope_tree is not None:
                scope = self.name(scope_tree)[0]
            if loc_tree is not None:
                ltok = loc_tree.children[0]
                loc = self.string(ltok) if ltok.type == "STRING" else str(ltok.value)
        node = self.g.add_node(opname, inputs, bound, declared, name=name, scope=scope, loc=loc)
        self.values[name] = node.out
        self.value_pos[name] = out_tok
        self.node_pos[name] = out_tok

    def attrs(self, tree: Tree | None, where: str) -> tuple[dict[str, Any], dict[str, Token]]:
        """The attribute values, and their positions: toks[key] the name, toks['=' + key] the value."""
        attrs: dict[str, Any] = {}
        toks: dict[str, Token] = {}
        if tree is None:
            return attrs, toks
        for a in tree.children:
            if a is None:
                continue
            key_tok, val = a.children
            key = str(key_tok.value)
            if key in attrs:
                raise self.error(key_tok, f"{where}: attribute '{key}' is given twice", ("a new attribute",))
            attrs[key] = self.value(val)
            toks[key] = key_tok
            toks["=" + key] = _first_token(val) or key_tok
        return attrs, toks

    def bind(self, op: OpDef, attrs: dict[str, Any], toks: dict[str, Token], op_tok: Token,
             where: str) -> dict[str, Any]:
        unknown = [k for k in attrs if k not in op.attrs]
        if unknown:
            k = unknown[0]
            close = difflib.get_close_matches(k, op.attrs, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.error(toks[k], f"{where}: {op.name} has no attribute '{k}'{hint}; it takes "
                                      f"{', '.join(op.attrs) or 'no attributes'}", tuple(op.attrs))
        try:
            return op.bind_attrs(attrs)
        except Exception as e:  # ShapeError from a normaliser: name the attribute when the message does
            m = re.search(r"attribute '([^']+)'", str(e))
            key = m.group(1) if m else ""
            spec = op.attrs.get(key)
            raise self.error(toks.get("=" + key, op_tok), f"{where}: {e}",
                             (f"{spec.kind} value",) if spec is not None else ()) from None

    def outputs(self, header: Tree | None, ret: Tree) -> None:
        ret_tok, *outs = ret.children
        outs = [o for o in outs if o is not None]
        if not outs:
            raise self.error(ret_tok, "the graph has no outputs: `return` needs at least one name=%value",
                             ("an output",))
        result: list[tuple[str, Value]] = []
        seen: dict[str, Token] = {}
        for o in outs:
            name_tree, ref = o.children
            name, tok = self.name(name_tree)
            if name in seen:
                raise self.error(tok, f"output name '{name}' is used twice (first on line {seen[name].line})",
                                 ("a new output name",))
            seen[name] = tok
            result.append((name, self.use(ref.children[0])))
        declared = [self.name(n) for n in header.children] if header is not None else []
        names = [k for k, _ in result]
        if [n for n, _ in declared] != names:
            at = declared[0][1] if declared else ret_tok
            for (dn, dtok), rn in zip(declared, names):
                if dn != rn:
                    at = dtok
                    break
            else:
                if len(declared) > len(names):
                    at = declared[len(names)][1]
            raise self.error(at, f"the header declares outputs ({', '.join(n for n, _ in declared)}) but "
                                 f"`return` on line {ret_tok.line} gives ({', '.join(names)})",
                             tuple(names))
        self.g.set_outputs(result)


def _first_token(t: Tree | Token | None) -> Token | None:
    if isinstance(t, Token):
        return t
    if isinstance(t, Tree):
        for c in t.children:
            tok = _first_token(c)
            if tok is not None:
                return tok
    return None


def _did_you_mean(name: str, choices: Iterable[str], sigil: str) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {sigil}{close[0]}?)" if close else ""


# ----------------------------------------------------------------------------------------------- API
def _parse(text: str, source: str) -> tuple[Graph, dict[str, Token]]:
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, source) from None
    b = _Builder(text, source)
    return b.build(tree), b.param_pos


def parse(text: str, source: str = "<string>") -> Graph:
    """Parse the IR text form into a verified Graph (parameters declared, without data).

    ``source`` names the text in error messages (a file name). Raises IRParseError."""
    return _parse(text, source)[0]


def parse_file(path: str | os.PathLike, weights: str | os.PathLike | Mapping[str, np.ndarray] | None = None
               ) -> Graph:
    """Parse an IR file; with ``weights`` (a safetensors file, or a mapping name -> array) also attach
    every declared parameter's data, checking its dtype and shape against the declaration.

    Tensors in the weights that the graph does not declare are ignored."""
    source = os.fspath(path)
    with open(source, encoding="utf-8") as f:
        text = f.read()
    g, param_pos = _parse(text, source)
    if weights is None:
        return g
    if isinstance(weights, Mapping):
        arrays, wname = dict(weights), "the weights"
    else:
        wname = os.fspath(weights)
        try:
            from .. import serialization
        except ModuleNotFoundError as e:
            if e.name not in ("graphc.serialization",):
                raise
            raise GraphcError("parse_file(weights=...) reads safetensors files with graphc.serialization, "
                              "which is not available in this installation") from None
        arrays = serialization.load_file(wname)
    text = text[1:] if text.startswith("\ufeff") else text
    for name, v in g.params.items():
        tok = param_pos[name]
        if name not in arrays:
            raise _error(text, source, tok.line, tok.column,
                         f"parameter @{name} ({v.type}) has no tensor named '{name}' in {wname}",
                         tok.value, (f"a tensor '{name}'",))
        arr = np.asarray(arrays[name])
        try:
            held = str(TensorType(tuple(arr.shape), from_numpy_dtype(arr.dtype)))
        except TypeError:
            held = f"{arr.dtype}[{','.join(map(str, arr.shape))}]"
        if arr.dtype != v.type.dtype.np or tuple(arr.shape) != tuple(v.type.shape):
            raise _error(text, source, tok.line, tok.column,
                         f"parameter @{name} is declared {v.type} but {wname} holds {held}",
                         tok.value, (str(v.type),))
        g.param_data[name] = arr
    verify(g)
    return g
