"""Training: the data window, input checks, model pipelines, a time-aware hyper-parameter search.

No MLflow here (the registry module logs and registers); the result of :func:`train_model` is a
:class:`TrainedModel` that can predict, save its artifacts and describe itself.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_core.config import Settings
from mlops_core.data.validation import FLOAT32_MAX
from mlops_core.errors import MlopsError
from mlops_core.store import BatchRecord, BatchStore, MetadataStore
from mlops_core.train.evaluation import HIGHER_IS_BETTER, PRIMARY, compute_metrics
from mlops_core.train.pyfunc.tabular_model import output_frame, prepare_features

log = logging.getLogger(__name__)


class TrainingInputError(MlopsError, ValueError):
    """The training data cannot make a trustworthy model; nothing is registered."""


class NothingNewError(TrainingInputError):
    """The newest version was trained on the same batches with the same configuration: a
    retrain would register a copy of it."""


@dataclass
class TrainingData:
    frame: pd.DataFrame  # labelled rows of the window, in time order
    lineage: list[dict[str, Any]]  # batches used: id, sha256, rows, time range
    start: datetime | None
    end: datetime | None
    dropped_unlabelled: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # batches left out, and why


def load_training_data(
    settings: Settings, meta: MetadataStore | None = None, *, since: datetime | None = None
) -> TrainingData:
    """Accepted, labelled batches of the configured window (newest first until it is full);
    with ``since`` (a change a detector located), only rows from then on, but never fewer than
    ``model.min_rows`` and ``model.window.min_rows`` (fewer would not make a hold-out worth
    trusting)."""
    store = BatchStore(settings.workspace)
    skipped: list[dict[str, str]] = []
    picked = window_batches(settings, labelled_batches(settings, meta), store, skipped=skipped)
    refuse_empty_window(picked, skipped)
    chosen, frames = [r for r, _ in picked], [f for _, f in picked]
    df, dropped = cut_window(settings, pd.concat(frames, ignore_index=True), since)
    return window_data(settings, df, chosen, dropped, skipped)


def labelled_batches(settings: Settings, meta: MetadataStore | None) -> list[BatchRecord]:
    """The accepted batches with labels; none (or no target configured) is an error."""
    meta = meta or MetadataStore(settings.db_url)
    if not settings.data.target:
        raise TrainingInputError("data.target is not set in the configuration")
    recs = [r for r in meta.list_batches("accepted") if r.has_labels]
    if not recs:
        raise TrainingInputError(
            "no accepted batches with labels yet: ingest data first (`mlops ingest`)"
        )
    return recs


def refuse_empty_window(picked: list[Any], skipped: list[dict[str, str]]) -> None:
    if not picked:
        raise TrainingInputError(
            "no usable labelled batch in the window: "
            + "; ".join(f"{s['id']}: {s['reason']}" for s in skipped)
        )


def cut_window(
    settings: Settings, df: pd.DataFrame, since: datetime | None
) -> tuple[pd.DataFrame, int]:
    """The window's labelled rows of the batches' rows ``df``, in time order: the period and
    row limits of ``model.window`` applied, then ``since``. Returns (rows, unlabelled rows
    dropped). Only the target and time columns are read, so the Dask path cuts the same rows
    from those two columns alone."""
    window, target, tcol = settings.model.window, settings.data.target, settings.data.time_column
    if tcol and tcol in df.columns:
        df = df.sort_values(tcol, kind="stable", ignore_index=True)
        if window.period:
            df = df[df[tcol] >= df[tcol].max() - pd.Timedelta(window.period)]
    labelled = df[target].notna()
    if window.rows and labelled.sum() > window.rows:  # from the oldest labelled row kept on
        first = int(np.flatnonzero(labelled.to_numpy())[-window.rows])
        df, labelled = df.iloc[first:], labelled.iloc[first:]
    dropped = int((~labelled).sum())
    df = df[labelled].reset_index(drop=True)
    if since is not None and tcol and tcol in df.columns:
        first = min(
            int(np.searchsorted(df[tcol].to_numpy(), np.datetime64(since))),
            max(0, len(df) - max(settings.model.min_rows, settings.model.window.min_rows)),
        )
        df = df.iloc[first:].reset_index(drop=True)
    return df, dropped


def window_data(
    settings: Settings,
    df: pd.DataFrame,
    chosen: list[BatchRecord],
    dropped: int,
    skipped: list[dict[str, str]],
) -> TrainingData:
    """The window ``df`` with its lineage (the batches it came from) and its time span."""
    tcol = settings.data.time_column
    lineage = [
        {
            "id": r.id,
            "sha256": r.content_sha256,
            "rows": r.rows,
            "start": r.start_time.isoformat() if r.start_time else None,
            "end": r.end_time.isoformat() if r.end_time else None,
        }
        for r in chosen
    ]
    start = df[tcol].min().floor("us").to_pydatetime() if tcol in df and len(df) else None
    end = df[tcol].max().floor("us").to_pydatetime() if tcol in df and len(df) else None
    return TrainingData(df, lineage, start, end, dropped, skipped)


def unusable(settings: Settings, frame: pd.DataFrame) -> str | None:
    """Why a stored batch cannot train a model, or None. Validation refuses such batches now;
    one accepted before (or with the rule relaxed) must not stop every later training."""
    skip = {settings.data.id_column, settings.data.time_column}
    for col in frame.columns:
        if (
            col in skip
            or not pd.api.types.is_numeric_dtype(frame[col])
            or pd.api.types.is_bool_dtype(frame[col])
        ):
            continue
        v = frame[col].to_numpy(dtype="float64", na_value=np.nan)
        bad = int((np.abs(v[~np.isnan(v)]) > FLOAT32_MAX).sum())
        if bad:
            return (
                f"{col}: {bad:,} value(s) infinite or beyond ±{FLOAT32_MAX:.4g}, which the "
                "models cannot represent"
            )
    return None


def window_batches(
    settings: Settings,
    recs: list[BatchRecord],
    store: BatchStore,
    columns: list[str] | None = None,
    *,
    skipped: list[dict[str, str]] | None = None,
) -> list[tuple[BatchRecord, pd.DataFrame]]:
    """The labelled batches of ``recs`` the training window takes, oldest first, each with its
    frame (``columns`` only, if given): the newest batches until ``model.window`` holds enough
    labelled rows or its period is covered. The caller trims rows at the window's edges.

    A batch whose data cannot be read or cannot train (see :func:`unusable`) is left out with
    a warning and appended to ``skipped``: one bad batch never stops training. Take it out for
    good with ``mlops batches withdraw``."""
    target = settings.data.target or ""
    recs = sorted(recs, key=lambda r: (r.end_time or r.created_at, r.created_at))
    window = settings.model.window
    newest = recs[-1].end_time if recs else None
    out: list[tuple[BatchRecord, pd.DataFrame]] = []
    rows = 0  # labelled rows so far: the window counts labelled rows
    for r in reversed(recs):
        if window.rows and rows >= window.rows:
            break
        if (
            window.period
            and newest is not None
            and r.end_time is not None
            and r.end_time < newest - pd.Timedelta(window.period)
        ):
            break
        try:
            frame = store.read(r, columns)
            why = unusable(settings, frame)
        except (OSError, ValueError, pa.ArrowException) as e:  # missing or damaged file
            why = f"its data cannot be read ({e})"
        if why is not None:
            log.warning(
                "training leaves out batch %s: %s (withdraw it with `mlops batches "
                "withdraw %s --comment ...`)",
                r.id,
                why,
                r.id,
            )
            if skipped is not None:
                skipped.append({"id": r.id, "reason": why})
            continue
        out.append((r, frame))
        rows += int(frame[target].notna().sum())
    return out[::-1]


def to_plain(df: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as plain text, the types a packaged model's signature expects."""
    cats = [c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype)]
    if not cats:
        return df
    out = df.copy()
    for c in cats:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


