"""The typed project configuration, loaded from ``mlops.yaml``.

One :class:`Settings` object is loaded once at an entry point (:func:`load_config`) and passed
down. Environment variables override any key: ``MLOPS_STORAGE__MLFLOW_URI`` overrides
``storage.mlflow_uri`` (sections joined by a double underscore), which is how secrets and URLs
stay out of committed files. Unknown keys and wrong types are errors naming the key and the file.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mlops_core.errors import ConfigError

ENV_PREFIX = "MLOPS_"
DEFAULT_CONFIG = Path("mlops.yaml")

Severity = Literal["fatal", "warning", "off"]
Task = Literal["binary", "multiclass", "regression"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CsvOptions(_Section):
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"


class SourceConfig(_Section):
    """Where new data comes from. ``kind`` picks the reader; the other keys are its settings."""

    kind: Literal["file", "folder", "sql", "http"]
    path: Path | None = None  # file or folder
    pattern: str = "*"  # folder: which files count (csv, parquet, json by extension)
    url: str | None = None  # sql: SQLAlchemy URL; http: endpoint
    query: str | None = None  # sql: the SELECT whose rows are ingested
    watermark: str | None = None  # sql/http: column that only grows (incremental reads)
    headers: dict[str, str] = Field(default_factory=dict)  # http: e.g. Authorization from env
    format: Literal["auto", "csv", "parquet", "json"] = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _check_kind(self) -> SourceConfig:
        need = {
            "file": ["path"],
            "folder": ["path"],
            "sql": ["url", "query", "watermark"],
            "http": ["url"],
        }[self.kind]
        missing = [k for k in need if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"source kind '{self.kind}' needs {', '.join(missing)}")
        return self


class FeatureColumns(_Section):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    boolean: list[str] = Field(default_factory=list)

    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.boolean]

    def kind_of(self, column: str) -> str | None:
        for kind in ("numeric", "categorical", "boolean"):
            if column in getattr(self, kind):
                return kind
        return None


class BatchConfig(_Section):
    """How incoming rows are cut into batches: by time period (``7D``, ``1D``, ``W``, ``MS``) or by
    row count. With neither, each file or read is one batch."""

    period: str | None = None
    size: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_of(self) -> BatchConfig:
        if self.period and self.size:
            raise ValueError("set batch.period or batch.size, not both")
        if self.period:
            from mlops_core.data.batching import (
                check_period,  # local: keeps pandas off config import
            )

            check_period(self.period)
        return self


class LimitsConfig(_Section):
    max_file_mb: float = Field(2048, gt=0)
    max_columns: int = Field(1000, gt=0)
    chunk_rows: int = Field(200_000, gt=0)


class DataConfig(_Section):
    source: SourceConfig | None = None  # None: `mlops ingest FILE ...` only
    id_column: str | None = None
    time_column: str | None = None
    time_format: str | None = None  # strftime format; None = infer (ISO, epoch, year)
    target: str | None = None
    features: FeatureColumns = Field(default_factory=FeatureColumns)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @model_validator(mode="after")
    def _one_role_each(self) -> DataConfig:
        f = self.features
        roles = [
            ("id_column", self.id_column),
            ("time_column", self.time_column),
            ("target", self.target),
            *(
                (f"features.{kind}", c)
                for kind in ("numeric", "categorical", "boolean")
                for c in getattr(f, kind)
            ),
        ]
        seen: dict[str, str] = {}
        for role, col in roles:
            if col is None:
                continue
            if col in seen:
                raise ValueError(
                    f"column '{col}' is given two roles ({seen[col]} and {role}); "
                    "each column has one"
                )
            seen[col] = role
        return self

    def columns(self) -> list[str]:
        """Every column the contract covers, in a stable order."""
        out = [c for c in (self.id_column, self.time_column) if c]
        out += [c for c in self.features.all() if c not in out]
        if self.target and self.target not in out:
            out.append(self.target)
        return out


# query parameters that carry credentials (matched as parts of the name: api_key, X-Token...)
_SECRET_PARAMS = (
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "sig",
    "signature",
    "credential",
    "session",
    "code",
)


def is_secret_param(name: str) -> bool:
    """Whether a URL query parameter is named like a credential (``api_key``, ``X-Token``)."""
    return any(w in name.lower() for w in _SECRET_PARAMS)


def redact_url(url: str) -> str:
    """``url`` fit to print or store: a password in it and the values of query parameters
    named like credentials (``token``, ``api_key``, ``sig``...) become ``***``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, "***" if is_secret_param(k) else v) for k, v in pairs],
                safe="*",
            )
    except ValueError:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


