"""Concept drift and label-free performance.

Detectors: seeded streams from River's synthetic generators (SEA, Agrawal, Hyperplane, and
FriedmanDrift for regression) with an abrupt concept change at a known row, built by
concatenating two seeded streams with different concepts (ConceptDriftStream with width=1
overflows, STACK_NOTES 4c). A scikit-learn model trained before the change gives the error
stream: the detectors fire after the change within a sensible delay and not before it; a
concept change without covariate shift is invisible to the data-drift check but not to the
detectors. One parametrized test runs shared invariants over every detector.

estimate_performance (CBPE): on calibrated probabilities the estimate and its 90% interval
match the realised accuracy and ROC AUC."""

from __future__ import annotations

import itertools
import json
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
from river.datasets import synth
from sklearn import metrics as skm
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from mlops_core.monitor.detectors import (
    DETECTORS,
    DetectorResult,
    ErrorStreamDetector,
    error_stream,
    locate_change,
    locate_rise,
    run_detectors,
    where_error_rose,
)
from mlops_core.monitor.reports import compute_drift
from mlops_core.train.evaluation import estimate_performance

TRAIN, BEFORE, AFTER = 2000, 3000, 2000  # rows: to fit the model, then fed before/after the change
MAX_DELAY = 1000  # rows after the change by which a detector must have fired


