"""mltrack: tracked, comparable precision and training-speed experiments on MLflow."""

from mltrack.config import ExperimentConfig
from mltrack.errors import UsageError
from mltrack.run import Run, RunPruned, start_run

__all__ = ["ExperimentConfig", "Run", "RunPruned", "UsageError", "start_run"]
__version__ = "0.1.0"
