"""What every code-generating backend shares: the naming namespace and the Backend base class.

A backend is a folder of jinja2 templates (``templates/<name>/``) plus a small class of dialect knobs —
type names, literal spelling, math-function spelling, how an elementwise op prints, file suffixes,
thread pragmas — in the spirit of tinygrad's ``CStyleLanguage``. The lowering (``lowering.py``), the
per-family analysis (``analysis.py``) and the data-movement rules (``common.py``) are shared; the op
rules live in a table keyed by op family (``lowerings``, the registry's ``OpDef.family``) that starts
from ``common.COMMON_LOWERINGS`` and adds a rule per family (``op_lowerings``: one op of a family
lowered otherwise). The layout of the generated files is :meth:`Backend.render_sources`, driven by the
suffix knobs. ``graphc/backend/cuda.py`` (``templates/cuda/`` + knobs, rules and toolchain) and the
compile-only ``tests/null_backend/`` are such backends. Templates are looked up in the backend's folder
first, then in the templates root, so a backend may include the shared pieces of ``templates/common/``
or extend another backend's template by its path (``{% extends "c/model.h.j2" %}``).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import numpy as np

from .._dtype import dtype
from .._resources import templates_dir
from ..errors import UnsupportedError
from .build import IN_USE, _touch, atomic_write

# ------------------------------------------------------------------------------------- names
_C_KEYWORDS = """
auto break case char const continue default do double else enum extern float for goto if inline int long
register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
_Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local
alignas alignof bool constexpr false nullptr static_assert thread_local true typeof typeof_unqual
asm fortran and and_eq bitand bitor catch char8_t char16_t char32_t class compl concept consteval constinit
const_cast co_await co_return co_yield decltype delete dynamic_cast explicit export friend mutable namespace
new noexcept not not_eq operator or or_eq private protected public reinterpret_cast requires static_cast
template this throw try typeid typename using virtual wchar_t xor xor_eq
"""
_C_LIBRARY = """
NULL size_t ptrdiff_t int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t intptr_t uintptr_t
INT64_C INT64_MIN INT64_MAX INFINITY NAN HUGE_VAL M_PI M_SQRT1_2 errno main
memcpy memset memmove memcmp strcmp strncmp strlen strcpy snprintf printf fprintf puts malloc calloc realloc free
aligned_alloc posix_memalign abort exit stdin stdout stderr FILE
exp expf log logf sqrt sqrtf sin sinf cos cosf tan tanf tanh tanhf erf erff floor floorf ceil ceilf
nearbyint nearbyintf log1p log1pf expm1 expm1f fabs fabsf fmax fmaxf fmin fminf pow powf fmod fmodf
round roundf trunc truncf isnan isinf llabs labs abs
"""
C_RESERVED = frozenset(_C_KEYWORDS.split()) | frozenset(_C_LIBRARY.split())
_BAD = re.compile(r"[^0-9A-Za-z_]+")


def sanitize(candidate: str) -> str:
    """A C identifier close to `candidate`: invalid characters become '_', no leading '_' or digit."""
    s = _BAD.sub("_", candidate)
    s = re.sub(r"_+", "_", s).strip("_")
    if not s:
        s = "v"
    if s[0].isdigit():
        s = "v" + s
    return s[:80]


# Model names become file names (NAME.h beside the host's sources, found through -I), the C prefix of every
# exported symbol (NAME_run) and, upper-cased, of every macro (NAME_OK, NAME_API). So a model name must
# not be, in any letter case (case-insensitive file systems; NAME_OK for "gc" is the runtime's GC_OK):
# a name of the runtime (gc, gcx, graphc, graphc_rt) or under its prefixes or OpenMP's (gc_*, gcx_*,
# graphc_*, omp_*), the name of a C/POSIX/OpenMP/CUDA header that the generated code, the runtime or the
# system headers they pull in include (a NAME.h named stdint.h would shadow <stdint.h>), a compiler
# intrinsics header (*intrin), a C/C++ keyword or a libc name.
_C_HEADERS = """
assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal stdalign stdarg
stdatomic stdbit stdbool stdckdint stddef stdint stdio stdlib stdnoreturn string tgmath threads time uchar
wchar wctype alloca dlfcn endian fcntl features malloc memory pthread sched semaphore strings syscall
unistd omp cuda cuda_runtime cuda_runtime_api cuda_fp16 cuda_bf16 cublas cudnn nvrtc
"""
C_HEADER_NAMES = frozenset(_C_HEADERS.split())
_RUNTIME_NAMES = frozenset({"gc", "gcx", "graphc", "graphc_rt", "omp"})
_RESERVED_PREFIXES = ("gc_", "gcx_", "graphc_", "omp_")
_RESERVED_FOLDED = frozenset(n.lower() for n in C_RESERVED) | C_HEADER_NAMES | _RUNTIME_NAMES


def cmake_quote(value: Any) -> str:
    """A CMake quoted argument holding value (backslash and quote escaped; a generator expression such as
    ``$<$<COMPILE_LANGUAGE:C>:-O3>`` stays one)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def cmake_version(version: str) -> str:
    """graphc's version as CMake's project(VERSION) takes it: its leading numbers (0.1.0.dev3 -> 0.1.0)."""
    m = re.match(r"\d+(\.\d+){0,3}", version or "")
    return m.group(0) if m else "0"


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot name a model (None: it can): not a C identifier, or reserved in any letter case."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,79}", name):
        return "it must be a C identifier: a letter, then letters, digits or '_' (at most 80 characters)"
    low = name.lower()
    if low in _RUNTIME_NAMES or low.startswith(_RESERVED_PREFIXES):
        return "it is the graphc runtime's or OpenMP's name or prefix (gc, gcx, graphc, graphc_rt, omp and gc_*, " \
               "gcx_*, graphc_*, omp_*, in any letter case)"
    if low in C_HEADER_NAMES or low.endswith("intrin"):
        return f"{low}.h is a C library header that NAME.h would shadow"
    if low in _RESERVED_FOLDED:
        return "it is a C/C++ keyword or a C library name (in some letter case)"
    return None


