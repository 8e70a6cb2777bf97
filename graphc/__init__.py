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


def _legacy(dt):
    def ctor(*args, device=None):  # noqa: F811 - PyTorch keyword
        return Tensor(*args, dtype=dt, device=device)

    return ctor


FloatTensor = _legacy(float32)
DoubleTensor = _legacy(float64)
HalfTensor = _legacy(float16)
BFloat16Tensor = _legacy(bfloat16)
LongTensor = _legacy(int64)
IntTensor = _legacy(int32)
ShortTensor = _legacy(int16)
CharTensor = _legacy(int8)
ByteTensor = _legacy(uint8)
BoolTensor = _legacy(_D.bool_)


def __getattr__(name: str):
    # heavier submodules load on first use
    import importlib

    lazy = {
        "nn": ".nn", "ir": ".ir", "ops": ".ops", "passes": ".passes", "backend": ".backend", "compiler": ".compiler",
        "export": ".export", "importers": ".importers",
    }
    if name in lazy:
        return importlib.import_module(lazy[name], __name__)
    if name == "from_torch":
        from .importers import from_torch

        return from_torch
    if name in ("save", "load"):
        from . import serialization

        return getattr(serialization, name)
    if name == "compile":
        from .compiler import compile

        return compile
    if name in ("load_compiled", "CompiledModel"):
        from . import export

        return getattr(export, name)
    raise AttributeError(f"module 'graphc' has no attribute {name!r}")
