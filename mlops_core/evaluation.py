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
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "accuracy": True, "f1": True,
                    "f1_macro": True, "log_loss": False, "calibration_error": False,
                    "rmse": False, "mae": False, "r2": True}
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


def compute_metrics(task: str, y_true: pd.Series | np.ndarray, pred: pd.DataFrame,
                    classes: list[Any] | None = None) -> dict[str, float]:
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
        out["f1"] = float(skm.f1_score(yb, (yhat.astype(str) == str(pos)).astype(int),
                                       zero_division=0))
        out["log_loss"] = float(skm.log_loss(yb, np.clip(p1, 1e-7, 1 - 1e-7), labels=[0, 1]))
        out["calibration_error"] = expected_calibration_error(yb, p1)
    else:
        out["f1_macro"] = float(skm.f1_score(y.astype(str), yhat.astype(str), average="macro",
                                             zero_division=0))
        p = np.clip(proba, 1e-7, 1)
        out["log_loss"] = float(skm.log_loss(y.astype(str), p / p.sum(axis=1, keepdims=True),
                                             labels=[str(c) for c in classes]))
    return out


def slice_metrics(task: str, frame: pd.DataFrame, y_true: pd.Series, pred: pd.DataFrame,
                  columns: list[str], classes: list[Any] | None = None
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


def decide_gate(*, task: str, challenger: dict[str, float], champion: dict[str, float] | None,
                challenger_slices: dict[str, dict[str, dict[str, float]]] | None = None,
                champion_slices: dict[str, dict[str, dict[str, float]]] | None = None,
                smoke_ok: bool | None = None, smoke_detail: str = "",
                metric: str | None = None, min_score: float | None = None,
                min_improvement: float = 0.0, max_slice_regression: float | None = None
                ) -> GateResult:
    """The promotion gate. Pure: metrics in, decision with every reason out."""
    metric = metric or PRIMARY[task]
    res = GateResult(passed=True, metric=metric, challenger=challenger.get(metric),
                     champion=champion.get(metric) if champion else None)

    def check(ok: bool, text: str) -> None:
        res.reasons.append(("PASS " if ok else "FAIL ") + text)
        if not ok:
            res.failed.append(text)
            res.passed = False

    score = challenger.get(metric, math.nan)
    if score is None or math.isnan(score):
        check(False, f"{metric} could not be computed on the hold-out")
        return res
    if min_score is not None:
        ok = _better(metric, score, min_score) >= 0
        check(ok, f"{metric} {score:.4f} {'meets' if ok else 'misses'} the minimum {min_score:.4f}")
    if champion is not None and champion.get(metric) is not None and \
            not math.isnan(champion[metric]):
        gain = _better(metric, score, champion[metric])
        ok = gain >= min_improvement
        check(ok, f"{metric} {score:.4f} vs champion {champion[metric]:.4f} on the same recent "
                  f"data: {'+' if gain >= 0 else ''}{gain:.4f} (needs ≥ {min_improvement:+.4f})")
    elif champion is None:
        res.reasons.append(f"PASS no champion yet: {metric} {score:.4f}")
    else:
        res.reasons.append(f"PASS no comparison: the champion has no {metric} on the same "
                           f"recent data (challenger {score:.4f})")
    if max_slice_regression is not None and challenger_slices and champion_slices:
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
        if worst is not None:
            ok = worst[0] <= max_slice_regression
            check(ok, f"worst slice {worst[1]}: {metric} regresses by {worst[0]:.4f} "
                      f"(allowed {max_slice_regression:.4f})")
        else:
            res.reasons.append(f"PASS no slice to compare: none has {MIN_SLICE_ROWS} rows and "
                               f"a {metric} for both models")
    if smoke_ok is not None:
        check(smoke_ok, "packaged model loads and predicts in a fresh process"
              + (f" ({smoke_detail})" if smoke_detail else ""))
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


def estimate_performance(task: str, proba: np.ndarray, classes: list[Any], *,
                         simulations: int = 200, seed: int = 0) -> dict[str, Estimate]:
    """Confidence-based performance estimation (as NannyML's CBPE): if the champion's
    probabilities are calibrated, the labels are draws from them. Simulate the labels, score
    the champion's own predictions against each draw, and report the mean and the 5-95%
    interval of accuracy and (binary) ROC AUC. Needs no labels; trusts calibration, which the
    training run measures (``calibration_error``)."""
    if task == "regression" or len(proba) == 0:
        return {}
    rng = np.random.default_rng(seed)
    p = np.clip(np.asarray(proba, dtype=float), 0, 1)
    if p.ndim == 1:
        p = np.column_stack([1 - p, p])
    p = p / p.sum(axis=1, keepdims=True)
    pred = p.argmax(axis=1)
    acc, auc = [], []
    cum = p.cumsum(axis=1)
    for _ in range(simulations):
        u = rng.uniform(size=(len(p), 1))
        y = (u > cum).sum(axis=1)  # a label drawn from each row's probabilities
        acc.append(float((y == pred).mean()))
        if task == "binary" and 0 < y.sum() < len(y):
            auc.append(float(skm.roc_auc_score(y, p[:, 1])))
    out = {"accuracy": Estimate("accuracy", float(np.mean(acc)), *map(float, np.percentile(
        acc, [5, 95])), rows=len(p))}
    if auc:
        out["roc_auc"] = Estimate("roc_auc", float(np.mean(auc)), *map(float, np.percentile(
            auc, [5, 95])), rows=len(p))
    return out
