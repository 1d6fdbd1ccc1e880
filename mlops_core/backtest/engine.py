"""Backtesting retraining strategies: replay a history batch by batch, compare when to retrain.

The replay runs the production code in process: :func:`mlops_core.train.fit.fit_model` trains,
:func:`mlops_core.monitor.reports.configured_drift` checks data drift, River's detectors watch the
error
stream (:mod:`mlops_core.monitor.detectors`),
:func:`mlops_core.train.evaluation.estimate_performance` estimates
without labels, and :func:`mlops_core.monitor.policy.decide` is the policy. The "registry" is the
current model in memory.

Protocol, for every batch ``t`` after the first ``initial_batches`` (which train the first
model): the current model predicts batch ``t`` and the batch metric is recorded; then the labels
of batch ``t - label_delay`` arrive, and the strategy may retrain on the window of labelled rows
(or, for an online learner, learn them). A model retrained at step ``t`` predicts from ``t + 1``.
No strategy can read a label before its batch's delay has passed: a strategy only gets labels
through :meth:`Step.arrived` and :meth:`History.window`, both bounded by ``labelled_through``.

A new strategy subclasses :class:`Strategy` (``decide`` returns a :class:`Retrain` or ``None``)
or :class:`OnlineStrategy` (``predict`` and ``learn``), and is registered in ``STRATEGIES``.
River's online learner (``online``) is in :mod:`mlops_core.backtest.river_online`, the one
backtest module that imports River.

The result (``BacktestResult.to_dict``; ``mlops backtest --json``) is documented in
``docs/backtest.md``; the dashboard reads it.
"""

from __future__ import annotations

import functools
import html
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_core.config import RetrainingConfig, Settings
from mlops_core.errors import MlopsError
from mlops_core.monitor.detectors import ErrorStreamDetector, error_stream, where_error_rose
from mlops_core.monitor.policy import (
    PLANNED_REASONS,
    PolicyState,
    Reason,
    Signals,
    compute_signals,
    decide,
    median_period,
    metric_drop,
)
from mlops_core.monitor.reports import configured_drift, sample_rows
from mlops_core.train.evaluation import (
    PRIMARY,
    Calibration,
    compute_metrics,
    estimate_performance,
    fit_calibration,
)
from mlops_core.train.fit import (
    TrainedModel,
    choose_window,
    default_params,
    feature_spec,
    refit,
)

SCHEMA_VERSION = 1
# without a time column, batch i is dated EPOCH + i days: policy durations count batches as days
EPOCH = pd.Timestamp("2000-01-01")

ProgressFn = Callable[[str, int, int], None]  # (strategy, batches done, batches in all)


class BacktestError(MlopsError, ValueError):
    """The backtest cannot run as asked (bad data, columns or options)."""


# the history -----------------------------------------------------------------------------------
@dataclass
class History:
    """A labelled history split into time-ordered batches."""

    frame: pd.DataFrame  # sorted by time, index 0..n-1
    settings: Settings  # data.target / time_column / features, model, monitoring, retraining
    kinds: dict[str, str]  # feature -> numeric | categorical | boolean
    bounds: np.ndarray  # row where batch i starts is bounds[i]; bounds[-1] == len(frame)
    times: list[pd.Timestamp]  # the time each batch is complete (its newest row)
    initial_batches: int
    label_delay: int
    window_rows: int | None = None
    window_period: str | None = None
    drift_batches: list[int] = field(default_factory=list)  # true drift points, as batches
    dataset: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.settings.task

    @property
    def target(self) -> str:
        return self.settings.data.target or ""

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1

    @functools.cached_property
    def classes(self) -> list[Any] | None:
        if self.task == "regression":
            return None
        return sorted(pd.unique(self.frame[self.target].dropna()).tolist())

    def batch(self, i: int) -> pd.DataFrame:
        return self.frame.iloc[self.bounds[i] : self.bounds[i + 1]]

    @functools.cached_property
    def batch_period(self) -> timedelta | None:
        """The median time between batches: what "N batches" means to the policy."""
        return median_period(self.times)

    def features(self, i: int) -> pd.DataFrame:
        return self.batch(i)[list(self.kinds)]

    def window(
        self, labelled_through: int, start_row: int | None = None, min_rows: int = 0
    ) -> pd.DataFrame:
        """Labelled rows of batches ``0..labelled_through`` within the training window, from
        ``start_row`` on where given (a detected change), but never fewer than ``min_rows``."""
        end = int(self.bounds[labelled_through + 1])
        first = 0
        if self.window_rows:
            first = max(first, end - self.window_rows)
        if self.window_period:
            t = self.times[labelled_through] - pd.Timedelta(self.window_period)
            first = max(first, self._row_at(t))
        if start_row is not None:
            first = max(first, min(start_row, max(0, end - min_rows)))
        return self.frame.iloc[first:end]

    def _row_at(self, t: pd.Timestamp) -> int:
        tcol = self.settings.data.time_column
        if tcol:
            return int(np.searchsorted(self.frame[tcol].to_numpy(), np.datetime64(t)))
        # synthetic times: batch i is EPOCH + i days
        i = math.ceil((t - EPOCH) / pd.Timedelta("1D"))
        return int(self.bounds[min(max(i, 0), self.n_batches)])


def _read(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".gz", ".txt"):
        return pd.read_csv(path)
    if suffix in (".json", ".jsonl", ".ndjson"):
        return pd.read_json(path, lines=suffix != ".json")
    raise BacktestError(f"{path}: unknown file type '{suffix}' (parquet, csv or json)")


def _row_id_columns(df: pd.DataFrame, exclude: Iterable[str]) -> list[str]:
    """Integer columns that are unique and increasing: row ids, not features (a feature that
    counts rows would let a model tell time)."""
    out = []
    for c in df.columns:
        if c in exclude or not pd.api.types.is_integer_dtype(df[c]):
            continue
        s = df[c]
        if s.is_unique and s.is_monotonic_increasing and len(s) > 100:
            out.append(c)
    return out


