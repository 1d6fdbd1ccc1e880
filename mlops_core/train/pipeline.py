"""One training pass: window → checks → search → hold-out metrics → champion on the same rows →
package → smoke test → gate → register (pending, rejected, or champion in auto mode).

The CLI (`mlops train`), the Prefect train flow and the backtester all call
:func:`train_and_register`; nothing is registered unless every step before it succeeded.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mlops_core
from mlops_core.config import Settings
from mlops_core.errors import MlopsError
from mlops_core.monitor.detectors import error_stream
from mlops_core.monitor.reports import performance_report
from mlops_core.registry.registry import Registry, SmokeTest, VersionInfo, file_sha256
from mlops_core.serve.prediction_log import LABEL, read_log
from mlops_core.store import MetadataStore
from mlops_core.train.evaluation import (
    GateResult,
    compute_metrics,
    decide_gate,
    fit_calibration,
    slice_metrics,
)
from mlops_core.train.fit import (
    NothingNewError,
    SearchResult,
    TrainingData,
    TrainingInputError,
    WindowChoice,
    check_training_input,
    choose_window,
    default_params,
    detect_leaks,
    feature_spec,
    load_training_data,
    refit,
    search,
    time_split,
    to_plain,
)
from mlops_core.train.online import OnlineBooster

log = logging.getLogger(__name__)


@dataclass
class TrainingOutcome:
    version: str | None
    status: str
    trigger: str
    gate: GateResult
    metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    run_id: str
    rows: int
    window: tuple[str | None, str | None]
    batches: int
    best_params: dict[str, Any]
    trials: int
    seconds: dict[str, float] = field(default_factory=dict)
    promotion: dict[str, Any] | None = None
    requested_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "trigger": self.trigger,
            "gate": self.gate.to_dict(),
            "metrics": self.metrics,
            "champion_version": self.champion_version,
            "champion_metrics": self.champion_metrics,
            "run_id": self.run_id,
            "rows": self.rows,
            "window": list(self.window),
            "batches": self.batches,
            "best_params": self.best_params,
            "trials": self.trials,
            "seconds": self.seconds,
            "promotion": self.promotion,
            "requested_by": self.requested_by,
        }


def config_hash(settings: Settings) -> str:
    payload = settings.model_dump_json(exclude={"config_path"})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def code_version() -> str:
    here = Path(mlops_core.__file__).parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        sha = ""
    return f"mlops-ct {mlops_core.__version__}" + (f" ({sha})" if sha else "")


def _model_card(
    *,
    name: str,
    version_hint: str,
    trigger: str,
    spec: dict[str, Any],
    kind: str,
    rows: int,
    window: tuple[str | None, str | None],
    batches: int,
    metrics: dict[str, float],
    champion: str | None,
    champion_metrics: dict[str, float] | None,
    gate: GateResult,
    params: dict[str, Any],
    sha: str,
    importances: dict[str, float],
) -> str:
    lines = [
        f"# Model card: {name} ({version_hint})",
        "",
        f"- Model: {kind} for a {spec['task']} task",
        f"- Trigger: {trigger}",
        f"- Data window: {window[0]} → {window[1]} ({rows:,} labelled rows from {batches} "
        "batches; lineage in `lineage/lineage.json`)",
        f"- Model file sha256: `{sha}`",
        f"- Code: {code_version()}",
        "",
        "## Hold-out metrics (latest rows, unseen in training)",
        "",
        "| metric | this model | champion" + (f" v{champion}" if champion else "") + " |",
        "| --- | --- | --- |",
    ]
    for k, v in metrics.items():
        c = champion_metrics.get(k) if champion_metrics else None
        lines.append(f"| {k} | {v:.4f} | {'' if c is None else f'{c:.4f}'} |")
    lines += ["", f"## Gate: {'PASSED' if gate.passed else 'FAILED'}", ""]
    lines += [f"- {r}" for r in gate.reasons]
    lines += ["", "## Features", ""]
    for c in spec["feature_order"]:
        lines.append(f"- `{c}` ({spec['kinds'][c]}): importance {importances.get(c, 0):.3f}")
    lines += [
        "",
        "## Hyper-parameters",
        "",
        "```json",
        json.dumps(params, indent=2, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


def data_fingerprint(lineage: list[dict[str, Any]], since: datetime | None) -> str:
    """What a training run learns from: its batches (by content) and its window's start."""
    text = "\n".join(sorted(f"{b['id']}:{b['sha256']}" for b in lineage))
    return hashlib.sha256(f"{since}\n{text}".encode()).hexdigest()[:32]


