"""Typed experiment configuration whose fields are the command-line flags (design.md §3).

Every experiment's ``Config`` is a dataclass deriving from ``ExperimentConfig``; each field
becomes ``--field-name`` with its type, default and help (``field(metadata={"help": ...})``).
Flags shared by all experiments keep one spelling. Bad values are reported in one line naming
the flag, the value and what is expected (``UsageError``, exit code 2) before anything runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

from mltrack.errors import UsageError, bad_value
from mltrack.measure.precision import PRECISIONS

C = TypeVar("C", bound="ExperimentConfig")


FRAMEWORK_MODULES = r"(keras|tensorflow|torch|torchvision|transformers|accelerate)(\..*)?$"


def quiet_frameworks(verbose: bool, framework: str = "") -> None:
    """No TensorFlow/absl/oneDNN/CUDA banner and no MLflow INFO lines unless ``--verbose``.

    Runs before TensorFlow or MLflow is imported: they read these variables when they load (a
    value the user set stays). TensorFlow's absl logs a few lines while its shared libraries
    load, before ``TF_CPP_MIN_LOG_LEVEL`` applies; so a Keras experiment imports Keras here,
    with file descriptor 2 on /dev/null for the length of that import only.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO, WARNING and ERROR lines
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its logger's warning_once lines
    # Python warnings the frameworks raise about their own internals (Keras' "shuffle ...
    # ignored" for a tf.data input, transformers' deprecations, the TracerWarnings of tracing a
    # model for export, torch's pin-memory notice): nothing a user of an experiment can act on;
    # mltrack says what matters itself (e.g. pin_memory not in effect).
    warnings.filterwarnings("ignore", module=FRAMEWORK_MODULES)
    if framework == "keras" and "keras" not in sys.modules:
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import keras  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def help_(text: str) -> dict[str, str]:
    return {"help": text}


def option(default: Any, text: str) -> Any:
    """A config field that is a flag: its default and its ``--help`` text."""
    return field(default=default, metadata=help_(text))


