"""The search space of a sweep: precision × batch size × accumulation steps (× learning rate
× compile), and the objective(s) it optimizes."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltrack.config import ExperimentConfig
from mltrack.errors import bad_value
from mltrack.measure.environment import Hardware
from mltrack.measure.precision import CONCRETE, resolve


@dataclass
class SearchSpace:
    precision: list[str]
    batch_size: list[int]
    accumulation_steps: list[int]
    learning_rate: tuple[float, float] | None = None  # log-uniform range
    compile: list[bool] | None = None  # compiled or not: a technique like precision

    @classmethod
    def default(cls, cfg: ExperimentConfig, hardware: Hardware) -> SearchSpace:
        """Precisions this hardware runs fast, batch sizes around the experiment's default."""
        precisions = ["fp32"]
        fast = resolve("auto", hardware).resolved
        if fast != "fp32":
            precisions.append(fast)
        if any(g.compute_capability >= (8, 0) for g in hardware.gpus):
            precisions.append("mixed_fp16")
        b = cfg.batch_size
        return cls(precisions, sorted({max(b // 2, 1), b, b * 2}), [1, 2, 4])

    def validate(self, has_learning_rate: bool) -> None:
        if not self.precision:
            raise bad_value("--space-precision", "", f"one or more of {', '.join(CONCRETE)}")
        for p in self.precision:
            if p not in CONCRETE:
                raise bad_value("--space-precision", p, f"one of {', '.join(CONCRETE)}")
        for name, values in (
            ("--space-batch-size", self.batch_size),
            ("--space-accumulation-steps", self.accumulation_steps),
        ):
            if not values:
                raise bad_value(name, "", "one or more integers >= 1")
            for v in values:
                if v < 1:
                    raise bad_value(name, v, "integers >= 1")
        if self.learning_rate is not None:
            low, high = self.learning_rate
            if not 0 < low < high:
                raise bad_value(
                    "--space-learning-rate", f"{low}:{high}", "LOW:HIGH with 0 < LOW < HIGH"
                )
            if not has_learning_rate:
                raise bad_value(
                    "--space-learning-rate",
                    f"{low}:{high}",
                    "no range: this experiment has no --learning-rate",
                )

    def suggest(self, trial: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "precision": trial.suggest_categorical("precision", self.precision),
            "batch_size": trial.suggest_categorical("batch_size", self.batch_size),
            "accumulation_steps": trial.suggest_categorical(
                "accumulation_steps", self.accumulation_steps
            ),
        }
        if self.learning_rate is not None:
            values["learning_rate"] = trial.suggest_float(
                "learning_rate", *self.learning_rate, log=True
            )
        if self.compile is not None:
            values["compile"] = trial.suggest_categorical("compile", self.compile)
        return values

    def grid(self) -> dict[str, list[Any]]:
        if self.learning_rate is not None:
            raise bad_value("--sampler", "grid", "tpe or random with a --space-learning-rate range")
        return {
            "precision": self.precision,
            "batch_size": self.batch_size,
            "accumulation_steps": self.accumulation_steps,
            **({"compile": self.compile} if self.compile is not None else {}),
        }

    def update(self, values: dict[str, Any], where: str) -> None:
        """Override from a YAML/TOML mapping or from command-line lists."""
        for key, value in values.items():
            name = key.replace("-", "_")
            if name == "learning_rate":
                if isinstance(value, dict):
                    value = (value.get("low"), value.get("high"))
                try:
                    low, high = (float(v) for v in value)
                except (TypeError, ValueError):
                    raise bad_value(where, value, "learning_rate as [low, high]") from None
                self.learning_rate = (low, high)
            elif name == "compile":
                items = value if isinstance(value, list) else [value]
                words = {"true": True, "false": False, True: True, False: False}
                if not items or any(str(v).lower() not in ("true", "false") for v in items):
                    raise bad_value(where, value, "compile as true, false or both")
                self.compile = sorted({words[str(v).lower()] for v in items})
            elif name in ("precision", "batch_size", "accumulation_steps"):
                items = value if isinstance(value, list) else [value]
                try:
                    setattr(self, name, [str(v) if name == "precision" else int(v) for v in items])
                except ValueError:
                    raise bad_value(where, value, f"a list for {name}") from None
            else:
                raise bad_value(
                    where,
                    key,
                    "precision, batch_size, accumulation_steps, learning_rate or compile",
                )


def read_space_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise bad_value("--space", path, "a readable YAML or TOML file") from exc
    try:
        if path.endswith(".toml"):
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise bad_value("--space", path, f"valid YAML/TOML ({exc})") from exc
    if not isinstance(data, dict):
        raise bad_value("--space", path, "a mapping of parameter names to values")
    return data


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" | "minimize"

    @classmethod
    def parse(cls, text: str) -> Objective:
        metric, _, way = text.partition(":")
        directions = {
            "max": "maximize",
            "min": "minimize",
            "maximize": "maximize",
            "minimize": "minimize",
        }
        if not metric or way not in directions:
            raise bad_value("--objective", text, "METRIC:max or METRIC:min, e.g. val_accuracy:max")
        return cls(metric, directions[way])