def _refuse_copy(reg: Registry, fingerprint: str, config: str) -> None:
    """The newest version learnt from the same data with the same configuration: training
    again would register a copy of it (that passes the gate at +0.0000)."""
    versions = reg.versions()
    newest = versions[-1] if versions else None
    if (
        newest is not None
        and newest.tags.get("data_fingerprint") == fingerprint
        and newest.tags.get("config_hash") == config
    ):
        raise NothingNewError(
            f"no new data: version {newest.version} was trained on the same batches with the "
            "same configuration; ingest new labelled data (or change the configuration) first"
        )


def _trimmed(data: TrainingData, df: pd.DataFrame, tcol: str | None) -> TrainingData:
    """``data`` with its window's start at the first row of ``df`` (its newest part). The
    lineage keeps every batch of the window the model chose from: monitoring and the policy
    read it as the batches this training has seen."""
    if not tcol or tcol not in df.columns or df.empty:
        return replace(data, frame=df)
    return replace(data, frame=df, start=df[tcol].min().to_pydatetime())


def _unseen_by(info: VersionInfo, rows: pd.DataFrame, tcol: str | None) -> pd.Series:
    """Which of ``rows`` are newer than the version's training data (all, without a time)."""
    end = info.data_end
    if not tcol or tcol not in rows.columns or end is None:
        return pd.Series(True, index=rows.index)
    return rows[tcol] > pd.Timestamp(end)


def train_and_register(
    settings: Settings,
    *,
    trigger: str = "manual",
    meta: MetadataStore | None = None,
    registry: Registry | None = None,
    since: datetime | None = None,
    requested_by: str | None = None,
    online: bool = False,
) -> TrainingOutcome:
    """Train a challenger, gate it against the champion and register it. ``since``: train on
    rows from then on only (the policy's decision after a detector located a change);
    ``requested_by``: who asked for this training (a person's retrain request, or ``policy``),
    kept as the version's ``requested_by`` tag, which the four-eyes rule checks.

    ``online``: instead of a search, continue the newest online version (or the champion) on
    the labelled rows it has not learnt (see :func:`_online_update`); the snapshot is then
    evaluated, gated and registered like any training, with ``model_type`` ``online``.

    Raises :class:`TrainingInputError` (nothing registered) when the data cannot make a
    trustworthy model."""
    t_start = time.perf_counter()
    # libraries needed after the search load on the other core meanwhile (the search is native
    # code), and the smoke test's fresh process imports its own. What the search imports is
    # imported first, here, so the two threads never import the same modules at once.
    for name in (
        "xgboost",
        "optuna",
        "sklearn.tree",
        "sklearn.metrics",
        "sklearn.ensemble",
        "sklearn.linear_model",
        "sklearn.compose",
    ):
        importlib.import_module(name)
    warm = threading.Thread(target=_import_late_libraries, daemon=True)
    warm.start()
    smoke = SmokeTest() if settings.gate.smoke_test else None
    try:
        return _train_and_register(
            settings, trigger, meta, registry, smoke, t_start, since, requested_by, online
        )
    finally:
        if smoke is not None:
            smoke.close()


def _import_late_libraries() -> None:
    for name in ("mlflow.pyfunc", "evidently", "evidently.presets"):
        importlib.import_module(name)


