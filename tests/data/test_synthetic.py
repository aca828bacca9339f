from __future__ import annotations

import numpy as np

from mltrack.studies.data import synthetic


def test_same_shapes_as_the_real_data_and_deterministic():
    a = synthetic.images((32, 32, 3), 10, 100, 20, seed=1)
    b = synthetic.images((32, 32, 3), 10, 100, 20, seed=1)
    assert a.x_train.shape == (100, 32, 32, 3) and a.x_train.dtype == np.uint8
    assert set(np.unique(a.y_train)) <= set(range(10))
    assert a.params()["dataset.hash"] == b.params()["dataset.hash"]
    assert (
        synthetic.images((32, 32, 3), 10, 100, 20, seed=2).params()["dataset.hash"]
        != a.params()["dataset.hash"]
    )


def test_learnable_by_a_nearest_template_rule():
    """Each class is its template plus noise: a class-mean classifier beats chance by far."""
    ds = synthetic.images((32, 32, 3), 10, 2000, 500, seed=0)
    x, xt = ds.x_train.reshape(2000, -1).astype(float), ds.x_test.reshape(500, -1).astype(float)
    means = np.stack([x[ds.y_train == k].mean(0) for k in range(10)])
    predicted = np.argmin(((xt[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == ds.y_test).mean() > 0.5
