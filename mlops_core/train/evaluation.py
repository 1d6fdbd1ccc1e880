"""Metrics by task, slice metrics, and the promotion gate (a pure decision with every reason)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# the metric the gate compares, and whether higher is better
PRIMARY = {"binary": "roc_auc", "multiclass": "f1_macro", "regression": "rmse"}
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "accuracy": True,
    "f1": True,
    "f1_macro": True,
    "log_loss": False,
    "calibration_error": False,
    "rmse": False,
    "mae": False,
    "r2": True,
}
MIN_SLICE_ROWS = 200  # smaller slices are reported but too noisy to decide anything


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate − predicted probability| over equal-width bins, weighted by size."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(err)


def compute_metrics(
    task: str, y_true: pd.Series | np.ndarray, pred: pd.DataFrame, classes: list[Any] | None = None
) -> dict[str, float]:
    """Metrics of ``pred`` (our prediction frame: ``prediction`` and, for classification,
    ``proba_<class>`` columns) against ``y_true``. NaN where a metric is undefined (one class)."""
    y = np.asarray(y_true)
    out: dict[str, float] = {}
    if task == "regression":
        yhat = pred["prediction"].to_numpy(dtype=float)
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(y, yhat)))
        out["mae"] = float(skm.mean_absolute_error(y, yhat))
        out["r2"] = float(skm.r2_score(y, yhat)) if len(y) > 1 else math.nan
        return out
    classes = classes if classes is not None else sorted(pd.unique(y).tolist())
    proba = pred[[f"proba_{c}" for c in classes]].to_numpy(dtype=float)
    yhat = pred["prediction"].to_numpy()
    out["accuracy"] = float(skm.accuracy_score(y.astype(str), yhat.astype(str)))
    present = set(pd.unique(y).tolist())
    if task == "binary":
        pos = classes[-1]
        yb = (y == pos).astype(int)
        p1 = proba[:, -1]
        both = len(present) == 2
        out["roc_auc"] = float(skm.roc_auc_score(yb, p1)) if both else math.nan
        out["pr_auc"] = float(skm.average_precision_score(yb, p1)) if both else math.nan
        out["f1"] = float(
            skm.f1_score(yb, (yhat.astype(str) == str(pos)).astype(int), zero_division=0)
        )
        out["log_loss"] = float(skm.log_loss(yb, np.clip(p1, 1e-7, 1 - 1e-7), labels=[0, 1]))
        out["calibration_error"] = expected_calibration_error(yb, p1)
    else:
        out["f1_macro"] = float(
            skm.f1_score(y.astype(str), yhat.astype(str), average="macro", zero_division=0)
        )
        p = np.clip(proba, 1e-7, 1)
        out["log_loss"] = float(
            skm.log_loss(
                y.astype(str), p / p.sum(axis=1, keepdims=True), labels=[str(c) for c in classes]
            )
        )
    return out


def slice_metrics(
    task: str,
    frame: pd.DataFrame,
    y_true: pd.Series,
    pred: pd.DataFrame,
    columns: list[str],
    classes: list[Any] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """{column: {value: metrics + rows}} for each configured categorical column."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    if classes is None and task != "regression":  # the hold-out's classes, not each slice's
        classes = sorted(pd.unique(np.asarray(y_true)).tolist())
    for col in columns:
        if col not in frame.columns:
            continue
        s = frame[col]
        keys = s.astype(object).where(s.notna(), "<missing>").astype(str).to_numpy()
        out[col] = {}
        for value in sorted(set(keys.tolist())):
            m = keys == value
            ys = np.asarray(y_true)[m]
            ms = compute_metrics(task, ys, pred.loc[m], classes)
            out[col][value] = ms | {"rows": float(m.sum())}
    return out


# metrics bounded in [0, 1] whose error behaves like a proportion's
_PROPORTIONS = frozenset({"accuracy", "f1", "f1_macro", "pr_auc"})


