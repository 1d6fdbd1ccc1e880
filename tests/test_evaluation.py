"""Metrics by task against scikit-learn on known inputs, calibration error, slice metrics, and the
promotion gate: every check can pass and can fail, every reason is listed, and (Hypothesis) no
decision passes with a failed check, a failed smoke test or a score under the minimum."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from mlops_core.train.evaluation import (
    HIGHER_IS_BETTER,
    MIN_SLICE_ROWS,
    PRIMARY,
    compute_metrics,
    decide_gate,
    expected_calibration_error,
    slice_metrics,
)
from mlops_core.train.pyfunc.tabular_model import output_frame


def _binary(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0/1 and a noisy, informative probability of class 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(scale=0.25, size=n), 0.01, 0.99)
    return y, p


def _pred(task: str, classes: list[Any] | None, raw: np.ndarray) -> pd.DataFrame:
    return output_frame(task, classes, raw, pd.RangeIndex(len(raw)))


# compute_metrics ---------------------------------------------------------------------------
def test_binary_metrics_match_sklearn() -> None:
    y, p = _binary()
    pred = _pred("binary", [0, 1], p)

    m = compute_metrics("binary", pd.Series(y), pred, [0, 1])

    yhat = (p > 0.5).astype(int)
    assert set(m) == {"roc_auc", "pr_auc", "accuracy", "f1", "log_loss", "calibration_error"}
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat))
    assert m["f1"] == pytest.approx(skm.f1_score(y, yhat))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["calibration_error"] == pytest.approx(expected_calibration_error(y, p))
    assert 0.6 < m["roc_auc"] < 1.0


def test_binary_metrics_with_text_labels_use_the_last_class_as_positive() -> None:
    y, p = _binary(seed=1)
    labels = np.where(y == 1, "yes", "no")
    pred = _pred("binary", ["no", "yes"], p)

    m = compute_metrics("binary", pd.Series(labels), pred, ["no", "yes"])

    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["f1"] == pytest.approx(skm.f1_score(y, (p > 0.5).astype(int)))
    # without classes they are taken from the labels, sorted
    assert compute_metrics("binary", labels, pred) == pytest.approx(m)


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    classes = ["high", "low", "mid"]
    y = rng.choice(classes, 300)
    logits = rng.normal(size=(300, 3)) + 2.0 * (y[:, None] == np.array(classes))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = _pred("multiclass", classes, proba)

    m = compute_metrics("multiclass", pd.Series(y), pred, classes)

    yhat = np.array(classes)[proba.argmax(axis=1)]
    assert set(m) == {"accuracy", "f1_macro", "log_loss"}
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat))
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, yhat, average="macro"))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=classes))
    assert m["accuracy"] > 0.5


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(10, 3, 150)
    yhat = y + rng.normal(scale=1.0, size=150)
    pred = _pred("regression", None, yhat)

    m = compute_metrics("regression", pd.Series(y), pred)

    assert set(m) == {"rmse", "mae", "r2"}
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, yhat)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, yhat))
    assert m["r2"] == pytest.approx(skm.r2_score(y, yhat))


def test_perfect_binary_predictions() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    m = compute_metrics("binary", y, _pred("binary", [0, 1], y.astype(float)), [0, 1])
    assert m["roc_auc"] == m["pr_auc"] == m["accuracy"] == m["f1"] == 1.0
    assert m["log_loss"] < 1e-5
    assert m["calibration_error"] == 0.0


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_gives_nan_auc_not_a_crash(label: int) -> None:
    y = np.full(20, label)
    p = np.linspace(0.1, 0.9, 20)

    m = compute_metrics("binary", pd.Series(y), _pred("binary", [0, 1], p), [0, 1])

    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    for k in ("accuracy", "f1", "log_loss", "calibration_error"):
        assert math.isfinite(m[k]), k


def test_multiclass_with_a_class_absent_from_the_labels() -> None:
    classes = ["a", "b", "c"]
    y = np.array(["a", "b", "a", "b"])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])

    m = compute_metrics("multiclass", y, _pred("multiclass", classes, proba), classes)

    assert m["accuracy"] == 1.0
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=classes))


def test_regression_with_one_row_gives_nan_r2() -> None:
    m = compute_metrics("regression", np.array([2.0]), _pred("regression", None, np.array([1.5])))
    assert m["rmse"] == pytest.approx(0.5) and m["mae"] == pytest.approx(0.5)
    assert math.isnan(m["r2"])


# calibration -------------------------------------------------------------------------------
def test_calibration_error_is_zero_when_every_bin_matches() -> None:
    # 0.25 → one in four positive; 0.75 → three in four; 0.5 → half
    p = np.array([0.25] * 4 + [0.75] * 4 + [0.5] * 2)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 1])
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_calibration_error_is_large_for_overconfident_predictions() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 1000)
    p = np.where(rng.uniform(size=1000) < 0.5, 0.99, 0.01)  # confident and random

    ece = expected_calibration_error(y, p)

    assert ece > 0.4
    # well-calibrated draws from the same probabilities score far better
    y_cal = (rng.uniform(size=1000) < p).astype(int)
    assert expected_calibration_error(y_cal, p) < 0.05


def test_calibration_error_counts_the_extremes() -> None:
    # probabilities of exactly 0 and 1 fall into the first and last bins
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0
    assert expected_calibration_error(np.array([1, 0]), np.array([0.0, 1.0])) == 1.0


# slice metrics -----------------------------------------------------------------------------
def test_slice_metrics_by_categorical_column() -> None:
    y, p = _binary(n=120, seed=6)
    region = np.array(["north"] * 70 + ["south"] * 40 + ["east"] * 10)
    frame = pd.DataFrame({"region": pd.Categorical(region), "x": np.arange(120)})
    pred = _pred("binary", [0, 1], p)

    out = slice_metrics("binary", frame, pd.Series(y), pred, ["region", "not_a_column"], [0, 1])

    assert set(out) == {"region"}
    assert set(out["region"]) == {"north", "south", "east"}
    assert {k: v["rows"] for k, v in out["region"].items()} == {
        "north": 70.0,
        "south": 40.0,
        "east": 10.0,
    }
    m = region == "south"
    south = out["region"]["south"]
    assert south["roc_auc"] == pytest.approx(skm.roc_auc_score(y[m], p[m]))
    assert south["accuracy"] == pytest.approx(skm.accuracy_score(y[m], (p[m] > 0.5)))


def test_slice_metrics_regression_with_a_non_default_index() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=60)
    yhat = y + rng.normal(scale=0.1, size=60)
    idx = pd.RangeIndex(1000, 1060)  # a hold-out keeps its rows' original index
    frame = pd.DataFrame({"shop": ["a", "b"] * 30}, index=idx)
    pred = output_frame("regression", None, yhat, idx)

    out = slice_metrics("regression", frame, pd.Series(y, index=idx), pred, ["shop"])

    a = np.arange(60) % 2 == 0
    assert out["shop"]["a"]["rows"] == 30.0
    assert out["shop"]["a"]["mae"] == pytest.approx(skm.mean_absolute_error(y[a], yhat[a]))
    assert out["shop"]["b"]["rmse"] == pytest.approx(
        math.sqrt(skm.mean_squared_error(y[~a], yhat[~a]))
    )


def test_slice_metrics_missing_values_form_their_own_slice() -> None:
    y, p = _binary(n=40, seed=8)
    frame = pd.DataFrame({"region": pd.Categorical(["north", None] * 20)})

    out = slice_metrics("binary", frame, y, _pred("binary", [0, 1], p), ["region"], [0, 1])

    assert set(out["region"]) == {"north", "<missing>"}
    assert out["region"]["<missing>"]["rows"] == 20.0


def test_slice_metrics_single_class_slice_without_given_classes() -> None:
    # the classes are those of the whole hold-out, not of the slice: a slice holding only
    # negatives still scores the probability of the positive class
    y = np.array([0] * 30 + [0, 1] * 15)
    p = np.r_[np.full(30, 0.2), np.tile([0.3, 0.7], 15)]
    frame = pd.DataFrame({"g": ["neg"] * 30 + ["mix"] * 30})

    out = slice_metrics("binary", frame, y, _pred("binary", [0, 1], p), ["g"])

    neg = out["g"]["neg"]
    assert math.isnan(neg["roc_auc"])
    assert neg["log_loss"] == pytest.approx(
        skm.log_loss(np.zeros(30), np.full(30, 0.2), labels=[0, 1])
    )
    assert neg["calibration_error"] == pytest.approx(0.2)
    assert neg["accuracy"] == 1.0 and neg["f1"] == 0.0  # no positive class in this slice
    assert out["g"]["mix"]["f1"] == 1.0


# the gate ----------------------------------------------------------------------------------
def _gate(**kw: Any) -> Any:
    base: dict[str, Any] = {"task": "binary", "challenger": {"roc_auc": 0.80}, "champion": None}
    return decide_gate(**(base | kw))


def _assert_consistent(res: Any) -> None:
    assert res.passed == (not res.failed)
    fails = [r for r in res.reasons if r.startswith("FAIL ")]
    assert [r.removeprefix("FAIL ") for r in fails] == res.failed
    assert all(r.startswith(("PASS ", "FAIL ")) for r in res.reasons)


def test_no_champion_passes_with_a_reason() -> None:
    res = _gate()
    _assert_consistent(res)
    assert res.passed and res.failed == []
    assert res.metric == "roc_auc" and res.challenger == 0.80 and res.champion is None
    assert len(res.reasons) == 1 and "no champion" in res.reasons[0]
    assert res.to_dict()["passed"] is True


@pytest.mark.parametrize(("score", "passed"), [(0.80, True), (0.75, True), (0.74, False)])
def test_min_score(score: float, passed: bool) -> None:
    res = _gate(challenger={"roc_auc": score}, min_score=0.75)
    _assert_consistent(res)
    assert res.passed is passed
    assert any("minimum 0.7500" in r for r in res.reasons)


@pytest.mark.parametrize(("score", "passed"), [(0.9, True), (1.0, True), (1.2, False)])
def test_min_score_lower_is_better(score: float, passed: bool) -> None:
    res = _gate(task="regression", challenger={"rmse": score, "r2": 0.5}, min_score=1.0)
    _assert_consistent(res)
    assert res.metric == "rmse" and res.passed is passed


@pytest.mark.parametrize(
    ("task", "challenger", "champion", "min_improvement", "passed"),
    [
        ("binary", 0.80, 0.78, 0.0, True),
        ("binary", 0.80, 0.80, 0.0, True),  # a tie is not a regression
        ("binary", 0.78, 0.80, 0.0, False),
        ("binary", 0.80, 0.78, 0.01, True),
        ("binary", 0.80, 0.795, 0.01, False),  # better, but not by enough
        ("binary", 0.79, 0.80, -0.02, True),  # a tolerated small loss
        ("regression", 1.0, 1.2, 0.0, True),  # lower rmse is better
        ("regression", 1.2, 1.0, 0.0, False),
        ("regression", 1.0, 1.05, 0.1, False),
        ("multiclass", 0.70, 0.60, 0.05, True),
    ],
)
def test_min_improvement_over_champion(
    task: str, challenger: float, champion: float, min_improvement: float, passed: bool
) -> None:
    metric = PRIMARY[task]
    res = decide_gate(
        task=task,
        challenger={metric: challenger},
        champion={metric: champion},
        min_improvement=min_improvement,
    )
    _assert_consistent(res)
    assert res.passed is passed
    assert res.champion == champion
    [reason] = res.reasons
    assert "vs champion" in reason and reason.startswith("PASS" if passed else "FAIL")


def test_configured_metric_replaces_the_default() -> None:
    res = decide_gate(
        task="binary",
        challenger={"roc_auc": 0.9, "log_loss": 0.5},
        champion={"roc_auc": 0.8, "log_loss": 0.4},
        metric="log_loss",
    )
    assert res.metric == "log_loss" and not res.passed  # higher log loss is worse
    assert HIGHER_IS_BETTER["log_loss"] is False


def _slices(
    values: dict[str, tuple[float, float]], metric: str = "roc_auc"
) -> dict[str, dict[str, dict[str, float]]]:
    return {"region": {k: {metric: v, "rows": rows} for k, (v, rows) in values.items()}}


def test_slice_regression_names_the_worst_slice() -> None:
    champ = _slices({"north": (0.80, 300), "south": (0.80, 300), "east": (0.80, 300)})
    chall = _slices({"north": (0.85, 300), "south": (0.70, 300), "east": (0.77, 300)})

    res = _gate(
        challenger={"roc_auc": 0.82},
        champion={"roc_auc": 0.80},
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=0.05,
    )

    _assert_consistent(res)
    assert not res.passed
    [failed] = res.failed
    assert "region=south" in failed and "0.1000" in failed
    # the overall comparison passed and is listed too
    assert any(r.startswith("PASS") and "vs champion" in r for r in res.reasons)


def test_slice_regression_within_the_allowance_passes() -> None:
    champ = _slices({"north": (0.80, 300), "south": (0.80, 300)})
    chall = _slices({"north": (0.78, 300), "south": (0.81, 300)})

    res = _gate(
        champion={"roc_auc": 0.79},
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=0.05,
    )

    _assert_consistent(res)
    assert res.passed
    assert any("worst slice region=north" in r for r in res.reasons)


def test_slice_regression_lower_is_better() -> None:
    champ = _slices({"a": (1.0, 300), "b": (1.0, 300)}, "rmse")
    chall = _slices({"a": (0.9, 300), "b": (1.3, 300)}, "rmse")

    res = decide_gate(
        task="regression",
        challenger={"rmse": 0.95},
        champion={"rmse": 1.0},
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=0.1,
    )

    assert not res.passed
    assert "region=b" in res.failed[0] and "0.3000" in res.failed[0]


@pytest.mark.parametrize(
    ("challenger", "said"),
    [
        ({"a": 0.77, "b": 0.81}, "roc_auc worse by 0.0300 than the champion's"),
        ({"a": 0.83, "b": 0.84}, "roc_auc better by 0.0300 than the champion's"),
        ({"a": 0.80, "b": 0.85}, "roc_auc as good as the champion's"),
    ],
)
def test_a_slice_change_is_said_in_words_never_a_negative_regression(
    challenger: dict[str, float], said: str
) -> None:
    """Issue 16: "regresses by -0.0030" read as a double negative."""
    champ = _slices({"a": (0.80, 300), "b": (0.80, 300)})
    chall = _slices({k: (v, 300) for k, v in challenger.items()})

    res = _gate(
        champion={"roc_auc": 0.79},
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=0.02,
    )

    _assert_consistent(res)
    [line] = [r for r in res.reasons if "worst slice" in r]
    assert said in line and line.endswith("(allowed: worse by 0.0200)")
    assert "regresses" not in line and "-0." not in line
    assert res.passed == ("worse by 0.03" not in line)


def test_small_slices_are_ignored() -> None:
    small = MIN_SLICE_ROWS - 1
    champ = _slices({"big": (0.80, 200), "tiny": (0.90, small)})
    chall = _slices({"big": (0.80, 200), "tiny": (0.10, small)})

    res = _gate(
        champion={"roc_auc": 0.80},
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=0.05,
    )

    _assert_consistent(res)
    assert res.passed
    assert not any("tiny" in r for r in res.reasons)
    assert any("worst slice region=big" in r for r in res.reasons)


def test_slice_check_skipped_is_still_a_listed_reason() -> None:
    champ = _slices({"tiny": (0.90, 5)})
    chall = _slices({"tiny": (0.10, 5)})

    res = _gate(
        champion={"roc_auc": 0.80},
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=0.05,
    )

    assert res.passed
    assert any("slice" in r for r in res.reasons)


def test_slices_without_a_champion_or_a_limit_decide_nothing() -> None:
    chall = _slices({"north": (0.10, 500)})
    assert _gate(challenger_slices=chall, max_slice_regression=0.05).passed
    champ = _slices({"north": (0.90, 500)})
    res = _gate(
        champion={"roc_auc": 0.79},
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=None,
    )
    assert res.passed and not any("slice" in r for r in res.reasons)


@pytest.mark.parametrize("detail", ["", "ImportError: no module named xgboost"])
def test_smoke_failure_fails_the_gate(detail: str) -> None:
    res = _gate(smoke_ok=False, smoke_detail=detail)
    _assert_consistent(res)
    assert not res.passed
    [failed] = res.failed
    assert "packaged model loads and predicts" in failed
    assert detail in failed
    assert _gate(smoke_ok=True).passed


@pytest.mark.parametrize("score", [math.nan, None])
def test_nan_score_fails(score: float | None) -> None:
    res = _gate(
        challenger={"roc_auc": score}, champion={"roc_auc": 0.7}, min_score=0.5, smoke_ok=True
    )
    _assert_consistent(res)
    assert not res.passed
    assert "could not be computed" in res.failed[0]


def test_missing_metric_fails() -> None:
    res = _gate(challenger={"accuracy": 0.9})
    assert not res.passed and "roc_auc could not be computed" in res.failed[0]


@pytest.mark.parametrize("champion", [{"roc_auc": math.nan}, {"accuracy": 0.9}, {"roc_auc": None}])
def test_champion_without_a_comparable_score_is_a_listed_reason(champion: dict) -> None:
    res = _gate(champion=champion)
    _assert_consistent(res)
    assert res.passed
    assert len(res.reasons) == 1 and "champion" in res.reasons[0]


def test_every_reason_is_listed_passed_and_failed() -> None:
    champ = _slices({"north": (0.80, 300), "south": (0.80, 300)})
    chall = _slices({"north": (0.60, 300), "south": (0.80, 300)})

    res = _gate(
        challenger={"roc_auc": 0.70},
        champion={"roc_auc": 0.80},
        min_score=0.6,
        challenger_slices=chall,
        champion_slices=champ,
        max_slice_regression=0.05,
        smoke_ok=False,
        smoke_detail="boom",
    )

    _assert_consistent(res)
    assert [r[:4] for r in res.reasons] == ["PASS", "FAIL", "FAIL", "FAIL"]
    assert "minimum" in res.reasons[0]
    assert "vs champion" in res.failed[0]
    assert "region=north" in res.failed[1]
    assert "boom" in res.failed[2]


# Hypothesis: pure policy invariants ---------------------------------------------------------
_scores = st.one_of(st.floats(-10, 10, allow_nan=False), st.just(math.nan))
_TASK_METRICS = {
    "binary": ["roc_auc", "pr_auc", "log_loss", "calibration_error"],
    "multiclass": ["f1_macro", "accuracy", "log_loss"],
    "regression": ["rmse", "mae", "r2"],
}


@st.composite
def _gate_inputs(draw: st.DrawFn) -> dict[str, Any]:
    task = draw(st.sampled_from(sorted(_TASK_METRICS)))
    names = _TASK_METRICS[task]
    metric = draw(st.one_of(st.none(), st.sampled_from(names)))

    def metrics() -> dict[str, float]:
        return draw(st.dictionaries(st.sampled_from(names), _scores))

    def slices() -> dict[str, dict[str, dict[str, float]]] | None:
        return draw(
            st.one_of(
                st.none(),
                st.dictionaries(
                    st.sampled_from(["region", "channel"]),
                    st.dictionaries(
                        st.sampled_from(["a", "b", "c"]),
                        st.fixed_dictionaries(
                            {"rows": st.integers(0, 400).map(float)},
                            optional={n: _scores for n in names},
                        ),
                        max_size=3,
                    ),
                    max_size=2,
                ),
            )
        )

    return {
        "task": task,
        "metric": metric,
        "challenger": metrics(),
        "champion": metrics() if draw(st.booleans()) else None,
        "challenger_slices": slices(),
        "champion_slices": slices(),
        "smoke_ok": draw(st.one_of(st.none(), st.booleans())),
        "min_score": draw(st.one_of(st.none(), st.floats(-10, 10, allow_nan=False))),
        "min_improvement": draw(st.floats(-1, 1, allow_nan=False)),
        "max_slice_regression": draw(st.one_of(st.none(), st.floats(0, 1))),
    }


@given(_gate_inputs())
def test_gate_invariants(kw: dict[str, Any]) -> None:
    res = decide_gate(**kw)

    _assert_consistent(res)
    assert res.reasons  # there is always at least one reason
    metric = kw["metric"] or PRIMARY[kw["task"]]
    assert res.metric == metric
    score = kw["challenger"].get(metric)
    if score is None or math.isnan(score):
        assert not res.passed
    if kw["smoke_ok"] is False:
        assert not res.passed
    if kw["min_score"] is not None and score is not None and not math.isnan(score):
        below = score < kw["min_score"] if HIGHER_IS_BETTER[metric] else score > kw["min_score"]
        if below:
            assert not res.passed
    if res.passed:
        assert all(r.startswith("PASS") for r in res.reasons)
