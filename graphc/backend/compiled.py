"""CompiledModel: a compiled library called from Python through cffi (ABI mode, no Python in the .so).

A model holds one context (weights loaded; its arena grows with the dims its calls run, or is the
caller's buffer: :meth:`CompiledModel.set_arena`) guarded by a lock, so calls from several
Python threads are serialised; :meth:`CompiledModel.new_context` gives another independent context of
the same library for parallel use. Inputs are given positionally or by input name (``model(x=...)``),
checked against the manifest (count, dtype, ndim, static dims, dynamic dims and their ranges) and copied
only when not C-contiguous or not aligned to their element size (a view at an odd byte offset): the
copy is 64-byte aligned, so the library's kernels never see a misaligned pointer.

A library is opened once per file and closed (dlclose) when the last model and context using it are
gone: each :class:`CompiledModel` and each context holds a reference, a context's finalizer destroys it
before giving its reference back, and nothing hands out pointers into the library. A process that
compiles and drops models keeps only the libraries it still uses mapped.

A CUDA library (``manifest["options"]["backend"]`` names the backend) is called the same way, with numpy
arrays in host memory (its ``run_v`` copies them to the device and back). Its context is created at the
first call, not when the library is opened (``Backend.context_at_open``): such a library builds and loads
on a machine without a GPU, and a call there raises :class:`RuntimeErrorC` with create's "no CUDA device"
message.

New weights (:meth:`CompiledModel.load_state_dict`) go through the optimiser again: the compiler
(``graphc/compiler.py``) and the export folder's loader (``graphc/export.py``) hand the model that step
as ``rebind_weights``, so this module needs nothing above the backends.

A sanitized library (``compile(..., sanitize=True)``) is opened only in a process where AddressSanitizer's
runtime is already loaded (``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``): dlopen'ing it anywhere else
makes ASan abort the whole process, so there the model raises a :class:`GraphcError` saying how to run it.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._dtype import as_dtype, dtype
from ..errors import GraphcError
from ..sym import Sym, evaluate, parse_dim
from .registry import DEFAULT_BACKEND, backend_class

# the open libraries by file identity (dev, inode, size, mtime); an entry leaves when its last user goes
_LIBS: dict[tuple[int, int, int, int], _Library] = {}
_OPENED: set[tuple[str, tuple[int, int, int, int]]] = set()
_LIBS_LOCK = threading.RLock()
MAP_WEIGHTS = 1  # NAME_CREATE_MAP_WEIGHTS
ALIGN = 64  # the alignment of the copies made of inputs that are not C-contiguous or not aligned


class RuntimeErrorC(GraphcError, RuntimeError):
    """A compiled library returned an error status (carries ``status`` and the library's message)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Library:
    """One dlopen'ed libNAME.so and its cffi declarations, with a count of its users (models and
    contexts): :meth:`release` of the last one closes it."""

    def __init__(self, path: Path, name: str, cdef: str, unload: bool = True):
        import cffi

        self.ffi = cffi.FFI()
        self.ffi.cdef(cdef)
        self.lib = self.ffi.dlopen(str(path))
        self.path = path
        if unload:
            _pin_openmp()
        self.name = name
        self.unload = unload
        self.users = 0
        self.ident: tuple[int, int, int, int] | None = None
        self.link_dir: Path | None = None  # the folder of the link it was opened through, removed at close
        p = name + "_"
        self.create = getattr(self.lib, p + "create")
        self.create_ex = getattr(self.lib, p + "create_ex", None)  # None: a library older than ABI 3
        self.destroy = getattr(self.lib, p + "destroy")
        self.run_v = getattr(self.lib, p + "run_v")
        self.last_error = getattr(self.lib, p + "last_error")
        self.status_string = getattr(self.lib, p + "status_string")
        self.set_num_threads = getattr(self.lib, p + "set_num_threads")
        self.get_num_threads = getattr(self.lib, p + "get_num_threads")
        self.arena_bytes = getattr(self.lib, p + "arena_bytes")
        # None: a library older than ABI 4 (its arena is allocated by create for the dims' maxima)
        self.set_arena = getattr(self.lib, p + "set_arena", None)
        self.arena_capacity = getattr(self.lib, p + "arena_capacity", None)
        self.context_arena_bytes = getattr(self.lib, p + "context_arena_bytes", None)
        self.fingerprint = self.ffi.string(getattr(self.lib, p + "fingerprint")()).decode()
        self.isa = self.ffi.string(getattr(self.lib, p + "isa")()).decode()
        self.profile_enable = getattr(self.lib, p + "profile_enable")
        self.profile = getattr(self.lib, p + "profile")
        try:  # a library exported before the ABI had a revision number has neither function: revision 1
            self.abi_version = int(getattr(self.lib, p + "abi_version")())
            self.version = self.ffi.string(getattr(self.lib, p + "version")()).decode()
        except AttributeError:
            self.abi_version, self.version = 1, ""

    @classmethod
    def open(cls, path: Path, name: str, cdef: str, unload: bool = True) -> _Library:
        """dlopen a library once per file (the caller holds one use of it: :meth:`release` it). A file
        replaced at the same path (a re-export) is a new library: it is opened through a link of its own
        name, since the dynamic loader would otherwise hand back the library it already loaded under
        that path."""
        path = path.resolve()
        st = path.stat()
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with _LIBS_LOCK:
            lib = _LIBS.get(ident)
            if lib is None:
                target, link_dir = path, None
                if any(key[0] == str(path) and key[1] != ident for key in _OPENED):
                    import tempfile

                    link_dir = Path(tempfile.mkdtemp(prefix="graphc-lib-"))
                    target = link_dir / f"{path.stem}-{st.st_ino}{path.suffix}"
                    os.symlink(path, target)
                lib = _LIBS[ident] = cls(target, name, cdef, unload)
                lib.ident, lib.link_dir = ident, link_dir
                _OPENED.add((str(path), ident))
            lib.users += 1
            return lib

    def acquire(self) -> None:
        with _LIBS_LOCK:
            self.users += 1

    def release(self) -> None:
        """Give back one use; the last one closes the library (no context of it is left by then)."""
        with _LIBS_LOCK:
            self.users -= 1
            if self.users > 0 or not self.unload:
                return
            if _LIBS.get(self.ident) is self:  # type: ignore[arg-type]
                del _LIBS[self.ident]  # type: ignore[arg-type]
            lib, self.lib = self.lib, None
            if lib is not None:
                self.ffi.dlclose(lib)
            if self.link_dir is not None:
                shutil.rmtree(self.link_dir, ignore_errors=True)


_PINNED: list[Any] = []


def _pin_open_libraries() -> None:
    """At interpreter exit: make every library still open impossible to unmap. Contexts are not destroyed
    then (another thread may still be running one), so their pool workers live on, spinning in the
    library's code for up to ~0.5 ms after a run, while the interpreter's last collection frees cffi's
    library objects, whose dealloc dlcloses: a worker then ran unmapped code (SIGSEGV at exit, seen on a
    busy machine). dlopen with RTLD_NOLOAD | RTLD_NODELETE marks an already loaded library never to be
    unloaded, so those dlclose calls leave it mapped until the process ends."""
    import ctypes

    noload, nodelete = getattr(os, "RTLD_NOLOAD", 0), getattr(os, "RTLD_NODELETE", 0)
    if not (noload and nodelete):  # a platform without them (not glibc / macOS)
        return
    with _LIBS_LOCK:
        paths = [lib.path for lib in _LIBS.values() if lib.lib is not None]
    for path in paths:
        with contextlib.suppress(OSError):
            _PINNED.append(ctypes.CDLL(str(path), mode=noload | nodelete))


atexit.register(_pin_open_libraries)


def _pin_openmp() -> None:
    """Keep the OpenMP runtime a library brought in loaded for good: its idle worker threads run its
    code, so closing the last library that needed it must not unload it under them."""
    if _PINNED:
        return
    import ctypes

    for soname in ("libgomp.so.1", "libomp.so", "libomp.so.5", "libiomp5.so"):
        try:  # RTLD_NOLOAD: only a runtime that is loaded already (one more reference, never closed)
            _PINNED.append(ctypes.CDLL(soname, mode=os.RTLD_NOLOAD | os.RTLD_NOW))
        except OSError:
            continue


def open_libraries() -> int:
    """How many compiled libraries this process has open (each closes with its last model/context)."""
    with _LIBS_LOCK:
        return len(_LIBS)


def asan_loaded() -> bool:
    """True when AddressSanitizer's runtime is in this process (preloaded, or linked into the program)."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None).__asan_init)
    except (AttributeError, OSError):
        return False


class _Spec:
    """One input or output from the manifest, with the checks precomputed."""

    def __init__(self, d: Mapping[str, Any], dims: Mapping[str, tuple[int, int]]):
        self.name: str = d["name"]
        self.dtype: dtype = as_dtype(d["dtype"])
        self.np = self.dtype.np
        self.shape = [parse_dim(str(s)) for s in d["shape"]]
        self.ndim = len(self.shape)
        self.static = all(isinstance(s, int) for s in self.shape)
        self.fixed = [(i, s) for i, s in enumerate(self.shape) if isinstance(s, int)]
        self.binds = [(i, s.symbols[0]) for i, s in enumerate(self.shape) if isinstance(s, Sym) and s.is_var]
        # a dim declared as a multiple (32 * h, a dynamic image size): h is the size / 32
        self.scaled = [(i, s.terms[0][0][0], s.terms[0][1]) for i, s in enumerate(self.shape)
                       if isinstance(s, Sym) and not s.is_var and len(s.terms) == 1 and len(s.terms[0][0]) == 1
                       and s.terms[0][1] > 1]
        self.exprs = [(i, s) for i, s in enumerate(self.shape) if isinstance(s, Sym) and not s.is_var]
        # each dim of the shape: an int, a dim name, or a polynomial
        self.parts: list[Any] = [s if isinstance(s, int) else (s.symbols[0] if s.is_var else s) for s in self.shape]
        self.simple = not self.exprs
        self.dims: list[int | str] = [s if isinstance(s, int) else str(s) for s in self.shape]
        ranges = [f"{lo} <= {n} <= {hi}" for n, (lo, hi) in dims.items()
                  if any(isinstance(s, Sym) and n in s.symbols for s in self.shape)]
        self.expected = f"{self.dtype.short}[{','.join(str(s) for s in self.shape)}]" + (
            f" with {', '.join(ranges)}" if ranges else "")

    def resolve(self, env: Mapping[str, int]) -> tuple[int, ...]:
        if self.static:
            return tuple(self.parts)
        if self.simple:
            return tuple(p if p.__class__ is int else env[p] for p in self.parts)
        return tuple(s if isinstance(s, int) else evaluate(s, env) for s in self.shape)


class _Context:
    """One NAME_ctx with its lock and reusable argument arrays."""

    def __init__(self, lib: _Library, weights_path: str | None, threads: int | None, map_weights: bool = False):
        ffi = lib.ffi
        self.lib = lib
        out = ffi.new(f"{lib.name}_ctx **")
        err = ffi.new("char[]", 1024)
        path = ffi.NULL if weights_path is None else str(weights_path).encode()
        if map_weights and lib.create_ex is None:
            raise GraphcError(f"lib{lib.name}.so predates NAME_create_ex: it cannot map its weights file "
                              "(compile it again, or open it with map_weights=False)")
        rc = lib.create_ex(out, path, MAP_WEIGHTS, err, 1024) if map_weights else lib.create(out, path, err, 1024)
        if rc != 0:
            raise RuntimeErrorC(f"{lib.name}_create failed: {ffi.string(err).decode(errors='replace')}", rc)
        self.ptr = out[0]
        lib.acquire()
        # destroy, then give the library back: the finalizer holds the library, so it cannot close first;
        # not at interpreter exit (another thread may still be running the context; the OS frees it all)
        fin = weakref.finalize(self, _Context._destroy, lib, self.ptr)
        fin.atexit = False
        self.lock = threading.Lock()
        self.run_v = lib.run_v
        if threads is not None:
            self.set_threads(threads)
        self._args: tuple[Any, Any, Any] | None = None
        self._fast: tuple | None = None
        self.arena: Any = None  # the caller's arena (set_arena), kept alive while the context uses it

    def use_arena(self, buffer: Any) -> None:
        """NAME_set_arena with buffer's memory (None: the context's own arena again); under the lock."""
        lib = self.lib
        if lib.set_arena is None:
            raise GraphcError(f"lib{lib.name}.so predates NAME_set_arena (ABI 4): compile it again")
        if buffer is None:
            rc = lib.set_arena(self.ptr, lib.ffi.NULL, 0)
        else:
            try:
                mem = lib.ffi.from_buffer(buffer, require_writable=True)
            except (BufferError, TypeError, ValueError) as e:
                raise ValueError(f"{lib.name}: the arena must be writable, contiguous memory (a numpy array from "
                                 f"graphc.backend.compiled.aligned_empty): {e}") from None
            rc = lib.set_arena(self.ptr, mem, len(mem))
        if rc != 0:
            raise ValueError(self.error(rc))
        self.arena = buffer

    @staticmethod
    def _destroy(lib: _Library, ptr: Any) -> None:
        try:
            lib.destroy(ptr)
        finally:
            lib.release()

    def args(self, ndims: int, nin: int, nout: int) -> tuple[Any, Any, Any]:
        """Argument arrays reused by every call on this context (filled while holding the lock)."""
        if self._args is None:
            ffi = self.lib.ffi
            self._args = (ffi.new("int64_t[]", max(1, ndims)), ffi.new("void *[]", max(1, nin)),
                          ffi.new("void *[]", max(1, nout)))
        return self._args

    def fast(self, nin: int, nout: int) -> tuple:
        """What CompiledModel._run_fast needs, looked up once: run_v, the context pointer, the argument
        arrays, cffi's backend from_buffer and its char[] type (fill the arrays under the lock)."""
        f = self._fast
        if f is None:
            ffi = self.lib.ffi
            dims, ins, ous = self.args(0, nin, nout)
            f = self._fast = (self.run_v, self.ptr, dims, ins, ous, ffi._backend.from_buffer, ffi.BCharA)
        return f

    def set_threads(self, n: int) -> None:
        rc = self.lib.set_num_threads(self.ptr, int(n))
        if rc != 0:
            raise ValueError(self.error(rc))

    def error(self, rc: int) -> str:
        msg = self.lib.ffi.string(self.lib.last_error(self.ptr)).decode(errors="replace")
        return msg or self.lib.ffi.string(self.lib.status_string(rc)).decode()