@dataclass
class _OnlineBase:
    """The version an online update continues, and its model."""

    version: str
    info: VersionInfo
    model: OnlineBooster


def _online_base(reg: Registry) -> _OnlineBase:
    """The newest online snapshot (not one a person rejected), or the champion when it is
    newer (an approved retrain learnt more)."""
    versions = reg.versions()
    champion = reg.champion()
    # the online model goes on learning from its newest snapshot, also one the gate found
    # no better than the champion (yet); one a person rejected is not continued
    online = [
        v
        for v in versions
        if v.tags.get("model_type") == "online" and not (v.status == "rejected" and v.gate_passed)
    ]
    champ = next((v for v in versions if v.version == champion), None)
    pick = online[-1] if online else champ
    if online and champ is not None and int(champ.version) > int(online[-1].version):
        pick = champ
    if pick is None:
        raise TrainingInputError(
            "online learning continues the champion: train and approve a "
            "first version (`mlops train`, `mlops approve`)"
        )
    with tempfile.TemporaryDirectory(prefix="mlops-online-") as tmp:
        folder = reg.download(pick.version, Path(tmp))
        reg.verify_package(pick.version, folder)
        try:
            model = OnlineBooster.from_package(folder)
        except ValueError as e:
            raise TrainingInputError(f"cannot continue version {pick.version}: {e}") from None
    return _OnlineBase(pick.version, pick, model)


def _online_update(
    settings: Settings,
    base: _OnlineBase,
    df: pd.DataFrame,
    X: pd.DataFrame,
    y: pd.Series,
    ho: slice,
) -> tuple[OnlineBooster, pd.DataFrame, int, datetime | None]:
    """Continue ``base`` on what it has not learnt: the labelled rows of the prediction log
    since its watermark, then the window's rows newer than its data (the hold-out last, after
    it is scored, as a training refits on it). Returns (model, hold-out predictions, rows
    learnt, the log's new watermark)."""
    tcol = settings.data.time_column
    model = base.model
    since = base.info.tags.get("online_log_until")
    log_rows = read_log(
        settings.workspace, since=datetime.fromisoformat(since) if since else base.info.created
    )
    labelled = log_rows[log_rows[LABEL].notna()] if len(log_rows) else log_rows
    # the log is read up to here, whatever is learnt from it below
    until = labelled["served_at"].max() if len(labelled) else None
    new = _unseen_by(base.info, df, tcol).to_numpy()
    idc = settings.data.id_column
    if len(labelled) and idc and idc in df.columns:
        # a row labelled through /feedback that is also in a labelled batch is learnt from
        # the batch (now if the batch is new, else it was learnt before)
        in_batches = set(df[idc].astype(str))
        labelled = labelled[~labelled["served_row_id"].astype(str).isin(in_batches)]
    held = np.zeros(len(df), dtype=bool)
    held[ho] = True
    learnt = len(labelled) + int(new.sum())
    if learnt < settings.online.min_rows:
        raise NothingNewError(
            f"no new labels to learn: {learnt} labelled row(s) since version {base.version} "
            f"learnt its data (online.min_rows is {settings.online.min_rows})"
        )
    if len(labelled):
        model.learn(labelled[model.spec["feature_order"]], labelled[LABEL])
    if (new & ~held).any():
        model.learn(X[new & ~held], y[new & ~held])
    pred_ho = model.predict_frame(X.iloc[ho])
    if (new & held).any():
        model.learn(X[new & held], y[new & held])
    return (
        model,
        pred_ho,
        learnt,
        (
            pd.Timestamp(until).to_pydatetime()
            if until is not None
            else (datetime.fromisoformat(since) if since else None)
        ),
    )


