"""Exception types. Every error graphc raises for bad input says what is wrong and where."""

from __future__ import annotations

import re


class GraphcError(Exception):
    """Base class of graphc's own errors."""


class ShapeError(GraphcError, ValueError):
    """An op was given inputs whose shapes or dtypes its rule rejects."""


class TraceError(GraphcError):
    """The forward pass did something that cannot be recorded into a static graph."""


class IRParseError(GraphcError, ValueError):
    """The IR text does not parse; carries line, column, the offending token and what was expected."""

    def __init__(self, message: str, line: int = 0, column: int = 0, token: str = "", expected=()):
        super().__init__(message)
        self.line = line
        self.column = column
        self.token = token
        self.expected = tuple(expected)


class VerifyError(GraphcError):
    """A graph breaks an IR invariant (names the node)."""


class UnsupportedError(GraphcError, NotImplementedError):
    """A feature graphc does not support: a backend that cannot lower an op / dtype (names op, dtype and
    module path), or a layer option outside what graphc compiles (names the layer and the option)."""


class CompileError(GraphcError):
    """The C compiler failed on generated code (carries the compiler's output: ``output``)."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output

    def first_errors(self, n: int = 8) -> list[str]:
        """Up to n lines of the compiler's output from its first error on (the lines a user reads first)."""
        lines = [line.rstrip() for line in self.output.splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if re.search(r"\berror\b", line, re.IGNORECASE)), 0)
        return lines[start:start + n]


class ExportError(GraphcError):
    """An export folder cannot be written without losing what is in it (names the folder and the files)."""
