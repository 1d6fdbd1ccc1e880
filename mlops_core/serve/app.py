"""`mlops serve`: the champion behind an HTTP API that follows promotions without downtime.

- ``POST /predict``: one record (a JSON object) or a list of them; each is checked against the
  model's features (every field present, ``null`` for an unknown value, no other field but the
  id and time columns, values of the right type). A bad request is a 422 that names every bad
  field; a request over ``serving.max_rows`` rows or ``serving.max_body_mb`` is a 413.
- ``POST /feedback``: labels for served rows (``{"id": ROW_ID, "label": VALUE}`` or a list),
  for labels that arrive later; they join the prediction log.
- ``GET /health`` (the process; ``ready`` once a model serves), ``GET /model`` (version, since,
  hash, features), ``GET /metrics`` (Prometheus), ``POST /reload`` (the promote flow's nudge).

Every answer names the version that produced it (``version`` and the ``X-Model-Version``
header). The served version follows the registry's ``champion`` alias: a thread polls it every
``serving.poll_seconds`` and ``/reload`` checks at once. A new version is downloaded, its whole
package checked against the hash recorded at registration, loaded from its native files
(XGBoost's UBJSON, scikit-learn through skops: nothing is unpickled) and smoke-tested on its
input example, all off the request path; then one assignment swaps it in. A request reads the
model once, so it is answered by one version, never two. If anything fails the old version keeps
serving, and the failure is counted (``mlops_model_load_failures_total``), logged and shown by
``/model``.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here

from mlops_core.config import Settings
from mlops_core.errors import MlopsError
from mlops_core.serve.prediction_log import FEEDBACK, LABEL, SERVED, AsText, LogWriter
from mlops_core.train.pyfunc.tabular_model import load_sklearn, output_frame, prepare_features

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
RETRY_FAILED_S = 60.0  # a version that failed to load is tried again after this long
BATCH_THREADS_FROM = 256  # rows in a request from which XGBoost predicts on every core
INLINE_ROWS = 2000  # requests up to this many rows are answered on the event loop itself
MAX_ERRORS_LISTED = 100
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ServingError(MlopsError, RuntimeError):
    """A model version cannot be served: its package changed, its files are of an unknown
    kind, or it failed its smoke test."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# the model ---------------------------------------------------------------------------------