def load_history(
    data: Path,
    *,
    target: str | None = None,
    time_column: str | None = None,
    batch_size: int | None = None,
    batch_period: str | None = None,
    initial_batches: int = 5,
    window: str | None = None,
    label_delay: int = 0,
    settings: Settings | None = None,
    drift_points: list[Any] | None = None,
) -> History:
    """Read ``data`` and split it into batches of ``batch_size`` rows or of ``batch_period``.

    ``window`` is a row count (``"20000"``) or a period (``"90D"``); default: the config's
    ``model.window``. ``drift_points`` (times, or row numbers without a time column) default to
    a ``<data>.drift.json`` file beside the data, as :mod:`mlops_core.demo.stream` writes it."""
    if (batch_size is None) == (batch_period is None):
        raise BacktestError("give exactly one of --batch-size and --batch-period")
    if not data.is_file():
        raise BacktestError(f"{data}: no such file")
    settings = _history_settings(settings, target, time_column)
    notes: list[str] = []
    df = _read_labelled(data, settings, target, notes)
    df = _drop_row_ids(df, settings, notes)
    kinds = feature_spec(settings, df, "replay", None)["kinds"]
    for c, k in kinds.items():  # categories once, as pandas categories (fast to slice)
        if k == "categorical" and not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype("string").astype("category")
    bounds = _batch_bounds(df, settings, batch_size, batch_period)
    times = _batch_times(df, settings, bounds)
    if len(bounds) - 1 <= initial_batches:
        raise BacktestError(
            f"{len(bounds) - 1} batches: need more than --initial-batches "
            f"({initial_batches}); use smaller batches"
        )
    rows, period = _window(window, settings)
    replay = History(
        df,
        settings,
        kinds,
        bounds,
        times,
        initial_batches,
        label_delay,
        rows,
        period,
        dataset=data.name,
        notes=notes,
    )
    points = drift_points if drift_points is not None else _sidecar_drift(data)
    replay.drift_batches = _drift_batches(replay, points)
    return replay


def _history_settings(
    settings: Settings | None, target: str | None, time_column: str | None
) -> Settings:
    """A copy of ``settings`` (default: the defaults) with the target and time column given."""
    settings = (settings or Settings()).model_copy(deep=True)
    d = settings.data
    d.target = target or d.target
    d.time_column = time_column if time_column is not None else d.time_column
    if not d.target:
        raise BacktestError("no target: pass --target or set data.target in the config")
    return settings


def _read_labelled(
    data: Path, settings: Settings, target: str | None, notes: list[str]
) -> pd.DataFrame:
    """The labelled rows of ``data``, sorted by their (parsed) times, indexed 0..n-1; the task
    inferred from the target when it was given (or no config names it)."""
    from mlops_core.data.batching import parse_times
    from mlops_core.ops.scaffold import infer_task

    d = settings.data
    df = _read(data)
    missing = [c for c in (d.target, d.time_column) if c and c not in df.columns]
    if missing:
        raise BacktestError(
            f"column(s) not in {data.name}: {', '.join(missing)}; the columns "
            f"are: {', '.join(map(str, df.columns))}"
        )
    unlabelled = int(df[d.target].isna().sum())
    if unlabelled:
        df = df[df[d.target].notna()]
        notes.append(f"{unlabelled:,} rows without a label left out")
    if target or not settings.config_path:
        settings.task = infer_task(df[d.target])
    if d.time_column:
        df = df.assign(**{d.time_column: parse_times(df[d.time_column], d.time_format)})
        bad = int(df[d.time_column].isna().sum())
        if bad:
            raise BacktestError(f"{bad:,} values of {d.time_column} are not times")
        df = df.sort_values(d.time_column, kind="stable")
    return df.reset_index(drop=True)


def _drop_row_ids(df: pd.DataFrame, settings: Settings, notes: list[str]) -> pd.DataFrame:
    """Without a list of features, row-id columns are no features: the newest of them (the
    configured id column if it is one) becomes the id column, the others are dropped."""
    d = settings.data
    if d.features.all():
        return df
    ids = _row_id_columns(df, (d.target or "", d.time_column or ""))
    if d.id_column and d.id_column in df.columns:
        ids = [c for c in ids if c != d.id_column] + [d.id_column]
    if ids:
        d.id_column = ids[-1]
        df = df.drop(columns=[c for c in ids if c != d.id_column])
        notes.append(f"left out as row ids: {', '.join(ids)}")
    return df


def _batch_bounds(
    df: pd.DataFrame, settings: Settings, batch_size: int | None, batch_period: str | None
) -> np.ndarray:
    """The row where each batch starts, then the number of rows."""
    from mlops_core.data.batching import period_start

    n = len(df)
    if batch_size is not None:
        if batch_size < 1:
            raise BacktestError("--batch-size must be positive")
        return np.append(np.arange(0, n, batch_size), n)
    tcol = settings.data.time_column
    if not tcol:
        raise BacktestError("--batch-period needs a time column (--time)")
    starts = period_start(df[tcol], batch_period or "").to_numpy()
    change = np.flatnonzero(starts[1:] != starts[:-1]) + 1
    return np.concatenate([[0], change, [n]])


def _batch_times(df: pd.DataFrame, settings: Settings, bounds: np.ndarray) -> list[pd.Timestamp]:
    """The time each batch is complete (its newest row); without a time column, batch i is
    ``EPOCH`` + i days."""
    tcol = settings.data.time_column
    if tcol:
        tv = df[tcol]
        return [pd.Timestamp(tv.iloc[b - 1]) for b in bounds[1:]]
    return [EPOCH + pd.Timedelta(days=i) for i in range(len(bounds) - 1)]


def _window(window: str | None, settings: Settings) -> tuple[int | None, str | None]:
    if window is None:
        return settings.model.window.rows, settings.model.window.period
    if window.isdigit():
        if int(window) == 0:
            raise BacktestError("--window must be a positive row count or a duration")
        return int(window), None
    try:
        pd.Timedelta(window)
    except ValueError:
        raise BacktestError(
            f"--window '{window}' is neither a row count nor a duration such as '90D'"
        ) from None
    return None, window


def _sidecar_drift(data: Path) -> list[Any]:
    """True drift points from ``<data>.drift.json``: ``{"drift_points": [...]}`` or a plain
    list; each point a row number, a time, or ``{"row": ...}`` / ``{"start": ...}``."""
    side = data.with_name(data.stem + ".drift.json")
    if not side.is_file():
        return []
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BacktestError(f"{side.name}: not JSON ({e})") from None
    points = raw.get("drift_points") if isinstance(raw, dict) else raw
    if not isinstance(points, list):
        raise BacktestError(
            f'{side.name}: expected {{"drift_points": [...]}} or a list of rows or times'
        )
    return [p.get("start", p.get("row")) if isinstance(p, dict) else p for p in points]


def _drift_batches(replay: History, points: list[Any]) -> list[int]:
    out = []
    tcol = replay.settings.data.time_column
    for p in points:
        if isinstance(p, (int, float, np.integer, np.floating)) and not isinstance(p, bool):
            row = int(p)  # a row number (JSON may write it as 6000.0)
        elif tcol:
            row = int(
                np.searchsorted(
                    replay.frame[tcol].to_numpy(), np.datetime64(pd.Timestamp(p).tz_localize(None))
                )
            )
        else:
            continue
        b = int(np.searchsorted(replay.bounds, row, side="right")) - 1
        if 0 <= b < replay.n_batches:
            out.append(b)
    return sorted(set(out))


