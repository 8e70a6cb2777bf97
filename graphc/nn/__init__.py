"""graphc.nn: PyTorch's module system (Module, Parameter, containers, init) and the layers."""

from . import functional, init, parameter
from .containers import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from .lora import LoraLinear
from .module import (
    IncompatibleKeys,
    Module,
    RemovableHandle,
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from .modules import *  # noqa: F403
from .parameter import Buffer, Parameter


def __getattr__(name: str):
    from .._missing import missing

    raise missing("graphc.nn", name, globals())
