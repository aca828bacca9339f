"""mltrack: tracked, comparable precision and training-speed experiments on MLflow."""

from mltrack.config import ExperimentConfig
from mltrack.epochs import Epochs
from mltrack.errors import UsageError
from mltrack.experiment import Experiment
from mltrack.run import STATUS, Run, start_run

__all__ = ["STATUS", "Epochs", "Experiment", "ExperimentConfig", "Run", "UsageError", "start_run"]
__version__ = "0.1.0"