def _search_and_refit(
    settings: Settings,
    df: pd.DataFrame,
    X: pd.DataFrame,
    y: pd.Series,
    data: TrainingData,
    spec: dict[str, Any],
    tr: slice,
    va: slice,
    ho: slice,
    t0: float,
) -> tuple[Any, ...]:
    """The window (all of it, or its newest half or quarter, whichever predicts the validation
    rows best: after a change, the old concept's rows hurt), the search on it, the hold-out
    metrics, and the model refit on the whole chosen window."""
    mcfg, gcfg, task = settings.model, settings.gate, settings.task
    target = settings.data.target
    classes = spec.get("classes")
    chosen = choose_window(
        mcfg.type,
        task,
        spec,
        default_params(mcfg.type, task) | mcfg.params,
        X.iloc[tr],
        y.iloc[tr],
        X.iloc[va],
        y.iloc[va],
        min_rows=mcfg.window.min_rows,
        choose=mcfg.window.choose,
        seed=mcfg.seed,
    )
    window_rows = len(df)
    if chosen.start:
        df = df.iloc[chosen.start :].reset_index(drop=True)
        X, y = df[spec["feature_order"]], df[target]
        data = _trimmed(data, df, settings.data.time_column)
        tr, va, ho = (
            slice(0, tr.stop - chosen.start),
            slice(va.start - chosen.start, va.stop - chosen.start),
            slice(ho.start - chosen.start, ho.stop - chosen.start),
        )
    found = search(
        mcfg.type,
        task,
        spec,
        X.iloc[tr],
        y.iloc[tr],
        X.iloc[va],
        y.iloc[va],
        trials=mcfg.search.trials,
        timeout_s=mcfg.search.timeout_s,
        seed=mcfg.seed,
        fixed=mcfg.params,
    )
    t_search = time.perf_counter() - t0
    X_ho, y_ho = X.iloc[ho], y.iloc[ho]
    pred_ho = found.model.predict_frame(X_ho)
    metrics = compute_metrics(task, y_ho, pred_ho, classes)
    slices = slice_metrics(task, df.iloc[ho], y_ho, pred_ho, gcfg.slice_columns, classes)
    # the model that is served learns the hold-out too: refit on the whole window with the
    # search's hyper-parameters (XGBoost: the number of trees early stopping chose). The
    # hold-out metrics above are the fair estimate of it.
    model = refit(found.model, X, y, mcfg.seed)
    return (
        found,
        chosen,
        model,
        df,
        X,
        y,
        data,
        tr,
        va,
        ho,
        window_rows,
        t_search,
        X_ho,
        y_ho,
        pred_ho,
        metrics,
        slices,
    )


