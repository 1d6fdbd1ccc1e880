"""A small backtest of the demo stream, written when `mlops demo` creates the project, so that the
dashboard's Backtests page has a result to show from the start: the project's own retraining
policy against never retraining (``static``) and retraining on every batch, replayed over the
labelled history in four-week batches.

Kept to a few seconds: a tenth of the rows, four-week batches (13 over the demo's year), fixed
hyper-parameters (one thread, few trees, no window choice). ``mlops backtest`` on the full
history compares more strategies, at full size."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_core.backtest.engine import ProgressFn, load_history, run_backtest, write_json
from mlops_core.config import Settings
from mlops_core.demo.stream import TIME, DemoStream

STRATEGIES = ("policy", "static", "every-batch")
RESULT = "demo-policy-vs-baselines.json"  # under the project's backtests folder
EVERY_NTH_ROW = 10
BATCH_DAYS = 28  # a shorter stream gets shorter batches (at least a week), 12 or 13 in all
SCORED_BATCHES = 5  # about: the batches before them train the first model
FAST_MODEL = {"n_estimators": 60, "max_depth": 4, "early_stopping_rounds": 10, "nthread": 1}


@dataclass
class DemoBacktest:
    path: Path
    seconds: float
    batches: int
    rows: int
    mean: dict[str, float | None]  # strategy -> mean metric
    retrains: dict[str, int]
    metric: str


def demo_backtest_path(settings: Settings) -> Path:
    from mlops_core.read.views import backtests_dir

    return backtests_dir(settings) / RESULT


def backtest_settings(settings: Settings) -> Settings:
    """The project's settings (its policy, its model type), trained quickly."""
    fast = settings.model_copy(deep=True)
    fast.model.window.choose = False
    fast.model.params = FAST_MODEL | fast.model.params
    return fast


def write_demo_backtest(
    settings: Settings, stream: DemoStream, *, progress: ProgressFn | None = None
) -> DemoBacktest:
    """Backtest :data:`STRATEGIES` on the labelled part of ``stream`` (every
    :data:`EVERY_NTH_ROW` th row) and save the result where the dashboard finds it."""
    t0 = time.perf_counter()
    frame = stream.frame
    labelled = frame[frame[TIME] <= frame[TIME].max() - stream.label_delay]
    sample = labelled.iloc[::EVERY_NTH_ROW]
    days = max(1, (sample[TIME].max() - sample[TIME].min()).days)
    period = min(BATCH_DAYS, max(7, days // 12))
    initial = max(2, days // period - SCORED_BATCHES)
    with tempfile.TemporaryDirectory(prefix="mlops-demo-backtest-") as tmp:
        data = Path(tmp) / "loan-applications.parquet"
        sample.to_parquet(data, index=False)
        history = load_history(
            data,
            batch_period=f"{period}D",
            initial_batches=initial,
            label_delay=-(-stream.label_delay.days // period),  # in batches, rounded up
            settings=backtest_settings(settings),
            drift_points=[p.start for p in stream.drift_points],
        )
    history.notes.append(
        f"the demo's quick backtest: every {EVERY_NTH_ROW}th row, {period}-day batches, "
        "fixed hyper-parameters ("
        + ", ".join(f"{k} {v}" for k, v in FAST_MODEL.items())
        + "); `mlops backtest` replays the full history"
    )
    result = run_backtest(history, STRATEGIES, progress=progress)
    path = write_json(result, demo_backtest_path(settings))
    by_name: dict[str, Any] = {s.name: s for s in result.strategies}
    return DemoBacktest(
        path,
        time.perf_counter() - t0,
        result.batches,
        len(sample),
        {n: s.mean_metric for n, s in by_name.items()},
        {n: s.retrains for n, s in by_name.items()},
        result.metric_name,
    )