@dataclass
class ServedModel:
    """One loaded, verified model version."""

    version: str
    spec: dict[str, Any]
    model: Any
    package_sha256: str
    loaded_at: datetime = field(default_factory=_now)
    # XGBoost: the same booster using every core, for requests of many rows (one thread
    # serves small ones: OpenMP's start-up and waiting cost more than they take)
    batch_model: Any = None

    @property
    def task(self) -> str:
        return str(self.spec["task"])

    @property
    def features(self) -> list[str]:
        return list(self.spec["feature_order"])

    @property
    def classes(self) -> list[Any] | None:
        return self.spec.get("classes")

    def __post_init__(self) -> None:
        # category → code, as pandas' Categorical over the training categories numbers them
        self._codes = {
            c: {str(v): float(i) for i, v in enumerate(known)}
            for c, known in self.spec.get("categories", {}).items()
        }

    def _matrix(self, frame: pd.DataFrame | dict[str, Any], n: int) -> np.ndarray:
        """The features as one NumPy matrix in training order: categories as their codes
        (unseen: missing), booleans as 0/1; XGBoost predicts it in place (the booster knows
        which features are categories). The same numbers as :func:`prepare_features`, at a
        fraction of the cost per request."""
        cols = []
        for c in self.features:
            kind = self.spec["kinds"][c]
            values = np.asarray(frame[c]) if c in frame else np.full(n, None)
            if kind == "numeric":
                cols.append(
                    pd.to_numeric(values, errors="coerce").astype("float64")
                    if values.dtype == object
                    else values.astype("float64")
                )
            elif kind == "boolean":
                types = set(map(type, values))
                cols.append(
                    np.array(values, dtype="float64")  # True 1, False 0, None NaN
                    if types <= {bool, type(None)}
                    else np.array([_flag(v) for v in values], dtype="float64")
                )
            elif set(map(type, values)) <= {str, type(None)}:
                get = self._codes[c].get
                cols.append(np.array([get(v, math.nan) for v in values], dtype="float64"))
            else:
                codes = self._codes[c]
                cols.append(
                    np.array(
                        [
                            codes.get(v if isinstance(v, str) else _text(v), math.nan)
                            for v in values
                        ],
                        dtype="float64",
                    )
                )
        return np.column_stack(cols) if cols else np.empty((n, 0))

    def predict(self, frame: pd.DataFrame | dict[str, Any]) -> pd.DataFrame:
        """``prediction`` and, for classification, ``proba_<class>`` per row. ``frame``: a
        DataFrame, or columns by name (as :func:`check_records` returns them)."""
        spec = self.spec
        n = len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values()), []))
        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(frame) if spec["kind"] != "xgboost" else frame
        if spec["kind"] == "xgboost":
            raw = self._raw(frame, n)
            return output_frame(spec["task"], spec.get("classes"), raw, pd.RangeIndex(n))
        assert isinstance(frame, pd.DataFrame)  # made one above for every kind but xgboost
        X = prepare_features(frame, spec, for_xgboost=False)
        raw = self.model.predict(X) if spec["task"] == "regression" else self.model.predict_proba(X)
        return output_frame(spec["task"], spec.get("classes"), raw, frame.index)

    def _raw(self, frame: pd.DataFrame | dict[str, Any], n: int) -> np.ndarray:
        booster = (
            self.batch_model
            if self.batch_model is not None and n >= BATCH_THREADS_FROM
            else self.model
        )
        matrix = self._matrix(frame, n)
        if booster.feature_types is None and "categorical" in self.spec["kinds"].values():
            import xgboost as xgb  # a booster that does not know its categories: tell it

            types = ["c" if self.spec["kinds"][c] == "categorical" else "q" for c in self.features]
            return np.asarray(
                booster.predict(
                    xgb.DMatrix(
                        matrix,
                        feature_names=self.features,
                        feature_types=types,
                        enable_categorical=True,
                    )
                )
            )
        return np.asarray(booster.inplace_predict(matrix))

    def answers(
        self, columns: dict[str, Any], n: int
    ) -> tuple[list[Any], np.ndarray | None, list[str]]:
        """The request path's predictions without a DataFrame: (predictions, probabilities
        (rows x classes, or None for regression), class names as text)."""
        if self.spec["kind"] != "xgboost":
            out = self.predict(columns)
            cols = [c for c in out.columns if c.startswith("proba_")]
            return (
                out["prediction"].tolist(),
                out[cols].to_numpy() if cols else None,
                [c.removeprefix("proba_") for c in cols],
            )
        raw = self._raw(columns, n)
        if self.task == "regression":
            return raw.astype("float64").tolist(), None, []
        classes = self.classes or []
        proba = raw.astype("float64")
        if proba.ndim == 1:
            proba = np.column_stack([1.0 - proba, proba])
        labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)].tolist()
        return labels, proba, [str(c) for c in classes]

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "since": self.loaded_at.isoformat(),
            "package_sha256": self.package_sha256,
            "task": self.task,
            "kind": self.spec["kind"],
            "classes": self.classes,
            "features": [
                {
                    "name": c,
                    "kind": self.spec["kinds"][c],
                    **(
                        {"categories": self.spec["categories"][c]}
                        if c in self.spec.get("categories", {})
                        else {}
                    ),
                }
                for c in self.features
            ],
        }


