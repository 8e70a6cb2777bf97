"""The IR: Graph/Node/Value, the text form, the verifier and the reference interpreter."""

from .graph import Graph, Node, Value
from .interpreter import interpret
from .printer import print_graph
from .verify import verify

__all__ = ["Graph", "Node", "Value", "interpret", "print_graph", "verify", "parse"]


def parse(text: str, *, source: str = "<string>") -> Graph:
    """Parse the IR text form (see printer.py) back into a Graph."""
    from .parser import parse as _parse

    return _parse(text, source=source)