@dataclass
class ExperimentConfig:
    """Flags every experiment has. Subclasses override defaults and add their own fields."""

    # The datasets an experiment accepts; the first is the default.
    DATASETS: ClassVar[tuple[str, ...]] = ("synthetic",)
    # Defaults a sweep's trials take instead of the seed's, unless the flag is given.
    SWEEP_DEFAULTS: ClassVar[dict[str, Any]] = {}
    # Datasets the experiment writes into --data-dir (a generated image folder): that folder
    # may not exist yet, the loader creates it; every other dataset reads an existing one.
    WRITES_DATA_DIR: ClassVar[tuple[str, ...]] = ()

    precision: str = field(
        default="auto",
        metadata=help_(
            f"one of {', '.join(PRECISIONS)}, or a comma list for a study over several "
            "(also spelled --precisions)"
        ),
    )
    batch_size: int = field(default=32, metadata=help_("samples per micro-batch"))
    accumulation_steps: int = field(
        default=1, metadata=help_("micro-batches per optimizer step (effective batch = b × k)")
    )
    epochs: int = field(default=5, metadata=help_("training epochs"))
    repeats: int = field(default=1, metadata=help_("runs per precision; >1 makes a study"))
    seed: int = field(default=0, metadata=help_("random seed for data, weights and shuffling"))
    dataset: str = field(default="", metadata=help_("dataset name (see the experiment)"))
    data_dir: str = field(default="", metadata=help_("directory holding the dataset files"))
    experiment: str = field(default="", metadata=help_("MLflow experiment name"))
    tracking_uri: str = field(
        default="", metadata=help_("MLflow store (default: MLFLOW_TRACKING_URI or mlruns/)")
    )
    offline: bool = field(
        default=False,
        metadata=help_(
            "journal the runs without trying the store; `mltrack sync` delivers them later "
            "(also MLTRACK_OFFLINE=1)"
        ),
    )
    log_every_n_steps: int = field(
        default=0, metadata=help_("also log batch metrics every N steps (0: per epoch only)")
    )
    compile: bool = field(
        default=False,
        metadata=help_(
            "compile the model: torch.compile (PyTorch), XLA jit_compile (Keras); its one-off "
            "cost is logged apart (compile_wall_s)"
        ),
    )
    checkpoint: bool = field(
        default=False,
        metadata=help_("keep a training checkpoint each epoch, so --resume can continue the run"),
    )
    resume: str = field(
        default="",
        metadata=help_("continue this run (trained with --checkpoint): its epochs go on"),
    )
    export: bool = field(
        default=True, metadata=help_("export the model and verify it reloads (sweeps: --no-export)")
    )
    register: str = field(
        default="",
        metadata=help_("register the exported MLflow model as a new version of this model name"),
    )
    system_metrics: bool = field(
        default=False,
        metadata=help_("log MLflow's system metrics (CPU, memory, disk, network, GPU) over time"),
    )
    system_metrics_interval: float = field(
        default=10.0, metadata=help_("seconds between system-metrics samples")
    )
    verbose: bool = field(
        default=False,
        metadata=help_("show the frameworks' start-up logs (TensorFlow, absl, oneDNN, CUDA)"),
    )

    def __post_init__(self) -> None:
        if not self.dataset:
            self.dataset = self.DATASETS[0]

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.accumulation_steps

    def logged(self) -> dict[str, Any]:
        """The config as a run's params: each setting as in effect on this machine. A subclass
        whose setting may not take effect logs what ran under the flag's name and the request
        as ``<name>_requested`` (as ``precision`` and ``precision_requested``). ``resume`` is
        not a param: a resumed run's params are the ones it started with."""
        values = dataclasses.asdict(self)
        values.pop("resume", None)
        return values

    def expand(self) -> None:
        """Expand convenience flags (``--tuned``) into the fields they stand for.

        Called once, when the command line is parsed, never by ``__post_init__``: a sweep's
        ``dataclasses.replace`` must train exactly the values Optuna recorded.
        """

    def precision_list(self) -> list[str]:
        """The precisions this invocation trains, in order."""
        return [p.strip() for p in self.precision.split(",") if p.strip()]

    def validate(self) -> None:
        """Raise ``UsageError`` for the first bad value. Subclasses extend and call super()."""
        for name in ("batch_size", "epochs", "repeats", "accumulation_steps"):
            value = getattr(self, name)
            if value < 1:
                raise bad_value(flag(name), value, "an integer >= 1")
        if self.system_metrics_interval <= 0:
            raise bad_value(
                "--system-metrics-interval", self.system_metrics_interval, "a number > 0"
            )
        if self.register and not self.register.strip():
            raise bad_value("--register", self.register, "a model name")
        if self.register and not self.export:
            raise bad_value("--register", self.register, "an exported model (drop --no-export)")
        if self.log_every_n_steps < 0:
            raise bad_value("--log-every-n-steps", self.log_every_n_steps, "an integer >= 0")
        listed = self.precision_list()
        if not listed:
            raise bad_value(
                "--precision", self.precision, f"one or more of {', '.join(PRECISIONS)}"
            )
        for p in listed:
            if p not in PRECISIONS:
                raise bad_value("--precision", p, f"one of {', '.join(PRECISIONS)}")
        if self.dataset not in self.DATASETS:
            raise bad_value("--dataset", self.dataset, f"one of {', '.join(self.DATASETS)}")
        if self.data_dir:
            self._validate_data_dir(Path(self.data_dir))
        if self.resume:
            self._validate_resume(listed)

    def _validate_resume(self, precisions: list[str]) -> None:
        from mltrack.tracking.resume import checkpoint_dir

        if len(precisions) > 1 or self.repeats > 1:
            raise bad_value("--resume", self.resume, "one run (one precision, --repeats 1)")
        if not checkpoint_dir(self.resume).is_dir():
            raise bad_value(
                "--resume", self.resume, f"a run trained with --checkpoint on this machine "
                f"(no checkpoint in {checkpoint_dir(self.resume)})"
            )  # fmt: skip

    def _validate_data_dir(self, path: Path) -> None:
        if self.dataset in self.WRITES_DATA_DIR:
            # Written here: the folder, or the nearest folder above it that exists (it is
            # created below that), must be a directory this process can write into.
            existing = next(p for p in (path, *path.absolute().parents) if p.exists())
            if not existing.is_dir():
                raise bad_value("--data-dir", self.data_dir, "a directory (or a new one's path)")
            if not os.access(existing, os.R_OK | os.W_OK | os.X_OK):
                raise bad_value(
                    "--data-dir", self.data_dir, f"a directory this user can write ({existing})"
                )
            return
        if not path.is_dir():
            raise bad_value("--data-dir", self.data_dir, "an existing directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise bad_value("--data-dir", self.data_dir, "a readable directory")

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def for_sweep(self, argv: Sequence[str]) -> None:
        """Take ``SWEEP_DEFAULTS`` for the fields whose flags ``argv`` does not give."""
        for name, value in self.SWEEP_DEFAULTS.items():
            given = flag(name)
            if not any(a == given or a.startswith(given + "=") for a in argv):
                setattr(self, name, value)
        self.validate()


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump) and exits 2 via UsageError."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _field_type(tp: Any) -> type:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _field_type(args[0])
    return typing.cast(type, tp)


def _convert(kind: type, name: str) -> Any:
    def parse(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            expected = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
            raise argparse.ArgumentTypeError(f"got {text!r}, expected {expected}") from None

    parse.__name__ = kind.__name__
    return parse


def build_parser(cls: type[ExperimentConfig], prog: str, description: str) -> _Parser:
    parser = _Parser(
        prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind = _field_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        helptext = f.metadata.get("help", "")
        if f.name == "dataset":
            helptext = f"one of {', '.join(cls.DATASETS)}"
            default = cls.DATASETS[0]
        names = [flag(f.name)]
        if f.name == "precision":
            names.append("--precisions")  # the spelling a multi-precision study reads best in
        options: dict[str, Any] = {"dest": f.name, "default": default, "help": helptext}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _convert(kind, f.name)
        parser.add_argument(*names, **options)
    return parser


def parse_config(
    cls: type[C], argv: Sequence[str] | None, prog: str = "experiment", description: str = ""
) -> C:
    """Parse and validate flags into ``cls``; raise ``UsageError`` on the first problem."""
    parser = build_parser(cls, prog, description)
    namespace = parser.parse_args(argv)
    config = cls(**vars(namespace))
    config.expand()
    config.validate()
    return config
