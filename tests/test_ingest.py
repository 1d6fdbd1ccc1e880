"""Ingestion end to end: batching, content-hash identity, file- and batch-level quarantine,
all-or-nothing files, the frozen contract, release from quarantine, concurrent writers, and the
two shared data sets (clean and spoiled on purpose)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mlops_core.config import Settings, parse_config
from mlops_core.data.batching import Batcher
from mlops_core.data.ingest import ingest, release_batch
from mlops_core.data.validation import CONTRACT_FILE, content_hash
from mlops_core.errors import MlopsError
from mlops_core.store import BatchStore, MetadataStore

DATA: dict[str, Any] = {
    "id_column": "id",
    "time_column": "ts",
    "target": "y",
    "features": {"numeric": ["x"], "categorical": ["color"]},
    "batch": {"period": "1D"},
}


def _settings(
    tmp_path: Path, ws: str = "ws", *, rules: dict[str, str] | None = None, **data: Any
) -> Settings:
    raw: dict[str, Any] = {"data": {**DATA, **data}, "storage": {"workspace": str(tmp_path / ws)}}
    if rules:
        raw["validation"] = {"rules": rules}
    return parse_config(raw, environ={})


def _frame(
    n: int = 72,
    start: str = "2025-01-01",
    id0: int = 0,
    seed: int = 0,
    freq: str = "h",
    colors: tuple[str, ...] = ("red", "blue"),
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(id0, id0 + n, dtype=np.int64),
            "ts": pd.date_range(start, periods=n, freq=freq).strftime("%Y-%m-%d %H:%M:%S"),
            "x": rng.normal(size=n).round(6),
            "color": np.resize(np.array(colors), n),
            "y": np.r_[0, 1, rng.integers(0, 2, n - 2)],
        }
    )


def _csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def _meta(settings: Settings) -> MetadataStore:
    return MetadataStore(settings.db_url)


def _records(settings: Settings) -> list[Any]:
    meta = _meta(settings)
    try:
        return meta.list_batches()
    finally:
        meta.dispose()


def _stored_parquet(settings: Settings) -> list[Path]:
    return sorted((settings.workspace / "batches").glob("*.parquet"))


# batching -----------------------------------------------------------------------------------
def test_split_by_size_reports_each_batch(tmp_path: Path) -> None:
    df = _frame(100)
    s = _settings(tmp_path, batch={"size": 30})

    report = ingest(s, [_csv(df, tmp_path / "d.csv")])

    assert [o.rows for o in report.outcomes] == [30, 30, 30, 10]
    assert all(o.status == "accepted" and o.id.startswith("b-") for o in report.outcomes)
    assert len({o.id for o in report.outcomes}) == 4
    times = pd.to_datetime(df["ts"])
    assert report.outcomes[0].start_time == times[0]
    assert report.outcomes[0].end_time == times[29]
    assert report.outcomes[3].start_time == times[90]
    assert report.outcomes[3].end_time == times[99]
    recs = {r.id: r for r in _records(s)}
    assert {o.id for o in report.outcomes} == set(recs)
    assert all(
        recs[o.id].rows == o.rows and recs[o.id].status == "accepted" for o in report.outcomes
    )


@pytest.mark.parametrize(
    ("period", "sizes"),
    [
        ("1D", [4] * 100),
        # 2025-01-01 is a Wednesday: Wed-Sun, 13 full weeks, then Mon-Thu
        ("W", [20, *[28] * 13, 16]),
        ("MS", [124, 112, 124, 40]),
        ("7D", None),
    ],
)
def test_split_by_period(tmp_path: Path, period: str, sizes: list[int] | None) -> None:
    df = _frame(400, freq="6h")  # 100 days, four rows a day
    s = _settings(tmp_path, batch={"period": period})

    report = ingest(s, [_csv(df, tmp_path / "d.csv")])

    outcomes = report.outcomes
    assert all(o.status == "accepted" for o in outcomes)
    assert sum(o.rows for o in outcomes) == 400
    if sizes is not None:
        assert [o.rows for o in outcomes] == sizes
    # every batch lies inside one period, and they follow one another
    for o in outcomes:
        if period == "7D":
            assert o.end_time - o.start_time < pd.Timedelta("7D")
        else:
            key = {"1D": "D", "W": "W", "MS": "M"}[period]
            assert pd.Timestamp(o.start_time).to_period(key) == pd.Timestamp(o.end_time).to_period(
                key
            )
    assert all(a.end_time < b.start_time for a, b in pairwise(outcomes))


@pytest.mark.parametrize("chunk_rows", [100_000, 7])
def test_times_that_go_back_and_forth_make_one_batch_per_period(
    tmp_path: Path, chunk_rows: int
) -> None:
    """Mixed time-zone offsets send consecutive rows back and forth across midnight (UTC): the
    rows of a day still make one batch, not one batch per change (57 from 60 rows before).
    Across chunks a late row of a day already cut makes one more small batch, no more."""
    df = _frame(60)
    local = pd.date_range("2025-01-01", periods=60, freq="h")
    df["ts"] = [
        t.strftime("%Y-%m-%dT%H:%M:%S") + ("+05:00" if i % 2 else "+00:00")
        for i, t in enumerate(local)
    ]
    s = _settings(tmp_path, limits={"chunk_rows": chunk_rows})

    report = ingest(s, [_csv(df, tmp_path / "d.csv")])

    utc_days = pd.to_datetime(df["ts"], utc=True).dt.floor("D")
    assert sum(o.rows for o in report.outcomes) == 60
    assert all(o.status == "accepted" for o in report.outcomes)
    if chunk_rows > 60:
        assert sorted(o.rows for o in report.outcomes) == sorted(utc_days.value_counts().tolist())
    else:  # at most one extra batch per chunk boundary
        assert len(report.outcomes) <= utc_days.nunique() + -(-60 // chunk_rows)
    for o in report.outcomes:
        assert pd.Timestamp(o.start_time).floor("D") == pd.Timestamp(o.end_time).floor("D")


def test_one_batch_per_file_without_size_or_period(tmp_path: Path) -> None:
    s = _settings(tmp_path, batch={})
    report = ingest(s, [_csv(_frame(72), tmp_path / "d.csv")])
    assert [(o.status, o.rows) for o in report.outcomes] == [("accepted", 72)]


# identity by content ------------------------------------------------------------------------
def test_same_file_twice_creates_nothing_new(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    path = _csv(_frame(72), tmp_path / "d.csv")
    first = ingest(s, [path])
    n_records, files = len(_records(s)), _stored_parquet(s)

    again = ingest(s, [path])

    assert [o.status for o in again.outcomes] == ["duplicate"] * 3
    assert [o.id for o in again.outcomes] == [o.id for o in first.outcomes]
    assert all("already ingested" in o.reason for o in again.outcomes)
    assert again.to_dict()["accepted"] == 0
    assert len(_records(s)) == n_records == 3
    assert _stored_parquet(s) == files


def test_same_data_under_another_name_is_a_duplicate(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    df = _frame(72)
    first = ingest(s, [_csv(df, tmp_path / "monday.csv")])
    copy = _csv(df, tmp_path / "monday_resent.csv")

    again = ingest(s, [copy])

    assert [o.status for o in again.outcomes] == ["duplicate"] * 3
    assert [o.id for o in again.outcomes] == [o.id for o in first.outcomes]
    assert len(_records(s)) == 3


def test_a_batch_repeated_within_one_input_is_stored_once(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    day = _frame(24)
    a, b = _csv(day, tmp_path / "a.csv"), _csv(day, tmp_path / "b.csv")

    report = ingest(s, [a, b])

    assert [o.status for o in report.outcomes] == ["accepted", "duplicate"]
    assert len(_records(s)) == 1


# file-level quarantine ----------------------------------------------------------------------
def _good_lines() -> list[str]:
    return _frame(48).to_csv(index=False).splitlines()


def _truncated_parquet(tmp: Path) -> bytes:
    _frame(48).to_parquet(tmp / "whole.parquet", index=False)
    data = (tmp / "whole.parquet").read_bytes()
    return data[: len(data) // 2]


def _schema_only_parquet(tmp: Path) -> bytes:
    _frame(48).iloc[:0].to_parquet(tmp / "empty.parquet", index=False)
    return (tmp / "empty.parquet").read_bytes()


def _wide_parquet(tmp: Path) -> bytes:
    _frame(48).assign(extra=1.0).to_parquet(tmp / "wide.parquet", index=False)
    return (tmp / "wide.parquet").read_bytes()


def _join(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _ragged(t: Path) -> bytes:
    lines = _good_lines()
    return _join([*lines[:10], lines[10] + ",1,2", *lines[11:]])


def _short_row(t: Path) -> bytes:
    lines = _good_lines()
    return _join([*lines[:10], lines[10].rsplit(",", 2)[0], *lines[11:]])


def _torn_last_row(t: Path) -> bytes:
    """Cut mid-value while written: every field is there, the last one half written."""
    return _join(_good_lines())[:-3]


def _unclosed_quote(t: Path) -> bytes:
    lines = _good_lines()
    return _join([*lines[:10], '9,2025-01-01 09:00:00,"0.5,red,1', *lines[11:]])


BAD_FILES = [  # (file name, its bytes, data.limits, the rule that names the problem)
    pytest.param("d.parquet", _truncated_parquet, {}, "corrupt_file", id="truncated parquet"),
    pytest.param("d.csv", _ragged, {}, "extra_fields", id="ragged csv row"),
    pytest.param("d.csv", _short_row, {}, "short_row", id="short csv row"),
    pytest.param("d.csv", _torn_last_row, {}, "torn_row", id="torn last csv row"),
    pytest.param("d.csv", _unclosed_quote, {}, "corrupt_file", id="unclosed quote"),
    pytest.param(
        "d.csv",
        lambda t: _frame(48, colors=("nörth", "south")).to_csv(index=False).encode("latin-1"),
        {},
        "encoding",
        id="non-utf8 bytes",
    ),
    pytest.param(
        "d.csv",
        lambda t: _frame(48).to_csv(index=False, sep=";").encode(),
        {},
        "wrong_delimiter",
        id="semicolon delimiter",
    ),
    pytest.param("d.csv", lambda t: b"", {}, "empty_file", id="empty file"),
    pytest.param("d.csv", lambda t: _join(_good_lines()[:1]), {}, "empty_file", id="header only"),
    pytest.param("d.parquet", _schema_only_parquet, {}, "empty_file", id="schema-only parquet"),
    pytest.param("d.json", lambda t: b'[{"id": 1, "ts": ', {}, "corrupt_file", id="malformed json"),
    pytest.param(
        "d.csv",
        lambda t: _join(_good_lines()),
        {"max_file_mb": 0.001},
        "file_too_large",
        id="file over the size cap",
    ),
    pytest.param(
        "d.csv",
        lambda t: _frame(48).assign(extra=1.0).to_csv(index=False).encode(),
        {"max_columns": 5},
        "too_many_columns",
        id="too many csv columns",
    ),
    pytest.param(
        "d.parquet",
        _wide_parquet,
        {"max_columns": 5},
        "too_many_columns",
        id="too many parquet columns",
    ),
]


@pytest.mark.parametrize(("name", "make", "limits", "rule"), BAD_FILES)
def test_unreadable_file_is_quarantined_whole_and_ingest_goes_on(
    tmp_path: Path, name: str, make: Callable[[Path], bytes], limits: dict[str, Any], rule: str
) -> None:
    s = _settings(tmp_path, limits=limits)
    src = tmp_path / "in"
    src.mkdir()
    bad = src / name
    raw = make(tmp_path)
    bad.write_bytes(raw)
    # small enough to pass every limit above
    good = _csv(_frame(3, "2025-02-01", id0=1000, seed=1), src / "good.csv")

    report = ingest(s, [bad, good])

    q = report.outcomes[0]
    assert (q.status, q.rows, q.origin) == ("quarantined", 0, str(bad))
    assert [f.rule for f in q.findings] == [rule]
    assert q.id.startswith("q-")
    folder = s.workspace / "quarantine" / q.id
    assert (folder / f"data{bad.suffix}").read_bytes() == raw  # kept whole, byte for byte
    reason = (folder / "reason.txt").read_text()
    assert rule in reason
    assert f"mlops quarantine release {q.id}" in reason
    assert json.loads((folder / "report.json").read_text())["batch"]["id"] == q.id
    rec = {r.id: r for r in _records(s)}[q.id]
    assert rec.status == "quarantined" and rec.findings[0]["rule"] == rule
    # the pipeline went on with the next file
    assert [o.status for o in report.outcomes[1:]] == ["accepted"]


def test_quarantined_file_sent_again_is_a_duplicate(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"")
    first = ingest(s, [bad])
    again = ingest(s, [bad])
    assert again.outcomes[0].status == "duplicate"
    assert again.outcomes[0].id == first.outcomes[0].id
    assert len(_records(s)) == 1


def test_file_failing_midway_leaves_no_batches_from_it(tmp_path: Path) -> None:
    df = _frame(120)  # five days
    df.loc[5, "x"] = np.inf  # day 1 would be quarantined, days 2-4 accepted...
    lines = df.to_csv(index=False).splitlines()
    lines[110] += ",surplus"  # ...but a row on day 5 is malformed
    bad = tmp_path / "late.csv"
    bad.write_bytes(_join(lines))
    good = _csv(_frame(48, "2025-02-01", id0=1000, seed=1), tmp_path / "good.csv")
    s = _settings(tmp_path, limits={"chunk_rows": 10})

    report = ingest(s, [bad, good])

    assert [(o.status, o.rows) for o in report.outcomes] == [
        ("quarantined", 0),
        ("accepted", 24),
        ("accepted", 24),
    ]
    assert report.outcomes[0].findings[0].rule == "extra_fields"
    assert "6 of 5 fields ('109,2025-01-05 13:00:00" in report.outcomes[0].reason
    recs = _records(s)
    assert Counter(r.origin for r in recs) == {str(bad): 1, str(good): 2}
    assert [p.name for p in (s.workspace / "quarantine").iterdir()] == [report.outcomes[0].id]
    assert {p.stem for p in _stored_parquet(s)} == {o.id for o in report.outcomes[1:]}
    contract = yaml.safe_load((s.workspace / CONTRACT_FILE).read_text())
    assert contract["from_batch"] == report.outcomes[1].id  # not a batch of the failed file


def test_no_contract_from_a_file_that_failed(tmp_path: Path) -> None:
    lines = _frame(120).to_csv(index=False).splitlines()
    lines[100] += ",surplus"
    bad = tmp_path / "late.csv"
    bad.write_bytes(_join(lines))
    s = _settings(tmp_path, limits={"chunk_rows": 10})

    ingest(s, [bad])

    assert not (s.workspace / CONTRACT_FILE).exists()
    assert _stored_parquet(s) == []


# batch-level quarantine ---------------------------------------------------------------------
def test_batch_level_fatal_finding_quarantines_that_batch_only(tmp_path: Path) -> None:
    df = _frame(72)
    df.loc[30, "x"] = np.inf  # day 2
    s = _settings(tmp_path)

    report = ingest(s, [_csv(df, tmp_path / "d.csv")])

    assert [o.status for o in report.outcomes] == ["accepted", "quarantined", "accepted"]
    q = report.outcomes[1]
    assert q.id.startswith("q-") and q.rows == 24
    assert [(f.rule, f.severity) for f in q.findings] == [("infinite_values", "fatal")]
    folder = s.workspace / "quarantine" / q.id
    kept = pd.read_parquet(folder / "data.parquet")
    assert kept["id"].tolist() == list(range(24, 48))
    assert "infinite_values" in (folder / "reason.txt").read_text()
    assert len(_stored_parquet(s)) == 2


def test_file_missing_a_column_is_quarantined_and_the_next_file_accepted(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    a = _csv(_frame(24, "2025-01-01"), tmp_path / "a.csv")
    b = _csv(_frame(48, "2025-01-02", id0=100).drop(columns=["x"]), tmp_path / "b.csv")
    c = _csv(_frame(24, "2025-01-04", id0=200), tmp_path / "c.csv")

    report = ingest(s, [a, b, c])

    assert [(Path(o.origin).name, o.status) for o in report.outcomes] == [
        ("a.csv", "accepted"),
        ("b.csv", "quarantined"),
        ("b.csv", "quarantined"),
        ("c.csv", "accepted"),
    ]
    for o in report.outcomes[1:3]:
        assert {f.rule for f in o.findings if f.severity == "fatal"} == {"missing_columns"}


def test_first_accepted_batch_freezes_the_contract(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    df = _frame(72)
    df.loc[3, "x"] = np.inf  # the first batch is refused: the contract comes from the second
    assert not (s.workspace / CONTRACT_FILE).exists()

    report = ingest(s, [_csv(df, tmp_path / "d.csv")])

    path = s.workspace / CONTRACT_FILE
    contract = yaml.safe_load(path.read_text())
    assert contract["from_batch"] == report.outcomes[1].id
    cols = {c["name"]: c for c in contract["columns"]}
    assert set(cols) == {"id", "ts", "x", "color", "y"}
    assert cols["color"]["categories"] == ["blue", "red"]
    assert cols["ts"]["role"] == "time" and cols["y"]["role"] == "target"
    text = path.read_text()

    ingest(s, [_csv(_frame(24, "2025-03-01", id0=500, seed=2), tmp_path / "later.csv")])
    assert path.read_text() == text  # frozen: later batches do not rewrite it


def test_clean_stream_in_its_own_column_order_raises_no_findings(tmp_path: Path) -> None:
    # the columns as a feed sends them: features first, id and time last
    df = _frame(72)[["x", "color", "y", "id", "ts"]]
    s = _settings(tmp_path)

    report = ingest(s, [_csv(df, tmp_path / "d.csv")])

    assert [o.status for o in report.outcomes] == ["accepted"] * 3
    assert [f.rule for o in report.outcomes for f in o.findings] == []


# chunked reading ----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("batch", [{"period": "1D"}, {"size": 25}, {"period": "W"}])
def test_small_chunks_give_the_same_batches(
    tmp_path: Path, suffix: str, batch: dict[str, Any]
) -> None:
    df = _frame(24 * 9, seed=3)
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)

    small = ingest(_settings(tmp_path, "small", batch=batch, limits={"chunk_rows": 7}), [path])
    big = ingest(_settings(tmp_path, "big", batch=batch, limits={"chunk_rows": 10**6}), [path])

    assert [(o.id, o.rows, o.status) for o in small.outcomes] == [
        (o.id, o.rows, o.status) for o in big.outcomes
    ]
    assert len(small.outcomes) > 1


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 239), max_size=12, unique=True),
    batch=st.sampled_from(
        [{"size": 17}, {"size": 50}, {"period": "1D"}, {"period": "W"}, {"period": "6h"}, {}]
    ),
)
def test_batcher_output_does_not_depend_on_how_rows_are_chunked(
    cuts: list[int], batch: dict[str, Any]
) -> None:
    df = _frame(240, seed=5)
    bounds = [0, *sorted(cuts), len(df)]
    whole = Batcher(time_column="ts", **batch)
    expected = [*whole.add(df), *whole.flush()]
    parts = Batcher(time_column="ts", **batch)
    got = [b for lo, hi in pairwise(bounds) for b in parts.add(df.iloc[lo:hi])]
    got += list(parts.flush())

    assert [content_hash(b) for b in got] == [content_hash(b) for b in expected]
    assert sum(len(b) for b in got) == len(df)


# release from quarantine --------------------------------------------------------------------
def _edit_contract(settings: Settings, column: str, **changes: Any) -> None:
    path = settings.workspace / CONTRACT_FILE
    doc = yaml.safe_load(path.read_text())
    for col in doc["columns"]:
        if col["name"] == column:
            for k, v in changes.items():
                col[k] = v(col[k]) if callable(v) else v
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _quarantine_listing(settings: Settings) -> dict[str, bytes]:
    root = settings.workspace / "quarantine"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _ingest_then_refuse(
    tmp_path: Path,
    spoil: Callable[[pd.DataFrame], pd.DataFrame],
    rules: dict[str, str] | None = None,
) -> tuple[Settings, str]:
    """Day 1 freezes the contract; day 2, spoiled, is quarantined. Returns its id."""
    s = _settings(tmp_path, rules=rules)
    ingest(s, [_csv(_frame(24), tmp_path / "day1.csv")])
    day2 = spoil(_frame(24, "2025-01-02", id0=24, seed=1))
    report = ingest(s, [_csv(day2, tmp_path / "day2.csv")])
    assert [o.status for o in report.outcomes] == ["quarantined"]
    return s, report.outcomes[0].id


def test_release_after_adding_a_category_to_the_contract(tmp_path: Path) -> None:
    s, qid = _ingest_then_refuse(
        tmp_path, lambda d: d.assign(color="green"), rules={"unseen_categories": "fatal"}
    )
    _edit_contract(s, "color", categories=lambda c: [*c, "green"])

    res = release_batch(s, qid)

    assert res.released and res.quarantined_id == qid
    assert [o.status for o in res.outcomes] == ["accepted"]
    new_id = res.outcomes[0].id
    assert new_id == "b-" + qid[2:]  # same content, same hash
    meta = _meta(s)
    rec = meta.get_batch(qid)
    assert rec.status == "released" and rec.released_as == [new_id]
    assert meta.get_batch(new_id).status == "accepted"
    stored = BatchStore(s.workspace).read_accepted(meta)
    meta.dispose()
    assert (stored["color"] == "green").sum() == 24
    with pytest.raises(MlopsError, match="not quarantined"):
        release_batch(s, qid)


def test_release_after_widening_a_range(tmp_path: Path) -> None:
    s, qid = _ingest_then_refuse(
        tmp_path, lambda d: d.assign(x=d["x"] + 50), rules={"out_of_range": "fatal"}
    )
    _edit_contract(s, "x", max=100.0)

    res = release_batch(s, qid)

    assert res.released, res.message
    assert [o.status for o in res.outcomes] == ["accepted"]


def test_release_after_setting_the_rule_to_warning(tmp_path: Path) -> None:
    _, qid = _ingest_then_refuse(tmp_path, lambda d: d.assign(id=d["id"].where(d.index > 0, 25)))
    relaxed = _settings(tmp_path, rules={"duplicate_ids": "warning"})

    res = release_batch(relaxed, qid)

    assert res.released, res.message
    assert [(f.rule, f.severity) for f in res.outcomes[0].findings] == [
        ("duplicate_ids", "warning")
    ]


def test_release_that_still_fails_changes_nothing(tmp_path: Path) -> None:
    s, qid = _ingest_then_refuse(
        tmp_path, lambda d: d.assign(color="green"), rules={"unseen_categories": "fatal"}
    )
    before_files, before_recs = _quarantine_listing(s), _records(s)

    res = release_batch(s, qid)

    assert not res.released
    assert "still refused" in res.message and "unseen" in res.message
    assert _quarantine_listing(s) == before_files  # the kept data and its reason untouched
    assert _records(s) == before_recs
    # and it can still be released once the contract is fixed
    _edit_contract(s, "color", categories=lambda c: [*c, "green"])
    assert release_batch(s, qid).released


def test_release_with_force_accepts_despite_findings(tmp_path: Path) -> None:
    s, qid = _ingest_then_refuse(tmp_path, lambda d: d.assign(x=d["x"].where(d.index != 3, np.inf)))
    assert not release_batch(s, qid).released

    res = release_batch(s, qid, force=True)

    assert res.released
    o = res.outcomes[0]
    assert o.status == "accepted" and o.reason.startswith("released by force despite")
    meta = _meta(s)
    rec = meta.get_batch(o.id)
    meta.dispose()
    assert rec.status == "accepted"
    assert [f["rule"] for f in rec.findings] == ["infinite_values"]  # recorded with the batch


def test_release_of_an_unreadable_file_after_fixing_the_kept_copy(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    df = _frame(48)
    lines = df.to_csv(index=False).splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_join([*lines[:5], lines[5] + ",oops", *lines[6:]]))
    qid = ingest(s, [bad]).outcomes[0].id
    kept = s.workspace / "quarantine" / qid / "data.csv"
    before = _quarantine_listing(s)

    still = release_batch(s, qid)
    forced = release_batch(s, qid, force=True)  # force cannot read what is unreadable

    assert not still.released and "still unreadable" in still.message
    assert not forced.released
    assert _quarantine_listing(s) == before
    assert _records(s)[0].status == "quarantined"

    kept.write_bytes(_join(lines))  # a person fixes the kept file
    res = release_batch(s, qid)

    assert res.released, res.message
    assert [(o.status, o.rows) for o in res.outcomes] == [("accepted", 24), ("accepted", 24)]
    meta = _meta(s)
    rec = meta.get_batch(qid)
    meta.dispose()
    assert rec.status == "released"
    assert rec.released_as == [o.id for o in res.outcomes]
    assert all(o.origin == str(bad) for o in res.outcomes)


def test_release_accepts_an_id_prefix(tmp_path: Path) -> None:
    s, qid = _ingest_then_refuse(
        tmp_path, lambda d: d.assign(color="green"), rules={"unseen_categories": "fatal"}
    )
    res = release_batch(s, qid[:8], force=True)
    assert res.released and res.quarantined_id == qid


# concurrency -------------------------------------------------------------------------------
_WORKER = """
import json, sys, time
from pathlib import Path
from mlops_core.config import parse_config
from mlops_core.data.ingest import ingest