# models ----------------------------------------------------------------------------------------
@dataclass
class Fitted:
    """The model a batch strategy serves, with what monitoring needs about it."""

    model: TrainedModel
    baseline: dict[str, float]  # metrics on its validation rows (the newest of its window)
    reference: pd.DataFrame  # sample of its training features, for data drift
    importances: dict[str, float]
    trained_through: int  # newest labelled batch in its window
    first_row: int  # oldest row of its window
    rows: int
    at: pd.Timestamp
    validation_errors: np.ndarray | None = None  # its errors on its validation rows
    val_rows: tuple[int, int] | None = None  # frame rows [from, to) it was validated on
    val_pred: pd.DataFrame | None = None  # its predictions there, before the refit
    window_rows: int = 0  # rows of the window it chose from (``rows``: those it kept)
    calibration: Calibration | None = None  # for its label-free estimates (validation rows)
    cpu_s: float = 0.0  # CPU seconds its training took
    # its predictions and their metrics by batch: strategies that serve the same model share them
    _seen: dict[int, tuple[pd.DataFrame, dict[str, float]]] = field(
        default_factory=dict, repr=False
    )

    def score(self, replay: History, t: int) -> tuple[pd.DataFrame, dict[str, float]]:
        """Predictions for batch ``t`` and their metrics (computed once per model)."""
        if t not in self._seen:
            batch = replay.batch(t)
            pred = self.model.predict_frame(batch[list(replay.kinds)])
            self._seen[t] = (
                pred,
                compute_metrics(replay.task, batch[replay.target], pred, replay.classes),
            )
        return self._seen[t]


class Trainer:
    """Fits the configured model type on a window, as ``mlops train`` does without the search
    (fixed hyper-parameters: the search's first trial, overridden by ``model.params``).

    Training is seeded, so one window always gives the same model: fits are kept by window and
    shared between strategies (each is still charged the CPU seconds of the fit)."""

    def __init__(self, replay: History) -> None:
        self.replay = replay
        self._fits: dict[tuple[int, int], Fitted] = {}
        m = replay.settings.model
        self.kind = m.type
        self.params = default_params(m.type, replay.task) | m.params
        self.seed = m.seed
        self.validation = m.validation
        self.spec = feature_spec(replay.settings, replay.frame, m.type, replay.classes)

    def fit(self, through: int, start_row: int | None = None) -> Fitted:
        r = self.replay
        min_rows = max(r.settings.model.min_rows, r.settings.model.window.min_rows)
        win = r.window(through, start_row, min_rows=min_rows)
        key = (int(win.index[0]), int(win.index[-1]))
        if key not in self._fits:
            c0 = time.process_time()
            fitted = self._fit(win, through)
            fitted.cpu_s = time.process_time() - c0
            self._fits[key] = fitted
        return self._fits[key]

    def _fit(self, win: pd.DataFrame, through: int) -> Fitted:
        r = self.replay
        X, y = win[list(r.kinds)], win[r.target]
        n_val = max(1, round(len(win) * self.validation))
        tr, va = slice(0, len(win) - n_val), slice(len(win) - n_val, len(win))
        classes = r.classes
        if classes is not None:  # a window may miss a class for a while: fit on those it has
            seen = set(pd.unique(y.iloc[tr]).tolist())
            if seen != set(classes):
                keep = y.isin(seen).to_numpy()
                X, y = X[keep], y[keep]
                n_val = max(1, round(len(X) * self.validation))
                tr, va = slice(0, len(X) - n_val), slice(len(X) - n_val, len(X))
        w = r.settings.model.window
        available = len(X)
        chosen = choose_window(
            self.kind,
            r.task,
            self.spec,
            self.params,
            X.iloc[tr],
            y.iloc[tr],
            X.iloc[va],
            y.iloc[va],
            min_rows=w.min_rows,
            choose=w.choose,
            seed=self.seed,
        )
        pred_va = chosen.model.predict_frame(X.iloc[va])
        baseline = compute_metrics(r.task, y.iloc[va], pred_va, classes)
        errors = error_stream(r.task, y.iloc[va], pred_va["prediction"])
        val_rows = (int(X.index[va.start]), int(X.index[-1]) + 1)
        calibration = None
        if classes is not None:
            calibration = fit_calibration(
                r.task,
                pred_va[[f"proba_{c}" for c in classes]].to_numpy(),
                pd.Categorical(y.iloc[va], categories=classes).codes,
                seed=self.seed,
            )
        X, y = X.iloc[chosen.start :], y.iloc[chosen.start :]
        # as `mlops train` does: refit on the whole chosen window, its newest rows too
        model = refit(chosen.model, X, y, self.seed)
        ref = sample_rows(X, r.settings.model.reference_rows, self.seed)
        return Fitted(
            model,
            baseline,
            ref,
            model.feature_importances(),
            through,
            int(X.index[0]),
            len(X),
            r.times[through],
            errors,
            val_rows=val_rows,
            val_pred=pred_va,
            window_rows=available,
            calibration=calibration,
        )


# what a strategy sees ----------------------------------------------------------------------------
@dataclass
class Arrival:
    """Labels of one batch, arrived now, with the prediction made when the batch came in."""

    batch: int
    y: pd.Series
    prediction: pd.DataFrame


@dataclass
class Step:
    index: int  # the batch just predicted
    time: pd.Timestamp
    X: pd.DataFrame  # its features (no labels)
    prediction: pd.DataFrame
    arrived: list[Arrival]
    labelled_through: int  # newest batch whose labels are known


@dataclass
class Retrain:
    reasons: list[str]
    start_row: int | None = None  # train from this row on (a detected change); None: the window
    kinds: tuple[str, ...] = ()  # the signals (a :class:`Reason` value, or "periodic")

    @property
    def planned(self) -> bool:
        """No change asked for it (a schedule, periodic or growth retrain): never a false
        trigger."""
        return bool(self.kinds) and all(k in PLANNED for k in self.kinds)


PLANNED = {r.value for r in PLANNED_REASONS} | {"periodic"}
REASONS = {r.value for r in Reason}


class Strategy:
    """A batch strategy: one served model, retrained when :meth:`decide` says so."""

    name = "strategy"

    def start(self, replay: History, fitted: Fitted) -> None:
        self.replay = replay

    gated = False  # a challenger worse than the served model on the newest rows is refused

    def retrained(self, fitted: Fitted, step: Step, action: Retrain) -> None:
        """Called after a retrain (re-baseline detectors, brakes...)."""

    def refused(self, challenger: Fitted, step: Step, action: Retrain) -> None:
        """Called when the gate refused the challenger of a retrain (the model stays)."""

    def decide(self, step: Step, fitted: Fitted) -> Retrain | None:
        raise NotImplementedError