def take(dataset: Any, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    rows = list(itertools.islice(dataset, n))
    return pd.DataFrame([x for x, _ in rows]), np.array([y for _, y in rows])


@cache
def concept_change(kind: str, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(features, labels, predictions) of BEFORE rows of one concept then AFTER rows of another,
    predicted by a model fitted on TRAIN earlier rows of the first. Features keep their
    distribution across the change: only the concept moves."""
    if kind == "sea":  # x1 + x2 ≤ 8, then ≤ 9.5; 5% label noise
        old, new = (
            synth.SEA(variant=0, noise=0.05, seed=seed),
            synth.SEA(variant=3, noise=0.05, seed=seed + 1),
        )
        model: Any = LogisticRegression()
    elif kind == "agrawal":  # loan approval by age, then by age and salary; 10% perturbation
        old = synth.Agrawal(classification_function=0, perturbation=0.1, seed=seed)
        new = synth.Agrawal(classification_function=2, perturbation=0.1, seed=seed + 1)
        model = DecisionTreeClassifier(max_depth=5, random_state=0)
    else:  # another random hyperplane; 5% label noise
        old = synth.Hyperplane(n_features=4, noise_percentage=0.05, seed=seed)
        new = synth.Hyperplane(n_features=4, noise_percentage=0.05, seed=seed + 1)
        model = LogisticRegression()
    x_old, y_old = take(old, TRAIN + BEFORE)
    x_new, y_new = take(new, AFTER)
    model.fit(x_old.iloc[:TRAIN], y_old[:TRAIN])
    x = pd.concat([x_old.iloc[TRAIN:], x_new], ignore_index=True)
    y = np.concatenate([y_old[TRAIN:], y_new])
    return x, y, model.predict(x)


STREAMS = [(kind, seed) for kind in ("sea", "agrawal", "hyperplane") for seed in (0, 1)]


@pytest.mark.parametrize("name", DETECTORS)
@pytest.mark.parametrize(("kind", "seed"), STREAMS)
def test_detectors_fire_after_a_concept_change(kind: str, seed: int, name: str) -> None:
    _, y, pred = concept_change(kind, seed)
    errors = error_stream("binary", y, pred)
    assert errors[BEFORE:].mean() > errors[:BEFORE].mean() + 0.08  # the model got worse

    result = ErrorStreamDetector(name).update(errors).result

    after = [d for d in result.detections if d >= BEFORE]
    assert after and after[0] - BEFORE <= MAX_DELAY, result.detections
    if name != "ddm":  # DDM's false alarms on stationary streams: see the xfail test below
        assert not [d for d in result.detections if d < BEFORE]


def test_a_concept_change_without_covariate_shift_is_for_the_detectors() -> None:
    """SEA's features are uniform on [0, 10] before and after: the data-drift check finds
    nothing, the detectors on the error stream do."""
    x, y, pred = concept_change("sea", 0)
    kinds = dict.fromkeys(x.columns, "numeric")

    drift = compute_drift(x.iloc[:BEFORE], x.iloc[BEFORE:], kinds)
    fired = {r.name for r in run_detectors(DETECTORS, "binary", y, pred) if r.fired}

    assert drift.status == "ok" and drift.drifted_columns == []
    assert fired == set(DETECTORS)


def test_a_covariate_shift_is_for_the_data_drift_check() -> None:
    """Hyperplane's features drawn from another range, the concept unchanged: the drift check
    finds it (whether the error moves depends on the model, so only the drift is asserted)."""
    x, _, _ = concept_change("hyperplane", 0)
    shifted = x.iloc[BEFORE:].copy()
    shifted[shifted.columns[:2]] = shifted[shifted.columns[:2]] * 0.5 + 0.5

    drift = compute_drift(x.iloc[:BEFORE], shifted, dict.fromkeys(x.columns, "numeric"))

    assert set(drift.drifted_columns) == set(x.columns[:2]) and drift.status == "drift"


@pytest.mark.parametrize("name", ["adwin", "page_hinkley"])
def test_stationary_error_streams_trigger_nothing(name: str) -> None:
    for seed, rate in itertools.product(range(5), (0.02, 0.1, 0.3)):
        errors = (np.random.default_rng(seed).random(4000) < rate).astype(float)
        assert not ErrorStreamDetector(name).update(errors).result.fired, (seed, rate)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "River's DDM with its defaults (warm_start=30) fires on a third to a half of stationary "
        "1000-row error streams: p_min and s_min are taken from the first few dozen rows, so an "
        "early run of correct predictions (or a near-perfect model: p_min = 0) makes the next "
        "error a 'drift'. With ddm in the default policy, a stationary stretch can ask for a "
        "retrain. Tuning (warm_start, or leaving DDM out by default) is the lead's call."
    ),
)
def test_ddm_is_quiet_on_stationary_error_streams() -> None:
    fired = 0
    for seed, rate in itertools.product(range(10), (0.02, 0.1, 0.3)):
        errors = (np.random.default_rng(seed).random(1000) < rate).astype(float)
        fired += ErrorStreamDetector("ddm").update(errors).result.fired
    assert fired <= 3  # at most one stream in ten


def test_page_hinkley_watches_rises_only() -> None:
    """A falling error is good news: Page-Hinkley (mode 'up') stays quiet, ADWIN (two-sided)
    notices the change."""
    rng = np.random.default_rng(3)
    errors = np.concatenate([rng.random(2000) < 0.3, rng.random(2000) < 0.05]).astype(float)

    assert not ErrorStreamDetector("page_hinkley").update(errors).result.fired
    assert ErrorStreamDetector("adwin").update(errors).result.fired
    rising = errors[::-1].copy()
    assert ErrorStreamDetector("page_hinkley").update(rising).result.fired


# regression --------------------------------------------------------------------------------
@cache
def friedman_change(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, prediction): FriedmanDrift with a global abrupt change at row TRAIN + BEFORE, a
    linear model fitted on the first TRAIN rows; BEFORE rows fed before the change."""
    data = synth.FriedmanDrift(drift_type="gra", position=(TRAIN + BEFORE, 10**9), seed=seed)
    x, y = take(data, TRAIN + BEFORE + AFTER)
    model = LinearRegression().fit(x.iloc[:TRAIN], y[:TRAIN])
    return y[TRAIN:], model.predict(x.iloc[TRAIN:])


@pytest.mark.parametrize("seed", [0, 1])
def test_adwin_finds_a_regression_concept_change_and_ddm_is_skipped(seed: int) -> None:
    y, pred = friedman_change(seed)

    results = run_detectors(["adwin", "ddm"], "regression", y, pred)

    assert [r.name for r in results] == ["adwin"]  # DDM models a binary error rate
    adwin = results[0]
    assert adwin.rows == len(y)
    assert adwin.detections and BEFORE <= adwin.detections[0] <= BEFORE + MAX_DELAY


@pytest.mark.xfail(
    strict=True,
    reason=(
        "Page-Hinkley's threshold (50) and delta (0.005) are in the units of what it is fed; "
        "absolute regression errors of a few units already random-walk past 50 on a stationary "
        "stretch. Regression errors would need scaling (e.g. by the champion's validation MAE) "
        "before Page-Hinkley can read them."
    ),
)
@pytest.mark.parametrize("seed", [0, 1])
def test_page_hinkley_is_quiet_before_a_regression_concept_change(seed: int) -> None:
    y, pred = friedman_change(seed)
    result = run_detectors(["page_hinkley"], "regression", y, pred)[0]
    assert not [d for d in result.detections if d < BEFORE]


# shared invariants of every detector -----------------------------------------------------------
@pytest.mark.parametrize("name", DETECTORS)
def test_detector_invariants(name: str) -> None:
    rng = np.random.default_rng(11)
    errors = np.concatenate([rng.random(1500) < 0.05, rng.random(1500) < 0.5]).astype(float)

    det = ErrorStreamDetector(name)
    assert det.update([]) is det and det.result == DetectorResult(name, 0, [])
    assert det.update(errors) is det  # update returns self, for chaining
    whole = det.result

    # row positions in the order fed: sorted, distinct, inside the stream
    assert whole.name == name and whole.rows == len(errors)
    assert whole.detections == sorted(set(whole.detections))
    assert all(0 <= d < len(errors) for d in whole.detections)
    assert whole.fired and whole.fired is bool(whole.detections)
    # feeding in chunks (one monitoring batch after another) changes nothing
    chunked = ErrorStreamDetector(name)
    for part in np.array_split(errors, 7):
        chunked.update(iter(part.tolist()))
    assert chunked.result == whole
    # deterministic, and the result is a copy the caller cannot corrupt
    assert ErrorStreamDetector(name).update(errors).result == whole
    whole.detections.append(-1)
    assert det.result.detections[-1] != -1
    # serialisable, with the verdict
    d = json.loads(json.dumps(det.result.to_dict()))
    assert d["name"] == name and d["rows"] == len(errors) and d["fired"] is True
    # a model that is always right, or always wrong, shows no change
    for constant in (0.0, 1.0):
        assert not ErrorStreamDetector(name).update([constant] * 2000).result.fired


@pytest.mark.parametrize("name", ["nope", "ADWIN", ""])
def test_unknown_detector_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="unknown detector"):
        ErrorStreamDetector(name)
    with pytest.raises(ValueError, match="adwin, page_hinkley, ddm"):
        run_detectors(["adwin", name], "binary", [0, 1], [0, 1])


def test_error_stream_compares_labels_as_text_and_keeps_order() -> None:
    y = np.array([1, 0, "1", "b", 2.0])
    pred = np.array(["1", "0", 1, "a", "2.0"])

    assert error_stream("binary", y, pred).tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert error_stream("multiclass", pd.Series(["a", "b", "c"]), ["a", "c", "c"]).tolist() == [
        0.0,
        1.0,
        0.0,
    ]
    assert error_stream("regression", [1.0, 2.0, 3.0], [1.5, 2.0, 1.0]).tolist() == [0.5, 0.0, 2.0]


def test_run_detectors_keeps_the_order_of_names() -> None:
    _, y, pred = concept_change("agrawal", 0)

    results = run_detectors(["ddm", "adwin", "page_hinkley"], "binary", y, pred)

    assert [r.name for r in results] == ["ddm", "adwin", "page_hinkley"]
    assert all(r.rows == len(y) for r in results)
    assert run_detectors([], "binary", y, pred) == []


# label-free performance (CBPE) -------------------------------------------------------------------
def calibrated_binary(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of class 1 and labels drawn from them: calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(scale=2.0, size=n)))
    return p, (rng.random(n) < p).astype(int)


