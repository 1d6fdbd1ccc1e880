"""Schema contract and quality checks for a batch.

The first accepted batch freezes a :class:`SchemaContract` (columns, kinds, dtypes, categories,
numeric ranges, null rates), kept as YAML in the workspace so people can read and edit it. Every
later batch is checked against it and against quality rules; :func:`validate_batch` returns one
:class:`ValidationReport` listing every finding (never raising on the first), each with the
severity the configuration gives its rule. What to do about the findings is the caller's job.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict

from mlops_core.config import Settings, ValidationConfig
from mlops_core.data.batching import parse_times
from mlops_core.errors import excerpt

Kind = Literal["numeric", "categorical", "boolean", "datetime"]
Role = Literal["id", "time", "feature", "target"]
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_MIN_ROWS_FOR_CONSTANT = 30  # below this a constant column is likely chance, not a fault


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # fatal | warning
    message: str
    column: str | None = None
    count: int | None = None  # rows (or values) affected, where that means something

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    """Everything a check of one batch found, and the batch made ready for the store."""

    findings: list[Finding] = field(default_factory=list)
    frame: pd.DataFrame | None = None  # the conformed batch (typed columns, parsed times)
    has_labels: bool = False
    start_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def fatal(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "fatal"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def is_accepted(self) -> bool:
        return not self.fatal

    @property
    def reason(self) -> str:
        """One line for people: the fatal findings, else the warnings, else 'ok'."""
        shown = self.fatal or self.warnings
        return "; ".join(f.message for f in shown) if shown else "ok"


class ColumnContract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role
    kind: Kind
    dtype: str
    null_rate: float
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None  # None: too many to list (free text); no unseen check


class SchemaContract(BaseModel):
    """What a batch must look like. Frozen from the first accepted batch; edit the YAML to
    widen it (add a category, a range), then `mlops quarantine release` the batches it refused."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    frozen_at: datetime
    from_batch: str
    columns: list[ColumnContract]

    def column(self, name: str) -> ColumnContract | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


CONTRACT_FILE = "contract.yaml"
# XGBoost and the packaged models compute in float32: a larger magnitude becomes infinite there
FLOAT32_MAX = float(np.finfo(np.float32).max)


def load_contract(workspace: Path) -> SchemaContract | None:
    path = workspace / CONTRACT_FILE
    if not path.exists():
        return None
    return SchemaContract.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def save_contract(contract: SchemaContract, workspace: Path, *, exclusive: bool = True) -> bool:
    """Write the contract; with ``exclusive`` only if none exists yet (first writer wins).
    Returns whether this call wrote it."""
    path = workspace / CONTRACT_FILE
    workspace.mkdir(parents=True, exist_ok=True)
    body = (
        "# Schema contract: frozen from the first accepted batch. Edit it to widen it\n"
        "# (categories, ranges, null rates), then replay refused batches with\n"
        "# `mlops quarantine release ID`.\n"
        + yaml.safe_dump(
            contract.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True
        )
    )
    if not exclusive:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    return True


def _column_bytes(s: pd.Series) -> Iterator[bytes]:
    """Bytes that identify a column's values (not their file encoding), computed fast:
    fixed-width values as raw memory, everything else as codes over its distinct values."""
    dtype = s.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biu":  # bool, int, uint
        yield np.ascontiguousarray(s.to_numpy()).tobytes()
    elif pd.api.types.is_float_dtype(dtype) and isinstance(dtype, np.dtype):
        a = s.to_numpy(dtype="float64", copy=True)
        a[np.isnan(a)] = np.nan  # one NaN bit pattern
        yield a.tobytes()
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        yield np.ascontiguousarray(s.to_numpy(dtype="datetime64[ns]").view("int64")).tobytes()
    else:  # text, categories, mixed objects, nullable extension types
        try:
            codes, uniques = pd.factorize(s, use_na_sentinel=True)
        except TypeError:  # unhashable values (lists, dicts): by their text
            codes, uniques = pd.factorize(s.map(repr), use_na_sentinel=True)
        yield np.ascontiguousarray(codes.astype(np.int64)).tobytes()
        yield "\x1e".join(f"{type(v).__name__}:{v!r}" for v in uniques).encode(
            "utf-8", "surrogatepass"
        )