class OnlineStrategy:
    """An incremental learner: predicts each batch, learns each batch of labels as it arrives."""

    name = "online"

    def start(self, replay: History, initial: pd.DataFrame) -> None:
        raise NotImplementedError

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        raise NotImplementedError


class Static(Strategy):
    name = "static"

    def decide(self, step: Step, fitted: Fitted) -> Retrain | None:
        return None


class Periodic(Strategy):
    def __init__(self, every: int) -> None:
        if every < 1:
            raise BacktestError("periodic:P needs P ≥ 1")
        self.every = every
        self.name = "every-batch" if every == 1 else f"periodic:{every}"

    def decide(self, step: Step, fitted: Fitted) -> Retrain | None:
        if step.labelled_through - fitted.trained_through >= self.every:
            return Retrain([f"periodic: {self.every} batch(es) of new labels"], kinds=("periodic",))
        return None


class PolicyStrategy(Strategy):
    """Production's policy on the signals monitoring would compute at this step: the same
    :func:`mlops_core.monitor.policy.compute_signals` and :func:`mlops_core.monitor.policy.decide`,
    in data
    time (the batches' times), with pending signals and the gate. Single-signal strategies are
    this with one signal and no brakes."""

    gated = True

    def __init__(self, name: str, policy: RetrainingConfig) -> None:
        self.name = name
        self.policy = policy

    def start(self, replay: History, fitted: Fitted) -> None:
        super().start(replay, fitted)
        # the first model counts as a training, as the first version does in production
        at = fitted.at.to_pydatetime()
        self.state = PolicyState(last_retrain=at, recent_retrains=(at,))
        self.metric = replay.settings.gate.metric or PRIMARY[replay.task]
        self.change_row: int | None = None  # where the change the window starts at began
        # label-free estimates waiting for their batch's labels: batch → (value, low, high)
        self.estimates: dict[int, tuple[float, float, float]] = {}
        self.checked: list[dict[str, Any]] = []  # estimates against the realised metric
        self.drifted = False  # the previous step's drift share reached the threshold
        self._reset(fitted)

    def _reset(self, fitted: Fitted) -> None:
        self.detectors = {
            d: ErrorStreamDetector(d)
            for d in self.policy.detectors
            if not (d == "ddm" and self.replay.task == "regression")
        }
        self.fed = 0  # errors seen since the model was trained
        self.fed_first_row: list[tuple[int, int]] = []  # (errors before, first row) per batch
        self.errors: list[np.ndarray] = []

    def _served(self, fitted: Fitted, action: Retrain, refused: bool = False) -> None:
        """A retrain ran: pending signals are served, the cooldown starts; the cap counts it
        unless the gate refused its challenger (the model did not change)."""
        at = fitted.at.to_pydatetime()
        recent = self.state.recent_retrains + (() if refused else (at,))
        self.state = PolicyState(
            last_retrain=at,
            recent_retrains=recent,
            trained_for=tuple(Reason(k) for k in action.kinds if k in REASONS),
        )

    def retrained(self, fitted: Fitted, step: Step, action: Retrain) -> None:
        self.change_row = action.start_row
        self._served(fitted, action)
        self._reset(fitted)

    def refused(self, challenger: Fitted, step: Step, action: Retrain) -> None:
        self._served(challenger, action, refused=True)

    def _window_rows(self, labelled_through: int) -> int:
        """Labelled rows a retrain now would train on (from the change on, while the window
        reaches back to it)."""
        r = self.replay
        if (
            self.change_row is not None
            and int(r.window(labelled_through).index[0]) >= self.change_row
        ):
            self.change_row = None  # the window is past the change: back to normal
        m = r.settings.model
        return len(r.window(labelled_through, self.change_row, max(m.min_rows, m.window.min_rows)))

    def decide(self, step: Step, fitted: Fitted) -> Retrain | None:
        """The signals monitoring would compute now, and the policy's decision on them."""
        realised = self._realised(step.arrived)
        fired, change_rows = self._watch_errors(step.arrived, fitted, realised is not None)
        est = self._estimate(step, fitted)
        self._check_estimates(step.arrived)
        share, wshare = self._drift(step, fitted)
        r = self.replay
        new_labels = int(r.bounds[step.labelled_through + 1] - r.bounds[fitted.trained_through + 1])
        signals = compute_signals(
            metric=self.metric,
            baseline=fitted.baseline,
            realised=realised,
            estimated=est,
            drift_share=share,
            weighted_drift_share=wshare,
            detectors_fired=fired,
            model_trained_at=fitted.at.to_pydatetime(),
            new_labels=new_labels,
            window_rows=self._window_rows(step.labelled_through),
            # where the error rose; else the first row of the evidence (the labelled rows seen
            # since the model was trained), as monitoring does
            change_at=min(change_rows)
            if change_rows
            else (self.fed_first_row[0][1] if self.fed_first_row else None),
        )
        return self._act(signals, step, fitted, wshare if wshare is not None else share)

    def _realised(self, arrived: list[Arrival]) -> dict[str, float] | None:
        """The metrics on the labels that arrived now (None: none did)."""
        if not arrived:
            return None
        r = self.replay
        y = pd.concat([a.y for a in arrived])
        pred = pd.concat([a.prediction for a in arrived])
        return compute_metrics(r.task, y, pred, r.classes)

    def _watch_errors(
        self, arrived: list[Arrival], fitted: Fitted, labelled: bool
    ) -> tuple[list[str], list[int]]:
        """Feed the arrived errors to the detectors: those that fired, and the rows where the
        changes they found began. None fired and labels arrived (``labelled``): where the error
        rose since the model was trained, against its validation errors."""
        fired: list[str] = []
        change_rows: list[int] = []
        for a in arrived:
            errors = error_stream(self.replay.task, a.y, a.prediction["prediction"])
            self.fed_first_row.append((self.fed, int(a.y.index[0])))
            self.errors.append(errors)
            for name, det in self.detectors.items():
                before = len(det.result.detections)
                det.update(errors)
                starts = det.result.change_starts[before:]
                if starts:
                    fired.append(name)
                    change_rows.append(self._row(starts[0]))
            self.fed += len(errors)
        if not change_rows and labelled and self.errors:
            rise = where_error_rose(fitted.validation_errors, np.concatenate(self.errors))
            if rise is not None:
                change_rows.append(self._row(rise))
        return fired, change_rows

    def _estimate(self, step: Step, fitted: Fitted) -> float | None:
        """The label-free estimate of the metric on this batch (classification), kept to check
        against the batch's labels when they arrive."""
        r, mcfg = self.replay, self.replay.settings.monitoring
        if r.task == "regression":
            return None
        proba = step.prediction[[f"proba_{c}" for c in r.classes or []]].to_numpy()
        if len(proba) < mcfg.min_rows:
            return None
        e = estimate_performance(
            r.task,
            proba,
            r.classes or [],
            simulations=50,
            seed=mcfg.seed + step.index,
            calibration=fitted.calibration,
        ).get(self.metric)
        if e is None:
            return None
        self.estimates[step.index] = (e.value, e.low, e.high)
        return e.value

    def _drift(self, step: Step, fitted: Fitted) -> tuple[float | None, float | None]:
        """This batch's drift share and weighted drift share against the model's reference
        (None, None: the policy has no drift signal)."""
        p, r, mcfg = self.policy, self.replay, self.replay.settings.monitoring
        if p.drift_share is None:
            return None, None
        drift = configured_drift(fitted.reference, step.X, r.kinds, fitted.importances, mcfg)
        share, wshare = drift.drift_share, drift.weighted_drift_share
        now_share = wshare if wshare is not None else share
        if (
            now_share is not None
            and now_share < p.drift_share
            and Reason.DRIFT in self.state.trained_for
        ):  # that drift is over: a new one asks
            self.state = replace(
                self.state,
                trained_for=tuple(x for x in self.state.trained_for if x != Reason.DRIFT),
            )
        return share, wshare

    def _act(
        self, signals: Signals, step: Step, fitted: Fitted, now_share: float | None
    ) -> Retrain | None:
        """The policy's decision on ``signals``: a retrain, or none (its pending signals kept)."""
        p = self.policy
        state = replace(
            self.state,
            change_at=self.change_row,
            trained_rows=fitted.window_rows,
            drifted_before=self.drifted,
        )
        self.drifted = bool(
            p.drift_share is not None and now_share is not None and now_share >= p.drift_share
        )
        decision = decide(signals, state, p, step.time.to_pydatetime(), self.replay.batch_period)
        if not decision.retrain:
            self.state = replace(
                self.state,
                pending=tuple(decision.pending),
                pending_change_at=decision.pending_change_at,
            )
            return None
        return Retrain(
            [f.text for f in decision.reasons],
            decision.since,  # type: ignore[arg-type]
            kinds=tuple(k.value for k in decision.kinds),
        )

    def _check_estimates(self, arrived: list[Arrival]) -> None:
        """Each arrived batch's earlier label-free estimate against its realised metric."""
        r = self.replay
        for a in arrived:
            if a.batch not in self.estimates:
                continue
            value, low, high = self.estimates.pop(a.batch)
            real = compute_metrics(r.task, a.y, a.prediction, r.classes).get(self.metric)
            if real is None or math.isnan(real):
                continue
            self.checked.append(
                {
                    "batch": a.batch,
                    "estimated": value,
                    "low": low,
                    "high": high,
                    "realised": real,
                    "within": bool(low <= real <= high),
                }
            )

    def _row(self, pos: int) -> int:
        """The frame row of position ``pos`` in the error stream fed since the last retrain."""
        first = 0
        for fed_before, row in self.fed_first_row:
            if fed_before <= pos:
                first = row + (pos - fed_before)
        return first