def _flag(v: Any) -> float:
    """A boolean feature's value as :func:`prepare_features` reads it."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return math.nan
    return 1.0 if str(v).strip().lower() in ("true", "t", "yes", "1", "1.0") else 0.0


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "\0missing"  # no category has this name
    return str(v)


def load_package(folder: Path, version: str, package_sha256: str) -> ServedModel:
    """A model from its downloaded (and already verified) package folder, without unpickling:
    XGBoost from its native file, scikit-learn from skops with a fixed list of trusted types."""
    art = folder / "artifacts"
    spec = json.loads((art / "spec.json").read_text(encoding="utf-8"))
    if (art / "model.ubj").is_file():
        import xgboost as xgb

        model: Any = xgb.Booster()
        model.load_model(str(art / "model.ubj"))
        batch = model.copy()
        # one thread per small prediction: requests run side by side in the thread pool, and
        # on a busy machine OpenMP's waiting threads cost more than small predictions take
        model.set_param({"nthread": 1})
        return ServedModel(
            version=version,
            spec=spec,
            model=model,
            package_sha256=package_sha256,
            batch_model=batch,
        )
    elif (art / "model.skops").is_file():
        model = load_sklearn(str(art / "model.skops"))
    else:
        found = sorted(p.name for p in art.iterdir()) if art.is_dir() else []
        raise ServingError(
            f"version {version}: no model file serving can load without "
            f"unpickling (model.ubj or model.skops); found {found}"
        )
    return ServedModel(version=version, spec=spec, model=model, package_sha256=package_sha256)


def smoke_test(model: ServedModel, folder: Path) -> None:
    """Predict the package's input example: one answer per row, probabilities that are
    probabilities. Raises :class:`ServingError` otherwise."""
    path = folder / "input_example.json"
    if not path.is_file():
        raise ServingError(f"version {model.version}: no input example to smoke-test")
    ex = json.loads(path.read_text(encoding="utf-8"))
    frame = pd.DataFrame(ex["data"], columns=ex["columns"])
    try:
        out = model.predict(frame)
    except Exception as e:
        raise ServingError(
            f"version {model.version} failed its smoke test: {type(e).__name__}: {e}"
        ) from e
    if len(out) != len(frame):
        raise ServingError(f"version {model.version}: {len(out)} answers for {len(frame)} rows")
    proba = out[[c for c in out.columns if c.startswith("proba_")]].to_numpy(dtype=float)
    if proba.size and (
        not np.isfinite(proba).all() or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-3)
    ):
        raise ServingError(f"version {model.version}: its probabilities do not sum to one")


def load_version(registry: Any, version: str) -> ServedModel:
    """Download ``version``, check the whole package against its recorded hash, load it and
    smoke-test it. Raises on any failure; nothing is swapped here."""
    from mlops_core.store import package_sha256

    with tempfile.TemporaryDirectory(prefix="mlops-serve-") as tmp:
        folder = registry.download(version, Path(tmp))
        registry.verify_package(version, folder)
        model = load_package(folder, version, package_sha256(folder))
        smoke_test(model, folder)
    return model


# request checks ----------------------------------------------------------------------------
def _excerpt(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


_TRUE = {"true", "t", "yes", "1"}
_FALSE = {"false", "f", "no", "0"}


def _numeric(v: Any) -> tuple[float, str | None]:
    if v is None:
        return math.nan, None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan, f"expected a number, got {_excerpt(v)}"
    f = float(v)
    if not math.isfinite(f):
        return math.nan, f"expected a finite number, got {_excerpt(v)}"
    return f, None


def _categorical(v: Any) -> tuple[str | None, str | None]:
    if v is None or isinstance(v, str):
        return v, None
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v), None
    return None, f"expected text, got {_excerpt(v)}"


def _boolean(v: Any) -> tuple[bool | None, str | None]:
    if v is None or isinstance(v, bool):
        return v, None
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v), None
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE, None
    return None, f"expected true or false, got {_excerpt(v)}"


_CHECKS: dict[str, Callable[[Any], tuple[Any, str | None]]] = {
    "numeric": _numeric,
    "categorical": _categorical,
    "boolean": _boolean,
}


@dataclass
class Checked:
    frame: dict[str, np.ndarray]  # the features (and id/time columns) by name, as arrays
    row_ids: list[str]
    errors: list[dict[str, Any]]


_FAST_TYPES: dict[str, set[type]] = {
    "numeric": {int, float, type(None)},
    "categorical": {str, type(None)},
    "boolean": {bool, type(None)},
}


def check_records(
    records: list[Any],
    model: ServedModel,
    *,
    id_column: str | None,
    time_column: str | None,
    request_id: str,
) -> Checked:
    """Every record against the model's features. Errors name the row, the field and why.

    Column by column: a column whose values are all of the expected JSON types is converted
    at once; only a column with another type is checked value by value (to name each)."""
    kinds = model.spec["kinds"]
    features = model.features
    passthrough = [c for c in (id_column, time_column) if c and c not in kinds]
    errors: list[dict[str, Any]] = []
    by_feature, rows, longest = _record_columns(records, features, passthrough, errors)
    if longest <= len(features):  # no record sent the id or time column
        passthrough = []
    columns: dict[str, Any] = {
        name: _feature_column(name, kinds[name], by_feature[name], errors) for name in features
    }
    for name in passthrough:
        columns[name] = _objects([None if (v := r.get(name)) is None else str(v) for r in rows])
    if id_column and id_column in columns:
        ids = columns[id_column].tolist()
        row_ids = [f"{request_id}:{i}" if v is None else v for i, v in enumerate(ids)]
    else:
        prefix = f"{request_id}:"
        row_ids = [prefix + str(i) for i in range(len(records))]
    if errors:
        errors.sort(key=lambda e: (e["row"], str(e["field"])))
        return Checked({}, row_ids, errors)
    return Checked(columns, row_ids, errors)


def _record_columns(
    records: list[Any], features: list[str], passthrough: list[str], errors: list[dict[str, Any]]
) -> tuple[dict[str, list[Any]], list[Any], int]:
    """Each feature's values, the records (as objects) and the most keys a record has; the
    errors of records that are not objects, lack a feature or send a field too many."""
    allowed = set(features) | set(passthrough)
    n_features = len(features)
    by_feature, longest = _columns_of(records, features, len(allowed))
    if by_feature is None:  # a record lacks a feature, or is not an object: name each problem
        _check_keys(enumerate(records), features, allowed, errors)
        rows = [r if isinstance(r, dict) else {} for r in records]
        return {name: [r.get(name) for r in rows] for name in features}, rows, longest
    if longest > n_features:  # every feature is there: only records with more keys need a look
        _check_keys(
            ((i, r) for i, r in enumerate(records) if len(r) > n_features),
            features,
            allowed,
            errors,
        )
    return by_feature, records, longest


def _feature_column(
    name: str, kind: str, vals: list[Any], errors: list[dict[str, Any]]
) -> np.ndarray:
    """One feature's values as an array: at once when all are of the expected JSON types,
    else value by value, each bad one named in ``errors``."""
    if set(map(type, vals)) <= _FAST_TYPES[kind]:
        if kind != "numeric":
            return _objects(vals)
        arr = np.array(vals, dtype="float64")
        if np.isinf(arr).any():  # an integer too large for a float
            for bad in np.flatnonzero(np.isinf(arr)):
                errors.append(
                    {
                        "row": int(bad),
                        "field": name,
                        "error": f"expected a finite number, got {_excerpt(vals[bad])}",
                    }
                )
        return arr
    checked = []
    for i, v in enumerate(vals):
        value, problem = _CHECKS[kind](v)
        if problem:
            errors.append({"row": i, "field": name, "error": problem})
        checked.append(value)
    return np.array(checked, dtype="float64") if kind == "numeric" else _objects(checked)


def _check_keys(
    indexed: Any, features: list[str], allowed: set[str], errors: list[dict[str, Any]]
) -> None:
    """Name each record that is not an object, each field too many and each one missing."""
    for i, rec in indexed:
        if not isinstance(rec, dict):
            errors.append(
                {
                    "row": i,
                    "field": None,
                    "error": f"expected an object of field: value, got {_excerpt(rec)}",
                }
            )
            continue
        keys = rec.keys()
        for name in sorted(keys - allowed):
            errors.append({"row": i, "field": name, "error": "not a field of this model"})
        for name in features:
            if name not in keys:
                errors.append(
                    {"row": i, "field": name, "error": "missing (send null for an unknown value)"}
                )


def _columns_of(
    records: list[Any], features: list[str], most_keys: int
) -> tuple[dict[str, list[Any]] | None, int]:
    """Each feature's values, read at C speed, when every record is an object holding every
    feature and at most ``most_keys`` keys, and the most keys a record has; None when not
    (the caller then checks record by record, to name each problem)."""
    if set(map(type, records)) - {dict}:
        return None, 0
    longest = max(map(len, records), default=0)
    if longest > most_keys:
        return None, longest
    try:
        return {name: list(map(operator.itemgetter(name), records)) for name in features}, longest
    except KeyError:
        return None, longest


def _objects(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them to ``/predict``: plain JSON values, null for missing,
    times as ISO text."""
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append(
            {
                k: (
                    None
                    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT
                    else v.isoformat()
                    if isinstance(v, pd.Timestamp)
                    else v.item()
                    if isinstance(v, np.generic)
                    else v
                )
                for k, v in rec.items()
            }
        )
    return out