def content_hash(df: pd.DataFrame) -> str:
    """sha256 of a frame's content (column names, dtypes and values), independent of the index
    and of how the data was stored."""
    h = hashlib.sha256()
    h.update("\x1f".join(f"{c}:{df[c].dtype}" for c in df.columns).encode("utf-8", "surrogatepass"))
    for i in range(df.shape[1]):
        h.update(b"\x1d")
        for chunk in _column_bytes(df.iloc[:, i]):
            h.update(chunk)
    return h.hexdigest()


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _example(values: pd.Series, k: int = 3) -> str:
    """Up to ``k`` distinct values for a message, each cut to a short excerpt."""
    ex = pd.unique(values.dropna().astype(str))[:k]
    return ", ".join(repr(excerpt(v)) for v in ex)


def _classes(y: pd.Series) -> list[str]:
    """The distinct labels of a classification target, as text ('1', not '1.0')."""
    return sorted(set(as_text(y.dropna()).tolist()))


def _infer_kind(s: pd.Series) -> Kind:
    if pd.api.types.is_bool_dtype(s):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s):
        return "numeric"
    return "categorical"


def _expected_kinds(
    settings: Settings, df: pd.DataFrame, contract: SchemaContract | None
) -> dict[str, tuple[Role, Kind]]:
    """{column: (role, kind)} that the batch should have."""
    d = settings.data
    if contract is not None:
        known = {c.name: (c.role, c.kind) for c in contract.columns}
        if d.target and d.target not in known and d.target in df:
            # frozen from a batch without labels: the target is typed as in a first batch
            known[d.target] = ("target", _target_kind(settings, df))
        return known
    out: dict[str, tuple[Role, Kind]] = {}
    if d.id_column:
        out[d.id_column] = (
            "id",
            _infer_kind(df[d.id_column]) if d.id_column in df else "categorical",
        )
    if d.time_column:
        out[d.time_column] = ("time", "datetime")
    features = d.features.all()
    if not features:  # nothing declared: every other column of the first batch is a feature
        features = [c for c in df.columns if c not in (d.id_column, d.time_column, d.target)]
    for c in features:
        kind = d.features.kind_of(c) or (_infer_kind(df[c]) if c in df else "numeric")
        out[c] = ("feature", kind)  # type: ignore[assignment]
    if d.target:
        out[d.target] = ("target", _target_kind(settings, df))
    return out


def _target_kind(settings: Settings, df: pd.DataFrame) -> Kind:
    target = settings.data.target
    if settings.task == "regression":
        return "numeric"
    return _infer_kind(df[target]) if target in df else "categorical"


def _to_numeric(s: pd.Series) -> tuple[pd.Series, int, int]:
    """(numbers, values that were not numbers, non-null values)."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype("float64"), 0, int(s.notna().sum())
    if pd.api.types.is_numeric_dtype(s):
        return s, 0, int(s.notna().sum())
    out = pd.to_numeric(s, errors="coerce")
    nonnull = int(s.notna().sum())
    return out, int(nonnull - out.notna().sum()), nonnull


def _to_boolean(s: pd.Series) -> tuple[pd.Series, int]:
    if pd.api.types.is_bool_dtype(s):
        return s, 0
    text = s.astype(str).str.strip().str.lower().mask(s.isna())
    values = np.full(len(text), None, dtype=object)
    values[text.isin(_TRUE).to_numpy()] = True
    values[text.isin(_FALSE).to_numpy()] = False
    out = pd.Series(values, index=s.index, dtype=object)
    bad = int((s.notna() & out.isna()).sum())
    return out, bad


def as_text(s: pd.Series) -> pd.Series:
    """Values as strings (missing kept missing); whole floats read '3', not '3.0'."""
    text = s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))
    if pd.api.types.is_float_dtype(s):
        whole = (s % 1 == 0) & (s.abs() < 2**53)
        text[whole] = s[whole].astype("int64").astype(str)
    return text


def _to_category(s: pd.Series) -> pd.Series:
    """A categorical feature as a pandas ``category`` of strings (compact, fast to check and
    to store)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        if cats.dtype == object and pd.api.types.infer_dtype(cats) == "string":
            return s
        names = as_text(pd.Series(cats))
        if names.is_unique:
            return s.cat.rename_categories(names.tolist())
        s = s.astype(object)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return s.astype("category")
    return as_text(s).astype("category")