class BoostedOnline(OnlineStrategy):
    """Continued boosting (:class:`mlops_core.train.online.OnlineBooster`): the first model the
    other
    strategies start from, then a few trees more on each batch of labels as it arrives."""

    name = "online-xgboost"

    def start(self, replay: History, initial: pd.DataFrame) -> None:
        from mlops_core.train.online import OnlineBooster

        if replay.settings.model.type != "xgboost":
            raise BacktestError(
                "online-xgboost continues an XGBoost model; model.type is "
                f"'{replay.settings.model.type}'"
            )
        fitted = Trainer(replay).fit(replay.initial_batches - 1)
        self.model = OnlineBooster.from_trained(fitted.model, replay.settings.model.seed)

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        self.model.learn(X, y)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.model.predict_frame(X)


# strategies by name -------------------------------------------------------------------------
def _single(policy: RetrainingConfig, **signal: Any) -> RetrainingConfig:
    """A policy with just one signal and no brakes: what a single-signal strategy does."""
    off: dict[str, Any] = dict(
        max_model_age=None,
        performance_drop=None,
        estimated_drop=None,
        drift_share=None,
        detectors=[],
        cooldown="0s",
        max_retrains=10**9,
        per="1D",
        min_new_labels=0,
        window_growth=None,
    )
    return policy.model_copy(update=off | signal)


DETECTOR_NAMES = {"adwin": "adwin", "page-hinkley": "page_hinkley", "ddm": "ddm"}
STRATEGIES = (
    "static",
    "periodic:P",
    "every-batch",
    "performance",
    "drift",
    "detector:adwin",
    "detector:page-hinkley",
    "detector:ddm",
    "estimated",
    "online",
    "online-xgboost",
    "policy",
)
DEFAULT_STRATEGIES = (
    "static",
    "every-batch",
    "periodic:10",
    "performance",
    "drift",
    "detector:adwin",
    "estimated",
    "policy",
)


def make_strategy(spec: str, settings: Settings) -> Strategy | OnlineStrategy:
    """A strategy from its name in ``--strategies`` (see ``STRATEGIES``)."""
    p = settings.retraining
    name, _, arg = spec.strip().partition(":")
    if name == "static":
        return Static()
    if name == "every-batch":
        return Periodic(1)
    if name == "periodic":
        if not arg.isdigit():
            raise BacktestError(f"'{spec}': write periodic:P with P a number of batches")
        return Periodic(int(arg))
    if name == "performance":
        return PolicyStrategy(spec, _single(p, performance_drop=p.performance_drop or 0.05))
    if name == "estimated":
        return PolicyStrategy(spec, _single(p, estimated_drop=p.estimated_drop or 0.05))
    if name == "drift":
        return PolicyStrategy(spec, _single(p, drift_share=p.drift_share or 0.5))
    if name == "detector":
        if arg not in DETECTOR_NAMES:
            raise BacktestError(
                f"'{spec}': known detectors are "
                f"{', '.join('detector:' + d for d in DETECTOR_NAMES)}"
            )
        return PolicyStrategy(spec, _single(p, detectors=[DETECTOR_NAMES[arg]]))
    if name == "online":
        from mlops_core.backtest.river_online import RiverOnline  # River only when asked for

        return RiverOnline(settings.model.seed)
    if name == "online-xgboost":
        return BoostedOnline()
    if name == "policy":
        return PolicyStrategy("policy", p)
    raise BacktestError(f"unknown strategy '{spec}'; known: {', '.join(STRATEGIES)}")