# feature spec ------------------------------------------------------------------------------
def feature_spec(
    settings: Settings, frame: pd.DataFrame, kind: str, classes: list[Any] | None
) -> dict[str, Any]:
    """What the packaged model needs to prepare its input (JSON-serialisable)."""
    d = settings.data
    feats = d.features
    kinds: dict[str, str] = {}
    if feats.all():
        for k in ("numeric", "categorical", "boolean"):
            for c in getattr(feats, k):
                kinds[c] = k
    else:  # not declared: everything but id/time/target, by dtype
        for c in frame.columns:
            if c in (d.id_column, d.time_column, d.target):
                continue
            s = frame[c]
            kinds[c] = (
                "boolean"
                if pd.api.types.is_bool_dtype(s)
                else "numeric"
                if pd.api.types.is_numeric_dtype(s)
                else "categorical"
            )
    missing = [c for c in kinds if c not in frame.columns]
    if missing:
        raise TrainingInputError(f"feature(s) not in the training data: {missing}")
    categories = {
        c: sorted(pd.unique(frame[c].dropna().astype(str)).tolist())
        for c, k in kinds.items()
        if k == "categorical"
    }
    return {
        "kind": kind,
        "task": settings.task,
        "feature_order": list(kinds),
        "kinds": kinds,
        "categories": categories,
        "classes": [_plain(c) for c in classes] if classes is not None else None,
    }


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