def _present(s: pd.Series) -> np.ndarray:
    """The distinct non-missing values of a column (fast for categories)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy()
        return np.asarray(s.cat.categories[np.unique(codes[codes >= 0])], dtype=object)
    return pd.unique(s.dropna())


def _check_classes(
    y: pd.Series, settings: Settings, contract: SchemaContract | None, add: Callable[..., None]
) -> None:
    """The labels of a classification batch against the task and the contract's classes."""
    target = settings.data.target or str(y.name)
    seen = _classes(y)
    cc = contract.column(target) if contract else None
    known = list(cc.categories) if cc is not None and cc.categories is not None else []
    new = [c for c in seen if known and c not in known]
    if settings.task == "binary" and len(set(seen) | set(known)) > 2:
        shown = ", ".join(repr(excerpt(c)) for c in seen[:5])
        add(
            "unseen_classes",
            f"{target}: a binary target with "
            + (
                f"the new class(es) {', '.join(repr(excerpt(c)) for c in new[:5])} (known: "
                f"{', '.join(map(repr, known))})"
                if new
                else f"{len(seen)} classes ({shown})"
            )
            + "; if the task has more than two classes set task: multiclass",
            target,
            int(as_text(y.dropna()).isin(new).sum()) if new else None,
        )
    elif new:
        add(
            "new_classes",
            f"{target}: class(es) not in the contract: "
            + ", ".join(repr(excerpt(c)) for c in new[:5]),
            target,
            int(as_text(y.dropna()).isin(new).sum()),
        )
    if len(seen) == 1 and len(y) >= _MIN_ROWS_FOR_CONSTANT:
        add(
            "single_class_labels",
            f"{target}: every label is {excerpt(seen[0])!r}: a model "
            "cannot learn from this batch alone",
            target,
            len(y),
        )


_Add = Callable[..., None]  # add(rule, message, column=None, count=None): record one finding


def _adder(report: ValidationReport, vcfg: ValidationConfig) -> _Add:
    """A function that records a finding in ``report`` with its rule's configured severity."""

    def add(rule: str, message: str, column: str | None = None, count: int | None = None) -> None:
        severity = vcfg.severity(rule)
        if severity != "off":
            report.findings.append(Finding(rule, severity, message, column, count))

    return add


def _drop_duplicate_columns(df: pd.DataFrame, add: _Add) -> pd.DataFrame:
    """The batch with only the first of each repeated column name (the rest are reported)."""
    present = list(df.columns)
    dupes = sorted({c for c in present if present.count(c) > 1})
    if not dupes:
        return df
    # the first of each is checked; with the rule fatal the batch is refused
    add(
        "duplicate_columns",
        "column name(s) appear more than once: " + ", ".join(repr(excerpt(c)) for c in dupes[:5]),
        count=len(dupes),
    )
    return df.loc[:, ~df.columns.duplicated()]


def _check_columns(
    df: pd.DataFrame,
    expected: dict[str, tuple[Role, Kind]],
    settings: Settings,
    contract: SchemaContract | None,
    add: _Add,
) -> list[str]:
    """Missing, extra, renamed and reordered columns; returns the extra ones."""
    present = list(df.columns)
    target = settings.data.target if settings.data.target in expected else None
    missing = [c for c in expected if c not in df.columns and c != target]
    extra = [c for c in present if c not in expected]
    for m in list(missing):
        match = next((e for e in extra if _norm(e) == _norm(m)), None) or next(
            iter(difflib.get_close_matches(m, extra, n=1, cutoff=0.8)), None
        )
        if match:
            add("renamed_columns", f"column '{m}' looks renamed to '{match}'", m)
            missing.remove(m)
            extra.remove(match)
    if missing:
        add("missing_columns", f"missing column(s): {', '.join(missing)}", count=len(missing))
    if extra:
        add("extra_columns", f"unexpected column(s): {', '.join(extra)}", count=len(extra))
    order = [c for c in present if c in expected]
    if contract is not None and order != [c for c in expected if c in order]:
        add("column_order", "columns are in a different order than the contract")
    return extra


def _check_mixed_types(col: str, s: pd.Series, add: _Add) -> None:
    if s.dtype == object:
        inferred = pd.api.types.infer_dtype(s, skipna=True)
        if inferred in ("mixed", "mixed-integer"):
            add("mixed_types", f"{col}: values of mixed types (e.g. {_example(s)})", col)