# running ---------------------------------------------------------------------------------------
@dataclass
class StrategyResult:
    name: str
    metric_name: str
    mean_metric: float | None  # None: no batch had the metric defined
    retrains: int
    train_cpu_s: float
    monitor_cpu_s: float
    per_batch: list[dict[str, Any]]  # {"batch", "time", "rows", "<metric>"..., "retrained"}
    triggers: list[dict[str, Any]]  # {"batch", "time", "reasons", "start_row"}
    detection_delays: list[int | None] = field(default_factory=list)  # per true drift point
    false_triggers: int | None = None  # signalled retrains far from any true drift point
    wall_s: float = 0.0
    refused: int = 0  # retrains whose challenger the gate refused (the model stayed)
    # label-free estimates against the realised metric: checks, within_interval, mean_error
    estimate_coverage: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BacktestResult:
    dataset: str
    task: str
    batches: int  # batches scored (after the initial ones)
    metric_name: str
    strategies: list[StrategyResult]
    settings: dict[str, Any]
    drift_batches: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "dataset": self.dataset,
            "task": self.task,
            "batches": self.batches,
            "metric_name": self.metric_name,
            "drift_batches": self.drift_batches,
            "settings": self.settings,
            "strategies": [s.to_dict() for s in self.strategies],
        }

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "strategy": s.name,
                s.metric_name: s.mean_metric,
                "retrains": s.retrains,
                "retrain_share": s.retrains / max(self.batches, 1),
                "train_cpu_s": s.train_cpu_s,
                "monitor_cpu_s": s.monitor_cpu_s,
                "false_triggers": s.false_triggers,
                "detection_delays": s.detection_delays,
            }
            for s in self.strategies
        ]


def headline_metric(task: str, metric: str | None = None) -> str:
    """The metric a backtest compares on: accuracy for classification, RMSE for regression."""
    return metric or ("rmse" if task == "regression" else "accuracy")


def run_strategy(
    replay: History,
    strategy: Strategy | OnlineStrategy,
    *,
    metric: str | None = None,
    progress: ProgressFn | None = None,
    trainer: Trainer | None = None,
) -> StrategyResult:
    metric = headline_metric(replay.task, metric)
    t_wall = time.perf_counter()
    run = _Run(replay, strategy, trainer or Trainer(replay), t_wall)
    run.start()
    K = replay.initial_batches
    for t in range(K, replay.n_batches):
        run.step(t)
        if progress:
            progress(strategy.name, t - K + 1, replay.n_batches - K)
    return run.result(metric)


@dataclass
class _Run:
    """One strategy's replay under way: the model it serves, what it has cost, what it saw."""

    replay: History
    strategy: Strategy | OnlineStrategy
    trainer: Trainer
    t_wall: float  # perf_counter at the start
    fitted: Fitted | None = None  # the model a batch strategy serves
    train_cpu: float = 0.0
    monitor_cpu: float = 0.0
    preds: dict[int, pd.DataFrame] = field(default_factory=dict)  # waiting for their labels
    per_batch: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> None:
        """The first model, on the initial batches."""
        r, strategy, K = self.replay, self.strategy, self.replay.initial_batches
        if isinstance(strategy, OnlineStrategy):
            c0 = time.process_time()
            strategy.start(r, r.frame.iloc[: r.bounds[K]])
            self.train_cpu += time.process_time() - c0
        else:
            self.fitted = self.trainer.fit(K - 1)
            self.train_cpu += self.fitted.cpu_s
            strategy.start(r, self.fitted)

    def step(self, t: int) -> None:
        """Batch ``t``: predict and score it; then the labels due arrive, and the strategy
        learns them or decides whether to retrain."""
        r, strategy = self.replay, self.strategy
        batch = r.batch(t)
        X = batch[list(r.kinds)]
        if isinstance(strategy, OnlineStrategy):
            c0 = time.process_time()
            pred = strategy.predict(X)
            self.train_cpu += time.process_time() - c0
            scores = compute_metrics(r.task, batch[r.target], pred, r.classes)
        else:
            assert self.fitted is not None
            pred, scores = self.fitted.score(r, t)
        self.preds[t] = pred
        row = {
            "batch": t,
            "time": r.times[t].isoformat(),
            "rows": len(batch),
            **{k: _num(v) for k, v in scores.items() if k in _KEPT},
            "retrained": False,
        }
        self.per_batch.append(row)
        K = r.initial_batches
        labelled_through = max(K - 1, t - r.label_delay)
        arrived_ids = [t - r.label_delay] if t - r.label_delay >= K else []
        arrived = [Arrival(b, r.batch(b)[r.target], self.preds.pop(b)) for b in arrived_ids]
        if isinstance(strategy, OnlineStrategy):
            c0 = time.process_time()
            for a in arrived:
                strategy.learn(r.features(a.batch), a.y)
            self.train_cpu += time.process_time() - c0
        elif self._decide(strategy, Step(t, r.times[t], X, pred, arrived, labelled_through)):
            row["retrained"] = True

    def _decide(self, strategy: Strategy, step: Step) -> bool:
        """Ask the strategy; on a retrain, train the challenger and (a gated strategy) gate it.
        True: the challenger serves from the next batch on."""
        r, fitted = self.replay, self.fitted
        assert fitted is not None
        c0 = time.process_time()
        action = strategy.decide(step, fitted)
        self.monitor_cpu += time.process_time() - c0
        if action is None:
            return False
        challenger = self.trainer.fit(step.labelled_through, action.start_row)
        self.train_cpu += challenger.cpu_s
        refusal = gate(r, fitted, challenger) if strategy.gated else None
        self.triggers.append(
            {
                "batch": step.index,
                "time": r.times[step.index].isoformat(),
                "reasons": action.reasons,
                "kinds": list(action.kinds),
                "planned": action.planned,
                "start_row": action.start_row,
                "window_rows": challenger.rows,
                "refused": refusal,
            }
        )
        if refusal:
            strategy.refused(challenger, step, action)
            return False
        self.fitted = challenger
        strategy.retrained(challenger, step, action)
        return True

    def result(self, metric: str) -> StrategyResult:
        """Mean metric, retrains (served and refused), costs, detection delays and false
        triggers, and how well the strategy's label-free estimates did."""
        r, triggers = self.replay, self.triggers
        values = [b[metric] for b in self.per_batch if b.get(metric) is not None]
        served = [tr for tr in triggers if not tr["refused"]]
        delays, false = detection_metrics(
            r,
            [tr["batch"] for tr in served],
            signalled=[tr["batch"] for tr in served if not tr["planned"]],
        )
        checked = getattr(self.strategy, "checked", [])
        return StrategyResult(
            self.strategy.name,
            metric,
            float(np.mean(values)) if values else None,
            len(served),
            round(self.train_cpu, 3),
            round(self.monitor_cpu, 3),
            self.per_batch,
            triggers,
            delays,
            false,
            round(time.perf_counter() - self.t_wall, 3),
            refused=len(triggers) - len(served),
            estimate_coverage=_coverage(checked),
        )


