"""Seed 001 offline: the hardware-benchmark CNN on a synthetic image folder, both loaders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import all_runs, check_efficiency, reload_without_mltrack
from tests.data.test_images import write_faulty


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
    assert result.stderr == "", result.stderr[-3000:]  # no framework warning, export included
    [run] = all_runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["reload_ok"] == "true"
    assert run.data.params["loader"] == loader
    check_efficiency(client, run, "tensorflow")
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


def test_synthetic_data_dir_is_created_when_new_and_never_written_over(tmp_path):
    """Issue 19, item 8: `--dataset synthetic --data-dir NEW` was refused ("expected an
    existing directory") although the loader writes the folder."""
    from experiments.cats_dogs import EXPERIMENT, load_data
    from mltrack.errors import UsageError
    from mltrack.studies.data import DataUnavailable

    new = tmp_path / "new" / "images"
    args = ["--dataset", "synthetic", "--synthetic-per-class", "4", "--data-dir", str(new)]
    folder = load_data(EXPERIMENT.parse(args))
    assert folder.counts == {"train/cats": 4, "train/dogs": 4, "test/cats": 2, "test/dogs": 2}
    assert load_data(EXPERIMENT.parse(args)).params() == folder.params()  # read, not rewritten
    with pytest.raises(DataUnavailable, match=r"--synthetic-per-class 4 and --seed 0, not 5"):
        load_data(EXPERIMENT.parse([*args[:3], "5", *args[4:]]))
    # A folder of real images (no synthetic.json) is never written into.
    (new / "synthetic.json").unlink()
    with pytest.raises(DataUnavailable, match=r"train exists without the synthetic\.json"):
        load_data(EXPERIMENT.parse(args))
    # Only a dataset that is written may name a folder that does not exist yet, and it must
    # be a folder.
    with pytest.raises(UsageError, match=r"^--data-dir: got '.*', expected an existing dir"):
        EXPERIMENT.parse(["--data-dir", str(tmp_path / "absent")])
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(UsageError, match=r"^--data-dir: got '.*a_file/x', expected a directory"):
        EXPERIMENT.parse([*args[:4], "--data-dir", str(a_file / "x")])


@pytest.mark.parametrize("loader", ["legacy", "tf_data"])
def test_unreadable_images_are_skipped_counted_and_named(run_module, client, tmp_path, loader):
    """Issue 19, item 1: a zero-byte JPEG ended the run FAILED with a traceback that named no
    file; --loader legacy counted the GIFs it skips into train_size and samples/s."""
    skipped = write_faulty(tmp_path / "data")[loader]
    result = run_module(
        "experiments.cats_dogs",
        *("--data-dir", str(tmp_path / "data"), "--loader", loader),
        *("--epochs", "1", "--batch-size", "4", "--no-export"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [line] = [s for s in result.stderr.splitlines() if "skipped" in s]
    assert f"skipped {len(skipped)} image files --loader {loader} cannot read: " in line
    assert "train/cats/666.jpg (empty)" in line and "train/cats/cut.jpg (truncated)" in line
    [run] = all_runs(client)
    assert run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    assert params["dataset.skipped_files"] == str(len(skipped))
    assert params["dataset.train_size"] == "11" and params["dataset.test_size"] == "4"
    # The throughput divides by what the loader yielded: train_size, not the files on disk.
    assert metrics["samples_per_s"] * metrics["train_wall_s"] == pytest.approx(11, rel=1e-6)
    listing = Path(client.download_artifacts(run.info.run_id, "dataset/skipped_files.tsv"))
    rows = dict(line.split("\t") for line in listing.read_text().splitlines())
    assert set(rows) == set(skipped) and rows["train/cats/666.jpg"] == "empty"


def test_strict_data_refuses_an_unreadable_image_before_any_run(run_module, tmp_path):
    write_faulty(tmp_path / "data")
    result = run_module(
        "experiments.cats_dogs", "--data-dir", str(tmp_path / "data"), "--strict-data"
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"error: --data-dir: {tmp_path}/data/train/cats/666.jpg: empty (and 6 more" in line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()
