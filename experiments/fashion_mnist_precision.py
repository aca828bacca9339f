"""Fashion-MNIST CNN in double, single, half and mixed precision (seed 002_56231fbe92e742bb).

The seed trains TensorFlow's tutorial CNN (Adam, 5 epochs, batch 32, sparse categorical
cross-entropy) three times per precision and prints the average training time and the last
repeat's test accuracy. Each precision × repeat is a child run of one study. Two protocols:

- ``--protocol seed`` (default), what the notebook timed: an untimed warm-up training in fp32
  and in the study's first mixed precision; ``fit`` timed without validation (test after); the
  mixed softmax in float16 (the policy's); a NaN loss trains on through every epoch (the seed's
  fp16 row: 40.6 s, accuracy 0.10), the run ends ``diverged`` with its time in the table.
- ``--protocol mltrack`` (sweeps' default): validation each epoch inside the timed fit, a
  float32 softmax under mixed policies, no warm-up, training stops at the first NaN.

    python -m experiments.fashion_mnist_precision --precisions fp64,fp32,fp16,mixed_fp16 --repeats 3
    python -m experiments.fashion_mnist_precision --dataset digits \
        --precisions fp32,fp16,mixed_bf16 --repeats 2 --protocol mltrack
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig, help_
from mltrack.errors import bad_value
from mltrack.experiment import Experiment
from mltrack.measure.precision import is_mixed, output_dtype
from mltrack.studies.data import ArrayDataset, mnist_like, synthetic
from mltrack.tracking.run import Run

PROBE_SIZE = 32
PROTOCOLS = ("seed", "mltrack")
DEVIATIONS = ("repeat r is seeded with --seed + r (the seed set one global seed, 12, once)",)


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("fashion_mnist", "digits", "synthetic")
    SWEEP_DEFAULTS: ClassVar[dict[str, Any]] = {"protocol": "mltrack"}

    precision: str = "fp64,fp32,fp16,mixed_fp16"  # the seed's four rows
    repeats: int = 3  # the seed's NUM_TRAINING_RUNS
    epochs: int = 5
    protocol: str = field(default="seed", metadata=help_("seed or mltrack (see above)"))

    def validate(self) -> None:
        super().validate()
        if self.protocol not in PROTOCOLS:
            raise bad_value("--protocol", self.protocol, f"one of {', '.join(PROTOCOLS)}")


def load_data(cfg: Config) -> ArrayDataset:
    if cfg.dataset == "digits":
        return mnist_like.load_digits(cfg.seed)
    if cfg.dataset == "synthetic":
        ds = synthetic.images((28, 28, 1), 10, 2048, 512, cfg.seed)
        ds.x_train, ds.x_test = ds.x_train[..., 0], ds.x_test[..., 0]
        return ds
    return mnist_like.load_fashion_mnist(cfg.data_dir)


def build_model(precision: str, accumulation_steps: int = 1, float32_output: bool = True) -> Any:
    """The seed's CNN, compiled as it was (Adam, sparse categorical cross-entropy); every layer
    takes the policy's dtype, the softmax too unless ``float32_output`` (under mixed)."""
    import keras
    from keras import layers

    from mltrack import keras as mk

    out = output_dtype(precision) if float32_output else None
    with mk.precision_policy(precision):
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                layers.Conv2D(32, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(64, 3, activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(64, 3, activation="relu"),
                layers.Flatten(),
                layers.Dense(64, activation="relu"),
                layers.Dense(10, activation="softmax", dtype=out),
            ]
        )
        accumulate = accumulation_steps if accumulation_steps > 1 else None
        optimizer = keras.optimizers.Adam(gradient_accumulation_steps=accumulate)
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def train(cfg: Config, data: ArrayDataset, run: Run) -> dict[str, float]:
    import keras

    from mltrack import keras as mk

    keras.utils.set_random_seed(cfg.seed)
    x_train, x_test = data.x_train[..., None] / 255.0, data.x_test[..., None] / 255.0
    seed = cfg.protocol == "seed"
    model = build_model(cfg.precision, cfg.accumulation_steps, float32_output=not seed)
    summary = mk.fit(
        run, model, x_train, data.y_train, epochs=cfg.epochs, batch_size=cfg.batch_size,
        validation_data=None if seed else (x_test, data.y_test),
        log_every_n_steps=cfg.log_every_n_steps, jit_compile=cfg.compile,
        # Stopping at the first NaN wants its exact step (batch hooks); training on does not.
        watch_steps=not seed, on_divergence="continue" if seed else "stop",
    )  # fmt: skip
    metrics = {**summary, **mk.evaluate(run, model, x_test, data.y_test, cfg.batch_size)}
    if cfg.export:
        probe = data.x_test[:PROBE_SIZE, ..., None]  # raw uint8 pixels: the export scales them
        mk.export(
            run, model, probe, precision=cfg.precision, register=cfg.register, rescale=1 / 255
        )
    return metrics


def warm_up(cfg: Config, data: ArrayDataset) -> list[str]:
    """The seed's untimed test run: an fp32 training and one in the study's first mixed
    precision, nothing logged. Returns the precisions it trained."""
    if cfg.protocol != "seed":
        return []
    mixed = [p for p in cfg.precision_list() if is_mixed(p)][:1]
    x = data.x_train[..., None] / 255.0
    for precision in ["fp32", *mixed]:
        model = build_model(precision, cfg.accumulation_steps, float32_output=False)
        model.fit(x, data.y_train, epochs=cfg.epochs, batch_size=cfg.batch_size, verbose=0)
    return ["fp32", *mixed]


EXPERIMENT = Experiment(
    "fashion_mnist_precision",
    Config,
    load_data,
    train,
    __doc__ or "",
    warm_up=warm_up,
    deviations=DEVIATIONS,
)
main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
