"""Which online learner? Continued XGBoost boosting against River's adaptive random forest.

    .venv/bin/python bench/online.py                 # every stream of bench/backtest.py
    .venv/bin/python bench/online.py --only car_loan,sea-abrupt-168
    .venv/bin/python bench/online.py --quick         # one stream per cadence

Each data set of ``bench/backtest.py`` (no configuration, 5 initial batches, labels arriving
with their batch) is replayed with three strategies: ``static`` (the first model forever),
``online`` (River's ``ARFClassifier``, learning every labelled row) and ``online-xgboost``
(:class:`mlops_core.train.online.OnlineBooster`: the same first model as ``static``, then a few
trees
more on each batch of labels). Metric: the backtest's mean accuracy over the scored batches.

The product's online model kind is continued boosting because it is saved in XGBoost's own
format (served, gated and rolled back like any model, never unpickled); this bench checks that
the choice costs nothing in quality. Output: one ``key=value`` line per data set, then a summary
line; exit 1 when continued boosting's mean is below ARF's or below static's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from backtest import (  # noqa: E402 - the bench's data sets, after the path is set
    DATASETS,
    INITIAL_BATCHES,
    QUICK,
    DataSet,
    _init_worker,
    materialise,
)

STRATEGIES = ["static", "online", "online-xgboost"]


def run_one(ds: DataSet, tmp: str) -> dict[str, Any]:
    from mlops_core.backtest.engine import load_history, run_backtest

    t0 = time.perf_counter()
    path = materialise(ds, Path(tmp))
    replay = load_history(
        path,
        target=ds.target,
        time_column=ds.time_column,
        batch_size=ds.batch_size,
        initial_batches=INITIAL_BATCHES,
    )
    res = run_backtest(replay, STRATEGIES)
    by = {s.name: s for s in res.strategies}
    return {
        "data": ds.label,
        "batches": res.batches,
        **{n: by[n].mean_metric for n in STRATEGIES},
        "cpu_arf": by["online"].train_cpu_s,
        "cpu_xgb": by["online-xgboost"].train_cpu_s,
        "wall_s": time.perf_counter() - t0,
    }


def line(r: dict[str, Any]) -> str:
    return (
        f"data={r['data']} batches={r['batches']} static={r['static']:.4f} "
        f"arf={r['online']:.4f} xgboost={r['online-xgboost']:.4f} "
        f"gap={r['online-xgboost'] - r['online']:+.4f} cpu_arf={r['cpu_arf']:.1f} "
        f"cpu_xgboost={r['cpu_xgb']:.1f} wall_s={r['wall_s']:.0f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument(
        "--only", help="comma-separated data sets; known: " + ", ".join(d.label for d in DATASETS)
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=min(8, max(1, os.cpu_count() or 1)),
        help="data sets in parallel (one OpenMP thread each)",
    )
    args = ap.parse_args()
    chosen = [d for d in DATASETS if d.label != "employment_ma"]  # 277k rows: minutes of ARF
    if args.quick:
        chosen = [d for d in DATASETS if d.label in QUICK]
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        chosen = [d for d in DATASETS if d.label in wanted]
    if not chosen:
        print("no data set selected", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-online-") as tmp:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max(1, min(args.jobs, len(chosen))), mp_context=ctx, initializer=_init_worker
        ) as pool:
            futures = [pool.submit(run_one, ds, tmp) for ds in chosen]
            for fut in as_completed(futures):
                r = fut.result()
                rows.append(r)
                print(line(r), flush=True)
    n = len(rows)
    xgb = sum(r["online-xgboost"] for r in rows) / n
    arf = sum(r["online"] for r in rows) / n
    static = sum(r["static"] for r in rows) / n
    better = sum(r["online-xgboost"] >= r["online"] for r in rows)
    ok = xgb >= arf and xgb >= static
    print(
        f"datasets={n} xgboost_mean={xgb:.4f} arf_mean={arf:.4f} static_mean={static:.4f} "
        f"xgboost_better_on={better}/{n} wall_s={time.perf_counter() - t0:.0f} "
        f"target_met={str(ok).lower()}",
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