# input checks ------------------------------------------------------------------------------
def check_training_input(X: pd.DataFrame, y: pd.Series, task: str, min_rows: int) -> None:
    """Raise :class:`TrainingInputError` with every problem that makes training pointless."""
    problems = []
    if len(y) < min_rows:  # X may be the features' empty frame (the Dask path), y never is
        problems.append(
            f"too few rows: {len(y):,} labelled rows, need at least {min_rows:,} (model.min_rows)"
        )
    nan = int(y.isna().sum())
    if nan:
        problems.append(f"the target has {nan:,} missing value(s)")
    if task != "regression" and y.nunique(dropna=True) < 2:
        problems.append(
            f"a single class in the target ({y.dropna().unique()[:1].tolist()}): nothing to learn"
        )
    if task == "regression" and not pd.api.types.is_numeric_dtype(y):
        problems.append("task is regression but the target is not numeric")
    elif task == "regression" and y.nunique(dropna=True) < 2:
        problems.append(
            f"the target is constant ({y.dropna().unique()[:1].tolist()}): nothing to learn"
        )
    if not X.shape[1]:
        problems.append("no features")
    if problems:
        raise TrainingInputError("cannot train: " + "; ".join(problems))


def detect_leaks(
    X: pd.DataFrame,
    y: pd.Series,
    spec: dict[str, Any],
    task: str,
    threshold: float = 0.99,
    sample: int = 20_000,
    seed: int = 0,
) -> list[tuple[str, float]]:
    """Features that alone predict the target almost perfectly on later data (a leak: the
    feature is computed from the label, or recorded after it). A depth-limited tree per
    feature, fit on the first 70% of the rows in time order and scored on the rest."""
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    n = len(X)
    if n < 50:
        return []
    idx = np.sort(np.random.default_rng(seed).choice(n, min(n, sample), replace=False))
    Xs, ys = X.iloc[idx], y.iloc[idx]
    cut = int(len(Xs) * 0.7)
    leaks = []
    for col in spec["feature_order"]:
        s = Xs[col]
        if spec["kinds"][col] == "categorical":
            codes = pd.Categorical(s.astype(str), categories=spec["categories"][col]).codes
            v = codes.astype("float64").reshape(-1, 1)
        else:
            v = s.to_numpy(dtype="float64", na_value=np.nan).reshape(-1, 1)
        v = np.nan_to_num(v, nan=-1e12)
        if task == "regression":
            if ys[cut:].nunique() < 2:  # constant later rows: R² says nothing
                continue
            tree = DecisionTreeRegressor(max_depth=8, random_state=0).fit(v[:cut], ys[:cut])
            score = float(tree.score(v[cut:], ys[cut:]))
        else:
            tree = DecisionTreeClassifier(max_depth=8, random_state=0).fit(
                v[:cut], ys[:cut].astype(str)
            )
            yt = ys[cut:].astype(str).to_numpy()
            present = np.unique(yt)
            if len(present) < 2:  # one class in the later rows: no evidence either way
                continue
            if task == "binary":
                from sklearn.metrics import roc_auc_score

                pos = tree.classes_[-1]
                score = float(roc_auc_score(yt == pos, tree.predict_proba(v[cut:])[:, -1]))
            else:  # balanced accuracy: a constant guess scores 1/k, however rare the classes
                guess = tree.predict(v[cut:])
                score = float(np.mean([(guess[yt == c] == c).mean() for c in present]))
        if score >= threshold:
            leaks.append((col, round(score, 4)))
    return leaks


