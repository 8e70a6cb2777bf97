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
# (a statement first, so these appended imports form their own import block for ruff's isort)
LAYER_PACKAGES = ("graphc.nn.functional", "graphc.nn.modules", "graphc.nn.lora")
from . import functional  # noqa: E402
from .lora import LoraLinear  # noqa: E402
from .modules import *  # noqa: E402, F403
