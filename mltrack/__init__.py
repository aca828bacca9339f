"""mltrack: tracked, comparable precision and training-speed experiments on MLflow.

The names below load on first use (PEP 562): ``mltrack compare`` and the other commands that
need none of them start without the training modules (a tenth of a second).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mltrack.config import ExperimentConfig
    from mltrack.epochs import Epochs
    from mltrack.errors import UsageError
    from mltrack.experiment import Experiment
    from mltrack.tracking.run import STATUS, Run, start_run

_MODULES = {
    "ExperimentConfig": "mltrack.config",
    "Epochs": "mltrack.epochs",
    "UsageError": "mltrack.errors",
    "Experiment": "mltrack.experiment",
    "STATUS": "mltrack.tracking.run",
    "Run": "mltrack.tracking.run",
    "start_run": "mltrack.tracking.run",
}
__all__ = ["STATUS", "Epochs", "Experiment", "ExperimentConfig", "Run", "UsageError", "start_run"]
__version__ = "0.4.0"


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'mltrack' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value  # once: later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