def _conform_time(col: str, s: pd.Series, time_format: str | None, add: _Add) -> pd.Series:
    t = parse_times(s, time_format)
    bad = int((s.notna() & t.isna()).sum())
    if bad:
        add(
            "timestamp_unparseable",
            f"{col}: {bad:,} value(s) are not readable times "
            f"(e.g. {_example(s[s.notna() & t.isna()])})",
            col,
            bad,
        )
    return t


def _conform_numeric(col: str, s: pd.Series, add: _Add) -> tuple[pd.Series, bool]:
    """(numbers, whether the column is text rather than numbers)."""
    num, bad, nonnull = _to_numeric(s)
    if bad and bad == nonnull:
        add("dtype_mismatch", f"{col}: expected numbers, got text (e.g. {_example(s)})", col, bad)
        return num, True
    if bad:
        add(
            "mixed_types",
            f"{col}: {bad:,} of {nonnull:,} values are not numbers "
            f"(e.g. {_example(s[num.isna() & s.notna()])})",
            col,
            bad,
        )
    return num, False


def _conform_boolean(col: str, s: pd.Series, add: _Add) -> pd.Series:
    b, bad = _to_boolean(s)
    if bad:
        add(
            "dtype_mismatch",
            f"{col}: expected true/false, got {_example(s[b.isna() & s.notna()])}",
            col,
            bad,
        )
    return b


def _conform_categorical(col: str, role: Role, s: pd.Series, add: _Add) -> pd.Series:
    if s.dtype == object:
        _check_mixed_types(col, s, add)
    elif pd.api.types.is_datetime64_any_dtype(s):
        add("dtype_mismatch", f"{col}: expected categories, got timestamps", col)
    if role == "feature":
        return _to_category(s)
    return s if s.dtype == object else as_text(s)  # ids and class labels stay plain text


def _conform_column(
    col: str, role: Role, kind: Kind, s: pd.Series, settings: Settings, add: _Add
) -> tuple[pd.Series, bool]:
    """(the column typed as its kind, whether it has the wrong type altogether)."""
    if role == "time":
        return _conform_time(col, s, settings.data.time_format, add), False
    if isinstance(s.dtype, pd.CategoricalDtype) and kind != "categorical":
        s = s.astype(object)
    if kind != "categorical":
        _check_mixed_types(col, s, add)
    if kind == "numeric":
        return _conform_numeric(col, s, add)
    if kind == "boolean":
        return _conform_boolean(col, s, add), False
    if kind == "datetime":
        return parse_times(s), False
    return _conform_categorical(col, role, s, add), False


def _conform(
    df: pd.DataFrame,
    expected: dict[str, tuple[Role, Kind]],
    extra: list[str],
    settings: Settings,
    add: _Add,
) -> tuple[pd.DataFrame, set[str]]:
    """(the batch with typed columns, the columns of the wrong type altogether)."""
    out: dict[str, pd.Series] = {}
    mismatched: set[str] = set()  # wrong type: not also reported as "all missing"
    for col, (role, kind) in expected.items():
        if col not in df.columns:
            continue
        out[col], wrong = _conform_column(col, role, kind, df[col], settings, add)
        if wrong:
            mismatched.add(col)
    for col in extra:  # kept as they came; a warning says they are not part of the contract
        out[col] = df[col]
    return pd.DataFrame(out, index=df.index), mismatched


def _check_numeric_feature(
    col: str, s: pd.Series, n: int, cc: ColumnContract | None, vcfg: ValidationConfig, add: _Add
) -> None:
    """Infinite, unrepresentable, constant and out-of-range values."""
    v = s.to_numpy(dtype="float64", na_value=np.nan)
    inf = int(np.isinf(v).sum())
    if inf:
        add("infinite_values", f"{col}: {inf:,} infinite value(s)", col, inf)
    finite = v[np.isfinite(v)]
    huge = int((np.abs(finite) > FLOAT32_MAX).sum())
    if huge:
        add(
            "unrepresentable_values",
            f"{col}: {huge:,} value(s) beyond ±{FLOAT32_MAX:.4g}"
            f" (e.g. {_example(pd.Series(finite[np.abs(finite) > FLOAT32_MAX]))}), "
            "which the models cannot represent",
            col,
            huge,
        )
    if not len(finite):
        return
    lo, hi = float(finite.min()), float(finite.max())
    if (
        n >= _MIN_ROWS_FOR_CONSTANT
        and lo == hi
        and not (cc and cc.min is not None and cc.min == cc.max)
    ):
        add("constant_feature", f"{col}: every value is {lo:g}", col, n)
    if cc and cc.min is not None and cc.max is not None:
        slack = vcfg.range_tolerance * max(cc.max - cc.min, abs(cc.max) * 1e-9, 1e-12)
        outside = int(((finite < cc.min - slack) | (finite > cc.max + slack)).sum())
        if outside:
            add(
                "out_of_range",
                f"{col}: {outside:,} value(s) outside "
                f"[{cc.min:g}, {cc.max:g}] (seen {lo:g} to {hi:g})",
                col,
                outside,
            )


