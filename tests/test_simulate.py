"""The seeded demo stream: reproducible, with a covariate shift and a concept change at known
places, and a landing folder with the faults real feeds have."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_core.demo.stream import (
    CHANNELS,
    ID,
    PURPOSES,
    REGIONS,
    TARGET,
    TIME,
    DemoStream,
    LandedFile,
    generate_stream,
    write_landing,
)

FEATURES = [
    "age",
    "income",
    "loan_amount",
    "credit_score",
    "debt_to_income",
    "employment_years",
    "region",
    "purpose",
    "channel",
    "has_cosigner",
]


@pytest.fixture(scope="module")
def stream() -> DemoStream:
    return generate_stream(100_000, seed=42)


def _position(stream: DemoStream) -> pd.Series:
    """Each row's place on the timeline, 0..1."""
    t = stream.frame[TIME]
    return (t - pd.Timestamp("2025-01-06")) / pd.Timedelta(days=365)


def test_same_seed_same_stream() -> None:
    a, b = generate_stream(5_000, seed=7), generate_stream(5_000, seed=7)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.drift_points == b.drift_points
    assert a.drift_json() == b.drift_json()


def test_other_seed_other_stream() -> None:
    a, b = generate_stream(5_000, seed=7), generate_stream(5_000, seed=8)
    assert not a.frame.equals(b.frame)
    assert not np.allclose(a.frame["income"], b.frame["income"])
    assert a.drift_points == b.drift_points  # the drift is placed by the timeline, not the seed


def test_columns_and_dtypes(stream: DemoStream) -> None:
    df = stream.frame
    assert list(df.columns) == [ID, TIME, *FEATURES, TARGET]
    assert len(df) == 100_000
    dtypes = df.dtypes.astype(str).to_dict()
    assert dtypes[ID] == "int64" and dtypes[TARGET] == "int64"
    assert dtypes[TIME].startswith("datetime64")
    assert dtypes["has_cosigner"] == "bool"
    for col in (
        "age",
        "income",
        "loan_amount",
        "credit_score",
        "debt_to_income",
        "employment_years",
    ):
        assert pd.api.types.is_numeric_dtype(df[col]), col
    assert set(df["region"]) == set(REGIONS)
    assert set(df["purpose"]) == set(PURPOSES)
    assert set(df["channel"]) == set(CHANNELS)
    assert set(df[TARGET]) == {0, 1}
    assert df[ID].is_unique and df[ID].is_monotonic_increasing
    assert df[TIME].is_monotonic_increasing
    assert not df.isna().any().any()
    assert df["age"].between(18, 80).all()
    assert df["credit_score"].between(300, 850).all()
    assert (df["loan_amount"] >= 1_000).all()
    assert df[TIME].min() >= pd.Timestamp("2025-01-06")
    assert df[TIME].max() <= pd.Timestamp("2025-01-06") + pd.Timedelta(days=365)
    assert stream.features == {
        "numeric": [
            "age",
            "income",
            "loan_amount",
            "credit_score",
            "debt_to_income",
            "employment_years",
        ],
        "categorical": ["region", "purpose", "channel"],
        "boolean": ["has_cosigner"],
    }


def test_arguments_shape_the_stream() -> None:
    s = generate_stream(1_000, start="2024-03-01", days=30, seed=1, label_delay_days=3)
    assert len(s.frame) == 1_000
    assert s.frame[TIME].min() >= pd.Timestamp("2024-03-01")
    assert s.frame[TIME].max() <= pd.Timestamp("2024-03-31")
    assert s.label_delay == pd.Timedelta(days=3)
    with pytest.raises(ValueError):
        generate_stream(0)


def test_drift_points_are_recorded_in_order(stream: DemoStream) -> None:
    shift, concept = stream.drift_points
    assert shift.kind == "covariate_shift" and concept.kind == "concept_change"
    t0 = pd.Timestamp("2025-01-06")

    def at(share: float) -> pd.Timestamp:
        return t0 + pd.Timedelta(days=365 * share)

    second = pd.Timedelta(seconds=1)
    assert abs(pd.Timestamp(shift.start) - at(0.35)) < second
    assert abs(pd.Timestamp(shift.end) - at(0.65)) < second
    assert abs(pd.Timestamp(concept.start) - at(0.75)) < second
    assert shift.start < shift.end < concept.start == concept.end
    assert shift.description and concept.description
    doc = json.loads(stream.drift_json())
    assert doc["seed"] == 42 and doc["label_delay_days"] == 14
    assert [p["kind"] for p in doc["drift_points"]] == ["covariate_shift", "concept_change"]


def test_covariate_shift_is_visible(stream: DemoStream) -> None:
    df, t = stream.frame, _position(stream)
    early, late = df[t < 0.3], df[(t > 0.7) & (t < 0.75)]
    assert late["income"].mean() > 1.15 * early["income"].mean()
    assert late["debt_to_income"].mean() > early["debt_to_income"].mean() + 0.03
    assert late["credit_score"].mean() < early["credit_score"].mean() - 8
    online_early = (early["channel"] == "online").mean()
    online_late = (late["channel"] == "online").mean()
    assert online_early == pytest.approx(0.25, abs=0.03)
    assert online_late == pytest.approx(0.60, abs=0.03)
    # before the shift starts nothing moves
    a, b = df[t < 0.15], df[(t > 0.2) & (t < 0.35)]
    assert b["income"].mean() == pytest.approx(a["income"].mean(), rel=0.05)


