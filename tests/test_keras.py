"""The Keras hook on a tiny model with a real store (the mlflow keras-callback test pattern).

Keras is imported inside the tests, not at collection: `pytest -m torch` collects this module
too, and TensorFlow must not be loaded into that process.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from mltrack.tracking.run import start_run
from tests.conftest import all_runs, check_timing_model

pytestmark = pytest.mark.tf


@pytest.fixture
def mk() -> Any:
    from mltrack import keras as mk

    return mk


def tiny(mk: Any, precision: str = "fp32") -> Any:
    import keras

    with mk.precision_policy(precision):
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid", dtype="float32"),
            ]
        )
        model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    return model


def data(n: int = 256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x[:, 0] + 0.1 * rng.normal(size=n) > 0.8).astype(int)


def test_history_length_equals_epochs_and_added_metrics_are_logged(store, client, mk):
    x, y = data()
    with start_run("k", tracking_uri=store) as run:
        summary = mk.fit(
            run,
            tiny(mk),
            x,
            y,
            epochs=3,
            batch_size=32,
            validation_data=(x, y),
            callbacks=[mk.BinaryScores(x, y)],
            verbose=0,
        )
    assert summary["epochs_completed"] == 3 and "val_loss" in summary
    [r] = all_runs(client, "k")
    for key in ("loss", "val_accuracy", "val_f1", "val_pr_auc", "epoch_wall_s"):
        assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == [0, 1, 2], key
    assert r.data.tags["keras.variable_dtypes"] == "float32"


def test_precision_policy_is_restored_and_mixed_keeps_float32_variables(mk):
    import keras

    before = keras.config.dtype_policy().name
    model = tiny(mk, "mixed_bf16")
    assert keras.config.dtype_policy().name == before
    tags = mk.dtype_tags(model)
    assert tags["keras.hidden_compute_dtype"] == "bfloat16"
    assert tags["keras.variable_dtypes"] == "float32"
    assert tags["keras.compute_dtypes"] == "bfloat16,float32"  # the float32 output layer


def test_nan_loss_stops_training_as_diverged_with_the_step(store, client, mk):
    x, y = data()
    y = y.astype("float32")
    y[100:] = np.nan  # batches from step 3 on (batch 32) produce a NaN loss
    with start_run("k", tracking_uri=store) as run:
        mk.fit(
            run, tiny(mk), x, y, epochs=5, batch_size=32, watch_steps=True, verbose=0, shuffle=False
        )
    [r] = all_runs(client, "k")
    assert r.data.tags["outcome"] == "diverged" and r.info.status == "FAILED"
    assert r.data.tags["diverged_step"] == "3" and r.data.tags["diverged_epoch"] == "0"
    assert len(client.get_metric_history(r.info.run_id, "loss")) == 1  # stopped in epoch 0


def test_one_timing_model_validation_timed_apart(store, client, mk):
    x, y = data(2048)
    model = tiny(mk)
    with start_run("k", tracking_uri=store) as run:
        mk.fit(run, model, x, y, epochs=2, batch_size=64, validation_data=(x, y), verbose=0)
    start = time.perf_counter()
    model.evaluate(x, y, batch_size=64, verbose=0)
    check_timing_model(client, run.run_id, len(x), time.perf_counter() - start)


def test_flops_per_sample_from_the_layers_equal_the_hand_count(mk):
    from benchmarks.flops import count_keras, hand_count

    assert count_keras() == hand_count()


@pytest.mark.parametrize(
    ("samples", "batch", "k", "epochs"),
    [(8, 2, 4, 1), (6, 2, 4, 1), (6, 2, 4, 2), (8, 4, 4, 1), (10, 2, 4, 2)],
)
def test_accumulation_equals_one_big_batch_per_window_partial_windows_included(
    store, mk, samples, batch, k, epochs
):
    """k micro-batches of ``batch`` give the update of one batch of their samples, and an
    epoch's last, partial window is applied too (Keras alone dropped or carried it: 8 samples
    at batch 4 with k = 4 trained nothing, issue 19), as the PyTorch loop does."""
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 3)).astype("float32")
    y = rng.normal(size=(samples, 1)).astype("float32")

    def model(accumulate: int | None) -> Any:
        keras.utils.set_random_seed(1)
        built = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        built.compile(keras.optimizers.SGD(0.1, gradient_accumulation_steps=accumulate), "mse")
        return built

    accumulated, reference = model(k), model(None)
    initial = [w.copy() for w in accumulated.get_weights()]
    with start_run("accumulation", tracking_uri=store) as run:
        mk.fit(run, accumulated, x, y, epochs=epochs, batch_size=batch, shuffle=False)
    # The reference: per epoch, one optimizer step per window of k micro-batches, each window
    # one batch of its samples (equal-sized micro-batches: Keras' mean of means is that mean).
    window = batch * k
    for _ in range(epochs):
        for start in range(0, samples, window):
            reference.train_on_batch(x[start : start + window], y[start : start + window])
    for got, want, before in zip(
        accumulated.get_weights(), reference.get_weights(), initial, strict=True
    ):
        assert not np.allclose(got, before)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
