"""`mlops init`: infer a project configuration from a sample of a data file and write it as a
commented ``mlops.yaml`` that people edit."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from mlops_core.config import Task, parse_config
from mlops_core.data.sources import detect_format
from mlops_core.errors import ConfigError, FileRejected

SAMPLE_ROWS = 20_000


@dataclass
class InferredSchema:
    task: str
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    boolean: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why


def read_sample(path: Path, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """The first ``rows`` rows of a CSV, Parquet or JSON file."""
    fmt = detect_format(path)
    if fmt == "parquet":
        pf = pq.ParquetFile(path)
        batch = next(pf.iter_batches(batch_size=rows), None)
        if batch is None:
            raise FileRejected("empty_file", f"{path.name} has no rows")
        return batch.to_pandas()
    if fmt == "csv":
        return pd.read_csv(path, nrows=rows)
    return pd.read_json(path, lines=path.suffix in (".jsonl", ".ndjson")).head(rows)


def infer_task(y: pd.Series) -> Task:
    values = y.dropna()
    n_unique = values.nunique()
    if n_unique <= 2:
        return "binary"
    if pd.api.types.is_float_dtype(values) and not (values % 1 == 0).all():
        return "regression"
    if pd.api.types.is_numeric_dtype(values) and n_unique > 20:
        return "regression"
    return "multiclass"


def infer_schema(
    df: pd.DataFrame, target: str, time: str | None, id_col: str | None
) -> InferredSchema:
    missing = [c for c in (target, time, id_col) if c and c not in df.columns]
    if missing:
        raise ConfigError(
            f"column(s) not in the data: {', '.join(missing)}; "
            f"the columns are: {', '.join(map(str, df.columns))}"
        )
    out = InferredSchema(task=infer_task(df[target]))
    n = len(df)
    for c in df.columns:
        if c in (target, time, id_col):
            continue
        s = df[c]
        if s.isna().all():
            out.left_out[c] = "every value is missing in the sample"
        elif pd.api.types.is_bool_dtype(s):
            out.boolean.append(c)
        elif pd.api.types.is_datetime64_any_dtype(s):
            out.left_out[c] = "a timestamp; derive features from it before ingestion"
        elif pd.api.types.is_numeric_dtype(s):
            out.numeric.append(c)
        else:
            distinct = s.nunique(dropna=True)
            if n >= 50 and distinct > 0.5 * n:
                out.left_out[c] = (
                    f"text with {distinct:,} distinct values in {n:,} rows (an id or free text?)"
                )
            else:
                out.categorical.append(c)
    return out


def _yaml_list(items: list[str]) -> str:
    if not items:
        return "[]"
    import yaml

    return yaml.safe_dump(items, default_flow_style=True, width=88, allow_unicode=True).strip()


def _yaml_scalar(value: object) -> str:
    """``value`` as one YAML scalar: quoted where YAML would read it otherwise (``yes``,
    ``null``, ``1``, ``a: b``, ``#x``)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    return text.removesuffix("...\n").strip()


# the commented mlops.yaml `mlops init` writes; render_config fills it in
CONFIG_TEMPLATE = """\
# mlops.yaml: the one configuration of this project. Written by `mlops init`; edit freely.
# Environment variables override any key: MLOPS_STORAGE__DB_URL=postgresql://... sets
# storage.db_url (sections joined by a double underscore). Keep secrets there, not here.

project: {project}
task: {task}            # binary | multiclass | regression (inferred from '{target}')

data:
  source:
    kind: {source_kind}          # file | folder | sql | http
    path: {data}
    # folder:  path: landing/   pattern: "*.csv"      (each new file is ingested once)
    # sql:     url: postgresql://user@host/db   query: SELECT * FROM events   watermark: updated_at
    # http:    url: https://feed.example/records  (CSV or JSON records)  watermark: updated_at
  id_column: {id_col}
  time_column: {time}
  target: {target_yaml}
  features:             # inferred from a sample of {sample_rows:,} rows{left}
    numeric: {numeric}
    categorical: {categorical}
    boolean: {boolean}
  batch:
{batch}
  limits:
    max_file_mb: 2048     # larger files are quarantined
    max_columns: 1000
    chunk_rows: 200000    # rows read at a time: bounds memory

validation:
  # Which findings quarantine a batch (fatal), are only recorded (warning), or are off.
  # Defaults: `mlops_core.config.RULES`. For example:
  rules:
    unseen_categories: warning
    out_of_range: warning
    duplicate_ids: fatal
  null_rate_increase: 0.3   # warn when a column's missing share rises by more than this
  range_tolerance: 0.5      # numbers may overshoot the contract's range by this share of it

storage:
  workspace: {workspace}      # batches, quarantine, contract, reports, metadata DB
  db_url: null            # default: SQLite in the workspace; any SQLAlchemy URL works
  mlflow_uri: null        # default: a local MLflow server over the workspace

model:
  type: xgboost           # xgboost | linear | forest
  engine: local           # local | dask: the window, the search and XGBoost on a Dask cluster
  window:                 # which labelled rows train a model (newest first)
    rows: 50000           #   the newest rows (null and no period: every labelled row)
    period: null          #   or those of a period, e.g. 180D
    choose: true          #   also try the newest half and quarter; keep what predicts best
    min_rows: 1000        #   a window cut at a located change keeps at least this many
  holdout: 0.2            # newest share of the window, kept unseen for the gate
  search:
    trials: {trials}             # hyper-parameter search budget: trials and/or seconds
    timeout_s: 300
  min_rows: 200

dask:                     # with model.engine: dask (docs/scale-out.md, section 4)
  address: null           # a scheduler, e.g. tcp://scheduler:8786; null: a LocalCluster here
  n_workers: 2            #   the LocalCluster's worker processes
  memory_limit: auto      #   and each one's memory limit, e.g. 4GiB

gate:                     # every check must pass for a version to await approval
  metric: null            # default by task: roc_auc, f1_macro or rmse
  min_score: null         # e.g. 0.7
  min_improvement: 0.0    # over the champion, on the same newest rows
  max_slice_regression: 0.05
  slice_columns: []       # categorical columns whose slices must not regress, e.g. {cands}
  smoke_test: true        # load and predict the packaged model in a fresh process

monitoring:               # new batches against the champion's reference sample
  sample_rows: 50000      # seeded sample per side for the drift statistics (fast on big data)
  min_rows: 100           # fewer rows: "not enough data", no verdict
  method: null            # null: Evidently's default test per column; or psi, wasserstein...
  drift_share: 0.5        # share of drifted columns that makes a dataset drift
  weight_by_importance: true   # also weigh each column's drift by the champion's importance
  report: on_drift        # the Evidently HTML report: on_drift | always | never
  source: {monitoring_source:<15} # batches | predictions (what serving answered) | both

retraining:               # the policy: which signals ask for a retrain, and the brakes
  # durations are in data time (the time column), as a duration (90D) or in batches
  max_model_age: 8 batches   # schedule: retrain when the champion's data is this old
  performance_drop: 0.05  # realised metric below the champion's by more than this
  estimated_drop: 0.05    # label-free estimate below it by more than this
  drift_share: 0.5        # drift share (importance-weighted when known) at or above this
  drift_persists: true    # ...in two monitoring runs in a row (false: at once)
  detectors: [adwin]      # concept-drift detectors on the error stream (adwin, ddm, page_hinkley)
  cooldown: {cooldown:<14}# no retrain sooner than this after the last one
  max_retrains: 2         # at most this many retrains...
  per: 10 batches         # ...per this period
  min_new_labels: 0.1     # new labelled rows since the last training (below 1: a share of
                          # the rows the champion was trained on)
  window_growth: 2        # retrain when the training window holds 2x the rows the model had

promotion:
  mode: manual            # manual: a person approves each new champion; auto: the gate decides

serving:                  # `mlops serve` (started by `mlops up`): the champion over HTTP
  port: 8000              # any free port when taken
  poll_seconds: 10        # how often it checks the champion alias (promotions also tell it)
  max_rows: 10000         # rows per /predict request
  log: true               # the prediction log under the workspace (monitoring.source)

online:                   # the champion continued on the labels that arrive (`mlops learn`)
  enabled: {online:<17}# the online-update deployment, and its shadow in serving
  schedule: "0 * * * *"   # cron of the online-update deployment
  min_rows: 200           # fewer new labelled rows: nothing to learn yet
"""


def render_config(
    *,
    project: str,
    data: Path,
    target: str,
    time: str | None,
    id_col: str | None,
    schema: InferredSchema,
    workspace: str = ".mlops",
    source_kind: str = "file",
    trials: int = 10,
    cooldown: str = "2 batches",
    monitoring_source: str = "batches",
    online: bool = False,
) -> str:
    """The text of a commented ``mlops.yaml``. ``cooldown``: the retraining policy's."""
    left = "".join(f"\n    #   {c}: {why}" for c, why in schema.left_out.items())
    cands = _yaml_list(schema.categorical[:2])
    batch = (
        "    period: W          # one batch per calendar week of the time column ('1D', '7D', 'MS')"
        if time
        else "    size: 10000        # rows per batch (no time column was given)"
    )
    return CONFIG_TEMPLATE.format(
        project=_yaml_scalar(project),
        task=schema.task,
        target=target,
        source_kind=source_kind,
        data=_yaml_scalar(str(data)),
        id_col=_yaml_scalar(id_col),
        time=_yaml_scalar(time),
        target_yaml=_yaml_scalar(target),
        sample_rows=SAMPLE_ROWS,
        left=left,
        numeric=_yaml_list(schema.numeric),
        categorical=_yaml_list(schema.categorical),
        boolean=_yaml_list(schema.boolean),
        batch=batch,
        workspace=workspace,
        trials=trials,
        cands=cands,
        monitoring_source=monitoring_source,
        cooldown=cooldown,
        online=str(online).lower(),
    )


def init_project(
    data: Path,
    target: str,
    *,
    time: str | None = None,
    id_col: str | None = None,
    out: Path = Path("mlops.yaml"),
    project: str | None = None,
    force: bool = False,
) -> tuple[Path, InferredSchema]:
    """Write ``out`` from a sample of ``data``; refuses to overwrite unless ``force``."""
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to overwrite it")
    if not data.is_file():
        raise ConfigError(f"{data}: no such file")
    sample = read_sample(data)
    schema = infer_schema(sample, target, time, id_col)
    name = (
        project
        or "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in data.stem).strip("-")
        or "project"
    )
    try:
        rel = Path(os.path.relpath(data.resolve(), out.resolve().parent))
    except ValueError:
        rel = data.resolve()
    text = render_config(
        project=name, data=rel, target=target, time=time, id_col=id_col, schema=schema
    )
    import yaml

    parse_config(yaml.safe_load(text), source=str(out), environ={})  # we never write a bad one
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out, schema
