"""Loading the full-size PaySim CSV: time and peak memory, mltrack's reader against the old one.

    python -m benchmarks.paysim_load             # about 6 minutes; the file is kept for reruns
    python -m benchmarks.paysim_load --reps 5

The Kaggle file cannot be downloaded here, so ``paysim.simulate`` writes one of the real size
and columns (6,362,620 rows, the 11 columns of ``paysim.COLUMNS``, about 490 MB) into
``$MLTRACK_CACHE_DIR`` (default ``~/.cache/mltrack``). Each measurement is a fresh process
(``--child``) that reads the file and reports its wall time and its peak resident memory
(``VmHWM``), so one reader's memory never hides in the other's. The two readers alternate:

- ``before``: issue 19's reader, every column with the C engine and names as ``str``, then each
  numeric column through ``pd.to_numeric`` (measured at 48 s and 2.76 GB on this machine);
- ``mltrack``: ``paysim.read_csv``: only the columns training uses, typed at parse time (its
  C engine: faster and smaller than its pyarrow engine on 2 cores, see read_csv).

Targets (issue 19): at most a third of 48 s and half of 2.76 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = 6_362_620  # the Kaggle file's


def full_size_file() -> Path:
    from mltrack.studies.data import paysim

    folder = Path(os.environ.get("MLTRACK_CACHE_DIR") or Path.home() / ".cache/mltrack")
    path = folder / "paysim-full" / paysim.FILENAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {ROWS:,} rows to {path} (once)", flush=True)
        partial = path.with_suffix(".partial")
        paysim.simulate(ROWS, seed=0).to_csv(partial, index=False)
        partial.rename(path)
    return path


def before(path: Path) -> int:
    """The reader issue 19 measured: all columns as parsed, then numbers by to_numeric."""
    import pandas as pd

    from mltrack.studies.data import paysim

    frame = pd.read_csv(path, dtype={"type": str, "nameOrig": str, "nameDest": str})
    for column in paysim.NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return len(frame)


def child(which: str, path: Path) -> None:
    from mltrack.studies.data import paysim

    start = time.perf_counter()
    rows = before(path) if which == "before" else len(paysim.read_csv(path))
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": peak_mb}))


def peak_rss_mb() -> float:
    """This process's peak resident memory since its exec (``VmHWM``). Not ``ru_maxrss``: on
    Linux that keeps the high-water mark of the process it was forked from, before exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(which: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.paysim_load", "--child", which, str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    path = full_size_file()
    results: dict[str, list[dict[str, float]]] = {"before": [], "mltrack": []}
    for rep in range(args.reps):
        for which in ("before", "mltrack") if rep % 2 == 0 else ("mltrack", "before"):
            results[which].append(measure(which, path))
    print(f"| reader | rows | load s (median of {args.reps}) | peak memory MB (median) |")
    print("|---|---|---|---|")
    medians = {}
    for which, runs in results.items():
        medians[which] = (
            statistics.median(r["seconds"] for r in runs),
            statistics.median(r["peak_mb"] for r in runs),
        )
        print(f"| {which} | {int(runs[0]['rows']):,} | {medians[which][0]:.1f} | "
              f"{medians[which][1]:,.0f} |")  # fmt: skip
    time_ratio = medians["mltrack"][0] / medians["before"][0]
    memory_ratio = medians["mltrack"][1] / medians["before"][1]
    print(f"\nmltrack / before: time {time_ratio:.2f}×, peak memory {memory_ratio:.2f}×")


if __name__ == "__main__":
    main()
