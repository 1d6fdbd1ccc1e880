"""Read models for the dashboard: plain functions over the metadata DB, the registry, the
reports, the backtest results and the Prefect API that return small dataclasses and
DataFrames. Nothing here writes project state (writes go through :mod:`mlops_core.ops.actions`);
the only files written are caches under ``<workspace>/dashboard/`` (downloaded run files and the
predictions of a version on a comparison window), which can be deleted at any time.

Every reader is bounded: SQL with a time range and a LIMIT, the summary columns of a table
rather than whole rows where that is enough, and never a whole prediction log or batch file just
to show a page. The Models comparison predicts only the versions picked, on a window of the
newest labelled rows, and keeps those predictions on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlops_core.config import Settings, redact_url
from mlops_core.errors import MlopsError, NotFoundError
from mlops_core.registry.registry import Registry, VersionInfo
from mlops_core.store import (
    BatchRecord,
    BatchStore,
    MetadataStore,
    audit_log,
    batches,
    champion_state,
    decision_row,
    decisions,
    monitoring_runs,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

CHAMPION_ACTIONS = ("approve", "auto_promote", "rollback", "adopt")
EVENT_KINDS = {
    "register": "retrain",
    "approve": "promotion",
    "auto_promote": "promotion",
    "adopt": "promotion",
    "rollback": "rollback",
    "reject": "rejection",
    "gate_reject": "rejection",
}
SEVERITY_CAP = 10.0  # drift severity is clipped here (1 = at the threshold)


def cache_dir(settings: Settings) -> Path:
    """Where the dashboard's read models keep their caches (safe to delete)."""
    return settings.workspace / "dashboard" / "cache"


def primary_metric(settings: Settings) -> str:
    from mlops_core.train.evaluation import PRIMARY

    return settings.gate.metric or PRIMARY[settings.task]


def _time_filter(col: Any, start: datetime | None, end: datetime | None) -> list[Any]:
    out = []
    if start is not None:
        out.append(col >= start)
    if end is not None:
        out.append(col <= end)
    return out


# the champion and its history --------------------------------------------------------------
@dataclass(frozen=True)
class ChampionView:
    """Who is champion, since when, and by whose decision."""

    version: str | None
    since: datetime | None
    by: str | None  # who made it champion
    action: str | None  # approve | auto_promote | rollback | adopt
    reason: str | None
    metrics: dict[str, float] = field(default_factory=dict)  # hold-out metrics at training
    trigger: str | None = None
    data_window: str | None = None


def champion_view(
    settings: Settings, meta: MetadataStore, versions: Sequence[VersionInfo] | None = None
) -> ChampionView:
    """The champion as the metadata DB records it (the record of intent), with the audit record
    that made it champion and, when ``versions`` are given, its metrics."""
    with meta.engine.connect() as conn:
        row = conn.execute(
            sa.select(champion_state.c.version, champion_state.c.updated_at).where(
                champion_state.c.model == settings.project
            )
        ).first()
        if row is None or row[0] is None:
            return ChampionView(None, None, None, None, None)
        version, updated = row[0], row[1]
        rec = conn.execute(
            sa.select(audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.reason)
            .where(
                audit_log.c.model == settings.project,
                audit_log.c.version == version,
                audit_log.c.outcome == "applied",
                audit_log.c.action.in_(CHAMPION_ACTIONS),
            )
            .order_by(audit_log.c.id.desc())
            .limit(1)
        ).first()
    info = next((v for v in versions or () if v.version == version), None)
    return ChampionView(
        version=version,
        since=rec[0] if rec else updated,
        by=rec[1] if rec else None,
        action=rec[2] if rec else None,
        reason=rec[3] if rec else None,
        metrics=dict(info.metrics) if info else {},
        trigger=info.trigger if info else None,
        data_window=info.tags.get("data_window") if info else None,
    )


def champion_history(settings: Settings, meta: MetadataStore, limit: int = 50) -> pd.DataFrame:
    """Every change of champion, newest first: version, since, until, by, action, reason."""
    with meta.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                audit_log.c.at,
                audit_log.c.version,
                audit_log.c.actor,
                audit_log.c.action,
                audit_log.c.reason,
            )
            .where(
                audit_log.c.model == settings.project,
                audit_log.c.outcome == "applied",
                audit_log.c.action.in_(CHAMPION_ACTIONS),
            )
            .order_by(audit_log.c.id.desc())
            .limit(limit)
        ).all()
    df = pd.DataFrame(rows, columns=["since", "version", "by", "action", "reason"])
    df.insert(2, "until", df["since"].shift(1))
    return df


def model_events(
    settings: Settings,
    meta: MetadataStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
) -> pd.DataFrame:
    """Retrains, promotions, rollbacks and rejections from the audit log, oldest first:
    at, kind, action, version, actor, reason."""
    q = (
        sa.select(
            audit_log.c.at,
            audit_log.c.action,
            audit_log.c.version,
            audit_log.c.actor,
            audit_log.c.reason,
        )
        .where(
            audit_log.c.model == settings.project,
            audit_log.c.action.in_(list(EVENT_KINDS)),
            audit_log.c.outcome.in_(["applied", "recorded"]),
            *_time_filter(audit_log.c.at, start, end),
        )
        .order_by(audit_log.c.id.desc())
        .limit(limit)
    )
    with meta.engine.connect() as conn:
        rows = conn.execute(q).all()
    df = pd.DataFrame(rows, columns=["at", "action", "version", "actor", "reason"])
    df.insert(1, "kind", df["action"].map(EVENT_KINDS))
    return df.iloc[::-1].reset_index(drop=True)


# monitoring: the live metric, drift --------------------------------------------------------
RUN_COLUMNS = [
    "id",
    "at",
    "champion_version",
    "rows",
    "status",
    "drift_share",
    "weighted_drift_share",
    "report_path",
]


def monitoring_runs_frame(
    settings: Settings,
    meta: MetadataStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> pd.DataFrame:
    """Monitoring runs, newest first, summary columns only (no JSON parsed)."""
    t = monitoring_runs
    q = (
        sa.select(*[t.c[c] for c in RUN_COLUMNS])
        .where(t.c.model == settings.project, *_time_filter(t.c.at, start, end))
        .order_by(t.c.at.desc())
        .limit(limit)
        .offset(offset)
    )
    with meta.engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def count_monitoring_runs(
    settings: Settings,
    meta: MetadataStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    t = monitoring_runs
    with meta.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(t)
                .where(t.c.model == settings.project, *_time_filter(t.c.at, start, end))
            ).scalar_one()
        )


