"""Seed 001 offline: the hardware-benchmark CNN on a synthetic image folder, both loaders."""

from __future__ import annotations

import pytest

from tests.conftest import all_runs, reload_without_mltrack


@pytest.mark.parametrize("loader", ["tf_data", "legacy"])
def test_synthetic_folder_trains_with_curves_and_fingerprint(run_module, client, tmp_path, loader):
    # The synthetic folder is written under $HOME/.cache/mltrack (HOME is tmp_path here).
    result = run_module(
        "experiments.cats_dogs",
        "--dataset",
        "synthetic",
        "--synthetic-per-class",
        "12",
        "--epochs",
        "2",
        "--loader",
        loader,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["reload_ok"] == "true"
    assert run.data.params["loader"] == loader
    assert run.data.params["dataset.train_size"] == "24"
    assert run.data.tags["hw.label"] and run.data.tags["hw.fingerprint"]  # a leaderboard row
    for key in ("accuracy", "val_accuracy", "loss", "val_loss", "epoch_wall_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "learning_curves.png" in artifacts
    [model] = client.search_logged_models([run.info.experiment_id])  # the export, as a model
    assert model.source_run_id == run.info.run_id
    # The export takes raw pixels (uint8 or float 0-255): the loaders' 1/255 is in the model.
    reload_without_mltrack(client, run.info.run_id, "keras", tmp_path, (150, 150, 3), classes=1)


def test_real_dataset_needs_a_folder(run_module, tmp_path):
    result = run_module("experiments.cats_dogs", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert f"--data-dir: {tmp_path}/train/cats not found" in result.stderr
    assert not (tmp_path / "mlruns").exists()
