"""Data drift: compute_drift gives the same per-column verdicts as a plain Evidently
``Report([DataDriftPreset()])`` on the same data, in both regimes of Evidently's default test
(reference ≤ 1000 rows: K-S / chi-square / z-test; > 1000 rows: normed Wasserstein /
Jensen-Shannon); a real shift is found and no shift is not; the drift share, its weighted form and
the dataset status; the guards (empty and tiny frames, all-NaN and constant columns, ±inf, new
categories); the seeded sample; and drift_report's HTML + JSON agreeing with compute_drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_core.monitor.reports import compute_drift, drift_report, report_verdicts, sample_rows

KINDS = {
    "num_same": "numeric",
    "num_shift": "numeric",
    "low_card": "numeric",
    "cat_obj": "categorical",
    "cat_same": "categorical",
    "cat_shift": "categorical",
    "flag": "boolean",
    "flag_same": "boolean",
}
SHIFTED = {"num_shift", "low_card", "cat_obj", "cat_shift", "flag"}
# the method compute_drift names (Evidently's registry name) -> Evidently's display name
METHOD = {
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
}


def mixed_frame(n: int, seed: int, *, shift: bool = False) -> pd.DataFrame:
    """Numeric, low-cardinality numeric, categorical (object and category dtype) and boolean
    columns; with ``shift`` the columns in SHIFTED move clearly and the others stay put."""
    rng = np.random.default_rng(seed)
    up = [0.1, 0.2, 0.3, 0.4]
    return pd.DataFrame(
        {
            "num_same": rng.normal(size=n),
            "num_shift": rng.normal(loc=1.0 if shift else 0.0, size=n),
            "low_card": rng.choice([0.0, 1.0, 2.0, 3.0], n, p=up if shift else up[::-1]),
            "cat_obj": rng.choice(list("abcd"), n, p=up if shift else up[::-1]).astype(object),
            "cat_same": pd.Categorical(rng.choice(list("xyz"), n)),
            "cat_shift": pd.Categorical(
                rng.choice(list("xyz"), n, p=[0.7, 0.2, 0.1] if shift else [0.2, 0.3, 0.5])
            ),
            "flag": rng.random(n) < (0.7 if shift else 0.3),
            "flag_same": rng.random(n) < 0.5,
        }
    )


def plain_report(
    reference: pd.DataFrame, current: pd.DataFrame, kinds: dict[str, str]
) -> dict[str, Any]:
    """Evidently's own report on the frames as they are: {column: (method, score, drifted)}."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    dd = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numeric"],
        categorical_columns=[c for c, k in kinds.items() if k != "numeric"],
    )
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=dd),
        Dataset.from_pandas(reference, data_definition=dd),
    )
    payload = json.loads(snap.json())
    verdicts = report_verdicts(payload)
    out = {}
    for m in payload["metrics"]:
        cfg = m["config"]
        if cfg.get("type") == "evidently:metric_v2:ValueDrift":
            out[cfg["column"]] = (cfg["method"], float(m["value"]), verdicts[cfg["column"]])
    return out


def verdicts(summary: Any) -> dict[str, bool]:
    return {c.column: c.drifted for c in summary.columns if c.drifted is not None}


def assert_shift_found(summary: Any, *, p_values: bool) -> None:
    """Every shifted column drifted; an unshifted one only by chance: a p-value test at 0.05
    flags about one in twenty (at most one of the three here), a distance test none."""
    drifted = set(summary.drifted_columns)
    assert drifted >= SHIFTED
    assert len(drifted - SHIFTED) <= (1 if p_values else 0)