# models ------------------------------------------------------------------------------------
@dataclass
class TrainedModel:
    kind: str  # xgboost | linear | forest
    task: str
    spec: dict[str, Any]
    estimator: Any  # xgboost sklearn wrapper, or sklearn Pipeline
    params: dict[str, Any]
    best_iteration: int | None = None

    @property
    def classes(self) -> list[Any] | None:
        return self.spec.get("classes")

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        if self.kind == "xgboost":
            Xp = prepare_features(X, self.spec, for_xgboost=True)
            raw = (
                self.estimator.predict(Xp)
                if self.task == "regression"
                else self.estimator.predict_proba(Xp)
            )
            if self.task == "binary":
                raw = raw[:, 1]
        else:
            Xp = prepare_features(X, self.spec, for_xgboost=False)
            raw = (
                self.estimator.predict(Xp)
                if self.task == "regression"
                else self.estimator.predict_proba(Xp)
            )
        return output_frame(self.task, self.classes, raw, X.index)

    def save(self, folder: Path) -> dict[str, Path]:
        """Write the artifacts of the packaged model: ``{"spec": path, "model": path}``."""
        folder.mkdir(parents=True, exist_ok=True)
        spec_path = folder / "spec.json"
        spec_path.write_text(json.dumps(self.spec, indent=2, default=str), encoding="utf-8")
        if self.kind == "xgboost":
            booster = self.estimator.get_booster()
            if self.best_iteration is not None:
                booster = booster[: self.best_iteration + 1]
            path = folder / "model.ubj"
            booster.save_model(str(path))
        else:  # skops: a format loaded without unpickling (see TRUSTED_SKOPS_TYPES)
            import skops.io

            path = folder / "model.skops"
            skops.io.dump(self.estimator, path)
        return {"spec": spec_path, "model": path}

    def feature_importances(self) -> dict[str, float]:
        names = self.spec["feature_order"]
        if self.kind == "xgboost":
            gain = self.estimator.get_booster().get_score(importance_type="total_gain")
            total = sum(gain.values()) or 1.0
            return {c: float(gain.get(c, 0.0)) / total for c in names}
        est = self.estimator[-1]
        pre = self.estimator[0]
        out_names = list(pre.get_feature_names_out())
        raw = (
            np.abs(est.coef_).reshape(-1, len(out_names)).sum(axis=0)
            if hasattr(est, "coef_")
            else est.feature_importances_
        )
        imp = dict.fromkeys(names, 0.0)
        for name, v in zip(out_names, raw, strict=True):
            # a missing-value indicator counts for its column
            base = name.split("__", 1)[1].removeprefix("missingindicator_")
            col = next(
                (
                    c
                    for c in sorted(names, key=len, reverse=True)
                    if base == c or base.startswith(c + "_")
                ),
                None,
            )
            if col is not None:
                imp[col] += float(v)
        total = sum(imp.values()) or 1.0
        return {c: v / total for c, v in imp.items()}


def encode_y(y: pd.Series, classes: list[Any] | None) -> np.ndarray:
    if classes is None:
        return y.to_numpy(dtype="float64")
    lookup = {c: i for i, c in enumerate(classes)}
    return y.map(lookup).to_numpy(dtype="int64")