def _check_categorical_feature(
    col: str, kind: Kind, s: pd.Series, n: int, cc: ColumnContract | None, add: _Add
) -> None:
    """Constant columns and categories the contract does not list."""
    values = _present(s)
    if (
        n >= _MIN_ROWS_FOR_CONSTANT
        and len(values) == 1
        and not (cc and cc.categories is not None and len(cc.categories) == 1)
    ):
        add("constant_feature", f"{col}: every value is {values[0]!r}", col, n)
    if kind == "categorical" and cc and cc.categories is not None:
        known = set(cc.categories)
        new = [v for v in values if str(v) not in known]
        if new:
            rows = int(s.isin(new).sum())
            shown = ", ".join(repr(excerpt(v)) for v in new[:5]) + (" ..." if len(new) > 5 else "")
            add(
                "unseen_categories",
                f"{col}: {len(new)} unseen categor"
                f"{'y' if len(new) == 1 else 'ies'} in {rows:,} row(s): {shown}",
                col,
                rows,
            )


def _check_feature(
    col: str, kind: Kind, s: pd.Series, cc: ColumnContract | None, vcfg: ValidationConfig, add: _Add
) -> None:
    """Missing values, then the checks of the feature's kind."""
    n = len(s)
    nulls = int(s.isna().sum())
    if nulls == n:
        add("all_null_feature", f"{col}: every value is missing", col, n)
        return
    if cc is not None and nulls / n > cc.null_rate + vcfg.null_rate_increase:
        add(
            "null_rate_spike", f"{col}: {nulls / n:.0%} missing, was {cc.null_rate:.0%}", col, nulls
        )
    if kind == "numeric":
        _check_numeric_feature(col, s, n, cc, vcfg, add)
    else:
        _check_categorical_feature(col, kind, s, n, cc, add)


def _check_features(
    conformed: pd.DataFrame,
    expected: dict[str, tuple[Role, Kind]],
    mismatched: set[str],
    contract: SchemaContract | None,
    vcfg: ValidationConfig,
    add: _Add,
) -> None:
    for col, (role, kind) in expected.items():
        if col not in conformed.columns or role != "feature" or col in mismatched:
            continue
        cc = contract.column(col) if contract else None
        _check_feature(col, kind, conformed[col], cc, vcfg, add)


def _check_regression_labels(y: pd.Series, target: str, add: _Add) -> None:
    yv = y.to_numpy(dtype="float64", na_value=np.nan)
    if np.isinf(yv).any():
        add("infinite_values", f"{target}: infinite labels", target)
    elif (np.abs(yv[np.isfinite(yv)]) > FLOAT32_MAX).any():
        add(
            "unrepresentable_values",
            f"{target}: labels beyond ±{FLOAT32_MAX:.4g}, which the models cannot represent",
            target,
        )


def _check_labels(
    conformed: pd.DataFrame, settings: Settings, contract: SchemaContract | None, add: _Add
) -> bool:
    """The target column's checks; returns whether the batch has any label."""
    target = settings.data.target
    if not target:
        return False
    if target not in conformed.columns:
        add(
            "missing_target",
            f"no target column '{target}': usable for scoring and monitoring, not for training",
        )
        return False
    y = conformed[target]
    n = len(conformed)
    unlabelled = int(y.isna().sum())
    has_labels = unlabelled < n
    if unlabelled:
        add("null_labels", f"{target}: {unlabelled:,} of {n:,} labels missing", target, unlabelled)
    if settings.task != "regression" and has_labels:
        _check_classes(y, settings, contract, add)
    if settings.task == "regression" and has_labels:
        _check_regression_labels(y, target, add)
    return has_labels