# agreement with Evidently's plain report ---------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "numeric_test", "categorical_test", "boolean_test"),
    [
        (500, "ks", "chisquare", "z"),
        (1000, "ks", "chisquare", "z"),  # the switch is "> 1000", so 1000 rows is still K-S
        (3000, "wasserstein", "jensenshannon", "jensenshannon"),
    ],
)
def test_verdicts_agree_with_the_plain_evidently_report(
    rows: int, numeric_test: str, categorical_test: str, boolean_test: str
) -> None:
    ref, cur = mixed_frame(rows, 1), mixed_frame(rows, 2, shift=True)

    ours = compute_drift(ref, cur, KINDS)
    plain = plain_report(ref, cur, KINDS)

    assert {c.column: c.method for c in ours.columns} == {
        "num_same": numeric_test,
        "num_shift": numeric_test,
        # four distinct values: Evidently treats a numeric column like a categorical one
        "low_card": categorical_test,
        "cat_obj": categorical_test,
        "cat_same": categorical_test,
        "cat_shift": categorical_test,
        "flag": boolean_test,
        "flag_same": boolean_test,
    }
    for c in ours.columns:
        method, score, drifted = plain[c.column]
        assert METHOD[c.method] == method, c.column
        assert c.score == pytest.approx(score, rel=1e-9, abs=1e-12), c.column
        assert c.drifted is drifted, c.column
        assert c.status == ("drift" if drifted else "ok")
    assert_shift_found(ours, p_values=rows <= 1000)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Evidently's summary statistics of inf
