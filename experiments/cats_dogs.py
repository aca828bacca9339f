"""Cats vs dogs CNN as a hardware benchmark (seed 001_c81540a7f303f493).

The seed times one training (three Conv2D+MaxPooling pairs, Dense 512, sigmoid; 150×150
input; RMSprop 1e-3; binary cross-entropy; 15 epochs, batch 20) on seven machines and ranks
them by speed-up over a CPU. Every run here carries the hardware fingerprint (``hw.*`` tags),
so each run is a row of that leaderboard. The default loader is the seed's
``ImageDataGenerator.flow_from_directory`` (``legacy``), which decodes every JPEG every epoch as
the seed's times did; ``--loader tf_data`` caches the decoded images (uint8) after epoch 1
(faster, but not the seed's measurement).

    python -m experiments.cats_dogs --data-dir ~/data/cat-vs-dogs-kaggle
    python -m experiments.cats_dogs --dataset synthetic --epochs 3   # offline
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig, option
from mltrack.errors import bad_value
from mltrack.experiment import Experiment
from mltrack.measure.precision import output_dtype
from mltrack.studies.data import images
from mltrack.tracking.run import Run

LOADERS = ("legacy", "tf_data")
IMAGE_SIZE = 150
DEVIATIONS = ("shuffling seeded by --seed (the seed's flow_from_directory shuffled unseeded)",)
CACHE = Path.home() / ".cache" / "mltrack"


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("cats_vs_dogs", "synthetic")
    WRITES_DATA_DIR: ClassVar[tuple[str, ...]] = ("synthetic",)  # created if it is new

    precision: str = "fp32"  # the seed's default TensorFlow precision
    batch_size: int = 20
    epochs: int = 15
    learning_rate: float = field(default=1e-3, metadata={"help": "RMSprop learning rate"})
    loader: str = field(default="legacy", metadata={"help": f"one of {', '.join(LOADERS)}"})
    synthetic_per_class: int = field(
        default=100, metadata={"help": "training images per class for --dataset synthetic"}
    )
    strict_data: bool = option(
        False,
        "refuse image files the loader cannot read (empty, truncated, not images, formats it "
        "skips) instead of skipping and naming them",
    )

    def validate(self) -> None:
        super().validate()
        if self.loader not in LOADERS:
            raise bad_value("--loader", self.loader, f"one of {', '.join(LOADERS)}")
        if self.dataset == "cats_vs_dogs" and not self.data_dir:
            raise bad_value(
                "--data-dir", "", "the folder holding train/ and test/ (or --dataset synthetic)"
            )
        if self.synthetic_per_class < 4:
            raise bad_value("--synthetic-per-class", self.synthetic_per_class, "an integer >= 4")


def load_data(cfg: Config) -> images.ImageFolder:
    check: dict[str, Any] = {"loader": cfg.loader, "strict": cfg.strict_data}
    if cfg.dataset == "synthetic":
        cached = CACHE / f"synthetic_cats_dogs_{cfg.synthetic_per_class}_{cfg.seed}"
        root, n = Path(cfg.data_dir or cached), cfg.synthetic_per_class
        folder = images.synthetic_folder(
            root, n, IMAGE_SIZE, cfg.seed, ours=not cfg.data_dir, **check
        )
    else:
        folder = images.open_folder(Path(cfg.data_dir), **check)
    if folder.skipped:  # skipped, named here, counted in params, listed in an artifact
        print(folder.summary(), file=sys.stderr)
    return folder


def build_model(precision: str) -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)),
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(1, activation="sigmoid", dtype=output_dtype(precision)),
        ]
    )


def loaders(cfg: Config, data: images.ImageFolder) -> tuple[Any, Any]:
    make = images.tf_datasets if cfg.loader == "tf_data" else images.legacy_generators
    return make(data, IMAGE_SIZE, cfg.batch_size, cfg.seed)


def train(cfg: Config, data: images.ImageFolder, run: Run) -> dict[str, float]:
    import keras

    from mltrack import keras as mk
    from mltrack.compare.plots import learning_curves

    keras.utils.set_random_seed(cfg.seed)
    train_data, test_data = loaders(cfg, data)
    with mk.precision_policy(cfg.precision):
        model = build_model(cfg.precision)
        model.compile(
            keras.optimizers.RMSprop(cfg.learning_rate), "binary_crossentropy", metrics=["accuracy"]
        )
    run.log_params({"loader": cfg.loader, "model.parameters": model.count_params()})
    if data.skipped:
        run.log_text(data.skipped_listing(), images.SKIPPED_ARTIFACT)
    summary = mk.fit(
        run, model, train_data, epochs=cfg.epochs, validation_data=test_data,
        samples_per_epoch=data.train_size, log_every_n_steps=cfg.log_every_n_steps,
        jit_compile=cfg.compile,
    )  # fmt: skip
    metrics = {**summary, **mk.evaluate(run, model, test_data)}
    figure = learning_curves(model.history.history, f"cats vs dogs, {cfg.precision}, {cfg.loader}")
    run.log_figure(figure, "learning_curves.png")
    if cfg.export:
        pixels = images.first_pixels(test_data)  # 0-255: the export puts the 1/255 in front
        mk.export(
            run, model, pixels, precision=cfg.precision, register=cfg.register, rescale=1 / 255
        )
    return metrics


EXPERIMENT = Experiment("cats_dogs", Config, load_data, train, __doc__ or "", deviations=DEVIATIONS)


main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