# metrics -----------------------------------------------------------------------------------
class Metrics:
    """Prometheus metrics of one app (their own registry, so two apps in a process, as in
    tests, do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlops_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mlops_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.rows = Counter("mlops_predicted_rows", "Rows predicted", ["version"], registry=r)
        self.classes = Counter(
            "mlops_predictions", "Predicted class counts", ["prediction"], registry=r
        )
        self.values = Histogram(
            "mlops_prediction_value",
            "Predicted values (regression)",
            registry=r,
            buckets=(-1e3, -10, -1, 0, 1, 10, 100, 1e3, 1e4, 1e6),
        )
        self.model = Gauge(
            "mlops_model_info",
            "The served version (1) and its hash",
            ["version", "package_sha256"],
            registry=r,
        )
        self.loaded_at = Gauge(
            "mlops_model_loaded_timestamp_seconds",
            "When the served version was swapped in",
            registry=r,
        )
        self.swaps = Counter("mlops_model_swaps", "Versions swapped in", registry=r)
        self.load_failures = Counter(
            "mlops_model_load_failures",
            "Versions that failed to load (the old one kept serving)",
            registry=r,
        )
        self.feedback = Counter("mlops_feedback_labels", "Labels received", registry=r)
        self.log_dropped = Counter(
            "mlops_prediction_log_dropped_rows",
            "Rows the prediction log could not keep",
            registry=r,
        )
        self.log_written = Counter(
            "mlops_prediction_log_rows", "Rows written to the log", ["kind"], registry=r
        )

    def served(self, model: ServedModel) -> None:
        self.model.clear()
        self.model.labels(model.version, model.package_sha256).set(1)
        self.loaded_at.set(model.loaded_at.replace(tzinfo=UTC).timestamp())


# following the champion --------------------------------------------------------------------
class ModelSlot:
    """The served model, replaced whole. ``current`` is read once per request."""

    def __init__(
        self, registry_factory: Callable[[], Any], metrics: Metrics, *, shadow: bool = False
    ) -> None:
        self._registry_factory = registry_factory
        self._registry: Any = None
        self.metrics = metrics
        self.follow_shadow = shadow
        self.current: ServedModel | None = None
        self.shadow: ServedModel | None = None  # the newest online version, logged only
        self.last_error: dict[str, Any] | None = None
        self._failed: dict[str, float] = {}
        self._lock = threading.Lock()  # one load at a time

    def registry(self) -> Any:
        if self._registry is None:
            self._registry = self._registry_factory()
        return self._registry

    def _error(self, version: str | None, message: str) -> dict[str, Any]:
        self.last_error = {"version": version, "error": message, "at": _now().isoformat()}
        log.error("serving: %s", message)
        return {
            "version": self.current.version if self.current else None,
            "swapped": False,
            "error": message,
        }

    def refresh(self, *, force: bool = False) -> dict[str, Any]:
        """Serve the version the champion alias names, if it is not served yet. Returns
        ``{"version", "swapped", "error"}``."""
        with self._lock:
            try:
                want = self.registry().aliases().get(CHAMPION_ALIAS)
            except Exception as e:
                return self._error(
                    None, f"cannot read the champion alias: {type(e).__name__}: {str(e)[:300]}"
                )
            have = self.current.version if self.current else None
            if self.follow_shadow:
                self._refresh_shadow(want)
            if want is None or want == have:
                return {"version": have, "swapped": False, "error": None}
            failed_at = self._failed.get(want)
            if failed_at and not force and time.monotonic() - failed_at < RETRY_FAILED_S:
                return {
                    "version": have,
                    "swapped": False,
                    "error": (self.last_error or {}).get("error"),
                }
            t0 = time.perf_counter()
            try:
                model = load_version(self.registry(), want)
            except Exception as e:
                self._failed[want] = time.monotonic()
                self.metrics.load_failures.inc()
                return self._error(
                    want,
                    f"version {want} not served, v{have} kept: {type(e).__name__}: {str(e)[:500]}",
                )
            self.current = model  # the swap: one reference assignment
            self._failed.pop(want, None)
            self.last_error = None
            self.metrics.swaps.inc()
            self.metrics.served(model)
            log.info(
                "serving v%s (was v%s), loaded and checked in %.2f s",
                want,
                have,
                time.perf_counter() - t0,
            )
            return {"version": want, "swapped": True, "previous": have, "error": None}

    def _refresh_shadow(self, champion: str | None) -> None:
        """Run the newest online version that is neither rejected nor the champion beside it
        (none: no shadow). A shadow that fails to load is reported and skipped."""
        try:
            online = [
                v
                for v in self.registry().online_versions()
                if v.status in ("pending_approval", "candidate")
            ]
        except Exception as e:  # the registry down: keep what runs
            log.warning("serving: cannot list online versions: %s", e)
            return
        want = online[-1].version if online and online[-1].version != champion else None
        have = self.shadow.version if self.shadow else None
        if want == have:
            return
        if want is None or self._failed.get(want, -1e9) > time.monotonic() - RETRY_FAILED_S:
            self.shadow = None if want is None else self.shadow
            return
        try:
            self.shadow = load_version(self.registry(), want)
            log.info("serving: v%s runs in shadow", want)
        except Exception as e:  # the shadow is optional; the champion serves
            self._failed[want] = time.monotonic()
            self.metrics.load_failures.inc()
            self._error(
                want, f"online version {want} not run in shadow: {type(e).__name__}: {str(e)[:300]}"
            )


# the app -----------------------------------------------------------------------------------
def _json(payload: Any, status: int = 200, version: str | None = None) -> Any:
    import orjson
    from fastapi.responses import Response

    headers = {"X-Model-Version": version} if version else None
    return Response(
        orjson.dumps(payload, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, datetime | pd.Timestamp):
        return v.isoformat()
    return str(v)


def _parse_json(body: bytes) -> Any:
    """Strict JSON (orjson: no NaN or Infinity, which are not JSON numbers)."""
    import orjson

    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ValueError(str(e)) from None


@dataclass
class _State:
    """What the app's handlers share (``app.state.mlops``)."""

    settings: Settings
    slot: ModelSlot
    metrics: Metrics
    writer: LogWriter | None
    started_at: datetime = field(default_factory=_now)
    stop: threading.Event = field(default_factory=threading.Event)
    background: bool = True  # poll the champion alias and write the log from threads
    max_body: int = 0  # bytes (serving.max_body_mb)
    id_column: str | None = None
    time_column: str | None = None


