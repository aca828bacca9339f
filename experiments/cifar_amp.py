"""CIFAR-10 CNN under Keras mixed precision (seed 003_cf2c7093be864965).

The seed trains a small CNN on CIFAR-10 with the ``mixed_float16`` policy, batch 256, and keeps
the final activation in float32 for numeric stability. Here the policy comes from the shared
vocabulary (``auto`` picks mixed_bf16 on a bf16-capable CPU or GPU, mixed_fp16 on older GPUs).

    python -m experiments.cifar_amp                         # real CIFAR-10 (downloads once)
    python -m experiments.cifar_amp --dataset synthetic --epochs 2   # offline
    python -m experiments.cifar_amp --data-dir ~/data --precisions fp32,mixed_bf16 --repeats 3
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig
from mltrack.data import ArrayDataset, cifar, synthetic
from mltrack.experiment import Experiment
from mltrack.precision import output_dtype
from mltrack.run import Run

PROBE_SIZE = 32


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("cifar10", "synthetic")

    batch_size: int = 256  # the seed's batch: what mixed precision let it fit in memory
    epochs: int = 10
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    synthetic_size: int = field(
        default=2048, metadata={"help": "training images for --dataset synthetic"}
    )

    def validate(self) -> None:
        super().validate()
        if self.learning_rate <= 0:
            from mltrack.errors import bad_value

            raise bad_value("--learning-rate", self.learning_rate, "a number > 0")


def load_data(cfg: Config) -> ArrayDataset:
    if cfg.dataset == "synthetic":
        size = cfg.synthetic_size
        return synthetic.images((32, 32, 3), 10, size, max(size // 4, 1), cfg.seed)
    return cifar.load("cifar10", cfg.data_dir)


def build_model(precision: str, num_classes: int) -> Any:
    """The seed's CNN; built under the precision's dtype policy by the caller."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Rescaling(1 / 255),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.25),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(num_classes),
            # Softmax in float32 under mixed policies (seed 003's point about the last layer).
            layers.Activation("softmax", dtype=output_dtype(precision)),
        ]
    )


def train(cfg: Config, data: ArrayDataset, run: Run) -> dict[str, float]:
    import keras

    from mltrack import keras as mk
    from mltrack.artifacts import export_keras

    keras.utils.set_random_seed(cfg.seed)
    with mk.precision_policy(cfg.precision):
        model = build_model(cfg.precision, data.num_classes)
        optimizer = keras.optimizers.Adam(
            cfg.learning_rate,
            gradient_accumulation_steps=cfg.accumulation_steps
            if cfg.accumulation_steps > 1
            else None,
        )
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    run.log_params({"model.parameters": model.count_params()})
    summary = mk.fit(
        run,
        model,
        data.x_train,
        data.y_train,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        validation_data=(data.x_test, data.y_test),
        log_every_n_steps=cfg.log_every_n_steps,
    )
    metrics = {**summary, **mk.evaluate(run, model, data.x_test, data.y_test, cfg.batch_size)}
    if cfg.export:
        export_keras(run, model, data.x_test[:PROBE_SIZE], cfg)
    return metrics


EXPERIMENT = Experiment("cifar_amp", Config, load_data, train, __doc__ or "")


main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
