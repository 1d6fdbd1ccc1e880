"""The read model of one approval card: what an analyst needs to decide on a pending version
from one screen.

* the champion and the challenger side by side with signed deltas, each marked better or worse
  by the metric's direction (:data:`mlops_core.train.evaluation.HIGHER_IS_BETTER`: a
  calibration error, a log loss or an RMSE is better lower);
* the slices with their deltas and a ``regressed`` flag where a slice is worse beyond noise
  (:func:`slice_noise` says how much noise is);
* both versions on the same newest labelled rows (scored once and kept on disk, as the Models
  comparison does, :func:`mlops_core.read.views.cached_predictions`): their metrics, and for a
  binary task the confusion matrix and a threshold table, for a multiclass task per-class
  precision / recall / F1 (hold-out predictions are not stored, so these come from there);
* links to both training runs in the MLflow UI (only for an http(s) tracking server, password
  redacted).

The pure functions (:func:`metric_deltas`, :func:`slice_deltas`, :func:`confusion`,
:func:`threshold_table`, :func:`per_class`, :func:`run_url`) take plain values and are tested
directly; :func:`approval_card` reads the registry and the batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from mlops_core.config import Settings, redact_url
from mlops_core.errors import MlopsError
from mlops_core.read import views
from mlops_core.registry.registry import Registry, VersionInfo
from mlops_core.store import MetadataStore
from mlops_core.train.evaluation import HIGHER_IS_BETTER

Z = 2.0  # how many standard errors a slice's drop must exceed to be flagged
MIN_DROP = 0.005  # and never less than this: a real but immaterial drop of a huge slice
RATE_METRICS = {"accuracy", "f1", "f1_macro", "roc_auc", "pr_auc", "calibration_error"}
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))
DELTA_COLUMNS = ["champion", "challenger", "delta", "verdict"]
SLICE_COLUMNS = ["column", "value", "rows", "champion", "challenger", "delta", "noise", "regressed"]


def _num(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return math.nan
    return f


def verdict(metric: str, delta: float) -> str:
    """``better`` / ``worse`` / ``same`` for a challenger − champion ``delta`` of ``metric``;
    ``""`` when the delta is unknown or the metric's direction is not known."""
    if math.isnan(delta) or metric not in HIGHER_IS_BETTER:
        return ""
    if abs(delta) < 1e-12:
        return "same"
    return "better" if (delta > 0) == HIGHER_IS_BETTER[metric] else "worse"


def metric_deltas(challenger: dict[str, Any], champion: dict[str, Any]) -> pd.DataFrame:
    """Metric × (champion, challenger, delta = challenger − champion, verdict), the metrics of
    either side in their order; a side without the metric is NaN (and the verdict empty)."""
    names = list(dict.fromkeys([*challenger, *champion]))
    rows = []
    for m in names:
        a, b = _num(challenger.get(m)), _num(champion.get(m))
        rows.append([b, a, a - b, verdict(m, a - b)])
    out = pd.DataFrame(rows, columns=DELTA_COLUMNS, index=pd.Index(names, name="metric"))
    return out.astype({"champion": float, "challenger": float, "delta": float})


def slice_noise(metric: str, champion: float, challenger: float, rows: int) -> float:
    """How large a drop of ``metric`` on a slice of ``rows`` rows can be by chance alone.

    Two standard errors of the difference, the two sides taken as independent samples of
    ``rows`` rows (they are the same rows, so this errs towards not flagging). A rate-like
    metric in [0, 1] (accuracy, F1, ROC / PR AUC, calibration error) has the binomial standard
    error ``sqrt(p(1 − p) / n)``, with ``p`` pulled towards 1/2 by one success and one failure
    (``(p·n + 1) / (n + 2)``) so that a slice where both are perfect still has some noise. A
    loss or an R² has no bound: its standard error is taken as ``scale / sqrt(2n)``, ``scale``
    the larger value (for R², the larger unexplained share ``1 − R²``) — the standard error of
    an RMSE for normal errors. Never below :data:`MIN_DROP`.

    Why not the gate's ``max_slice_regression``: it is a fixed tolerance, the same for a slice
    of 30 rows (whose AUC moves by 0.1 between two draws) and of 30,000 (where 0.02 is real),
    so it flags tiny slices' noise and misses large slices' regressions; the gate applies it
    only to slices of 200 rows or more for that reason. A standard error scales with the rows."""
    n = max(int(rows), 1)
    if metric in RATE_METRICS:
        var = 0.0
        for p in (champion, challenger):
            q = (min(max(p, 0.0), 1.0) * n + 1) / (n + 2)
            var += q * (1 - q) / n
    else:
        scale = max(abs(champion), abs(challenger))
        if metric == "r2":
            scale = max(1 - champion, 1 - challenger, 0.0)
        var = 2 * scale**2 / (2 * n)
    return max(Z * math.sqrt(var), MIN_DROP)


