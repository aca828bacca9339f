"""Learnable synthetic data with the real shapes, for offline runs (``--dataset synthetic``).

Each class has a smooth random template; a sample is its class template plus noise, shifted a
little, so a small CNN learns it in a few epochs while nothing is trivially constant.
"""

from __future__ import annotations

import numpy as np

from mltrack.studies.data.core import ArrayDataset


def images(
    shape: tuple[int, int, int],
    num_classes: int,
    train_size: int,
    test_size: int,
    seed: int = 0,
    name: str = "synthetic",
) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    h, w, c = shape
    # Low-frequency templates: random 4×4 grids upsampled to the image size.
    coarse = rng.uniform(0, 255, size=(num_classes, 4, 4, c))
    templates = coarse.repeat(-(-h // 4), axis=1).repeat(-(-w // 4), axis=2)[:, :h, :w, :]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, num_classes, size=n)
        noise = rng.normal(0, 110, size=(n, h, w, c))
        x = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        shifts = rng.integers(-4, 5, size=(n, 2))
        for i, (dy, dx) in enumerate(shifts):
            x[i] = np.roll(x[i], (int(dy), int(dx)), axis=(0, 1))
        return x, labels.astype(np.int64)

    x_train, y_train = draw(train_size)
    x_test, y_test = draw(test_size)
    return ArrayDataset(
        name, x_train, y_train, x_test, y_test, num_classes, f"generated (seed {seed})"
    )
