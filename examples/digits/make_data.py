"""Make the digits demo's data: scikit-learn's bundled 8x8 handwritten digits, split once.

Run once, from anywhere (needs scikit-learn, which graphc itself does not depend on):

    python examples/digits/make_data.py

It writes ``digits_test.npz`` beside this file (the 360 test images as float32 [N, 1, 8, 8] scaled to
0..1, and their int64 labels); that file is committed, so the demo needs no scikit-learn.
``train.py`` calls :func:`load_split` for the training half.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TEST_FILE = HERE / "digits_test.npz"
N_TEST = 360
SEED = 0


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images float32 [N, 1, 8, 8] in 0..1, labels int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    test, train = order[:N_TEST], order[N_TEST:]
    return x[train], y[train], x[test], y[test]


def main() -> None:
    _, _, x_test, y_test = load_split()
    np.savez_compressed(TEST_FILE, images=x_test, labels=y_test)
    print(f"wrote {TEST_FILE} ({TEST_FILE.stat().st_size} bytes): images {x_test.shape} {x_test.dtype}, "
          f"labels {y_test.shape} {y_test.dtype}")


if __name__ == "__main__":
    main()