Detector = Literal["adwin", "page_hinkley", "ddm"]

RULES: dict[str, Severity] = {
    # file level: the file cannot be read into rows; always quarantined whole
    "empty_file": "fatal",
    "file_too_large": "fatal",
    "too_many_columns": "fatal",
    "corrupt_file": "fatal",
    "encoding": "fatal",
    "wrong_delimiter": "fatal",
    # schema contract
    "missing_columns": "fatal",
    "extra_columns": "warning",
    "duplicate_columns": "fatal",
    "renamed_columns": "fatal",
    "column_order": "warning",
    "dtype_mismatch": "fatal",
    "mixed_types": "fatal",
    # quality
    "all_null_feature": "fatal",
    "constant_feature": "warning",
    "null_rate_spike": "warning",
    "infinite_values": "fatal",
    "unrepresentable_values": "fatal",  # beyond float32, the models' number type
    "out_of_range": "warning",
    "unseen_categories": "warning",
    "missing_target": "warning",
    "null_labels": "warning",
    "single_class_labels": "warning",
    "unseen_classes": "fatal",  # binary: a third class
    "new_classes": "warning",  # multiclass: a class the contract has not seen
    "duplicate_ids": "fatal",
    "duplicate_rows": "warning",
    "timestamp_unparseable": "fatal",
    "timestamp_out_of_order": "warning",
    "timestamp_in_future": "fatal",
}