raw, name, barrier, *files = sys.argv[1:]
settings = parse_config(json.loads(raw), environ={})
Path(barrier, name).touch()  # ready
deadline = time.monotonic() + 60
while not Path(barrier, "go").exists() and time.monotonic() < deadline:
    time.sleep(0.005)
report = ingest(settings, files)
print(json.dumps([[o.id, o.status] for o in report.outcomes]))
"""


def test_two_processes_ingest_into_one_workspace(tmp_path: Path) -> None:
    files = [
        _csv(_frame(96, f"2025-0{m}-01", id0=1000 * m, seed=m), tmp_path / f"f{m}.csv")
        for m in range(1, 6)
    ]
    shared = files[0]
    raw = {"data": DATA, "storage": {"workspace": str(tmp_path / "ws")}}
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    jobs = {"p1": [shared, files[1], files[2]], "p2": [shared, files[3], files[4]]}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(raw), name, str(barrier), *map(str, fs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, fs in jobs.items()
    }
    deadline = time.monotonic() + 60
    while not all((barrier / n).exists() for n in jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    (barrier / "go").touch()  # both start ingesting at the same moment
    results = {name: p.communicate(timeout=120) for name, p in procs.items()}

    for name, p in procs.items():
        assert p.returncode == 0, results[name][1]
        assert "Traceback" not in results[name][1]
    outcomes = [tuple(x) for name in jobs for x in json.loads(results[name][0])]
    s = parse_config(raw, environ={})
    recs = _records(s)
    ids = [r.id for r in recs]
    assert len(ids) == len(set(ids)) == 5 * 4  # every batch recorded exactly once
    assert all(r.status == "accepted" for r in recs)
    assert {i for i, _ in outcomes} == set(ids)
    per_id = Counter(i for i, st in outcomes if st == "accepted")
    assert set(per_id.values()) == {1}  # accepted by one process, a duplicate for the other
    assert Counter(st for _, st in outcomes) == {"accepted": 20, "duplicate": 4}
    assert {p.stem for p in _stored_parquet(s)} == set(ids)
    assert not list(s.workspace.rglob("*.tmp"))
    meta = _meta(s)
    with meta.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    assert len(BatchStore(s.workspace).read_accepted(meta)) == 5 * 96
    meta.dispose()
    contract = yaml.safe_load((s.workspace / CONTRACT_FILE).read_text())
    assert contract["from_batch"] in ids


_OPENER = """
import sys, time
from pathlib import Path
from mlops_core.store import MetadataStore

