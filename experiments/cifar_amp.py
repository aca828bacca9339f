"""CIFAR-10 under Keras mixed precision (seed 003_cf2c7093be864965).

The seed's code (rohan-paul/MachineLearning-DeepLearning-Code-for-my-YouTube-Channel,
``TensorFlow/mixed-precision_training.py``) trains a multilayer perceptron: Flatten(32×32×3) →
Dense 3000 relu → Dense 1000 relu → Dense 10 → a sigmoid ``Activation`` kept in float32 (the
point its document makes about the last layer), SGD (Keras' default rate 0.01), categorical
cross-entropy on one-hot labels, under ``mixed_float16``, with the batch of 256 its document
speaks of and ``fit``'s default single epoch: this experiment's default (pixels / 255 inside
the model). mltrack's choices stay behind flags: ``--model cnn`` (four convolutions, dropout,
float32 softmax), ``--optimizer adam``, ``--precision auto``, more ``--epochs``.

    python -m experiments.cifar_amp                         # real CIFAR-10 (downloads once)
    python -m experiments.cifar_amp --dataset synthetic     # offline, the seed's recipe
    python -m experiments.cifar_amp --data-dir ~/data --precisions fp32,mixed_fp16 --repeats 3
    python -m experiments.cifar_amp --model cnn --optimizer adam --learning-rate 1e-3 --epochs 10
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig, help_
from mltrack.errors import bad_value
from mltrack.experiment import Experiment
from mltrack.measure.precision import output_dtype
from mltrack.studies.data import ArrayDataset, cifar, synthetic
from mltrack.tracking.run import Run

PROBE_SIZE = 32
MODELS = ("mlp", "cnn")
OPTIMIZERS = ("sgd", "adam")
DEVIATIONS = (
    "trains on the 50,000 training images and evaluates on the 10,000 test images (the seed's "
    "code fits and evaluates on the test images)",
    "policy mixed_float16 as meant (the seed's code spells it 'mixed_floats16', which Keras "
    "refuses)",
    "batch 256 from the seed's document (its code calls fit() without a batch size: 32)",
)


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("cifar10", "synthetic")

    precision: str = "mixed_fp16"  # the seed's policy (mixed_float16)
    batch_size: int = 256  # the seed's batch: what mixed precision let it fit in memory
    epochs: int = 1  # the seed's fit() gives no epochs: Keras' default, one
    model: str = field(default="mlp", metadata=help_(f"one of {', '.join(MODELS)} (seed: mlp)"))
    optimizer: str = field(
        default="sgd", metadata=help_(f"one of {', '.join(OPTIMIZERS)} (seed: sgd)")
    )
    learning_rate: float = field(
        default=0.01, metadata=help_("optimizer learning rate (seed: Keras' SGD default, 0.01)")
    )
    synthetic_size: int = field(default=2048, metadata=help_("images for --dataset synthetic"))

    def validate(self) -> None:
        super().validate()
        if self.model not in MODELS:
            raise bad_value("--model", self.model, f"one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise bad_value("--optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        if self.learning_rate <= 0:
            raise bad_value("--learning-rate", self.learning_rate, "a number > 0")


def load_data(cfg: Config) -> ArrayDataset:
    if cfg.dataset == "synthetic":
        size = cfg.synthetic_size
        return synthetic.images((32, 32, 3), 10, size, max(size // 4, 1), cfg.seed)
    return cifar.load("cifar10", cfg.data_dir)


def build_model(model: str, precision: str, num_classes: int) -> Any:
    """The seed's MLP (``mlp``) or mltrack's CNN (``cnn``), built under the precision's dtype
    policy by the caller; the last activation in float32 under mixed policies."""
    import keras
    from keras import layers

    if model == "mlp":  # the seed's network, layer by layer
        body = [
            layers.Flatten(),
            layers.Dense(3000, activation="relu"),
            layers.Dense(1000, activation="relu"),
            layers.Dense(num_classes),
            layers.Activation("sigmoid", dtype=output_dtype(precision)),
        ]
    else:
        body = [
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
            layers.Activation("softmax", dtype=output_dtype(precision)),
        ]
    return keras.Sequential([keras.Input((32, 32, 3)), layers.Rescaling(1 / 255), *body])


def train(cfg: Config, data: ArrayDataset, run: Run) -> dict[str, float]:
    import keras

    from mltrack import keras as mk

    keras.utils.set_random_seed(cfg.seed)
    accumulate = cfg.accumulation_steps if cfg.accumulation_steps > 1 else None
    with mk.precision_policy(cfg.precision):
        model = build_model(cfg.model, cfg.precision, data.num_classes)
        make = keras.optimizers.SGD if cfg.optimizer == "sgd" else keras.optimizers.Adam
        optimizer = make(cfg.learning_rate, gradient_accumulation_steps=accumulate)
        model.compile(optimizer, "categorical_crossentropy", metrics=["accuracy"])
    run.log_params({"model.parameters": model.count_params()})
    # The seed's loss takes one-hot labels (keras.utils.to_categorical).
    y_train = keras.utils.to_categorical(data.y_train, data.num_classes)
    y_test = keras.utils.to_categorical(data.y_test, data.num_classes)
    summary = mk.fit(
        run, model, data.x_train, y_train, epochs=cfg.epochs, batch_size=cfg.batch_size,
        validation_data=(data.x_test, y_test), log_every_n_steps=cfg.log_every_n_steps,
        jit_compile=cfg.compile,
    )  # fmt: skip
    metrics = {**summary, **mk.evaluate(run, model, data.x_test, y_test, cfg.batch_size)}
    if cfg.export:
        mk.export(
            run, model, data.x_test[:PROBE_SIZE], precision=cfg.precision, register=cfg.register
        )
    return metrics


EXPERIMENT = Experiment("cifar_amp", Config, load_data, train, __doc__ or "", deviations=DEVIATIONS)


main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
