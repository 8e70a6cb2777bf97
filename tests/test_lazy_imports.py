"""What a process pays for before its first op: `import graphc` leaves ml_dtypes (about 0.5 s of CPU to
import) until a bfloat16 numpy type is needed, and bfloat16 works the same once it is. Each check runs
in a fresh interpreter (this one has imported everything already)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


def test_import_graphc_does_not_import_ml_dtypes():
    out = _run("""
        import sys
        import numpy as np
        import graphc
        t = graphc.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
        print(graphc.bfloat16.itemsize, graphc.bfloat16.is_floating_point, (t * 2).sum().item(),
              "ml_dtypes" in sys.modules)
    """)
    assert out == "2 True 30.0 False"


def test_bfloat16_once_ml_dtypes_is_needed():
    import ml_dtypes

    out = _run("""
        import numpy as np
        import ml_dtypes  # a user's bfloat16 array: graphc maps its numpy type
        import graphc
        from graphc._dtype import as_dtype, from_numpy_dtype
        a = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16)
        t = graphc.from_numpy(a)
        print(t.dtype, from_numpy_dtype(a.dtype), as_dtype(ml_dtypes.bfloat16), t.float().numpy().tolist())
    """)
    want = np.array([1.5, -2.0, 3.25], dtype=ml_dtypes.bfloat16).astype(np.float32).tolist()
    assert out == f"graphc.bfloat16 graphc.bfloat16 graphc.bfloat16 {want}"
    out = _run("""
        import sys
        import graphc
        t = graphc.ones(3, dtype=graphc.bfloat16) * 3  # graphc's own bfloat16 tensor loads ml_dtypes itself
        print(t.dtype, t.numpy().dtype, t.float().numpy().tolist(), "ml_dtypes" in sys.modules)
    """)
    assert out == "graphc.bfloat16 bfloat16 [3.0, 3.0, 3.0] True"
