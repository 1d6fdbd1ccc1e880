"""One monitoring pass: new batches against the champion → data drift, realised performance,
a label-free estimate, concept-drift detectors → the retraining policy's decision, recorded.

The CLI (`mlops monitor`), the Prefect monitor flow and the dashboard call :func:`monitor`.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlops_core.config import Settings
from mlops_core.data.batching import parse_times
from mlops_core.data.validation import as_text
from mlops_core.errors import MlopsError
from mlops_core.monitor.detectors import (
    DetectorResult,
    error_stream,
    run_detectors,
    where_error_rose,
)
from mlops_core.monitor.policy import (
    Decision,
    Finding,
    PolicyState,
    Reason,
    compute_signals,
    decide,
    median_period,
)
from mlops_core.monitor.reports import (
    DriftSummary,
    configured_drift,
    drift_report,
    performance_report,
)
from mlops_core.monitor.reports import sample_rows as _sample
from mlops_core.monitor.slices import Slices, compare_slices, measure_slices, slice_columns
from mlops_core.registry.registry import Registry, VersionInfo
from mlops_core.serve.prediction_log import LABEL, features_of, read_log
from mlops_core.store import (
    BatchRecord,
    BatchStore,
    MetadataStore,
    decision_row,
    decisions,
    monitoring_runs,
    utcnow,
)
from mlops_core.train.evaluation import (
    PRIMARY,
    Calibration,
    compute_metrics,
    estimate_performance,
)
from mlops_core.train.fit import window_batches

log = logging.getLogger(__name__)


@dataclass
class MonitoringResult:
    id: str
    at: datetime
    model: str
    champion_version: str
    batch_ids: list[str]
    rows: int
    labelled_rows: int
    drift: DriftSummary
    performance: dict[str, float] | None  # realised, on the labelled rows
    baseline: dict[str, float]  # the champion's hold-out metrics at training
    estimated: dict[str, dict[str, float]] = field(default_factory=dict)  # label-free
    detectors: list[DetectorResult] = field(default_factory=list)
    decision: Decision | None = None
    report: str | None = None  # HTML report, relative to the workspace
    metric: str = ""
    # earlier label-free estimates checked against the labels that have arrived since
    reconciled: list[dict[str, Any]] = field(default_factory=list)
    # where the error rose: where a detector that fired places it, else where the error stream
    # rose, else the first labelled row (the policy uses it only when the error asks)
    change_at: datetime | None = None
    served_rows: int = 0  # rows of the prediction log measured (monitoring.source)
    # the champion's metric per slice against training (SliceCheck.to_dict), worst first
    slices: list[dict[str, Any]] = field(default_factory=list)
    slice_columns: list[str] = field(default_factory=list)
    # the slices as measured now (the baseline of later runs without hold-out slices)
    slice_measures: Slices = field(default_factory=dict)
    # the data time the run covers: its rows' time column (else its batches' time range)
    data_start: datetime | None = None
    data_end: datetime | None = None

    @property
    def flagged_slices(self) -> list[dict[str, Any]]:
        return [c for c in self.slices if c.get("flagged")]

    @property
    def status(self) -> str:
        return self.drift.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "model": self.model,
            "champion_version": self.champion_version,
            "batch_ids": self.batch_ids,
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "status": self.status,
            "metric": self.metric,
            "drift": self.drift.to_dict(),
            "performance": self.performance,
            "baseline": self.baseline,
            "estimated": self.estimated,
            "detectors": [d.to_dict() for d in self.detectors],
            "decision": self.decision.to_dict() if self.decision else None,
            "report": self.report,
            "reconciled": self.reconciled,
            "change_at": self.change_at.isoformat() if self.change_at else None,
            "served_rows": self.served_rows,
            "slices": self.slices,
            "slice_columns": self.slice_columns,
            "slice_measures": self.slice_measures,
            "flagged_slices": [c["name"] for c in self.flagged_slices],
            "data_start": self.data_start.isoformat() if self.data_start else None,
            "data_end": self.data_end.isoformat() if self.data_end else None,
        }


def _kinds(settings: Settings, frame: pd.DataFrame) -> dict[str, str]:
    feats = settings.data.features
    if feats.all():
        return {c: feats.kind_of(c) or "numeric" for c in feats.all()}
    d = settings.data
    return {
        c: (
            "numeric"
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
            else "categorical"
        )
        for c in frame.columns
        if c not in (d.id_column, d.time_column, d.target)
    }


def _last_run_at(meta: MetadataStore, model: str) -> datetime | None:
    with meta.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.max(monitoring_runs.c.at)).where(monitoring_runs.c.model == model)
        ).scalar_one_or_none()


def select_batches(
    meta: MetadataStore, model: str, batch_ids: list[str] | None, trained_on: set[str] | None = None
) -> list[BatchRecord]:
    """The given batches (accepted ones only); else those accepted since the last monitoring
    run that did not train the champion; else the newest batch."""
    if batch_ids:
        recs = [meta.get_batch(b) for b in batch_ids]
        refused = [
            f"{r.id} ({r.status}"
            + (f", released as {', '.join(r.released_as)}" if r.released_as else "")
            + ")"
            for r in recs
            if r.status != "accepted"
        ]
        if refused:  # quarantined data failed validation: the champion may not even score it
            raise MlopsError("only accepted batches can be monitored, not: " + ", ".join(refused))
        return recs
    accepted = meta.list_batches("accepted")
    if not accepted:
        raise MlopsError("no accepted batches to monitor: ingest data first")
    since = _last_run_at(meta, model)
    new = [
        r
        for r in accepted
        if (since is None or r.created_at > since) and r.id not in (trained_on or set())
    ]
    return new or [max(accepted, key=lambda r: (r.end_time or r.created_at, r.created_at))]


def _current_data(
    settings: Settings,
    meta: MetadataStore,
    reg: Registry,
    champion: str,
    batch_ids: list[str] | None,
    store: BatchStore,
) -> tuple[list[BatchRecord], pd.DataFrame, int, int]:
    """What a monitoring run measures (``monitoring.source``): the new batches, the rows
    serving answered since the last run (their labels from /feedback in the target column),
    or both. Returns (batches, rows, rows from the prediction log, rows measured: more than
    the rows returned when a Dask run brought back a sample)."""
    source = settings.monitoring.source
    recs: list[BatchRecord] = []
    frames: list[pd.DataFrame] = []
    measured = 0  # rows the batches hold; a Dask run brings back only the sample of them
    if source in ("batches", "both") or batch_ids:
        recs = select_batches(meta, reg.name, batch_ids, _lineage(settings, reg, champion))
        batches, measured = _batch_rows(settings, store, recs)
        frames.append(batches)
    served = 0
    if source in ("predictions", "both") and not batch_ids:
        rows = read_log(settings.workspace, since=_last_run_at(meta, reg.name))
        if not len(rows) and source == "predictions":
            # nothing served since the last run (a quiet hour): the newest served rows
            # again, as the batch source falls back to the newest batch
            recent = read_log(settings.workspace, since=utcnow() - timedelta(days=7))
            rows = recent.tail(settings.monitoring.sample_rows).reset_index(drop=True)
        if len(rows):
            feats = features_of(rows)
            tcol = settings.data.time_column
            if tcol and tcol in feats.columns:  # sent as text, parsed as ingestion does
                feats = feats.assign(**{tcol: parse_times(feats[tcol], settings.data.time_format)})
            target = settings.data.target
            if target:
                feats = feats.assign(**{target: rows[LABEL].to_numpy()})
                if settings.task == "regression":
                    feats[target] = pd.to_numeric(feats[target], errors="coerce")
            frames.append(feats)
            served = len(feats)
        elif source == "predictions":
            raise MlopsError(
                "nothing served in the last 7 days: the prediction log under "
                f"{settings.workspace / 'predictions'} has no rows to monitor "
                "(monitoring.source is 'predictions')"
            )
    frames = [f for f in frames if len(f)]
    current = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return recs, current, served, measured + served


def _batch_rows(
    settings: Settings, store: BatchStore, recs: list[BatchRecord]
) -> tuple[pd.DataFrame, int]:
    """The rows of ``recs`` and how many they are. With ``model.engine: dask`` and the batches
    alone to measure, the seeded sample drift statistics take of them, drawn on the cluster
    (the same rows the local path's statistics take: the same verdicts); the run then scores
    that sample, and never holds more than ``monitoring.sample_rows`` rows."""
    if settings.model.engine == "dask" and settings.monitoring.source == "batches" and recs:
        from mlops_core.monitor.distributed import sample_batches
        from mlops_core.ops.cluster import dask_client

        cfg = settings.monitoring
        with dask_client(settings) as client:
            # compute_drift samples the current side with seed + 1: the sample it would draw
            paths = [store.root / r.path for r in recs]
            return sample_batches(client, paths, cfg.sample_rows, cfg.seed + 1)
    frames = [store.read(r) for r in recs]
    current = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return current, len(current)


@dataclass(frozen=True)
class DataClock:
    """The policy's clock: the newest accepted batch's end and the median batch period, in
    data time (the time column); the wall clock and ingestion times without one."""

    now: datetime
    batch_period: timedelta | None
    data_time: bool

    def trained_at(self, info: VersionInfo) -> datetime:
        return (info.data_end or info.created) if self.data_time else info.created


def data_clock(settings: Settings, meta: MetadataStore, wall: datetime) -> DataClock:
    accepted = meta.list_batches("accepted")
    ends = [r.end_time for r in accepted if r.end_time is not None]
    if settings.data.time_column and ends:
        return DataClock(max(ends), median_period(ends), True)
    period = median_period([r.created_at for r in accepted])
    return DataClock(wall, period or None, False)


def trainings(versions: list[VersionInfo]) -> list[VersionInfo]:
    """The versions a training registered: online snapshots (``mlops learn``) are not
    retrains, so they neither reset the schedule, count against the cap, nor serve a pending
    signal."""
    return [v for v in versions if v.tags.get("model_type") != "online"]


def _policy_state(
    meta: MetadataStore,
    model: str,
    versions: list[VersionInfo],
    clock: DataClock,
    threshold: float | None = None,
) -> PolicyState:
    """Retrain times (each version's data end, in data time), what the newest version was
    trained for, and the signals still pending from the last decision, unless a version was
    registered after it."""
    times = sorted(clock.trained_at(v) for v in versions)
    newest = versions[-1] if versions else None
    tags = newest.tags if newest is not None else {}
    pending: tuple[Finding, ...] = ()
    pending_change: datetime | None = None
    with meta.engine.connect() as conn:
        last = conn.execute(
            sa.select(monitoring_runs.c.at, monitoring_runs.c.summary)
            .where(monitoring_runs.c.model == model)
            .order_by(monitoring_runs.c.at.desc())
            .limit(1)
        ).first()
    drifted_before = False
    prev = json.loads(last.summary) if last is not None else {}
    if last is not None:
        d = prev.get("drift") or {}
        share = d.get("weighted_drift_share")
        share = share if share is not None else d.get("drift_share")
        drifted_before = bool(threshold is not None and share is not None and share >= threshold)
    if last is not None and (newest is None or newest.created <= last.at):
        dec = prev.get("decision") or {}
        # held back, or a retrain asked for that no training has served yet (`mlops monitor`
        # without --retrain, a training that failed): it asks again
        asked = dec.get("pending") if not dec.get("retrain") else dec.get("asking")
        if asked:
            pending = tuple(Finding.from_dict(f) for f in asked)
            change = dec.get("pending_change_at") or (
                dec.get("since") if dec.get("retrain") else None
            )
            if change:
                pending_change = pd.Timestamp(change).to_pydatetime()
    kinds = {r.value for r in Reason}
    return PolicyState(
        last_retrain=times[-1] if times else None,
        recent_retrains=tuple(times),
        change_at=datetime.fromisoformat(tags["change_at"]) if tags.get("change_at") else None,
        # the window it chose from (growth compares the window with it)
        trained_rows=int(tags.get("window_rows") or tags["rows"]) if tags.get("rows") else None,
        trained_for=tuple(
            Reason(k) for k in (newest.trigger.split(",") if newest else []) if k in kinds
        ),
        pending=pending,
        pending_change_at=pending_change,
        drifted_before=drifted_before,
    )


def window_rows(
    settings: Settings, meta: MetadataStore, store: BatchStore, change_at: datetime | None
) -> tuple[int, datetime | None]:
    """Labelled rows a training run now would use, as :func:`load_training_data` picks them
    (newest batches first until ``model.window`` is full), from ``change_at`` on; and
    ``change_at`` itself, or ``None`` once the window no longer reaches back to it."""
    target, tcol = settings.data.target, settings.data.time_column
    recs = [r for r in meta.list_batches("accepted") if r.has_labels]
    if not target or not recs:
        return 0, change_at
    window = settings.model.window
    newest = max((r.end_time for r in recs if r.end_time is not None), default=None)
    frames = [
        df[df[target].notna()]
        for _, df in window_batches(settings, recs, store, [target] + ([tcol] if tcol else []))
    ]
    rows = sum(len(df) for df in frames)
    if not tcol or change_at is None:
        return min(rows, window.rows or rows), None
    t = pd.concat([df[tcol] for df in frames]).sort_values(ignore_index=True)
    if window.period and newest is not None:
        t = t[t >= newest - pd.Timedelta(window.period)]
    if window.rows:
        t = t.iloc[-window.rows :]
    if t.empty or t.iloc[0] >= pd.Timestamp(change_at):
        return len(t), None  # the window is past the change
    return max(int((t >= pd.Timestamp(change_at)).sum()), settings.model.min_rows), change_at


def _holdout_errors(settings: Settings, reg: Registry, version: str) -> np.ndarray | None:
    """The version's errors on its hold-out rows (None for versions trained before they were
    kept)."""
    try:
        return np.load(reg.run_file(version, "training/holdout_errors.npy", _cache(settings)))
    except (MlopsError, OSError, ValueError):
        return None


def _calibration(settings: Settings, reg: Registry, version: str) -> Calibration | None:
    """The version's calibration of the label-free estimate (None for versions trained before
    it was kept)."""
    try:
        return Calibration.from_dict(
            json.loads(
                reg.run_file(version, "training/calibration.json", _cache(settings)).read_text()
            )
        )
    except (MlopsError, OSError, ValueError, TypeError):
        return None


def _lineage(settings: Settings, reg: Registry, version: str) -> set[str]:
    """Ids of the batches ``version`` was trained on (its run's lineage file, cached)."""
    path = reg.run_file(version, "lineage/lineage.json", _cache(settings))
    return {b["id"] for b in json.loads(path.read_text())["batches"]}


def _cache(settings: Settings) -> Path:
    return settings.workspace / "monitoring" / "cache"


def _new_labels(settings: Settings, meta: MetadataStore, reg: Registry, store: BatchStore) -> int:
    """Labelled rows accepted since the last training (of any version, approved or not):
    in batches outside its lineage, ingested after the newest batch it trained on."""
    target = settings.data.target
    versions = trainings(reg.versions())
    if not target or not versions:
        return 0
    lineage = _lineage(settings, reg, versions[-1].version)
    accepted = meta.list_batches("accepted")
    trained = [r.created_at for r in accepted if r.id in lineage]
    since = max(trained) if trained else None
    return sum(
        store.labelled_rows(r, target)
        for r in accepted
        if r.has_labels and r.id not in lineage and (since is None or r.created_at > since)
    )


@dataclass(frozen=True)
class _ChampionEvidence:
    """What the champion brings to a monitoring run: its version, its record, the reference
    rows it was trained on and its feature importances (None when not kept)."""

    version: str
    info: VersionInfo
    reference: pd.DataFrame
    importances: dict[str, float] | None


@dataclass(frozen=True)
class _Scored:
    """The champion's predictions of the current rows (None without rows), its class names
    (classification with probabilities, else None) and which rows hold a label."""

    preds: pd.DataFrame | None
    classes: list[str] | None
    labelled: pd.Series


def _champion_evidence(settings: Settings, reg: Registry) -> _ChampionEvidence:
    champion = reg.champion()
    if champion is None:
        raise MlopsError(
            f"model '{reg.name}' has no champion yet: train and approve one "
            "(`mlops train`, `mlops approve VERSION --by NAME`)"
        )
    info = reg.version(champion)
    cache = _cache(settings)
    reference = pd.read_parquet(reg.run_file(champion, "reference/reference.parquet", cache))
    try:
        importances = json.loads(
            reg.run_file(champion, "training/feature_importance.json", cache).read_text()
        )
    except (MlopsError, OSError, ValueError):
        importances = None
    return _ChampionEvidence(champion, info, reference, importances)


def _data_drift(
    settings: Settings,
    champ: _ChampionEvidence,
    current: pd.DataFrame,
    kinds: dict[str, str],
    rows: int,
) -> DriftSummary:
    return configured_drift(
        champ.reference, current, kinds, champ.importances, settings.monitoring, rows
    )


def _score(settings: Settings, reg: Registry, champion: str, current: pd.DataFrame) -> _Scored:
    """The champion's predictions of the current rows, and which of them are labelled."""
    target = settings.data.target
    labelled = (
        current[target].notna()
        if target and target in current.columns
        else pd.Series(False, index=current.index)
    )
    if not len(current):
        return _Scored(None, None, labelled)
    preds = reg.predict(champion, current)
    proba_cols = [c for c in preds.columns if c.startswith("proba_")]
    classes = None
    if settings.task != "regression" and proba_cols:
        classes = [c.removeprefix("proba_") for c in proba_cols]
    return _Scored(preds, classes, labelled)


def _label_free_estimate(
    settings: Settings, reg: Registry, champion: str, current: pd.DataFrame, scored: _Scored
) -> dict[str, dict[str, float]]:
    """The champion's metrics estimated from its probabilities alone (none for regression, or
    with too few rows to decide from)."""
    mcfg = settings.monitoring
    if scored.preds is None or scored.classes is None or len(current) < mcfg.min_rows:
        return {}
    est = estimate_performance(
        settings.task,
        scored.preds[[f"proba_{c}" for c in scored.classes]].to_numpy(),
        scored.classes,
        seed=mcfg.seed,
        calibration=_calibration(settings, reg, champion),
    )
    return {k: v.to_dict() for k, v in est.items()}


def _labelled_pairs(
    current: pd.DataFrame, scored: _Scored, target: str | None
) -> tuple[pd.Series, pd.DataFrame]:
    """Labels and predictions of the labelled rows, as the model saw them (class names are
    text here)."""
    assert scored.preds is not None
    y = current.loc[scored.labelled, target]
    p = scored.preds.loc[scored.labelled]
    if scored.classes is not None:
        y = as_text(y)
        p = p.assign(prediction=as_text(p["prediction"]))
    return y, p


def _realised_performance(
    settings: Settings,
    reg: Registry,
    champion: str,
    current: pd.DataFrame,
    scored: _Scored,
    result: MonitoringResult,
) -> None:
    """With enough labelled rows: the realised metrics, the concept-drift detectors and where
    the error rose, into ``result``."""
    if scored.preds is None or result.labelled_rows < settings.monitoring.min_rows:
        return
    task = settings.task
    y, p = _labelled_pairs(current, scored, settings.data.target)
    result.performance = compute_metrics(task, y, p, scored.classes)
    result.detectors = run_detectors(settings.retraining.detectors, task, y, p["prediction"])
    starts = [d.change_starts[0] for d in result.detectors if d.change_starts]
    if not starts:  # no detector fired: did the error rise clearly, and where?
        rise = where_error_rose(
            _holdout_errors(settings, reg, champion), error_stream(task, y, p["prediction"])
        )
        # else the first row of the evidence
        starts = [rise] if rise is not None else [0]
    tcol = settings.data.time_column
    if starts and tcol and tcol in current.columns:  # where the error rose, as a time
        change_at = current.loc[scored.labelled, tcol].iloc[min(starts)]
        if pd.notna(change_at):  # a served row may have sent no (readable) time
            result.change_at = pd.Timestamp(change_at).floor("us").to_pydatetime()


def _slice_monitoring(
    settings: Settings,
    meta: MetadataStore,
    reg: Registry,
    champ: _ChampionEvidence,
    current: pd.DataFrame,
    scored: _Scored,
    result: MonitoringResult,
) -> None:
    """With realised metrics: the champion's metric per slice against the same slices at
    training, or in its first monitoring run (:mod:`mlops_core.monitor.slices`), into
    ``result``."""
    if scored.preds is None or result.performance is None:
        return
    rows = current.loc[scored.labelled]
    kinds = _kinds(settings, champ.reference)
    cols = slice_columns(settings.gate.slice_columns, kinds, champ.importances, rows)
    if not cols:
        return
    y, p = _labelled_pairs(current, scored, settings.data.target)
    now = measure_slices(settings.task, rows, y, p, cols, scored.classes)
    baselines = _slice_baselines(settings, meta, reg, champ, cols, result.metric)
    checks = compare_slices(
        result.metric,
        now,
        result.performance.get(result.metric),
        baselines,
        settings.gate.max_slice_regression,
    )
    result.slice_columns = cols
    result.slice_measures = now
    result.slices = [c.to_dict() for c in checks[:50]]


def _slice_baselines(
    settings: Settings,
    meta: MetadataStore,
    reg: Registry,
    champ: _ChampionEvidence,
    cols: list[str],
    metric: str,
) -> dict[str, tuple[Slices, float | None, str]]:
    """Per column, the champion's slices and overall metric out of sample: its training run's
    hold-out slices where they have the column (``gate.slice_columns``), else its first
    monitoring run that measured the column (none yet: this run becomes the baseline)."""
    try:
        path = reg.run_file(champ.version, "evidence/comparison.json", _cache(settings))
        comparison = json.loads(path.read_text())
    except (MlopsError, OSError, ValueError):
        comparison = {}
    held = (comparison.get("slices") or {}).get("challenger") or {}
    overall = (comparison.get("challenger") or {}).get(metric)
    out = {c: (held, overall, "holdout") for c in cols if c in held and overall is not None}
    missing = {c for c in cols if c not in out}
    with meta.engine.connect() as conn:
        runs = conn.execute(
            sa.select(monitoring_runs.c.id, monitoring_runs.c.summary)
            .where(
                monitoring_runs.c.model == reg.name,
                monitoring_runs.c.champion_version == champ.version,
            )
            .order_by(monitoring_runs.c.at)
            .limit(100)
        ).all() if missing else []  # fmt: skip
    for run_id, text in runs:
        summary = json.loads(text)
        measured = summary.get("slice_measures") or {}
        first = (summary.get("performance") or {}).get(metric)
        found = missing & set(measured) if first is not None else set()
        out |= {c: (measured, first, f"run {run_id}") for c in found}
        missing -= found
    return out


def _data_span(
    settings: Settings, recs: list[BatchRecord], current: pd.DataFrame
) -> tuple[datetime | None, datetime | None]:
    """The data time the run covers: its rows' time column, else its batches' time range
    (None without either)."""
    tcol = settings.data.time_column
    if tcol and tcol in current.columns:
        t = pd.to_datetime(current[tcol], errors="coerce", utc=True).dropna()
        if len(t):
            t = t.dt.tz_localize(None)
            return t.min().floor("us").to_pydatetime(), t.max().floor("us").to_pydatetime()
    starts = [r.start_time for r in recs if r.start_time is not None]
    ends = [r.end_time for r in recs if r.end_time is not None]
    return (min(starts) if starts else None, max(ends) if ends else None)


def _decision(
    settings: Settings,
    meta: MetadataStore,
    reg: Registry,
    store: BatchStore,
    result: MonitoringResult,
    champion: VersionInfo,
) -> Decision:
    """The retraining policy's decision from this run's signals and the policy's state."""
    versions = trainings(reg.versions())
    clock = data_clock(settings, meta, result.at)
    state = _policy_state(meta, reg.name, versions, clock, settings.retraining.drift_share)
    rows, change_at = window_rows(
        settings, meta, store, state.change_at if isinstance(state.change_at, datetime) else None
    )
    state = replace(state, change_at=change_at)
    estimate = result.estimated.get(result.metric, {}).get("value") if result.estimated else None
    signals = compute_signals(
        metric=result.metric,
        baseline=result.baseline,
        realised=result.performance,
        estimated=estimate,
        drift_share=result.drift.drift_share,
        weighted_drift_share=result.drift.weighted_drift_share,
        detectors_fired=[d.name for d in result.detectors if d.fired],
        # the newest training, approved or not: a candidate awaiting approval already answers
        # the schedule (measured from the champion, every run would ask again meanwhile)
        model_trained_at=clock.trained_at(versions[-1] if versions else champion),
        new_labels=_new_labels(settings, meta, reg, store),
        window_rows=rows,
        change_at=result.change_at,
        slice_regressions=[
            (c["name"], c["regression"], max(c["noise"], c["tolerance"]))
            for c in result.flagged_slices
        ],
    )
    return decide(signals, state, settings.retraining, clock.now, clock.batch_period)


def _wants_report(settings: Settings, drift: DriftSummary, report: bool | None) -> bool:
    """``report`` if given, else as ``monitoring.report`` says (``on_drift``: any column
    drifted, not only a drifted data set); never without enough data."""
    mcfg = settings.monitoring
    drifted = drift.dataset_drift or bool(drift.drifted_columns)
    wanted = (
        report
        if report is not None
        else (mcfg.report == "always" or (mcfg.report == "on_drift" and drifted))
    )
    return bool(wanted) and drift.status != "not_enough_data"


def _write_reports(
    settings: Settings,
    result: MonitoringResult,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    kinds: dict[str, str],
    scored: _Scored,
) -> str:
    """The drift report (and the performance report, with realised metrics); its path,
    relative to the workspace."""
    mcfg = settings.monitoring
    out_dir = settings.workspace / "reports" / result.id
    drift_report(
        _sample(reference, mcfg.sample_rows, mcfg.seed),
        _sample(current, mcfg.sample_rows, mcfg.seed + 1),
        kinds,
        out_dir,
        method=mcfg.method,
        threshold=mcfg.threshold,
        drift_share=mcfg.drift_share,
    )
    if result.performance is not None and scored.preds is not None:
        y_all, p_all = _labelled_pairs(current, scored, settings.data.target)
        performance_report(settings.task, y_all, p_all, out_dir, classes=scored.classes)
    return str((out_dir / "drift.html").relative_to(settings.workspace))


def monitor(
    settings: Settings,
    batch_ids: list[str] | None = None,
    *,
    report: bool | None = None,
    meta: MetadataStore | None = None,
    registry: Registry | None = None,
    now: datetime | None = None,
) -> MonitoringResult:
    """Monitor new batches against the champion, decide about retraining, record both."""
    now = now or utcnow()
    meta = meta or MetadataStore(settings.db_url)
    reg = registry or Registry(settings, meta)
    champ = _champion_evidence(settings, reg)
    store = BatchStore(settings.workspace)
    recs, current, served_rows, rows = _current_data(
        settings, meta, reg, champ.version, batch_ids, store
    )
    kinds = _kinds(settings, champ.reference)
    result = MonitoringResult(
        id=f"m-{uuid.uuid4().hex[:12]}",
        at=now,
        model=reg.name,
        champion_version=champ.version,
        batch_ids=[r.id for r in recs],
        rows=rows,
        labelled_rows=0,
        drift=_data_drift(settings, champ, current, kinds, rows),
        performance=None,
        baseline=champ.info.metrics,
        metric=settings.gate.metric or PRIMARY[settings.task],
        served_rows=served_rows,
    )
    scored = _score(settings, reg, champ.version, current)
    result.estimated = _label_free_estimate(settings, reg, champ.version, current, scored)
    result.labelled_rows = int(scored.labelled.sum())
    _realised_performance(settings, reg, champ.version, current, scored, result)
    _slice_monitoring(settings, meta, reg, champ, current, scored, result)
    result.data_start, result.data_end = _data_span(settings, recs, current)
    result.reconciled = reconcile_estimates(settings, meta, reg, store)
    result.decision = _decision(settings, meta, reg, store, result, champ.info)
    if _wants_report(settings, result.drift, report):
        result.report = _write_reports(settings, result, champ.reference, current, kinds, scored)
    record(meta, result)
    return result


def _recent_runs(meta: MetadataStore, model: str, limit: int) -> list[tuple[str, str]]:
    """(id, summary as JSON) of the newest ``limit`` monitoring runs, newest first."""
    with meta.engine.connect() as conn:
        rows = conn.execute(
            sa.select(monitoring_runs.c.id, monitoring_runs.c.summary)
            .where(monitoring_runs.c.model == model)
            .order_by(monitoring_runs.c.at.desc())
            .limit(limit)
        ).all()
    return [(run_id, text) for run_id, text in rows]


def _awaiting_labels(summary: dict[str, Any], min_rows: int) -> dict[str, Any] | None:
    """The run's label-free estimate of its metric (so the run names its metric), if it is
    still to be checked against labels: not reconciled yet, over batches, and measured without
    enough labels."""
    est = summary.get("estimated", {}).get(summary.get("metric"))
    if (
        summary.get("reconciled_with")
        or not est
        or not summary.get("batch_ids")
        or summary.get("labelled_rows", 0) >= min_rows
    ):
        return None
    return est


def _rows_labelled_since(
    settings: Settings,
    meta: MetadataStore,
    store: BatchStore,
    summary: dict[str, Any],
    all_labels: pd.DataFrame,
) -> pd.DataFrame | None:
    """The run's rows with the labels other accepted batches hold for them (matched by
    ``data.id_column``); None while fewer than ``monitoring.min_rows``."""
    d, min_rows = settings.data, settings.monitoring.min_rows
    labels = (
        all_labels[~all_labels["_batch"].isin(summary["batch_ids"])]
        .drop(columns="_batch")
        .drop_duplicates(d.id_column, keep="last")
    )
    if len(labels) < min_rows:
        return None
    scored = pd.concat(
        [store.read(meta.get_batch(b)) for b in summary["batch_ids"]], ignore_index=True
    )
    rows_now = scored.drop(columns=[d.target], errors="ignore").merge(labels, on=d.id_column)
    return rows_now if len(rows_now) >= min_rows else None


def _realised_metric(
    settings: Settings, reg: Registry, summary: dict[str, Any], rows_now: pd.DataFrame
) -> float | None:
    """The run's metric, realised by the run's champion on the rows now labelled."""
    target = settings.data.target
    preds = reg.predict(summary["champion_version"], rows_now)
    classes = [c.removeprefix("proba_") for c in preds.columns if c.startswith("proba_")]
    return compute_metrics(
        settings.task,
        as_text(rows_now[target]),
        preds.assign(prediction=as_text(preds["prediction"])),
        classes,
    ).get(summary["metric"])


def _reconciliation(
    run_id: str, metric: str, rows: int, est: dict[str, Any], realised: float
) -> dict[str, Any]:
    return {
        "run": run_id,
        "metric": metric,
        "rows": rows,
        "estimated": est["value"],
        "low": est["low"],
        "high": est["high"],
        "realised": realised,
        "error": realised - est["value"],
        "within_interval": est["low"] <= realised <= est["high"],
    }


def _record_reconciliation(
    meta: MetadataStore, run_id: str, summary: dict[str, Any], check: dict[str, Any]
) -> None:
    """Keep the check in that run's record."""
    with meta.write() as conn:
        conn.execute(
            monitoring_runs.update()
            .where(monitoring_runs.c.id == run_id)
            .values(summary=json.dumps(summary | {"reconciled_with": check}, default=str))
        )


def reconcile_estimates(
    settings: Settings, meta: MetadataStore, reg: Registry, store: BatchStore, limit: int = 20
) -> list[dict[str, Any]]:
    """Check earlier label-free estimates now that labels arrived for their rows.

    A run that estimated performance without (enough) labels is reconciled once other
    accepted batches hold labels for at least ``monitoring.min_rows`` of its rows,
    matched by ``data.id_column``: the champion of that run scores those rows, and the
    realised metric is recorded beside the estimate and its interval (in that run's record)."""
    d = settings.data
    if not d.id_column or not d.target or settings.task == "regression":
        return []
    done = []
    all_labels: pd.DataFrame | None = None
    for run_id, text in _recent_runs(meta, reg.name, limit):
        summary = json.loads(text)
        est = _awaiting_labels(summary, settings.monitoring.min_rows)
        if est is None:
            continue
        if all_labels is None:  # read once per call, only when a run needs it
            all_labels = _labels_by_batch(settings, meta, store)
        rows_now = _rows_labelled_since(settings, meta, store, summary, all_labels)
        if rows_now is None:
            continue
        realised = _realised_metric(settings, reg, summary, rows_now)
        if realised is None or np.isnan(realised):
            continue
        check = _reconciliation(run_id, summary["metric"], len(rows_now), est, realised)
        _record_reconciliation(meta, run_id, summary, check)
        done.append(check)
    return done


def _labels_by_batch(settings: Settings, meta: MetadataStore, store: BatchStore) -> pd.DataFrame:
    """(id, label, batch id) of every labelled row in the accepted batches."""
    d = settings.data
    assert d.id_column and d.target
    frames = [
        store.read(r, [d.id_column, d.target]).dropna().assign(_batch=r.id)
        for r in meta.list_batches("accepted")
        if r.has_labels
    ]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[d.id_column, d.target, "_batch"])
    )


