"""Sweeps: the search space and objectives, then real sweeps against real stores."""

from __future__ import annotations

import pytest

from mltrack.config import ExperimentConfig
from mltrack.errors import UsageError
from mltrack.measure.environment import Gpu, Hardware
from mltrack.sweep import Objective, SearchSpace, read_space_file

CPU_BF16 = Hardware("Xeon", 2, avx512_bf16=True, amx_bf16=False)
CPU_OLD = Hardware("Old", 2, avx512_bf16=False, amx_bf16=False)
A100 = Hardware("x", 8, False, False, (Gpu("A100", 40000, (8, 0)),))


def test_default_space_follows_the_hardware_and_the_batch_size():
    cfg = ExperimentConfig(batch_size=64)
    assert SearchSpace.default(cfg, CPU_BF16).precision == ["fp32", "mixed_bf16"]
    assert SearchSpace.default(cfg, CPU_OLD).precision == ["fp32"]
    assert SearchSpace.default(cfg, A100).precision == ["fp32", "mixed_bf16", "mixed_fp16"]
    space = SearchSpace.default(cfg, CPU_BF16)
    assert space.batch_size == [32, 64, 128] and space.accumulation_steps == [1, 2, 4]


def test_space_file_yaml_and_toml(tmp_path):
    space = SearchSpace(["fp32"], [32], [1])
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text(
        "precision: [fp32, bf16]\nbatch_size: [16, 32]\nlearning_rate: {low: 0.0001, high: 0.01}\n"
    )
    space.update(read_space_file(str(yaml_file)), "--space")
    assert space.precision == ["fp32", "bf16"] and space.batch_size == [16, 32]
    assert space.learning_rate == (0.0001, 0.01)
    toml_file = tmp_path / "space.toml"
    toml_file.write_text("accumulation_steps = [1, 8]\n")
    space.update(read_space_file(str(toml_file)), "--space")
    assert space.accumulation_steps == [1, 8]


@pytest.mark.parametrize(
    ("space", "has_lr", "message"),
    [
        (
            SearchSpace(["fp32", "fp8"], [32], [1]),
            False,
            r"^--space-precision: got 'fp8', expected one of fp64, fp32",
        ),
        (SearchSpace(["auto"], [32], [1]), False, r"^--space-precision: got 'auto'"),
        (SearchSpace(["fp32"], [0], [1]), False, r"^--space-batch-size: got 0, expected integers"),
        (SearchSpace(["fp32"], [8], [1], (0.1, 0.01)), True, r"^--space-learning-rate: got"),
        (SearchSpace(["fp32"], [8], [1], (0.001, 0.01)), False, r"no --learning-rate$"),
    ],
)
def test_space_values_outside_the_vocabulary_are_usage_errors(space, has_lr, message):
    with pytest.raises(UsageError, match=message):
        space.validate(has_learning_rate=has_lr)


def test_grid_needs_categorical_values_only():
    assert SearchSpace(["fp32"], [8, 16], [1]).grid()["batch_size"] == [8, 16]
    with pytest.raises(UsageError, match=r"^--sampler: got 'grid'"):
        SearchSpace(["fp32"], [8], [1], (1e-4, 1e-2)).grid()


def test_objective_parsing():
    assert Objective.parse("val_accuracy:max") == Objective("val_accuracy", "maximize")
    assert Objective.parse("total_wall_s:min").direction == "minimize"
    with pytest.raises(UsageError, match=r"^--objective: got 'val_accuracy', expected METRIC"):
        Objective.parse("val_accuracy")


def test_parameter_importances_reach_the_parent_once_five_trials_completed(store, client):
    import optuna

    from mltrack.sweep.parent import log_importances
    from mltrack.tracking.run import start_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        batch = trial.suggest_categorical("batch_size", [16, 32, 64])
        steps = trial.suggest_categorical("accumulation_steps", [1, 2, 4])
        return batch / 64 + 0.01 * steps  # batch size matters most

    with start_run("sweep", tracking_uri=store) as parent:
        study.optimize(objective, n_trials=4)
        assert log_importances(parent, study) == {}  # four: too few to say anything
        study.optimize(objective, n_trials=8)
        values = log_importances(parent, study)
    metrics = client.get_run(parent.run_id).data.metrics
    assert set(values) == {"importance.batch_size", "importance.accumulation_steps"}
    assert metrics["importance.batch_size"] > metrics["importance.accumulation_steps"]
    assert sum(values.values()) == pytest.approx(1.0)


def test_a_study_resumed_against_another_mlflow_store_is_one_line(store, tmp_path):
    """Issue 29: its trials would be split between stores, and its parent is not in this one."""
    from types import SimpleNamespace

    from mltrack.errors import UsageError
    from mltrack.sweep.parent import same_store

    started = "postgresql://alice:secret@127.0.0.1/mlflow"
    study = SimpleNamespace(
        study_name="s",
        user_attrs={"mlflow_tracking_uri": "postgresql://alice:<redacted>@127.0.0.1/mlflow"},
    )
    same_store(study, started, "any")  # the same store: fine
    with pytest.raises(
        UsageError,
        match=r"--tracking-uri: got sqlite:.*expected the MLflow store "
        r"study 's' started in \(postgresql://alice:<redacted>@127.0.0.1/mlflow\)",
    ):
        same_store(study, store, "any")
    # A study from before the store was kept: the parent run not in this store says it.
    old = SimpleNamespace(study_name="s", user_attrs={})
    with pytest.raises(UsageError, match=r"started in \(another store\)"):
        same_store(old, store, "0123456789abcdef0123456789abcdef")


def test_compile_is_sweepable_like_precision():
    import optuna

    from mltrack.errors import UsageError
    from mltrack.sweep.space import SearchSpace

    space = SearchSpace(["fp32"], [32], [1])
    space.update({"compile": ["true", "False"]}, "--space-compile")
    assert space.compile == [False, True] and space.grid()["compile"] == [False, True]
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid()))
    seen = {space.suggest(study.ask())["compile"] for _ in range(2)}
    assert seen == {False, True}  # the grid trains both
    with pytest.raises(UsageError, match=r"--space-compile: got .*compile as true, false or"):
        space.update({"compile": ["maybe"]}, "--space-compile")