def metric_standard_error(
    metric: str, value: float, rows: float, positive_share: float | None = None
) -> float:
    """An approximate standard error of ``metric`` measured as ``value`` on ``rows`` rows: the
    noise a difference between two such measurements must exceed to mean anything.

    ROC AUC: Hanley & McNeil (1982), with the positives' share of the rows (a half when
    unknown); accuracy, F1, PR AUC: a proportion's ``sqrt(v(1-v)/n)``; RMSE ``v/sqrt(2n)`` and
    MAE ``0.76 v/sqrt(n)`` (normal errors); R² ``1/sqrt(n)``; any other metric ``v/sqrt(n)``.
    Infinite without rows."""
    n = float(rows)
    if n < 2 or math.isnan(value):
        return math.inf
    v = float(value)
    if metric == "roc_auc":
        share = 0.5 if positive_share is None else min(max(positive_share, 1 / n), 1 - 1 / n)
        n1 = max(n * share, 1.0)
        n0 = max(n - n1, 1.0)
        q1, q2 = v / (2 - v), 2 * v * v / (1 + v)
        var = (v * (1 - v) + (n1 - 1) * (q1 - v * v) + (n0 - 1) * (q2 - v * v)) / (n1 * n0)
        return math.sqrt(max(var, 1 / (n1 * n0)))
    if metric in _PROPORTIONS:
        return math.sqrt(max(v * (1 - v), 1 / n) / n)
    if metric == "rmse":
        return abs(v) / math.sqrt(2 * n)
    if metric == "mae":
        return 0.76 * abs(v) / math.sqrt(n)
    if metric == "r2":
        return 1 / math.sqrt(n)
    return abs(v) / math.sqrt(n)


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # every check, passed or not
    failed: list[str] = field(default_factory=list)  # the checks that failed
    metric: str = ""
    challenger: float | None = None
    champion: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _better(metric: str, a: float, b: float) -> float:
    """How much ``a`` beats ``b`` in the direction of ``metric`` (positive = better)."""
    return (a - b) if HIGHER_IS_BETTER.get(metric, True) else (b - a)


def _check(res: GateResult, ok: bool, text: str) -> None:
    """Record one gate check in ``res``; a failed one fails the gate."""
    res.reasons.append(("PASS " if ok else "FAIL ") + text)
    if not ok:
        res.failed.append(text)
        res.passed = False


def _check_min_score(res: GateResult, metric: str, score: float, min_score: float) -> None:
    ok = _better(metric, score, min_score) >= 0
    _check(
        res, ok, f"{metric} {score:.4f} {'meets' if ok else 'misses'} the minimum {min_score:.4f}"
    )


def _check_champion(
    res: GateResult,
    metric: str,
    score: float,
    mine: float | None,
    champion: dict[str, float] | None,
    *,
    min_improvement: float,
    compared_rows: int | None,
    comparable: bool,
) -> None:
    """The challenger (``mine``: its metric on the compared rows) against the champion, or why
    there is no comparison."""
    if (
        champion is not None
        and champion.get(metric) is not None
        and not math.isnan(champion[metric])
        and mine is not None
        and not math.isnan(mine)
    ):
        gain = _better(metric, mine, champion[metric])
        ok = gain >= min_improvement
        where = (
            f"the {compared_rows:,} newest rows the champion has not trained on"
            if compared_rows
            else "the same recent data"
        )
        res.challenger, res.champion = mine, champion[metric]
        _check(
            res,
            ok,
            f"{metric} {mine:.4f} vs champion {champion[metric]:.4f} on {where}: "
            f"{'+' if gain >= 0 else ''}{gain:.4f} (needs ≥ {min_improvement:+.4f})",
        )
    elif not comparable:
        res.reasons.append(
            f"PASS no comparison: the champion has trained on the hold-out rows "
            f"(too few newer rows to compare on; challenger {score:.4f})"
        )
    elif champion is None:
        res.reasons.append(f"PASS no champion yet: {metric} {score:.4f}")
    else:
        res.reasons.append(
            f"PASS no comparison: the champion has no {metric} on the same "
            f"recent data (challenger {score:.4f})"
        )


def _worst_slice(
    metric: str,
    challenger_slices: dict[str, dict[str, dict[str, float]]],
    champion_slices: dict[str, dict[str, dict[str, float]]],
) -> tuple[float, str] | None:
    """(largest regression of ``metric``, 'column=value') over the slices both models have
    with enough rows; None if there is none."""
    worst: tuple[float, str] | None = None
    for col, values in challenger_slices.items():
        for value, m in values.items():
            base = champion_slices.get(col, {}).get(value)
            if not base or m.get("rows", 0) < MIN_SLICE_ROWS or metric not in base:
                continue
            if math.isnan(m.get(metric, math.nan)) or math.isnan(base[metric]):
                continue
            drop = -_better(metric, m[metric], base[metric])
            if worst is None or drop > worst[0]:
                worst = (drop, f"{col}={value}")
    return worst