@pytest.mark.parametrize("rows", [600, 2000])
def test_nan_and_inf_are_dropped_as_evidently_drops_them(rows: int) -> None:
    rng = np.random.default_rng(5)
    ref, cur = mixed_frame(rows, 3), mixed_frame(rows, 4, shift=True)
    for frame in (ref, cur):
        for col in ("num_same", "num_shift"):
            frame.loc[rng.choice(rows, rows // 10, replace=False), col] = np.nan
        frame.loc[rng.choice(rows, 5, replace=False), "num_same"] = np.inf
        frame.loc[rng.choice(rows, 5, replace=False), "num_shift"] = -np.inf
        frame["cat_obj"] = frame["cat_obj"].where(rng.random(rows) > 0.1, None)

    ours = compute_drift(ref, cur, KINDS)
    plain = plain_report(ref, cur, KINDS)

    for c in ours.columns:
        assert c.score is not None and np.isfinite(c.score), c.column
        assert c.score == pytest.approx(plain[c.column][1], rel=1e-9, abs=1e-12), c.column
        assert c.drifted is plain[c.column][2], c.column
    assert_shift_found(ours, p_values=rows <= 1000)


def test_the_test_follows_the_reference_size_after_missing_values_are_dropped() -> None:
    """1100 reference rows, 200 of them NaN in one column: 900 values, so K-S for that column,
    Wasserstein for the others (as Evidently decides per column)."""
    rng = np.random.default_rng(6)
    ref = pd.DataFrame({"holey": rng.normal(size=1100), "full": rng.normal(size=1100)})
    ref.loc[:199, "holey"] = np.nan
    cur = pd.DataFrame({"holey": rng.normal(size=1100), "full": rng.normal(size=1100)})
    kinds = {"holey": "numeric", "full": "numeric"}

    ours = {c.column: c for c in compute_drift(ref, cur, kinds).columns}
    plain = plain_report(ref, cur, kinds)

    assert ours["holey"].method == "ks" and ours["full"].method == "wasserstein"
    for col in kinds:
        assert METHOD[ours[col].method] == plain[col][0]
        assert ours[col].drifted is plain[col][2]


def test_no_shift_is_not_found_beyond_chance() -> None:
    rng = np.random.default_rng(7)
    cols = [f"x{i}" for i in range(20)]
    kinds = dict.fromkeys(cols, "numeric")
    for rows in (400, 3000):
        ref = pd.DataFrame(rng.normal(size=(rows, 20)), columns=cols)
        cur = pd.DataFrame(rng.normal(size=(rows, 20)), columns=cols)

        s = compute_drift(ref, cur, kinds)

        assert s.status == "ok" and not s.dataset_drift
        assert s.drift_share is not None
        # K-S at 0.05: about one column in twenty by chance; the distance has no false alarm
        assert s.drift_share <= (0.2 if rows <= 1000 else 0.0)


def test_a_small_real_shift_is_found_with_more_rows() -> None:
    rng = np.random.default_rng(8)
    ref = pd.DataFrame({"x": rng.normal(size=5000)})
    cur = pd.DataFrame({"x": rng.normal(loc=0.25, size=5000)})

    col = compute_drift(ref, cur, {"x": "numeric"}).columns[0]

    assert col.method == "wasserstein" and col.drifted
    assert col.score == pytest.approx(0.25, abs=0.05)  # the mean shift in reference sds


# share and status ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("share_threshold", "status"), [(0.5, "drift"), (0.51, "ok"), (0.25, "drift"), (1.0, "ok")]
)
def test_status_is_drift_when_the_share_reaches_the_threshold(
    share_threshold: float, status: str
) -> None:
    ref, cur = mixed_frame(2000, 10), mixed_frame(2000, 11, shift=True)
    kinds = {c: KINDS[c] for c in ("num_same", "num_shift", "cat_same", "cat_shift")}

    s = compute_drift(ref, cur, kinds, drift_share=share_threshold)

    assert s.drift_share == 0.5  # two of four columns
    assert s.share_threshold == share_threshold
    assert s.status == status and s.dataset_drift is (status == "drift")
    assert s.weighted_drift_share is None  # no importances given
    assert "2 of 4 columns drifted" in s.message


def test_weighted_share_follows_importance() -> None:
    ref, cur = mixed_frame(2000, 12), mixed_frame(2000, 13, shift=True)
    kinds = {c: KINDS[c] for c in ("num_same", "num_shift", "cat_same", "flag_same")}

    minor = compute_drift(
        ref,
        cur,
        kinds,
        importances={"num_same": 0.4, "num_shift": 0.01, "cat_same": 0.3, "flag_same": 0.29},
    )
    major = compute_drift(
        ref,
        cur,
        kinds,
        importances={"num_same": 0.1, "num_shift": 0.8, "cat_same": 0.05, "flag_same": 0.05},
    )

    for s in (minor, major):
        assert s.drifted_columns == ["num_shift"]
        assert s.drift_share == 0.25
    # a drifted unimportant column barely moves the weighted share; an important one does
    assert minor.weighted_drift_share == pytest.approx(0.01)
    assert major.weighted_drift_share == pytest.approx(0.8)
    assert "by importance" in major.message
    # the columns keep their importance; one not given counts as 0
    partial = compute_drift(ref, cur, kinds, importances={"num_shift": 1.0, "num_same": 1.0})
    assert {c.column: c.importance for c in partial.columns}["cat_same"] is None
    assert partial.weighted_drift_share == pytest.approx(0.5)
    # all importances zero: no weighted share rather than a division by zero
    zero = compute_drift(ref, cur, kinds, importances=dict.fromkeys(kinds, 0.0))
    assert zero.weighted_drift_share is None and zero.drift_share == 0.25


def test_untestable_columns_do_not_count_in_either_share() -> None:
    ref, cur = mixed_frame(2000, 14), mixed_frame(2000, 15, shift=True)
    for frame in (ref, cur):
        frame["empty"] = np.nan
    kinds = {"num_same": "numeric", "num_shift": "numeric", "empty": "numeric"}

    s = compute_drift(
        ref, cur, kinds, importances={"num_same": 1.0, "num_shift": 1.0, "empty": 8.0}
    )

    assert s.drift_share == 0.5 and s.weighted_drift_share == pytest.approx(0.5)


# guards ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ref_rows", "cur_rows"), [(500, 0), (0, 500), (500, 1), (1, 500), (500, 99), (99, 500), (0, 0)]
)
def test_empty_or_tiny_frames_give_not_enough_data(ref_rows: int, cur_rows: int) -> None:
    ref, cur = mixed_frame(ref_rows, 20), mixed_frame(cur_rows, 21, shift=True)

    s = compute_drift(ref, cur, KINDS, min_rows=100)

    assert s.status == "not_enough_data" and not s.dataset_drift
    assert s.columns == [] and s.drifted_columns == []
    assert s.drift_share is None and s.weighted_drift_share is None
    assert (s.rows_reference, s.rows_current) == (ref_rows, cur_rows)
    assert "not enough data" in s.message


def test_min_rows_exactly_is_enough() -> None:
    s = compute_drift(mixed_frame(100, 22), mixed_frame(100, 23, shift=True), KINDS, min_rows=100)
    assert s.status in ("ok", "drift") and len(s.columns) == len(KINDS)


