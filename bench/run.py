"""Time graphc's compiled libraries against PyTorch eager, ONNX Runtime and numpy, side by side.

    python bench/run.py                          # every model, 1 and 2 threads -> bench/results.md
    python bench/run.py --models mlp_b1,lenet --threads 1
    python bench/run.py --busy                   # the same with one busy neighbour process -> results-busy.md
    python bench/run.py --imported --models resnet18,bert_layer --threads 1
                                                 # graphc.nn twin vs from_torch vs from_onnx -> a section of
                                                 # bench/results.md

The models (bench/models.py) are written once against a torch-like API and built with graphc.nn and
torch.nn; the torch model's weights (random, BatchNorm statistics included) are loaded into the graphc
one. graphc compiles it (target "default"), PyTorch runs it eagerly under inference_mode, ONNX Runtime
runs the torch model exported to ONNX (all graph optimisations on), numpy runs the MLP by hand.

Each thread count runs in a fresh worker process whose OMP/OpenBLAS/MKL thread counts are set before
anything starts. Within a worker the runners of a model take turns, burst by burst (about 20 ms each,
"rounds" times), so a busy spell on the shared machine hits them alike; before each burst the worker
waits until its own threads are idle (a peer's pool spinning after its burst would hold a core: ONNX
Runtime's for about 40 ms) and makes one untimed call; a runner's time is the median
per-call time of its bursts and the ratios (peer / graphc, above 1: graphc is faster) come from the same
run. Then: compile times, arena against its lower bound (the largest sum of simultaneously live
intermediates and the scratch of the kernel running then), library size, resident memory each runner
added, graphc's per-kernel profile, and bench_gemm.py's GEMM table with % of numpy and of the machine's
peak FMA rate. Nothing asserts on timings.

With --imported each model is compiled three ways: the graphc.nn model, the torch model through
graphc.from_torch and its ONNX export (the file ONNX Runtime runs) through graphc.from_onnx, all with the
same weights; the three libraries take turns as above, and the table gives their times, ratios, kernel
counts and largest difference from the graphc.nn library. It replaces only its own section of the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PEERS = ("torch", "onnxruntime", "numpy")
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from models import MODELS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated names from bench/models.py")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=9, help="bursts per runner (default 9)")
    p.add_argument("--burst", type=float, default=0.02, help="seconds per burst (default 0.02)")
    p.add_argument("--busy", action="store_true", help="run with one busy neighbour process")
    p.add_argument("--no-gemm", action="store_true", help="skip the GEMM micro-benchmark")
    p.add_argument("--out", default=None, help="markdown file (default bench/results.md, -busy.md with --busy)")
    p.add_argument("--build-dir", default=None, help="ONNX files and graphc exports (default: a temp dir)")
    p.add_argument("--imported", action="store_true",
                   help="time the graphc.nn model against the same model through from_torch and from_onnx")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- machine
def cpu_info() -> tuple[str, list[str], float]:
    """CPU model, its ISA flags of interest and its clock in MHz, from /proc/cpuinfo."""
    model, flags, mhz = platform.processor() or platform.machine(), [], 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.processor(), platform.machine()):
                model = val.strip()
            elif key == "flags" and not flags:
                have = set(val.split())
                flags = [f for f in ISA_FLAGS if f in have]
            elif key == "cpu MHz" and not mhz:
                mhz = float(val)
    except OSError:
        pass
    return model, flags, mhz


def peak_gflops_per_core(flags: list[str], mhz: float) -> float:
    """FMA peak of one core: two FMA pipes x vector width x 2 flops x clock (the nominal clock)."""
    width = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    return 2 * width * 2 * mhz / 1e3


FMA_LOOP = r"""
#include <stdio.h>
#include <time.h>
typedef float v __attribute__((vector_size(VW * 4)));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char **argv) {
    (void)argv;
    v b, c;
    for (int i = 0; i < VW; i++) { b[i] = 0.999999f + argc * 1e-9f; c[i] = 1e-7f; }
    v a0 = b, a1 = b * 2, a2 = b * 3, a3 = b * 4, a4 = b * 5, a5 = b * 6, a6 = b * 7, a7 = b * 8, a8 = b * 9,
      a9 = b * 10, a10 = b * 11, a11 = b * 12;
    double best = 0;
    for (int rep = 0; rep < 7; rep++) {
        const long n = 40000000 / VW;
        const double t0 = now();
        for (long k = 0; k < n; k++) {
            a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c;
            a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c; a8 = a8 * b + c; a9 = a9 * b + c;
            a10 = a10 * b + c; a11 = a11 * b + c;
        }
        const double g = 2.0 * 12 * VW * n / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    v s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    printf("%.2f %g\n", best, (double)s[0]);
    return 0;
}
"""


def measured_fma_peak(flags: list[str]) -> float | None:
    """GFLOP/s of one core running 12 independent chains of vector FMAs at the widest ISA the CPU has (a
    C loop built with gcc): the clock the machine actually gives and the FMA throughput its cores have
    (AMD Zen 4 runs 512-bit FMAs at the 256-bit rate, which a nominal count from the ISA flags misses).
    None without gcc."""
    vw, isa = (16, ["-mavx512f", "-mfma"]) if "avx512f" in flags else (8, ["-mavx2", "-mfma"]) if "avx2" in flags \
        else (4, [])
    with tempfile.TemporaryDirectory(prefix="graphc-peak-") as d:
        src, exe = Path(d) / "fma.c", Path(d) / "fma"
        src.write_text(FMA_LOOP)
        try:
            subprocess.run(["gcc", "-O2", *isa, f"-DVW={vw}", str(src), "-o", str(exe)], check=True,
                           capture_output=True, timeout=60)
            out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=60).stdout
            return float(out.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None


def versions() -> str:
    import numpy as np

    import graphc

    out = [f"graphc {graphc.__version__}", f"numpy {np.__version__}"]
    for mod in ("torch", "onnxruntime", "onnx"):
        try:
            out.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return f"Python {platform.python_version()}, " + ", ".join(out)


def rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------- runners
def kernel_work_bytes(folder: Path, manifest: dict[str, Any], isa: str, nthreads: int) -> dict[int, int] | None:
    """The bytes of runtime-sized scratch each step's kernel takes (its NAME_work(nthreads) floats), from a
    small program built from the library's sources for the ISA the library runs (static models only:
    None when a kernel takes a dim, when the sources are not there or when the compiler fails)."""
    import subprocess
    import tempfile

    work = manifest["memory_plan"].get("work", [])
    if not work:
        return {}
    if manifest.get("dims"):
        return None
    name = manifest["name"]
    march = {"generic": "x86-64-v2", "avx2": "x86-64-v3", "avx512": "x86-64-v4"}.get(isa, "native")
    units = sorted(folder.glob(f"{name}_kernels*.c"))
    runtime = sorted((folder / "runtime").glob("*.c"))
    if not units or not runtime or not (folder / f"{name}_internal.h").exists():
        return None
    lines = ["#include <stdio.h>", f'#include "{name}_internal.h"', "int main(void)", "{"]
    lines += [f'    printf("%zu\\n", {w["kernel"]}_work({nthreads}));' for w in work]
    lines += ["    return 0;", "}"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "work_sizes.c"
        src.write_text("\n".join(lines) + "\n")
        exe = Path(tmp) / "work_sizes"
        cmd = ["cc", "-O0", "-std=gnu11", "-fopenmp", f"-march={march}", '-DGC_REQUIRED_ISA=""', f"-I{folder}",
               f"-I{folder / 'runtime'}", str(src), *map(str, units), *map(str, runtime), "-lm", "-o", str(exe)]
        if subprocess.run(cmd, capture_output=True).returncode:
            return None
        out = subprocess.run([str(exe)], capture_output=True, text=True)
        if out.returncode:
            return None
    sizes = [int(x) * 4 for x in out.stdout.split()]
    steps: dict[int, int] = {}
    for w, size in zip(work, sizes):
        steps[int(w["step"])] = max(steps.get(int(w["step"]), 0), size)
    return steps


def arena_lower_bound(manifest: dict[str, Any], work: dict[int, int] | None = None) -> int | None:
    """The largest sum of the intermediates live at one step and the scratch of that step's kernel
    (``work``: step -> bytes, kernel_work_bytes; static models: None when sizes are symbolic)."""
    blocks = manifest["memory_plan"]["blocks"]
    try:
        spans = [(int(b["first"]), int(b["last"]), int(str(b["size"]))) for b in blocks]
    except (KeyError, ValueError):
        return None
    work = work or {}
    if not spans and not work:
        return 0
    last = max([s[1] for s in spans] + list(work))
    return max(sum(sz for f, la, sz in spans if f <= step <= la) + work.get(step, 0) for step in range(last + 1))


def numpy_mlp(state: dict[str, Any]) -> Callable[..., Any]:
    import numpy as np

    w = [(np.ascontiguousarray(state[f"{i}.weight"].T), state[f"{i}.bias"]) for i in (0, 2, 4)]

    def forward(x: Any) -> Any:
        h = np.maximum(x @ w[0][0] + w[0][1], 0)
        h = np.maximum(h @ w[1][0] + w[1][1], 0)
        return h @ w[2][0] + w[2][1]

    return forward


def export_onnx(tm: Any, xs: list[Any], path: Path) -> None:
    import logging
    import warnings

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tm, tuple(torch.from_numpy(x) for x in xs), str(path), dynamo=False,
                          input_names=[f"in{i}" for i in range(len(xs))], output_names=["out"], opset_version=17)


def first(out: Any) -> Any:
    import numpy as np

    if isinstance(out, dict):
        out = next(iter(out.values()))
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "detach"):
        out = out.detach().numpy()
    return np.asarray(out)


def build_runners(name: str, threads: int, build_dir: Path, cache_dir: Path) -> tuple[dict, dict]:
    """The runner of each peer for one model, and facts about the graphc build."""
    import numpy as np
    import torch
    from models import MODELS

    import graphc

    spec = MODELS[name]
    rng = np.random.default_rng(0)
    xs = spec.inputs(rng)
    torch.manual_seed(0)
    tm = spec.build(torch.nn, torch.nn.functional).eval()
    for mod in tm.modules():  # BatchNorm statistics that are not the identity
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    state = {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}
    gm = spec.build(graphc.nn, graphc.nn.functional)
    gm.load_state_dict(state)
    gm.eval()
    facts: dict[str, Any] = {}
    runners: dict[str, Callable[..., Any] | None] = {}
    reasons: dict[str, str] = {}

    rss0 = rss_bytes()
    t0 = time.perf_counter()
    cm = graphc.compile(gm, tuple(xs), threads=threads, cache_dir=cache_dir, out_dir=build_dir / f"gc-{name}-{threads}")
    facts["compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cm = graphc.compile(gm, tuple(xs), threads=threads, cache_dir=cache_dir)
    facts["cached_compile_s"] = time.perf_counter() - t0
    cm.set_num_threads(threads)
    cm(*xs)
    facts["isa"] = cm.isa
    facts["lib_bytes"] = (cm.directory / f"lib{cm.name}.so").stat().st_size
    facts["arena_bytes"] = cm.arena_bytes()
    facts["arena_lower_bound"] = arena_lower_bound(cm.manifest, kernel_work_bytes(cm.directory, cm.manifest,
                                                                                  cm.isa, threads))
    facts["rss"] = {"graphc": rss_bytes() - rss0}
    runners["graphc"] = lambda *a: cm(*a)
    facts["cm"] = cm

    torch.set_num_threads(threads)
    rss0 = rss_bytes()

    def run_torch(*a: Any) -> Any:
        with torch.inference_mode():
            return tm(*(torch.from_numpy(x) for x in a))

    run_torch(*xs)
    runners["torch"] = run_torch
    facts["rss"]["torch"] = rss_bytes() - rss0

    try:
        import onnxruntime as ort

        path = build_dir / f"{name}.onnx"
        if not path.exists():
            export_onnx(tm, xs, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        rss0 = rss_bytes()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        runners["onnxruntime"] = lambda *a: sess.run(None, dict(zip(names, a)))
        runners["onnxruntime"](*xs)
        facts["rss"]["onnxruntime"] = rss_bytes() - rss0
    except Exception as e:  # an exporter or runtime failure is a result, not a crash
        runners["onnxruntime"] = None
        reasons["onnxruntime"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    if spec.numpy:
        runners["numpy"] = numpy_mlp(state)
    else:
        runners["numpy"] = None
    facts["reasons"] = reasons
    ref = first(run_torch(*xs))
    facts["max_diff"] = {p: float(np.abs(first(f(*xs)) - ref).max()) for p, f in runners.items() if f is not None}
    facts["xs"] = xs
    return runners, facts


def kernel_ops(cm: Any, xs: list[Any]) -> list[str]:
    """The op(s) of each kernel the library runs, in schedule order (from one profiled call)."""
    cm.enable_profile()
    cm(*xs)
    rows = cm.profile()
    cm.enable_profile(False)
    return [r["op"] for r in rows]


def build_imported(name: str, threads: int, build_dir: Path, cache_dir: Path) -> tuple[dict, dict]:
    """The graphc.nn model and the same torch model through graphc.from_torch and through its ONNX export
    and graphc.from_onnx, compiled alike; runners and facts (kernels, import / compile times, differences)."""
    import numpy as np
    import torch
    from models import MODELS

    import graphc

    spec = MODELS[name]
    xs = spec.inputs(np.random.default_rng(0))
    torch.manual_seed(0)
    tm = spec.build(torch.nn, torch.nn.functional).eval()
    for mod in tm.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    gm = spec.build(graphc.nn, graphc.nn.functional)
    gm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    gm.eval()
    path = build_dir / f"{name}.onnx"
    if not path.exists():
        export_onnx(tm, xs, path)
    libs: dict[str, Any] = {}
    facts: dict[str, Any] = {"import_s": {}, "compile_s": {}}
    makers = {"graphc.nn": lambda: gm, "from_torch": lambda: graphc.from_torch(tm, tuple(xs)),
              "from_onnx": lambda: graphc.from_onnx(path)}
    for kind, make in makers.items():
        t0 = time.perf_counter()
        src = make()
        t1 = time.perf_counter()
        cm = graphc.compile(src, tuple(xs) if kind == "graphc.nn" else None, threads=threads, cache_dir=cache_dir)
        facts["import_s"][kind] = t1 - t0
        facts["compile_s"][kind] = time.perf_counter() - t1
        cm.set_num_threads(threads)
        libs[kind] = cm
    ref = first(libs["graphc.nn"](*xs))
    facts["kernels"] = {k: kernel_ops(cm, xs) for k, cm in libs.items()}
    fp = {k: cm.manifest.get("fingerprint") for k, cm in libs.items()}
    facts["same_library"] = {k: bool(fp[k]) and fp[k] == fp["graphc.nn"] for k in libs}
    facts["max_diff"] = {k: float(np.abs(first(cm(*xs)) - ref).max()) for k, cm in libs.items()}
    facts["xs"] = xs
    return dict(libs), facts


def settle(quiet: float = 0.0005, step: float = 0.005, limit: float = 0.3) -> None:
    """Wait until this process's threads are idle: ONNX Runtime's workers spin about 40 ms after a run
    and PyTorch's OpenMP threads about 5 ms, and a spinning peer thread holds a core the next runner's
    burst needs (graphc's 2-thread pool then ran at 1-thread speed). Returns once `step` seconds pass
    with under `quiet` seconds of process CPU time, or after `limit`."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        c0 = time.process_time()
        time.sleep(step)
        if time.process_time() - c0 < quiet:
            return


def interleaved(runners: dict[str, Callable[..., Any] | None], xs: list[Any], rounds: int,
                burst: float) -> dict[str, float]:
    """Median seconds per call of each runner; the runners take turns burst by burst."""
    live = {k: f for k, f in runners.items() if f is not None}
    reps = {}
    for k, f in live.items():  # warm-up, and calls per burst from a first estimate
        for _ in range(3):
            f(*xs)
        t0 = time.perf_counter()
        f(*xs)
        reps[k] = max(1, int(burst / max(1e-7, time.perf_counter() - t0)))
    per_call: dict[str, list[float]] = {k: [] for k in live}
    for _ in range(rounds):
        for k, f in live.items():
            settle()
            f(*xs)
            t0 = time.perf_counter()
            for _ in range(reps[k]):
                f(*xs)
            per_call[k].append((time.perf_counter() - t0) / reps[k])
    return {k: statistics.median(v) for k, v in per_call.items()}


def worker(args: argparse.Namespace) -> None:
    """One thread count, every model; writes JSON rows to args.json."""
    from graphc.backend.compiled import profile_table

    threads = args.worker
    build_dir = Path(args.build_dir)
    cache_dir = build_dir / "cache"
    out = []
    for name in [m for m in args.models.split(",") if m]:
        print(f"[{threads}t] {name}: building", file=sys.stderr, flush=True)
        if args.imported:
            try:
                runners, facts = build_imported(name, threads, build_dir, cache_dir)
            except Exception as e:
                out.append({"model": name, "threads": threads, "error": f"{type(e).__name__}: {e}"})
                print(f"[{threads}t] {name}: FAILED {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                continue
            times = interleaved(runners, facts.pop("xs"), args.rounds, args.burst)
            out.append({"model": name, "threads": threads, "times": times, **facts})
            print(f"[{threads}t] {name}: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in times.items()),
                  file=sys.stderr, flush=True)
            continue
        try:
            runners, facts = build_runners(name, threads, build_dir, cache_dir)
        except Exception as e:
            out.append({"model": name, "threads": threads, "error": f"{type(e).__name__}: {e}"})
            print(f"[{threads}t] {name}: FAILED {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            continue
        xs, cm = facts.pop("xs"), facts.pop("cm")
        if args.busy and threads > 1:  # the target: with a busy neighbour, N threads no slower than one
            runners["graphc_1t"] = cm.new_context(threads=1)
        times = interleaved(runners, xs, args.rounds, args.burst)
        cm.enable_profile()
        reps = max(3, min(50, int(0.3 / max(1e-6, times["graphc"]))))
        for _ in range(reps):
            cm(*xs)
        prof = cm.profile()
        cm.enable_profile(False)
        flops = sum(r["flops"] for r in prof) / max(1, prof[0]["runs"] if prof else 1)
        row = {"model": name, "threads": threads, "times": times, "flops": flops,
               "profile": profile_table(prof, top=8, markdown=True), **facts}
        out.append(row)
        print(f"[{threads}t] {name}: " + ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in times.items()),
              file=sys.stderr, flush=True)
    Path(args.json).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------- report
def fmt_us(t: float | None) -> str:
    return "n/a" if t is None else f"{t * 1e6:.0f}" if t >= 1e-4 else f"{t * 1e6:.1f}"


def gemm_table(threads: str) -> tuple[list[str], list[list[float]]]:
    """bench_gemm.py's markdown rows (its GFLOP/s columns parsed for the % of peak)."""
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gemm.py"), "--threads", threads,
                          "--shapes", "256x256x256,512x512x512,1024x1024x1024,2048x2048x2048,64x512x784:nt,"
                          "1x512x784:nt,3136x64x576,128x1536x384:nt"],
                         capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("|")]
    return lines, [[float(c) for c in ln.strip("|").split("|")[1:4]] for ln in lines[2:]]


