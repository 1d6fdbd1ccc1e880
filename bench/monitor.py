"""Our data-drift monitoring run against a plain Evidently report on the same 1M-row frames.

    .venv/bin/python bench/monitor.py                 # 1,000,000 rows x 25 columns
    .venv/bin/python bench/monitor.py --rows 200000   # quicker

Both jobs run in fresh subprocesses of this script (peak RSS via ``os.wait4`` is that job's
alone) and build the same seeded frames: 20 numeric and 5 categorical columns (10 levels),
reference and current, with a real shift in 4 numeric columns and 1 categorical one.

* ``plain``: ``Report([DataDriftPreset()]).run(current, reference)``, as the Evidently docs do;
  per-column verdicts read from its ``ValueDrift`` results.
* ``ours``: ``mlops_core.monitor.reports.compute_drift``: Evidently's own per-column stattests (the
  test ``DataDriftPreset`` picks for each column), on a seeded sample of
  ``monitoring.sample_rows`` (50,000) rows per side; the typed summary. The HTML report is
  rendered only when asked or on a dataset drift (it is not here: 5 of 25 columns drift); its
  cost on the same samples is measured apart and printed as ``html_s``.

The last line is ``key=value`` pairs; exit status 1 when the issue's target is missed: our wall
time above 1/20 of the plain report's, our peak memory above 1/2 of it, or any column's verdict
different.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_TAG = "BENCH_RESULT "
MAX_WALL, MAX_MEM = 1 / 20, 1 / 2


def frames(rows: int) -> tuple[Any, Any, dict[str, str]]:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    levels = np.array([f"level_{k}" for k in range(10)], dtype=object)

    def make(shifted: bool) -> pd.DataFrame:
        d: dict[str, Any] = {}
        for i in range(20):
            loc = 0.4 if shifted and i < 4 else 0.0
            d[f"num_{i}"] = rng.normal(loc, 1 + i / 10, rows)
        for j in range(5):
            p = np.full(10, 0.1)
            if shifted and j == 0:
                p = np.array([0.3, 0.2] + [0.5 / 8] * 8)
            d[f"cat_{j}"] = levels[rng.choice(10, rows, p=p)]
        return pd.DataFrame(d)

    ref, cur = make(False), make(True)
    kinds = {c: ("numeric" if c.startswith("num") else "categorical") for c in ref.columns}
    return ref, cur, kinds


def _emit(result: dict[str, Any]) -> None:
    """A child job's result, with its own peak RSS, on its last stdout line."""
    import resource

    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_TAG + json.dumps(result), flush=True)


def job_plain(rows: int) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from mlops_core.monitor.reports import report_verdicts

    ref, cur, kinds = frames(rows)
    dd = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numeric"],
        categorical_columns=[c for c, k in kinds.items() if k != "numeric"],
    )
    t0 = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    verdicts = report_verdicts(json.loads(snap.json()))
    _emit({"wall": time.perf_counter() - t0, "verdicts": verdicts})


def job_ours(rows: int, with_html: bool) -> None:
    import evidently.legacy.calculations.stattests.registry  # noqa: F401  imports, as plain's

    from mlops_core.monitor.reports import compute_drift, drift_report, sample_rows

    ref, cur, kinds = frames(rows)
    t0 = time.perf_counter()
    summary = compute_drift(ref, cur, kinds, sample_size=50_000, seed=0)
    wall = time.perf_counter() - t0
    html_s = None
    if with_html:
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            drift_report(sample_rows(ref, 50_000, 0), sample_rows(cur, 50_000, 1), kinds, Path(tmp))
        html_s = time.perf_counter() - t1
    _emit(
        {
            "wall": wall,
            "html_s": html_s,
            "status": summary.status,
            "share": summary.drift_share,
            "verdicts": {c.column: c.drifted for c in summary.columns},
        }
    )


def run_child(*args: str) -> tuple[dict[str, Any], float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--job", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, errtext = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"job {args[0]} failed:\n{errtext[-3000:]}")
    line = next(ln for ln in out.splitlines()[::-1] if ln.startswith(RESULT_TAG))
    result = json.loads(line[len(RESULT_TAG) :])
    return result, result["peak_mb"]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per frame")
    ap.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        name, rows, *rest = args.job
        if name == "plain":
            job_plain(int(rows))
        else:
            job_ours(int(rows), with_html=bool(rest and rest[0] == "html"))
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ours, ours_mb = run_child("ours", str(args.rows), "html")
    plain, plain_mb = run_child("plain", str(args.rows))
    agree = ours["verdicts"] == plain["verdicts"]
    differ = sorted(c for c in plain["verdicts"] if ours["verdicts"].get(c) != plain["verdicts"][c])
    ratio_wall = ours["wall"] / plain["wall"]
    ratio_mem = ours_mb / plain_mb
    print(f"{'job':<6} {'wall s':>8} {'peak MB':>8}  drifted columns")
    print(
        f"{'plain':<6} {plain['wall']:8.1f} {plain_mb:8.0f}  "
        f"{sorted(c for c, v in plain['verdicts'].items() if v)}"
    )
    print(
        f"{'ours':<6} {ours['wall']:8.2f} {ours_mb:8.0f}  "
        f"{sorted(c for c, v in ours['verdicts'].items() if v)}  (status {ours['status']}; "
        f"HTML report on the same samples, when asked or on a drift: {ours['html_s']:.1f} s)"
    )
    if differ:
        print(f"verdicts differ on: {differ}")
    met = ratio_wall <= MAX_WALL and ratio_mem <= MAX_MEM and agree
    print(
        f"ratio_wall={ratio_wall:.3f} ratio_mem={ratio_mem:.3f} "
        f"verdicts_agree={str(agree).lower()} wall_ours_s={ours['wall']:.2f} "
        f"wall_plain_s={plain['wall']:.1f} mem_ours_mb={ours_mb:.0f} "
        f"mem_plain_mb={plain_mb:.0f} html_s={ours['html_s']:.1f} rows={args.rows} "
        f"target_met={str(met).lower()}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