def test_all_missing_and_constant_columns_are_reported_and_left_out() -> None:
    ref, cur = mixed_frame(600, 24), mixed_frame(600, 25, shift=True)
    ref["na_both"], cur["na_both"] = np.nan, np.nan
    ref["na_cur"], cur["na_cur"] = np.random.default_rng(0).normal(size=600), np.nan
    ref["inf_only"], cur["inf_only"] = np.inf, -np.inf  # nothing finite is missing too
    ref["na_cat"], cur["na_cat"] = None, "a"
    ref["const"], cur["const"] = 1.0, 1.0
    ref["const_cat"], cur["const_cat"] = "z", "z"
    ref["const_flag"], cur["const_flag"] = True, True
    kinds = {
        "num_shift": "numeric",
        "num_same": "numeric",
        "na_both": "numeric",
        "na_cur": "numeric",
        "inf_only": "numeric",
        "na_cat": "categorical",
        "const": "numeric",
        "const_cat": "categorical",
        "const_flag": "boolean",
    }

    s = compute_drift(ref, cur, kinds)

    status = {c.column: c.status for c in s.columns}
    assert status == {
        "num_shift": "drift",
        "num_same": "ok",
        "na_both": "all_missing",
        "na_cur": "all_missing",
        "inf_only": "all_missing",
        "na_cat": "all_missing",
        "const": "constant",
        "const_cat": "constant",
        "const_flag": "constant",
    }
    for c in s.columns:
        if c.status in ("all_missing", "constant"):
            assert c.drifted is None and c.method is None and c.score is None
    assert s.drift_share == 0.5  # of the two testable columns
    assert s.drifted_columns == ["num_shift"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the plain report's correlations
def test_a_column_constant_on_one_side_only_is_tested() -> None:
    """A feature stuck at one value (or moved to a new constant) is drift, not "constant"."""
    rng = np.random.default_rng(26)
    ref = pd.DataFrame({"stuck": rng.normal(size=600), "was_const": 0.0, "moved": "a"})
    cur = pd.DataFrame(
        {"stuck": 0.0, "was_const": rng.normal(size=600), "moved": "b"}, index=range(600)
    )
    kinds = {"stuck": "numeric", "was_const": "numeric", "moved": "categorical"}

    s = compute_drift(ref, cur, kinds)

    assert {c.column: c.status for c in s.columns} == dict.fromkeys(kinds, "drift")
    plain = plain_report(ref, cur, kinds)
    assert verdicts(s) == {c: plain[c][2] for c in kinds}


def test_only_untestable_columns_give_not_enough_data() -> None:
    ref = pd.DataFrame({"a": [np.nan] * 200, "b": [3.0] * 200})
    cur = pd.DataFrame({"a": [np.nan] * 200, "b": [3.0] * 200})

    s = compute_drift(ref, cur, {"a": "numeric", "b": "numeric"})

    assert s.status == "not_enough_data" and s.drift_share is None
    assert [c.status for c in s.columns] == ["all_missing", "constant"]
    assert "no column could be tested" in s.message


def test_columns_missing_from_a_frame_are_skipped() -> None:
    ref, cur = mixed_frame(300, 27), mixed_frame(300, 28)
    s = compute_drift(ref, cur.drop(columns=["cat_obj"]), KINDS | {"absent": "numeric"})
    assert {c.column for c in s.columns} == set(KINDS) - {"cat_obj"}


def test_infinities_are_ignored() -> None:
    rng = np.random.default_rng(29)
    base = rng.normal(size=800)
    ref = pd.DataFrame({"x": base})
    noisy = np.concatenate([base, [np.inf] * 100, [-np.inf] * 100])
    cur = pd.DataFrame({"x": rng.permutation(noisy)})

    col = compute_drift(ref, cur, {"x": "numeric"}).columns[0]

    # the finite values are exactly the reference's: K-S finds nothing
    assert col.method == "ks" and col.score == pytest.approx(1.0) and not col.drifted


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # chi-square: 0 expected for a new value
@pytest.mark.parametrize("rows", [500, 3000])
@pytest.mark.parametrize("dtype", ["object", "category"])
def test_new_categories_in_current_are_drift(rows: int, dtype: str) -> None:
    rng = np.random.default_rng(30)
    ref = pd.DataFrame({"c": rng.choice(list("abc"), rows)}).astype(dtype)
    cur_values = rng.choice(list("abc"), rows)
    cur_values[rng.random(rows) < 0.2] = "new"
    cur = pd.DataFrame({"c": cur_values}).astype(dtype)
    same = pd.DataFrame({"c": rng.choice(list("abc"), rows)}).astype(dtype)

    drifted = compute_drift(ref, cur, {"c": "categorical"}).columns[0]
    stable = compute_drift(ref, same, {"c": "categorical"}).columns[0]

    assert drifted.drifted and not stable.drifted
    assert drifted.drifted is plain_report(ref, cur, {"c": "categorical"})["c"][2]


def test_nullable_and_mixed_dtypes_are_cleaned() -> None:
    rng = np.random.default_rng(31)
    n = 400
    ref = pd.DataFrame(
        {
            "i": pd.array(rng.integers(0, 50, n), dtype="Int64"),
            "b": pd.array(rng.random(n) < 0.5, dtype="boolean"),
            "c": pd.Categorical(rng.choice([1, 2, 3], n)),
        }
    )
    cur = ref.copy()
    cur.loc[:40, "i"] = pd.NA
    cur.loc[:40, "b"] = pd.NA
    kinds = {"i": "numeric", "b": "boolean", "c": "categorical"}

    s = compute_drift(ref, cur, kinds)

    assert [c.status for c in s.columns] == ["ok", "ok", "ok"]


# sampling ------------------------------------------------------------------------------------
def test_sample_rows_is_seeded_ordered_and_complete_when_small() -> None:
    frame = pd.DataFrame({"x": np.arange(1000)})

    a, b, c = sample_rows(frame, 100, 1), sample_rows(frame, 100, 1), sample_rows(frame, 100, 2)

    assert len(a) == 100 and a.equals(b) and not a.equals(c)
    assert a["x"].is_monotonic_increasing and a["x"].is_unique
    assert sample_rows(frame, 1000, 1) is frame and sample_rows(frame, 5000, 1) is frame


@pytest.mark.parametrize("sample_size", [800, 4000])
def test_a_sample_gives_the_verdicts_of_the_full_data(sample_size: int) -> None:
    ref, cur = mixed_frame(20_000, 32), mixed_frame(20_000, 33, shift=True)

    full = compute_drift(ref, cur, KINDS, sample_size=50_000)
    sampled = compute_drift(ref, cur, KINDS, sample_size=sample_size, seed=3)
    again = compute_drift(ref, cur, KINDS, sample_size=sample_size, seed=3)
    other = compute_drift(ref, cur, KINDS, sample_size=sample_size, seed=4)

    assert full.sampled_rows == 20_000 and sampled.sampled_rows == sample_size
    assert (sampled.rows_reference, sampled.rows_current) == (20_000, 20_000)
    assert set(full.drifted_columns) == SHIFTED
    # ≤ 1000 sampled rows switch to p-value tests, whose verdict on an unshifted column is
    # chance: compare the clear columns
    clear = SHIFTED if sample_size <= 1000 else set(KINDS)
    for s in (sampled, other):
        assert {c: verdicts(s)[c] for c in clear} == {c: verdicts(full)[c] for c in clear}
    assert sampled.to_dict() == again.to_dict()  # same seed, same result
    assert [c.score for c in sampled.columns] != [c.score for c in other.columns]


def test_to_dict_is_json_serialisable() -> None:
    ref, cur = mixed_frame(600, 34), mixed_frame(600, 35, shift=True)
    ref["empty"], cur["empty"] = np.nan, np.nan
    s = compute_drift(
        ref, cur, KINDS | {"empty": "numeric"}, importances={c: np.float64(1.0) for c in KINDS}
    )

    d = json.loads(json.dumps(s.to_dict()))

    assert d["status"] == "drift" and d["dataset_drift"] is True
    assert set(d["drifted_columns"]) == SHIFTED
    assert {c["column"]: c["status"] for c in d["columns"]}["empty"] == "all_missing"
    assert (
        json.loads(json.dumps(compute_drift(ref.iloc[:0], cur, KINDS).to_dict()))["status"]
        == "not_enough_data"
    )


# the report for people -------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Evidently's summary statistics of inf
@pytest.mark.parametrize("rows", [600, 2500])
def test_drift_report_writes_html_and_json_with_the_same_verdicts(
    tmp_path: Path, rows: int
) -> None:
    ref, cur = mixed_frame(rows, 36), mixed_frame(rows, 37, shift=True)
    cur.loc[:9, "num_same"] = np.inf
    ref["empty"], cur["empty"] = np.nan, np.nan  # Evidently raises on these: left out
    cur["cur_empty"], ref["cur_empty"] = None, "a"
    ref["const"], cur["const"] = 2.0, 2.0
    kinds = KINDS | {"empty": "numeric", "cur_empty": "categorical", "const": "numeric"}

    summary = compute_drift(ref, cur, kinds)
    files = drift_report(ref, cur, kinds, tmp_path / "r", name="drift")

    assert files.html == tmp_path / "r" / "drift.html" and files.html.stat().st_size > 10_000
    payload = json.loads(files.json.read_text(encoding="utf-8"))
    assert "DriftedColumnsCount" in " ".join(files.metrics)
    reported = report_verdicts(payload)
    assert "empty" not in reported and "cur_empty" not in reported
    assert {c: reported[c] for c in verdicts(summary)} == verdicts(summary)
    assert set(summary.drifted_columns) == SHIFTED


@pytest.mark.parametrize(("method", "threshold"), [("psi", 0.2), (None, 0.3)])
def test_a_chosen_method_and_threshold_reach_both_compute_drift_and_the_report(
    tmp_path: Path, method: str | None, threshold: float
) -> None:
    ref, cur = mixed_frame(1500, 40), mixed_frame(1500, 41, shift=True)

    summary = compute_drift(ref, cur, KINDS, method=method, threshold=threshold)
    files = drift_report(ref, cur, KINDS, tmp_path, method=method, threshold=threshold)

    assert {c.threshold for c in summary.columns} == {threshold}
    if method:
        assert {c.method for c in summary.columns} == {method}
    assert report_verdicts(json.loads(files.json.read_text(encoding="utf-8"))) == verdicts(summary)


# slices --------------------------------------------------------------------------------------
def _slices(metric: str, values: dict[str, tuple[float, int]]) -> dict[str, Any]:
    return {"region": {k: {metric: v, "rows": float(n)} for k, (v, n) in values.items()}}


def test_the_standard_error_shrinks_with_the_rows() -> None:
    from mlops_core.train.evaluation import metric_standard_error

    for metric, value in (("roc_auc", 0.8), ("accuracy", 0.9), ("rmse", 3.0), ("log_loss", 0.4)):
        small, large = (metric_standard_error(metric, value, n) for n in (100, 10_000))
        assert 0 < large < small, metric
        assert small / large == pytest.approx(10, rel=0.35), metric
    # Hanley & McNeil: 0.8 on 50 positives and 50 negatives
    assert metric_standard_error("roc_auc", 0.8, 100, 0.5) == pytest.approx(0.0435, abs=0.002)
    assert metric_standard_error("roc_auc", 0.8, 1) == float("inf")


def test_a_slice_is_flagged_only_beyond_its_noise_and_the_tolerance() -> None:
    from mlops_core.monitor.slices import compare_slices

    base = _slices("roc_auc", {"south": (0.80, 2000), "north": (0.80, 2000), "tiny": (0.8, 60)})
    # the whole batch at 0.78: south fell 0.10 behind, north held, tiny fell 0.10 on 60 rows
    now = _slices("roc_auc", {"south": (0.68, 2000), "north": (0.79, 2000), "tiny": (0.68, 60)})
    checks = {
        c.value: c
        for c in compare_slices("roc_auc", now, 0.78, {"region": (base, 0.8, "holdout")}, 0.05)
    }
    assert checks["south"].flagged and checks["south"].regression == pytest.approx(0.10)
    assert not checks["north"].flagged
    assert not checks["tiny"].flagged and checks["tiny"].noise > 0.10  # too few rows to say
    assert "region=south" in checks["south"].text()
    # a large slice with a drop within the tolerance is not flagged, however many rows
    big_base = _slices("roc_auc", {"a": (0.80, 200_000)})
    big_now = _slices("roc_auc", {"a": (0.77, 200_000)})
    [c] = compare_slices("roc_auc", big_now, 0.80, {"region": (big_base, 0.80, "holdout")}, 0.05)
    assert c.regression > c.noise and not c.flagged


def test_a_drop_of_the_whole_model_is_no_slice_regression() -> None:
    from mlops_core.monitor.slices import compare_slices

    base = _slices("rmse", {"a": (2.0, 3000), "b": (3.0, 3000)})
    now = _slices("rmse", {"a": (3.0, 3000), "b": (4.0, 3000)})  # every slice 1.0 worse
    checks = compare_slices("rmse", now, 3.5, {"region": (base, 2.5, "reference")}, 0.05)
    assert [c.flagged for c in checks] == [False, False]
    assert all(c.regression == pytest.approx(0.0) for c in checks)


def test_slice_columns_are_the_configured_else_the_top_categorical_features() -> None:
    from mlops_core.monitor.slices import slice_columns

    frame = pd.DataFrame(
        {"a": ["x", "y"] * 5, "b": ["u"] * 10, "c": list("abcdefghij"), "n": range(10)}
    )
    kinds = {"a": "categorical", "b": "categorical", "c": "categorical", "n": "numeric"}
    imp = {"a": 0.1, "b": 0.5, "c": 0.3, "n": 0.9}
    assert slice_columns(["c", "missing"], kinds, imp, frame) == ["c"]
    assert slice_columns([], kinds, imp, frame) == ["b", "c", "a"]
    assert slice_columns([], kinds, imp, frame, top=2) == ["b", "c"]
    assert slice_columns([], kinds, None, frame) == ["a", "b", "c"]
    assert slice_columns([], kinds, {"a": 0.2}, frame) == ["a"]  # unused features are left out


def test_measured_slices_carry_the_positive_share() -> None:
    from mlops_core.monitor.slices import measure_slices

    frame = pd.DataFrame({"region": ["n"] * 4 + ["s"] * 4})
    y = pd.Series(["0", "1", "1", "1", "0", "0", "0", "1"])
    p1 = np.array([0.2, 0.7, 0.8, 0.9, 0.1, 0.3, 0.6, 0.7])
    pred = pd.DataFrame(
        {"prediction": np.where(p1 > 0.5, "1", "0"), "proba_0": 1 - p1, "proba_1": p1}
    )
    out = measure_slices("binary", frame, y, pred, ["region"], ["0", "1"])
    assert out["region"]["n"]["positive_share"] == pytest.approx(0.75)
    assert out["region"]["s"]["roc_auc"] == pytest.approx(1.0)
    assert out["region"]["s"]["rows"] == 4


def test_the_report_is_wanted_when_any_column_drifts() -> None:
    from mlops_core.config import Settings
    from mlops_core.monitor.reports import ColumnDrift, DriftSummary
    from mlops_core.monitor.run import _wants_report

    def summary(status: str, drifted: list[bool]) -> DriftSummary:
        cols = [
            ColumnDrift(
                f"c{i}", "numeric", "drift" if d else "ok", "ks", 0.01 if d else 0.5, 0.05, d
            )
            for i, d in enumerate(drifted)
        ]
        return DriftSummary(status, 500, 500, 500, cols, sum(drifted) / len(drifted), None, 0.5)

    s = Settings.model_validate({"project": "p", "data": {"target": "y"}})
    assert _wants_report(s, summary("ok", [True, False, False, False]), None)
    assert not _wants_report(s, summary("ok", [False] * 4), None)
    assert _wants_report(s, summary("drift", [True, True, False, False]), None)
    assert not _wants_report(s, summary("not_enough_data", [True]), None)
    assert not _wants_report(s, summary("ok", [True]), False)


def test_more_slices_compared_need_a_larger_regression() -> None:
    from mlops_core.monitor.slices import Z, z_for

    assert z_for(1) == Z  # one slice: two standard errors
    assert z_for(13) == pytest.approx(2.67, abs=0.01)  # Bonferroni over 13 slices
    assert z_for(100) > z_for(13) > z_for(2)
