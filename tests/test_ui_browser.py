"""The MLflow UI served by ``mltrack ui``, checked in a real headless Chromium.

Chromium comes from Debian (``scripts/system-deps.sh``, run by ``make test``); playwright only
drives it. Screenshots are saved under ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import sync_playwright

from mltrack.tracking.run import start_run
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


VIEWPORT = {"width": 1400, "height": 900}


def visible_and_uncovered(page, locator) -> bool:
    """The element is inside the viewport and is what a click at its centre would hit."""
    box = locator.bounding_box()
    if box is None:
        return False
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    inside = 0 <= x <= VIEWPORT["width"] and 0 <= y <= VIEWPORT["height"]
    hit = locator.evaluate(
        "(el, [x, y]) => { const top = document.elementFromPoint(x, y);"
        " return top !== null && (el === top || el.contains(top) || top.contains(el)); }",
        [x, y],
    )
    return bool(inside and hit)


def test_experiment_and_run_pages_show_runs_and_metrics(store, tmp_path):
    names = ["fp32-r0", "mixed_bf16-r0"]
    runs = []
    for i, name in enumerate(names):
        with start_run("browser-check", run_name=name, tracking_uri=store) as run:
            run.log_params({"precision": name.split("-")[0], "batch_size": 64})
            for epoch in range(3):
                run.end_epoch(epoch, {"val_accuracy": 0.5 + 0.1 * epoch + 0.01 * i})
            run.log_metrics({"total_wall_s": 12.5 + i, "samples_per_s": 1000.0 + i}, step=0)
        runs.append(run)
    SHOTS.mkdir(exist_ok=True)
    with ui_server(store, tmp_path) as base, sync_playwright() as p:
        [line] = [x for x in (tmp_path / "ui.out").read_text().splitlines() if "MLflow UI" in x]
        printed = line.rsplit(" ", 1)[-1]  # the server writes its own lines after ours
        runs_table = f"{base}/#/experiments/{runs[0].experiment_id}/runs"
        query = "?viewStateShareKey=mltrack&workflowType=machine_learning"
        assert printed == f"{runs_table}{query}", printed
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        # The address `mltrack ui` printed, in a new browser at 1400×900: the runs table in
        # the model-training mode, the metrics as the first columns in the first screen, not
        # under the assistant panel MLflow opens on a local address nor the shared-view banner.
        page.goto(printed, timeout=60_000)
        try:
            for name in names:
                page.get_by_text(name).first.wait_for(timeout=60_000)
            header = page.get_by_role("columnheader").filter(has_text="val_accuracy").first
            header.wait_for(timeout=60_000)
            cell = page.get_by_role("gridcell").filter(has_text="0.71").first
            cell.wait_for(timeout=60_000)
            page.get_by_role("gridcell").filter(has_text="mixed_bf16").first.wait_for()
            page.wait_for_timeout(2000)  # let the assistant panel and banner settle
            assert visible_and_uncovered(page, header), header.bounding_box()
            assert visible_and_uncovered(page, cell), cell.bounding_box()
            assert page.get_by_text("Model training", exact=True).first.is_visible()
            assert page.get_by_text("Judges", exact=True).count() == 0  # no GenAI sidebar
        finally:
            page.screenshot(path=str(SHOTS / "mlflow-ui-experiment.png"))

        # A run's page by a direct link with the same mode parameter: the model-training run
        # view (its metrics), not the GenAI evaluation view.
        run_page = f"{base}/#/experiments/{runs[1].experiment_id}/runs/{runs[1].run_id}"
        page.goto(f"{run_page}?workflowType=machine_learning")
        metric = page.get_by_text("val_accuracy").first
        metric.wait_for(timeout=60_000)
        page.get_by_text("0.71").first.wait_for(timeout=60_000)  # the last logged value
        assert page.get_by_text("Judges", exact=True).count() == 0
        metric.scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "mlflow-ui-run.png"), full_page=True)
        browser.close()
    assert Path(SHOTS / "mlflow-ui-run.png").stat().st_size > 10_000