def monitoring_span(
    settings: Settings, meta: MetadataStore
) -> tuple[datetime | None, datetime | None]:
    """The times of the oldest and newest monitoring runs."""
    t = monitoring_runs
    with meta.engine.connect() as conn:
        lo, hi = conn.execute(
            sa.select(sa.func.min(t.c.at), sa.func.max(t.c.at)).where(t.c.model == settings.project)
        ).one()
    return lo, hi


def _summaries(
    settings: Settings,
    meta: MetadataStore,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The newest ``limit`` runs' JSON summaries in the range, oldest first."""
    t = monitoring_runs
    q = (
        sa.select(t.c.summary)
        .where(t.c.model == settings.project, *_time_filter(t.c.at, start, end))
        .order_by(t.c.at.desc())
        .limit(limit)
    )
    with meta.engine.connect() as conn:
        texts = [r[0] for r in conn.execute(q)]
    return [json.loads(x) for x in reversed(texts)]


def _stamp(v: Any) -> pd.Timestamp | None:
    """A naive UTC timestamp from an ISO text or a datetime (None when missing)."""
    if v is None or v == "":
        return None
    t = pd.Timestamp(v)
    if pd.isna(t):
        return None
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def data_times(
    meta: MetadataStore, summaries: list[dict[str, Any]]
) -> list[tuple[pd.Timestamp | None, pd.Timestamp | None]]:
    """(data start, data end) of each run: what its summary recorded, else its batches' time
    range in the batches table (runs recorded before the summary kept it); (None, None)
    without a time column."""
    missing = {b for s in summaries if not s.get("data_end") for b in (s.get("batch_ids") or [])}
    spans: dict[str, tuple[Any, Any]] = {}
    if missing:
        with meta.engine.connect() as conn:
            rows = conn.execute(
                sa.select(batches.c.id, batches.c.start_time, batches.c.end_time).where(
                    batches.c.id.in_(sorted(missing))
                )
            ).all()
        spans = {r[0]: (r[1], r[2]) for r in rows}
    out: list[tuple[pd.Timestamp | None, pd.Timestamp | None]] = []
    for s in summaries:
        if s.get("data_end"):
            out.append((_stamp(s.get("data_start")), _stamp(s["data_end"])))
            continue
        found = [spans[b] for b in s.get("batch_ids") or [] if b in spans]
        starts = [t for t, _ in found if t is not None]
        ends = [t for _, t in found if t is not None]
        out.append((_stamp(min(starts)) if starts else None, _stamp(max(ends)) if ends else None))
    return out


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


SERIES_COLUMNS = [
    "at",
    "run",
    "champion_version",
    "status",
    "drift_share",
    "rows",
    "labelled_rows",
    "metric",
    "realised",
    "estimated",
    "estimated_low",
    "estimated_high",
    "baseline",
    "data_start",
    "data_end",
    "flagged_slices",
]


def metric_series(
    settings: Settings,
    meta: MetadataStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
) -> pd.DataFrame:
    """The champion's live metric over time, one row per monitoring run (oldest first): at,
    run, champion_version, status, drift_share, rows, labelled_rows, metric, realised,
    estimated (label-free) with its interval, baseline (the champion's hold-out metric),
    data_start and data_end (the data time its rows cover; NaT without a time column) and
    flagged_slices (the slices that fell behind, comma-separated)."""
    out = []
    default = primary_metric(settings)
    summaries = _summaries(settings, meta, start, end, limit)
    for s, (d0, d1) in zip(summaries, data_times(meta, summaries), strict=True):
        m = s.get("metric") or default
        est = (s.get("estimated") or {}).get(m) or {}
        out.append(
            (
                pd.Timestamp(s["at"]),
                s["id"],
                s.get("champion_version"),
                s.get("status"),
                _num((s.get("drift") or {}).get("drift_share")),
                s.get("rows"),
                s.get("labelled_rows"),
                m,
                _num((s.get("performance") or {}).get(m)),
                _num(est.get("value")),
                _num(est.get("low")),
                _num(est.get("high")),
                _num((s.get("baseline") or {}).get(m)),
                d0,
                d1,
                ", ".join(s.get("flagged_slices") or []),
            )
        )
    frame = pd.DataFrame(out, columns=SERIES_COLUMNS)
    for c in ("data_start", "data_end"):
        frame[c] = pd.to_datetime(frame[c])
    return frame


@dataclass(frozen=True)
class DriftStatus:
    run: str
    at: datetime
    status: str  # ok | drift | not_enough_data
    drift_share: float | None
    weighted_drift_share: float | None
    message: str
    drifted_columns: list[str]
    champion_version: str | None
    # slices that fell behind the rest beyond noise (monitor.slices.SliceCheck.to_dict)
    flagged_slices: list[dict[str, Any]] = field(default_factory=list)
    report: bool = False  # an Evidently report was written
    data_end: datetime | None = None  # the data time the run reaches (None: no time column)


def latest_drift(settings: Settings, meta: MetadataStore) -> DriftStatus | None:
    """The newest monitoring run's drift verdict (one row read)."""
    t = monitoring_runs
    with meta.engine.connect() as conn:
        row = conn.execute(
            sa.select(t.c.summary, t.c.report_path)
            .where(t.c.model == settings.project)
            .order_by(t.c.at.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    s = json.loads(row[0])
    d = s.get("drift") or {}
    [(_, data_end)] = data_times(meta, [s])
    return DriftStatus(
        run=s["id"],
        at=pd.Timestamp(s["at"]).to_pydatetime(),
        status=s.get("status", d.get("status", "")),
        drift_share=d.get("drift_share"),
        weighted_drift_share=d.get("weighted_drift_share"),
        message=d.get("message", ""),
        drifted_columns=list(d.get("drifted_columns") or []),
        champion_version=s.get("champion_version"),
        flagged_slices=[c for c in s.get("slices") or [] if c.get("flagged")],
        report=bool(row[1]),
        data_end=data_end.to_pydatetime() if data_end is not None else None,
    )


def recent_decisions(
    settings: Settings, meta: MetadataStore, limit: int = 10
) -> list[dict[str, Any]]:
    """The newest retraining decisions with their reasons (as supervision.list_decisions, by
    time)."""
    with meta.engine.connect() as conn:
        rows = conn.execute(
            sa.select(decisions, monitoring_runs.c.summary)
            .join(monitoring_runs, monitoring_runs.c.id == decisions.c.monitoring_run, isouter=True)
            .where(decisions.c.model == settings.project)
            .order_by(decisions.c.at.desc(), decisions.c.id.desc())
            .limit(limit)
        ).all()
    return [decision_row(r) for r in rows]


def _is_p_value(column: dict[str, Any]) -> bool:
    method = str(column.get("method") or "").lower()
    if "p_value" in method or "p-value" in method or method.endswith("test"):
        return True
    s, t, d = column.get("score"), column.get("threshold"), column.get("drifted")
    if s is None or t is None or d is None or s == t:
        return False
    return (s < t) == bool(d)  # drift below the threshold: a p-value


def drift_severity(column: dict[str, Any]) -> float:
    """One scale for every test: 1 at the column's threshold, above 1 drifted (a distance over
    its threshold, or the threshold over a p-value), clipped at :data:`SEVERITY_CAP`; NaN for a
    column that could not be tested."""
    s, t = column.get("score"), column.get("threshold")
    if s is None or t is None:
        return math.nan
    s, t = float(s), float(t)
    if _is_p_value(column):
        v = t / max(s, 1e-12)
    else:
        v = s / t if t > 0 else (SEVERITY_CAP if s > 0 else 0.0)
    return float(min(v, SEVERITY_CAP))


@dataclass
class DriftMatrix:
    """Per-column drift over monitoring runs: runs (rows, oldest first) × columns."""

    # run, at, status, drift_share, champion_version, data_start, data_end (NaT: no time
    # column), flagged_slices (comma-separated)
    runs: pd.DataFrame
    severity: pd.DataFrame  # index: run id; 1 = at the threshold, > 1 drifted
    score: pd.DataFrame  # the test's own score (p-value or distance)
    drifted: pd.DataFrame  # True / False / NaN (not tested)
    method: dict[str, str]  # column -> test of its newest run

    @property
    def empty(self) -> bool:
        return self.runs.empty


def drift_matrix(
    settings: Settings,
    meta: MetadataStore,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 300,
) -> DriftMatrix:
    """The newest ``limit`` monitoring runs in the range, as a runs × columns matrix."""
    runs: list[tuple[Any, ...]] = []
    sev: dict[str, dict[str, float]] = {}
    score: dict[str, dict[str, float]] = {}
    drifted: dict[str, dict[str, Any]] = {}
    method: dict[str, str] = {}
    summaries = _summaries(settings, meta, start, end, limit)
    for s, (d0, d1) in zip(summaries, data_times(meta, summaries), strict=True):
        rid = s["id"]
        d = s.get("drift") or {}
        runs.append(
            (
                rid,
                pd.Timestamp(s["at"]),
                s.get("status"),
                d.get("drift_share"),
                s.get("champion_version"),
                d0,
                d1,
                ", ".join(s.get("flagged_slices") or []),
            )
        )
        sev[rid], score[rid], drifted[rid] = {}, {}, {}
        for c in d.get("columns") or []:
            name = c["column"]
            sev[rid][name] = drift_severity(c)
            score[rid][name] = _num(c.get("score"))
            drifted[rid][name] = c.get("drifted")
            if c.get("method"):
                method[name] = c["method"]
    ids = [r[0] for r in runs]
    frame = pd.DataFrame(
        runs,
        columns=[
            "run",
            "at",
            "status",
            "drift_share",
            "champion_version",
            "data_start",
            "data_end",
            "flagged_slices",
        ],
    )
    for c in ("data_start", "data_end"):
        frame[c] = pd.to_datetime(frame[c])

    def matrix(values: dict[str, dict[str, Any]]) -> pd.DataFrame:
        m = pd.DataFrame.from_dict(values, orient="index")
        return m.reindex(index=ids) if len(ids) else m

    return DriftMatrix(frame, matrix(sev), matrix(score), matrix(drifted), method)


@dataclass
class RunDetail:
    summary: dict[str, Any]  # MonitoringResult.to_dict()
    report: Path | None  # the Evidently drift HTML, if it was written and still exists
    performance_report: Path | None
    decision: dict[str, Any] | None


def monitoring_run(settings: Settings, meta: MetadataStore, run_id: str) -> RunDetail:
    t = monitoring_runs
    with meta.engine.connect() as conn:
        row = conn.execute(
            sa.select(t.c.summary, t.c.report_path).where(
                t.c.model == settings.project, t.c.id == run_id
            )
        ).first()
        dec = conn.execute(
            sa.select(decisions, t.c.summary)
            .join(t, t.c.id == decisions.c.monitoring_run)
            .where(decisions.c.monitoring_run == run_id)
            .limit(1)
        ).first()
    if row is None:
        raise NotFoundError(f"no monitoring run '{run_id}'")
    summary = json.loads(row[0])
    report = settings.workspace / row[1] if row[1] else None
    perf = report.with_name("performance.html") if report else None
    decision = None
    if dec is not None:
        decision = decision_row(dec)
    return RunDetail(
        summary,
        report if report and report.is_file() else None,
        perf if perf and perf.is_file() else None,
        decision,
    )


def drift_report_before(
    settings: Settings, meta: MetadataStore, when: datetime
) -> tuple[str, Path] | None:
    """The newest monitoring run with an HTML report at or before ``when``: (run id, path)."""
    t = monitoring_runs
    with meta.engine.connect() as conn:
        row = conn.execute(
            sa.select(t.c.id, t.c.report_path)
            .where(t.c.model == settings.project, t.c.at <= when, t.c.report_path.is_not(None))
            .order_by(t.c.at.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    path = settings.workspace / row[1]
    return (row[0], path) if path.is_file() else None


# data quality: quarantine ------------------------------------------------------------------
def quarantined(
    settings: Settings, meta: MetadataStore, *, include_released: bool = False, limit: int = 200
) -> list[BatchRecord]:
    """Quarantined batches (newest first) with their findings and reason."""
    status = ["quarantined", "released"] if include_released else ["quarantined"]
    q = (
        sa.select(batches)
        .where(batches.c.status.in_(status))
        .order_by(batches.c.created_at.desc())
        .limit(limit)
    )
    with meta.engine.connect() as conn:
        return [BatchRecord.from_row(r) for r in conn.execute(q)]


def batches_with_findings(settings: Settings, meta: MetadataStore, limit: int = 50) -> pd.DataFrame:
    """Accepted batches that carry data-quality warnings, newest first: batch, created, rows,
    rules, findings (one line each)."""
    q = (
        sa.select(batches.c.id, batches.c.created_at, batches.c.rows, batches.c.findings)
        .where(batches.c.status == "accepted", batches.c.findings != "[]")
        .order_by(batches.c.created_at.desc())
        .limit(limit)
    )
    with meta.engine.connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for bid, created, n, text in rows:
        found = json.loads(text or "[]")
        out.append(
            {
                "batch": bid,
                "created": created,
                "rows": n,
                "rules": ", ".join(sorted({f.get("rule", "") for f in found})),
                "findings": "; ".join(
                    f"{f.get('severity', '')} {f.get('rule', '')}: {f.get('message', '')}"
                    for f in found
                )[:1000],
            }
        )
    return pd.DataFrame(out, columns=["batch", "created", "rows", "rules", "findings"])


def batch_counts(meta: MetadataStore) -> dict[str, int]:
    """Batches by status."""
    with meta.engine.connect() as conn:
        rows = conn.execute(
            sa.select(batches.c.status, sa.func.count()).group_by(batches.c.status)
        ).all()
    return {s: int(n) for s, n in rows}


# versions ----------------------------------------------------------------------------------
def version_table(
    versions: Sequence[VersionInfo], metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per version, newest first: status, aliases, trigger, created, data window, rows,
    model type, gate, and the hold-out metrics (``metrics`` first)."""
    names: list[str] = list(metrics or [])
    for v in versions:
        names += [k for k in v.metrics if k not in names]
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append(
            {
                "version": v.version,
                "status": v.status,
                "aliases": ", ".join(v.aliases),
                "trigger": v.trigger,
                "created": v.created,
                "data_window": v.tags.get("data_window", ""),
                "rows": int(v.tags["rows"]) if v.tags.get("rows", "").isdigit() else None,
                "model_type": v.tags.get("model_type", ""),
                "gate_passed": v.gate_passed,
            }
            | {m: v.metrics.get(m) for m in names}
        )
    cols = [
        "version",
        "status",
        "aliases",
        "trigger",
        "created",
        "data_window",
        "rows",
        "model_type",
        "gate_passed",
        *names,
    ]
    return pd.DataFrame(rows, columns=cols)


def rollback_targets(versions: Sequence[VersionInfo], champion: str | None) -> list[str]:
    """Versions that were approved before and may be champion again (approved or retired, the
    gate passed, not the champion now), newest first: as ``actions.rollback_targets``, from
    versions already read."""
    return [
        v.version
        for v in sorted(versions, key=lambda v: int(v.version), reverse=True)
        if v.status in ("approved", "retired") and v.version != champion and v.gate_passed is True
    ]


def run_json(settings: Settings, reg: Registry, version: str, path: str) -> Any | None:
    """A JSON file of the version's training run (downloaded once), or None if it has none."""
    try:
        return json.loads(reg.run_file(version, path, cache_dir(settings)).read_text())
    except (MlopsError, OSError, ValueError):
        return None


def run_path(settings: Settings, reg: Registry, version: str, path: str) -> Path | None:
    """A file of the version's training run (downloaded once), or None if it has none."""
    try:
        return reg.run_file(version, path, cache_dir(settings))
    except (MlopsError, OSError):
        return None


@dataclass
class GateEvidence:
    """What the gate saw for a version: the challenger and the champion on the same hold-out
    rows, their slices, every check, and the reports."""

    version: str
    passed: bool | None
    reasons: list[str]
    metric: str
    metrics: pd.DataFrame  # metric × (challenger, champion)
    champion_version: str | None
    holdout_rows: int | None
    slices: pd.DataFrame  # column, value, rows, challenger, champion (the gate's metric)
    performance_report: Path | None  # Evidently report of the hold-out (champion as reference)
    drift_report: tuple[str, Path] | None  # (monitoring run, HTML) current at training time


def gate_evidence(
    settings: Settings,
    reg: Registry,
    meta: MetadataStore,
    info: VersionInfo,
    *,
    with_reports: bool = True,
) -> GateEvidence:
    comp = run_json(settings, reg, info.version, "evidence/comparison.json") or {}
    reasons = comp.get("gate", {}).get("reasons") or json.loads(
        info.tags.get("gate_reasons") or "[]"
    )
    metric = comp.get("metric") or primary_metric(settings)
    chall = comp.get("challenger") or info.metrics
    champ = comp.get("champion") or {}
    names = list(dict.fromkeys([*chall, *champ]))
    metrics = pd.DataFrame(
        {"challenger": [chall.get(k) for k in names], "champion": [champ.get(k) for k in names]},
        index=names,
    )
    metrics.index.name = "metric"
    rows = []
    sl = comp.get("slices") or {}
    for col, values in (sl.get("challenger") or {}).items():
        base = (sl.get("champion") or {}).get(col) or {}
        for value, m in values.items():
            rows.append(
                {
                    "column": col,
                    "value": value,
                    "rows": int(m.get("rows", 0)),
                    "challenger": m.get(metric),
                    "champion": (base.get(value) or {}).get(metric),
                }
            )
    slices = pd.DataFrame(rows, columns=["column", "value", "rows", "challenger", "champion"])
    perf = (
        run_path(settings, reg, info.version, "evidence/performance.html") if with_reports else None
    )
    drift = drift_report_before(settings, meta, info.created)
    return GateEvidence(
        info.version,
        info.gate_passed,
        list(reasons),
        metric,
        metrics,
        comp.get("champion_version"),
        comp.get("holdout_rows"),
        slices,
        perf,
        drift,
    )


# comparing versions on the same recent window ----------------------------------------------
@dataclass(frozen=True)
class ComparisonWindow:
    key: str  # identifies the rows: the batches and the row count
    batch_ids: tuple[str, ...]
    rows: int
    start: datetime | None
    end: datetime | None


def comparison_window(
    settings: Settings, meta: MetadataStore, rows: int = 5000
) -> ComparisonWindow | None:
    """The newest accepted, labelled batches holding at least ``rows`` rows (the same rows for
    every version compared); None if no labelled batch exists."""
    recs = [r for r in meta.list_batches("accepted") if r.has_labels]
    if not recs:
        return None
    recs.sort(key=lambda r: (r.end_time or r.created_at, r.created_at))
    picked: list[BatchRecord] = []
    total = 0
    for r in reversed(recs):
        picked.append(r)
        total += r.rows
        if total >= rows:
            break
    picked.reverse()
    ids = tuple(r.id for r in picked)
    key = hashlib.sha256(f"{','.join(ids)}|{rows}".encode()).hexdigest()[:16]
    starts = [r.start_time for r in picked if r.start_time]
    ends = [r.end_time for r in picked if r.end_time]
    return ComparisonWindow(
        key, ids, rows, min(starts) if starts else None, max(ends) if ends else None
    )


def window_frame(settings: Settings, meta: MetadataStore, window: ComparisonWindow) -> pd.DataFrame:
    """The labelled rows of the window (the newest ``window.rows`` of its batches)."""
    store = BatchStore(settings.workspace)
    frame = pd.concat([store.read(meta.get_batch(b)) for b in window.batch_ids], ignore_index=True)
    target, tcol = settings.data.target, settings.data.time_column
    if target and target in frame.columns:
        frame = frame[frame[target].notna()]
    if tcol and tcol in frame.columns:
        frame = frame.sort_values(tcol, kind="stable")
    return frame.tail(window.rows).reset_index(drop=True)


def cached_predictions(
    settings: Settings, reg: Registry, version: str, frame: pd.DataFrame, window: ComparisonWindow
) -> pd.DataFrame:
    """``version``'s predictions of the window's rows, computed once and kept on disk."""
    path = cache_dir(settings) / "predictions" / f"{reg.name}-v{version}-{window.key}.parquet"
    if path.is_file():
        preds = pd.read_parquet(path)
        if len(preds) == len(frame):
            return preds.set_axis(frame.index)
    preds = reg.predict(version, frame).reset_index(drop=True)
    write_parquet_atomic(preds, path)
    return preds.set_axis(frame.index)


def _sample_curve(
    x: np.ndarray, y: np.ndarray, points: int = 200
) -> tuple[list[float], list[float]]:
    if len(x) > points:
        idx = np.unique(np.linspace(0, len(x) - 1, points).round().astype(int))
        x, y = x[idx], y[idx]
    return x.astype(float).tolist(), y.astype(float).tolist()


@dataclass
class Comparison:
    window: ComparisonWindow
    rows: int  # labelled rows scored
    task: str
    metric: str
    metrics: pd.DataFrame  # index: version; columns: metrics
    slices: pd.DataFrame  # version, column, value, rows, metric value
    curves: dict[str, dict[str, tuple[list[float], list[float]]]]  # version -> roc / pr
    residuals: dict[str, pd.DataFrame]  # regression: version -> prediction, residual (sample)
    importances: pd.DataFrame  # index: feature; columns: versions
    params: pd.DataFrame  # index: parameter; columns: versions, plus "differs"
    lineage: pd.DataFrame  # version, batches, rows, start, end, shared with the first version
    errors: dict[str, str]  # version -> why it could not be scored


def _hyper_parameters(card: str | None) -> dict[str, Any]:
    """The hyper-parameters from a model card's JSON block."""
    if not card or "## Hyper-parameters" not in card:
        return {}
    block = card.split("## Hyper-parameters", 1)[1]
    if "```json" not in block:
        return {}
    text = block.split("```json", 1)[1].split("```", 1)[0]
    try:
        out = json.loads(text)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


@dataclass
class _Scores:
    """What scoring the versions on the window gave: metrics and slice metrics per version,
    ROC / PR curves (binary), residuals (regression) and why a version could not be scored."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    slices: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = field(default_factory=dict)
    residuals: dict[str, pd.DataFrame] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _slice_columns(settings: Settings, frame: pd.DataFrame) -> list[str]:
    """The gate's slice columns, else the first two categorical or boolean features."""
    return (
        list(settings.gate.slice_columns)
        or [
            c
            for c in (settings.data.features.categorical + settings.data.features.boolean)
            if c in frame.columns
        ][:2]
    )


def _binary_curves(
    y: pd.Series, preds: pd.DataFrame, classes: list[str]
) -> dict[str, tuple[list[float], list[float]]]:
    """ROC and precision-recall curves of the positive (last) class, sampled."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    yb = (y == classes[-1]).astype(int).to_numpy()
    p1 = preds[f"proba_{classes[-1]}"].to_numpy(dtype=float)
    fpr, tpr, _ = roc_curve(yb, p1)
    prec, rec, _ = precision_recall_curve(yb, p1)
    return {"roc": _sample_curve(fpr, tpr), "pr": _sample_curve(rec, prec)}


def _residual_sample(y: pd.Series, preds: pd.DataFrame) -> pd.DataFrame:
    """Predictions and residuals (regression), a sample of at most 2,000 rows."""
    r = pd.DataFrame(
        {
            "prediction": preds["prediction"].to_numpy(dtype=float),
            "residual": y.to_numpy(dtype=float) - preds["prediction"].to_numpy(dtype=float),
        }
    )
    return r.sample(min(len(r), 2000), random_state=0)


def _score_version(
    scores: _Scores,
    settings: Settings,
    version: str,
    frame: pd.DataFrame,
    y: pd.Series,
    preds: pd.DataFrame,
    slice_cols: list[str],
) -> None:
    """One version's metrics, slice metrics and curves or residuals, into ``scores``."""
    from mlops_core.data.validation import as_text
    from mlops_core.train.evaluation import compute_metrics, slice_metrics

    task = settings.task
    classes = [c.removeprefix("proba_") for c in preds.columns if c.startswith("proba_")]
    yy, pp = y, preds
    if task != "regression":
        yy = as_text(y)
        pp = preds.assign(prediction=as_text(preds["prediction"]))
    scores.metrics[version] = compute_metrics(task, yy, pp, classes or None)
    for col, values in slice_metrics(task, frame, yy, pp, slice_cols, classes or None).items():
        for value, m in values.items():
            scores.slices.append(
                {"version": version, "column": col, "value": value, "rows": int(m.get("rows", 0))}
                | {k: x for k, x in m.items() if k != "rows"}
            )
    if task == "binary" and len(classes) == 2 and yy.nunique() == 2:
        scores.curves[version] = _binary_curves(yy, pp, classes)
    elif task == "regression":
        scores.residuals[version] = _residual_sample(y, pp)


def _score_versions(
    settings: Settings,
    reg: Registry,
    versions: list[str],
    frame: pd.DataFrame,
    window: ComparisonWindow,
) -> _Scores:
    target = settings.data.target
    y = frame[target] if target and target in frame.columns else pd.Series(dtype=object)
    slice_cols = _slice_columns(settings, frame)
    scores = _Scores()
    for v in versions:
        try:  # a version that cannot read today's rows is reported, not a crash of the page
            preds = cached_predictions(settings, reg, v, frame, window)
        except (MlopsError, LookupError, ValueError, TypeError, OSError) as e:
            scores.errors[v] = f"{type(e).__name__}: {e}"[:300]
            continue
        _score_version(scores, settings, v, frame, y, preds, slice_cols)
    return scores


def _version_params(
    settings: Settings, reg: Registry, version: str, info: VersionInfo
) -> dict[str, Any]:
    """The version's hyper-parameters (``hp.``-prefixed, from its model card) and tags."""
    card = run_path(settings, reg, version, "card/model_card.md")
    p = {
        f"hp.{k}": json.dumps(x, default=str) if isinstance(x, dict | list) else x
        for k, x in _hyper_parameters(card.read_text() if card else None).items()
    }
    p |= {
        k: info.tags.get(k)
        for k in ("model_type", "trigger", "rows", "data_window", "config_hash", "code_version")
    }
    return p


def _lineage_row(
    version: str, lin: dict[str, Any], ids: set[str], first_batches: set[str]
) -> dict[str, Any]:
    return {
        "version": version,
        "batches": len(ids),
        "rows": lin.get("rows"),
        "start": lin.get("start"),
        "end": lin.get("end"),
        "shared_with_first": len(ids & first_batches),
        "batch_ids": ", ".join(sorted(ids))[:2000],
    }


def _describe_versions(
    settings: Settings,
    reg: Registry,
    versions: list[str],
    by_version: dict[str, VersionInfo],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Each version's feature importances, parameters and lineage (the batches it was trained
    on, and how many it shares with the first version)."""
    imps: dict[str, Any] = {}
    params: dict[str, dict[str, Any]] = {}
    lineage: list[dict[str, Any]] = []
    first_batches: set[str] | None = None
    for v in versions:
        imp = run_json(settings, reg, v, "training/feature_importance.json")
        if imp:
            imps[v] = imp
        info = by_version.get(v) or reg.version(v)
        params[v] = _version_params(settings, reg, v, info)
        lin = run_json(settings, reg, v, "lineage/lineage.json") or {}
        ids = {b["id"] for b in lin.get("batches", [])}
        if first_batches is None:
            first_batches = ids
        lineage.append(_lineage_row(v, lin, ids, first_batches))
    return imps, params, lineage


def _importance_frame(imps: dict[str, Any]) -> pd.DataFrame:
    """Features by versions, the most important (in any version) first."""
    imp_df = pd.DataFrame(imps).fillna(0.0)
    if not imp_df.empty:
        imp_df = imp_df.loc[imp_df.max(axis=1).sort_values(ascending=False).index]
    imp_df.index.name = "feature"
    return imp_df


def _params_frame(params: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Parameters by versions, with whether they differ (those first)."""
    par_df = pd.DataFrame(params)
    if not par_df.empty:
        par_df = par_df.astype(object).where(par_df.notna(), None)
        par_df["differs"] = [
            len({json.dumps(x, default=str) for x in row}) > 1
            for row in par_df.itertuples(index=False)
        ]
        par_df = par_df.sort_values("differs", ascending=False, kind="stable")
    par_df.index.name = "parameter"
    return par_df


def compare_versions(
    settings: Settings,
    reg: Registry,
    meta: MetadataStore,
    versions: Iterable[str],
    *,
    rows: int = 5000,
    infos: Sequence[VersionInfo] | None = None,
) -> Comparison | None:
    """Score ``versions`` on the same newest labelled rows: metrics, slice metrics, ROC / PR
    curves (binary) or residuals (regression), feature importances, the parameters that differ
    and the data each was trained on. None when there is no labelled batch to score."""
    window = comparison_window(settings, meta, rows)
    if window is None:
        return None
    versions = [str(v) for v in versions]
    frame = window_frame(settings, meta, window)
    scores = _score_versions(settings, reg, versions, frame, window)
    metrics = pd.DataFrame.from_dict(scores.metrics, orient="index")
    metrics.index.name = "version"
    imps, params, lineage = _describe_versions(
        settings, reg, versions, {v.version: v for v in infos or ()}
    )
    return Comparison(
        window=window,
        rows=len(frame),
        task=settings.task,
        metric=primary_metric(settings),
        metrics=metrics,
        slices=pd.DataFrame(scores.slices),
        curves=scores.curves,
        residuals=scores.residuals,
        importances=_importance_frame(imps),
        params=_params_frame(params),
        lineage=pd.DataFrame(lineage),
        errors=scores.errors,
    )


# the audit log -----------------------------------------------------------------------------
AUDIT_COLUMNS = [
    "id",
    "at",
    "actor",
    "action",
    "version",
    "previous_champion",
    "outcome",
    "reason",
    "evidence",
    "request_id",
]


def _audit_filters(
    settings: Settings,
    actor: str | None,
    actions: Sequence[str] | None,
    version: str | None,
    outcome: str | None,
    start: datetime | None,
    end: datetime | None,
) -> list[Any]:
    """The WHERE clauses of an audit-log query (shared by the page and its count)."""
    t = audit_log
    where = [t.c.model == settings.project, *_time_filter(t.c.at, start, end)]
    if actor:
        where.append(t.c.actor == actor)
    if actions:
        where.append(t.c.action.in_(list(actions)))
    if version:
        where.append(t.c.version == str(version))
    if outcome:
        where.append(t.c.outcome == outcome)
    return where


def audit_frame(
    settings: Settings,
    meta: MetadataStore,
    *,
    actor: str | None = None,
    actions: Sequence[str] | None = None,
    version: str | None = None,
    outcome: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> pd.DataFrame:
    """The audit log, newest first, filtered in SQL."""
    t = audit_log
    q = sa.select(*[t.c[c] for c in AUDIT_COLUMNS]).where(
        *_audit_filters(settings, actor, actions, version, outcome, start, end)
    )
    q = q.order_by(t.c.id.desc()).offset(offset)
    if limit:
        q = q.limit(limit)
    with meta.engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def count_audit(
    settings: Settings,
    meta: MetadataStore,
    *,
    actor: str | None = None,
    actions: Sequence[str] | None = None,
    version: str | None = None,
    outcome: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    q = (
        sa.select(sa.func.count())
        .select_from(audit_log)
        .where(*_audit_filters(settings, actor, actions, version, outcome, start, end))
    )
    with meta.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def audit_facets(settings: Settings, meta: MetadataStore) -> dict[str, list[str]]:
    """The distinct actors, actions and outcomes in the audit log (for filters)."""
    t = audit_log
    out = {}
    with meta.engine.connect() as conn:
        for c in ("actor", "action", "outcome"):
            out[c] = sorted(
                r[0]
                for r in conn.execute(
                    sa.select(t.c[c]).where(t.c.model == settings.project).distinct()
                )
            )
    return out


def audit_csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


# services and the pipeline (Prefect's HTTP API; no Prefect import) -------------------------
@dataclass(frozen=True)
class ServiceHealth:
    """One service of the project. ``where``: ``local`` (``mlops up`` runs it), ``external``
    (``storage.mlflow_uri``, an MLflow server run elsewhere: ``running`` means configured) or
    ``direct`` (``storage.mlflow_uri`` names a store MLflow opens itself, no server to check).
    ``url`` never shows a password."""

    name: str
    running: bool
    healthy: bool
    url: str | None
    pid: int | None
    where: str = "local"

    @property
    def state(self) -> str:
        """healthy, not answering, stopped or direct store."""
        if self.where == "direct":
            return "direct store"
        if self.healthy:
            return "healthy"
        return "not answering" if self.running else "stopped"

    @property
    def checked(self) -> bool:
        """Whether it has a health to count (a store addressed directly has none)."""
        return self.where != "direct"


def mlflow_health(uri: str, timeout: float = 1.0) -> ServiceHealth:
    """An MLflow the project uses but does not run (``storage.mlflow_uri``): an http(s) server
    is healthy when ``<uri>/health`` answers; any other URI is a store MLflow opens directly."""
    from urllib.parse import urlsplit

    from mlops_core.ops.services import MLFLOW, is_healthy

    shown = redact_url(uri)
    if urlsplit(uri).scheme.lower() not in ("http", "https"):
        return ServiceHealth(MLFLOW, False, False, shown, None, "direct")
    return ServiceHealth(
        MLFLOW, True, is_healthy(uri.rstrip("/") + "/health", timeout), shown, None, "external"
    )


def service_health(settings: Settings, timeout: float = 1.0) -> list[ServiceHealth]:
    """Each service of the project, checked in parallel: the ones ``mlops up`` runs are running
    when their process is alive and healthy when their health URL answers; an MLflow named by
    ``storage.mlflow_uri`` is checked at that address (:func:`mlflow_health`)."""
    from mlops_core.ops.services import MLFLOW, SERVICES, is_healthy, read_service

    external = settings.storage.mlflow_uri

    def check(name: str) -> ServiceHealth:
        if name == MLFLOW and external:
            return mlflow_health(external, timeout)
        info = read_service(settings.workspace, name)
        return ServiceHealth(
            name,
            info is not None,
            bool(info and is_healthy(info.health_url, timeout)),
            info.url if info else None,
            info.pid if info else None,
        )

    with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
        return list(pool.map(check, SERVICES))


def retrain_requests(settings: Settings, meta: MetadataStore, limit: int = 10) -> pd.DataFrame:
    """The newest retraining requests made by people (audit action ``request_retrain``)."""
    return audit_frame(settings, meta, actions=["request_retrain"], limit=limit)


# backtests ---------------------------------------------------------------------------------
def backtests_dir(settings: Settings) -> Path:
    """Where ``mlops backtest`` keeps its results for the dashboard."""
    return settings.workspace / "backtests"


@dataclass(frozen=True)
class BacktestEntry:
    path: Path
    name: str
    modified: datetime
    dataset: str
    task: str
    batches: int
    strategies: tuple[str, ...]
    metric: str


def list_backtests(settings: Settings, limit: int = 100) -> list[BacktestEntry]:
    """Backtest results (JSON, schema 1) under the workspace, newest first. Files that are not
    backtest results are skipped."""
    from mlops_core.backtest.engine import BacktestError, read_json

    folder = backtests_dir(settings)
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for p in files[:limit]:
        try:
            raw = read_json(p)
        except (BacktestError, OSError, ValueError) as e:
            log.info("skipping %s: %s", p, e)
            continue
        out.append(
            BacktestEntry(
                p,
                p.stem,
                datetime.fromtimestamp(p.stat().st_mtime),
                str(raw.get("dataset", "")),
                str(raw.get("task", "")),
                int(raw.get("batches") or 0),
                tuple(s["name"] for s in raw["strategies"]),
                str(raw.get("metric_name", "")),
            )
        )
    return out


def backtest_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per strategy: mean metric, retrains, CPU cost, detection delays, false
    triggers."""
    rows = []
    n = max(int(result.get("batches") or 0), 1)
    for s in result["strategies"]:
        delays = s.get("detection_delays") or []
        rows.append(
            {
                "strategy": s["name"],
                f"mean {s.get('metric_name', '')}": s.get("mean_metric"),
                "retrains": s.get("retrains"),
                "retrain rate": (s.get("retrains") or 0) / n,
                "CPU s": (s.get("train_cpu_s") or 0) + (s.get("monitor_cpu_s") or 0),
                "detection delays": ", ".join("-" if d is None else str(d) for d in delays),
                "false triggers": s.get("false_triggers"),
            }
        )
    return pd.DataFrame(rows)


# serving -------------------------------------------------------------------------------------
@dataclass
class ServingView:
    """What the Serving page shows: the running API's own answers (``/model`` and the
    Prometheus counters of ``/metrics``, since it started) and the prediction log of the last
    ``days`` (bounded: at most ``max_rows`` of its newest rows), with the labels that came
    back."""

    url: str | None  # None: `mlops serve` is not running for this project
    model: dict[str, Any] | None  # /model: version, since, hash, shadow, last_error
    error: str | None  # why the API could not be read
    counters: dict[str, float]  # requests by outcome, rows, swaps, load failures, p50/p99 ms
    timeline: pd.DataFrame  # per period: rows, latency, predicted vs observed, accuracy
    live: pd.DataFrame  # per served/shadow version: labelled rows and metrics on them
    period: str  # the timeline's period ("h", "D" or "W")
    time_axis: str = "served at"  # the time column (data time) when the log has it


def _histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """A quantile from cumulative Prometheus buckets (upper bound, count), as PromQL's
    histogram_quantile interpolates it."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 0)
        prev_le, prev_count = le, count
    return prev_le


_SERVING_COUNTERS = {
    "mlops_predicted_rows_total": "rows",
    "mlops_model_swaps_total": "swaps",
    "mlops_model_load_failures_total": "load_failures",
    "mlops_prediction_log_dropped_rows_total": "log_dropped",
    "mlops_feedback_labels_total": "feedback",
}


def parse_serving_metrics(text: str) -> dict[str, float]:
    """The counters the page shows, from ``/metrics``' text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {
        "requests_ok": 0,
        "requests_rejected": 0,
        "requests_failed": 0,
        "rows": 0,
        "swaps": 0,
        "load_failures": 0,
        "log_dropped": 0,
        "feedback": 0,
    }
    buckets: list[tuple[float, float]] = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "mlops_requests_total" and s.labels.get("endpoint") == "/predict":
                code = s.labels.get("status", "")
                key = (
                    "requests_ok"
                    if code.startswith("2")
                    else "requests_rejected"
                    if code.startswith("4")
                    else "requests_failed"
                )
                out[key] += s.value
            elif (
                s.name == "mlops_request_seconds_bucket" and s.labels.get("endpoint") == "/predict"
            ):
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name in _SERVING_COUNTERS:
                out[_SERVING_COUNTERS[s.name]] += s.value
    for q in (0.5, 0.99):
        v = _histogram_quantile(buckets, q)
        if v is not None:
            out[f"p{int(q * 100)}_ms"] = v * 1000
    return out


def serving_view(
    settings: Settings,
    *,
    days: int = 7,
    max_rows: int = 200_000,
    timeout: float = 2.0,
    now: datetime | None = None,
) -> ServingView:
    """The serving API and its prediction log (see :class:`ServingView`). An API that does
    not answer is a value (``error``), not an exception."""
    import httpx

    from mlops_core.ops.services import SERVING, read_service
    from mlops_core.serve.prediction_log import LABEL, read_log
    from mlops_core.store import utcnow

    info = read_service(settings.workspace, SERVING)
    model = None
    error = None
    counters: dict[str, float] = {}
    if info is not None:
        try:
            model = httpx.get(f"{info.url}/model", timeout=timeout).json()
            counters = parse_serving_metrics(httpx.get(f"{info.url}/metrics", timeout=timeout).text)
        except (httpx.HTTPError, ValueError) as e:
            error = f"{info.url} did not answer: {e}"
    now = now or utcnow()
    since = now - pd.Timedelta(days=days)
    rows = read_log(
        settings.workspace,
        since=since.to_pydatetime() if isinstance(since, pd.Timestamp) else since,
    )
    if len(rows) > max_rows:
        rows = rows.tail(max_rows)
    when, time_axis = _serving_times(settings, rows)
    span = when.max() - when.min() if len(when) and when.notna().any() else pd.Timedelta(0)
    period = "h" if span <= pd.Timedelta(days=2) else "D" if span <= pd.Timedelta(days=60) else "W"
    return ServingView(
        info.url if info else None,
        model,
        error,
        counters,
        _serving_timeline(settings, rows.assign(_when=when), period, LABEL),
        live_comparison(settings, rows),
        period,
        time_axis,
    )


def _serving_times(settings: Settings, rows: pd.DataFrame) -> tuple[pd.Series, str]:
    """When each logged row happened: its time column (data time) where the client sent one
    that parses, else when it was served."""
    from mlops_core.data.batching import parse_times

    tcol = settings.data.time_column
    if rows.empty:
        return pd.Series(dtype="datetime64[ns]"), "served at"
    if tcol and tcol in rows.columns:
        parsed = parse_times(rows[tcol], settings.data.time_format)
        if parsed.notna().mean() > 0.5:
            return parsed.fillna(rows["served_at"]), tcol
    return rows["served_at"], "served at"


def _observed(settings: Settings, labels: pd.Series) -> pd.Series:
    """Labels as numbers for a timeline: the positive class's share (binary), or the value."""
    if settings.task == "regression":
        return pd.to_numeric(labels, errors="coerce")
    return labels.astype(str).isin({"1", "True", "true", "yes"}).astype(float).where(labels.notna())


def _serving_timeline(
    settings: Settings, rows: pd.DataFrame, period: str, label: str
) -> pd.DataFrame:
    cols = [
        "at",
        "rows",
        "latency_ms",
        "predicted",
        "observed",
        "labelled",
        "accuracy",
        "shadow_accuracy",
    ]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    proba = [c for c in rows.columns if c.startswith("served_proba_")]
    positive = next(
        (c for c in proba if c.removeprefix("served_proba_") in ("1", "True", "true", "yes")),
        proba[-1] if proba else None,
    )
    when = rows["_when"] if "_when" in rows.columns else rows["served_at"]
    frame = pd.DataFrame(
        {
            "at": when.dt.to_period(period).dt.start_time
            if period == "W"
            else when.dt.floor(period),
            "latency_ms": rows["served_latency_ms"],
            "predicted": rows[positive]
            if positive
            else pd.to_numeric(rows["served_prediction"], errors="coerce"),
            "observed": _observed(settings, rows[label]),
            "hit": (rows["served_prediction"].astype(str) == rows[label].astype(str))
            .where(rows[label].notna())
            .astype(float),
            "shadow_hit": (
                (rows["shadow_prediction"].astype(str) == rows[label].astype(str))
                .where(rows[label].notna() & rows["shadow_prediction"].notna())
                .astype(float)
            )
            if "shadow_prediction" in rows.columns
            else np.nan,
        }
    )
    g = frame.groupby("at")
    out = pd.DataFrame(
        {
            "rows": g.size(),
            "latency_ms": g["latency_ms"].mean(),
            "predicted": g["predicted"].mean(),
            "observed": g["observed"].mean(),
            "labelled": g["observed"].count(),
            "accuracy": g["hit"].mean(),
            "shadow_accuracy": g["shadow_hit"].mean(),
        }
    ).reset_index()
    return out[cols]


def live_comparison(settings: Settings, rows: pd.DataFrame) -> pd.DataFrame:
    """Each version that answered (and each shadow), on the logged rows whose labels came
    back: rows, and the task's metrics on them. Champion and shadow are compared on the same
    rows (those both answered)."""
    from mlops_core.serve.prediction_log import LABEL
    from mlops_core.train.evaluation import compute_metrics

    empty = pd.DataFrame(columns=["version", "role", "labelled_rows"])
    if rows.empty or LABEL not in rows.columns:
        return empty
    labelled = rows[rows[LABEL].notna()]
    if labelled.empty:
        return empty
    task = settings.task
    out = []

    def measure(part: pd.DataFrame, prefix: str, version: str, role: str) -> None:
        y = part[LABEL]
        pred = pd.DataFrame(
            {"prediction": part[f"{prefix}_prediction"].astype(str)}, index=part.index
        )
        classes = None
        if task != "regression":
            cols = sorted(c for c in part.columns if c.startswith(f"{prefix}_proba_"))
            classes = [c.removeprefix(f"{prefix}_proba_") for c in cols]
            for c, name in zip(cols, classes, strict=True):
                pred[f"proba_{name}"] = part[c].to_numpy()
        else:
            y = pd.to_numeric(y, errors="coerce")
            pred["prediction"] = pd.to_numeric(pred["prediction"], errors="coerce")
        try:
            metrics = compute_metrics(task, y.astype(str) if classes else y, pred, classes)
        except (ValueError, KeyError, TypeError):
            metrics = {}
        out.append(
            {
                "version": version,
                "role": role,
                "labelled_rows": len(part),
                **{k: round(float(v), 4) for k, v in metrics.items()},
            }
        )

    has_shadow = "shadow_version" in labelled.columns
    for version, part in labelled.groupby(labelled["served_version"].astype(str)):
        if has_shadow and part["shadow_version"].notna().any():
            both = part[part["shadow_version"].notna()]
            for shadow, sub in both.groupby(both["shadow_version"].astype(str)):
                measure(sub, "served", str(version), f"served, beside shadow v{shadow}")
                measure(sub, "shadow", shadow, f"shadow of v{version}")
            rest = part[part["shadow_version"].isna()]
            if len(rest):
                measure(rest, "served", str(version), "served")
        else:
            measure(part, "served", str(version), "served")
    return pd.DataFrame(out)
