"""In-place writes and aliasing: PyTorch's mutation semantics on top of a value-semantic IR.

The IR has no memory: every op makes a new value. PyTorch code mutates (``x.add_(1)``, ``x += 1``,
``x[:, 0] = 0``, ``F.relu(x, inplace=True)``) and reads the mutation through every alias of the
written tensor: the same Python object (``saved = h; h += 1``) and every *view* of the same memory
(``v = x[0]; v.add_(1)`` changes ``x``). graphc keeps that meaning in both of its modes:

* **Eager**: the four view ops (slice, reshape, permute, expand) return numpy views of their input
  (:func:`numpy_view`), so a write into any tensor lands in the shared memory, as in PyTorch.
  ``reshape`` copies when no view is possible and ``contiguous()`` copies a non-contiguous tensor,
  both by PyTorch's (and numpy's) rules.
* **Tracing** (functionalisation, as ``torch.func.functionalize`` does it with its ViewMeta and
  alias records): a view remembers its *root* tensor and the chain of view ops that produce it from
  the root (:func:`register_view`), plus its strides, emulated symbolically (:func:`view_strides`,
  PyTorch's ``computeStride``) so that ``reshape``/``contiguous()`` decide view-or-copy as eagerly.
  A write into a tensor (:func:`write`) computes the new root value by walking the chain backwards
  with each view op's inverse (a reshape back, the inverse permutation, a concat around a slice, a
  gather and select for a strided slice), rebinds the root's graph value, and replays the chain for
  every live view of that root, so all aliases read the new value. Where a write has no expression
  in the graph the tracer refuses it with a :class:`~graphc.errors.TraceError` naming the user's
  line: writes through a broadcast (expanded) view or a strided slice of a dynamic dim, and writes
  into parameters, buffers or tensor attributes of the traced module (a compiled library keeps no
  state between calls, so the write would be lost).

Every in-place method goes through :meth:`graphc.Tensor._write` (the out-of-place op, then this
module's write-back), so an in-place method is the functional op plus a write and nothing else.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from .sym import Dim, exact_div, is_static

if TYPE_CHECKING:
    from .tensor import Tensor

# the ops whose eager result is a view of their input (PyTorch: view ops)
VIEW_OPS = frozenset({"slice", "reshape", "permute", "expand"})

OVERLAP_MESSAGE = ("unsupported operation: more than one element of the written-to tensor refers to a "
                   "single memory location (an expanded view). Please clone() the tensor before "
                   "performing the operation")


# ------------------------------------------------------------------------------------------- eager
def numpy_view(opname: str, x: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """The eager result of a view op: a numpy view of x where PyTorch returns a view."""
    if opname == "slice":
        idx = [slice(None)] * x.ndim
        idx[attrs["dim"]] = slice(int(attrs["start"]), int(attrs["end"]), attrs["step"])
        return x[tuple(idx)]
    if opname == "reshape":
        return x.reshape(tuple(int(d) for d in attrs["shape"]))  # a view when one exists, else a copy
    if opname == "permute":
        return x.transpose(attrs["dims"])
    if opname == "expand":
        shape = tuple(int(d) for d in attrs["shape"])
        off = len(shape) - x.ndim
        strides = [0] * off + [0 if x.shape[i] == 1 and shape[off + i] != 1 else x.strides[i]
                               for i in range(x.ndim)]
        return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=x.flags.writeable)
    raise KeyError(opname)


def has_internal_overlap(shape: tuple, strides: tuple) -> bool:
    """True when two elements share one memory location (a stride-0 dim of size > 1)."""
    return any(is_static(s) and s == 0 and d != 1 for s, d in zip(strides, shape))


def write_array(dst: np.ndarray, src: np.ndarray) -> None:
    """Eager write of src (already of dst's dtype and broadcastable) into dst's memory."""
    if has_internal_overlap(dst.shape, dst.strides):
        raise RuntimeError(OVERLAP_MESSAGE)
    if not dst.flags.writeable:
        raise RuntimeError("the tensor's memory is read-only (a numpy array marked non-writeable)")
    np.copyto(dst, src)


# ---------------------------------------------------------------------------------------- strides
def contiguous_strides(shape: tuple) -> tuple:
    out: list[Dim] = []
    acc: Dim = 1
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return tuple(reversed(out))


def is_contiguous(shape: tuple, strides: tuple) -> bool:
    """PyTorch's is_contiguous: size-1 dims do not count; an empty tensor is contiguous."""
    if any(is_static(d) and d == 0 for d in shape):
        return True
    expected: Dim = 1
    for d, s in zip(reversed(shape), reversed(strides)):
        if is_static(d) and d == 1:
            continue
        if s != expected:
            return False
        expected = expected * d
    return True


def layout(t: Tensor) -> tuple:
    """The strides (in elements, symbolic where the shape is) of a tensor while tracing."""
    if t._strides is not None:
        return t._strides
    if t._tracer is None and t._data is not None:
        item = t._data.itemsize
        if all(s >= 0 and s % item == 0 for s in t._data.strides):
            return tuple(s // item for s in t._data.strides)
    return contiguous_strides(tuple(t.shape))


def _reshape_strides(old_shape: tuple, old_strides: tuple, new_shape: tuple) -> tuple | None:
    """PyTorch's computeStride: the strides of a view of (old_shape, old_strides) as new_shape, or None
    when the reshape needs a copy. Comparisons of symbolic sizes are structural (sym.py)."""
    if not old_shape:
        return tuple(1 for _ in new_shape)
    if any(is_static(d) and d == 0 for d in old_shape):
        return contiguous_strides(new_shape)
    new_strides: list[Dim] = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base = old_strides[-1]
    tensor_numel: Dim = 1
    view_numel: Dim = 1
    for tensor_d in range(len(old_shape) - 1, -1, -1):
        tensor_numel = tensor_numel * old_shape[tensor_d]
        if tensor_d == 0 or (old_shape[tensor_d - 1] != 1
                             and old_strides[tensor_d - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and ((view_numel != tensor_numel and exact_div(tensor_numel, view_numel)
                                    is not None) or (is_static(new_shape[view_d]) and new_shape[view_d] == 1)):
                new_strides[view_d] = view_numel * chunk_base
                view_numel = view_numel * new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base = old_strides[tensor_d - 1]
                tensor_numel = 1
                view_numel = 1
    if view_d != -1:
        return None
    return tuple(new_strides)


def view_strides(opname: str, attrs: dict[str, Any], shape: tuple, strides: tuple,
                 out_shape: tuple) -> tuple | None:
    """Strides of the view op's result given its input's, or None when the op copies."""
    if opname == "slice":
        s = list(strides)
        s[attrs["dim"]] = s[attrs["dim"]] * attrs["step"]
        return tuple(s)
    if opname == "permute":
        return tuple(strides[d] for d in attrs["dims"])
    if opname == "expand":
        off = len(out_shape) - len(shape)
        return (0,) * off + tuple(0 if is_static(shape[i]) and shape[i] == 1 and out_shape[off + i] != 1
                                  else strides[i] for i in range(len(shape)))
    if opname == "reshape":
        return _reshape_strides(tuple(shape), tuple(strides), tuple(out_shape))
    raise KeyError(opname)


def register_view(src: Tensor, out: Tensor, opname: str, attrs: dict[str, Any]) -> None:
    """Record that `out` (the result of a view op on `src`) aliases src's root, while tracing."""
    if out is src:
        return
    strides = view_strides(opname, attrs, tuple(src.shape), layout(src), tuple(out.shape))
    if strides is None:
        return  # a reshape that copies: out is a new tensor
    root, chain = src._view if src._view is not None else (src, ())
    out._view = (root, chain + ((opname, dict(attrs)),))
    out._strides = strides
    if root._aliases is None:
        root._aliases = weakref.WeakSet()
    root._aliases.add(out)


# --------------------------------------------------------------------------------------- tracing
def _replay(x: Tensor, chain: tuple) -> Tensor:
    from .tensor import _apply_raw

    for opname, attrs in chain:
        x = _apply_raw(opname, (x,), attrs)
    return x


def _inverse(tracer: Any, opname: str, attrs: dict[str, Any], old: Tensor, new: Tensor, what: str) -> Tensor:
    """The value of a view op's input after its output was overwritten with `new` (old: before)."""
    from .tensor import _apply_raw

    if opname == "expand" and has_internal_overlap(tuple(new.shape), view_strides(
            opname, attrs, tuple(old.shape), contiguous_strides(tuple(old.shape)), tuple(new.shape))):
        # a sub-view of a broadcast (x.expand(2, -1)[0]) writes one copy that all copies share
        raise tracer.error(f"{what} writes through an expanded (broadcast) view, which graphc cannot express "
                           "in a traced graph; clone() the expanded tensor first")
    if opname in ("reshape", "expand"):  # an expand here only adds size-1 dims
        return _apply_raw("reshape", (new,), {"shape": tuple(old.shape)})
    if opname == "permute":
        dims = attrs["dims"]
        inv = [0] * len(dims)
        for i, d in enumerate(dims):
            inv[d] = i
        return _apply_raw("permute", (new,), {"dims": tuple(inv)})
    if opname == "slice":
        dim, start, end, step = attrs["dim"], attrs["start"], attrs["end"], attrs["step"]
        size = old.shape[dim]
        if step != 1:
            return _strided_scatter(tracer, old, new, dim, start, end, step, size, what)
        pieces = []
        if not (is_static(start) and start == 0):
            pieces.append(_apply_raw("slice", (old,), {"dim": dim, "start": 0, "end": start, "step": 1}))
        pieces.append(new)
        if not (end == size):
            pieces.append(_apply_raw("slice", (old,), {"dim": dim, "start": end, "end": size, "step": 1}))
        return _apply_raw("concat", tuple(pieces), {"dim": dim}) if len(pieces) > 1 else new
    raise KeyError(opname)


def _strided_scatter(tracer: Any, old: Tensor, new: Tensor, dim: int, start: Dim, end: Dim, step: int,
                     size: Dim, what: str) -> Tensor:
    """old with old[..., start:end:step, ...] = new (static sizes): where(hit, new gathered back, old)."""
    from .tensor import Tensor, _apply_raw

    if not (is_static(start) and is_static(end) and is_static(size)):
        raise tracer.error(f"{what} writes through a strided slice (step {step}) of the dynamic size {size}, "
                           "which graphc cannot express in a traced graph; write the out-of-place form "
                           "(graphc.where, graphc.cat) instead")
    pos = np.arange(size)
    hit = (pos >= start) & (pos < end) & ((pos - start) % step == 0)
    src = np.clip((pos - start) // step, 0, max(int(new.shape[dim]) - 1, 0)).astype(np.int64)
    shape = [1] * old.ndim
    shape[dim] = size
    gathered = _apply_raw("index_select", (new, Tensor._wrap(src)), {"dim": dim})
    return _apply_raw("where", (Tensor._wrap(hit.reshape(shape)), gathered, old), {})


def write(tracer: Any, target: Tensor, value: Tensor, what: str) -> None:
    """Functional write while tracing: `target` (and every alias of it) now holds `value`, which has
    target's shape and dtype already."""
    from .tensor import Tensor

    if has_internal_overlap(tuple(target.shape), layout(target)):
        raise tracer.error(f"{what}: {OVERLAP_MESSAGE}", target)
    root, chain = target._view if target._view is not None else (target, ())
    tracer.wrote = True
    tracer.check_writable(root, what)
    tracer.make_symbolic(root, lift=True)
    if value._tracer is None:
        value = Tensor._symbolic(tracer.lift(value), tracer)
    # the chain's intermediate values from the root's current value, then the inverses backwards
    olds = [root]
    for opname, attrs in chain[:-1]:
        olds.append(_replay(olds[-1], ((opname, attrs),)))
    cur = value
    for (opname, attrs), old in zip(reversed(chain), reversed(olds)):
        cur = _inverse(tracer, opname, attrs, old, cur, what)
    root._value = cur._value
    for alias in list(root._aliases or ()):
        tracer.make_symbolic(alias, lift=False)
        alias._value = value._value if alias is target else _replay(root, alias._view[1])._value