def gate(r: History, champion: Fitted, challenger: Fitted) -> str | None:
    """As the promotion gate does: the challenger (before its refit) against the served model
    on the challenger's validation rows that the served model has not trained on (when there
    are at least ``monitoring.min_rows`` of them). Returns why it is refused, or ``None``."""
    if challenger.val_rows is None or challenger.val_pred is None:
        return None
    first = max(challenger.val_rows[0], int(r.bounds[champion.trained_through + 1]))
    rows = r.frame.iloc[first : challenger.val_rows[1]]
    if len(rows) < r.settings.monitoring.min_rows:
        return None
    metric = r.settings.gate.metric or PRIMARY[r.task]
    mine = compute_metrics(
        r.task, rows[r.target], challenger.val_pred.loc[rows.index], r.classes
    ).get(metric)
    theirs = compute_metrics(
        r.task, rows[r.target], champion.model.predict_frame(rows[list(r.kinds)]), r.classes
    ).get(metric)
    if mine is None or theirs is None or math.isnan(mine) or math.isnan(theirs):
        return None
    gain = -(metric_drop(metric, theirs, mine) or 0.0)  # positive: the challenger is better
    # beyond noise only: right after a change the challenger (before its refit) has not seen
    # the new concept, and the served model may have; two standard errors of a score in [0, 1]
    noise = 2 * math.sqrt(max(theirs * (1 - theirs), 0.0) / len(rows)) if 0 <= theirs <= 1 else 0.0
    if gain >= r.settings.gate.min_improvement - noise:
        return None
    return (
        f"gate: {metric} {mine:.4f} vs the served model's {theirs:.4f} on the {len(rows):,} "
        "newest rows it has not trained on"
    )


