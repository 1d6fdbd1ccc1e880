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
from collections.abc import Callable
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

Progress = Callable[[str], None]
"""Told a short phrase as each step of a training starts ("searching hyper-parameters (20
trials)", "smoke test..."): the CLI shows it; the library prints nothing itself."""


def _quiet(_phrase: str) -> None:
    """The progress of a training nobody watches."""


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
    return replace(data, frame=df, start=df[tcol].min().floor("us").to_pydatetime())


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
    progress: Progress | None = None,
) -> TrainingOutcome:
    """Train a challenger, gate it against the champion and register it. ``since``: train on
    rows from then on only (the policy's decision after a detector located a change);
    ``requested_by``: who asked for this training (a person's retrain request, or ``policy``),
    kept as the version's ``requested_by`` tag, which the four-eyes rule checks.

    ``online``: instead of a search, continue the newest online version (or the champion) on
    the labelled rows it has not learnt (see :func:`_online_update`); the snapshot is then
    evaluated, gated and registered like any training, with ``model_type`` ``online``.

    ``progress``: called with a short phrase as each step starts (:data:`Progress`).

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
            settings,
            trigger,
            meta,
            registry,
            smoke,
            t_start,
            since,
            requested_by,
            online,
            progress or _quiet,
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


@dataclass
class _Inputs:
    """The training window and what is read off it before any fitting."""

    data: TrainingData
    spec: dict[str, Any]
    classes: list[Any] | None
    base: _OnlineBase | None  # the online version to continue (online training only)
    fingerprint: str
    config: str


@dataclass
class _Fit:
    """A fitted model on its (possibly trimmed) window, with its hold-out predictions."""

    found: SearchResult
    chosen: WindowChoice
    model: Any
    df: pd.DataFrame
    X: pd.DataFrame
    data: TrainingData
    tr: slice
    va: slice
    ho: slice
    window_rows: int
    seconds: float
    pred_ho: pd.DataFrame
    metrics: dict[str, float]
    slices: dict[str, Any]
    log_until: datetime | None = None  # an online update: the prediction log learnt up to
    # rows of the training, validation and hold-out parts, when ``df`` stands for a window it
    # does not hold (a Dask training: a reference sample and the hold-out)
    split_rows: tuple[int, int, int] | None = None

    @property
    def rows(self) -> int:
        """Rows of the (chosen) window the model learnt from."""
        return sum(self.split_rows) if self.split_rows else len(self.df)

    @property
    def parts(self) -> tuple[int, int, int]:
        """Rows of the training, validation and hold-out parts."""
        if self.split_rows:
            return self.split_rows
        tr, va, ho = self.tr, self.va, self.ho
        return (tr.stop - tr.start, va.stop - va.start, ho.stop - ho.start)

    @property
    def X_ho(self) -> pd.DataFrame:
        return self.X.iloc[self.ho]

    def y(self, target: str) -> pd.Series:
        return self.df[target]


@dataclass
class _Comparison:
    """The champion on the same recent hold-out rows (nothing when there is no champion, or
    it cannot read today's rows)."""

    champion: str | None = None
    metrics: dict[str, float] | None = None
    slices: dict[str, Any] | None = None
    pred: pd.DataFrame | None = None
    y: pd.Series | None = None
    compared: dict[str, float] | None = None  # the challenger on the champion's unseen rows
    compared_rows: int | None = None
    comparable: bool = True


def _read_inputs(
    settings: Settings,
    meta: MetadataStore,
    reg: Registry,
    since: datetime | None,
    online: bool,
    say: Progress = _quiet,
) -> _Inputs:
    """The window, its feature spec and the checks that refuse it before any fitting."""
    mcfg, task, target = settings.model, settings.task, settings.data.target
    say("reading the training window")
    data = load_training_data(settings, meta, since=since)
    df = data.frame
    say(f"checking the window ({len(df):,} rows from {len(data.lineage)} batches)")
    y = df[target] if target in df.columns else pd.Series(dtype=float)
    classes = None if task == "regression" else sorted(pd.unique(y.dropna()).tolist())
    spec = feature_spec(settings, df, mcfg.type, classes)
    base = _online_base(reg) if online else None
    if base is not None:  # the features as the continued model reads them
        spec = base.model.spec
        classes = spec.get("classes")
    X = df[spec["feature_order"]]
    check_training_input(X, y, task, mcfg.min_rows)
    say("looking for features that leak the target")
    _refuse_leaks(detect_leaks(X, y, spec, task, mcfg.leak_threshold, seed=mcfg.seed))
    fingerprint, config = _open_registry(settings, reg, data, since, base, say)
    return _Inputs(data, spec, classes, base, fingerprint, config)


def _open_registry(
    settings: Settings,
    reg: Registry,
    data: TrainingData,
    since: datetime | None,
    base: _OnlineBase | None,
    say: Progress,
) -> tuple[str, str]:
    """The registered model made sure of, dead runs ended, and a copy of the newest version
    refused. Returns (data fingerprint, config hash)."""
    say("opening the registry (MLflow)")
    reg.ensure_registered_model()
    reg.end_dead_runs()  # runs of trainings killed before this one: never left RUNNING
    fingerprint, config = data_fingerprint(data.lineage, since), config_hash(settings)
    if base is not None:
        fingerprint = f"{fingerprint[:24]}-online-v{base.version}"
    _refuse_copy(reg, fingerprint, config)
    return fingerprint, config


def _on_dask(
    settings: Settings, meta: MetadataStore, reg: Registry, since: datetime | None, say: Progress
) -> tuple[_Inputs, _Fit]:
    """:func:`_read_inputs` and :func:`_fit` on the Dask cluster (``model.engine: dask``,
    :mod:`mlops_core.train.distributed`): the same checks and window choice, then the
    search's trials in parallel and XGBoost trained across the workers."""
    from mlops_core.ops.cluster import dask_client
    from mlops_core.train import distributed

    with dask_client(settings) as client:
        say("reading the training window (Dask)")
        window = distributed.read_window(settings, client, meta, since)
        inputs = _dask_inputs(settings, reg, window, since, say)
        done = distributed.train(settings, client, window, inputs.spec, say)
    df, ho = done.frame, done.holdout
    X = df[inputs.spec["feature_order"]]
    pred_ho = done.found.model.predict_frame(X.iloc[ho])
    metrics, slices = _holdout_scores(settings, df, ho, pred_ho, inputs.classes)
    data = replace(inputs.data, frame=df)
    tcol = settings.data.time_column
    if done.choice.start and tcol in window.data.frame:  # a window cut to its newest part
        first = window.data.frame[tcol].iloc[done.choice.start]
        data.start = first.floor("us").to_pydatetime()
    return inputs, _Fit(
        done.found,
        done.choice,
        done.model,
        df,
        X,
        data,
        slice(0, 0),
        slice(0, 0),
        ho,
        window.rows,
        done.found.seconds,
        pred_ho,
        metrics,
        slices,
        split_rows=done.split_rows,
    )


def _dask_inputs(
    settings: Settings,
    reg: Registry,
    window: Any,
    since: datetime | None,
    say: Progress,
) -> _Inputs:
    """:func:`_read_inputs`'s checks on a window on the cluster: the classes and the row
    count from its target column, the categories computed per partition, the leak check on a
    sample of 20,000 rows (the local check samples as many)."""
    from mlops_core.train import distributed

    mcfg, task, data = settings.model, settings.task, window.data
    say(f"checking the window ({window.rows:,} rows from {len(data.lineage)} batches)")
    y = data.frame[window.target]
    classes = None if task == "regression" else sorted(pd.unique(y.dropna()).tolist())
    # the features as the local path infers them: not the window-position column
    spec = feature_spec(settings, window.meta.drop(columns=[distributed.POS]), mcfg.type, classes)
    spec["categories"] = distributed.categories(window, spec["kinds"])
    feats = spec["feature_order"]
    check_training_input(window.meta[feats], y, task, mcfg.min_rows)
    say("looking for features that leak the target")
    sample = window.sample(20_000, mcfg.seed)
    _refuse_leaks(
        detect_leaks(
            sample[feats], sample[window.target], spec, task, mcfg.leak_threshold, seed=mcfg.seed
        )
    )
    fingerprint, config = _open_registry(settings, reg, data, since, None, say)
    return _Inputs(data, spec, classes, None, fingerprint, config)


def _refuse_leaks(leaks: list[tuple[str, float]]) -> None:
    if leaks:
        raise TrainingInputError(
            "cannot train: feature(s) predict the target almost perfectly on their own, which "
            "usually means they are derived from it or recorded after it: "
            + ", ".join(f"{c} (score {s})" for c, s in leaks)
            + "; remove them from data.features"
        )


def _fit(settings: Settings, inputs: _Inputs, say: Progress = _quiet) -> _Fit:
    """Split the window in time, then fit: an online update of ``inputs.base``, or the
    search and refit."""
    mcfg, task, target = settings.model, settings.task, settings.data.target
    df = inputs.data.frame
    X, y = df[inputs.spec["feature_order"]], df[target]
    tr, va, ho = time_split(len(df), mcfg.holdout, mcfg.validation)
    if task != "regression" and y.iloc[tr].nunique() < 2:
        raise TrainingInputError("cannot train: the training part of the window has one class")
    if inputs.base is not None:
        say(f"learning the new labels (continuing v{inputs.base.version})")
        return _online_fit(settings, inputs, X, y, (tr, va, ho))
    return _search_and_refit(settings, inputs, X, y, (tr, va, ho), say)


def _holdout_scores(
    settings: Settings, df: pd.DataFrame, ho: slice, pred_ho: pd.DataFrame, classes: Any
) -> tuple[dict[str, float], dict[str, Any]]:
    task, y_ho = settings.task, df[settings.data.target].iloc[ho]
    metrics = compute_metrics(task, y_ho, pred_ho, classes)
    slices = slice_metrics(task, df.iloc[ho], y_ho, pred_ho, settings.gate.slice_columns, classes)
    return metrics, slices


def _online_fit(
    settings: Settings,
    inputs: _Inputs,
    X: pd.DataFrame,
    y: pd.Series,
    split: tuple[slice, slice, slice],
) -> _Fit:
    """Continue the online base on the rows it has not learnt (:func:`_online_update`)."""
    assert inputs.base is not None
    t0 = time.perf_counter()
    df, (tr, va, ho) = inputs.data.frame, split
    model, pred_ho, learnt, log_until = _online_update(settings, inputs.base, df, X, y, ho)
    params = {"online_base": inputs.base.version, "rows_learnt": learnt, **model.params}
    # an OnlineBooster predicts, saves and describes itself as a TrainedModel does
    found = SearchResult(model, params, float("nan"), 0, time.perf_counter() - t0)  # type: ignore[arg-type]
    chosen = WindowChoice(0, model, float("nan"), {})  # type: ignore[arg-type]
    metrics, slices = _holdout_scores(settings, df, ho, pred_ho, inputs.classes)
    seconds = time.perf_counter() - t0
    data, rows = inputs.data, len(df)
    return _Fit(
        found,
        chosen,
        model,
        df,
        X,
        data,
        tr,
        va,
        ho,
        rows,
        seconds,
        pred_ho,
        metrics,
        slices,
        log_until,
    )


def _choose_window(
    settings: Settings,
    inputs: _Inputs,
    X: pd.DataFrame,
    y: pd.Series,
    split: tuple[slice, slice, slice],
) -> tuple[WindowChoice, TrainingData, tuple[slice, slice, slice]]:
    """The window: all of it, or its newest half or quarter, whichever predicts the validation
    rows best (after a change, the old concept's rows hurt); the data and the split trimmed to
    it."""
    mcfg, (tr, va, ho) = settings.model, split
    chosen = choose_window(
        mcfg.type,
        settings.task,
        inputs.spec,
        default_params(mcfg.type, settings.task) | mcfg.params,
        X.iloc[tr],
        y.iloc[tr],
        X.iloc[va],
        y.iloc[va],
        min_rows=mcfg.window.min_rows,
        choose=mcfg.window.choose,
        seed=mcfg.seed,
    )
    if not chosen.start:
        return chosen, inputs.data, split
    s = chosen.start
    df = inputs.data.frame.iloc[s:].reset_index(drop=True)
    data = _trimmed(inputs.data, df, settings.data.time_column)
    return (
        chosen,
        data,
        (slice(0, tr.stop - s), slice(va.start - s, va.stop - s), slice(ho.start - s, ho.stop - s)),
    )


def _search_and_refit(
    settings: Settings,
    inputs: _Inputs,
    X: pd.DataFrame,
    y: pd.Series,
    split: tuple[slice, slice, slice],
    say: Progress = _quiet,
) -> _Fit:
    """The window (:func:`_choose_window`), the search on it, the hold-out metrics, and the
    model refit on the whole chosen window."""
    mcfg, spec = settings.model, inputs.spec
    t0 = time.perf_counter()
    say("choosing the training window")
    chosen, data, (tr, va, ho) = _choose_window(settings, inputs, X, y, split)
    df = data.frame
    X, y = df[spec["feature_order"]], df[settings.data.target]
    say(f"searching hyper-parameters ({mcfg.search.trials} trials, {len(X):,} rows)")
    found = search(
        mcfg.type,
        settings.task,
        spec,
        X.iloc[tr],
        y.iloc[tr],
        X.iloc[va],
        y.iloc[va],
        trials=mcfg.search.trials,
        timeout_s=mcfg.search.timeout_s,
        seed=mcfg.seed,
        fixed=mcfg.params,
        progress=lambda detail: say(f"searching hyper-parameters: {detail}"),
    )
    seconds = time.perf_counter() - t0
    pred_ho = found.model.predict_frame(X.iloc[ho])
    metrics, slices = _holdout_scores(settings, df, ho, pred_ho, inputs.classes)
    # the model that is served learns the hold-out too: refit on the whole window with the
    # search's hyper-parameters (XGBoost: the number of trees early stopping chose). The
    # hold-out metrics above are the fair estimate of it.
    say(f"refitting on the whole window ({len(X):,} rows)")
    model = refit(found.model, X, y, mcfg.seed)
    rows = len(inputs.data.frame)
    return _Fit(
        found, chosen, model, df, X, data, tr, va, ho, rows, seconds, pred_ho, metrics, slices
    )


def _compare_with_champion(
    settings: Settings, reg: Registry, fit: _Fit, classes: Any, say: Progress = _quiet
) -> _Comparison:
    """The champion scored on the newest hold-out rows it has not trained on (it learnt its
    whole window, so on older rows it would be judged on its own training data); the
    challenger's metrics and slices on those same rows when they are fewer."""
    champion = reg.champion()
    if not champion:
        return _Comparison()
    task, target, slice_columns = settings.task, settings.data.target, settings.gate.slice_columns
    holdout = fit.df.iloc[fit.ho]
    new_rows = _unseen_by(reg.version(champion), holdout, settings.data.time_column)
    cmp = holdout[new_rows]
    out = _Comparison(
        champion,
        compared_rows=len(cmp) if len(cmp) < len(holdout) else None,
        comparable=len(cmp) >= min(settings.monitoring.min_rows, len(holdout)),
    )
    if not out.comparable:
        return out
    say(f"scoring the champion v{champion} on the same {len(cmp):,} rows")
    try:
        out.pred, out.y = reg.predict(champion, cmp), cmp[target]
        out.metrics = compute_metrics(task, cmp[target], out.pred, classes)
        out.slices = slice_metrics(task, cmp, cmp[target], out.pred, slice_columns, classes)
        if out.compared_rows:
            mine = fit.pred_ho[new_rows.to_numpy()]
            out.compared = compute_metrics(task, cmp[target], mine, classes)
            fit.slices = slice_metrics(task, cmp, cmp[target], mine, slice_columns, classes)
    except (MlopsError, KeyError, ValueError, TypeError) as e:
        # the champion may not read today's schema: the gate then has no comparison
        log.warning("champion v%s could not score the hold-out: %s", champion, e)
        out.pred = out.metrics = out.slices = None
    return out


def _write_training_files(
    root: Path, settings: Settings, inputs: _Inputs, fit: _Fit
) -> tuple[dict[str, Path], str, dict[str, float]]:
    """The model's files, the reference sample, the lineage and the training evidence under
    ``root``. Returns (the model's artifacts, the model file's sha256, importances)."""
    mcfg, task, classes = settings.model, settings.task, inputs.classes
    y_ho = fit.df[settings.data.target].iloc[fit.ho]
    artifacts = fit.model.save(root / "model")
    importances = fit.model.feature_importances()
    ref_rows = fit.df.iloc[: fit.ho.start]
    ref = ref_rows.sample(min(len(ref_rows), mcfg.reference_rows), random_state=mcfg.seed)
    for sub in ("reference", "lineage", "training"):
        (root / sub).mkdir()
    ref.sort_index().to_parquet(root / "reference" / "reference.parquet", index=False)
    (root / "lineage" / "lineage.json").write_text(json.dumps(_lineage(fit), indent=2))
    training = root / "training"
    (training / "feature_importance.json").write_text(json.dumps(importances, indent=2))
    (training / "search.json").write_text(json.dumps(fit.found.history, indent=1, default=str))
    # the baseline monitoring judges a later rise of the error against (where it rose)
    errors = error_stream(task, y_ho, fit.pred_ho["prediction"])
    np.save(training / "holdout_errors.npy", errors)
    # what the label-free estimate learns from the hold-out: calibration and its spread
    if classes is not None:
        cal = fit_calibration(
            task,
            fit.pred_ho[[f"proba_{c}" for c in classes]].to_numpy(),
            pd.Categorical(y_ho, categories=classes).codes,
            seed=mcfg.seed,
        )
        if cal is not None:
            (training / "calibration.json").write_text(json.dumps(cal.to_dict()))
    return artifacts, file_sha256(artifacts["model"]), importances


def _lineage(fit: _Fit) -> dict[str, Any]:
    data = fit.data
    return {
        "batches": data.lineage,
        "rows": fit.rows,
        "start": str(data.start),
        "end": str(data.end),
        "dropped_unlabelled": data.dropped_unlabelled,
        "skipped_batches": data.skipped,
    }


def _run_params(settings: Settings, trigger: str, kind: str, fit: _Fit) -> dict[str, Any]:
    found, chosen, data = fit.found, fit.chosen, fit.data
    return {
        "model_type": kind,
        "task": settings.task,
        "trigger": trigger,
        "rows": fit.rows,
        "train_rows": fit.parts[0],
        "validation_rows": fit.parts[1],
        "holdout_rows": fit.parts[2],
        "engine": settings.model.engine,
        "window_start": str(data.start),
        "window_end": str(data.end),
        "batches": len(data.lineage),
        "search_trials": found.trials,
        "window_choice": json.dumps({str(k): round(v, 5) for k, v in chosen.scores.items()}),
        "window_start_row": chosen.start,
        **{f"hp_{k}": v for k, v in found.best_params.items()},
    }


def _run_tags(
    inputs: _Inputs, fit: _Fit, trigger: str, sha: str, requested_by: str | None
) -> dict[str, str]:
    tags = {
        "trigger": trigger,
        "config_hash": inputs.config,
        "code_version": code_version(),
        "model_sha256": sha,
        "lineage_batches": ",".join(b["id"] for b in fit.data.lineage)[:5000],
        "data_fingerprint": inputs.fingerprint,
    }
    if requested_by and requested_by.strip():
        tags["requested_by"] = requested_by.strip()[:200]
    return tags


@dataclass
class _Logged:
    """The logged (not yet registered) run of a training."""

    run_id: str
    model_uri: str
    example: pd.DataFrame
    tags: dict[str, str]
    kind: str
    sha: str
    importances: dict[str, float]
    seconds: float


def _log_run(
    root: Path,
    settings: Settings,
    reg: Registry,
    inputs: _Inputs,
    fit: _Fit,
    trigger: str,
    requested_by: str | None,
) -> _Logged:
    """Write the training's files and log its run with the model (not registered yet)."""
    artifacts, sha, importances = _write_training_files(root, settings, inputs, fit)
    example = to_plain(fit.X_ho.head(5)).astype(  # numbers as float: missing values allowed
        {c: "float64" for c, k in inputs.spec["kinds"].items() if k == "numeric"}
    )
    kind = "online" if inputs.base is not None else settings.model.type
    tags = _run_tags(inputs, fit, trigger, sha, requested_by)
    t1 = time.perf_counter()
    metrics = {f"holdout_{k}": v for k, v in fit.metrics.items()}
    run_id, model_uri = reg.log_candidate(
        model_dir=root / "model",
        artifacts=artifacts,
        run_name=f"train-{trigger.split(',')[0][:30]}-{time.strftime('%Y%m%d-%H%M%S')}",
        params=_run_params(settings, trigger, kind, fit),
        metrics=metrics
        | {"validation_score": fit.found.best_score, "search_seconds": fit.found.seconds},
        tags=tags,
        files={sub: root / sub for sub in ("lineage", "reference", "training")},
        input_example=example,
        signature_output=fit.model.predict_frame(example),
    )
    seconds = time.perf_counter() - t1
    return _Logged(run_id, model_uri, example, tags, kind, sha, importances, seconds)


def _performance_evidence(
    settings: Settings, fit: _Fit, cmp: _Comparison, classes: Any, evidence: Path
) -> None:
    """Evidently's performance report of the challenger (against the champion on its rows),
    best effort."""
    try:
        performance_report(
            settings.task,
            fit.df[settings.data.target].iloc[fit.ho],
            fit.pred_ho,
            evidence,
            classes=classes,
            y_reference=cmp.y if cmp.pred is not None else None,
            pred_reference=cmp.pred,
            name="performance",
        )
    except (ValueError, TypeError, KeyError) as e:  # evidence is best effort
        log.warning("Evidently performance report failed: %s", e)


def _smoke_result(
    smoke: SmokeTest | None, fit: _Fit, logged: _Logged, task: str
) -> tuple[bool | None, str]:
    """The smoke test's verdict: the packaged model loads in a fresh process and predicts
    what the trained model predicts (classes; regressions only need to load)."""
    if smoke is None:
        return None, ""
    ok, detail, preds = smoke.result()
    expected = [str(v) for v in fit.model.predict_frame(logged.example)["prediction"]]
    if ok and task != "regression" and preds != expected:
        return False, "predictions differ from the trained model's"
    return ok, detail


def _gate(
    settings: Settings, fit: _Fit, cmp: _Comparison, smoke: tuple[bool | None, str]
) -> GateResult:
    gcfg = settings.gate
    return decide_gate(
        task=settings.task,
        challenger=fit.metrics,
        champion=cmp.metrics,
        challenger_slices=fit.slices,
        champion_slices=cmp.slices,
        smoke_ok=smoke[0],
        smoke_detail=smoke[1],
        metric=gcfg.metric,
        min_score=gcfg.min_score,
        min_improvement=gcfg.min_improvement,
        max_slice_regression=gcfg.max_slice_regression,
        compared=cmp.compared,
        compared_rows=cmp.compared_rows,
        comparable=cmp.comparable,
    )


def _comparison_json(gate: GateResult, fit: _Fit, cmp: _Comparison) -> str:
    return json.dumps(
        {
            "metric": gate.metric,
            "challenger": fit.metrics,
            "champion": cmp.metrics,
            "champion_version": cmp.champion,
            "slices": {"challenger": fit.slices, "champion": cmp.slices},
            "gate": gate.to_dict(),
            "holdout_rows": fit.ho.stop - fit.ho.start,
        },
        indent=2,
        default=str,
    )


def _card(
    reg: Registry,
    trigger: str,
    inputs: _Inputs,
    fit: _Fit,
    cmp: _Comparison,
    logged: _Logged,
    gate: GateResult,
) -> str:
    return _model_card(
        name=reg.name,
        version_hint=f"run {logged.run_id[:8]}",
        trigger=trigger,
        spec=inputs.spec,
        kind=logged.kind,
        rows=fit.rows,
        window=(str(fit.data.start), str(fit.data.end)),
        batches=len(fit.data.lineage),
        metrics=fit.metrics,
        champion=cmp.champion,
        champion_metrics=cmp.metrics,
        gate=gate,
        params=fit.found.best_params,
        sha=logged.sha,
        importances=logged.importances,
    )


def _version_tags(
    settings: Settings,
    inputs: _Inputs,
    fit: _Fit,
    logged: _Logged,
    gate: GateResult,
    since: datetime | None,
) -> dict[str, str]:
    """Every tag of the new version: the run's, the online base's, the gate's and the data's."""
    data, tags = fit.data, dict(logged.tags)
    if inputs.base is not None:
        tags |= {
            "online_base": inputs.base.version,
            "online_rows_learnt": str(fit.found.best_params["rows_learnt"]),
        }
        if fit.log_until:
            tags["online_log_until"] = fit.log_until.isoformat()
    tags |= {
        "status": "pending_approval" if gate.passed else "rejected",
        "gate_passed": str(gate.passed).lower(),
        "gate_reasons": json.dumps(gate.reasons)[:5000],
        "metrics": json.dumps(fit.metrics),
        "model_type": logged.kind,
        "rows": str(fit.rows),
        "window_rows": str(fit.window_rows),
        "data_window": f"{data.start} → {data.end}",
    }
    if data.end:
        tags["data_end"] = data.end.isoformat()
    if since:
        tags["change_at"] = since.isoformat()
    return tags


def _register(
    settings: Settings,
    reg: Registry,
    inputs: _Inputs,
    logged: _Logged,
    gate: GateResult,
    tags: dict[str, str],
    card: str,
    champion: str | None,
) -> tuple[str, str, dict[str, Any] | None]:
    """Register the version (its whole package hashed first: what promotion and serving
    verify before they use it), then promote it, make it the challenger, or audit the gate's
    refusal. Returns (version, status, the auto-promotion's result)."""
    version = reg.register(
        logged.model_uri,
        logged.run_id,
        {"package_sha256": reg.package_hash(logged.model_uri)} | tags,
        description=card,
    )
    status, promotion = tags["status"], None
    if not gate.passed:
        reg.record_gate_rejection(version, champion, gate.failed, logged.run_id)
    elif settings.promotion.mode == "auto":
        comment = "auto: the gate passed: " + "; ".join(gate.reasons)
        promotion = reg.auto_promote(version, comment=comment).to_dict()
        if promotion["outcome"] == "applied":
            status = "approved"
        else:  # refused (e.g. the champion changed meanwhile): it awaits a person
            reg.set_challenger(version)
    else:
        reg.set_challenger(version)
    if inputs.base is not None and gate.passed:
        reg.supersede_online(version)
    return version, status, promotion


def _judge(
    root: Path,
    settings: Settings,
    reg: Registry,
    inputs: _Inputs,
    fit: _Fit,
    cmp: _Comparison,
    logged: _Logged,
    smoke: SmokeTest | None,
    say: Progress,
) -> tuple[GateResult, str, float]:
    """The evidence, the smoke test's verdict and the gate, logged with the run; returns the
    gate, the model card and the seconds waited for the smoke test."""
    if smoke is not None:  # it loads and predicts while the evidence is computed here
        smoke.submit(logged.model_uri, logged.example, reg.uri)
    evidence, card_dir = root / "evidence", root / "card"
    evidence.mkdir()
    card_dir.mkdir()
    say("writing the evidence (performance report)")
    _performance_evidence(settings, fit, cmp, inputs.classes, evidence)
    t2 = time.perf_counter()
    if smoke is not None:
        say("smoke test: the packaged model in a fresh process")
    smoked = _smoke_result(smoke, fit, logged, settings.task)
    t_smoke = time.perf_counter() - t2
    gate = _gate(settings, fit, cmp, smoked)
    (evidence / "comparison.json").write_text(_comparison_json(gate, fit, cmp))
    card = _card(reg, logged.tags["trigger"], inputs, fit, cmp, logged, gate)
    (card_dir / "model_card.md").write_text(card)
    reg.log_run_files(logged.run_id, {"evidence": evidence, "card": card_dir})
    return gate, card, t_smoke


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
    say: Progress = _quiet,
) -> TrainingOutcome:
    meta = meta or MetadataStore(settings.db_url)
    reg = registry or Registry(settings, meta)
    if settings.model.engine == "dask" and not online:
        inputs, fit = _on_dask(settings, meta, reg, since, say)
    else:
        inputs = _read_inputs(settings, meta, reg, since, online, say)
        fit = _fit(settings, inputs, say)
    cmp = _compare_with_champion(settings, reg, fit, inputs.classes, say)
    with tempfile.TemporaryDirectory(prefix="mlops-train-") as tmp:
        say("logging the run (MLflow)")
        logged = _log_run(Path(tmp), settings, reg, inputs, fit, trigger, requested_by)
        gate, card, t_smoke = _judge(Path(tmp), settings, reg, inputs, fit, cmp, logged, smoke, say)
    tags = _version_tags(settings, inputs, fit, logged, gate, since)
    say("registering the version" + ("" if gate.passed else " (the gate refused it)"))
    version, status, promotion = _register(
        settings, reg, inputs, logged, gate, tags, card, cmp.champion
    )
    seconds = {"total": time.perf_counter() - t_start, "search": fit.seconds, "log": logged.seconds}
    return TrainingOutcome(
        version=version,
        status=status,
        trigger=trigger,
        gate=gate,
        metrics=fit.metrics,
        champion_version=cmp.champion,
        champion_metrics=cmp.metrics,
        run_id=logged.run_id,
        rows=fit.rows,
        window=(str(fit.data.start), str(fit.data.end)),
        batches=len(fit.data.lineage),
        best_params=fit.found.best_params,
        trials=fit.found.trials,
        seconds=seconds | {"smoke": t_smoke},
        promotion=promotion,
        requested_by=logged.tags.get("requested_by"),
    )