def test_binary_estimate_matches_realised_accuracy_and_auc() -> None:
    covered = {"accuracy": 0, "roc_auc": 0}
    seeds = range(10)
    for seed in seeds:
        p, y = calibrated_binary(2000, 100 + seed)
        realised = {
            "accuracy": skm.accuracy_score(y, (p > 0.5).astype(int)),
            "roc_auc": skm.roc_auc_score(y, p),
        }

        est = estimate_performance("binary", p, [0, 1], seed=seed)

        assert set(est) == {"accuracy", "roc_auc"}
        for metric, e in est.items():
            assert e.metric == metric and e.rows == 2000
            assert e.low <= e.value <= e.high
            assert e.high - e.low < 0.06  # a useful interval at 2000 rows
            assert e.value == pytest.approx(realised[metric], abs=0.03), (seed, metric)
            covered[metric] += e.low <= realised[metric] <= e.high
    # a 90% interval: about 9 in 10; 7 leaves room for chance
    assert all(c >= 7 for c in covered.values()), covered


def test_probabilities_as_two_columns_or_one_give_the_same_estimate() -> None:
    p, _ = calibrated_binary(500, 1)

    one = estimate_performance("binary", p, ["no", "yes"], seed=4)
    two = estimate_performance("binary", np.column_stack([1 - p, p]), ["no", "yes"], seed=4)

    assert {k: v.to_dict() for k, v in one.items()} == {k: v.to_dict() for k, v in two.items()}


def test_multiclass_estimate_gives_accuracy() -> None:
    rng = np.random.default_rng(5)
    proba = rng.dirichlet([0.6, 0.6, 0.6], size=3000)
    y = np.array([rng.choice(3, p=row) for row in proba])

    est = estimate_performance("multiclass", proba, ["a", "b", "c"], seed=0)

    assert set(est) == {"accuracy"}
    realised = float((proba.argmax(axis=1) == y).mean())
    assert est["accuracy"].value == pytest.approx(realised, abs=0.03)
    assert est["accuracy"].low <= est["accuracy"].value <= est["accuracy"].high