def _against_champion(drop: float) -> str:
    """A drop (positive = worse) in words, never a signed number after a verb: "worse by
    0.0030 than the champion's", "better by ...", "as good as the champion's"."""
    shown = round(drop, 4)
    if shown > 0:
        return f"worse by {shown:.4f} than the champion's"
    if shown < 0:
        return f"better by {-shown:.4f} than the champion's"
    return "as good as the champion's"


def _check_slices(
    res: GateResult,
    metric: str,
    challenger_slices: dict[str, dict[str, dict[str, float]]],
    champion_slices: dict[str, dict[str, dict[str, float]]],
    max_slice_regression: float,
) -> None:
    worst = _worst_slice(metric, challenger_slices, champion_slices)
    if worst is not None:
        ok = worst[0] <= max_slice_regression
        _check(
            res,
            ok,
            f"worst slice {worst[1]}: {metric} {_against_champion(worst[0])} "
            f"(allowed: worse by {max_slice_regression:.4f})",
        )
    else:
        res.reasons.append(
            f"PASS no slice to compare: none has {MIN_SLICE_ROWS} rows and "
            f"a {metric} for both models"
        )


def decide_gate(
    *,
    task: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    challenger_slices: dict[str, dict[str, dict[str, float]]] | None = None,
    champion_slices: dict[str, dict[str, dict[str, float]]] | None = None,
    smoke_ok: bool | None = None,
    smoke_detail: str = "",
    metric: str | None = None,
    min_score: float | None = None,
    min_improvement: float = 0.0,
    max_slice_regression: float | None = None,
    compared: dict[str, float] | None = None,
    compared_rows: int | None = None,
    comparable: bool = True,
) -> GateResult:
    """The promotion gate. Pure: metrics in, decision with every reason out.

    ``champion``: the champion's metrics on the newest rows it has not trained on (``compared_
    rows`` of them), ``compared`` the challenger's on the same rows (default: ``challenger``,
    its metrics on the whole hold-out). ``comparable=False``: the champion has trained on the
    hold-out rows (too few newer ones): no comparison."""
    metric = metric or PRIMARY[task]
    res = GateResult(
        passed=True,
        metric=metric,
        challenger=challenger.get(metric),
        champion=champion.get(metric) if champion else None,
    )
    score = challenger.get(metric, math.nan)
    if score is None or math.isnan(score):
        _check(res, False, f"{metric} could not be computed on the hold-out")
        return res
    if min_score is not None:
        _check_min_score(res, metric, score, min_score)
    mine = (compared or challenger).get(metric, math.nan)
    _check_champion(
        res,
        metric,
        score,
        mine,
        champion,
        min_improvement=min_improvement,
        compared_rows=compared_rows,
        comparable=comparable,
    )
    if max_slice_regression is not None and challenger_slices and champion_slices:
        _check_slices(res, metric, challenger_slices, champion_slices, max_slice_regression)
    if smoke_ok is not None:
        _check(
            res,
            smoke_ok,
            "packaged model loads and predicts in a fresh process"
            + (f" ({smoke_detail})" if smoke_detail else ""),
        )
    return res


@dataclass
class Estimate:
    """A label-free estimate of a metric, with a 90% interval."""

    metric: str
    value: float
    low: float
    high: float
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Calibration:
    """What the label-free estimate learns from a model's hold-out (rows it did not train on):
    an isotonic map from its confidence to how often it was right, and how far the estimate
    strayed from the realised metric on chunks of those rows (``spread``, per metric), which
    widens the interval beyond the sampling noise of the simulation alone."""

    x: list[float]  # confidence (binary: probability of the positive class; else: the top one)
    y: list[float]  # calibrated
    spread: dict[str, float] = field(default_factory=dict)
    binary: bool = True

    def apply(self, p: np.ndarray) -> np.ndarray:
        p = np.array(p, dtype=float)
        if self.binary:
            return np.column_stack([1 - (q := np.interp(p[:, 1], self.x, self.y)), q])
        top = p.max(axis=1)
        new_top = np.interp(top, self.x, self.y)
        rest = np.clip(1 - top, 1e-12, None)
        scaled = p * ((1 - new_top) / rest)[:, None]
        scaled[np.arange(len(p)), p.argmax(axis=1)] = new_top
        return scaled

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(**d)