def create_app(
    settings: Settings,
    *,
    registry_factory: Callable[[], Any] | None = None,
    background: bool = True,
) -> Any:
    """The FastAPI app for ``settings``' project. ``background``: poll the champion alias and
    write the prediction log from threads (off for tests that drive ``refresh`` themselves;
    the log is then written at shutdown)."""
    from fastapi import FastAPI

    from mlops_core.registry.registry import Registry

    scfg = settings.serving
    metrics = Metrics()
    slot = ModelSlot(
        registry_factory or (lambda: Registry(settings)),
        metrics,
        shadow=settings.online.enabled and scfg.shadow,
    )
    state = _State(
        settings,
        slot,
        metrics,
        None,
        background=background,
        max_body=int(scfg.max_body_mb * 1024 * 1024),
        id_column=settings.data.id_column,
        time_column=settings.data.time_column,
    )
    app = FastAPI(
        title=f"mlops serving: {settings.project}",
        lifespan=_lifespan,
        description="The champion of the registered model, following promotions.",
    )
    app.state.mlops = state
    app.add_middleware(_CountMiddleware, metrics=metrics, slot=slot)
    app.add_exception_handler(Exception, _failed)
    for method, path, endpoint, summary in _ROUTES:  # as app.post(...) and app.get(...) do
        app.add_api_route(path, endpoint, methods=[method], summary=summary)
    return app