def slice_deltas(slices: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The slices (``column, value, rows, champion, challenger`` of ``metric``) with their
    delta (challenger − champion), the noise (:func:`slice_noise`) and ``regressed``: the
    challenger is worse than the champion by more than the noise. The regressed slices first,
    then by column and value."""
    if slices.empty:
        return pd.DataFrame(columns=SLICE_COLUMNS)
    out = slices[["column", "value", "rows", "champion", "challenger"]].copy()
    out["champion"] = pd.to_numeric(out["champion"], errors="coerce")
    out["challenger"] = pd.to_numeric(out["challenger"], errors="coerce")
    out["delta"] = out["challenger"] - out["champion"]
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    noise, flagged = [], []
    for r in out.itertuples(index=False):
        known = not (math.isnan(r.champion) or math.isnan(r.challenger))
        nz = slice_noise(metric, r.champion, r.challenger, int(r.rows)) if known else math.nan
        noise.append(nz)
        flagged.append(bool(known and -sign * (r.challenger - r.champion) > nz))
    out["noise"], out["regressed"] = noise, flagged
    return out.sort_values(
        ["regressed", "column", "value"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)


def confusion(y_true: Sequence[Any], predicted: Sequence[Any], classes: list[str]) -> pd.DataFrame:
    """Counts: index ``actual <class>``, columns ``predicted <class>``, in ``classes`` order."""
    y = pd.Series(np.asarray(y_true)).astype(str)
    p = pd.Series(np.asarray(predicted)).astype(str)
    counts = pd.crosstab(y, p).reindex(index=classes, columns=classes, fill_value=0)
    counts = counts.fillna(0).astype(int)
    counts.index = pd.Index([f"actual {c}" for c in classes])
    counts.columns = pd.Index([f"predicted {c}" for c in classes])
    return counts


def threshold_table(
    positive: Sequence[Any], p1: Sequence[float], thresholds: Sequence[float] = THRESHOLDS
) -> pd.DataFrame:
    """Per threshold (a row is predicted positive when ``p1 >= threshold``): precision, recall,
    F1 and the share of rows predicted positive (which never rises with the threshold).
    Precision is NaN where nothing is predicted positive."""
    yb = np.asarray(positive).astype(bool)
    p = np.asarray(p1, dtype=float)
    rows = []
    for t in thresholds:
        pred = p >= t
        tp = int((pred & yb).sum())
        fp, fn = int((pred & ~yb).sum()), int((~pred & yb).sum())
        prec = tp / (tp + fp) if tp + fp else math.nan
        rec = tp / (tp + fn) if tp + fn else math.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        rate = float(pred.mean()) if len(p) else math.nan
        rows.append([float(t), prec, rec, f1, rate])
    return pd.DataFrame(rows, columns=["threshold", "precision", "recall", "f1", "positive_rate"])


def per_class(y_true: Sequence[Any], preds: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per class: precision, recall, F1, rows (support) and one-vs-rest ROC AUC (NaN where the
    rows hold that class only or never)."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    y = np.asarray(y_true).astype(str)
    yhat = preds["prediction"].to_numpy().astype(str)
    prec, rec, f1, sup = precision_recall_fscore_support(y, yhat, labels=classes, zero_division=0)
    aucs = []
    for c in classes:
        yb, col = (y == c).astype(int), f"proba_{c}"
        ok = col in preds.columns and 0 < yb.sum() < len(yb)
        aucs.append(float(roc_auc_score(yb, preds[col].to_numpy(dtype=float))) if ok else math.nan)
    return pd.DataFrame(
        {"precision": prec, "recall": rec, "f1": f1, "rows": sup, "roc_auc": aucs},
        index=pd.Index(classes, name="class"),
    )


def run_url(tracking_uri: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    """The run's page in the MLflow UI of an http(s) tracking server (a password in the URI
    redacted); None for a file or database store, or without an experiment or a run."""
    if not tracking_uri or not experiment_id or not run_id:
        return None
    if urlsplit(tracking_uri).scheme not in ("http", "https"):
        return None
    return f"{redact_url(tracking_uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


@dataclass
class RecentComparison:
    """The champion and the challenger scored on the same newest labelled rows."""

    window: views.ComparisonWindow
    rows: int
    metrics: pd.DataFrame  # metric_deltas (challenger against champion)
    slices: pd.DataFrame  # slice_deltas of the primary metric
    confusion: dict[str, pd.DataFrame] = field(default_factory=dict)  # version -> counts
    thresholds: dict[str, pd.DataFrame] = field(default_factory=dict)  # version -> table
    per_class: dict[str, pd.DataFrame] = field(default_factory=dict)  # version -> table
    positive: str | None = None  # the positive class (binary)
    errors: dict[str, str] = field(default_factory=dict)  # version -> why it was not scored
    trained_on: dict[str, int] = field(default_factory=dict)  # version -> window batches it
    # was trained on (its numbers on those rows are optimistic)


@dataclass
class ApprovalCard:
    version: str
    task: str
    metric: str  # the gate's metric
    gate_champion: str | None  # the champion the gate compared with on the hold-out
    champion: str | None  # the champion now (what approving replaces)
    holdout: pd.DataFrame  # metric_deltas on the hold-out at training
    holdout_slices: pd.DataFrame  # slice_deltas on the hold-out at training
    recent: RecentComparison | None  # None: no labelled batch, or nothing to compare with
    links: dict[str, str]  # version -> its MLflow run page
    evidence: views.GateEvidence  # the gate's verdict, reasons and drift report at training


def _classes(preds: pd.DataFrame) -> list[str]:
    return [c.removeprefix("proba_") for c in preds.columns if c.startswith("proba_")]


def _scored(
    settings: Settings, reg: Registry, versions: list[str], frame: pd.DataFrame, window: Any
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    out: dict[str, pd.DataFrame] = {}
    errors: dict[str, str] = {}
    for v in versions:
        try:  # a version that cannot read today's rows is reported, not a crash of the card
            out[v] = views.cached_predictions(settings, reg, v, frame, window)
        except (MlopsError, LookupError, ValueError, TypeError, OSError) as e:
            errors[v] = f"{type(e).__name__}: {e}"[:300]
    return out, errors


def _slice_columns(settings: Settings, frame: pd.DataFrame) -> list[str]:
    cols = (
        list(settings.gate.slice_columns)
        or [
            c
            for c in settings.data.features.categorical + settings.data.features.boolean
            if c in frame.columns
        ][:2]
    )
    return [c for c in cols if c in frame.columns]


def _recent_slices(
    settings: Settings, frame: pd.DataFrame, y: pd.Series, preds: dict[str, pd.DataFrame], pair: Any
) -> pd.DataFrame:
    from mlops_core.train.evaluation import slice_metrics

    champ, chall = pair
    metric = views.primary_metric(settings)
    if champ not in preds or chall not in preds:
        return slice_deltas(pd.DataFrame(), metric)
    cols = _slice_columns(settings, frame)
    got = {
        v: slice_metrics(settings.task, frame, y, preds[v], cols, _classes(preds[v]) or None)
        for v in (champ, chall)
    }
    rows = [
        {
            "column": col,
            "value": value,
            "rows": int(m.get("rows", 0)),
            "champion": (got[champ].get(col, {}).get(value) or {}).get(metric),
            "challenger": m.get(metric),
        }
        for col, values in got[chall].items()
        for value, m in values.items()
    ]
    return slice_deltas(pd.DataFrame(rows), metric)


def _trained_on(
    settings: Settings, reg: Registry, versions: list[str], window: views.ComparisonWindow
) -> dict[str, int]:
    """Per version, how many of the window's batches its training data held (its lineage)."""
    ids = set(window.batch_ids)
    out = {}
    for v in versions:
        lin = views.run_json(settings, reg, v, "lineage/lineage.json") or {}
        out[v] = len(ids & {str(b.get("id")) for b in lin.get("batches", [])})
    return out


