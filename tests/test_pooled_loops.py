"""Elementwise and strided-copy kernels run their parallel loops on the context's thread pool
(templates/c/_macros.j2 pooled_kernel), not in an OpenMP team: the generated source has no OpenMP loop
for them, and the results match numpy on 1, 2 and 3 threads with the same bits, for a flat loop, a
nest whose first two loops are cut together (a short leading dim) and a dynamic dim whose size decides
at run time whether the loop is split."""

from __future__ import annotations

import numpy as np

import graphc
import graphc.nn as nn


class Mix(nn.Module):
    def forward(self, x, y):
        # x [B, 300, 100]: the permute is a strided copy with a short leading dim (its first two loops cut
        # together); the sum and the product are one elementwise kernel over B * 30000 elements
        return (x.permute(0, 2, 1) + y) * 0.5


def test_pooled_elementwise_and_copy_loops(tmp_path, shared_cache):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 300, 100)).astype(np.float32)
    y = rng.standard_normal((2, 100, 300)).astype(np.float32)
    cm = graphc.compile(Mix(), (x, y), {"x": {0: "B"}, "y": {0: "B"}}, threads=2, cache_dir=shared_cache,
                        out_dir=tmp_path / "src")
    source = "\n".join(p.read_text() for p in sorted((tmp_path / "src").glob("*_kernels*.c")))
    assert "gc_parallel_for" in source and "omp parallel" not in source
    for b in (2, 1, 3):
        xb = rng.standard_normal((b, 300, 100)).astype(np.float32)
        yb = rng.standard_normal((b, 100, 300)).astype(np.float32)
        want = (xb.transpose(0, 2, 1) + yb) * np.float32(0.5)
        outs = []
        for nt in (1, 2, 3):
            cm.set_num_threads(nt)
            outs.append(np.asarray(cm(xb, yb)).copy())
        np.testing.assert_allclose(outs[0], want, rtol=1e-6, atol=1e-6, err_msg=f"B={b}")
        assert all(o.tobytes() == outs[0].tobytes() for o in outs[1:]), f"B={b}: depends on the thread count"
