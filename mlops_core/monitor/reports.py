"""Evidently reports turned into our own results. The only module that talks to Evidently.

Issue "monitoring" builds drift monitoring here; this part makes the performance evidence of a
training run (an Evidently classification or regression report, as HTML and JSON).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_core.config import MonitoringConfig
from mlops_core.data.sampling import sample_rows

log = logging.getLogger(__name__)


@dataclass
class ReportFiles:
    html: Path
    json: Path
    metrics: dict[str, Any]  # metric name -> value, as Evidently computed it


def _save(snap: Any, out_dir: Path, name: str) -> ReportFiles:
    """An Evidently snapshot as ``<name>.html`` and ``<name>.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    html, js = out_dir / f"{name}.html", out_dir / f"{name}.json"
    snap.save_html(str(html))
    payload = json.loads(snap.json())
    js.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    values = {m["metric_name"]: m["value"] for m in payload.get("metrics", [])}
    return ReportFiles(html, js, values)


def _definition(task: str, classes: list[Any] | None, proba_cols: list[str]) -> Any:
    from evidently import BinaryClassification, DataDefinition, MulticlassClassification, Regression

    if task == "regression":
        return DataDefinition(regression=[Regression(target="target", prediction="prediction")])
    if task == "binary":
        assert classes is not None
        return DataDefinition(
            classification=[
                BinaryClassification(
                    target="target",
                    prediction_labels="prediction",
                    prediction_probas=proba_cols[-1],
                    pos_label=classes[-1],
                )
            ]
        )
    return DataDefinition(
        classification=[MulticlassClassification(target="target", prediction_labels="prediction")]
    )


def _frame(y: pd.Series, pred: pd.DataFrame, task: str, proba_cols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({"target": y.to_numpy(), "prediction": pred["prediction"].to_numpy()})
    if task == "binary":
        df[proba_cols[-1]] = pred[proba_cols[-1]].to_numpy()
    if task != "regression" and df["target"].dtype != df["prediction"].dtype:
        df["prediction"] = df["prediction"].astype(df["target"].dtype)
    return df


def performance_report(
    task: str,
    y_current: pd.Series,
    pred_current: pd.DataFrame,
    out_dir: Path,
    *,
    classes: list[Any] | None = None,
    y_reference: pd.Series | None = None,
    pred_reference: pd.DataFrame | None = None,
    name: str = "performance",
) -> ReportFiles:
    """Evidently ``ClassificationPreset`` / ``RegressionPreset`` of predictions against labels,
    optionally against a reference (e.g. the champion on the same rows), saved as HTML + JSON."""
    from evidently import Dataset, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    proba_cols = [f"proba_{c}" for c in classes] if classes else []
    dd = _definition(task, classes, proba_cols)
    cur = Dataset.from_pandas(_frame(y_current, pred_current, task, proba_cols), data_definition=dd)
    ref = None
    if y_reference is not None and pred_reference is not None:
        ref = Dataset.from_pandas(
            _frame(y_reference, pred_reference, task, proba_cols), data_definition=dd
        )
    preset = RegressionPreset() if task == "regression" else ClassificationPreset()
    snap = Report([preset]).run(cur, ref)
    return _save(snap, out_dir, name)


# data drift ----------------------------------------------------------------------------------
EVIDENTLY_KIND = {"numeric": "num", "categorical": "cat", "boolean": "cat"}


@dataclass
class ColumnDrift:
    column: str
    kind: str  # numeric | categorical | boolean
    status: str  # ok | drift | all_missing | constant
    method: str | None = None
    score: float | None = None
    threshold: float | None = None
    drifted: bool | None = None
    importance: float | None = None


@dataclass
class DriftSummary:
    """Our own result of a data-drift check (no Evidently objects)."""

    status: str  # ok | drift | not_enough_data
    rows_reference: int
    rows_current: int
    sampled_rows: int  # per side, for the statistics
    columns: list[ColumnDrift]
    drift_share: float | None  # among the columns that could be tested
    weighted_drift_share: float | None  # the same, weighted by feature importance
    share_threshold: float
    message: str = ""

    @property
    def dataset_drift(self) -> bool:
        return self.status == "drift"

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self) | {
            "dataset_drift": self.dataset_drift,
            "drifted_columns": self.drifted_columns,
        }