def _classification_views(rc: RecentComparison, y: pd.Series, preds: pd.DataFrame, v: str) -> None:
    classes = _classes(preds)
    if not classes:
        return
    rc.confusion[v] = confusion(y, preds["prediction"], classes)
    if len(classes) == 2:
        rc.positive = classes[-1]
        rc.thresholds[v] = threshold_table(y == classes[-1], preds[f"proba_{classes[-1]}"])
    else:
        rc.per_class[v] = per_class(y, preds, classes)


def recent_comparison(
    settings: Settings,
    reg: Registry,
    meta: MetadataStore,
    challenger: str,
    champion: str | None,
    rows: int = 5000,
) -> RecentComparison | None:
    """``challenger`` and ``champion`` (if any) on the same newest ``rows`` labelled rows, their
    predictions cached on disk; None when no labelled batch exists."""
    from mlops_core.data.validation import as_text
    from mlops_core.train.evaluation import compute_metrics

    window = views.comparison_window(settings, meta, rows)
    if window is None:
        return None
    frame = views.window_frame(settings, meta, window)
    versions = [v for v in (champion, challenger) if v]
    preds, errors = _scored(settings, reg, list(dict.fromkeys(versions)), frame, window)
    target = settings.data.target
    y = frame[target] if target and target in frame.columns else pd.Series(dtype=object)
    classify = settings.task != "regression"
    if classify:
        y = as_text(y)
        preds = {v: p.assign(prediction=as_text(p["prediction"])) for v, p in preds.items()}
    scores = {
        v: compute_metrics(settings.task, y, p, _classes(p) or None) for v, p in preds.items()
    }
    rc = RecentComparison(
        window,
        len(frame),
        metric_deltas(scores.get(challenger, {}), scores.get(champion or "", {})),
        _recent_slices(settings, frame, y, preds, (champion, challenger)),
        errors=errors,
        trained_on=_trained_on(settings, reg, list(preds), window),
    )
    for v, p in preds.items():
        if classify:
            _classification_views(rc, y, p, v)
    return rc