def test_estimate_trusts_calibration() -> None:
    """An over-confident model's estimate is too rosy: the estimate is only as good as the
    calibration the training run measures."""
    p, y = calibrated_binary(2000, 6)
    overconfident = np.where(p > 0.5, np.sqrt(p), 1 - np.sqrt(1 - p))

    est = estimate_performance("binary", overconfident, [0, 1])

    assert est["accuracy"].value > skm.accuracy_score(y, (p > 0.5).astype(int)) + 0.05


def test_estimate_is_seeded() -> None:
    p, _ = calibrated_binary(800, 7)

    a = estimate_performance("binary", p, [0, 1], seed=1, simulations=50)
    b = estimate_performance("binary", p, [0, 1], seed=1, simulations=50)
    c = estimate_performance("binary", p, [0, 1], seed=2, simulations=50)

    assert {k: v.to_dict() for k, v in a.items()} == {k: v.to_dict() for k, v in b.items()}
    assert a["roc_auc"].value != c["roc_auc"].value
    assert json.loads(json.dumps(a["accuracy"].to_dict()))["rows"] == 800


def test_no_estimate_for_regression_or_no_rows() -> None:
    assert estimate_performance("regression", np.array([1.0, 2.0]), []) == {}
    assert estimate_performance("binary", np.empty((0, 2)), [0, 1]) == {}


def test_one_row_gives_accuracy_without_auc() -> None:
    est = estimate_performance("binary", np.array([0.9]), [0, 1], seed=0)
    assert set(est) == {"accuracy"} and est["accuracy"].value == pytest.approx(0.9, abs=0.06)


@pytest.mark.parametrize("seed", range(5))
def test_a_detection_locates_where_the_error_rose(seed: int) -> None:
    rng = np.random.default_rng(seed)
    errors = np.concatenate([rng.uniform(size=3000) < 0.1, rng.uniform(size=2000) < 0.3])
    result = ErrorStreamDetector("adwin").update(errors.astype(float)).result
    assert result.fired and len(result.change_starts) == len(result.detections)
    assert abs(result.change_starts[0] - 3000) <= 150, result.change_starts
    assert result.change_starts[0] <= result.detections[0]


def test_locate_change_edge_cases() -> None:
    assert locate_change([]) == 0 and locate_change([1.0]) == 0
    assert locate_change([0, 0, 0, 1, 1, 1]) == 3
    assert locate_change([1, 1, 1, 0, 0, 0]) == 5  # no rise: where it was detected


@pytest.mark.parametrize("seed", range(20))
def test_locate_rise_is_quiet_on_a_stationary_stream(seed: int) -> None:
    rng = np.random.default_rng(seed)
    assert locate_rise((rng.uniform(size=5000) < 0.2).astype(float)) is None


def test_locate_rise_finds_a_clear_rise_and_ignores_a_fall() -> None:
    rng = np.random.default_rng(0)
    rise = np.concatenate([rng.uniform(size=2000) < 0.1, rng.uniform(size=1000) < 0.25])
    at = locate_rise(rise.astype(float))
    assert at is not None and abs(at - 2000) <= 150
    assert locate_rise(rise[::-1].astype(float)) is None
    assert locate_rise([0.0] * 100) is None and locate_rise([1.0, 0.0]) is None


def test_where_error_rose_against_the_holdout_baseline() -> None:
    rng = np.random.default_rng(1)
    baseline = (rng.uniform(size=2000) < 0.1).astype(float)
    # poor from the first new row on: the change came at or before it
    assert where_error_rose(baseline, (rng.uniform(size=1000) < 0.3).astype(float)) == 0
    # a rise inside the new rows is placed there
    new = np.concatenate([rng.uniform(size=1000) < 0.1, rng.uniform(size=1000) < 0.3])
    at = where_error_rose(baseline, new.astype(float))
    assert at is not None and abs(at - 1000) <= 150
    # as good as on the hold-out, or a noisy baseline: no rise
    assert where_error_rose(baseline, (rng.uniform(size=1000) < 0.1).astype(float)) is None
    assert where_error_rose(None, (rng.uniform(size=1000) < 0.1).astype(float)) is None
    # a one-batch dip of a few points is not a change
    dip = np.concatenate([rng.uniform(size=1500) < 0.1, rng.uniform(size=500) < 0.15])
    assert where_error_rose(baseline, dip.astype(float)) is None
