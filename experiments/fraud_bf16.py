"""PaySim fraud detection, Model #1 in FP32 vs Model #2 in BF16 (seed 000_3354411e7b23bd06).

The seed trains the same Keras network in fp32 and in bf16 and compares user, system and total
CPU time, wall time, accuracy and validation loss in its "Inferences" table. Fraud is rare
(about 0.13% of rows), so accuracy alone misleads: every run also logs precision, recall, F1,
PR-AUC and ROC-AUC per epoch, and the class imbalance is handled explicitly (``--imbalance``).
Model #2 uses ``mixed_bf16``: bf16 compute, fp32 variables, float32 sigmoid.

    python -m experiments.fraud_bf16 --data-dir ~/data/paysim          # the Kaggle CSV
    python -m experiments.fraud_bf16 --dataset simulated --rows 200000  # offline
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mltrack.config import ExperimentConfig
from mltrack.data import ArrayDataset, paysim
from mltrack.errors import bad_value
from mltrack.experiment import Experiment, RunResult
from mltrack.metrics import binary_scores
from mltrack.precision import output_dtype
from mltrack.report import PRECISION_ROWS, Row, delta_table, groups_of, number
from mltrack.run import Run

IMBALANCE = ("class_weight", "undersample", "none")
PROBE_SIZE = 64
# The seed's rows, then the scores that matter for a rare positive class.
INFERENCES = [
    *PRECISION_ROWS,
    Row("Precision", "test_precision", number),
    Row("Recall", "test_recall", number),
    Row("F1", "test_f1", number),
    Row("PR-AUC", "test_pr_auc", number),
    Row("ROC-AUC", "test_roc_auc", number),
]


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("paysim", "simulated")

    precision: str = "fp32,mixed_bf16"  # Model #1 and Model #2
    batch_size: int = 256
    epochs: int = 5
    rows: int = field(
        default=200_000,
        metadata={"help": "rows to simulate, or to read from the CSV (0: the whole CSV)"},
    )
    imbalance: str = field(
        default="class_weight",
        metadata={"help": f"how the rare class is handled: {', '.join(IMBALANCE)}"},
    )

    def validate(self) -> None:
        super().validate()
        if self.rows < 0 or (self.dataset == "simulated" and self.rows < 1000):
            raise bad_value("--rows", self.rows, "an integer >= 1000 (0: whole CSV)")
        if self.imbalance not in IMBALANCE:
            raise bad_value("--imbalance", self.imbalance, f"one of {', '.join(IMBALANCE)}")


def load_data(cfg: Config) -> ArrayDataset:
    if cfg.dataset == "simulated":
        frame = paysim.simulate(cfg.rows, cfg.seed)
        return paysim.dataset(frame, "paysim_simulated", f"simulated (seed {cfg.seed})", cfg.seed)
    path = Path(cfg.data_dir or ".") / paysim.FILENAME
    return paysim.dataset(paysim.read_csv(path, cfg.rows), "paysim", str(path), cfg.seed)


def build_model(precision: str, features: int) -> Any:
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((features,)),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(32, activation="relu"),
            layers.Dense(1, activation="sigmoid", dtype=output_dtype(precision)),
        ]
    )


def train(cfg: Config, data: ArrayDataset, run: Run) -> dict[str, float]:
    import keras

    from mltrack import keras as mk
    from mltrack.artifacts import export_keras

    keras.utils.set_random_seed(cfg.seed)
    x, y, class_weight = paysim.balance(data.x_train, data.y_train, cfg.imbalance, cfg.seed)
    run.log_params({"train_rows_after_balancing": len(y), "positives_train": int(y.sum())})
    with mk.precision_policy(cfg.precision):
        model = build_model(cfg.precision, x.shape[1])
        model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=["accuracy"])
    summary = mk.fit(
        run,
        model,
        x,
        y,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        validation_data=(data.x_test, data.y_test),
        class_weight=class_weight,
        callbacks=[mk.BinaryScores(data.x_test, data.y_test)],
        log_every_n_steps=cfg.log_every_n_steps,
    )
    probability = model.predict(data.x_test, batch_size=4096, verbose=0)
    test = {f"test_{k}": v for k, v in binary_scores(data.y_test, probability).items()}
    run.log_metrics(test, step=0)
    if cfg.export:
        export_keras(run, model, data.x_test[:PROBE_SIZE], cfg)
    return {**summary, **test}


def inferences(results: Sequence[RunResult]) -> str:
    """The seed's Inferences table, Model #1 (the first precision) as the baseline."""
    groups = groups_of([r.as_result() for r in results])
    if not any(groups.values()):
        return "no completed runs"
    return str(delta_table(groups, INFERENCES, baseline=results[0].precision))


EXPERIMENT = Experiment(
    "fraud_bf16", Config, load_data, train, __doc__ or "", study_report=inferences
)


main = EXPERIMENT.main  # python -m experiments.NAME, or main(argv) from code


if __name__ == "__main__":
    sys.exit(main())