def _links(reg: Registry, infos: dict[str, VersionInfo | None]) -> dict[str, str]:
    try:
        experiment = reg.experiment_id()
    except MlopsError:
        return {}
    out = {}
    for v, info in infos.items():
        url = run_url(reg.uri, experiment, info.run_id if info else None)
        if url:
            out[v] = url
    return out


def _info(reg: Registry, infos: Sequence[VersionInfo], v: str | None) -> VersionInfo | None:
    if not v:
        return None
    found = next((i for i in infos if i.version == v), None)
    if found is not None:
        return found
    try:
        return reg.version(v)
    except MlopsError:
        return None


def approval_card(
    settings: Settings,
    reg: Registry,
    meta: MetadataStore,
    info: VersionInfo,
    champion: str | None,
    *,
    rows: int = 5000,
    infos: Sequence[VersionInfo] = (),
) -> ApprovalCard:
    """Everything the approval card of pending version ``info`` shows; ``champion`` is the
    champion now (what approving would replace)."""
    ev = views.gate_evidence(settings, reg, meta, info, with_reports=False)
    comp = views.run_json(settings, reg, info.version, "evidence/comparison.json") or {}
    holdout = metric_deltas(comp.get("challenger") or info.metrics, comp.get("champion") or {})
    recent = recent_comparison(settings, reg, meta, info.version, champion, rows)
    shown = {str(v): _info(reg, infos, str(v)) for v in (champion, ev.champion_version) if v}
    return ApprovalCard(
        version=info.version,
        task=settings.task,
        metric=ev.metric,
        gate_champion=str(ev.champion_version) if ev.champion_version else None,
        champion=champion,
        holdout=holdout,
        holdout_slices=slice_deltas(ev.slices, ev.metric),
        recent=recent,
        links=_links(reg, {info.version: info, **shown}),
        evidence=ev,
    )