def _sklearn_pipeline(
    kind: str, task: str, spec: dict[str, Any], params: dict[str, Any], seed: int
) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    kinds = spec["kinds"]
    num = [c for c, k in kinds.items() if k in ("numeric", "boolean")]
    cat = [c for c, k in kinds.items() if k == "categorical"]
    if kind == "linear":
        num_pipe = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
        )
        cat_pipe = make_pipeline(
            SimpleImputer(strategy="constant", fill_value="<missing>"),
            OneHotEncoder(
                handle_unknown="infrequent_if_exist", min_frequency=10, sparse_output=True
            ),
        )
        model = (
            Ridge(alpha=params.get("alpha", 1.0))
            if task == "regression"
            else LogisticRegression(C=params.get("C", 1.0), max_iter=2000, random_state=seed)
        )
    else:
        num_pipe = SimpleImputer(strategy="median")
        cat_pipe = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
        )
        rf = RandomForestRegressor if task == "regression" else RandomForestClassifier
        model = rf(
            n_estimators=params.get("n_estimators", 200),
            max_depth=params.get("max_depth"),
            min_samples_leaf=params.get("min_samples_leaf", 5),
            max_features=params.get("max_features", "sqrt"),
            n_jobs=-1,
            random_state=seed,
        )
    pre = ColumnTransformer(
        [("num", num_pipe, num), ("cat", cat_pipe, cat)],
        remainder="drop",
        sparse_threshold=0.3 if kind == "linear" else 0,
    )
    return Pipeline([("prepare", pre), ("model", model)])


def fit_model(
    kind: str,
    task: str,
    spec: dict[str, Any],
    params: dict[str, Any],
    X_tr: pd.DataFrame,
    y_tr: pd.Series,
    X_val: pd.DataFrame | None,
    y_val: pd.Series | None,
    seed: int = 42,
    n_jobs: int | None = None,
) -> TrainedModel:
    """Fit one model; XGBoost stops early on the (later) validation rows (without them, it
    grows ``n_estimators`` trees: see :func:`refit`). ``n_jobs``: XGBoost's threads (None:
    every core)."""
    classes = spec.get("classes")
    if classes is not None:
        seen = set(pd.unique(y_tr).tolist())
        unseen = [c for c in classes if c not in seen]
        if unseen:
            raise TrainingInputError(
                f"cannot train: class(es) {unseen} of the target occur only in the latest rows "
                "(validation or hold-out), never in the training rows; widen the window or "
                "wait for more labelled data"
            )
    if kind == "xgboost":
        import xgboost as xgb

        make = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
        est = make(**xgboost_params(task, params, seed, n_jobs))
        Xt = prepare_features(X_tr, spec, for_xgboost=True)
        if X_val is None or y_val is None:
            est.set_params(early_stopping_rounds=None)
            est.fit(Xt, encode_y(y_tr, classes), verbose=False)
            return TrainedModel(kind, task, spec, est, params, None)
        Xv = prepare_features(X_val, spec, for_xgboost=True)
        est.fit(
            Xt, encode_y(y_tr, classes), eval_set=[(Xv, encode_y(y_val, classes))], verbose=False
        )
        best = getattr(est, "best_iteration", None)
        return TrainedModel(kind, task, spec, est, params, best)
    pipe = _sklearn_pipeline(kind, task, spec, params, seed)
    Xt = prepare_features(X_tr, spec, for_xgboost=False)
    pipe.fit(Xt, y_tr.to_numpy())
    return TrainedModel(kind, task, spec, pipe, params)


def xgboost_params(
    task: str, params: dict[str, Any], seed: int, n_jobs: int | None = None
) -> dict[str, Any]:
    """The keyword arguments of an XGBoost model (local or on Dask) for ``params``."""
    hp = {k: v for k, v in params.items() if k not in ("n_estimators", "early_stopping_rounds")}
    out: dict[str, Any] = dict(
        tree_method="hist",
        enable_categorical=True,
        max_cat_to_onehot=8,
        n_estimators=params.get("n_estimators", 1000),
        early_stopping_rounds=params.get("early_stopping_rounds", 50),
        random_state=seed,
        n_jobs=n_jobs,
        **hp,
    )
    if task != "regression":
        out["eval_metric"] = "logloss" if task == "binary" else "mlogloss"
    return out