class CompiledModel:
    """A model compiled to a shared library. Call it like the module: ``model(x)``."""

    def __init__(self, directory: str | Path, manifest: Mapping[str, Any], lib_path: Path,
                 weights_path: Path | None, *, source_graph: Any = None, threads: int | None = None,
                 cache_hit: bool = False, rebind_weights: Callable[..., dict[str, np.ndarray]] | None = None,
                 map_weights: bool = False):
        """rebind_weights(source graph, state_dict, opt_level, name, fingerprint, *, strict, fallback,
        bake_weights): the optimised graph's parameters for new weights (``export.optimized_weights``),
        which :meth:`load_state_dict` needs. map_weights: the contexts map the weights file instead of
        reading it into memory of their own (NAME_CREATE_MAP_WEIGHTS: no copy, but the file must then not
        be truncated or written in place while they live; graphc's writers replace it atomically)."""
        self.directory = Path(directory)
        self.manifest = dict(manifest)
        self.name: str = manifest["name"]
        self.lib_path = Path(lib_path)
        self.weights_path = weights_path
        self.cache_hit = cache_hit
        self.map_weights = bool(map_weights)
        self._source_graph = source_graph
        self._rebind_weights = rebind_weights
        self.dims: dict[str, tuple[int, int]] = {d["name"]: (d["min"], d["max"]) for d in manifest["dims"]}
        self.inputs = [_Spec(d, self.dims) for d in manifest["inputs"]]
        self.outputs = [_Spec(d, self.dims) for d in manifest["outputs"]]
        self.input_names = [s.name for s in self.inputs]
        self.output_names = [s.name for s in self.outputs]
        self._dim_names = list(self.dims)
        # __call__'s fast path for a model without dynamic dims: per input its dtype (compared by identity:
        # numpy's builtin dtypes are singletons), shape and C-contiguous strides, per output its shape and
        # dtype; an input that differs in any of them takes the full check (_check), which explains it
        self._fast: tuple[list[tuple[Any, tuple, tuple]], list[tuple[tuple, Any]]] | None = None
        if not self.dims and all(sp.static for sp in [*self.inputs, *self.outputs]):
            def c_strides(shape: tuple, itemsize: int) -> tuple:
                st, acc = [], itemsize
                for d in reversed(shape):
                    st.append(acc)
                    acc *= d
                return tuple(reversed(st))

            self._fast = ([(np.dtype(sp.np), tuple(sp.parts), c_strides(tuple(sp.parts), np.dtype(sp.np).itemsize))
                           for sp in self.inputs], [(tuple(sp.parts), np.dtype(sp.np)) for sp in self.outputs])
        # the same for a model of one input and one output: (dtype, shape, strides, output shape, dtype)
        self._fast1: tuple[Any, tuple, tuple, tuple, Any] | None = None
        if self._fast is not None and len(self._fast[0]) == 1 and len(self._fast[1]) == 1:
            self._fast1 = (*self._fast[0][0], *self._fast[1][0])
        self._cdef = (self.directory / f"{self.name}_cffi.h").read_text()
        self.sanitized = bool(self.manifest.get("options", {}).get("sanitize"))
        self._lib_value: _Library | None = None
        self._threads = threads
        self.backend: str = self.manifest.get("options", {}).get("backend", DEFAULT_BACKEND)
        self._unload = backend_class(self.backend).unload_on_release
        if not self.sanitized or asan_loaded():
            self._hold(_Library.open(self.lib_path, self.name, self._cdef, self._unload))
        self._ctx_value: _Context | None = None
        self._ctx_lock = threading.Lock()
        if backend_class(self.backend).context_at_open and self._lib_value is not None:
            self._ctx = self._new_context(threads)

    @property
    def _lib(self) -> _Library:
        lib = self._lib_value
        if lib is None:
            if self.sanitized and not asan_loaded():
                raise GraphcError(
                    f"lib{self.name}.so is a sanitizer build (sanitize=True): it loads only where AddressSanitizer's "
                    "runtime comes first, so it is not opened in this process. Run the exported folder's main "
                    f"(cd {self.directory} && make && ./main), or Python with LD_PRELOAD=$(gcc "
                    "-print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0")
            with _LIBS_LOCK:
                lib = self._lib_value
                if lib is None:
                    lib = self._hold(_Library.open(self.lib_path, self.name, self._cdef, self._unload))
        return lib

    def _hold(self, lib: _Library) -> _Library:
        """Keep one use of lib (opened or acquired for this object) until this object is gone."""
        self._lib_value = lib
        fin = weakref.finalize(self, lib.release)
        fin.atexit = False
        return lib

    def _new_context(self, threads: int | None) -> _Context:
        return _Context(self._lib, None if self.weights_path is None else str(self.weights_path), threads,
                        self.map_weights)

    @property
    def _ctx(self) -> _Context:
        ctx = self._ctx_value
        if ctx is None:
            with self._ctx_lock:
                if self._ctx_value is None:
                    self._ctx_value = self._new_context(self._threads)
                ctx = self._ctx_value
        return ctx

    @_ctx.setter
    def _ctx(self, ctx: _Context) -> None:
        self._ctx_value = ctx

    # ------------------------------------------------------------------------------ information
    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def abi_version(self) -> int:
        """The revision of graphc's C ABI the library implements (its NAME_abi_version())."""
        return self._lib.abi_version

    @property
    def version(self) -> str:
        """The graphc release that generated the library (its NAME_version())."""
        return self._lib.version

    @property
    def isa(self) -> str:
        """The instruction-set level the library's kernels run at on this CPU: "generic", "avx2" or
        "avx512" (target "default", lowered by $GRAPHC_ISA), "fixed" (a one-level target), "cuda"."""
        return self._lib.isa

    def enable_profile(self, on: bool = True) -> None:
        """Clear the per-kernel profile and time every kernel of the following calls (False: stop)."""
        with self._ctx.lock:
            rc = self._lib.profile_enable(self._ctx.ptr, int(bool(on)))
            if rc != 0:
                raise RuntimeErrorC(self._lib.ffi.string(self._lib.last_error(self._ctx.ptr)).decode(), rc)

    def profile(self) -> list[dict[str, Any]]:
        """The per-kernel profile since :meth:`enable_profile` (or create with GRAPHC_PROFILE=1): one
        dict per kernel in schedule order with its C function, module path, ops, seconds per run, share of
        the kernels' total, GFLOP/s and GB/s, and ``runs``."""
        ffi, lib = self._lib.ffi, self._lib
        name, scope, ops = ffi.new("const char **"), ffi.new("const char **"), ffi.new("const char **")
        sec, fl, by = ffi.new("double *"), ffi.new("double *"), ffi.new("double *")
        rows, k = [], 0
        with self._ctx.lock:
            while (runs := lib.profile(self._ctx.ptr, k, name, scope, ops, sec, fl, by)) >= 0:
                rows.append({"kernel": ffi.string(name[0]).decode(), "module": ffi.string(scope[0]).decode(),
                             "op": ffi.string(ops[0]).decode(), "seconds": sec[0], "flops": fl[0], "bytes": by[0],
                             "runs": int(runs)})
                k += 1
        total = sum(r["seconds"] for r in rows) or 1.0
        for r in rows:
            s = r["seconds"] or 1e-30
            r.update(share=r["seconds"] / total, gflops=r["flops"] / s * 1e-9, gbytes=r["bytes"] / s * 1e-9,
                     seconds=r["seconds"] / max(1, r["runs"]))
        return rows

    @property
    def memory_plan(self) -> list[dict[str, Any]]:
        """The arena layout: value, node, byte offset and size (polynomials in the dims), first/last step."""
        return list(self.manifest["memory_plan"]["blocks"])

    def _dims_array(self, dims: Mapping[str, int]) -> Any:
        """dims as the C int64_t[] (a missing dim at its maximum); ValueError for an unknown name or a
        value out of range."""
        for name, value in dims.items():
            if name not in self.dims:
                raise ValueError(f"{self.name} has no dynamic dim {name!r}; its dims are {self._dim_names}")
            lo, hi = self.dims[name]
            if not lo <= int(value) <= hi:
                raise ValueError(f"{self.name}: dim {name}={value} is outside {lo}..{hi}")
        return self._lib.ffi.new("int64_t[]", [int(dims.get(n, self.dims[n][1])) for n in self._dim_names] or [0])

    def arena_bytes(self, **dims: int) -> int:
        """Bytes of the arena a run with these dims uses at the default thread count (a dim not given:
        its maximum); ValueError for a dim out of its range."""
        return int(self._lib.arena_bytes(self._dims_array(dims)))

    def context_arena_bytes(self, **dims: int) -> int:
        """Bytes of the arena a run of this model's context with these dims needs (its thread count)."""
        lib = self._lib
        if lib.context_arena_bytes is None:
            return self.arena_bytes(**dims)
        vals = self._dims_array(dims)
        with self._ctx.lock:
            return int(lib.context_arena_bytes(self._ctx.ptr, vals))

    @property
    def arena_capacity(self) -> int:
        """Bytes the context's arena holds now: its runs grow it to the largest dims run so far (0 before
        the first run), or the size of the buffer given to :meth:`set_arena`."""
        lib = self._lib
        if lib.arena_capacity is None:  # before ABI 4: allocated by create for the dims' maxima
            return self.arena_bytes()
        with self._ctx.lock:
            return int(lib.arena_capacity(self._ctx.ptr))

    def set_arena(self, buffer: Any) -> None:
        """Run in the caller's memory: buffer is a writable, C-contiguous object of the buffer protocol (a
        numpy array) starting at a 64-byte boundary (:func:`aligned_empty` makes one); the context keeps
        a reference to it. Then no call allocates an arena, and a call whose dims need more than its
        bytes (:meth:`context_arena_bytes`) raises :class:`RuntimeErrorC` without writing anything.
        None gives the context its own arena again. The model's context only: :meth:`new_context`
        and :meth:`load_state_dict` make contexts with their own (load_state_dict moves the buffer to
        the new context). A CUDA library takes device memory: call its NAME_set_arena from C."""
        if not backend_class(self.backend).host_arena:
            raise GraphcError(f"{self.name}: a {self.backend} library's arena is device memory; call "
                              f"{self.name}_set_arena from C with a device pointer")
        ctx = self._ctx
        with ctx.lock:
            ctx.use_arena(buffer)

    @property
    def sources(self) -> dict[str, str]:
        """The generated C files (name -> text)."""
        return {n: (self.directory / n).read_text() for n in self.manifest["files"]["sources"]}

    @property
    def num_threads(self) -> int:
        return int(self._lib.get_num_threads(self._ctx.ptr))

    def get_num_threads(self) -> int:
        return self.num_threads

    def set_num_threads(self, n: int) -> None:
        with self._ctx.lock:
            self._ctx.set_threads(n)

    def new_context(self, threads: int | None = None) -> CompiledModel:
        """The same library with its own context (own arena and lock): for running in parallel."""
        other = object.__new__(CompiledModel)
        other.__dict__.update(self.__dict__)
        if self._lib_value is not None:
            self._lib_value.acquire()
            other._hold(self._lib_value)
        other._ctx_lock = threading.Lock()
        other._ctx = self._new_context(threads if threads is not None else self._threads)
        return other

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}: {s.expected}" for s in self.inputs)
        outs = ", ".join(f"{s.name}: {s.expected}" for s in self.outputs)
        return f"<CompiledModel {self.name}({ins}) -> ({outs}) at {self.directory}>"

    # ------------------------------------------------------------------------------ calling
    def _check(self, args: tuple) -> tuple[list[np.ndarray], dict[str, int]]:
        if len(args) != len(self.inputs):
            raise ValueError(f"{self.name} takes {len(self.inputs)} input(s) ({', '.join(self.input_names)}), "
                             f"got {len(args)}")
        arrays = list(args)
        env: dict[str, int] = {}
        dims = self.dims
        for k, spec in enumerate(self.inputs):
            a = arrays[k]
            if a.__class__ is not np.ndarray:
                a = self._as_array(spec, a)
            if a.dtype != spec.np or a.ndim != spec.ndim:
                raise self._bad(spec, a)
            shape = a.shape
            for i, want in spec.fixed:
                if shape[i] != want:
                    raise self._bad(spec, a)
            for i, sym in spec.binds:
                n = shape[i]
                prev = env.get(sym)
                if prev is None:
                    lo, hi = dims[sym]
                    if not lo <= n <= hi:
                        raise ValueError(f"input '{spec.name}': dim {sym}={n} is outside {lo}..{hi}; "
                                         f"expected {spec.expected}")
                    env[sym] = n
                elif prev != n:
                    raise ValueError(f"input '{spec.name}': dim {i} is {n} but dynamic dim {sym} is {prev} "
                                     f"from an earlier input")
            for i, sym, coef in spec.scaled:
                if sym not in env and shape[i] % coef == 0:
                    lo, hi = dims[sym]
                    if not lo <= shape[i] // coef <= hi:
                        raise ValueError(f"input '{spec.name}': dim {i} is {shape[i]}, {sym}={shape[i] // coef} "
                                         f"is outside {lo}..{hi}; expected {spec.expected}")
                    env[sym] = shape[i] // coef
            if not (a.flags.c_contiguous and a.flags.aligned):
                a = aligned_copy(a)
            arrays[k] = a
        if len(env) != len(dims):
            missing = [n for n in dims if n not in env]
            raise ValueError(f"dynamic dim(s) {', '.join(missing)} are not the size of any input dim and cannot "
                             "be inferred")
        for spec, a in zip(self.inputs, arrays):
            for i, poly in spec.exprs:
                if a.shape[i] != evaluate(poly, env):
                    raise self._bad(spec, a)
        return arrays, env

    def _bind(self, args: tuple, kwargs: Mapping[str, Any]) -> tuple:
        """Positional and keyword inputs -> the inputs in order (keywords by input name)."""
        names = self.input_names
        if len(args) > len(names):
            raise TypeError(f"{self.name} takes {len(names)} input(s) ({', '.join(names)}), got {len(args)} "
                            "positional")
        bound: dict[str, Any] = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                raise TypeError(f"{self.name} got an unexpected keyword argument {key!r}"
                                + (f" (did you mean {near[0]!r}?)" if near else "") + f"; its inputs are {names}")
            if key in bound:
                raise TypeError(f"{self.name} got multiple values for input {key!r} (positional "
                                f"{names.index(key) + 1} and keyword)")
            bound[key] = value
        missing = [n for n in names if n not in bound]
        if missing:
            raise TypeError(f"{self.name} is missing input(s) {missing}; its inputs are {names}")
        return tuple(bound[n] for n in names)

    @staticmethod
    def _as_array(spec: _Spec, a: Any) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        if hasattr(a, "_concrete"):  # graphc.Tensor
            return a._concrete(f"input '{spec.name}'")
        if type(a).__module__.startswith("torch"):
            return np.asarray(a.detach().cpu().numpy())
        return np.asarray(a, dtype=spec.np)

    def _bad(self, spec: _Spec, a: np.ndarray) -> ValueError:
        return ValueError(f"input '{spec.name}': expected {spec.expected}, got {a.dtype} array of shape "
                          f"{tuple(a.shape)}")

    def _run(self, arrays: list[np.ndarray], env: dict[str, int], ctx: _Context | None = None) -> list[np.ndarray]:
        ctx = ctx or self._ctx
        from_buffer = self._lib.ffi.from_buffer
        outs = [np.empty(s.resolve(env), dtype=s.np) for s in self.outputs]
        keep = [from_buffer(a) for a in arrays] + [from_buffer(o) for o in outs]
        nin = len(arrays)
        with ctx.lock:
            dims, ins, ous = ctx.args(len(self._dim_names), nin, len(outs))
            for k, name in enumerate(self._dim_names):
                dims[k] = env[name]
            for k in range(nin):
                ins[k] = keep[k]
            for k in range(len(outs)):
                ous[k] = keep[nin + k]
            rc = ctx.run_v(ctx.ptr, dims, ins, ous)
            if rc != 0:
                raise RuntimeErrorC(f"{self.name}: {ctx.error(rc)}", rc)
        return outs

    def _run_fast(self, args: tuple) -> list[np.ndarray] | None:
        """Run on positional numpy inputs of exactly the static dtypes, shapes and C strides, with nothing
        validated twice: the outputs, else None when an input differs or the run fails (the caller then
        takes the full path, which copies a misaligned input, or raises the error).

        The per-call cost is what the C run needs and little more (a one-add model: 1.2 us per call from
        Python against 0.5 us for the bare cffi call of run_v, AMD EPYC Zen 4): the checks compare
        against precomputed tuples, the argument arrays and the run function are the context's
        (``_Context.fast``), and the pointers come from cffi's backend ``from_buffer`` without its Python
        wrapper. The cdata of a buffer is not kept: the arrays it points into (the caller's inputs, the new
        outputs) outlive the call."""
        ins_spec, outs_spec = self._fast  # type: ignore[misc]
        for a, (dt, shape, strides) in zip(args, ins_spec):
            if a.__class__ is not np.ndarray or a.dtype is not dt or a.shape != shape or a.strides != strides:
                return None
        ctx = self._ctx_value or self._ctx
        run_v, ptr, dims, ins, ous, from_buffer, char_array = ctx.fast(len(args), len(outs_spec))
        outs = [np.empty(shape, dt) for shape, dt in outs_spec]
        with ctx.lock:
            for k, a in enumerate(args):
                ins[k] = from_buffer(char_array, a, False)
            for k, o in enumerate(outs):
                ous[k] = from_buffer(char_array, o, True)
            rc = run_v(ptr, dims, ins, ous)
        return outs if rc == 0 else None

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Run on inputs given positionally and/or by input name (``model(x, scale=s)``; numpy arrays,
        graphc Tensors or torch CPU tensors); one output -> array, else a tuple. An unknown, missing or
        twice-given input name is a TypeError naming it and the inputs."""
        one = self._fast1
        if one is not None and len(args) == 1 and not kwargs:
            # _run_fast for one input and one output, inlined (0.4 us less per call)
            a = args[0]
            dt, shape, strides, out_shape, out_dt = one
            if a.__class__ is np.ndarray and a.dtype is dt and a.shape == shape and a.strides == strides:
                ctx = self._ctx_value or self._ctx
                run_v, ptr, dims, ins, ous, from_buffer, char_array = ctx._fast or ctx.fast(1, 1)
                out = np.empty(out_shape, out_dt)
                with ctx.lock:
                    ins[0] = from_buffer(char_array, a, False)
                    ous[0] = from_buffer(char_array, out, True)
                    rc = run_v(ptr, dims, ins, ous)
                if rc == 0:
                    return out
        elif self._fast is not None and not kwargs and len(args) == len(self._fast[0]):
            outs = self._run_fast(args)
            if outs is not None:
                return outs[0] if len(outs) == 1 else tuple(outs)
        if kwargs:
            args = self._bind(args, kwargs)
        arrays, env = self._check(args)
        outs = self._run(arrays, env)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, **named: Any) -> dict[str, np.ndarray]:
        """Run on inputs given by name; returns {output name: array}."""
        unknown = set(named) - set(self.input_names)
        missing = [n for n in self.input_names if n not in named]
        if unknown or missing:
            raise ValueError(f"{self.name}: " + "; ".join(
                ([f"unknown input(s) {sorted(unknown)}"] if unknown else [])
                + ([f"missing input(s) {missing}"] if missing else [])) + f" (inputs: {self.input_names})")
        arrays, env = self._check(tuple(named[n] for n in self.input_names))
        return dict(zip(self.output_names, self._run(arrays, env)))

    # ------------------------------------------------------------------------------ new weights
    def source_graph(self) -> Any:
        if self._source_graph is None:
            from ..ir import parse

            path = self.directory / f"{self.name}.source.gir"
            self._source_graph = parse(path.read_text(), source=str(path))
        return self._source_graph

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load new weights of the same shapes without recompiling: the source graph is optimised again
        with them, a new weights file is written and the context re-created."""
        if self._rebind_weights is None:
            raise GraphcError(f"{self.name}: this model was opened without the compiler's weights step; open it "
                              "with graphc.load_compiled to load a state_dict")
        src = self.source_graph()
        opt = self.manifest["options"]
        current = self.weights_path
        params = self._rebind_weights(src, state_dict, opt["opt_level"], self.name, self.fingerprint,
                                    strict=strict, fallback=current, bake_weights=opt["weights"] == "embed")
        target = self._weights_target()
        from .weights import record_weights_file, weights_metadata, write_safetensors

        write_safetensors(target, params, weights_metadata(self.name, self.fingerprint))
        if self.manifest.get("exported"):  # the export folder uses the new weights from now on
            self.manifest = record_weights_file(self.directory, target.name) or self.manifest
        ctx = _Context(self._lib, str(target), self._threads, self.map_weights)
        old = self._ctx_value
        if old is None:
            self._ctx, self.weights_path = ctx, target
            return
        with old.lock:
            if old.arena is not None:  # the caller's arena moves to the new context (never two at once)
                buffer = old.arena
                old.use_arena(None)
                with ctx.lock:
                    ctx.use_arena(buffer)
            self._ctx = ctx
            self.weights_path = target

    def _weights_target(self) -> Path:
        if self.manifest.get("exported"):
            return self.directory / f"{self.name}.safetensors"
        import uuid

        from .build import CACHE_LAYOUT, IN_USE, default_cache_dir

        cache = Path(self.manifest.get("cache_dir") or default_cache_dir())
        path = cache / CACHE_LAYOUT / "weights" / f"{self.name}-{uuid.uuid4().hex}.safetensors"
        IN_USE.add(str(path))  # the size cap never removes it from under this process
        return path