def _check_duplicates(conformed: pd.DataFrame, id_column: str | None, add: _Add) -> None:
    """Repeated ids where the batch has an id column, else repeated rows."""
    if id_column and id_column in conformed.columns:
        dup = int(conformed[id_column].duplicated().sum())
        if dup:
            add(
                "duplicate_ids",
                f"{id_column}: {dup:,} duplicate id(s) (e.g. "
                f"{_example(conformed.loc[conformed[id_column].duplicated(), id_column])})",
                id_column,
                dup,
            )
        return
    try:
        dup = int(conformed.duplicated().sum())
    except TypeError:
        dup = 0
    if dup:
        add("duplicate_rows", f"{dup:,} duplicate row(s)", count=dup)


def _check_times(
    conformed: pd.DataFrame,
    time_column: str | None,
    vcfg: ValidationConfig,
    now: datetime,
    add: _Add,
) -> tuple[datetime | None, datetime | None]:
    """Times out of order or in the future; returns the batch's first and last time."""
    if not (time_column and time_column in conformed.columns):
        return None, None
    tv = conformed[time_column].dropna()
    if not len(tv):
        return None, None
    tn = tv.to_numpy()
    back = int((tn[1:] < tn[:-1]).sum())  # not diff(): it overflows over 292 years
    if back:
        add(
            "timestamp_out_of_order",
            f"{time_column}: {back:,} row(s) earlier than the row before",
            time_column,
            back,
        )
    limit = pd.Timestamp(now) + pd.Timedelta(vcfg.future_tolerance)
    future = int((tv > limit).sum())
    if future:
        add(
            "timestamp_in_future",
            f"{time_column}: {future:,} time(s) in the future (latest {tv.max()})",
            time_column,
            future,
        )
    # a datetime holds microseconds: the first and last time floored to them, said so (a
    # plain to_pydatetime() warns "Discarding nonzero nanoseconds" for each)
    return _to_datetime(tv.min()), _to_datetime(tv.max())


def _to_datetime(t: pd.Timestamp) -> datetime:
    """``t`` as a datetime, floored to the microsecond (a datetime holds no nanoseconds)."""
    return t.floor("us").to_pydatetime()


def validate_batch(
    df: pd.DataFrame, settings: Settings, contract: SchemaContract | None, now: datetime
) -> ValidationReport:
    """Check one batch; every failed check is a finding with its configured severity."""
    report = ValidationReport()
    add = _adder(report, settings.validation)
    if df.empty:
        add("empty_file", "the batch has no rows")
        return report
    df = _drop_duplicate_columns(df, add)
    expected = _expected_kinds(settings, df, contract)
    extra = _check_columns(df, expected, settings, contract, add)
    conformed, mismatched = _conform(df, expected, extra, settings, add)
    _check_features(conformed, expected, mismatched, contract, settings.validation, add)
    report.has_labels = _check_labels(conformed, settings, contract, add)
    _check_duplicates(conformed, settings.data.id_column, add)
    report.start_time, report.end_time = _check_times(
        conformed, settings.data.time_column, settings.validation, now, add
    )
    report.frame = conformed
    return report


def freeze_contract(
    frame: pd.DataFrame, settings: Settings, batch_id: str, now: datetime
) -> SchemaContract:
    """A contract describing ``frame`` (a conformed, accepted batch)."""
    expected = _expected_kinds(settings, frame, None)
    cols = []
    for name in frame.columns:  # the batch's own column order becomes the contract's
        if name not in expected:
            continue
        role, kind = expected[name]
        s = frame[name]
        cc: dict[str, Any] = {
            "name": name,
            "role": role,
            "kind": kind,
            "dtype": str(s.dtype),
            "null_rate": round(float(s.isna().mean()), 6),
        }
        if kind == "numeric" and role != "target":
            v = s.to_numpy(dtype="float64", na_value=np.nan)
            v = v[np.isfinite(v)]
            if len(v):
                cc["min"], cc["max"] = float(v.min()), float(v.max())
        elif kind == "categorical" and role == "feature":
            cats = {str(v) for v in _present(s)}
            if len(cats) <= settings.validation.max_categories:
                cc["categories"] = sorted(cats)
        if role == "target" and settings.task != "regression":
            classes = _classes(s)  # the classes seen first, numbers or text, as text
            if len(classes) <= settings.validation.max_categories:
                cc["categories"] = classes
        cols.append(ColumnContract(**cc))
    return SchemaContract(frozen_at=now, from_batch=batch_id, columns=cols)