def _poll(state: _State) -> None:
    """Follow the champion alias until the app stops."""
    while True:
        state.slot.refresh()
        if state.stop.wait(state.settings.serving.poll_seconds):
            return


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """Start the prediction log's writer and the champion's poller; at shutdown stop them (the
    writer writes what waits)."""
    state: _State = app.state.mlops
    scfg, metrics = state.settings.serving, state.metrics
    if scfg.log:
        state.writer = LogWriter(
            state.settings.workspace,
            max_rows=scfg.log_queue_rows,
            flush_seconds=scfg.log_flush_seconds if state.background else 3600.0,
            on_drop=metrics.log_dropped.inc,
            on_write=lambda k, n: metrics.log_written.labels(k).inc(n),
        )
    poller = None
    if state.background:
        poller = threading.Thread(target=_poll, args=(state,), name="champion-poll", daemon=True)
        poller.start()
    try:
        yield
    finally:
        state.stop.set()
        if state.writer:
            state.writer.close()
        if poller:
            poller.join(5)


def _state(request: Request) -> _State:
    """The app's shared state, from a request to it."""
    state: _State = request.app.state.mlops
    return state


def _body_limit(state: _State, request: Request) -> Any | None:
    """A 413 when the body's declared size is over ``serving.max_body_mb``."""
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > state.max_body:
        return _json(
            {"detail": f"request body over {state.settings.serving.max_body_mb:g} MB"}, 413
        )
    return None


def _request_id(request: Request) -> str:
    rid = request.headers.get("x-request-id", "")
    return rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex


async def _failed(request: Request, exc: Exception) -> Any:
    """A failure of ours (not a bad request): logged with its traceback, answered as JSON
    with the served version, counted as a 500."""
    log.exception("serving: %s %s failed", request.method, request.url.path)
    model = _state(request).slot.current
    return _json(
        {
            "detail": f"internal error: {type(exc).__name__}: {str(exc)[:300]}",
            "version": model.version if model else None,
        },
        500,
        model.version if model else None,
    )


async def predict(request: Request) -> Any:
    t0 = time.perf_counter()
    state = _state(request)
    scfg = state.settings.serving
    too_big = _body_limit(state, request)
    if too_big is not None:
        return too_big
    body = await request.body()
    if len(body) > state.max_body:
        return _json({"detail": f"request body over {scfg.max_body_mb:g} MB"}, 413)
    model = state.slot.current  # once: this request is answered by this version only
    if model is None:
        return _json(
            {
                "detail": "no champion is served yet: approve a version "
                "(`mlops approve VERSION --by NAME`)"
            },
            503,
        )
    try:
        payload = _parse_json(body)
    except ValueError as e:
        return _json(
            {"detail": f"the body is not valid JSON: {str(e)[:200]}", "errors": []},
            422,
            model.version,
        )
    records = payload if isinstance(payload, list) else [payload]
    if not records:
        return _json({"detail": "no records to predict", "errors": []}, 422, model.version)
    if len(records) > scfg.max_rows:
        return _json(
            {
                "detail": f"{len(records)} records in one request; at most "
                f"{scfg.max_rows} (serving.max_rows)"
            },
            413,
            model.version,
        )
    rid = _request_id(request)
    if len(records) <= INLINE_ROWS:
        # on the event loop: a few milliseconds of work costs less here than the thread
        # hand-offs (and one process predicts one request at a time either way)
        return predict_rows(state, model, records, rid, t0)
    return await _run(predict_rows, state, model, records, rid, t0)  # the loop stays responsive


