"""The docs' "Your own training" examples (docs/own-training.md, the README shows two of them),
run as written from a folder outside the project (issue 20): each gives a run with the ledger's
metrics and the precision tags."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CACHE, ROOT, all_runs, study_runs

EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```python\n(.*?)```", re.S)


def docs_examples() -> dict[str, str]:
    """The examples of docs/own-training.md by file name (tests/test_docs.py holds the README's
    copies equal to them)."""
    return dict(EXAMPLE.findall((ROOT / "docs" / "own-training.md").read_text()))


def outside_env(folder: Path, store: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mltrack as installed
    env.update(MLFLOW_TRACKING_URI=store, MLTRACK_CACHE_DIR=str(CACHE), HOME=str(folder))
    return env


def run_example(folder: Path, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=folder,
        env=outside_env(folder, store),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_docs_have_the_examples():
    assert set(docs_examples()) == {
        "keras_fit.py",
        "torch_fit.py",
        "own_loop.py",
        "hf_trainer.py",
        "my_study.py",
    }


@pytest.mark.parametrize(
    ("example", "experiment", "epochs", "precision_tag"),
    [
        ("keras_fit.py", "my-keras-model", 3, "keras.compute_dtypes"),
        ("torch_fit.py", "my-torch-model", 3, "torch.precision_run"),
        ("own_loop.py", "my-own-loop", 3, "precision"),
        ("hf_trainer.py", "my-transformer", 2, "torch.precision_run"),
    ],
)
def test_a_docs_example_runs_outside_the_project_with_the_ledger(
    example, experiment, epochs, precision_tag, tmp_path, store, client
):
    folder = tmp_path / "elsewhere"  # not the project: mltrack comes from the installed package
    folder.mkdir()
    (folder / example).write_text(docs_examples()[example])
    result = run_example(folder, store, example)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = all_runs(client, experiment)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    assert run.data.tags["precision"] in ("fp32", "float32") and run.data.tags[precision_tag]
    for key in ("train_wall_s", "samples_per_s", "epoch_wall_s", "epoch_user_cpu_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(epochs)), key
    assert run.data.metrics["total_wall_s"] > 0
    if example != "hf_trainer.py":  # the Trainer's loss is logged with its evaluation
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == epochs
    if example == "own_loop.py":  # FLOPs counted: MFU against this machine's peak
        assert 0 < run.data.metrics["mfu"] <= 1
    if example == "keras_fit.py":  # the optional export: a verified logged model
        assert run.data.tags["reload_ok"] == "true"
        [model] = client.search_logged_models([run.info.experiment_id])
        assert model.source_run_id == run.info.run_id


def test_your_own_experiment_module_runs_and_sweeps_from_its_folder(tmp_path, store, client):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "my_study.py").write_text(docs_examples()["my_study.py"])
    study = run_example(
        folder, store, "-m", "my_study", "--precisions", "fp32,mixed_bf16", "--no-export"
    )
    assert study.returncode == 0, study.stderr[-3000:]
    parent, children = study_runs(client)
    assert {r.data.params["precision"] for r in children} == {"fp32", "mixed_bf16"}
    assert all(r.data.tags["mltrack.module"] == "my_study" for r in (parent, *children))
    assert all(len(client.get_metric_history(r.info.run_id, "val_accuracy")) == 3 for r in children)

    bad = run_example(folder, store, "-m", "my_study", "--units", "many")
    assert bad.returncode == 2 and "--units" in bad.stderr and "Traceback" not in bad.stderr

    mltrack = str(Path(sys.executable).with_name("mltrack"))
    sweep = subprocess.run(
        [
            *(mltrack, "sweep", "my_study", "--trials", "2", "--sampler", "random"),
            *("--pruner", "none", "--space-accumulation-steps", "1", "--space-precision", "fp32"),
            "--no-export",
        ],
        cwd=folder,
        env=outside_env(folder, store),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    trials = [r for r in all_runs(client, "my_study") if "optuna.trial" in r.data.tags]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)


def test_a_pytorch_install_resolves_without_tensorflow():
    """``pip install -e '.[torch]'`` in a fresh environment: pip's own resolver, asked for a
    report of what it would install (nothing is installed)."""
    report = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"),
            *("--quiet", "--report", "-", "-e", f"{ROOT}[torch]"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    names = {i["metadata"]["name"].lower() for i in json.loads(report.stdout)["install"]}
    assert {"torch", "torchvision", "mlflow", "optuna"} <= names
    assert not names & {"tensorflow", "keras", "transformers", "h5py"}, names