def test_concept_change_moves_labels_not_features(stream: DemoStream) -> None:
    df, t = stream.frame, _position(stream)
    before, after = df[(t >= 0.70) & (t < 0.75)], df[(t >= 0.75) & (t < 0.80)]
    assert after[TARGET].mean() > before[TARGET].mean() + 0.05
    assert after[TARGET].mean() > 1.3 * before[TARGET].mean()
    for col in ("income", "debt_to_income", "credit_score", "age", "loan_amount"):
        gap = abs(after[col].mean() - before[col].mean())
        assert gap < 0.1 * before[col].std(), col
    share_before = before["channel"].value_counts(normalize=True)
    share_after = after["channel"].value_counts(normalize=True)
    assert (share_after - share_before).abs().max() < 0.03
    # the change hits online applicants harder than branch ones
    lift = after.groupby("channel")[TARGET].mean() - before.groupby("channel")[TARGET].mean()
    assert lift["online"] > lift["branch"]


def test_a_million_rows() -> None:
    s = generate_stream(1_000_000, seed=3)
    assert len(s.frame) == 1_000_000
    assert s.frame[ID].iloc[-1] == 1_000_000
    assert s.frame[TIME].is_monotonic_increasing


# the landing folder --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoStream, list[LandedFile]]:
    s = generate_stream(20_000, seed=5)
    folder = tmp_path_factory.mktemp("landing")
    return s, write_landing(s, folder)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def _by_fault(files: list[LandedFile], fault: str) -> LandedFile:
    [f] = [f for f in files if f.fault == fault]
    return f


def test_landing_writes_csv_and_parquet(landed: tuple[DemoStream, list[LandedFile]]) -> None:
    s, files = landed
    paths = [f.path for f in files]
    assert all(p.exists() for p in paths)
    assert {p.suffix for p in paths} == {".csv", ".parquet"}
    assert len(set(paths)) == len(paths)
    assert sorted(p.name for p in paths) == sorted(p.name for p in paths[0].parent.iterdir())
    weeks = s.frame[TIME].dt.to_period("W").nunique()
    assert len(files) == weeks + 1  # one file a week, and one sent twice
    clean = [f.path for f in files if f.fault is None]
    rows = sum(len(_read(p)) for p in clean)
    faulty = [
        f
        for f in files
        if f.fault in ("renamed_column", "all_null_feature", "non_utf8_csv", "corrupt_parquet")
    ]
    assert rows < len(s.frame)
    assert len(faulty) == 4
    first = _read(clean[0])
    assert list(first.columns) == list(s.frame.columns)
    assert first[ID].tolist() == s.frame[ID].iloc[: len(first)].tolist()


def test_landing_faults(landed: tuple[DemoStream, list[LandedFile]]) -> None:
    _, files = landed
    assert sorted(f.fault for f in files if f.fault) == [
        "all_null_feature",
        "corrupt_parquet",
        "non_utf8_csv",
        "renamed_column",
        "resent_duplicate",
    ]

    renamed = _read(_by_fault(files, "renamed_column").path)
    assert "CreditScore" in renamed.columns and "credit_score" not in renamed.columns

    corrupt = _by_fault(files, "corrupt_parquet").path
    assert corrupt.suffix == ".parquet"
    with pytest.raises(Exception):  # noqa: B017  (pyarrow's error types vary by version)
        pq.read_table(corrupt)

    latin = _by_fault(files, "non_utf8_csv").path
    assert latin.suffix == ".csv"
    raw = latin.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert "nörth" in set(pd.read_csv(latin, encoding="latin-1")["region"])

    nulls = _read(_by_fault(files, "all_null_feature").path)
    assert nulls["income"].isna().all() and nulls["age"].notna().all()

    resent = _by_fault(files, "resent_duplicate")
    assert "_resent" in resent.path.stem
    index = [f.path for f in files].index(resent.path)
    original = files[index - 1].path
    assert resent.path.read_bytes() == original.read_bytes()
    assert resent.path.suffix == original.suffix


def test_late_files_carry_no_target(landed: tuple[DemoStream, list[LandedFile]]) -> None:
    s, files = landed
    cutoff = s.frame[TIME].max() - s.label_delay
    readable = [f.path for f in files if f.fault not in ("corrupt_parquet", "non_utf8_csv")]
    late = early = 0
    for path in readable:
        df = _read(path)
        newest = pd.to_datetime(df[TIME]).max()
        if newest > cutoff:
            assert TARGET not in df.columns, path.name
            late += 1
        else:
            assert TARGET in df.columns, path.name
            early += 1
    assert late >= 2 and early >= 40
    last = _read(files[-1].path)
    assert TARGET not in last.columns


def test_landing_without_faults(tmp_path: Path) -> None:
    s = generate_stream(3_000, seed=9, days=120)
    files = write_landing(s, tmp_path / "clean", faults=False)
    assert all(f.fault is None for f in files)
    frames = [_read(f.path) for f in files]
    together = pd.concat(frames, ignore_index=True)
    assert len(together) == len(s.frame)
    assert together[ID].tolist() == s.frame[ID].tolist()
    np.testing.assert_allclose(together["income"], s.frame["income"])
    labelled = together[together[TARGET].notna()] if TARGET in together else together
    assert len(labelled) < len(together)


def test_landing_by_day(tmp_path: Path) -> None:
    s = generate_stream(2_000, seed=2, days=20)
    files = write_landing(s, tmp_path / "daily", period="1D")
    assert len(files) == s.frame[TIME].dt.normalize().nunique() + 1