def fit_calibration(
    task: str, proba: np.ndarray, y_index: np.ndarray, *, chunks: int = 5, seed: int = 0
) -> Calibration | None:
    """A :class:`Calibration` from hold-out probabilities (rows × classes) and the index of
    each row's true class. ``None`` for regression or fewer than 50 rows."""
    from sklearn.isotonic import IsotonicRegression

    if task == "regression" or len(proba) < 50:
        return None
    p = _as_proba(proba)
    binary = p.shape[1] == 2
    if binary:
        x, target = p[:, 1], (np.asarray(y_index) == 1).astype(float)
    else:
        x, target = p.max(axis=1), (p.argmax(axis=1) == np.asarray(y_index)).astype(float)
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, target)
    grid = np.unique(np.concatenate([[0.0, 1.0], iso.X_thresholds_]))
    cal = Calibration(grid.tolist(), iso.predict(grid).tolist(), {}, binary)
    # the estimate against the realised metric on contiguous chunks (time-ordered rows)
    errors: dict[str, list[float]] = {}
    for part in np.array_split(np.arange(len(p)), chunks):
        if len(part) < 20:
            continue
        est = estimate_performance(
            task,
            p[part],
            list(range(p.shape[1])),
            simulations=50,
            seed=seed,
            calibration=cal,
            widen=False,
        )
        yi = np.asarray(y_index)[part]
        real = {"accuracy": float((p[part].argmax(axis=1) == yi).mean())}
        if binary and 0 < yi.sum() < len(yi):
            real["roc_auc"] = float(skm.roc_auc_score(yi, p[part][:, 1]))
        for k, e in est.items():
            if k in real:
                errors.setdefault(k, []).append(real[k] - e.value)
    cal.spread = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items() if v}
    return cal


def _as_proba(proba: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(proba, dtype=float), 0, 1)
    if p.ndim == 1:
        p = np.column_stack([1 - p, p])
    return p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)


def estimate_performance(
    task: str,
    proba: np.ndarray,
    classes: list[Any],
    *,
    simulations: int = 200,
    seed: int = 0,
    calibration: Calibration | None = None,
    widen: bool = True,
) -> dict[str, Estimate]:
    """Confidence-based performance estimation (as NannyML's CBPE): if the champion's
    probabilities are calibrated, the labels are draws from them. Simulate the labels, score
    the champion's own predictions against each draw, and report the mean and the 5-95%
    interval of accuracy and (binary) ROC AUC. Needs no labels.

    Models are often over-confident on rows they did not train on, which put the raw estimate
    above the realised metric. With a ``calibration`` (:func:`fit_calibration`, from the model's
    hold-out), the probabilities are calibrated first, and the interval is widened by how far
    the estimate strayed on the hold-out (``widen``)."""
    if task == "regression" or len(proba) == 0:
        return {}
    rng = np.random.default_rng(seed)
    raw = _as_proba(proba)
    pred = raw.argmax(axis=1)
    p = calibration.apply(raw) if calibration is not None else raw
    p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
    acc, auc = [], []
    cum = p.cumsum(axis=1)
    for _ in range(simulations):
        u = rng.uniform(size=(len(p), 1))
        y = (u > cum).sum(axis=1)  # a label drawn from each row's probabilities
        acc.append(float((y == pred).mean()))
        if task == "binary" and 0 < y.sum() < len(y):
            auc.append(float(skm.roc_auc_score(y, raw[:, 1])))
    out = {}
    for name, values in (("accuracy", acc), ("roc_auc", auc)):
        if not values:
            continue
        mean = float(np.mean(values))
        low, high = (float(v) for v in np.percentile(values, [5, 95]))
        extra = (
            calibration.spread.get(name, 0.0) * 1.645 if calibration is not None and widen else 0.0
        )
        out[name] = Estimate(name, mean, max(low - extra, 0.0), min(high + extra, 1.0), rows=len(p))
    return out