def default_model_name(text: str) -> str:
    """A model name read as the user wrote `text` (a class or file name): lower case, other characters
    '_' (so "GPT" -> "gpt", "ResNet" -> "resnet", "My-Net 2" -> "my_net_2"); "m_" in front of a leading
    digit or a reserved prefix, "_model" after a reserved name ("math" -> "math_model"; "gc" -> "m_gc")."""
    name = re.sub(r"_+", "_", _BAD.sub("_", str(text))).strip("_").lower()[:72] or "model"
    if name[0].isdigit() or name.startswith(_RESERVED_PREFIXES):
        name = "m_" + name
    for candidate in (name, name + "_model", "m_" + name):
        if model_name_problem(candidate) is None:
            return candidate
    return "m_" + name + "_model"


class Namespace:
    """Hands out C identifiers (like torch.fx's ``_Namespace``): sanitised, never a C/C++ keyword, a libc
    name or a reserved prefix (``gc_``, ``gcx_``, ``omp_``), and unique (``name``, ``name_1``, ...).
    Asking again for the same object returns the same name."""

    def __init__(self, reserved: Iterable[str] = ()):
        self._used: set[str] = set(C_RESERVED) | set(reserved)
        self._by_obj: dict[Any, str] = {}

    def name(self, candidate: str, obj: Any = None) -> str:
        if obj is not None and obj in self._by_obj:
            return self._by_obj[obj]
        base = sanitize(candidate)
        if base.startswith(("gc_", "gcx_", "omp_", "GC_")):
            base = "v_" + base
        name, i = base, 1
        while name in self._used:
            name = f"{base}_{i}"
            i += 1
        self._used.add(name)
        if obj is not None:
            self._by_obj[obj] = name
        return name

    def reserve(self, name: str) -> None:
        self._used.add(name)


# ------------------------------------------------------------------------------------- jinja filters
def c_string(s: str) -> str:
    """A C string literal (escaped; non-ASCII as octal escapes)."""
    out = ['"']
    for b in s.encode("utf-8"):
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "?":  # no trigraphs
            out.append("\\?")
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    out.append('"')
    return "".join(out)


def c_comment(s: str) -> str:
    """Text safe inside a /* */ comment."""
    return s.replace("*/", "* /").replace("/*", "/ *")