def _train_and_register(
    settings: Settings,
    trigger: str,
    meta: MetadataStore | None,
    registry: Registry | None,
    smoke: SmokeTest | None,
    t_start: float,
    since: datetime | None = None,
    requested_by: str | None = None,
    online: bool = False,
) -> TrainingOutcome:
    meta = meta or MetadataStore(settings.db_url)
    mcfg, gcfg, task = settings.model, settings.gate, settings.task
    target = settings.data.target
    data = load_training_data(settings, meta, since=since)
    df = data.frame
    y = df[target] if target in df.columns else pd.Series(dtype=float)
    classes = None if task == "regression" else sorted(pd.unique(y.dropna()).tolist())
    spec = feature_spec(settings, df, mcfg.type, classes)
    reg = registry or Registry(settings, meta)
    base = _online_base(reg) if online else None
    if base is not None:  # the features as the continued model reads them
        spec = base.model.spec
        classes = spec.get("classes")
    X = df[spec["feature_order"]]
    check_training_input(X, y, task, mcfg.min_rows)
    leaks = detect_leaks(X, y, spec, task, mcfg.leak_threshold, seed=mcfg.seed)
    if leaks:
        raise TrainingInputError(
            "cannot train: feature(s) predict the target almost perfectly on their own, which "
            "usually means they are derived from it or recorded after it: "
            + ", ".join(f"{c} (score {s})" for c, s in leaks)
            + "; remove them from data.features"
        )
    reg.ensure_registered_model()
    reg.end_dead_runs()  # runs of trainings killed before this one: never left RUNNING
    fingerprint, config = data_fingerprint(data.lineage, since), config_hash(settings)
    if base is not None:
        fingerprint = f"{fingerprint[:24]}-online-v{base.version}"
    _refuse_copy(reg, fingerprint, config)
    tr, va, ho = time_split(len(df), mcfg.holdout, mcfg.validation)
    if task != "regression" and y.iloc[tr].nunique() < 2:
        raise TrainingInputError("cannot train: the training part of the window has one class")
    t0 = time.perf_counter()
    log_until: datetime | None = None
    if base is not None:
        model, pred_ho, learnt, log_until = _online_update(settings, base, df, X, y, ho)
        X_ho, y_ho = X.iloc[ho], y.iloc[ho]
        # an OnlineBooster predicts, saves and describes itself as a TrainedModel does
        found = SearchResult(
            model,  # type: ignore[arg-type]
            {
                "online_base": base.version,
                "rows_learnt": learnt,
                **model.params,
            },
            float("nan"),
            0,
            time.perf_counter() - t0,
        )
        chosen = WindowChoice(0, model, float("nan"), {})  # type: ignore[arg-type]
        t_search = time.perf_counter() - t0
        metrics = compute_metrics(task, y_ho, pred_ho, classes)
        slices = slice_metrics(task, df.iloc[ho], y_ho, pred_ho, gcfg.slice_columns, classes)
        window_rows = len(df)
    else:
        (
            found,
            chosen,
            model,
            df,
            X,
            y,
            data,
            tr,
            va,
            ho,
            window_rows,
            t_search,
            X_ho,
            y_ho,
            pred_ho,
            metrics,
            slices,
        ) = _search_and_refit(settings, df, X, y, data, spec, tr, va, ho, t0)

    champion = reg.champion()
    champ_metrics = champ_slices = None
    champ_pred = champ_y = None
    compared: dict[str, float] | None = None
    compared_rows: int | None = None
    comparable = True
    if champion:
        # compared on the newest rows the champion has not trained on (it learnt its whole
        # window, so on older rows it would be judged on its own training data)
        new_rows = _unseen_by(reg.version(champion), df.iloc[ho], settings.data.time_column)
        cmp = df.iloc[ho][new_rows]
        compared_rows = len(cmp) if len(cmp) < len(X_ho) else None
        comparable = len(cmp) >= min(settings.monitoring.min_rows, len(X_ho))
        try:
            if comparable:
                champ_pred, champ_y = reg.predict(champion, cmp), cmp[target]
                champ_metrics = compute_metrics(task, cmp[target], champ_pred, classes)
                champ_slices = slice_metrics(
                    task, cmp, cmp[target], champ_pred, gcfg.slice_columns, classes
                )
                if compared_rows:
                    mine = pred_ho[new_rows.to_numpy()]
                    compared = compute_metrics(task, cmp[target], mine, classes)
                    slices = slice_metrics(
                        task, cmp, cmp[target], mine, gcfg.slice_columns, classes
                    )
        except (MlopsError, KeyError, ValueError, TypeError) as e:
            # the champion may not read today's schema: the gate then has no comparison
            log.warning("champion v%s could not score the hold-out: %s", champion, e)
            champ_pred = champ_metrics = champ_slices = None

    with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
        root = Path(tmp)
        artifacts = model.save(root / "model")
        sha = file_sha256(artifacts["model"])
        importances = model.feature_importances()
        ref_rows = df.iloc[: ho.start]
        ref = ref_rows.sample(
            min(len(ref_rows), mcfg.reference_rows), random_state=mcfg.seed
        ).sort_index()
        (root / "reference").mkdir()
        ref.to_parquet(root / "reference" / "reference.parquet", index=False)
        (root / "lineage").mkdir()
        (root / "lineage" / "lineage.json").write_text(
            json.dumps(
                {
                    "batches": data.lineage,
                    "rows": len(df),
                    "start": str(data.start),
                    "end": str(data.end),
                    "dropped_unlabelled": data.dropped_unlabelled,
                    "skipped_batches": data.skipped,
                },
                indent=2,
            )
        )
        (root / "training").mkdir()
        (root / "training" / "feature_importance.json").write_text(
            json.dumps(importances, indent=2)
        )
        (root / "training" / "search.json").write_text(
            json.dumps(found.history, indent=1, default=str)
        )
        # the baseline monitoring judges a later rise of the error against (where it rose)
        np.save(
            root / "training" / "holdout_errors.npy",
            error_stream(task, y_ho, pred_ho["prediction"]),
        )
        # what the label-free estimate learns from the hold-out: calibration and its spread
        if classes is not None:
            cal = fit_calibration(
                task,
                pred_ho[[f"proba_{c}" for c in classes]].to_numpy(),
                pd.Categorical(y_ho, categories=classes).codes,
                seed=mcfg.seed,
            )
            if cal is not None:
                (root / "training" / "calibration.json").write_text(json.dumps(cal.to_dict()))
        example = to_plain(X_ho.head(5)).astype(  # numbers as float: missing values allowed
            {c: "float64" for c, k in spec["kinds"].items() if k == "numeric"}
        )
        kind = "online" if base is not None else mcfg.type
        params = {
            "model_type": kind,
            "task": task,
            "trigger": trigger,
            "rows": len(df),
            "train_rows": tr.stop - tr.start,
            "validation_rows": va.stop - va.start,
            "holdout_rows": ho.stop - ho.start,
            "window_start": str(data.start),
            "window_end": str(data.end),
            "batches": len(data.lineage),
            "search_trials": found.trials,
            "window_choice": json.dumps({str(k): round(v, 5) for k, v in chosen.scores.items()}),
            "window_start_row": chosen.start,
            **{f"hp_{k}": v for k, v in found.best_params.items()},
        }
        tags = {
            "trigger": trigger,
            "config_hash": config,
            "code_version": code_version(),
            "model_sha256": sha,
            "lineage_batches": ",".join(b["id"] for b in data.lineage)[:5000],
            "data_fingerprint": fingerprint,
        } | (
            {"requested_by": requested_by.strip()[:200]}
            if requested_by and requested_by.strip()
            else {}
        )
        t1 = time.perf_counter()
        run_id, model_uri = reg.log_candidate(
            model_dir=root / "model",
            artifacts=artifacts,
            run_name=f"train-{trigger.split(',')[0][:30]}-{time.strftime('%Y%m%d-%H%M%S')}",
            params=params,
            metrics={f"holdout_{k}": v for k, v in metrics.items()}
            | {"validation_score": found.best_score, "search_seconds": found.seconds},
            tags=tags,
            files={
                "lineage": root / "lineage",
                "reference": root / "reference",
                "training": root / "training",
            },
            input_example=example,
            signature_output=model.predict_frame(example),
        )
        t_log = time.perf_counter() - t1
        if smoke is not None:  # it loads and predicts while the evidence is computed here
            smoke.submit(model_uri, example, reg.uri)
        evidence = root / "evidence"
        evidence.mkdir()
        try:
            performance_report(
                task,
                y_ho,
                pred_ho,
                evidence,
                classes=classes,
                y_reference=champ_y if champ_pred is not None else None,
                pred_reference=champ_pred,
                name="performance",
            )
        except (ValueError, TypeError, KeyError) as e:  # evidence is best effort
            log.warning("Evidently performance report failed: %s", e)
        t2 = time.perf_counter()
        smoke_ok: bool | None = None
        smoke_detail = ""
        if smoke is not None:
            smoke_ok, smoke_detail, preds = smoke.result()
            expected = [str(v) for v in model.predict_frame(example)["prediction"]]
            if smoke_ok and task != "regression" and preds != expected:
                smoke_ok, smoke_detail = False, "predictions differ from the trained model's"
        t_smoke = time.perf_counter() - t2
        gate = decide_gate(
            task=task,
            challenger=metrics,
            champion=champ_metrics,
            challenger_slices=slices,
            champion_slices=champ_slices,
            smoke_ok=smoke_ok,
            smoke_detail=smoke_detail,
            metric=gcfg.metric,
            min_score=gcfg.min_score,
            min_improvement=gcfg.min_improvement,
            max_slice_regression=gcfg.max_slice_regression,
            compared=compared,
            compared_rows=compared_rows,
            comparable=comparable,
        )
        (evidence / "comparison.json").write_text(
            json.dumps(
                {
                    "metric": gate.metric,
                    "challenger": metrics,
                    "champion": champ_metrics,
                    "champion_version": champion,
                    "slices": {"challenger": slices, "champion": champ_slices},
                    "gate": gate.to_dict(),
                    "holdout_rows": ho.stop - ho.start,
                },
                indent=2,
                default=str,
            )
        )
        card = root / "card"
        card.mkdir()
        card_text = _model_card(
            name=reg.name,
            version_hint=f"run {run_id[:8]}",
            trigger=trigger,
            spec=spec,
            kind=kind,
            rows=len(df),
            window=(str(data.start), str(data.end)),
            batches=len(data.lineage),
            metrics=metrics,
            champion=champion,
            champion_metrics=champ_metrics,
            gate=gate,
            params=found.best_params,
            sha=sha,
            importances=importances,
        )
        (card / "model_card.md").write_text(card_text)
        reg.log_run_files(run_id, {"evidence": evidence, "card": card})

    if base is not None:
        tags |= {
            "online_base": base.version,
            "online_rows_learnt": str(found.best_params["rows_learnt"]),
        } | ({"online_log_until": log_until.isoformat()} if log_until else {})
    status = "pending_approval" if gate.passed else "rejected"
    # the whole package as stored (code, spec, MLmodel, environment, model): what promotion
    # and serving verify before they use it
    tags["package_sha256"] = reg.package_hash(model_uri)
    version = reg.register(
        model_uri,
        run_id,
        tags
        | {
            "status": status,
            "gate_passed": str(gate.passed).lower(),
            "gate_reasons": json.dumps(gate.reasons)[:5000],
            "metrics": json.dumps(metrics),
            "model_type": kind,
            "rows": str(len(df)),
            "window_rows": str(window_rows),
            "data_window": f"{data.start} → {data.end}",
        }
        | ({"data_end": data.end.isoformat()} if data.end else {})
        | ({"change_at": since.isoformat()} if since else {}),
        description=card_text,
    )
    promotion = None
    if gate.passed:
        if settings.promotion.mode == "auto":
            promotion = reg.auto_promote(
                version, comment="auto: the gate passed: " + "; ".join(gate.reasons)
            ).to_dict()
            if promotion["outcome"] == "applied":
                status = "approved"
            else:  # refused (e.g. the champion changed meanwhile): it awaits a person
                reg.set_challenger(version)
        else:
            reg.set_challenger(version)
    else:
        reg.record_gate_rejection(version, champion, gate.failed, run_id)
    if base is not None and gate.passed:
        reg.supersede_online(version)
    total = time.perf_counter() - t_start
    return TrainingOutcome(
        version=version,
        status=status,
        trigger=trigger,
        gate=gate,
        metrics=metrics,
        champion_version=champion,
        champion_metrics=champ_metrics,
        run_id=run_id,
        rows=len(df),
        window=(str(data.start), str(data.end)),
        batches=len(data.lineage),
        best_params=found.best_params,
        trials=found.trials,
        seconds={"total": total, "search": t_search, "log": t_log, "smoke": t_smoke},
        promotion=promotion,
        requested_by=tags.get("requested_by"),
    )
