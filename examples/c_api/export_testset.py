"""Write the digits test set as raw files for classify.c: images.f32 ([N,1,8,8] float32) and labels.i64.

    python examples/c_api/export_testset.py out/digits/testset
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def export(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = np.load(HERE.parent / "digits" / "digits_test.npz")
    np.ascontiguousarray(data["images"], dtype=np.float32).tofile(out / "images.f32")
    np.ascontiguousarray(data["labels"], dtype=np.int64).tofile(out / "labels.i64")
    return out


if __name__ == "__main__":
    print(f"wrote {export(sys.argv[1] if len(sys.argv) > 1 else 'testset')}")
