"""The TrainerCallback: a transformers.Trainer run gets the ledger's per-epoch metrics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mltrack.huggingface import MltrackCallback
from mltrack.tracking.run import start_run
from tests.conftest import all_runs

pytestmark = pytest.mark.torch

TIMING = ("train_wall_s", "val_wall_s", "epoch_wall_s", "samples_per_s", "epoch_user_cpu_s")


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int, poison: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        if poison:
            self.x[3] = float("nan")
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.net(x)
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return {"loss": loss, "logits": logits}


def history_of(client, run, key: str) -> list[float]:
    points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    return [m.value for m in points]


def train(store: str, tmp_path, epochs: int = 2, poison: bool = False, **kwargs) -> None:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        report_to="none",
        save_strategy="no",
        eval_strategy="epoch",
        logging_strategy="epoch",
        num_train_epochs=epochs,
        per_device_train_batch_size=8,
        use_cpu=True,
        disable_tqdm=True,
        **kwargs,
    )
    with start_run("hf", tracking_uri=store) as run:
        callback = MltrackCallback(run, flops_per_sample=1e6)
        trainer = Trainer(
            model=Classifier(),
            args=args,
            train_dataset=Pairs(64, poison),
            eval_dataset=Pairs(16),
            callbacks=[callback],
        )
        trainer.train()


def test_each_epoch_has_the_ledgers_metrics_and_the_run_the_summary(store, client, tmp_path):
    train(store, tmp_path)
    [run] = all_runs(client, "hf")
    history = {
        key: [
            m.value
            for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        ]
        for key in (*TIMING, "loss", "val_loss", "peak_rss_mb", "achieved_tflops", "learning_rate")
    }
    assert all(len(values) == 2 for values in history.values()), history
    for train_s, val_s, epoch_s, rate in zip(*(history[k] for k in TIMING[:4]), strict=True):
        assert train_s > 0 and val_s > 0 and train_s + val_s <= epoch_s * (1 + 1e-9)
        assert rate == pytest.approx(64 / train_s, rel=1e-6)
    assert all(math.isfinite(v) for v in history["loss"])
    assert history_of(client, run, "optimizer_steps") == [8, 16]  # 64 samples in batches of 8
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert metrics["epochs_completed"] == 2 and metrics["total_wall_s"] > 0
    assert tags["torch.precision_run"] == "fp32" and tags["torch.device"] == "cpu"
    assert params["hf.save_strategy"] == "no" and params["hf.per_device_train_batch_size"] == "8"
    assert "hf.output_dir" not in params and params["model.train_flops_per_sample"] == "1e+06"
    assert not (tmp_path / "trainer").exists() or not list((tmp_path / "trainer").iterdir())


@pytest.mark.parametrize(
    ("asked", "ran"), [({"fp16": True}, "fp32"), ({"bf16": True}, "mixed_bf16")]
)
def test_the_precision_tagged_is_what_ran_not_what_was_asked(store, client, tmp_path, asked, ran):
    """accelerate runs no fp16 autocast on a CPU: fp16=True trains in fp32 there."""
    train(store, tmp_path, epochs=1, **asked)
    [run] = all_runs(client, "hf")
    assert run.data.tags["torch.precision_run"] == ran
    assert run.data.params[f"hf.{next(iter(asked))}"] == "True"


def test_a_nan_loss_ends_the_training_as_diverged(store, client, tmp_path):
    train(store, tmp_path, epochs=3, poison=True)
    [run] = all_runs(client, "hf")
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", "diverged")
    assert run.data.tags["diverged_epoch"] == "0"
    assert len(client.get_metric_history(run.info.run_id, "epoch_wall_s")) == 1  # stopped


def trainer_args(tmp_path, epochs: int = 2, **kwargs):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(tmp_path / "trainer"), save_strategy="no", eval_strategy="epoch",
        logging_strategy="epoch", num_train_epochs=epochs, per_device_train_batch_size=8,
        use_cpu=True, disable_tqdm=True, **{"report_to": "none", **kwargs},
    )  # fmt: skip


def learning_rates(trial) -> dict[str, float]:
    return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)}


def test_a_hyperparameter_search_makes_a_child_run_per_trial(store, client, tmp_path):
    """Issue 29: both trials logged into one run, epochs numbered on ("epoch 3/2")."""
    from transformers import Trainer

    with start_run("hf-search", tracking_uri=store) as run:
        trainer = Trainer(
            model_init=Classifier, args=trainer_args(tmp_path), train_dataset=Pairs(64),
            eval_dataset=Pairs(16), callbacks=[MltrackCallback(run)],
        )  # fmt: skip
        best = trainer.hyperparameter_search(
            backend="optuna", n_trials=2, direction="minimize",
            hp_space=learning_rates,
        )  # fmt: skip
    runs = all_runs(client, "hf-search")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 2
    rates = set()
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags
        rates.add(child.data.params["hf.learning_rate"])
        assert child.data.params["trial.learning_rate"] == child.data.params["hf.learning_rate"]
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert sorted(steps) == [0, 1]  # each trial's own epochs from 0
    assert len(rates) == 2
    assert "hf.learning_rate" not in parent.data.params  # the parent holds no trial's params
    losses = {c.info.run_id: c.data.metrics["val_loss"] for c in children}
    assert parent.data.tags["best_trial_run_id"] == min(losses, key=losses.__getitem__)
    assert best.objective == pytest.approx(min(losses.values()), rel=1e-4)


def test_a_second_train_with_the_same_callback_is_its_own_child_run(store, client, tmp_path):
    from transformers import Trainer

    with start_run("hf-twice", tracking_uri=store) as run:
        trainer = Trainer(
            model=Classifier(), args=trainer_args(tmp_path, epochs=1), train_dataset=Pairs(32),
            eval_dataset=Pairs(8), callbacks=[MltrackCallback(run)],
        )  # fmt: skip
        trainer.train()
        trainer.train()
    runs = all_runs(client, "hf-twice")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    [child] = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    for run_ in (parent, child):  # one training each, never two mixed in one run
        steps = [m.step for m in client.get_metric_history(run_.info.run_id, "val_loss")]
        assert steps == [0], (run_.data.tags, steps)
    assert child.data.tags["mltrack.trial"] == "train-2"


def test_report_to_mlflow_beside_the_callback_is_called_out(store, client, tmp_path):
    # client: MLFLOW_TRACKING_URI is the test's store, where the Trainer's own callback logs
    from transformers import Trainer

    with start_run("hf-two-loggers", tracking_uri=store) as run:
        trainer = Trainer(
            model=Classifier(), args=trainer_args(tmp_path, epochs=1, report_to="mlflow"),
            train_dataset=Pairs(16), eval_dataset=Pairs(8), callbacks=[MltrackCallback(run)],
        )  # fmt: skip
        with pytest.warns(UserWarning, match="report_to='none' to keep one"):
            trainer.train()
