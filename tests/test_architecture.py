"""Contracts of the code's shape that review alone would let slip (issue 11, style.md)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import ROOT

# MLflow's write APIs, on a client or on the fluent module.
WRITES = re.compile(
    r"\b\w*(client|mlflow)\.(create_run|log_batch|log_metric|log_metrics|log_param|log_params|"
    r"set_tag|set_tags|set_terminated|log_artifact|log_artifacts|log_figure|log_image|log_text|"
    r"log_dict|log_inputs|log_input|create_experiment|set_experiment_tag|delete_run|end_run|"
    r"start_run|create_registered_model|create_model_version|register_model|create_logged_model|"
    r"log_model_artifacts|finalize_logged_model|log_outputs)\("
)
OWNERS = {"mltrack/courier.py", "mltrack/spool.py", "mltrack/records.py"}


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_only_the_run_and_its_journal_write_to_the_tracking_store():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources("mltrack", "experiments")
        if str(path.relative_to(ROOT)) not in OWNERS
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if WRITES.search(line)
    ]
    assert not offenders, "write through mltrack.run.Run's verbs instead:\n" + "\n".join(offenders)


def test_the_write_pattern_catches_what_it_is_for():
    assert WRITES.search("        self._client.log_batch(self.run_id, metrics=m)")
    assert WRITES.search("client.set_terminated(run_id, 'FAILED')")
    assert not WRITES.search("run.log_artifact(path, 'model')")  # a Run verb


def test_modules_stay_readable():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in sources("mltrack")}
    assert not {p: n for p, n in sizes.items() if n > 400}
    # An experiment module stays a thin recipe (design.md: at most 150 lines).
    modules = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in sources("experiments")
    }
    assert not {p: n for p, n in modules.items() if n > 150}, modules
    sweep = {p: n for p, n in sizes.items() if p.startswith("mltrack/sweep/")}
    assert len(sweep) >= 5 and max(sweep.values()) <= 300, sweep
