"""The IR: its type (TensorType), Graph/Node/Value, the text form, the verifier and the reference interpreter."""

from .graph import Graph, Node, Value
from .interpreter import interpret
from .printer import print_graph
from .types import TensorType
from .verify import verify

__all__ = ["TensorType", "Graph", "Node", "Value", "interpret", "print_graph", "verify", "parse", "parse_file"]


def parse(text: str, *, source: str = "<string>") -> Graph:
    """Parse the IR text form (see printer.py) back into a Graph."""
    from .parser import parse as _parse

    return _parse(text, source=source)


def parse_file(path, weights=None) -> Graph:
    """Parse an IR file; ``weights`` (a safetensors path or a name -> array mapping) attaches the
    parameters' data, checked against their declarations (see parser.parse_file)."""
    from .parser import parse_file as _parse_file

    return _parse_file(path, weights)
