"""Schema contract and quality checks: every rule can fail and can pass, one report lists every
finding, severities come from the configuration, and random frames never crash the validator."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_core.config import RULES, Settings, parse_config
from mlops_core.data.validation import (
    CONTRACT_FILE,
    SchemaContract,
    ValidationReport,
    content_hash,
    freeze_contract,
    load_contract,
    save_contract,
    validate_batch,
)
from mlops_core.errors import ConfigError

NOW = datetime(2025, 6, 1, 12, 0, 0)
N_ROWS = 60
DATA = {
    "id_column": "id",
    "time_column": "ts",
    "target": "y",
    "features": {"numeric": ["income", "age"], "categorical": ["region"], "boolean": ["flag"]},
}


def _settings(workspace: Path, **sections: Any) -> Settings:
    raw: dict[str, Any] = {"storage": {"workspace": str(workspace)}, "data": DATA}
    raw.update(sections)
    return parse_config(raw, environ={})


def _clean(n: int = N_ROWS, seed: int = 7) -> pd.DataFrame:
    """A tidy batch as it would come from a CSV: ISO time strings, numbers, text, booleans."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "ts": pd.date_range("2025-01-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%S"),
            "income": rng.normal(50_000, 8_000, n).round(2),
            "age": rng.integers(18, 80, n),
            "region": rng.choice(["north", "south", "east"], n),
            "flag": rng.uniform(size=n) < 0.3,
            "y": np.r_[0, 1, rng.integers(0, 2, n - 2)],
        }
    )


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return _settings(tmp_path / "ws")


@pytest.fixture
def clean() -> pd.DataFrame:
    return _clean()


@pytest.fixture
def contract(cfg: Settings, clean: pd.DataFrame) -> SchemaContract:
    first = validate_batch(clean, cfg, None, NOW)
    assert first.findings == [] and first.frame is not None
    return freeze_contract(first.frame, cfg, "batch-1", NOW)


def _rules(report: ValidationReport) -> set[str]:
    return {f.rule for f in report.findings}


# one way to break a clean batch for each rule ------------------------------------------------
def _set(df: pd.DataFrame, col: str, rows: Any, value: Any) -> pd.DataFrame:
    df = df.copy()
    if (
        not isinstance(value, list | np.ndarray)
        and df[col].dtype != object
        and isinstance(value, str)
    ):
        df[col] = df[col].astype(object)
    df.loc[rows, col] = value
    return df


def _mixed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["income"] = df["income"].astype(object)
    df.loc[::3, "income"] = "n/a"
    return df


def _out_of_order(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.loc[[10, 11], "ts"] = df.loc[[11, 10], "ts"].to_numpy()
    return df


BREAKERS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "missing_columns": lambda df: df.drop(columns=["age"]),
    "extra_columns": lambda df: df.assign(zzz_extra=1.0),
    "renamed_columns": lambda df: df.rename(columns={"income": "Income"}),
    "column_order": lambda df: df[["id", "ts", "age", "income", "region", "flag", "y"]],
    "dtype_mismatch": lambda df: df.assign(income="about fifty thousand"),
    "mixed_types": _mixed,
    "all_null_feature": lambda df: df.assign(income=np.nan),
    "constant_feature": lambda df: df.assign(age=42),
    "null_rate_spike": lambda df: _set(df, "income", df.index[::2], np.nan),
    "infinite_values": lambda df: _set(df, "income", 5, np.inf),
    "out_of_range": lambda df: _set(df, "income", 3, 5e7),
    "unseen_categories": lambda df: _set(df, "region", [4, 9], "atlantis"),
    "missing_target": lambda df: df.drop(columns=["y"]),
    "null_labels": lambda df: _set(df, "y", [0, 7], np.nan),
    "single_class_labels": lambda df: df.assign(y=1),
    "duplicate_ids": lambda df: _set(df, "id", 8, 3),
    "timestamp_unparseable": lambda df: _set(df, "ts", 20, "the day after tomorrow"),
    "timestamp_out_of_order": _out_of_order,
    "timestamp_in_future": lambda df: _set(df, "ts", N_ROWS - 1, "2030-01-01T00:00:00"),
}