def record(meta: MetadataStore, result: MonitoringResult) -> None:
    """Store the run and the decision (retrain or not, and why)."""
    d = result.decision
    with meta.write() as conn:
        conn.execute(
            monitoring_runs.insert().values(
                id=result.id,
                at=result.at,
                model=result.model,
                champion_version=result.champion_version,
                batch_ids=json.dumps(result.batch_ids),
                rows=result.rows,
                status=result.status,
                drift_share=result.drift.drift_share,
                weighted_drift_share=result.drift.weighted_drift_share,
                summary=json.dumps(result.to_dict(), default=str),
                report_path=result.report,
            )
        )
        if d is not None:
            conn.execute(
                decisions.insert().values(
                    at=result.at,
                    model=result.model,
                    monitoring_run=result.id,
                    retrain=d.retrain,
                    reasons=json.dumps([f.text for f in d.reasons]),
                    held_back=json.dumps([h.text for h in d.held_back]),
                )
            )


def record_action(meta: MetadataStore, monitoring_run: str, acted: dict[str, Any]) -> None:
    """Say what was done about a decision (the training it started)."""
    with meta.write() as conn:
        conn.execute(
            decisions.update()
            .where(decisions.c.monitoring_run == monitoring_run)
            .values(acted=json.dumps(acted, default=str))
        )


def list_runs(meta: MetadataStore, model: str, limit: int = 50) -> list[dict[str, Any]]:
    with meta.engine.connect() as conn:
        rows = conn.execute(
            sa.select(monitoring_runs.c.summary)
            .where(monitoring_runs.c.model == model)
            .order_by(monitoring_runs.c.at.desc())
            .limit(limit)
        ).all()
    return [json.loads(r[0]) for r in rows]


def list_decisions(meta: MetadataStore, model: str, limit: int = 50) -> list[dict[str, Any]]:
    """Decisions, newest first, each with its reasons, brakes, the signals nearest their
    thresholds (a no), what stays pending and since when, and what was done about it."""
    with meta.engine.connect() as conn:
        rows = conn.execute(
            sa.select(decisions, monitoring_runs.c.summary)
            .join(monitoring_runs, monitoring_runs.c.id == decisions.c.monitoring_run, isouter=True)
            .where(decisions.c.model == model)
            .order_by(decisions.c.id.desc())
            .limit(limit)
        ).all()
    return [decision_row(r) for r in rows]