class ValidationConfig(_Section):
    """Which checks quarantine a batch (``fatal``), which only record a finding (``warning``), and
    which are ``off``. Unlisted rules keep their defaults (see ``RULES``)."""

    rules: dict[str, Severity] = Field(default_factory=dict)
    null_rate_increase: float = Field(0.3, ge=0, le=1)  # absolute rise over the contract's rate
    range_tolerance: float = Field(0.5, ge=0)  # allowed overshoot, as a share of the range
    max_categories: int = Field(1000, gt=0)  # above this a column is free text: no unseen check
    future_tolerance: str = "1h"  # timestamps later than now + this are "in the future"

    @field_validator("rules", mode="before")
    @classmethod
    def _bare_off(cls, rules: Any) -> Any:
        # YAML reads a bare `off` as false: `constant_feature: off` means the rule is off
        if isinstance(rules, dict):
            return {k: "off" if v is False else v for k, v in rules.items()}
        return rules

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, rules: dict[str, Severity]) -> dict[str, Severity]:
        unknown = sorted(set(rules) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; known rules: {sorted(RULES)}")
        return rules

    @field_validator("future_tolerance")
    @classmethod
    def _duration(cls, value: str) -> str:
        import pandas as pd  # local: keeps pandas off config import

        try:
            pd.Timedelta(value)
        except ValueError:
            raise ValueError(f"'{value}' is not a duration such as '1h' or '30min'") from None
        return value

    def severity(self, rule: str) -> Severity:
        return self.rules.get(rule, RULES[rule])


class StorageConfig(_Section):
    """Where the project's state lives. Each default keeps it on this machine, under the
    workspace; each URL moves one store to a server (see docs/scale-out.md). A URL that holds a
    password belongs in the environment, not in mlops.yaml: ``MLOPS_STORAGE__DB_URL``,
    ``MLOPS_STORAGE__MLFLOW_BACKEND_URI``, ``MLOPS_STORAGE__PREFECT_DB_URL`` override the keys."""

    workspace: Path = Path(".mlops")
    # metadata DB (batches, audit log, decisions): any SQLAlchemy URL, e.g.
    # postgresql+psycopg://user:pw@host/db; default: SQLite file in the workspace
    db_url: str | None = None
    # an MLflow you run (tracking URI, e.g. http://mlflow:5000): `mlops up` then starts none;
    # default: the MLflow server `mlops up` starts over the two keys below
    mlflow_uri: str | None = None
    # backend store of the MLflow server `mlops up` starts (a SQLAlchemy URL, e.g.
    # postgresql+psycopg://...); default: SQLite file in the workspace
    mlflow_backend_uri: str | None = None
    # artifact root of that server: a URI (s3://bucket/prefix, needs boto3 and credentials
    # wherever models are logged or loaded) or a folder; default: a folder in the workspace
    mlflow_artifacts: str | None = None
    # database of the Prefect server `mlops up` starts (its PREFECT_API_DATABASE_CONNECTION_URL,
    # postgresql+asyncpg://user:pw@host/db); default: SQLite in the workspace
    prefect_db_url: str | None = None

    @field_validator("prefect_db_url")
    @classmethod
    def _async_driver(cls, url: str | None) -> str | None:
        if url and not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError(
                "Prefect's server needs an async driver: postgresql+asyncpg://... "
                "(or sqlite+aiosqlite:///...)"
            )
        return url

    @model_validator(mode="after")
    def _one_mlflow(self) -> StorageConfig:
        own = [k for k in ("mlflow_backend_uri", "mlflow_artifacts") if getattr(self, k)]
        if self.mlflow_uri and own:
            raise ValueError(
                f"storage.mlflow_uri names an MLflow you run, so `mlops up` starts "
                f"none and {', '.join(own)} would be ignored: set one or the other"
            )
        return self


class OrchestrationConfig(_Section):
    """Where flow runs run. ``mlops up`` creates ``work_pool`` as a process pool and runs a
    worker on it; a pool of another type created beforehand (``prefect work-pool create NAME
    --type docker``, or ``kubernetes``) is only deployed to, and its workers run where Docker or
    Kubernetes is."""

    work_pool: str = Field("mlops", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class WindowConfig(_Section):
    """Which labelled rows a training run uses: the newest ``rows``, or those of the last
    ``period`` (e.g. ``90D``); with ``rows: null`` and no period, every labelled row.

    ``choose``: also try the newest half and quarter of the window (each of at least
    ``min_rows``) and keep the one that scores best on the newest rows, which none of them
    trained on: after a change, older rows teach the old concept; when nothing changed, the
    whole window wins. ``min_rows``: a window cut at a located change (or chosen) keeps at
    least this many rows, so that its hold-out is large enough to trust."""

    rows: int | None = Field(50_000, gt=0)
    period: str | None = None
    choose: bool = True
    min_rows: int = Field(1000, ge=10)

    @model_validator(mode="after")
    def _period(self) -> WindowConfig:
        if self.period:
            import pandas as pd

            try:
                pd.Timedelta(self.period)
            except ValueError:
                raise ValueError(
                    f"window period '{self.period}' is not a duration such as '90D' or '12h'"
                ) from None
        return self


class SearchConfig(_Section):
    """Hyper-parameter search budget: whichever of trials and seconds runs out first."""

    trials: int = Field(10, ge=1)
    timeout_s: float | None = Field(300, gt=0)


class ModelConfig(_Section):
    """How models are trained. ``engine``: ``local`` trains in this process on pandas frames;
    ``dask`` reads the window from the batch store as a ``dask.dataframe``, runs the search's
    trials in parallel on the cluster's workers and fits XGBoost through ``xgboost.dask``
    (see the ``dask`` section and docs/scale-out.md). Monitoring's drift check follows it."""

    type: Literal["xgboost", "linear", "forest"] = "xgboost"
    engine: Literal["local", "dask"] = "local"
    window: WindowConfig = Field(default_factory=WindowConfig)
    holdout: float = Field(0.2, gt=0, lt=0.5)  # latest share of rows: hold-out for the gate
    validation: float = Field(0.2, gt=0, lt=0.5)  # share of the rest: early stopping, search
    search: SearchConfig = Field(default_factory=SearchConfig)
    params: dict[str, Any] = Field(default_factory=dict)  # fixed hyper-parameters
    min_rows: int = Field(200, ge=10)
    leak_threshold: float = Field(0.99, gt=0.5, le=1.0)  # single-feature score = a leak
    reference_rows: int = Field(5000, ge=100)  # training sample kept for drift monitoring
    seed: int = 42

    @model_validator(mode="after")
    def _dask_trains_xgboost(self) -> ModelConfig:
        if self.engine == "dask" and self.type != "xgboost":
            raise ValueError(
                f"model.engine 'dask' trains XGBoost (through xgboost.dask); model.type is "
                f"'{self.type}': set it to 'xgboost', or keep model.engine 'local'"
            )
        return self


class DaskConfig(_Section):
    """The Dask cluster ``model.engine: dask`` runs on. ``address``: an existing scheduler
    (``tcp://scheduler:8786``); empty, a ``LocalCluster`` of ``n_workers`` processes on this
    machine for the run. Workers elsewhere read the batch store at the same path (a shared
    mount, docs/scale-out.md section 2). ``search_rows``: each trial of the search fits in one
    worker on a time-ordered sample of at most this many training rows; the final model trains
    on every row of the window across the workers."""

    address: str | None = None
    n_workers: int = Field(2, ge=1)  # LocalCluster only
    threads_per_worker: int = Field(1, ge=1)  # LocalCluster only
    memory_limit: str = "auto"  # per worker of the LocalCluster: "auto", "2GiB", "512MB"
    search_rows: int = Field(200_000, ge=1_000)


class GateConfig(_Section):
    """The promotion gate: every check must pass for a version to become pending (or, in auto
    mode, champion)."""

    metric: str | None = None  # default by task: roc_auc, f1_macro, rmse
    min_score: float | None = None
    min_improvement: float = 0.0  # over the champion on the same recent rows
    max_slice_regression: float | None = 0.05  # worst allowed drop on any slice
    slice_columns: list[str] = Field(default_factory=list)  # categorical columns to slice by
    smoke_test: bool = True  # load and predict the packaged model in a fresh process


class MonitoringConfig(_Section):
    """How new data is compared with the champion's reference sample."""

    schedule: str | None = None  # cron of the monitoring deployment, e.g. "0 * * * *"
    sample_rows: int = Field(50_000, ge=1_000)  # seeded sample per side for the statistics
    min_rows: int = Field(100, ge=10)  # fewer rows: "not enough data", no verdict
    method: str | None = None  # None: Evidently's default per column (it depends on size)
    threshold: float | None = None  # None: the method's default
    drift_share: float = Field(0.5, gt=0, le=1)  # share of drifted columns = dataset drift
    weight_by_importance: bool = True  # also report drift weighted by feature importance
    report: Literal["on_drift", "always", "never"] = "on_drift"  # the HTML report
    # what a monitoring run measures: the ingested batches, what serving answered (the
    # prediction log, with the labels /feedback joined), or both
    source: Literal["batches", "predictions", "both"] = "batches"
    seed: int = 0


def parse_span(value: str) -> tuple[float, str]:
    """A policy duration: ``"6 batches"`` → ``(6, "batches")``; ``"12h"``, ``"90D"`` →
    ``(seconds, "seconds")``. Raises ``ValueError`` naming the accepted forms."""
    import re

    import pandas as pd

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*batch(?:es)?\s*", str(value))
    if m:
        return float(m.group(1)), "batches"
    try:
        return pd.Timedelta(value).total_seconds(), "seconds"
    except ValueError:
        raise ValueError(
            f"'{value}' is neither a number of batches ('6 batches') nor a duration ('12h', '90D')"
        ) from None


class RetrainingConfig(_Section):
    """The retraining policy: which signals count, and the brakes on retraining.

    Durations (``max_model_age``, ``cooldown``, ``per``) are in data time (the batches' time
    column; the wall clock without one), either as a duration (``90D``) or as a number of
    batches (``6 batches``: six times the median batch period), which scales the policy to the
    cadence of the data: yearly, weekly or hourly batches."""

    schedule: str | None = None  # cron of the training deployment, e.g. "0 3 * * 1"
    # retrain when the champion's data is older than this: the backstop when no signal speaks
    max_model_age: str | None = "8 batches"
    performance_drop: float | None = Field(0.05, ge=0)  # realised metric below the champion's
    estimated_drop: float | None = Field(0.05, ge=0)  # label-free estimate below it
    drift_share: float | None = Field(0.5, gt=0, le=1)  # drifted share (weighted if enabled)
    # data drift asks only when the previous monitoring run saw it too (false: at once): one
    # small batch's drift tests raise false alarms at their significance level
    drift_persists: bool = True
    # ADWIN by default: quiet on stationary error streams in our tests, where DDM (and
    # Page-Hinkley on unscaled regression errors) raised false alarms
    detectors: list[Detector] = Field(default_factory=lambda: list[Detector](["adwin"]))
    cooldown: str = "2 batches"  # no retrain sooner than this after the last one
    max_retrains: int = Field(2, ge=1)  # at most this many retrains ...
    per: str = "10 batches"  # ... per this period (2 per 10: at most a fifth of the batches)
    # new labelled rows since the last training: a count (500), or below 1 a share of the
    # rows the champion was trained on (0.1)
    min_new_labels: float = Field(0.1, ge=0)
    # retrain when the training window holds this many times the labelled rows the model was
    # trained on: a young project's data, or the rows since a located change, where a retrain
    # after the error rose starts its window (null: neither; the window is model.window)
    window_growth: float | None = Field(2.0, gt=1)
    # a slice (gate.slice_columns, else the champion's top categorical features) that fell
    # behind the rest by more than gate.max_slice_regression and beyond its noise asks for a
    # retrain. Off by default: every run measures and shows the slices, but the backtester
    # cannot replay slices, so no evidence yet says the signal improves the policy in general
    slice_regression: bool = False

    @model_validator(mode="after")
    def _durations(self) -> RetrainingConfig:
        for key in ("max_model_age", "cooldown", "per"):
            value = getattr(self, key)
            if value is not None:
                try:
                    parse_span(value)
                except ValueError as e:
                    raise ValueError(f"{key}: {e}") from None
        if self.min_new_labels >= 1 and self.min_new_labels != int(self.min_new_labels):
            raise ValueError("min_new_labels: a whole number of rows, or a share below 1")
        return self


class PromotionConfig(_Section):
    mode: Literal["manual", "auto"] = "manual"


class DashboardConfig(_Section):
    """Who may use the dashboard and how they sign in. ``none``: everyone is an approver (for
    local use only; the dashboard shows a warning); ``password``: users, password hashes and
    roles in ``users_file`` (``mlops users add``), kept outside the repository; ``oidc``:
    Streamlit's ``st.login``, with ``approvers`` (emails) as approvers and everyone else a
    viewer. Roles are checked by mlops_core at the moment of every write."""

    auth: Literal["none", "password", "oidc"] = "none"
    users_file: Path | None = None  # default ~/.config/mlops/<project>/users.yaml
    approvers: list[str] = Field(default_factory=list)  # oidc: emails (or names) of approvers
    four_eyes: bool = False  # the approver of a version must not be who requested its retrain
    port: int = Field(8501, ge=1, le=65535)  # where `mlops up` serves the dashboard

    @field_validator("approvers")
    @classmethod
    def _no_blank(cls, approvers: list[str]) -> list[str]:
        names = [a.strip() for a in approvers]
        if any(not a for a in names):
            raise ValueError("an approver cannot be blank")
        return names


class OnlineConfig(_Section):
    """The online model: the champion (an XGBoost model) continued on the labels that arrive,
    from /feedback and labelled batches, a few trees per update (`mlops learn`, or the
    online-update deployment on ``schedule``). Each update is a version, gated against the
    champion and approved like any other; serving runs the newest one in shadow."""

    enabled: bool = False  # the online-update deployment, and the shadow in serving
    schedule: str | None = "0 * * * *"  # cron of the online-update deployment (when enabled)
    min_rows: int = Field(200, ge=1)  # fewer new labelled rows: nothing to learn yet


class ServingConfig(_Section):
    """`mlops serve`: the champion behind a FastAPI app. It follows the ``champion`` alias
    (told by the promote flow, and polling every ``poll_seconds``), loads and checks a new
    version off the request path and swaps it in whole."""

    port: int = Field(8000, ge=1, le=65535)  # where `mlops up` serves (any free port if taken)
    max_rows: int = Field(10_000, ge=1)  # rows per /predict request
    max_body_mb: float = Field(20.0, gt=0)  # request size limit
    poll_seconds: float = Field(10.0, ge=0.5)
    log: bool = True  # the prediction log under <workspace>/predictions
    log_queue_rows: int = Field(200_000, ge=1_000)  # rows waiting to be written, at most
    log_flush_seconds: float = Field(2.0, gt=0)  # a log segment at least this often
    shadow: bool = True  # with online.enabled, the newest online version predicts beside the
    # champion on every request (logged, never returned)


class Settings(_Section):
    project: str = Field("project", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Task = "binary"
    data: DataConfig = Field(default_factory=DataConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    retraining: RetrainingConfig = Field(default_factory=RetrainingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)

    # where the file was read from; relative paths in it are relative to its folder
    config_path: Path | None = Field(None, exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.config_path.parent if self.config_path else Path.cwd()

    def resolve(self, path: Path | str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    @property
    def workspace(self) -> Path:
        return self.resolve(self.storage.workspace)

    @property
    def db_url(self) -> str:
        return self.storage.db_url or f"sqlite:///{self.workspace / 'metadata.db'}"


_TOP_LEVEL_ENV = ("PROJECT", "TASK")


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Merge ``MLOPS_A__B=value`` variables into ``raw``; returns {dotted key: variable name}."""
    applied: dict[str, str] = {}
    for name, value in sorted(environ.items()):
        rest = name[len(ENV_PREFIX) :]
        if not name.startswith(ENV_PREFIX) or ("__" not in rest and rest not in _TOP_LEVEL_ENV):
            continue
        keys = [k.lower() for k in rest.split("__")]
        node = raw
        for k in keys[:-1]:
            child = node.get(k)
            if not isinstance(child, dict):
                child = {}
                node[k] = child
            node = child
        node[keys[-1]] = _env_value(value)
        applied[".".join(keys)] = name
    return applied


def _env_value(value: str) -> Any:
    """A variable's value: YAML for a list (``[a, b]``), a mapping (``{k: v}``) or null (empty,
    ``null``, ``~``); otherwise the text as it is, every character kept (a password may hold
    ``#``, ``%`` or ``: ``, a token may be all digits). Numbers and booleans are read from the
    text by the settings' types."""
    text = value.strip()
    if text in ("", "null", "~"):
        return None
    if text[0] in "[{":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return value
    return value


def _format_errors(err: ValidationError, where: str, from_env: dict[str, str]) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        origin = f" (from ${from_env[key]})" if key in from_env else ""
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        lines.append(f"  {key}{origin}: {msg}")
    return f"{where}: invalid configuration\n" + "\n".join(lines)


def parse_config(
    raw: Mapping[str, Any] | None,
    *,
    source: str = "<config>",
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate a configuration mapping (plus environment overrides) into :class:`Settings`."""
    data: dict[str, Any] = copy.deepcopy(dict(raw or {}))  # env overrides: not the caller's
    from_env = _apply_env(data, os.environ if environ is None else environ)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source, from_env)) from None
    settings.config_path = config_path
    return settings


def load_config(
    path: Path | str = DEFAULT_CONFIG, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read ``mlops.yaml`` (or ``path``) into typed settings; raises :class:`ConfigError`."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(
            f"{path}: no configuration file here; create one with "
            f"`mlops init --data FILE --target COLUMN`"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return parse_config(raw, source=str(path), config_path=path, environ=environ)