def refit(model: TrainedModel, X: pd.DataFrame, y: pd.Series, seed: int = 42) -> TrainedModel:
    """``model``'s type and hyper-parameters fitted again on all of ``X``, ``y`` (the whole
    window, its newest rows included), XGBoost with the number of trees that early stopping
    chose on the validation rows: the model that is served learns the newest data too."""
    if model.kind != "xgboost":
        return fit_model(model.kind, model.task, model.spec, model.params, X, y, None, None, seed)
    trees = (
        (model.best_iteration + 1)
        if model.best_iteration is not None
        else model.params.get("n_estimators", 1000)
    )
    params = model.params | {"n_estimators": trees, "early_stopping_rounds": None}
    fitted = fit_model("xgboost", model.task, model.spec, params, X, y, None, None, seed)
    fitted.params = model.params | {"n_estimators": trees}
    return fitted


@dataclass
class WindowChoice:
    start: int  # first row of the chosen window (of the rows passed in)
    model: TrainedModel  # fitted on the chosen training rows, early-stopped on validation
    score: float  # its validation score (``PRIMARY[task]``)
    scores: dict[int, float]  # candidate start row → its validation score


def choose_window(
    kind: str,
    task: str,
    spec: dict[str, Any],
    params: dict[str, Any],
    X_tr: pd.DataFrame,
    y_tr: pd.Series,
    X_val: pd.DataFrame,
    y_val: pd.Series,
    *,
    min_rows: int,
    choose: bool = True,
    seed: int = 42,
) -> WindowChoice:
    """Fit on all of the training rows, on their newest half and on their newest quarter (each
    of at least ``min_rows`` rows), score each on the validation rows that follow them, and keep
    the best (on a tie, the longest). After a change the older rows teach the old concept and a
    shorter window wins; when nothing changed, more rows win. ``choose=False``: the whole
    window only."""
    n = len(X_tr)
    starts = [0] + ([n - n // 2, n - n // 4] if choose else [])
    starts = sorted({s for s in starts if s == 0 or n - s >= min_rows})
    metric = PRIMARY[task]
    higher = HIGHER_IS_BETTER[metric]
    best: WindowChoice | None = None
    scores: dict[int, float] = {}
    classes = spec.get("classes")
    for s in starts:
        y_part = y_tr.iloc[s:]
        if classes is not None and s and y_part.nunique() < 2:
            continue
        m = fit_model(kind, task, spec, params, X_tr.iloc[s:], y_part, X_val, y_val, seed)
        score = compute_metrics(task, y_val, m.predict_frame(X_val), classes).get(metric, math.nan)
        scores[s] = score
        if math.isnan(score):
            score = -math.inf if higher else math.inf
        if best is None or (score > best.score if higher else score < best.score):
            best = WindowChoice(s, m, score, scores)
    assert best is not None  # the whole window is always a candidate
    return best


def suggest_params(trial: Any, kind: str, task: str) -> dict[str, Any]:
    if kind == "xgboost":
        return {
            "max_depth": trial.suggest_int("max_depth", 3, 10),
            "learning_rate": trial.suggest_float("learning_rate", 0.03, 0.3, log=True),
            "min_child_weight": trial.suggest_float("min_child_weight", 1, 30, log=True),
            "subsample": trial.suggest_float("subsample", 0.6, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10, log=True),
        }
    if kind == "linear":
        if task == "regression":
            return {"alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True)}
        return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}
    return {
        "n_estimators": trial.suggest_int("n_estimators", 100, 400, step=50),
        "max_depth": trial.suggest_int("max_depth", 4, 24),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 50, log=True),
        "max_features": trial.suggest_float("max_features", 0.2, 0.9),
    }


@dataclass
class SearchResult:
    model: TrainedModel
    best_params: dict[str, Any]
    best_score: float
    trials: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def search(
    kind: str,
    task: str,
    spec: dict[str, Any],
    X_tr: pd.DataFrame,
    y_tr: pd.Series,
    X_val: pd.DataFrame,
    y_val: pd.Series,
    *,
    trials: int,
    timeout_s: float | None,
    seed: int,
    fixed: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Optuna TPE search (seeded) within a budget of trials and seconds. Every trial trains on
    the earlier rows and is scored on the later validation rows: no future leaks into a fit.
    ``progress``: told "trial 7/20, best roc_auc 0.8123" after each trial."""
    metric = PRIMARY[task]
    higher = HIGHER_IS_BETTER[metric]
    best: dict[str, Any] = {}
    history: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = suggest_params(trial, kind, task) | (fixed or {})
        score, m = trial_fit(kind, task, spec, params, (X_tr, y_tr, X_val, y_val), seed)
        history.append({"trial": trial.number, "score": score, **params})
        better = not best or (score > best["score"] if higher else score < best["score"])
        if better:
            best.update(score=score, model=m, params=params)
        return score

    told = [_tell(progress, trials, metric, history, best)] if progress else []
    study = new_study(kind, task, trials, seed)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=1, callbacks=told)  # however small the time budget
    left = None if timeout_s is None else timeout_s - (time.perf_counter() - t0)
    if trials > 1 and (left is None or left > 0):
        study.optimize(objective, n_trials=trials - 1, timeout=left, callbacks=told)
    return SearchResult(
        best["model"],
        best["params"],
        best["score"],
        len(study.trials),
        time.perf_counter() - t0,
        history,
    )


def new_study(kind: str, task: str, trials: int, seed: int, *, parallel: bool = False) -> Any:
    """The search's Optuna study: TPE, seeded, in the direction of the task's metric, the
    defaults enqueued as its first trial (so a budget of one trial still gives a good model).
    ``parallel``: trials run at once (the constant liar keeps them apart)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction: Literal["maximize", "minimize"] = (
        "maximize" if HIGHER_IS_BETTER[PRIMARY[task]] else "minimize"
    )
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(5, max(trials, 1)), constant_liar=parallel
    )
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.enqueue_trial(default_params(kind, task))
    return study


def trial_fit(
    kind: str,
    task: str,
    spec: dict[str, Any],
    params: dict[str, Any],
    rows: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
    seed: int,
    n_jobs: int | None = None,
) -> tuple[float, TrainedModel]:
    """One trial of the search: the model fitted on the training rows of ``rows`` (X, y,
    X_val, y_val) and its score on the validation rows (a failed score is the worst one)."""
    X_tr, y_tr, X_val, y_val = rows
    m = fit_model(kind, task, spec, params, X_tr, y_tr, X_val, y_val, seed, n_jobs)
    metric = PRIMARY[task]
    score = compute_metrics(task, y_val, m.predict_frame(X_val), spec.get("classes"))[metric]
    if math.isnan(score):
        score = -math.inf if HIGHER_IS_BETTER[metric] else math.inf
    return score, m


def _tell(
    progress: Callable[[str], None],
    trials: int,
    metric: str,
    history: list[dict[str, Any]],
    best: dict[str, Any],
) -> Callable[[Any, Any], None]:
    """An Optuna callback that tells ``progress`` "trial 7/20, best roc_auc 0.8123"."""

    def told(_study: Any, _trial: Any) -> None:
        if best:
            progress(f"trial {len(history)}/{trials}, best {metric} {best['score']:.4f}")

    return told


def default_params(kind: str, task: str) -> dict[str, Any]:
    if kind == "xgboost":
        return {
            "max_depth": 6,
            "learning_rate": 0.1,
            "min_child_weight": 1.0,
            "subsample": 1.0,
            "colsample_bytree": 1.0,
            "reg_lambda": 1.0,
        }
    if kind == "linear":
        return {"alpha": 1.0} if task == "regression" else {"C": 1.0}
    return {"n_estimators": 200, "max_depth": 16, "min_samples_leaf": 5, "max_features": 0.5}


def time_split(n: int, holdout: float, validation: float) -> tuple[slice, slice, slice]:
    """(train, validation, hold-out) slices of ``n`` time-ordered rows: the latest rows are the
    hold-out, the ones before them the validation rows."""
    n_hold = max(1, round(n * holdout))
    rest = n - n_hold
    n_val = max(1, round(rest * validation))
    return slice(0, rest - n_val), slice(rest - n_val, rest), slice(rest, n)
