"""Fashion-MNIST CNN in double, single, half and mixed precision (seed 002_56231fbe92e742bb).

The seed trains TensorFlow's tutorial CNN (Adam, 5 epochs, sparse categorical cross-entropy)
three times per precision and prints the average training time and the test accuracy; in pure
fp16 the loss goes NaN and accuracy falls to 0.10. Here each precision × repeat is a child run
of one study; a NaN/Inf loss stops that run as ``diverged`` with its step, and the study goes on.

    python -m experiments.fashion_mnist_precision --precisions fp64,fp32,fp16,mixed_fp16 --repeats 3
    python -m experiments.fashion_mnist_precision --dataset digits \
        --precisions fp32,fp16,mixed_bf16 --repeats 2
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig
from mltrack.data import ArrayDataset, mnist_like, synthetic
from mltrack.experiment import Experiment
from mltrack.precision import output_dtype
from mltrack.run import Run

PROBE_SIZE = 32


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("fashion_mnist", "digits", "synthetic")

    precision: str = "fp64,fp32,fp16,mixed_fp16"  # the seed's four rows
    repeats: int = 3  # the seed's NUM_TRAINING_RUNS
    epochs: int = 5


def load_data(cfg: Config) -> ArrayDataset:
    if cfg.dataset == "digits":
        return mnist_like.load_digits(cfg.seed)
    if cfg.dataset == "synthetic":
        ds = synthetic.images((28, 28, 1), 10, 2048, 512, cfg.seed)
        ds.x_train, ds.x_test = ds.x_train[..., 0], ds.x_test[..., 0]
        return ds
    return mnist_like.load_fashion_mnist(cfg.data_dir)


def build_model(precision: str) -> Any:
    """The seed's CNN; every layer takes the policy's dtype, the softmax float32 under mixed."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10, activation="softmax", dtype=output_dtype(precision)),
        ]
    )


def train(cfg: Config, data: ArrayDataset, run: Run) -> dict[str, float]:
    import keras

    from mltrack import keras as mk
    from mltrack.artifacts import export_keras

    keras.utils.set_random_seed(cfg.seed)
    x_train, x_test = data.x_train[..., None] / 255.0, data.x_test[..., None] / 255.0
    with mk.precision_policy(cfg.precision):
        model = build_model(cfg.precision)
        optimizer = keras.optimizers.Adam(
            gradient_accumulation_steps=cfg.accumulation_steps
            if cfg.accumulation_steps > 1
            else None
        )
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    summary = mk.fit(
        run,
        model,
        x_train,
        data.y_train,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        validation_data=(x_test, data.y_test),
        log_every_n_steps=cfg.log_every_n_steps,
        watch_steps=True,  # record the exact step a NaN appears (the seed's fp16 row)
    )
    metrics = {**summary, **mk.evaluate(run, model, x_test, data.y_test, cfg.batch_size)}
    if cfg.export:
        export_keras(run, model, x_test[:PROBE_SIZE], cfg)
    return metrics


EXPERIMENT = Experiment("fashion_mnist_precision", Config, load_data, train, __doc__ or "")


main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
