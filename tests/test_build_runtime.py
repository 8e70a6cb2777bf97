"""Which runtime files a library compiles and links (build.needed_runtime): those its generated units call
and those they call in turn, the always-linked ones, nothing named only by the Makefile or main.c. A
default-target library leaves the other kernel files out (gc_dispatch.c's variants are weak): the model
below (a convolution and a linear layer) has no attention, norm or reduction objects and matches numpy."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np

import graphc
from graphc import nn
from graphc.backend.build import needed_runtime, runtime_files


def test_needed_runtime_follows_calls_between_runtime_files():
    got = needed_runtime({"m_kernels0.c": "void k(void) { gc_conv2d(&p, x, w, b, y, work, nthreads); }",
                          "m_internal.h": "#include \"graphc_rt.h\"",
                          "Makefile": "OBJS = gc_attention.o gc_sdpa gc_layer_norm",
                          "main.c": "gc_softmax(0, 1, 2, 3, x, y, 0, 1);"})
    assert "gc_conv.c" in got and "gc_gemm.c" in got  # the convolution's GEMM path calls gc_sgemm
    assert {"gc_dispatch.c", "gc_safetensors.c", "gc_status.c", "gc_threadpool.c"} <= set(got)
    assert not {"gc_attention.c", "gc_norm.c", "gc_reduce.c"} & set(got)
    assert set(got) <= set(runtime_files())
    assert needed_runtime({"a.c": "gc_sdpa(&p, work, 1);"}) == sorted(needed_runtime({"a.c": "gc_sdpa(&p, work, 1);"}))
    assert "gc_attention.c" in needed_runtime({"a.c": "gc_sdpa(&p, work, 1);"})


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x: graphc.Tensor) -> graphc.Tensor:
        return self.fc(graphc.flatten(graphc.relu(self.conv(x)), 1))


def test_a_library_links_only_the_kernel_files_it_calls():
    from numpy.lib.stride_tricks import sliding_window_view

    graphc.manual_seed(0)
    model = Net().eval()
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    cm = graphc.compile(model, (x,), name="rtsel")
    sd = {k: np.asarray(v.numpy(), np.float64) for k, v in model.state_dict().items()}
    win = sliding_window_view(np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    h = np.maximum(np.einsum("bchwij,ocij->bohw", win, sd["conv.weight"]) + sd["conv.bias"][None, :, None, None], 0)
    np.testing.assert_allclose(cm(x), h.reshape(2, -1) @ sd["fc.weight"].T + sd["fc.bias"], rtol=1e-4, atol=1e-4)
    sources = {p.name: p.read_text() for p in cm.directory.iterdir() if p.suffix in (".c", ".h")}
    linked = needed_runtime(sources)
    assert "gc_conv.c" in linked and "gc_attention.c" not in linked
    assert (cm.directory / "runtime" / "gc_attention.c").exists()  # the folder keeps every source for make
    if shutil.which("nm") and cm.isa != "fixed":
        syms = subprocess.run(["nm", str(cm.directory / "librtsel.so")], capture_output=True, text=True).stdout
        assert re.search(r" t gc_conv2d_avx512$", syms, re.M) and not re.search(r" t gc_sdpa_avx512$", syms, re.M)