@pytest.mark.parametrize("rule", sorted(BREAKERS))
def test_rule_fires_on_the_broken_batch(
    rule: str, cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(BREAKERS[rule](clean), cfg, contract, NOW)
    hits = [f for f in report.findings if f.rule == rule]
    assert hits, f"{rule} did not fire; findings: {report.findings}"
    assert all(f.severity == RULES[rule] for f in hits)
    assert all(f.message for f in hits)
    if RULES[rule] == "fatal":
        assert not report.is_accepted
        assert rule in report.reason or hits[0].message in report.reason


@pytest.mark.parametrize("rule", sorted(set(BREAKERS) | {"duplicate_rows", "empty_file"}))
def test_rule_passes_on_the_clean_batch(
    rule: str, cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(clean, cfg, contract, NOW)
    assert rule not in _rules(report)
    assert report.is_accepted and report.reason == "ok"


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_values_both_signs(
    value: float, cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(_set(clean, "income", [2, 30], value), cfg, contract, NOW)
    [hit] = [f for f in report.findings if f.rule == "infinite_values"]
    assert hit.column == "income" and hit.count == 2
    assert not report.is_accepted


def test_findings_name_the_column_and_count(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(BREAKERS["unseen_categories"](clean), cfg, contract, NOW)
    [hit] = [f for f in report.findings if f.rule == "unseen_categories"]
    assert hit.column == "region" and hit.count == 2 and "atlantis" in hit.message
    report = validate_batch(BREAKERS["duplicate_ids"](clean), cfg, contract, NOW)
    [hit] = [f for f in report.findings if f.rule == "duplicate_ids"]
    assert hit.column == "id" and hit.count == 1
    report = validate_batch(BREAKERS["renamed_columns"](clean), cfg, contract, NOW)
    assert "missing_columns" not in _rules(report)  # a rename is not also reported as missing
    assert "extra_columns" not in _rules(report)


def test_missing_target_is_accepted_without_labels(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(clean.drop(columns=["y"]), cfg, contract, NOW)
    assert _rules(report) == {"missing_target"}
    assert report.is_accepted and not report.has_labels
    assert report.frame is not None and "y" not in report.frame.columns
    labelled = validate_batch(clean, cfg, contract, NOW)
    assert labelled.has_labels


def test_all_labels_missing_means_no_labels(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(clean.assign(y=np.nan), cfg, contract, NOW)
    assert not report.has_labels
    assert "null_labels" in _rules(report)
    assert "single_class_labels" not in _rules(report)


def test_duplicate_rows_without_an_id_column(tmp_path: Path, clean: pd.DataFrame) -> None:
    cfg = _settings(tmp_path / "ws", data={**DATA, "id_column": None})
    df = clean.drop(columns=["id"])
    first = validate_batch(df, cfg, None, NOW)
    assert first.findings == []
    assert first.frame is not None
    contract = freeze_contract(first.frame, cfg, "b1", NOW)
    assert "duplicate_rows" not in _rules(validate_batch(df, cfg, contract, NOW))
    doubled = pd.concat([df, df.iloc[[3, 4]]], ignore_index=True)
    report = validate_batch(doubled, cfg, contract, NOW)
    [hit] = [f for f in report.findings if f.rule == "duplicate_rows"]
    assert hit.count == 2 and hit.severity == "warning"
    assert report.is_accepted


def test_empty_batch_is_an_empty_file(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(clean.iloc[0:0], cfg, contract, NOW)
    assert _rules(report) == {"empty_file"} and not report.is_accepted


def test_duplicate_column_names_refuse_the_batch(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    """Two columns of one name (a Parquet file or a frame can have them) refuse the batch:
    which of them is the feature is a guess."""
    df = pd.concat([clean, clean[["age"]]], axis=1)
    report = validate_batch(df, cfg, contract, NOW)
    assert _rules(report) == {"duplicate_columns"} and not report.is_accepted
    assert "'age'" in report.findings[0].message
    assert report.frame is not None and list(report.frame.columns).count("age") == 1


def _labelled(clean: pd.DataFrame, labels: list[Any]) -> pd.DataFrame:
    return clean.assign(y=np.resize(np.array(labels, dtype=object), len(clean)))


def test_a_third_class_in_a_binary_target_refuses_the_batch(
    cfg: Settings, clean: pd.DataFrame
) -> None:
    """The contract keeps the classes seen first; a class it does not know in a binary task
    refuses the batch (it cannot be trained on), and so does a first batch with three."""
    contract = freeze_contract(_labelled(clean, [0, 1]), cfg, "b1", NOW)
    assert contract.column("y").categories == ["0", "1"]
    assert validate_batch(_labelled(clean, [1, 0]), cfg, contract, NOW).is_accepted
    third = validate_batch(_labelled(clean, [0, 1, 2]), cfg, contract, NOW)
    assert _rules(third) == {"unseen_classes"} and not third.is_accepted
    assert "'2'" in third.findings[0].message and "known: '0', '1'" in third.findings[0].message
    first = validate_batch(_labelled(clean, [0, 1, 2]), cfg, None, NOW)
    assert "unseen_classes" in _rules(first) and "3 classes" in first.findings[0].message
    multi = cfg.model_copy(update={"task": "multiclass"})
    report = validate_batch(
        _labelled(clean, [0, 1, 2]),
        multi,
        freeze_contract(_labelled(clean, [0, 1]), multi, "b1", NOW),
        NOW,
    )
    assert _rules(report) == {"new_classes"} and report.is_accepted


def test_a_one_class_batch_says_so(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(_labelled(clean, [1]), cfg, contract, NOW)
    assert _rules(report) == {"single_class_labels"} and report.is_accepted
    assert "every label is '1'" in report.findings[0].message


def test_findings_quote_a_short_excerpt_of_a_huge_value(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    df = clean.copy()
    df["region"], df["age"] = df["region"].astype(object), df["age"].astype(object)
    df.loc[0, "region"] = "Z" * 100_000
    df.loc[1, "age"] = "Y" * 100_000
    report = validate_batch(df, cfg, contract, NOW)
    assert {"unseen_categories", "mixed_types"} <= _rules(report)
    for f in report.findings:
        assert "Z" * 61 not in f.message and "Y" * 61 not in f.message
        assert len(f.message) < 400, f.message


def test_first_batch_without_contract_checks_declared_columns(
    cfg: Settings, clean: pd.DataFrame
) -> None:
    report = validate_batch(clean.drop(columns=["age"]).assign(income=np.inf), cfg, None, NOW)
    assert {"missing_columns", "infinite_values"} <= _rules(report)
    assert "column_order" not in _rules(report)  # no contract: no order to compare with


def test_epoch_times_out_of_range_are_unparseable(cfg: Settings, clean: pd.DataFrame) -> None:
    epoch = pd.to_datetime(clean["ts"]).astype("int64") // 10**9
    df = clean.assign(ts=epoch.astype("float64"))
    first = validate_batch(df, cfg, None, NOW)
    assert first.findings == []
    assert first.frame is not None and first.frame["ts"].iloc[0] == pd.Timestamp("2025-01-01")
    df.loc[[3, 4, 5], "ts"] = [np.inf, 1.8e308, -1e19]
    report = validate_batch(df, cfg, None, NOW)
    [hit] = [f for f in report.findings if f.rule == "timestamp_unparseable"]
    assert hit.count == 3
    assert report.frame is not None and report.frame["ts"].isna().sum() == 3


def test_numbers_in_a_text_column_are_categories(tmp_path: Path, clean: pd.DataFrame) -> None:
    cfg = _settings(
        tmp_path / "ws",
        data={
            **DATA,
            "features": {
                "numeric": ["income"],
                "categorical": ["region", "age"],
                "boolean": ["flag"],
            },
        },
    )
    first = validate_batch(clean, cfg, None, NOW)
    assert first.frame is not None and first.frame["age"].iloc[0] == str(clean["age"].iloc[0])
    contract = freeze_contract(first.frame, cfg, "b1", NOW)
    huge = clean.assign(age=np.where(clean.index == 0, 1e20, clean["age"]).astype("float64"))
    report = validate_batch(huge, cfg, contract, NOW)
    [hit] = [f for f in report.findings if f.rule == "unseen_categories"]
    assert hit.count == 1 and hit.column == "age"
    assert report.frame is not None and report.frame["age"].iloc[1] == str(clean["age"].iloc[1])


def test_contract_frozen_without_labels_still_types_the_target(
    cfg: Settings, clean: pd.DataFrame
) -> None:
    first = validate_batch(clean.drop(columns=["y"]), cfg, None, NOW)
    assert first.frame is not None
    contract = freeze_contract(first.frame, cfg, "b1", NOW)
    assert "y" not in contract.names
    report = validate_batch(clean, cfg, contract, NOW)
    assert report.findings == [] and report.has_labels  # not an extra column
    assert report.frame is not None and report.frame["y"].tolist() == clean["y"].tolist()
    report = validate_batch(clean.assign(y=np.nan), cfg, contract, NOW)
    assert "null_labels" in _rules(report) and not report.has_labels
    report = validate_batch(clean.assign(y=1), cfg, contract, NOW)
    assert _rules(report) == {"single_class_labels"}


# one report, every failure ---------------------------------------------------------------------
def test_one_report_lists_every_failure(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    df = _set(clean, "income", 5, np.inf)
    df = _set(df, "id", 8, 3)
    df = df.drop(columns=["age"])
    report = validate_batch(df, cfg, contract, NOW)
    assert _rules(report) == {"infinite_values", "duplicate_ids", "missing_columns"}
    assert len(report.findings) == 3
    assert len(report.fatal) == 3
    for f in report.fatal:
        assert f.message in report.reason


def test_fatal_and_warning_split(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    df = _set(clean.assign(zzz_extra=1), "income", 5, np.inf)
    report = validate_batch(df, cfg, contract, NOW)
    assert [f.rule for f in report.fatal] == ["infinite_values"]
    assert [f.rule for f in report.warnings] == ["extra_columns"]
    assert "zzz_extra" not in report.reason  # the reason shows the fatal findings first
    warned = validate_batch(clean.assign(zzz_extra=1), cfg, contract, NOW)
    assert warned.is_accepted and "zzz_extra" in warned.reason
    assert report.frame is not None and "zzz_extra" in report.frame.columns  # kept as it came


# severities come from the configuration ------------------------------------------------------
def test_rule_set_to_warning_does_not_quarantine(
    tmp_path: Path, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    cfg = _settings(tmp_path / "ws", validation={"rules": {"infinite_values": "warning"}})
    report = validate_batch(BREAKERS["infinite_values"](clean), cfg, contract, NOW)
    assert [(f.rule, f.severity) for f in report.findings] == [("infinite_values", "warning")]
    assert report.is_accepted


def test_rule_set_to_fatal_quarantines(
    tmp_path: Path, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    cfg = _settings(tmp_path / "ws", validation={"rules": {"extra_columns": "fatal"}})
    report = validate_batch(BREAKERS["extra_columns"](clean), cfg, contract, NOW)
    assert [(f.rule, f.severity) for f in report.findings] == [("extra_columns", "fatal")]
    assert not report.is_accepted


@pytest.mark.parametrize("rule", ["duplicate_ids", "unseen_categories", "timestamp_in_future"])
def test_rule_set_to_off_removes_the_finding(
    rule: str, tmp_path: Path, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    cfg = _settings(tmp_path / "ws", validation={"rules": {rule: "off"}})
    report = validate_batch(BREAKERS[rule](clean), cfg, contract, NOW)
    assert rule not in _rules(report)
    assert report.is_accepted


@pytest.mark.parametrize("rules", [{"no_such_rule": "fatal"}, {"infinite_values": "loud"}])
def test_bad_rule_configuration_is_a_config_error(rules: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _settings(tmp_path / "ws", validation={"rules": rules})
    assert "validation.rules" in str(err.value)
    if "no_such_rule" in rules:
        assert "no_such_rule" in str(err.value)


def test_validation_tolerances_come_from_config(
    tmp_path: Path, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    spiky = _set(clean, "income", clean.index[:12], np.nan)  # 20% missing, was 0%
    default = _settings(tmp_path / "a")
    strict = _settings(tmp_path / "b", validation={"null_rate_increase": 0.1})
    assert "null_rate_spike" not in _rules(validate_batch(spiky, default, contract, NOW))
    assert "null_rate_spike" in _rules(validate_batch(spiky, strict, contract, NOW))
    near = _set(clean, "income", 3, 80_000.0)  # a little above the range, within 50% slack
    tight = _settings(tmp_path / "c", validation={"range_tolerance": 0.0})
    assert "out_of_range" not in _rules(validate_batch(near, default, contract, NOW))
    assert "out_of_range" in _rules(validate_batch(near, tight, contract, NOW))
    soon = _set(clean, "ts", N_ROWS - 1, "2025-06-01T12:30:00")  # 30 min after NOW
    lenient = _settings(tmp_path / "d", validation={"future_tolerance": "1h"})
    eager = _settings(tmp_path / "e", validation={"future_tolerance": "0s"})
    assert "timestamp_in_future" not in _rules(validate_batch(soon, lenient, contract, NOW))
    assert "timestamp_in_future" in _rules(validate_batch(soon, eager, contract, NOW))


# the conformed frame ---------------------------------------------------------------------------
def test_conformed_frame_has_parsed_times_and_numbers(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    as_text = clean.astype(str)  # e.g. a CSV read without type inference
    report = validate_batch(as_text, cfg, contract, NOW)
    assert report.findings == []
    frame = report.frame
    assert frame is not None
    assert pd.api.types.is_datetime64_any_dtype(frame["ts"])
    assert frame["ts"].iloc[0] == pd.Timestamp("2025-01-01")
    for col in ("income", "age", "y"):
        assert pd.api.types.is_numeric_dtype(frame[col]), col
    np.testing.assert_allclose(frame["income"].to_numpy(), clean["income"].to_numpy())
    assert frame["flag"].tolist() == clean["flag"].tolist()
    assert frame["region"].tolist() == clean["region"].tolist()
    assert report.start_time == datetime(2025, 1, 1)
    assert report.end_time == pd.Timestamp("2025-01-01") + pd.Timedelta(hours=N_ROWS - 1)


def test_conformed_frame_turns_bad_values_into_missing(
    cfg: Settings, clean: pd.DataFrame, contract: SchemaContract
) -> None:
    report = validate_batch(_mixed(clean), cfg, contract, NOW)
    assert report.frame is not None
    assert pd.api.types.is_float_dtype(report.frame["income"])
    assert report.frame["income"].isna().sum() == len(clean.index[::3])
    report = validate_batch(BREAKERS["timestamp_unparseable"](clean), cfg, contract, NOW)
    assert report.frame is not None and report.frame["ts"].isna().sum() == 1


def test_times_with_a_zone_become_naive_utc(cfg: Settings, clean: pd.DataFrame) -> None:
    df = clean.assign(
        ts=[f"2025-01-01T{h:02d}:00:00+02:00" for h in range(24)] * 2
        + ["2025-01-03T00:00:00+02:00"] * (N_ROWS - 48)
    )
    report = validate_batch(df, cfg, None, NOW)
    assert report.frame is not None
    assert report.frame["ts"].dt.tz is None
    assert report.frame["ts"].iloc[2] == pd.Timestamp("2025-01-01T00:00:00")


# the contract --------------------------------------------------------------------------------
def test_contract_describes_the_batch(contract: SchemaContract, clean: pd.DataFrame) -> None:
    assert contract.names == list(clean.columns)
    roles = {c.name: (c.role, c.kind) for c in contract.columns}
    assert roles == {
        "id": ("id", "numeric"),
        "ts": ("time", "datetime"),
        "income": ("feature", "numeric"),
        "age": ("feature", "numeric"),
        "region": ("feature", "categorical"),
        "flag": ("feature", "boolean"),
        "y": ("target", "numeric"),
    }
    income = contract.column("income")
    assert income is not None
    assert income.min == clean["income"].min() and income.max == clean["income"].max()
    region = contract.column("region")
    assert region is not None and region.categories == ["east", "north", "south"]
    assert contract.column("nope") is None


def test_contract_round_trip(contract: SchemaContract, tmp_path: Path) -> None:
    ws = tmp_path / "workspace"
    assert load_contract(ws) is None
    assert save_contract(contract, ws) is True
    assert load_contract(ws) == contract


def test_contract_file_is_readable_yaml(contract: SchemaContract, tmp_path: Path) -> None:
    save_contract(contract, tmp_path)
    text = (tmp_path / CONTRACT_FILE).read_text(encoding="utf-8")
    assert text.startswith("#")  # says what it is and how to widen it
    assert "{" not in text.split("columns:")[1].split("\n")[1]  # block style, not one long line
    doc = yaml.safe_load(text)
    assert doc["from_batch"] == "batch-1"
    assert [c["name"] for c in doc["columns"]] == contract.names
    assert "- name: region" in text and "- east" in text


def test_exclusive_save_keeps_the_first_contract(contract: SchemaContract, tmp_path: Path) -> None:
    other = contract.model_copy(update={"from_batch": "batch-2"})
    assert save_contract(contract, tmp_path) is True
    assert save_contract(other, tmp_path) is False
    loaded = load_contract(tmp_path)
    assert loaded is not None and loaded.from_batch == "batch-1"
    assert save_contract(other, tmp_path, exclusive=False) is True
    loaded = load_contract(tmp_path)
    assert loaded is not None and loaded.from_batch == "batch-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONTRACT_FILE]  # no temp file left


def test_edited_contract_widens_what_is_accepted(
    contract: SchemaContract, cfg: Settings, clean: pd.DataFrame, tmp_path: Path
) -> None:
    save_contract(contract, tmp_path)
    path = tmp_path / CONTRACT_FILE
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("  - south", "  - south\n  - atlantis"), encoding="utf-8")
    widened = load_contract(tmp_path)
    assert widened is not None
    report = validate_batch(BREAKERS["unseen_categories"](clean), cfg, widened, NOW)
    assert "unseen_categories" not in _rules(report)


def test_free_text_columns_list_no_categories(tmp_path: Path, clean: pd.DataFrame) -> None:
    cfg = _settings(tmp_path / "ws", validation={"max_categories": 2})
    first = validate_batch(clean, cfg, None, NOW)
    assert first.frame is not None
    contract = freeze_contract(first.frame, cfg, "b1", NOW)
    region = contract.column("region")
    assert region is not None and region.categories is None
    report = validate_batch(BREAKERS["unseen_categories"](clean), cfg, contract, NOW)
    assert "unseen_categories" not in _rules(report)


# content hash ----------------------------------------------------------------------------------
def test_content_hash_is_equal_for_equal_frames(clean: pd.DataFrame) -> None:
    assert content_hash(clean) == content_hash(clean.copy())
    assert content_hash(clean) == content_hash(_clean())
    assert len(content_hash(clean)) == 64


def test_content_hash_ignores_the_index(clean: pd.DataFrame) -> None:
    shifted = clean.set_axis(range(1000, 1000 + len(clean)))
    assert content_hash(shifted) == content_hash(clean)


@pytest.mark.parametrize("change", ["value", "column name", "dtype", "row order", "column order"])
def test_content_hash_changes_with_the_content(change: str, clean: pd.DataFrame) -> None:
    other = {
        "value": lambda df: _set(df, "income", 0, df.loc[0, "income"] + 0.01),
        "column name": lambda df: df.rename(columns={"income": "income2"}),
        "dtype": lambda df: df.astype({"age": "float64"}),
        "row order": lambda df: df.iloc[::-1],
        "column order": lambda df: df[list(df.columns[::-1])],
    }[change](clean)
    assert content_hash(other) != content_hash(clean)


def test_content_hash_of_unhashable_values() -> None:
    df = pd.DataFrame({"a": [[1, 2], [3]], "b": [{"k": 1}, {"k": 2}]})
    assert content_hash(df) == content_hash(df.copy())
    assert content_hash(df) != content_hash(df.assign(a=[[1, 2], [4]]))


# random frames never crash ---------------------------------------------------------------------
_NAMES = ["id", "ts", "y", "a", "b", "A", "a_", "income", "région", " ", ""]
_SCALARS = st.one_of(
    st.none(),
    st.just(np.nan),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(
        [
            "2025-01-01",
            "2025-01-01T10:00:00+01:00",
            "yes",
            "no",
            "1e5",
            "inf",
            "nan",
            "",
            "2031-12-31",
            "1999",
        ]
    ),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
)


@st.composite
def _columns(draw: st.DrawFn, n: int) -> pd.Series:
    kind = draw(st.sampled_from(["int", "float", "bool", "text", "mixed", "time", "nan"]))
    if kind == "int":
        return pd.Series(
            draw(st.lists(st.integers(-(10**15), 10**15), min_size=n, max_size=n)), dtype="int64"
        )
    if kind == "float":
        return pd.Series(
            draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n)),
            dtype="float64",
        )
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "text":
        return pd.Series(
            draw(st.lists(st.one_of(st.text(max_size=6), st.none()), min_size=n, max_size=n)),
            dtype=object,
        )
    if kind == "time":
        values = draw(
            st.lists(
                st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
                min_size=n,
                max_size=n,
            )
        )
        return pd.Series(pd.to_datetime(values), dtype="datetime64[ns]")
    if kind == "nan":
        return pd.Series([np.nan] * n, dtype="float64")
    return pd.Series(draw(st.lists(_SCALARS, min_size=n, max_size=n)), dtype=object)


@st.composite
def _frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 40))
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=0, max_size=6))
    cols = [draw(_columns(n)) for _ in names]
    if not names:
        return pd.DataFrame(index=range(n))
    return pd.concat(cols, axis=1, keys=range(len(cols))).set_axis(names, axis=1)


@st.composite
def _configs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.permutations(_NAMES))  # each column one role, as the configuration demands
    roles = [name if draw(st.booleans()) else None for name in names[:3]]
    data: dict[str, Any] = dict(zip(("id_column", "time_column", "target"), roles, strict=True))
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(names[3:]), unique=True, max_size=4))
        kinds = [draw(st.sampled_from(["numeric", "categorical", "boolean"])) for _ in chosen]
        data["features"] = {
            k: [c for c, kk in zip(chosen, kinds, strict=True) if kk == k]
            for k in ("numeric", "categorical", "boolean")
        }
    return {
        "task": draw(st.sampled_from(["binary", "multiclass", "regression"])),
        "data": data,
        "validation": {"max_categories": draw(st.sampled_from([1, 5, 1000]))},
    }


def _check(report: ValidationReport) -> None:
    assert isinstance(report, ValidationReport)
    assert {f.severity for f in report.findings} <= {"fatal", "warning"}
    assert all(f.rule in RULES and f.message for f in report.findings)
    assert report.is_accepted == (not report.fatal)
    if report.frame is not None:
        assert report.frame.columns.is_unique


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=_frames(), second=_frames(), raw=_configs())
def test_random_frames_never_crash(
    first: pd.DataFrame, second: pd.DataFrame, raw: dict[str, Any]
) -> None:
    cfg = parse_config(raw, environ={})
    report = validate_batch(first, cfg, None, NOW)
    _check(report)
    if report.frame is None or not report.is_accepted:
        return
    contract = freeze_contract(report.frame, cfg, "b1", NOW)
    assert SchemaContract.model_validate(contract.model_dump(mode="json")) == contract
    _check(validate_batch(second, cfg, contract, NOW))
    _check(validate_batch(first, cfg, contract, NOW))


def test_nan_stays_out_of_contract_ranges(cfg: Settings, clean: pd.DataFrame) -> None:
    df = _set(clean, "income", [0, 1], np.nan)
    report = validate_batch(df, cfg, None, NOW)
    assert report.frame is not None
    contract = freeze_contract(report.frame, cfg, "b1", NOW)
    income = contract.column("income")
    assert income is not None and income.min is not None and income.max is not None
    assert not math.isnan(income.min) and not math.isnan(income.max)
    assert income.null_rate == pytest.approx(2 / N_ROWS, abs=1e-6)
