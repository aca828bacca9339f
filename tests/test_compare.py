"""``mltrack compare`` over a real store: every number checked against the runs themselves."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from mltrack import cli
from mltrack.compare import command as compare_module
from mltrack.tracking.run import start_run
from tests.conftest import all_runs

CPU = {"hw.label": "Xeon (2 cores)", "hw.gpu_count": "0", "hw.fingerprint": "cpu1"}
GPU = {"hw.label": "RTX 3060 Ti x1", "hw.gpu_count": "1", "hw.fingerprint": "gpu1"}


def log_run(store, precision, metrics, outcome="completed", hw=CPU, experiment="study"):
    with start_run(experiment, params={"precision": precision}, tags=hw, tracking_uri=store) as run:
        run.log_metrics(metrics, step=0)
        if outcome == "diverged":
            run.stop("diverged", epoch=0, step=5, loss=float("nan"))
    return run.run_id


def m(user, system, wall, acc, val_loss):
    return {
        "total_user_cpu_s": user,
        "total_system_cpu_s": system,
        "total_cpu_s": user + system,
        "total_wall_s": wall,
        "test_accuracy": acc,
        "val_loss": val_loss,
        "test_loss": val_loss,
    }


@pytest.fixture
def store_with_runs(store):
    log_run(store, "fp32", m(119.0, 3.9, 142.0, 0.9533, 0.4688))
    log_run(store, "fp32", m(121.0, 4.1, 146.0, 0.9513, 0.4600))
    log_run(store, "bf16", m(124.0, 4.28, 142.0, 0.9515, 0.1623))
    log_run(store, "fp16", m(1.0, 1.0, 40.0, 0.10, float("nan")), outcome="diverged")
    return store


def compare(store, capsys, *args):
    code = cli.main(["compare", "--tracking-uri", store, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_seed000_table_means_and_deltas(store_with_runs, capsys):
    code, out, _ = compare(store_with_runs, capsys, "--baseline", "fp32")
    assert code == 0
    assert "| metric | fp32 (n=2) | bf16 (n=1) | Δ bf16 − fp32 |" in out
    assert "| User CPU time | 2m 0s | 2m 4s | +4.00s (+3.3%) |" in out
    assert "| Wall time | 2m 24s | 2m 22s | -2.00s (-1.4%) |" in out
    assert "| Accuracy | 95.23% | 95.15% | -0.08% (-0.1%) |" in out
    assert "fp16 (n=" not in out.split("###")[1]  # diverged runs are not a column


def test_seed002_table_mean_spread_and_outcomes(store_with_runs, capsys, client):
    _, out, _ = compare(store_with_runs, capsys)
    walls = [
        r.data.metrics["total_wall_s"]
        for r in all_runs(client)
        if r.data.params["precision"] == "fp32"
    ]
    expected = f"{statistics.fmean(walls):.4g} ± {statistics.stdev(walls):.2g}"
    assert f"| fp32 | 2 | completed 2 | {expected} |" in out
    assert "| fp16 | 1 | diverged 1 | – | – | – | – |" in out
    assert "| bf16 | 1 | completed 1 | 142 (n=1) |" in out
    assert "groups with one completed run (no spread): bf16" in out
    assert "1 run(s) not completed are listed but not averaged in" in out


def test_hardware_leaderboard_speedup_and_cost(store, capsys, tmp_path):
    for wall in (2527.2, 2527.2):  # the seed's CPU: 42.12 minutes
        log_run(store, "fp32", m(1, 1, wall, 0.9, 0.3), hw=CPU)
    log_run(store, "fp32", m(1, 1, 151.2, 0.9, 0.3), hw=GPU)  # 2.52 minutes
    prices = tmp_path / "prices.csv"
    prices.write_text("hardware,price_per_hour\nRTX 3060 Ti x1,0.50\n")
    code, out, _ = compare(store, capsys, "--prices", str(prices))
    assert code == 0
    assert "| 1 | RTX 3060 Ti x1 | 1 | 2m 31s | 16.71× | 0.0210 |" in out
    assert "| 2 | Xeon (2 cores) | 2 | 42m 7s | 1.00× | – |" in out
    assert "runs from 2 different machines are mixed" in out


def test_outputs_and_logged_report_run(store_with_runs, capsys, client, tmp_path):
    code, _, err = compare(store_with_runs, capsys, "--output", str(tmp_path / "r"), "--log")
    assert code == 0 and "logged as run" in err
    written = {p.name for p in (tmp_path / "r").iterdir()}
    assert written == {
        "report.md",
        "report.html",
        "runs.csv",
        "learning_curves.png",
        "time_vs_accuracy.png",
    }
    assert (tmp_path / "r" / "runs.csv").read_text().count("\n") == 5  # header + 4 runs
    assert (tmp_path / "r" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    [report] = [r for r in all_runs(client) if r.data.tags.get("mltrack.role") == "report"]
    assert {a.path for a in client.list_artifacts(report.info.run_id)} >= {
        "report.md",
        "report.html",
        "learning_curves.png",
    }
    # A report run is never counted as a run in the next comparison.
    _, out, _ = compare(store_with_runs, capsys, "--format", "csv")
    assert out.count("\n") == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--filter", "params.precision = 'fp8'"],
            "--filter \"params.precision = 'fp8'\": matched no runs",
        ),
        (
            ["--filter", "params.precision ==== 1"],
            "--filter: got 'params.precision ==== 1', expected an MLflow filter",
        ),
        (["--group-by", "colour"], "--group-by: got 'colour', expected a param or tag"),
        (["--baseline", "fp8"], "--baseline: got 'fp8', expected one of fp32, bf16, fp16"),
        (["--experiment", "nope"], "--experiment: got 'nope', expected one of"),
        (["--format", "pdf"], "argument --format: invalid choice: 'pdf'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(store_with_runs, capsys, args, message):
    code, out, err = compare(store_with_runs, capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_metrics_pick_the_columns_for_the_seed004_table(store, capsys):
    for model, acc, f1 in (("resnet50", 0.92, 0.91), ("resnet50", 0.90, 0.89), ("vit", 0.97, 0.96)):
        with start_run("torch", params={"model": model}, tracking_uri=store) as run:
            run.log_metrics(
                {"test_accuracy": acc, "test_f1_macro": f1, "total_wall_s": 60.0}, step=0
            )
    code, out, _ = compare(
        store,
        capsys,
        "--group-by",
        "model",
        "--metrics",
        "test_accuracy,test_f1_macro,total_wall_s",
    )
    assert code == 0
    assert "| model | runs | outcomes | test_accuracy | test_f1_macro | total_wall_s |" in out
    assert "| vit | 1 | completed 1 | 0.97 (n=1) | 0.96 (n=1) | 60 (n=1) |" in out
    assert "| resnet50 | 2 | completed 2 | 0.91 ± 0.014 | 0.9 ± 0.014 | 60 ± 0 |" in out
    code, _, err = compare(store, capsys, "--group-by", "model", "--metrics", "test_f2")
    assert code == 2 and "--metrics: got 'test_f2', expected metrics the runs logged" in err


def test_printed_tables_ask_the_store_for_no_metric_history(
    store_with_runs, capsys, monkeypatch, tmp_path
):
    """Histories are fetched only for charts that are written, and then in bulk: one query per
    curve for all runs, never one call per run and curve (90% of compare's time at 1,000
    runs, issue 13)."""
    from mlflow import MlflowClient
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    per_run: list[str] = []
    bulk: list[tuple[str, int]] = []
    real_bulk = SqlAlchemyStore.get_metric_history_bulk

    def counted(self, run_ids, key, max_results):
        bulk.append((key, len(run_ids)))
        return real_bulk(self, run_ids, key, max_results)

    monkeypatch.setattr(MlflowClient, "get_metric_history", lambda *a: per_run.append(a[2]))
    monkeypatch.setattr(SqlAlchemyStore, "get_metric_history_bulk", counted)
    for fmt in ("terminal", "csv", "html"):
        code, out, _ = compare(store_with_runs, capsys, "--format", fmt)
        assert code == 0 and out and "png" not in out
    assert bulk == [] and per_run == []
    code, _, _ = compare(store_with_runs, capsys, "--output", str(tmp_path / "r"))
    assert code == 0 and per_run == []
    assert sorted(key for key, _ in bulk) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert (tmp_path / "r" / "learning_curves.png").stat().st_size > 10_000


def test_a_chart_averages_an_even_sample_of_a_large_group():
    from mltrack.compare.fetch import sample

    assert sample(list(range(10)), 20) == list(range(10))
    assert sample(list(range(101)), 5) == [0, 25, 50, 75, 100]
    assert sample(list(range(7)), 1) == [6]


def test_runs_are_read_page_by_page(store_with_runs, client, monkeypatch):
    """Where runs are not read in bulk (a tracking server), every page of search_runs is."""
    from mltrack.compare import fetch

    monkeypatch.setattr(fetch, "SEARCH_PAGE", 1)
    study = client.get_experiment_by_name("study").experiment_id
    assert len(fetch.search_all(client, [study], "")) == 4 == len(all_runs(client))


def test_a_tracking_server_gets_concurrent_per_run_calls(store_with_runs, client):
    """A client with no bulk call (an HTTP store): per-run calls, the same histories."""
    from mltrack.compare.fetch import metric_histories

    class Http:  # what metric_histories may use of an MlflowClient over REST
        get_metric_history = staticmethod(client.get_metric_history)

    ids = [r.info.run_id for r in all_runs(client)]
    over_http = metric_histories(Http(), ids, "total_wall_s")
    assert over_http == metric_histories(client, ids, "total_wall_s")
    assert over_http and all(len(steps) >= 1 for steps in over_http.values())


def test_runs_that_never_ended_are_listed_not_counted(store, capsys, client):
    """A run still RUNNING (training, or SIGKILLed before `mltrack doctor`) has partial
    epochs: no table, target or curve counts it; each says how many there are (issue 18)."""
    for wall in (10.0, 12.0):
        run_id = log_run(store, "fp32", {**m(1, 1, wall, 0.9, 0.3), "val_accuracy": 0.9})
        for epoch, value in enumerate((0.5, 0.9)):
            client.log_metric(run_id, "val_accuracy", value, step=epoch)
            client.log_metric(run_id, "epoch_wall_s", wall / 2, step=epoch)
    experiment = client.get_experiment_by_name("study").experiment_id
    for precision in ("fp32", "bf16"):  # alive as far as MLflow knows, never ended
        run = client.create_run(experiment, tags={"precision": precision, **CPU})
        client.log_param(run.info.run_id, "precision", precision)
        client.log_metric(run.info.run_id, "total_wall_s", 1.0)
        client.log_metric(run.info.run_id, "val_accuracy", 0.95, step=0)
        client.log_metric(run.info.run_id, "epoch_wall_s", 0.5, step=0)
    code, out, _ = compare(store, capsys, "--target", "val_accuracy=0.8")
    assert code == 0, out
    speed = next(line for line in out.splitlines() if line.startswith("| fp32 | 2 | 11"))
    assert speed.endswith("| running 1 |")
    assert "| bf16 | 0 | no completed run |" in out
    assert "| fp32 | 2 | 2 of 2 | 2 | 11.00s |" in out
    assert "| bf16 | 0 | no completed run | – | – | – |" in out
    assert "| bf16 | 1 | running 1 |" in out  # the seed-002 table lists it by outcome


def test_compare_called_in_process_leaves_the_garbage_collector_as_it_was(store_with_runs, capsys):
    """The command turns Python's cyclic collector off while it runs and, as the program,
    freezes the heap before exit (1.3 s of 3.1 s at 1,000 runs); a caller in-process gets both
    back as they were."""
    import gc

    code, out, _ = compare(store_with_runs, capsys, "--format", "csv")
    assert code == 0 and out.count("\n") == 5
    assert gc.isenabled() and gc.get_freeze_count() == 0


NOT_A_DATABASE = "an MLflow store: an sqlite database; sqlite says: file is not a database"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "an existing store: no such file"),
        ("empty", "an MLflow store: this database has no MLflow tables"),
        ("foreign", "an MLflow store: this database has no MLflow tables"),
        ("random bytes", NOT_A_DATABASE),
        ("text", NOT_A_DATABASE),
        ("a store's tail", NOT_A_DATABASE),
    ],
)
def test_compare_creates_no_store_and_writes_into_no_other_file(
    tmp_path, capsys, store, kind, expected
):
    """compare only reads: a database without MLflow's tables (an sqlite file not there, empty
    or another application's) or a file that is no database at all is a one-line error naming
    --tracking-uri, and nothing is written; MLflow's client would have created its 60 tables
    there, or printed a traceback and left a lock file."""
    import random
    import sqlite3

    folder = tmp_path / "app"
    folder.mkdir()
    db = folder / "app.db"
    if kind == "empty":
        db.touch()
    if kind == "foreign":
        with sqlite3.connect(db) as connection:
            connection.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        connection.close()
    if kind == "random bytes":
        db.write_bytes(random.Random(0).randbytes(8192))
    if kind == "text":
        db.write_text("run_id,loss\nabc,0.5\n")
    if kind == "a store's tail":  # a copy that lost its first page (its header)
        log_run(store, "fp32", m(1.0, 1.0, 2.0, 0.5, 0.5))
        db.write_bytes(Path(store.removeprefix("sqlite:///")).read_bytes()[4096:])
        capsys.readouterr()  # the store's own set-up lines
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, out, err = compare(f"sqlite:///{db}", capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--tracking-uri: got 'sqlite:///" in err, err
    assert f"expected {expected}" in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_deleted_experiment_is_named_as_deleted(store_with_runs, capsys, client):
    """Deleting an experiment deletes its runs: "matched no runs" would not say why."""
    client.delete_experiment(client.get_experiment_by_name("study").experiment_id)
    code, out, err = compare(store_with_runs, capsys, "--experiment", "study")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--experiment: got 'study', expected an active experiment; this one is deleted" in err
    assert "mlflow experiments restore" in err


def test_runs_names_only_ids_the_store_does_not_know(store_with_runs, capsys):
    """``--runs``' message is for an id that is not a run's; another failure of the store is
    not blamed on the id."""
    from mlflow.exceptions import MlflowException

    for run_id in ("bogus", "a" * 32, "../x"):
        code, out, err = compare(store_with_runs, capsys, "--runs", run_id)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert f"--runs: got {run_id!r}, expected the id of a run in this store" in err

    class Broken:
        def search_experiments(self):
            return []

        def get_run(self, run_id):
            raise MlflowException("the store is down", error_code="TEMPORARILY_UNAVAILABLE")

    with pytest.raises(MlflowException, match="the store is down"):
        compare_module.select(Broken(), run_ids=["a" * 32])


EPYC = {"hw.label": "AMD EPYC (2 cores)", "hw.gpu_count": "0", "hw.fingerprint": "epyc"}


def log_job(store, wall, size=1, nodes=1):
    """A run of ``size`` processes over ``nodes`` machines, as ``mltrack.tracking.distributed`` logs
    it; one process logs no world size, as runs from before data parallelism."""
    params, tags = {"precision": "fp32"}, dict(EPYC)
    if size > 1:
        params |= {"world_size": size, "nodes": nodes, "processes_per_node": size // nodes}
        tags["distributed.hardware"] = f"{size} x {EPYC['hw.label']}"
    with start_run("study", params=params, tags=tags, tracking_uri=store) as run:
        run.log_metrics(m(1, 1, wall, 0.9, 0.3), step=0)


def test_leaderboard_counts_the_processes_of_a_job(store, capsys, tmp_path):
    """One process and jobs of two on the same hardware are separate rows; a job pays each
    machine it spans (the ``--prices`` row of its hw.label, once per node)."""
    log_job(store, 3600.0)
    log_job(store, 2000.0, size=2)  # two processes on one machine
    log_job(store, 1200.0, size=2, nodes=2)  # one on each of two machines
    prices = tmp_path / "prices.csv"
    prices.write_text("hardware,price_per_hour\nAMD EPYC (2 cores),0.36\n")
    code, out, _ = compare(store, capsys, "--prices", str(prices))
    assert code == 0
    assert "| 1 | 2 x AMD EPYC (2 cores) over 2 nodes | 1 | 20m 0s | 3.00× | 0.2400 |" in out
    assert "| 2 | 2 x AMD EPYC (2 cores) | 1 | 33m 20s | 1.80× | 0.2000 |" in out
    assert "| 3 | AMD EPYC (2 cores) | 1 | 60m 0s | 1.00× | 0.3600 |" in out
    assert "runs from 2 different machines" not in out  # one machine type, counted apart
    # No samples/s logged: the scaling table lists the world sizes and says nothing more.
    assert "| 2 | 1 × 2, 2 × 1 | 2 | – | – | – | – |" in out


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_metrics_are_shown_as_such_left_out_of_means_and_named(
    store, capsys, tmp_path, bad
):
    """Issue 29: a run with an infinite metric printed a 309-digit number (MLflow's SQL store
    keeps ±inf as ±1.797e308)."""
    log_run(store, "fp32", m(100.0, 2.0, 140.0, 0.95, 0.40))
    log_run(store, "fp32", m(102.0, 2.0, 144.0, 0.93, 0.42))
    odd = log_run(store, "fp32", m(101.0, 2.0, bad, 0.94, bad))
    log_run(store, "bf16", m(bad, 2.0, bad, bad, bad))
    shown = {"inf": "inf", "-inf": "-inf", "nan": "nan"}[str(bad)]
    code, out, _ = compare(store, capsys, "--output", str(tmp_path / "report"))
    assert code == 0
    assert not re.search(r"\d{20}", out)  # no 309-digit number anywhere
    # The finite runs' mean and spread, the odd one counted apart.
    assert f"| fp32 | 3 | completed 3 | 142 ± 2.8 (+1 {shown}) |" in out
    assert f"| bf16 | 1 | completed 1 | {shown} (n=1) |" in out
    assert f"{odd} (total_wall_s={shown}, " in out  # the note names the run
    assert "left out of means" in out
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"val_loss={shown})" in report and odd in report
    assert not re.search(r"\d{20}", report)


def test_results_md_of_a_study_names_a_non_finite_run():
    from mltrack.compare.report import Result, results_table

    results = [
        Result("fp32", "completed", {"total_wall_s": 10.0}, name="run-a"),
        Result("fp32", "completed", {"total_wall_s": 12.0}, name="run-b"),
        Result("fp32", "completed", {"total_wall_s": float("inf")}, name="run-c"),
    ]
    table = str(results_table(results, metrics=["total_wall_s"]))
    assert "| fp32 | 3 | completed 3 | 11 ± 1.4 (+1 inf) |" in table
    assert "fp32: not finite, shown as nan/inf and left out of means" in table
    assert "run-c (total_wall_s=inf)" in table
