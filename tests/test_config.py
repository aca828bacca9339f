from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from mltrack.config import ExperimentConfig, parse_config
from mltrack.errors import UsageError


@dataclass
class Config(ExperimentConfig):
    DATASETS: ClassVar[tuple[str, ...]] = ("cifar10", "synthetic")
    learning_rate: float = 1e-3


def test_defaults_and_flags():
    cfg = parse_config(
        Config,
        [
            "--batch-size",
            "64",
            "--accumulation-steps",
            "4",
            "--precision",
            "mixed_bf16",
            "--learning-rate",
            "0.01",
        ],
    )
    assert (cfg.batch_size, cfg.accumulation_steps, cfg.precision) == (64, 4, "mixed_bf16")
    assert cfg.effective_batch_size == 256
    assert cfg.learning_rate == 0.01
    assert cfg.dataset == "cifar10"  # the first of DATASETS


def test_precisions_is_a_comma_list_spelling_of_precision():
    cfg = parse_config(Config, ["--precisions", "fp32, mixed_bf16"])
    assert cfg.precision_list() == ["fp32", "mixed_bf16"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--precision", "fp17"], r"^--precision: got 'fp17', expected one of fp64, fp32"),
        (["--precisions", "fp32,fp17"], r"^--precision: got 'fp17', expected one of"),
        (["--precision", ","], r"^--precision: got ',', expected one or more of"),
        (["--batch-size", "0"], r"^--batch-size: got 0, expected an integer >= 1$"),
        (["--epochs", "-1"], r"^--epochs: got -1, expected an integer >= 1$"),
        (["--accumulation-steps", "0"], r"^--accumulation-steps: got 0, expected an integer"),
        (["--batch-size", "ten"], r"argument --batch-size: got 'ten', expected an integer$"),
        (
            ["--dataset", "imagenet"],
            r"^--dataset: got 'imagenet', expected one of cifar10, synthetic$",
        ),
        (["--data-dir", "/no/such/dir"], r"^--data-dir: got '/no/such/dir', expected an existing"),
        (["--bogus", "1"], r"unrecognized arguments: --bogus 1"),
    ],
)
def test_bad_input_is_one_line_naming_flag_value_and_expectation(argv, message):
    with pytest.raises(UsageError, match=message) as info:
        parse_config(Config, argv)
    assert "\n" not in str(info.value)


def test_data_dir_that_is_a_file(tmp_path):
    a_file = tmp_path / "cifar.tar.gz"
    a_file.write_bytes(b"")
    with pytest.raises(
        UsageError, match=r"^--data-dir: got '.*cifar.tar.gz', expected an existing"
    ):
        parse_config(Config, ["--data-dir", str(a_file)])


def test_unreadable_data_dir(tmp_path, monkeypatch):
    # Tests run as root on CI, where chmod 0 still reads; fake the permission check instead.
    monkeypatch.setattr("mltrack.config.os.access", lambda path, mode: False)
    with pytest.raises(UsageError, match=r"^--data-dir: got '.*', expected a readable directory$"):
        parse_config(Config, ["--data-dir", str(tmp_path)])


def test_tuned_is_expanded_once_when_parsed_so_a_sweep_trains_what_optuna_recorded():
    import dataclasses

    from experiments.cifar_torch import EXPERIMENT

    cfg = EXPERIMENT.parse(["--tuned", "--dataset", "synthetic"])
    assert (cfg.accumulation_steps, cfg.pin_memory) == (2, True)  # the seed's perf arm
    trial = dataclasses.replace(cfg, accumulation_steps=1)  # what a sweep does per trial
    assert trial.accumulation_steps == 1
    explicit = EXPERIMENT.parse(["--tuned", "--accumulation-steps", "4"])
    assert explicit.accumulation_steps == 4  # an explicit flag wins over the convenience


def test_a_sweep_takes_the_experiments_sweep_defaults_unless_the_flag_is_given():
    from experiments.fashion_mnist_precision import EXPERIMENT

    seed = EXPERIMENT.parse([])
    assert seed.protocol == "seed"  # the experiment's own default: the seed's protocol
    seed.for_sweep([])
    assert seed.protocol == "mltrack"  # a sweep stops at the first NaN and validates
    for argv in (["--protocol", "seed"], ["--protocol=seed"]):
        cfg = EXPERIMENT.parse(argv)
        cfg.for_sweep(argv)
        assert cfg.protocol == "seed", argv
