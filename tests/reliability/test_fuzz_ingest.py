"""Hypothesis fuzz of ingestion: random frames (any column names, dtypes, values, missing and
extra columns) and random bytes, written as CSV, Parquet or JSON and ingested into a project
whose contract is frozen. Whatever comes in, every batch ends accepted, quarantined or
duplicate, with its rows accounted for; nothing raises; a quarantined batch is kept whole beside
its reason; the metadata DB holds exactly what the report says.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames, range_indexes
from test_bad_inputs import CONFIG, day

from mlops_core.config import Settings, load_config
from mlops_core.data.ingest import ingest
from mlops_core.store import MetadataStore, open_project

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "mlops.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    s = load_config(root / "mlops.yaml")
    open_project(s.workspace, s.db_url, create=True)
    first = root / "day0.csv"
    day(0).to_csv(first, index=False)
    assert ingest(s, [first]).count("accepted") == 1
    first.unlink()
    return root


def _run(template: Path, write: Any, suffix: str) -> None:
    """Ingest what ``write(path)`` writes in a fresh copy of the project; check the invariants."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(template, project)
        s: Settings = load_config(project / "mlops.yaml")
        path = Path(tmp) / f"input{suffix}"
        write(path)

        report = ingest(s, [path])  # must not raise, whatever the input

        meta = MetadataStore(s.db_url)
        try:
            stored = {r.id: r for r in meta.list_batches()}
        finally:
            meta.dispose()
        assert report.outcomes, "every input is reported"
        for o in report.outcomes:
            assert o.status in ("accepted", "quarantined", "duplicate"), o
            if o.status == "duplicate":
                continue
            rec = stored[o.id]  # recorded as reported
            assert rec.status == o.status and rec.rows == o.rows
            if o.status == "accepted":
                assert (s.workspace / rec.path).is_file()
            else:
                folder = s.workspace / rec.path
                assert (folder / "reason.txt").is_file() and any(folder.glob("data.*"))
                assert o.reason and len(o.reason) < 2000
        assert len(stored) == 1 + sum(o.status != "duplicate" for o in report.outcomes)


# random frames ------------------------------------------------------------------------------------
NAMES = st.sampled_from(
    [
        "id",
        "ts",
        "income",
        "age",
        "region",
        "y",
        "Income",
        "note",
        "",
        " y",
        "ts ",
        "région",
        "a,b",
        'q"uote',
    ]
)
# text a file can hold: no lone surrogates (no encoding writes them; pandas cannot either)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(
        [
            "north",
            "south",
            "2025-03-02 10:00:00",
            "1e308",
            "NaN",
            "inf",
            "",
            "0",
            "1",
            "2099-01-01",
            "-1",
            "\u00a0",
            "\ufeff",
        ]
    ),
)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    """The contract's columns with random values in some, and random extra or missing ones."""
    base = day(1, rows=draw(st.integers(1, 60)))
    n = len(base)
    for col in draw(st.lists(st.sampled_from(list(base.columns)), max_size=3, unique=True)):
        base[col] = draw(st.lists(VALUES, min_size=n, max_size=n))
    for col in draw(st.lists(st.sampled_from(list(base.columns)), max_size=2, unique=True)):
        if draw(st.booleans()):
            base = base.drop(columns=col)
    for name in draw(st.lists(NAMES, max_size=2)):
        base[name] = draw(st.lists(VALUES, min_size=n, max_size=n))
    if draw(st.booleans()):
        base = base.sample(frac=1, random_state=draw(st.integers(0, 9)))
    return base


def _write_frame(frame: pd.DataFrame, fmt: str) -> Any:
    def write(path: Path) -> None:
        if fmt == ".csv":
            frame.to_csv(path, index=False)
        elif fmt == ".parquet":
            try:
                frame.to_parquet(path, index=False)
            except Exception:  # pyarrow cannot store every mix of Python objects: as text
                frame.astype(str).to_parquet(path, index=False)
        else:
            path.write_text(frame.to_json(orient="records", default_handler=str))

    return write


@FUZZ
@given(frame=frames(), fmt=st.sampled_from([".csv", ".parquet", ".json"]))
def test_random_frames_end_accepted_or_quarantined(
    template: Path, frame: pd.DataFrame, fmt: str
) -> None:
    _run(template, _write_frame(frame, fmt), fmt)


@FUZZ
@given(
    frame=data_frames(
        columns=[
            column("id", dtype=int),
            column("ts", dtype=str, elements=TEXT),
            column("income", dtype=float),
            column("age", dtype=int),
            column("region", dtype=str, elements=TEXT),
            column("y", dtype=int),
        ],
        index=range_indexes(min_size=1, max_size=40),
    )
)
def test_frames_of_the_contract_columns_with_any_values(
    template: Path, frame: pd.DataFrame
) -> None:
    _run(template, _write_frame(frame, ".csv"), ".csv")


# random bytes -------------------------------------------------------------------------------------
def _clean_csv() -> bytes:
    return day(1).to_csv(index=False).encode()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A clean CSV with random bytes overwritten, inserted, or cut off; or pure noise."""
    raw = bytearray(_clean_csv())
    how = draw(st.sampled_from(["overwrite", "insert", "truncate", "noise", "prefix"]))
    if how == "noise":
        return draw(st.binary(max_size=2000))
    if how == "truncate":
        return bytes(raw[: draw(st.integers(0, len(raw)))])
    if how == "prefix":
        return draw(st.binary(min_size=1, max_size=16)) + bytes(raw)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(raw) - 1))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if how == "overwrite":
            raw[at : at + len(chunk)] = chunk
        else:
            raw[at:at] = chunk
    return bytes(raw)


@FUZZ
@given(body=damaged(), suffix=st.sampled_from([".csv", ".json", ".parquet"]))
def test_random_bytes_end_accepted_or_quarantined(template: Path, body: bytes, suffix: str) -> None:
    _run(template, lambda path: path.write_bytes(body), suffix)


def test_the_fuzz_reaches_both_outcomes(template: Path) -> None:
    """The strategies are not all rejected at the door: a clean frame is accepted, noise is
    quarantined (a guard against a fuzz that only ever exercises one path)."""
    seen: list[str] = []

    def check(frame_or_bytes: Any, suffix: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            project = Path(tmp) / "p"
            shutil.copytree(template, project)
            s = load_config(project / "mlops.yaml")
            path = Path(tmp) / f"x{suffix}"
            if isinstance(frame_or_bytes, bytes):
                path.write_bytes(frame_or_bytes)
            else:
                frame_or_bytes.to_csv(path, index=False)
            seen.extend(o.status for o in ingest(s, [path]).outcomes)

    check(day(2), ".csv")
    check(bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)), ".csv")
    assert seen == ["accepted", "quarantined"], json.dumps(seen)