def aligned_copy(a: np.ndarray, align: int = ALIGN) -> np.ndarray:
    """A C-contiguous copy of a whose data starts at a multiple of align bytes."""
    nbytes = a.size * a.itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    out = raw[start:start + nbytes].view(a.dtype).reshape(a.shape)
    np.copyto(out, a)
    return out


def aligned_empty(nbytes: int, align: int = ALIGN) -> np.ndarray:
    """nbytes uninitialised uint8 whose data starts at a multiple of align bytes (for set_arena)."""
    raw = np.empty(int(nbytes) + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + int(nbytes)]


def profile_table(rows: list[dict[str, Any]], top: int | None = None, markdown: bool = False) -> str:
    """A CompiledModel.profile() as text (or a markdown table), the most expensive kernels first."""
    order = sorted(rows, key=lambda r: -r["seconds"])[:top]
    head = ("us/run", "share", "GFLOP/s", "GB/s", "kernel", "op", "module")
    cells = [(f"{r['seconds'] * 1e6:.1f}", f"{100 * r['share']:.1f}%", f"{r['gflops']:.2f}", f"{r['gbytes']:.2f}",
              r["kernel"], r["op"], r["module"] or "-") for r in order]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * 4 + "---|---|---|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(x) for x in col) for col in zip(head, *cells)]
    fmt = lambda row: "  ".join(x.rjust(w) if i < 4 else x.ljust(w) for i, (x, w) in enumerate(zip(row, widths)))  # noqa: E731
    return "\n".join(fmt(r).rstrip() for r in [head, *cells])