def report(rows: list[dict], args: argparse.Namespace, argv: list[str]) -> str:
    model, flags, mhz = cpu_info()
    nominal = peak_gflops_per_core(flags, mhz)
    measured = args.fma_peak
    peak = measured or nominal
    busy = " with one busy neighbour process (a Python spin loop pinned to the last CPU)" if args.busy else ""
    lines = ["# graphc benchmark" + (" (busy machine)" if args.busy else ""), "",
             f"CPU: {model}, {os.cpu_count()} logical CPUs, ISA flags {' '.join(flags)}; FMA peak "
             + (f"measured {measured:.0f} GFLOP/s per core (a 12-chain vector FMA loop, run just before the models; "
                f"the nominal count from the flags and {mhz:.0f} MHz says {nominal:.0f})." if measured else
                f"{nominal:.0f} GFLOP/s per core (nominal: 2 FMA pipes x vector width x {mhz:.0f} MHz).")
             + f" {versions()}. Command: `python bench/run.py {' '.join(argv)}`.", "",
             f"Median microseconds per call{busy}; the runners took turns burst by burst in one process per "
             "thread count, ratios are the peer's time over graphc's from the same run (above 1: graphc is "
             "faster). graphc: target `default` (one library, kernels picked by the CPU: "
             f"{next((r.get('isa') for r in rows if r.get('isa')), '?')}); % peak: the model's float ops per "
             "call (graphc's count) over graphc's time and the peak of the threads used.", ""]
    errors = [r for r in rows if "error" in r]
    for t in sorted({r["threads"] for r in rows}):
        lines += [f"## {t} thread{'s' if t > 1 else ''}", "",
                  "| model | graphc us | torch us | ORT us | numpy us | torch/graphc | ORT/graphc | numpy/graphc "
                  "| graphc GFLOP/s (% peak) |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in rows:
            if r["threads"] != t or "error" in r:
                continue
            tm = r["times"]
            g = tm["graphc"]
            ratio = [f"{tm[p] / g:.2f}" if p in tm else "n/a" for p in PEERS]
            gf = r["flops"] / g / 1e9
            lines.append(f"| {r['model']} | {fmt_us(g)} | " + " | ".join(fmt_us(tm.get(p)) for p in PEERS) + " | "
                         + " | ".join(ratio) + f" | {gf:.1f} ({100 * gf / (peak * t):.0f}%) |")
        lines.append("")
        same = [r for r in rows if r["threads"] == t and "graphc_1t" in r.get("times", {})]
        if same:
            lines += [f"graphc at {t} threads against a 1-thread context of the same library, taking turns in the "
                      "same run (the busy target: at most 10% slower):", "",
                      f"| model | graphc 1 thread us | graphc {t} threads us | {t} threads / 1 thread |",
                      "|---|--:|--:|--:|"]
            lines += [f"| {r['model']} | {fmt_us(r['times']['graphc_1t'])} | {fmt_us(r['times']['graphc'])} | "
                      f"{r['times']['graphc'] / r['times']['graphc_1t']:.2f} |" for r in same]
            lines.append("")
    one = [r for r in rows if "error" not in r and r["threads"] == min(x["threads"] for x in rows)]
    lines += ["## Build and memory", "",
              "| model | cold compile s | cached compile s | library MB | arena KB | lower bound KB | arena / bound "
              "| RSS added MB: graphc / torch / ORT | max abs diff vs torch: graphc / ORT |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in one:
        lb = r["arena_lower_bound"]
        rss = r["rss"]
        lines.append(
            f"| {r['model']} | {r['compile_s']:.2f} | {r['cached_compile_s']:.2f} | {r['lib_bytes'] / 1e6:.1f} "
            f"| {r['arena_bytes'] / 1024:.0f} | {'n/a' if lb is None else f'{lb / 1024:.0f}'} | "
            f"{'n/a' if not lb else format(r['arena_bytes'] / lb, '.2f')} | "
            + " / ".join(f"{rss[p] / 1e6:.1f}" if p in rss else "n/a" for p in ("graphc", "torch", "onnxruntime"))
            + " | " + " / ".join(f"{r['max_diff'][p]:.1e}" if p in r["max_diff"] else "n/a"
                                 for p in ("graphc", "onnxruntime")) + " |")
    lines += ["", "Cold compile: a model the cache has not seen (the runtime's objects already built); cached: "
              "the same compile again. The arena holds every intermediate (64-byte aligned blocks) and each "
              "runtime kernel's scratch (in the bytes free at its step); its bound is the largest sum of the "
              "intermediates live at one step and that step's scratch, at the table's thread count.", ""]
    reasons = {(r["model"], p): why for r in one for p, why in r.get("reasons", {}).items()}
    if reasons or errors:
        lines += ["n/a and failures:", ""] + [f"- {m}/{p}: {w}" for (m, p), w in reasons.items()] + [
            f"- {r['model']} ({r['threads']} threads): {r['error']}" for r in errors] + [""]
    if not args.no_gemm:
        glines, vals = gemm_table(args.threads)
        lines += ["## GEMM micro-benchmark (bench/bench_gemm.py: gc_sgemm vs numpy's BLAS)", ""]
        if glines:
            lines += [glines[0].rstrip() + " % of numpy | % of peak |", glines[1] + "---:|---:|"]
            for ln, (t, gc, npy) in zip(glines[2:], vals):
                lines.append(ln.rstrip() + f" {100 * gc / npy:.0f}% | {100 * gc / (peak * t):.0f}% |")
        lines.append("")
    lines += ["## Where graphc's time goes (per-kernel profile, 1 thread, top 8 kernels)", ""]
    for r in one:
        lines += [f"### {r['model']}", "", r["profile"], ""]
    return "\n".join(lines)


IMPORTED_BEGIN, IMPORTED_END = "<!-- imported:begin -->", "<!-- imported:end -->"


def report_imported(rows: list[dict], argv: list[str]) -> str:
    """The --imported section: graphc.nn vs from_torch vs from_onnx, times from the same run."""
    from collections import Counter

    model, flags, _ = cpu_info()
    kinds = ("graphc.nn", "from_torch", "from_onnx")
    lines = [IMPORTED_BEGIN, "## Imported models: graphc.nn vs graphc.from_torch vs graphc.from_onnx", "",
             f"CPU: {model}, {os.cpu_count()} logical CPUs ({' '.join(flags)}). {versions()}. Command: "
             f"`python bench/run.py {' '.join(argv)}` ({time.strftime('%H:%M UTC', time.gmtime())}, a machine "
             "shared with other sessions). The same weights compiled three ways (target `default`, -O2): the "
             "graphc.nn model, the torch.nn model through from_torch (torch.export), and its ONNX export (opset "
             "17, the export the default run gives ONNX Runtime) through from_onnx. Median microseconds per "
             "call, the three libraries taking turns burst by burst; ratios: the imported library's time over "
             "the graphc.nn one's (1.00: as fast). Kernels: kernels per call, nn / torch / onnx; diff: largest "
             "absolute difference from the graphc.nn library's output.", ""]
    errors = [r for r in rows if "error" in r]
    for t in sorted({r["threads"] for r in rows}):
        lines += [f"### {t} thread{'s' if t > 1 else ''}", "",
                  "| model | graphc.nn us | from_torch us | from_onnx us | torch/nn | onnx/nn | kernels nn / torch / "
                  "onnx | import s: torch / onnx | compile s: nn / torch / onnx | diff: torch / onnx |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in rows:
            if r["threads"] != t or "error" in r:
                continue
            tm, ks = r["times"], r["kernels"]
            lines.append(
                f"| {r['model']} | " + " | ".join(fmt_us(tm[k]) for k in kinds) + " | "
                + " | ".join(f"{tm[k] / tm['graphc.nn']:.2f}" for k in kinds[1:]) + " | "
                + " / ".join(str(len(ks[k])) for k in kinds) + " | "
                + " / ".join(f"{r['import_s'][k]:.2f}" for k in kinds[1:]) + " | "
                + " / ".join(f"{r['compile_s'][k]:.2f}" for k in kinds) + " | "
                + " / ".join(f"{r['max_diff'][k]:.1e}" for k in kinds[1:]) + " |")
        lines.append("")
    notes = []
    for r in rows:
        if "error" in r or r["threads"] != min(x["threads"] for x in rows):
            continue
        base = Counter(r["kernels"]["graphc.nn"])
        for k in kinds[1:]:
            got = Counter(r["kernels"][k])
            if got != base:
                more, fewer = dict(got - base), dict(base - got)
                notes.append(f"- {r['model']} {k}: kernels the graphc.nn library does not have {more or '{}'}, "
                             f"and it lacks {fewer or '{}'}")
    same = [f"{r['model']} {k}" for r in rows if "error" not in r for k in kinds[1:]
            if r.get("same_library", {}).get(k)]
    if same:
        lines += ["The same library as the graphc.nn model (the optimised graph has its fingerprint, so the compile "
                  "was a cache hit): " + ", ".join(same) + ".", ""]
    lines += (["Kernel differences (ops per kernel):", ""] + notes + [""]) if notes else [
        "Every imported library runs the same kernels (ops per kernel, as a multiset) as its graphc.nn twin.", ""]
    if errors:
        lines += ["Failures:", ""] + [f"- {r['model']} ({r['threads']} threads): {r['error']}" for r in errors] + [""]
    lines.append(IMPORTED_END)
    return "\n".join(lines)


def splice(path: Path, section: str) -> str:
    """path's text with the --imported section replaced (or appended when it has none)."""
    text = path.read_text() if path.exists() else ""
    if IMPORTED_BEGIN in text and IMPORTED_END in text:
        head, rest = text.split(IMPORTED_BEGIN, 1)
        return head + section + rest.split(IMPORTED_END, 1)[1]
    return text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"


def keep_imported(path: Path, text: str) -> str:
    """The full report, followed by the --imported section path already holds (a run without --imported
    does not time imported models, so it keeps their last results)."""
    old = path.read_text() if path.exists() else ""
    if IMPORTED_BEGIN in old and IMPORTED_END in old:
        section = IMPORTED_BEGIN + old.split(IMPORTED_BEGIN, 1)[1].split(IMPORTED_END, 1)[0] + IMPORTED_END
        return text.rstrip("\n") + "\n\n" + section + "\n"
    return text + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    tmp = tempfile.TemporaryDirectory(prefix="graphc-bench-")
    build_dir = Path(args.build_dir or tmp.name)
    build_dir.mkdir(parents=True, exist_ok=True)
    args.fma_peak = measured_fma_peak(cpu_info()[1])  # before the busy neighbour starts
    busy = None
    if args.busy:
        # a Python spin loop pinned to the last CPU (where the pool's worker would run)
        cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        pin = f"import os; os.sched_setaffinity(0, {{{cpu}}})\n" if cpu is not None else ""
        busy = subprocess.Popen([sys.executable, "-c", pin + "while True: pass"])
    rows: list[dict] = []
    try:
        for t in [int(x) for x in args.threads.split(",") if x]:
            env = dict(os.environ, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
            js = build_dir / f"rows-{t}.json"
            cmd = [sys.executable, __file__, "--worker", str(t), "--json", str(js), "--models", args.models,
                   "--rounds", str(args.rounds), "--burst", str(args.burst), "--build-dir", str(build_dir)]
            subprocess.run(cmd + (["--imported"] if args.imported else []) + (["--busy"] if args.busy else []),
                           env=env, check=True)
            rows += json.loads(js.read_text())
        text = report_imported(rows, argv) if args.imported else report(rows, args, argv)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    out = Path(args.out or ROOT / "bench" / ("results-busy.md" if args.busy else "results.md"))
    out.write_text(splice(out, text) if args.imported else keep_imported(out, text))
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
