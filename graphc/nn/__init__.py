"""graphc.nn: PyTorch's module system (Module, Parameter, containers, init) and, below, the layers."""

from . import init, parameter
from .containers import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from .module import (
    IncompatibleKeys,
    Module,
    RemovableHandle,
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from .parameter import Buffer, Parameter

# layers