def _clean(s: pd.Series, kind: str) -> pd.Series:
    """Values Evidently's tests can take: no NaN or ±inf, categories as text."""
    import numpy as np

    if kind == "numeric":
        v = pd.to_numeric(s, errors="coerce").astype("float64")
        return v[np.isfinite(v.to_numpy())]
    s = s.dropna()
    return (
        s.astype(str)
        if s.dtype != object or isinstance(s.dtype, pd.CategoricalDtype)
        else s.map(str)
    )


def _column_drift(
    col: str,
    kind: str,
    ref: pd.Series,
    cur: pd.Series,
    importance: float | None,
    method: str | None,
    threshold: float | None,
) -> ColumnDrift:
    """One column's drift with Evidently's stattest for it; all missing or one and the same
    value on both sides: reported, not tested."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    r, c = _clean(ref, kind), _clean(cur, kind)
    if r.empty or c.empty:
        return ColumnDrift(col, kind, "all_missing", importance=importance)
    if r.nunique() <= 1 and c.nunique() <= 1 and r.iloc[0] == c.iloc[0]:
        return ColumnDrift(col, kind, "constant", importance=importance)
    ftype = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    test = get_stattest(r, c, ftype, method)
    res = test(r, c, ftype, threshold)
    drifted = bool(res.drifted)
    return ColumnDrift(
        col,
        kind,
        "drift" if drifted else "ok",
        test.name,
        float(res.drift_score),
        float(res.actual_threshold),
        drifted,
        importance,
    )


def _summarise(
    summary: DriftSummary, importances: dict[str, float] | None, drift_share: float
) -> None:
    """The shares of drifted columns (plain and by importance), the verdict and its message."""
    tested = [c for c in summary.columns if c.drifted is not None]
    if not tested:
        summary.status = "not_enough_data"
        summary.message = "no column could be tested (all missing or constant)"
        return
    summary.drift_share = sum(c.drifted for c in tested) / len(tested)  # type: ignore[misc]
    if importances:
        total = sum(c.importance or 0.0 for c in tested)
        if total > 0:
            summary.weighted_drift_share = (
                sum(c.importance or 0.0 for c in tested if c.drifted) / total
            )
    summary.status = "drift" if summary.drift_share >= drift_share else "ok"
    n_drift = sum(bool(c.drifted) for c in tested)
    summary.message = (
        f"{n_drift} of {len(tested)} columns drifted "
        f"({summary.drift_share:.0%}"
        + (
            f", {summary.weighted_drift_share:.0%} by importance"
            if summary.weighted_drift_share is not None
            else ""
        )
        + ")"
    )


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, str],
    *,
    importances: dict[str, float] | None = None,
    sample_size: int = 50_000,
    min_rows: int = 100,
    method: str | None = None,
    threshold: float | None = None,
    drift_share: float = 0.5,
    seed: int = 0,
    rows_current: int | None = None,
) -> DriftSummary:
    """Per-column drift of ``current`` against ``reference`` with Evidently's own stattests
    (the same default test per column as ``DataDriftPreset``: it depends on the reference
    size), on a seeded sample of at most ``sample_size`` rows per side.

    Columns all missing on either side, or holding one and the same value on both sides, are
    reported and left out of the share (a column constant on one side only, or at a new value,
    is tested: a stuck feature is drift); fewer than ``min_rows`` rows on either side give
    ``not_enough_data`` and no verdict.

    ``rows_current``: how many rows ``current`` stands for when it is already the sample (the
    Dask path draws it on the cluster: :mod:`mlops_core.monitor.distributed`)."""
    ref = sample_rows(reference, sample_size, seed)
    cur = sample_rows(current, sample_size, seed + 1)
    summary = DriftSummary(
        status="ok",
        rows_reference=len(reference),
        rows_current=len(current) if rows_current is None else rows_current,
        sampled_rows=max(len(ref), len(cur)),
        columns=[],
        drift_share=None,
        weighted_drift_share=None,
        share_threshold=drift_share,
    )
    if len(ref) < min_rows or len(cur) < min_rows:
        summary.status = "not_enough_data"
        summary.message = (
            f"not enough data: {len(cur):,} current and {len(ref):,} reference "
            f"rows (need {min_rows:,} each)"
        )
        return summary
    for col, kind in kinds.items():
        if col in ref.columns and col in cur.columns:
            imp = (importances or {}).get(col)
            summary.columns.append(
                _column_drift(col, kind, ref[col], cur[col], imp, method, threshold)
            )
    _summarise(summary, importances, drift_share)
    return summary


def configured_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, str],
    importances: dict[str, float] | None,
    config: MonitoringConfig,
    rows_current: int | None = None,
) -> DriftSummary:
    """:func:`compute_drift` as the ``monitoring`` section sets it: the one call monitoring
    and the backtester make, so the two judge drift alike."""
    return compute_drift(
        reference,
        current,
        kinds,
        importances=importances if config.weight_by_importance else None,
        sample_size=config.sample_rows,
        min_rows=config.min_rows,
        method=config.method,
        threshold=config.threshold,
        drift_share=config.drift_share,
        seed=config.seed,
        rows_current=rows_current,
    )


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, str],
    out_dir: Path,
    *,
    method: str | None = None,
    threshold: float | None = None,
    drift_share: float = 0.5,
    name: str = "drift",
) -> ReportFiles:
    """The full Evidently report (``DataDriftPreset`` and ``DataSummaryPreset``) as HTML and
    JSON, for people. Pass the samples :func:`compute_drift` used: the same data gives the
    same verdicts."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    # Evidently raises on a column empty on either side (after NaN/inf removal): leave it out,
    # as compute_drift does
    cols = [
        c
        for c in kinds
        if c in reference.columns
        and c in current.columns
        and not _clean(reference[c], kinds[c]).empty
        and not _clean(current[c], kinds[c]).empty
    ]
    num = [c for c in cols if kinds[c] == "numeric"]
    cat = [c for c in cols if kinds[c] != "numeric"]

    def prepared(df: pd.DataFrame) -> pd.DataFrame:
        out = df[cols].copy()
        for c in cat:
            out[c] = (
                out[c]
                .astype(object)
                .where(out[c].notna(), None)
                .map(lambda v: v if v is None else str(v))
            )
        for c in num:
            out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
        return out

    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    preset = (
        DataDriftPreset(method=method, threshold=threshold, drift_share=drift_share)
        if method or threshold
        else DataDriftPreset(drift_share=drift_share)
    )
    snap = Report([preset, DataSummaryPreset()]).run(
        Dataset.from_pandas(prepared(current), data_definition=dd),
        Dataset.from_pandas(prepared(reference), data_definition=dd),
    )
    return _save(snap, out_dir, name)


def report_verdicts(report_json: dict[str, Any]) -> dict[str, bool]:
    """{column: drifted} from an Evidently drift report's JSON (its per-column tests)."""
    out: dict[str, bool] = {}
    for m in report_json.get("metrics", []):
        cfg = m.get("config", {})
        if cfg.get("type") == "evidently:metric_v2:ValueDrift":
            value, thr = float(m["value"]), float(cfg["threshold"])
            method = str(cfg.get("method", "")).lower()
            p_value = "p_value" in method or method.endswith("test")
            out[cfg["column"]] = value < thr if p_value else value >= thr
    return out