def _coverage(checked: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How well the label-free estimates matched the realised metric: the share inside their
    90% interval, and the mean error (estimate minus realised)."""
    if not checked:
        return None
    return {
        "checks": len(checked),
        "within_interval": round(float(np.mean([c["within"] for c in checked])), 4),
        "mean_error": round(float(np.mean([c["estimated"] - c["realised"] for c in checked])), 4),
        "mean_abs_error": round(
            float(np.mean([abs(c["estimated"] - c["realised"]) for c in checked])), 4
        ),
    }


_KEPT = ("accuracy", "roc_auc", "f1_macro", "rmse", "mae")


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 6)


def detection_metrics(
    r: History,
    trigger_batches: list[int],
    horizon: int | None = None,
    signalled: list[int] | None = None,
) -> tuple[list[int | None], int | None]:
    """Per true drift point, batches until the first trigger after it (None: never, before the
    next point); false triggers: those (of ``signalled``, the triggers a signal asked for, not
    a planned schedule, periodic or growth retrain) before the first point or more than
    ``horizon`` batches (default: a tenth of the batches, at least 5) after the latest point."""
    if not r.drift_batches:
        return [], None
    horizon = horizon or max(5, r.n_batches // 10)
    points = r.drift_batches
    delays: list[int | None] = []
    for i, p in enumerate(points):
        nxt = points[i + 1] if i + 1 < len(points) else math.inf
        hits = [b for b in trigger_batches if p <= b < nxt]
        delays.append(hits[0] - p if hits else None)
    false = 0
    for b in signalled if signalled is not None else trigger_batches:
        before = [p for p in points if p <= b]
        if not before or b - before[-1] > horizon:
            false += 1
    return delays, false


def run_backtest(
    replay: History,
    strategies: Iterable[str],
    *,
    metric: str | None = None,
    progress: ProgressFn | None = None,
    extra: dict[str, Strategy | OnlineStrategy] | None = None,
) -> BacktestResult:
    """Run each strategy (by name, see :func:`make_strategy`; ``extra`` adds custom ones)."""
    chosen: list[Strategy | OnlineStrategy] = [
        make_strategy(s, replay.settings) for s in strategies
    ]
    for name, strategy in (extra or {}).items():
        strategy.name = name
        chosen.append(strategy)
    metric = headline_metric(replay.task, metric)
    trainer = Trainer(replay)  # one cache of fits for all the strategies
    results = [
        run_strategy(replay, s, metric=metric, progress=progress, trainer=trainer) for s in chosen
    ]
    s = replay.settings
    settings = {
        "initial_batches": replay.initial_batches,
        "label_delay": replay.label_delay,
        "window_rows": replay.window_rows,
        "window_period": replay.window_period,
        "model": s.model.type,
        "target": replay.target,
        "model_settings": {
            "params": trainer.params,
            "choose": s.model.window.choose,
            "min_rows": s.model.window.min_rows,
            "holdout": s.model.validation,
        },
        "time_column": s.data.time_column,
        "rows": len(replay.frame),
        "policy": s.retraining.model_dump(mode="json"),
        "notes": replay.notes,
    }
    return BacktestResult(
        replay.dataset,
        replay.task,
        replay.n_batches - replay.initial_batches,
        metric,
        results,
        settings,
        replay.drift_batches,
    )


def write_json(result: BacktestResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str), encoding="utf-8")
    return path


def read_json(path: Path) -> dict[str, Any]:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or "strategies" not in raw:
        raise BacktestError(f"{path}: not a backtest result")
    return raw


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """Plotly figures of a result (as :meth:`BacktestResult.to_dict` writes it): the metric
    over time for every strategy with retrain marks, and quality against retraining cost."""
    from plotly.colors import qualitative

    metric = result["metric_name"]
    palette = qualitative.Plotly
    colour = {s["name"]: palette[i % len(palette)] for i, s in enumerate(result["strategies"])}
    return {
        "over_time": _over_time_figure(result, metric, colour),
        "cost": _cost_figure(result, metric, colour),
    }


def _over_time_figure(result: dict[str, Any], metric: str, colour: dict[str, str]) -> Any:
    """The metric per batch for every strategy, its retrains marked, true drift points
    dotted."""
    import plotly.graph_objects as go

    over = go.Figure()
    for s in result["strategies"]:
        _add_strategy_traces(over, s, metric, colour[s["name"]])
    first = result["strategies"][0]["per_batch"] if result["strategies"] else []
    by_batch = {b["batch"]: pd.Timestamp(b["time"]) for b in first}
    for d in result.get("drift_batches", []):
        if d in by_batch:
            over.add_vline(x=by_batch[d], line_dash="dot", line_color="grey")
    over.update_layout(
        title=f"{metric} per batch ({result['dataset']}); ▲ retrain, dotted: true drift point",
        xaxis_title="batch time",
        yaxis_title=metric,
        hovermode="x unified",
        template="plotly_white",
    )
    return over


def _add_strategy_traces(over: Any, s: dict[str, Any], metric: str, colour: str) -> None:
    """One strategy's line, and a mark at each batch after which it retrained."""
    import plotly.graph_objects as go

    xs = [pd.Timestamp(b["time"]) for b in s["per_batch"]]
    ys = [b.get(metric) for b in s["per_batch"]]
    over.add_trace(
        go.Scatter(
            x=xs, y=ys, mode="lines", name=s["name"], legendgroup=s["name"], line_color=colour
        )
    )
    marks = [i for i, b in enumerate(s["per_batch"]) if b.get("retrained")]
    if marks:
        over.add_trace(
            go.Scatter(
                x=[xs[i] for i in marks],
                y=[ys[i] for i in marks],
                mode="markers",
                marker_symbol="triangle-up",
                marker_size=9,
                marker_color=colour,
                name=f"{s['name']} retrains",
                legendgroup=s["name"],
                showlegend=False,
                hovertext=[", ".join(t["reasons"]) for t in s["triggers"]],
            )
        )


def _cost_figure(result: dict[str, Any], metric: str, colour: dict[str, str]) -> Any:
    """Each strategy's mean metric against its CPU seconds (training and monitoring)."""
    import plotly.graph_objects as go

    cost = go.Figure()
    for s in result["strategies"]:
        cost.add_trace(
            go.Scatter(
                x=[s["train_cpu_s"] + s["monitor_cpu_s"]],
                y=[s["mean_metric"]],
                mode="markers+text",
                text=[s["name"]],
                textposition="top center",
                marker_size=12,
                name=s["name"],
                marker_color=colour[s["name"]],
                hovertext=f"{s['retrains']} retrains",
            )
        )
    cost.update_layout(
        title="quality against cost",
        xaxis_title="CPU seconds (train + monitor)",
        yaxis_title=f"mean {metric}",
        template="plotly_white",
        showlegend=False,
    )
    return cost


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _delays(s: dict[str, Any]) -> str:
    d = s.get("detection_delays") or []
    return ", ".join("missed" if x is None else str(x) for x in d) or "n/a"


def _coverage_text(s: dict[str, Any]) -> str:
    c = s.get("estimate_coverage")
    if not c:
        return "n/a"
    return f"{c['within_interval']:.0%} of {c['checks']} (mean error {c['mean_error']:+.3f})"


def write_html(result: BacktestResult | dict[str, Any], path: Path) -> Path:
    """The result as one HTML page: a table (mean metric, retrains and their share of the
    batches, refused by the gate, detection delay per true drift point, false triggers,
    coverage of the label-free estimate, CPU), the settings (model, window, policy), and the
    charts."""
    raw = result.to_dict() if isinstance(result, BacktestResult) else result
    figs = figures(raw)
    table = _table_html(raw)
    settings = _settings_html(raw.get("settings", {}))
    body = figs["over_time"].to_html(full_html=False, include_plotlyjs=True) + figs["cost"].to_html(
        full_html=False, include_plotlyjs=False
    )
    name = html.escape(raw["dataset"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Backtest: {name}"
        "</title><style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}</style></head><body>"
        f"<h1>Backtest: {name}</h1><p>{raw['batches']} batches scored, task "
        f"{raw['task']}.</p>{table}{settings}{body}</body></html>",
        encoding="utf-8",
    )
    return path


def _table_html(raw: dict[str, Any]) -> str:
    """The strategies' table, one row each."""
    n = max(raw["batches"], 1)
    rows = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{_fmt(s['mean_metric'])}</td>"
        f"<td>{s['retrains']}</td><td>{s['retrains'] / n:.0%}</td>"
        f"<td>{s.get('refused', 0)}</td><td>{_delays(s)}</td>"
        f"<td>{'n/a' if s.get('false_triggers') is None else s['false_triggers']}</td>"
        f"<td>{_coverage_text(s)}</td>"
        f"<td>{s['train_cpu_s']:.1f}</td><td>{s['monitor_cpu_s']:.1f}</td></tr>"
        for s in raw["strategies"]
    )
    return (
        f"<table><tr><th>strategy</th><th>mean {raw['metric_name']}</th><th>retrains</th>"
        "<th>retrain share</th><th>refused by the gate</th>"
        "<th>detection delay (batches)</th><th>false triggers</th>"
        "<th>estimate inside its 90% interval</th>"
        f"<th>train CPU s</th><th>monitor CPU s</th></tr>{rows}</table>"
    )


def _settings_html(st: dict[str, Any]) -> str:
    """The settings the backtest ran with (model, window, batches, policy, notes), and what
    the table's columns mean."""
    window = (
        f"{st['window_rows']:,} newest rows"
        if st.get("window_rows")
        else st.get("window_period") or "every labelled row"
    )
    model = st.get("model_settings") or {}
    policy = st.get("policy") or {}
    notes = "".join(f"<li>{html.escape(str(x))}</li>" for x in st.get("notes") or [])
    return (
        "<h2>Settings</h2><ul>"
        f"<li>model: {html.escape(str(st.get('model', '')))}, hyper-parameters "
        f"{html.escape(json.dumps(model.get('params', {})))}; refit on the whole window with "
        "the early-stopped number of trees</li>"
        f"<li>window: {html.escape(window)}; choose the newest half or quarter when it predicts "
        f"the newest rows better: {model.get('choose', 'n/a')}; at least "
        f"{model.get('min_rows', 'n/a')} rows after a located change</li>"
        f"<li>{st.get('initial_batches')} initial batches, label delay "
        f"{st.get('label_delay')} batch(es), {st.get('rows', 0):,} rows, target "
        f"{html.escape(str(st.get('target')))}, time column "
        f"{html.escape(str(st.get('time_column') or 'none (batch i is day i)'))}</li>"
        f"<li>policy: {html.escape(', '.join(f'{k}={v}' for k, v in policy.items()))}</li>"
        f"{notes}</ul>"
        "<p>Retrain share: retrains over scored batches. Detection delay: batches from each "
        "true drift point to the first retrain after it. False triggers: retrains a signal "
        "asked for (not the schedule, a periodic or a growth retrain) before the first drift "
        "point or long after the last.</p>"
    )
