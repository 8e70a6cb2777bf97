"""graphc: compile PyTorch-style neural-network modules into standalone C and CUDA libraries."""

from __future__ import annotations

__version__ = "0.1.0"

from . import _dtype as _D
from ._device import device
from ._dtype import (
    bfloat16,
    dtype,
    float16,
    float32,
    float64,
    get_default_dtype,
    int8,
    int16,
    int32,
    int64,
    promote_types,
    set_default_dtype,
    uint8,
)
from .errors import GraphcError, IRParseError, ShapeError, TraceError, UnsupportedError, VerifyError
from .random import Generator, initial_seed, manual_seed, seed
from .tensor import _FUNCS as _TENSOR_FUNCS
from .tensor import (
    Size,
    Tensor,
    allclose,
    arange,
    as_tensor,
    cat,
    concat,
    concatenate,
    empty,
    empty_like,
    equal,
    eye,
    from_numpy,
    full,
    full_like,
    is_tensor,
    linspace,
    numel,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    stack,
    tensor,
    where,
    zeros,
    zeros_like,
)
from .trace import Dim, trace  # binds graphc.trace to the function (the module stays in sys.modules)

bool = _D.bool_  # noqa: A001 - PyTorch's name
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001
short = int16

globals().update(_TENSOR_FUNCS)


from .functions import *  # noqa: E402,F403 - PyTorch's free functions (no_grad, einsum, sort, ...)


class _LegacyTensorType(type):
    """graphc.FloatTensor and its kin: classes (so ``graphc.LongTensor | None`` works in annotations and
    ``isinstance(t, graphc.LongTensor)`` checks the dtype) whose call builds a Tensor of their dtype."""

    dtype: _D.dtype

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, Tensor) and obj.dtype is cls.dtype

    def __call__(cls, *args, device=None):  # noqa: F811 - PyTorch keyword
        return Tensor(*args, dtype=cls.dtype, device=device)


def _legacy(name: str, dt: _D.dtype) -> type:
    return _LegacyTensorType(name, (), {"dtype": dt, "__module__": __name__,
                                        "__doc__": f"Legacy constructor of {dt} tensors (graphc.{name}(data))."})


FloatTensor = _legacy("FloatTensor", float32)
DoubleTensor = _legacy("DoubleTensor", float64)
HalfTensor = _legacy("HalfTensor", float16)
BFloat16Tensor = _legacy("BFloat16Tensor", bfloat16)
LongTensor = _legacy("LongTensor", int64)
IntTensor = _legacy("IntTensor", int32)
ShortTensor = _legacy("ShortTensor", int16)
CharTensor = _legacy("CharTensor", int8)
ByteTensor = _legacy("ByteTensor", uint8)
BoolTensor = _legacy("BoolTensor", _D.bool_)


def __getattr__(name: str):
    # heavier submodules load on first use
    import importlib

    lazy = {
        "nn": ".nn", "ir": ".ir", "ops": ".ops", "passes": ".passes", "backend": ".backend", "compiler": ".compiler",
        "export": ".export", "importers": ".importers", "jit": ".jit", "fx": ".fx", "utils": ".utils",
        "library": ".library",
    }
    if name in lazy:
        return importlib.import_module(lazy[name], __name__)
    if name == "from_torch":
        from .importers import from_torch

        return from_torch
    if name == "from_onnx":
        from .importers import from_onnx

        return from_onnx
    if name in ("save", "load"):
        from . import serialization

        return getattr(serialization, name)
    if name == "compile":
        from .compiler import compile

        return compile
    if name in ("load_compiled", "CompiledModel"):
        from . import export

        return getattr(export, name)
    from ._missing import missing

    raise missing("graphc", name, [*globals(), *lazy, "from_torch", "from_onnx", "save", "load", "compile",
                              "load_compiled", "CompiledModel"])
