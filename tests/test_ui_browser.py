"""The MLflow UI served by ``mltrack ui``, checked in a real headless Chromium.

Chromium comes from Debian (``scripts/system-deps.sh``, run by ``make test``); playwright only
drives it. Screenshots are saved under ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import sync_playwright

from mltrack.run import start_run
from tests.conftest import ROOT, ui_server

CHROMIUM = "/usr/bin/chromium"
# As root, and with no network but loopback: no sandbox, no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-artifacts"


def test_experiment_and_run_pages_show_runs_and_metrics(store, tmp_path):
    names = ["fp32-r0", "mixed_bf16-r0"]
    runs = []
    for i, name in enumerate(names):
        with start_run("browser-check", run_name=name, tracking_uri=store) as run:
            run.log_params({"precision": name.split("-")[0], "batch_size": 64})
            for epoch in range(3):
                run.end_epoch(epoch, {"val_accuracy": 0.5 + 0.1 * epoch + 0.01 * i})
        runs.append(run)
    SHOTS.mkdir(exist_ok=True)
    with ui_server(store, tmp_path) as base, sync_playwright() as p:
        [line] = [x for x in (tmp_path / "ui.out").read_text().splitlines() if "MLflow UI" in x]
        printed = line.rsplit(" ", 1)[-1]  # the server writes its own lines after ours
        runs_table = f"{base}/#/experiments/{runs[0].experiment_id}/runs"
        assert printed == f"{runs_table}?viewStateShareKey=mltrack", printed
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1000})
        # The address `mltrack ui` printed, in a new browser: the runs table, no mode switch,
        # and the metric and parameters as columns without picking them under "Columns".
        page.goto(printed, timeout=60_000)
        try:
            for name in names:
                page.get_by_text(name).first.wait_for(timeout=60_000)
            header = page.get_by_role("columnheader").filter(has_text="val_accuracy")
            header.first.wait_for(timeout=60_000)
            page.get_by_role("gridcell").filter(has_text="0.71").first.wait_for(timeout=60_000)
            page.get_by_role("gridcell").filter(has_text="mixed_bf16").first.wait_for()
        finally:
            page.screenshot(path=str(SHOTS / "mlflow-ui-experiment.png"), full_page=True)

        page.goto(f"{base}/#/experiments/{runs[1].experiment_id}/runs/{runs[1].run_id}")
        metric = page.get_by_text("val_accuracy").first
        metric.wait_for(timeout=60_000)
        page.get_by_text("0.71").first.wait_for(timeout=60_000)  # the last logged value
        metric.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "mlflow-ui-run.png"), full_page=True)
        browser.close()
    assert Path(SHOTS / "mlflow-ui-run.png").stat().st_size > 10_000
