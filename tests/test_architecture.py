"""Contracts of the code's shape that review alone would let slip (issue 11, style.md)."""

from __future__ import annotations

import ast
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
OWNERS = {"mltrack/tracking/courier.py", "mltrack/tracking/spool.py", "mltrack/tracking/records.py"}


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
    assert not offenders, "write through mltrack.tracking.run.Run's verbs instead:\n" + "\n".join(
        offenders
    )


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


# What each part of the package may import from mltrack (issue 30). The core is layered:
# measure (pure: what a run measures) < tracking (the run, its journal, the writer); the
# adapters, export and compare sit on the core; the seed studies' models and loaders are
# imported only by experiments/, benchmarks/ and tests/.
BASE = ("mltrack.errors", "mltrack.cache")
ALLOWED = {
    "mltrack.measure": (*BASE, "mltrack.measure"),
    "mltrack.tracking": (*BASE, "mltrack.measure", "mltrack.tracking"),
}
STUDIES = "mltrack.studies"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def mltrack_imports(path: Path) -> set[str]:
    """Every mltrack module a file imports, at the top or inside a function, as a dotted name
    (``from mltrack.tracking import run`` counts as ``mltrack.tracking.run``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mltrack"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mltrack":
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_core_imports_no_adapter_no_compare_and_no_study():
    offenders = [
        f"{module_name(path)} imports {name}"
        for layer, allowed in ALLOWED.items()
        for path in sources(layer.replace(".", "/"))
        for name in sorted(mltrack_imports(path))
        # ``from mltrack import errors`` names the module as mltrack.errors; the package's
        # own lazy names (``from mltrack import start_run``) are not modules of another layer.
        if not within(name, allowed) and name.rsplit(".", 1)[0] != "mltrack"
    ]
    assert not offenders, "\n".join(offenders)


def test_only_experiments_benchmarks_and_tests_import_the_studies():
    offenders = [
        f"{module_name(path)} imports {name}"
        for path in sources("mltrack")
        if not within(module_name(path), (STUDIES,))
        for name in sorted(mltrack_imports(path))
        if within(name, (STUDIES,))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_layering_check_sees_imports_inside_functions(tmp_path):
    sample = ROOT / "mltrack" / "tracking" / "run.py"
    names = mltrack_imports(sample)
    assert "mltrack.tracking.resume" in names  # imported inside Run's resume path
    assert within("mltrack.tracking.run", ALLOWED["mltrack.tracking"])
    assert not within("mltrack.compare.report", ALLOWED["mltrack.tracking"])
    assert not within("mltrack.measurement", ("mltrack.measure",))
