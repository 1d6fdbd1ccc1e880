"""Slice monitoring: the champion's metric per slice of the labelled rows, against the same
slices at training, flagged when a slice fell behind beyond its noise. Pure: no I/O.

Which columns: ``gate.slice_columns``, or when none are configured the champion's top
categorical features by importance (:func:`slice_columns`).

What "fell behind" means (:func:`compare_slices`): a slice's metric *relative to the whole* (the
slice minus the overall metric, the better way up) now, against the same gap in the baseline. A
drop of the whole model is the performance signal's; this one finds a slice (a region) that
got worse while the rest did not. The baseline is out of sample: the training run's hold-out
slices (``evidence/comparison.json``, for ``gate.slice_columns``), else the champion's first
monitoring run that measured the slice. Not the reference rows: the champion trained on them,
and its in-sample optimism differs by slice (0.85 against 0.73 overall on the demo stream, and
up to 0.04 more on one purpose), which flagged slices in a stationary stretch.

The noise rule: the regression must exceed ``z`` standard errors of the difference, each
side's from its metric and row count (:func:`~mlops_core.train.evaluation.metric_standard_error`:
a slice of 80 rows needs a far larger drop than one of 8,000), with ``z`` at least :data:`Z`
and Bonferroni-corrected for the number of slices compared (a one-sided 5% chance of any false
flag in a run: 2.7 for 13 slices); and the gate's own tolerance (``gate.max_slice_regression``),
so that a large slice does not flag a tiny change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from mlops_core.train.evaluation import HIGHER_IS_BETTER, metric_standard_error, slice_metrics

Z = 2.0  # standard errors of the difference a regression must exceed, at least
FAMILY_ALPHA = 0.05  # the chance of any false flag in a run, over all its slices
MIN_ROWS = 50  # slices with fewer labelled rows (now or at training) are not compared
TOP_FEATURES = 3  # categorical features sliced by when none are configured
MAX_VALUES = 50  # a column with more distinct values is not sliced (an id, free text)

Slices = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class SliceCheck:
    """One slice now against the same slice at training."""

    column: str
    value: str
    metric: str
    rows: int  # labelled rows now
    current: float  # the slice's metric now
    overall: float  # the whole batch's metric now
    baseline: float  # the slice's metric at training
    baseline_overall: float
    baseline_rows: int
    regression: float  # how much further behind the rest it is now (≥ 0: worse)
    noise: float  # Z standard errors of that difference
    tolerance: float
    flagged: bool
    source: str  # where the baseline comes from: holdout | run <id>

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"

    def text(self) -> str:
        return (
            f"{self.name}: {self.metric} {self.current:.3f} on {self.rows:,} rows, "
            f"{self.regression:.3f} further behind the rest than at training "
            f"(noise {self.noise:.3f}, tolerance {self.tolerance:.3f})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"name": self.name, "text": self.text()}


def slice_columns(
    configured: list[str],
    kinds: dict[str, str],
    importances: dict[str, float] | None,
    frame: pd.DataFrame,
    top: int = TOP_FEATURES,
) -> list[str]:
    """The configured slice columns, else the ``top`` categorical features by importance (in
    column order without importances), leaving out columns with too many values."""
    if configured:
        return [c for c in configured if c in frame.columns]
    imp = importances or {}
    cats = [c for c, k in kinds.items() if k == "categorical" and c in frame.columns]
    cats = [c for c in cats if frame[c].nunique(dropna=False) <= MAX_VALUES]
    if imp:
        cats = sorted((c for c in cats if imp.get(c, 0.0) > 0), key=lambda c: -imp[c])
    return cats[:top]


def measure_slices(
    task: str,
    frame: pd.DataFrame,
    y: pd.Series,
    pred: pd.DataFrame,
    columns: list[str],
    classes: list[Any] | None,
) -> Slices:
    """:func:`slice_metrics`, each slice also with its positives' share (binary) under
    ``positive_share``."""
    frame, y, pred = (x.reset_index(drop=True) for x in (frame, y, pred))
    out = slice_metrics(task, frame, y, pred, columns, classes)
    if task != "binary" or not classes:
        return out
    pos = np.asarray(y).astype(str) == str(classes[-1])
    for col, values in out.items():
        s = frame[col]
        keys = s.astype(object).where(s.notna(), "<missing>").astype(str).to_numpy()
        for value, m in values.items():
            m["positive_share"] = float(pos[keys == value].mean())
    return out


def _ahead(metric: str, value: float, overall: float) -> float:
    """How far the slice is ahead of the whole (negative: behind), the better way up."""
    return (value - overall) if HIGHER_IS_BETTER.get(metric, True) else (overall - value)


def _check(
    metric: str,
    col: str,
    value: str,
    now: dict[str, float],
    base: dict[str, float],
    overall: tuple[float, float],
    tolerance: float,
    source: str,
    z: float = Z,
) -> SliceCheck | None:
    cur, ref = now.get(metric, math.nan), base.get(metric, math.nan)
    rows, base_rows = int(now.get("rows", 0)), int(base.get("rows", 0))
    if rows < MIN_ROWS or base_rows < MIN_ROWS or any(math.isnan(x) for x in (cur, ref, *overall)):
        return None
    share = now.get("positive_share")
    regression = _ahead(metric, ref, overall[1]) - _ahead(metric, cur, overall[0])
    se = math.hypot(
        metric_standard_error(metric, cur, rows, share),
        metric_standard_error(metric, ref, base_rows, base.get("positive_share", share)),
    )
    noise = z * se
    flagged = regression > noise and regression > tolerance
    return SliceCheck(
        col, value, metric, rows, cur, overall[0], ref, overall[1], base_rows,
        regression, noise, tolerance, flagged, source,
    )  # fmt: skip


def z_for(compared: int) -> float:
    """Standard errors a regression must exceed when ``compared`` slices are compared at once:
    Bonferroni over the slices for :data:`FAMILY_ALPHA` (one-sided), at least :data:`Z`."""
    return max(Z, NormalDist().inv_cdf(1 - FAMILY_ALPHA / max(compared, 1)))


def compare_slices(
    metric: str,
    now: Slices,
    overall_now: float | None,
    baselines: dict[str, tuple[Slices, float | None, str]],
    tolerance: float | None,
) -> list[SliceCheck]:
    """Every slice measured now against its baseline (``column -> (slices in the baseline,
    the overall metric there, source)``), worst first."""
    if overall_now is None:
        return []
    pairs = [
        (col, value, m, base_slices[col][value], base_overall, source)
        for col, values in now.items()
        if col in baselines
        for base_slices, base_overall, source in [baselines[col]]
        if base_overall is not None
        for value, m in values.items()
        if value in base_slices.get(col, {})
    ]
    z = z_for(len(pairs))
    checks = [
        _check(metric, col, value, m, base, (overall_now, ref), tolerance or 0.0, source, z)
        for col, value, m, base, ref, source in pairs
    ]
    return sorted((c for c in checks if c is not None), key=lambda c: -c.regression)