def predict_rows(state: _State, model: ServedModel, records: list[Any], rid: str, t0: float) -> Any:
    """Check the records and answer them (a 200), or name their bad fields (a 422); count the
    answers and log them, with the shadow's."""
    checked = check_records(
        records, model, id_column=state.id_column, time_column=state.time_column, request_id=rid
    )
    if checked.errors:
        return _bad_records(model, checked.errors)
    preds, proba, names = model.answers(checked.frame, len(checked.row_ids))
    latency_ms = (time.perf_counter() - t0) * 1000
    rows = _answer_rows(checked.row_ids, preds, proba, names)
    _count_answers(state.metrics, model, preds, proba, len(rows))
    shadow = _shadow_columns(state.slot.shadow, checked.frame)
    if state.writer is not None:  # columns as they are: the writer's thread frames them
        state.writer.put(
            SERVED,
            {
                **checked.frame,
                **shadow,
                "served_request_id": rid,
                "served_row_id": checked.row_ids,
                "served_at": _now(),
                "served_version": model.version,
                "served_latency_ms": latency_ms,
                "served_prediction": AsText(preds),
                **(
                    {f"served_proba_{c}": proba[:, j] for j, c in enumerate(names)}
                    if proba is not None
                    else {}
                ),
            },
            rows=len(rows),
        )
    return _json(
        {"request_id": rid, "version": model.version, "predictions": rows}, 200, model.version
    )


def _bad_records(model: ServedModel, errors: list[dict[str, Any]]) -> Any:
    """The 422 that names the bad fields (the first ``MAX_ERRORS_LISTED`` errors)."""
    n = len(errors)
    fields = sorted({str(e["field"]) for e in errors if e["field"]})
    return _json(
        {
            "detail": f"{n} bad field{'s' if n != 1 else ''} in "
            f"{len({e['row'] for e in errors})} record(s): " + ", ".join(fields[:20]),
            "errors": errors[:MAX_ERRORS_LISTED],
            "version": model.version,
        },
        422,
        model.version,
    )


def _answer_rows(
    row_ids: list[str], preds: list[Any], proba: np.ndarray | None, names: list[str]
) -> list[dict[str, Any]]:
    """One answer per row: its id, its prediction and (classification) the probabilities."""
    if proba is None:
        return [{"id": i, "prediction": p} for i, p in zip(row_ids, preds, strict=True)]
    probs = proba.round(6).tolist()
    if len(names) == 2:  # binary: the common case, built without zip per row
        n0, n1 = names
        return [
            {"id": i, "prediction": p, "probabilities": {n0: a, n1: b}}
            for i, p, (a, b) in zip(row_ids, preds, probs, strict=True)
        ]
    return [
        {"id": i, "prediction": p, "probabilities": dict(zip(names, pr, strict=True))}
        for i, p, pr in zip(row_ids, preds, probs, strict=True)
    ]


def _count_answers(
    metrics: Metrics, model: ServedModel, preds: list[Any], proba: np.ndarray | None, n: int
) -> None:
    """The predicted classes (regression: values) and the rows, in the Prometheus metrics."""
    if proba is not None:
        for cls, count in Counter(preds).items():
            metrics.classes.labels(str(cls)).inc(count)
    else:
        for v in preds:
            metrics.values.observe(float(v))
    metrics.rows.labels(model.version).inc(n)


async def feedback(request: Request) -> Any:
    state = _state(request)
    too_big = _body_limit(state, request)
    if too_big is not None:
        return too_big
    body = await request.body()
    try:
        payload = _parse_json(body)
    except ValueError as e:
        return _json({"detail": f"the body is not valid JSON: {str(e)[:200]}"}, 422)
    items = payload if isinstance(payload, list) else [payload]
    ids, labels, errors = _check_feedback(items, state.slot.current)
    if errors:
        return _json(
            {"detail": f"{len(errors)} bad field(s)", "errors": errors[:MAX_ERRORS_LISTED]}, 422
        )
    if state.writer is not None:
        state.writer.put(
            FEEDBACK, pd.DataFrame({"served_row_id": ids, LABEL: labels, "labelled_at": _now()})
        )
    state.metrics.feedback.inc(len(ids))
    return _json({"accepted": len(ids)}, 202)