url, go, key = sys.argv[1:]
Path(go).with_name(key).touch()  # ready
while not Path(go).exists():
    time.sleep(0.002)
meta = MetadataStore(url)
meta.set_state(key, key)
"""


def test_processes_opening_a_new_metadata_db_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ws' / 'metadata.db'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, url, str(go), f"k{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"k{i}").exists() for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # released together onto a database file that does not exist yet
    errors = [p.communicate(timeout=120)[1] for p in procs]

    assert [p.returncode for p in procs] == [0] * 3, "\n".join(errors)
    meta = MetadataStore(url)
    assert [meta.get_state(f"k{i}") for i in range(3)] == [f"k{i}" for i in range(3)]
    meta.dispose()


def test_metadata_db_is_in_wal_mode(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    meta = _meta(s)
    engine = sa.create_engine(s.db_url)  # a plain connection sees the mode persisted in the file
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    meta.dispose()


# the shared data sets ----------------------------------------------------------------------
def _car_settings(tmp_path: Path, ws: str = "ws", rules: dict[str, str] | None = None) -> Settings:
    raw: dict[str, Any] = {
        "data": {
            "id_column": "id",
            "time_column": "timestamp",
            "target": "repaid",
            "batch": {"period": "MS"},
        },
        "storage": {"workspace": str(tmp_path / ws)},
    }
    if rules:
        raw["validation"] = {"rules": rules}
    return parse_config(raw, environ={})


def test_car_loan_ingests_cleanly(tmp_path: Path, shared_data: Path) -> None:
    s = _car_settings(tmp_path)

    report = ingest(s, [shared_data / "car_loan.parquet"])

    assert len(report.outcomes) == 20  # 2018-01 to 2019-08, one batch a month
    assert all(o.status == "accepted" for o in report.outcomes)
    assert report.rows == 100_000
    assert [f for o in report.outcomes for f in o.findings if f.severity == "fatal"] == []
    assert [f for o in report.outcomes for f in o.findings if f.rule == "column_order"] == []
    assert all(o.has_labels for o in report.outcomes)
    assert report.outcomes[0].start_time == pd.Timestamp("2018-01-01")
    assert report.outcomes[-1].start_time.strftime("%Y-%m") == "2019-08"


def test_employment_ingests_cleanly_by_year(tmp_path: Path, shared_data: Path) -> None:
    s = parse_config(
        {
            "data": {
                "id_column": "id",
                "time_column": "year",
                "target": "employed",
                "batch": {"period": "YS"},
            },
            "storage": {"workspace": str(tmp_path / "ws")},
        },
        environ={},
    )

    report = ingest(s, [shared_data / "employment_ma.parquet"])

    assert [o.status for o in report.outcomes] == ["accepted"] * 4
    assert [o.start_time.year for o in report.outcomes] == [2015, 2016, 2017, 2018]
    assert report.rows == 277_677
    assert [f for o in report.outcomes for f in o.findings if f.severity == "fatal"] == []
    contract = yaml.safe_load((s.workspace / CONTRACT_FILE).read_text())
    kinds = {c["name"]: c["kind"] for c in contract["columns"]}
    assert kinds["AGEP"] == "numeric" and kinds["SCHL"] == "categorical"
    assert kinds["year"] == "datetime"


def _spoil_numbers_with_text(d: pd.DataFrame) -> pd.DataFrame:
    d = d.copy()
    d["car_value"] = d["car_value"].astype(object)
    d.loc[d.index[::10], "car_value"] = "unknown"
    return d


SPOILED = [  # (how February is spoiled, the fatal rules expected, validation.rules)
    pytest.param(lambda d: d, set(), {}, id="clean"),
    pytest.param(
        lambda d: d.rename(columns={"car_value": "CarValue"}),
        {"renamed_columns"},
        {},
        id="renamed column",
    ),
    pytest.param(
        lambda d: d.drop(columns=["driver_tenure"]), {"missing_columns"}, {}, id="column dropped"
    ),
    pytest.param(_spoil_numbers_with_text, {"mixed_types"}, {}, id="text in a numeric column"),
    pytest.param(
        lambda d: d.assign(loan_length="long"),
        {"dtype_mismatch"},
        {},
        id="only text in a numeric column",
    ),
    pytest.param(
        lambda d: d.assign(repaid=d["repaid"].where(d.index % 3 != 0)),
        {"null_labels"},
        {"null_labels": "fatal"},
        id="NaN labels",
    ),
    pytest.param(
        lambda d: d.assign(id=d["id"].where(d.index % 100 != 1, d["id"].iloc[0])),
        {"duplicate_ids"},
        {},
        id="duplicate ids",
    ),
    pytest.param(
        lambda d: d.assign(
            debt_to_income_ratio=d["debt_to_income_ratio"].where(d.index % 50 != 0, np.inf)
        ),
        {"infinite_values"},
        {},
        id="+inf values",
    ),
    pytest.param(
        lambda d: d.assign(driver_tenure=np.nan), {"all_null_feature"}, {}, id="all-missing feature"
    ),
    pytest.param(
        lambda d: d.assign(
            timestamp=d["timestamp"].astype(str).where(d.index % 7 != 0, "yesterday")
        ),
        {"timestamp_unparseable"},
        {},
        id="unreadable times",
    ),
]


@pytest.fixture(scope="module")
def car_months(shared_data: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """January and February 2018 of the car-loan stream."""
    full = pd.read_parquet(shared_data / "car_loan.parquet")
    months = full["timestamp"].dt.to_period("M")
    return (
        full[months == "2018-01"].reset_index(drop=True),
        full[months == "2018-02"].reset_index(drop=True),
    )


@pytest.mark.parametrize(("spoil", "rules", "config_rules"), SPOILED)
def test_spoiled_copy_of_car_loan_is_quarantined_for_the_right_reason(
    tmp_path: Path,
    car_months: tuple[pd.DataFrame, pd.DataFrame],
    spoil: Callable[[pd.DataFrame], pd.DataFrame],
    rules: set[str],
    config_rules: dict[str, str],
) -> None:
    january, february = car_months
    s = _car_settings(tmp_path, rules=config_rules)
    january.to_parquet(tmp_path / "jan.parquet", index=False)
    assert [o.status for o in ingest(s, [tmp_path / "jan.parquet"]).outcomes] == ["accepted"]
    spoiled = tmp_path / "feb.csv"
    spoil(february).to_csv(spoiled, index=False)

    report = ingest(s, [spoiled])

    assert len(report.outcomes) == 1
    o = report.outcomes[0]
    fatal = {f.rule for f in o.findings if f.severity == "fatal"}
    assert fatal == rules
    assert o.status == ("accepted" if not rules else "quarantined")
    if rules:
        reason = (s.workspace / "quarantine" / o.id / "reason.txt").read_text()
        assert all(r in reason for r in rules)


def test_a_quoted_value_spanning_lines_is_one_field_not_a_short_row(tmp_path: Path) -> None:
    df = _frame(24)
    df["color"] = df["color"].astype(object)
    df.loc[3, "color"] = "dark\nred, or so"
    src = _csv(df, tmp_path / "quoted.csv")
    assert b'"dark\nred, or so"' in src.read_bytes()

    report = ingest(_settings(tmp_path), [src])

    assert [(o.status, o.rows) for o in report.outcomes] == [("accepted", 24)], report.outcomes[
        0
    ].reason


def test_labelled_rows_come_from_the_parquet_footer_and_match_the_data(tmp_path: Path) -> None:
    """Monitoring counts new labels on every run over every batch since the last training:
    from the footer's null counts, the same number as reading the column."""
    df = _frame(72)
    df["y"] = df["y"].astype("float64")
    df.loc[[3, 30, 31, 70], "y"] = np.nan
    s = _settings(tmp_path)
    ingest(s, [_csv(df, tmp_path / "d.csv")])
    store = BatchStore(s.workspace)
    recs = _records(s)
    assert (
        [store.labelled_rows(r, "y") for r in recs]
        == [int(store.read(r, ["y"])["y"].notna().sum()) for r in recs]
        == [23, 22, 23]
    )
    assert store.labelled_rows(recs[0], "no_such_column") == 0