# ------------------------------------------------------------------------------------- backend
# The revision of the C ABI every backend's libraries share (NAME_ABI_VERSION in the header, returned by
# NAME_abi_version()): it increases with every change of the ABI, a function added included. 1: the ABI
# before it had a number; 2: NAME_abi_version, NAME_version and the version macros; 3: NAME_create reads
# the weights file into memory, NAME_create_ex(..., NAME_CREATE_MAP_WEIGHTS, ...) maps it; 4: the arena is
# sized by the runs (create allocates none), NAME_set_arena, NAME_arena_capacity, NAME_context_arena_bytes,
# NAME_arena_bytes is 0 for dims out of range.
ABI_VERSION = 4
_ENVIRONMENTS: dict[tuple[str, str], jinja2.Environment] = {}

# ------------------------------------------------------------------------------------- template bytecode
# Compiling the templates (jinja2's lexer, parser and code generator) is most of a cached compile's time
# in a fresh process, so their Python bytecode is kept in the compile cache, ``<cache>/v1/templates/``:
# one file per template, named by the sha256 of jinja2's version, the environment's syntax settings and
# the template's path, holding the sha256 of its payload and jinja2's payload (which checks the
# template's source checksum and the Python version itself). A file that does not match its sha256 is
# ignored (the template is compiled again and the file rewritten); files are written atomically.
# compile() names the cache folder for the duration of its codegen (template_cache); elsewhere nothing
# is kept.
_TEMPLATE_CACHE: ContextVar[Path | None] = ContextVar("graphc_template_cache", default=None)
_log = logging.getLogger("graphc.cache")


@contextmanager
def template_cache(folder: Path | None) -> Iterator[None]:
    """Keep the bytecode of the templates compiled meanwhile in `folder` (a cache layout's templates/)."""
    token = _TEMPLATE_CACHE.set(folder)
    try:
        yield
    finally:
        _TEMPLATE_CACHE.reset(token)


class _TemplateBytecode(jinja2.BytecodeCache):
    """jinja2's bytecode of each template, one verified file per template in the current template_cache."""

    def __init__(self, settings: str):
        self._settings = settings
        self._salts: dict[int, bytes] = {}

    def _salt(self, env: jinja2.Environment) -> bytes:
        """What the bytecode depends on besides the template's source: jinja2's version, the syntax settings
        and the filters, tests and globals (jinja2 folds a filter of constants at compile time), by the
        text of the files defining them."""
        salt = self._salts.get(id(env))
        if salt is None:
            h = hashlib.sha256(f"{jinja2.__version__}\0{self._settings}\0".encode())
            for kind, table in (("filter", env.filters), ("test", env.tests), ("global", env.globals)):
                for name in sorted(table):
                    obj = table[name]
                    h.update(f"{kind} {name} {getattr(obj, '__module__', None)}\0".encode())
                    if not callable(obj):
                        h.update(repr(obj).encode())
                    elif not str(getattr(obj, "__module__", "")).startswith("jinja2"):
                        try:
                            h.update(Path(inspect.getsourcefile(obj) or "").read_bytes())
                        except (OSError, TypeError):
                            h.update(repr(obj).encode())
            salt = self._salts[id(env)] = h.digest()
        return salt

    def _path(self, bucket: jinja2.bccache.Bucket) -> Path | None:
        folder = _TEMPLATE_CACHE.get()
        if folder is None:
            return None
        return folder / (hashlib.sha256(self._salt(bucket.environment) + bucket.key.encode()).hexdigest()[:40]
                         + ".jbc")

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        path = self._path(bucket)
        if path is None:
            return
        try:
            data = path.read_bytes()
        except OSError:
            return
        digest, _, payload = data.partition(b"\n")
        if digest != hashlib.sha256(payload).hexdigest().encode():
            _log.warning("graphc compile cache: %s does not match its sha256: compiling the template again", path)
            return
        bucket.bytecode_from_string(payload)
        if bucket.code is not None:
            IN_USE.add(str(path))
            _touch(path)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        path = self._path(bucket)
        if path is None:
            return
        payload = bucket.bytecode_to_string()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
        except OSError as e:  # a read-only cache compiles the templates each time, like no cache
            _log.debug("graphc compile cache: cannot keep %s: %s", path, e)
            return
        IN_USE.add(str(path))