def _check_feedback(
    items: list[Any], model: ServedModel | None
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """The row ids and the labels (as their classes' text) of ``items``, and errors that name
    each bad field."""
    errors: list[dict[str, Any]] = []
    ids: list[str] = []
    labels: list[str] = []
    classes = {str(c) for c in (model.classes or [])} if model else set()
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            errors.append({"row": i, "field": None, "error": "expected {id, label}"})
            continue
        extra = it.keys() - {"id", LABEL}
        for name in sorted(extra):
            errors.append({"row": i, "field": name, "error": "not a feedback field"})
        rid, label = it.get("id"), it.get(LABEL)
        if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
            errors.append(
                {
                    "row": i,
                    "field": "id",
                    "error": "the id of a served row (from /predict) is required",
                }
            )
        if label is None or isinstance(label, list | dict):
            errors.append({"row": i, "field": LABEL, "error": "a label value is required"})
        elif model is not None and _class_text(label, classes) is None:
            errors.append(
                {
                    "row": i,
                    "field": LABEL,
                    "error": (
                        f"{_excerpt(label)} is not a class of this model "
                        f"({', '.join(sorted(classes))})"
                        if classes
                        else f"expected a number, got {_excerpt(label)}"
                    ),
                }
            )
        ids.append(str(rid))
        labels.append(_class_text(label, classes) or str(label))
    return ids, labels, errors


def health(request: Request) -> Any:
    model = _state(request).slot.current
    return _json(
        {
            "status": "ok" if model else "waiting for a champion",
            "ready": model is not None,
            "version": model.version if model else None,
        },
        200,
        model.version if model else None,
    )


def model_info(request: Request) -> Any:
    state = _state(request)
    slot, scfg = state.slot, state.settings.serving
    model = slot.current
    return _json(
        {
            "project": state.settings.project,
            **(model.describe() if model else {"version": None}),
            "shadow": slot.shadow.describe() if slot.shadow else None,
            "last_error": slot.last_error,
            "poll_seconds": scfg.poll_seconds,
            "log": scfg.log,
            "log_waiting_rows": state.writer.waiting if state.writer else 0,
            "started_at": state.started_at.isoformat(),
        },
        200,
        model.version if model else None,
    )


def reload(request: Request) -> Any:
    res = _state(request).slot.refresh(force=True)
    return _json(res, 200 if not res.get("error") else 409, res.get("version"))


def prom(request: Request) -> Any:
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = _state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


# every app's routes: (method, path, handler, summary); a handler finds its app's state on the
# request (``request.app.state.mlops``)
_ROUTES: tuple[tuple[str, str, Callable[..., Any], str], ...] = (
    ("POST", "/predict", predict, "Predict one record or a list of records"),
    ("POST", "/feedback", feedback, "Labels for served rows, by row id"),
    ("GET", "/health", health, "Is the process up, and is a model served?"),
    ("GET", "/model", model_info, "The served version: since when, its hash and features"),
    (
        "POST",
        "/reload",
        reload,
        "Serve the champion alias's version now (off the request path of predictions)",
    ),
    ("GET", "/metrics", prom, "Prometheus metrics"),
)
_ENDPOINTS = frozenset({"/predict", "/feedback", "/health", "/model", "/metrics", "/reload"})


class _CountMiddleware:
    """Requests and latency by endpoint and status, and ``X-Model-Version`` on every answer.
    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` costs a millisecond a
    request."""

    def __init__(self, app: Any, metrics: Metrics, slot: ModelSlot) -> None:
        self.app, self.metrics, self.slot = app, metrics, slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
        status = {"code": 500}

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = message.setdefault("headers", [])
                served = self.slot.current
                if served is not None and not any(
                    k.lower() == b"x-model-version" for k, _ in headers
                ):
                    message["headers"] = [*headers, (b"x-model-version", served.version.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def _shadow_columns(shadow: ServedModel | None, frame: dict[str, Any]) -> dict[str, Any]:
    """The shadow's answers for the log (``shadow_version``, ``shadow_prediction``,
    ``shadow_proba_<class>``); none when no shadow runs or it fails (never the request)."""
    if shadow is None:
        return {}
    try:
        out = shadow.predict(frame)
    except Exception as e:  # a shadow's failure never fails a request
        log.warning("serving: shadow v%s failed: %s", shadow.version, e)
        return {}
    return {
        "shadow_version": shadow.version,
        "shadow_prediction": out["prediction"].astype(str).to_numpy(),
        **{f"shadow_{c}": out[c].to_numpy() for c in out.columns if c.startswith("proba_")},
    }


def _class_text(label: Any, classes: set[str]) -> str | None:
    """The class ``label`` names, as text (``1``, ``1.0`` and ``true`` name class "1"); with no
    classes (regression) the value as text. None: no class of the model."""
    if not classes:  # regression
        ok = isinstance(label, int | float) and not isinstance(label, bool) and math.isfinite(label)
        return str(label) if ok else None
    forms = [str(label)]
    if isinstance(label, bool) or (isinstance(label, float) and label.is_integer()):
        forms.append(str(int(label)))
    return next((f for f in forms if f in classes), None)


async def _run(fn: Callable[..., Any], *args: Any) -> Any:
    """CPU work in the thread pool: the event loop keeps answering health and metrics."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def serve(settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port or settings.serving.port,
        log_level="warning",
        access_log=False,
    )
