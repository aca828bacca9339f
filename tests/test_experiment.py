"""Experiments over a real store: one bad child does not end a study; GPU energy is logged."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from mltrack.compare import command as compare
from mltrack.config import ExperimentConfig
from mltrack.experiment import Experiment
from mltrack.tracking.run import Run
from tests.conftest import all_runs, study_runs


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("tiny",)


class Tiny:
    def params(self) -> dict[str, object]:
        return {"dataset": "tiny"}


def train(cfg: Config, data: Tiny, run: Run) -> dict[str, float]:
    if cfg.precision == "fp16" or (cfg.precision == "fp64" and cfg.seed == 0):
        raise RuntimeError("kernel not available")
    run.end_epoch(0, {"loss": 1.0})
    return {"test_accuracy": 0.5}


def experiment() -> Experiment[Config, Tiny]:
    return Experiment("tiny", Config, lambda cfg: Tiny(), train)


def test_a_failing_first_child_leaves_the_others_to_finish(store, client, capsys):
    code = experiment().main(
        ["--precisions", "fp64,fp32", "--repeats", "2", "--tracking-uri", store]
    )
    assert code == 0
    parent, children = study_runs(client)
    ended = sorted(
        (c.data.params["precision"], c.data.params["repeat"], c.info.status) for c in children
    )
    assert ended == [
        ("fp32", "0", "FINISHED"),
        ("fp32", "1", "FINISHED"),
        ("fp64", "0", "FAILED"),
        ("fp64", "1", "FINISHED"),
    ]
    [failed] = [c for c in children if c.info.status == "FAILED"]
    assert failed.data.tags["error"] == "RuntimeError: kernel not available"
    assert parent.info.status == "FINISHED"
    table = client.download_artifacts(parent.info.run_id, "results.md")
    text = Path(table).read_text()
    assert "failed 1" in text and "fp64 repeat 0" in text and "kernel not available" in text
    assert "kernel not available" in capsys.readouterr().out


def test_a_study_whose_children_all_fail_fails_its_parent(store, client):
    code = experiment().main(["--precisions", "fp16", "--repeats", "2", "--tracking-uri", store])
    parent, children = study_runs(client)
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert parent.info.status == "FAILED" and code == 1
    assert parent.data.tags["error"] == "no child run completed (2 ended otherwise)"


class FakeNvml:
    """pynvml with one GPU whose energy counter advances 7.2e6 mJ (2 Wh) per reading."""

    def __init__(self) -> None:
        self.readings = 0

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self.readings += 1
        return 1_000_000_000 + 7_200_000 * self.readings


def test_a_gpu_with_an_energy_counter_gives_the_run_energy_wh(store, client, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    assert experiment().main(["--precision", "fp32", "--tracking-uri", store]) == 0
    [run] = all_runs(client)
    assert run.data.metrics["energy_wh"] == pytest.approx(2.0)
    table = compare.repeats_table(compare.select(client, experiment="tiny"))
    assert "energy_wh" in table.header


def test_without_nvml_there_is_no_energy_metric(store, client, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: a CPU machine
    assert experiment().main(["--precision", "fp32", "--tracking-uri", store]) == 0
    [run] = all_runs(client)
    assert "energy_wh" not in run.data.metrics