class Backend:
    """A code-generating backend: a templates folder and its dialect knobs."""

    name: ClassVar[str] = "base"
    display_name: ClassVar[str] = "base"  # in messages: "not supported by the C backend: ..."
    template_folder: ClassVar[str] = ""  # templates/<folder>/, or an absolute path (a backend kept outside graphc)
    template_suffix: ClassVar[str] = ".c.j2"
    source_suffix: ClassVar[str] = ".c"
    header_suffix: ClassVar[str] = ".h"
    asm_suffix: ClassVar[str] = ".S"
    # element types by graphc dtype name; a dtype missing here is unsupported by the backend
    type_names: ClassVar[dict[str, str]] = {
        "float32": "float", "float64": "double", "int64": "int64_t", "int32": "int32_t", "int16": "int16_t",
        "int8": "int8_t", "uint8": "uint8_t", "bool": "uint8_t",
    }
    # the gc_dtype / NAME_dtype enumerator of each dtype (mirrors runtime_c/graphc_rt.h)
    dtype_codes: ClassVar[dict[str, str]] = {
        "float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16", "int8": "I8", "int16": "I16",
        "int32": "I32", "int64": "I64", "uint8": "U8", "bool": "BOOL",
    }
    float_suffix: ClassVar[dict[str, str]] = {"float32": "f", "float64": ""}
    # libm functions the registry's scalar formulas spell in their float32 form
    math_functions: ClassVar[frozenset[str]] = frozenset(
        "expf logf log2f sqrtf sinf cosf tanhf erff floorf ceilf nearbyintf log1pf expm1f fabsf powf".split())
    # libm functions every formula may use that the backend provides itself (fmax/fmin propagate NaN like
    # numpy); an op's own helpers (OpDef.helpers: gelu_none, ...) print as gcx_<name>_<dtype> too
    helper_functions: ClassVar[dict[str, str]] = {"fmaxf": "gcx_fmax", "fminf": "gcx_fmin"}
    parallel_min: ClassVar[int] = 32768  # elements of a plain loop worth a parallel region
    # the conv rule prints fused epilogues (KernelBuilder.epilogue, graphc.backend.epilogue)
    conv_epilogues: ClassVar[bool] = False
    # the conv rule honours a channel scale of a 1x1 conv's input (Lowering.conv_scales, conv_input_scales)
    conv_input_scales: ClassVar[bool] = False
    # its sdpa kernel reads q/k/v and writes the output through strides: the permutes and slices around
    # attention are folded into them (graphc/backend/layouts.py)
    sdpa_strides: ClassVar[bool] = False
    # lowering rules by op family (OpDef.family), and the ops of a family this backend lowers otherwise
    lowerings: ClassVar[dict[str, Any]] = {}
    op_lowerings: ClassVar[dict[str, Any]] = {}
    # the runtime_c/ files a library of this backend is built with (None: all of them)
    runtime_sources: ClassVar[tuple[str, ...] | None] = None
    # product ops whose lowering rule applies a fused epilogue (fusion.gemm_epilogues, KernelBuilder.epilogue):
    # a backend lists them only when its rule honours kb.epilogue
    gemm_epilogue_ops: ClassVar[tuple[str, ...]] = ()

    # --------------------------------------------------------------------------------- types
    def ctype(self, dt: dtype) -> str | None:
        return self.type_names.get(dt.name)

    def dtype_code(self, dt: dtype) -> str:
        return self.dtype_codes[dt.name]

    def literal(self, value: Any, dt: dtype) -> str:
        """A C literal of `value` in element type `dt`."""
        if dt.is_floating_point:
            v = float(value)
            if math.isnan(v):
                return "NAN"
            if math.isinf(v):
                return "INFINITY" if v > 0 else "(-INFINITY)"
            if dt.name == "float32":
                s = str(np.float32(v))
            else:
                s = repr(v)
            if not any(c in s for c in ".e"):
                s += ".0"
            s += self.float_suffix.get(dt.name, "")
            return f"({s})" if s.startswith("-") else s
        if dt.name == "bool":
            return "1" if value else "0"
        v = int(value)
        if dt.name == "int64" and v == -(2 ** 63):
            return "INT64_MIN"
        if abs(v) >= 2 ** 31:
            return f"INT64_C({v})" if v >= 0 else f"(-INT64_C({-v}))"
        return str(v) if v >= 0 else f"({v})"

    # --------------------------------------------------------------------------------- lowering
    def lowering_for(self, op: Any) -> Any:
        """The rule lowering an op (an OpDef): its own override, else its family's; None when neither."""
        return self.op_lowerings.get(op.name) or self.lowerings.get(op.family)

    # --------------------------------------------------------------------------------- elementwise
    def lower_group(self, kb: Any, group: Any) -> bool:
        """Lower an elementwise fusion group some other way than the generic loop (a runtime kernel, say);
        False leaves it to the loop (lowering.lower_elementwise)."""
        return False

    def respell(self, fmt: str, dt: dtype, helpers: Iterable[str] = ()) -> str:
        """Adapt a float32 formula from the registry to element type dt (math names, literals, the
        backend's helper functions and the op's own ``helpers``)."""
        own = frozenset(helpers)

        def fn(m: re.Match) -> str:
            name = m.group(1)
            if name in own:
                return f"gcx_{name}_{dt.short}("
            if name in self.helper_functions:
                return f"{self.helper_functions[name]}_{dt.short}("
            if name in self.math_functions and dt.name != "float32":
                return name[:-1] + "("
            return m.group(0)

        out = re.sub(r"\b([A-Za-z_][A-Za-z0-9_]*)\(", fn, fmt)
        if dt.name != "float32":
            suffix = self.float_suffix.get(dt.name, "")
            out = re.sub(r"\b(\d+\.\d*)f\b", lambda m: m.group(1) + suffix, out)
        return out

    def scalar_expr(self, node: Any, args: list[str]) -> str:
        """How an elementwise node prints, given its operands as C expressions."""
        op = node.opdef
        fmt = op.scalar
        if fmt is None:
            raise UnsupportedError(f"op {node.op} has no scalar formula")
        ins = [v for v in node.inputs if v is not None]
        dt = ins[-1].type.dtype if ins else node.out.type.dtype
        special = getattr(self, f"scalar_{fmt}", None) if fmt.isidentifier() else None
        if special is not None:
            return special(node, args, dt)
        if self.ctype(dt) is None:
            raise UnsupportedError(f"no element type for {dt.name}")
        if not dt.is_floating_point and op.integer_scalar is not None:
            fmt = op.integer_scalar
        if not dt.is_floating_point and any(f in fmt for f in self.math_functions):
            raise UnsupportedError(f"no {dt.name} form of {node.op}")
        for k, v in node.attrs.items():  # text attributes name functions (gelu_{approximate})
            if isinstance(v, str):
                fmt = fmt.replace("{" + k + "}", v)
        fmt = self.respell(fmt, dt, op.helpers)
        attrs = {k: self.literal(v, dt) for k, v in node.attrs.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        expr = fmt.format(*args, **attrs)
        if node.out.type.dtype.name == "bool" and op.bool_closed:
            expr = f"({expr} != 0)"
        return expr

    def scalar_cast(self, node: Any, args: list[str], src: dtype) -> str:
        dst = node.out.type.dtype
        if self.ctype(dst) is None or self.ctype(src) is None:
            raise UnsupportedError(f"cast from {src.name} to {dst.name}")
        if dst.name == "bool":
            return f"({args[0]} != 0)"
        return f"(({self.ctype(dst)}){args[0]})"

    def scalar_clamp(self, node: Any, args: list[str], dt: dtype) -> str:
        x = args[0]
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        if dt.is_floating_point:
            if lo is not None:
                x = f"gcx_fmax_{dt.short}({x}, {self.literal(lo, dt)})"
            if hi is not None:
                x = f"gcx_fmin_{dt.short}({x}, {self.literal(hi, dt)})"
            return x
        if lo is not None:
            lv = self.literal(lo, dt)
            x = f"({x} < {lv} ? {lv} : {x})"
        if hi is not None:
            hv = self.literal(hi, dt)
            x = f"({x} > {hv} ? {hv} : {x})"
        return x

    def scalar_remainder(self, node: Any, args: list[str], dt: dtype) -> str:
        if dt.is_floating_point:
            return f"gcx_rem_{dt.short}({args[0]}, {args[1]})"
        return f"gcx_remi({args[0]}, {args[1]})"

    def op_cost(self, op: str) -> int:
        """One element's cost in additions (the registry's OpDef.cost)."""
        from ..ops import get_op

        return get_op(op).cost

    # --------------------------------------------------------------------------------- templates
    @property
    def environment(self) -> jinja2.Environment:
        key = (type(self).__name__, self.template_folder)
        env = _ENVIRONMENTS.get(key)
        if env is None:
            env = _ENVIRONMENTS[key] = self._make_environment()
        return env

    def _make_environment(self) -> jinja2.Environment:
        syntax = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True, "autoescape": False}
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(templates_dir() / self.template_folder), str(templates_dir())]),
            undefined=jinja2.StrictUndefined, bytecode_cache=_TemplateBytecode(repr(sorted(syntax.items()))),
            **syntax)  # type: ignore[arg-type]
        env.filters["cstr"] = c_string
        env.filters["ccomment"] = c_comment
        env.filters["cmake"] = cmake_quote
        env.globals["abi_version"] = ABI_VERSION
        return env

    def render(self, template: str, **context: Any) -> str:
        return self.environment.get_template(template).render(**context)

    # kernels of one translation unit, at most (by rendered characters): keeps each file quick to compile
    unit_chars: ClassVar[int] = 60_000

    def render_kernels(self, program: Any) -> list[str]:
        """Every kernel of the program printed by its template (``k``: the kernel, ``d``: its fields)."""
        return [self.render(k.template, k=k, d=k.data) for k in program.kernels]

    def split_units(self, texts: list[str]) -> list[list[int]]:
        """Kernels per translation unit: consecutive, each unit up to unit_chars (deterministic)."""
        units: list[list[int]] = [[]]
        size = 0
        for i, t in enumerate(texts):
            if units[-1] and size + len(t) > self.unit_chars:
                units.append([])
                size = 0
            units[-1].append(i)
            size += len(t)
        return units

    def render_context(self, program: Any, options: Any) -> dict[str, Any]:
        """What every template of a program sees: ``p`` the program, ``o`` the build options, ``M`` the
        upper-case model name, ``B`` the backend (a backend may add fields)."""
        return {"p": program, "o": options, "M": program.upper, "B": self}

    def render_sources(self, program: Any, options: Any) -> dict[str, str]:
        """All generated files of a program: {file name: text}. From the backend's folder: ``model.h.j2``
        (the ABI header), ``internal<header_suffix>.j2``, ``model<template_suffix>``,
        ``kernels<template_suffix>`` (one translation unit per :meth:`split_units` chunk), ``Makefile.j2``
        and ``cffi.h.j2``; from ``templates/common/``: ``weights.S.j2`` (weights="embed") and ``main.c.j2``."""
        name = program.name
        texts = self.render_kernels(program)
        units = self.split_units(texts)
        ctx = self.render_context(program, options)
        src, files = self.source_suffix, {}
        files[f"{name}.h"] = self.render("model.h.j2", **ctx)
        files[f"{name}_internal{self.header_suffix}"] = self.render(f"internal{self.header_suffix}.j2", **ctx)
        files[f"{name}_model{src}"] = self.render(f"model{self.template_suffix}", **ctx)
        for i, unit in enumerate(units):
            files[f"{name}_kernels{i}{src}"] = self.render(f"kernels{self.template_suffix}", unit=i,
                                                          texts=[texts[j] for j in unit], **ctx)
        custom = self.custom_units(program)
        files.update(custom)
        if options.weights == "embed":
            files[f"{name}_weights{self.asm_suffix}"] = self.render("common/weights.S.j2", **ctx)
        files["main.c"] = self.render("common/main.c.j2", **ctx)
        files["Makefile"] = self.render("Makefile.j2", units=len(units), custom_units=sorted(custom), **ctx)
        files.update(self.render_build_files(program, options, len(units), sorted(custom), ctx))
        files[f"{name}_cffi.h"] = self.render("cffi.h.j2", **ctx)
        return files

    def render_build_files(self, program: Any, options: Any, units: int, custom_units: list[str],
                           ctx: dict[str, Any]) -> dict[str, str]:
        """The build files users integrate, when the backend's folder has their templates:
        ``CMakeLists.txt`` (the target graphc::NAME for add_subdirectory, and find_package after cmake --install)
        and ``NAME.pc`` (pkg-config for the folder itself; the installed one is written by CMake)."""
        folder = templates_dir() / self.template_folder
        files: dict[str, str] = {}
        if (folder / "CMakeLists.txt.j2").exists():
            defines = [f[2:] for f in options.cflags if f.startswith("-D")]
            flags = [f for f in options.cflags if not f.startswith("-D") and f != "-fopenmp"]
            files["CMakeLists.txt"] = self.render(
                "CMakeLists.txt.j2", units=units, custom_units=custom_units, runtime_objects=options.runtime_objects(),
                model_defines=defines, model_options=flags, cmake_version=cmake_version(options.version), **ctx)
        if (folder / "pkgconfig.pc.j2").exists():
            files[f"{program.name}.pc"] = self.render("pkgconfig.pc.j2", cmake_version=cmake_version(options.version),
                                                      **ctx)
        return files

    def custom_units(self, program: Any) -> dict[str, str]:
        """The translation units of the custom ops the program calls (graphc.library), from
        ``custom_unit<template_suffix>``: {file name: text}."""
        from ..library import render_units

        return render_units(self, program)

    # --------------------------------------------------------------------------------- toolchain
    # The defaults build with the C compiler (``build.compiler()``) like the C backend; a backend with
    # another compiler overrides the commands, its flags and what it adds to the cache key.
    description: ClassVar[str] = ""  # the CLI's --backend help
    # options of compile() that only this backend takes (compile(..., arch=...) for CUDA)
    option_names: ClassVar[frozenset[str]] = frozenset()
    sanitizer_builds: ClassVar[bool] = False  # compile(..., sanitize=True) builds an ASan/UBSan library
    context_at_open: ClassVar[bool] = True  # a context is created when the library is opened (else at the first call)
    # the Python loader closes (dlcloses) a library when its last model and context are gone
    unload_on_release: ClassVar[bool] = True
    # NAME_set_arena takes host memory (CompiledModel.set_arena hands it a numpy buffer); False: device memory
    host_arena: ClassVar[bool] = True

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse a backend option (arch=...) given to a backend that does not take it."""
        from .registry import BACKENDS, backend_names

        backend_names()  # every backend registered, for the message
        for key, value in options.items():
            if value is not None and key not in self.option_names:
                owners = [b.display_name for b in BACKENDS.values() if key in b.option_names]
                raise ValueError(f"{key} is an option of the {' / '.join(owners) or 'no'} backend, not of backend "
                                 f"{self.name!r}")

    def build_options(self, *, name: str, weights: str, opt_level: int, target: str, threads: int | None,
                      version: str, **options: Any) -> Any:
        """The :class:`~graphc.backend.build.BuildOptions` of a compile (flags, runtime files, knobs)."""
        from .build import BuildOptions, cflags, ldflags

        self.check_options(options)
        return BuildOptions(name=name, weights=weights, opt_level=opt_level, target=target, threads=threads,
                            version=version, cflags=cflags(target, opt_level), ldflags=ldflags(), backend=self.name,
                            runtime_sources=self._runtime_list())

    def _runtime_list(self) -> list[str] | None:
        return list(self.runtime_sources) if self.runtime_sources is not None else None

    def manifest_options(self, options: Any) -> dict[str, Any]:
        """What this backend adds to manifest.json's "options"."""
        return {}

    def cache_key_parts(self, options: Any) -> list[str]:
        """What a library's cache key adds to the C compiler, its flags and the sources (other tools)."""
        return []

    @property
    def unit_suffixes(self) -> tuple[str, ...]:
        """Generated files that are translation units of the library."""
        return (".c", self.asm_suffix, self.source_suffix)

    def compile_command(self, unit: str, cc: list[str], flags: list[str], options: Any) -> tuple[list[str], str]:
        """(command, tool name) compiling one generated unit into ``unit + ".o"`` in the build folder."""
        return [*cc, *flags, "-I.", "-Iruntime", "-c", unit, "-o", unit + ".o"], "C compiler"

    def link_command(self, lib: str, objs: list[str], cc: list[str], flags: list[str],
                     options: Any) -> tuple[list[str], str]:
        """(command, tool name) linking the objects into the shared library ``lib``."""
        return [*cc, "-shared", *flags, "-o", lib, *objs, *options.ldflags, f"-Wl,-soname,{lib}"], "C compiler"
