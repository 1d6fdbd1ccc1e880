"""The retraining policy (pure): each signal alone asks for a retrain with its reason, none asks
for nothing, the brakes (cooldown, cap per period, new labels) hold a request back with their
reason, simultaneous signals merge into one decision, a held-back signal stays pending until a
retrain serves it, durations in batches scale with the batch period, every "no" names the
signals nearest their thresholds; and (Hypothesis) no sequence of signals over time makes a
simulated monitoring loop violate the cooldown or the cap, drop a pending signal, or retrain
without a reason."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mlops_core.config import RetrainingConfig
from mlops_core.monitor.policy import (
    Brake,
    Decision,
    Finding,
    PolicyState,
    Reason,
    Signals,
    compute_signals,
    decide,
    metric_drop,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
# the policy these tests were written against (the defaults before durations in batches):
# 90D age, 0.05 drops, 0.5 share, adwin, 1D cooldown, 3 per 7D, 500 new labels, growth 2x
POLICY = RetrainingConfig(
    max_model_age="90D", cooldown="1D", max_retrains=3, per="7D", min_new_labels=500
)
FRESH = NOW - timedelta(days=2)  # a champion trained recently: no schedule reason
DAY, WEEK, YEAR = timedelta(days=1), timedelta(weeks=1), timedelta(days=365)
# the previous run drifted too: data drift asks only when it persists over two runs
PERSISTS = PolicyState(drifted_before=True)
ONE_RUN = "in one run only (asks when it persists into the next)"


def signals(**kw: Any) -> Signals:
    """Signals that ask for nothing, enough new labels, a fresh champion; ``kw`` changes them."""
    return Signals(**({"model_trained_at": FRESH, "new_labels": 10_000, "metric": "roc_auc"} | kw))


def policy(**kw: Any) -> RetrainingConfig:
    return POLICY.model_copy(update=kw)


def texts(items: list[Any]) -> list[str]:
    return [i.text for i in items]


def test_the_defaults() -> None:
    p = RetrainingConfig()

    assert (p.max_model_age, p.cooldown) == ("8 batches", "2 batches")
    # the cap is in batches too (its numbers are still being tuned: asserted where used)
    assert p.per.endswith("batches") and p.max_retrains >= 1
    assert p.min_new_labels == 0.1 and p.window_growth == 2.0 and p.detectors == ["adwin"]
    assert (p.performance_drop, p.estimated_drop, p.drift_share) == (0.05, 0.05, 0.5)


def test_no_signal_no_retrain() -> None:
    d = decide(
        signals(
            performance_drop=0.01, estimated_drop=-0.02, drift_share=0.2, weighted_drift_share=0.1
        ),
        PolicyState(),
        POLICY,
        NOW,
    )

    # apart from the explanation of the "no" (nearest), nothing
    assert replace(d, nearest=[]) == Decision(retrain=False, reasons=[], held_back=[], at=NOW)
    assert d.nearest and not any(f.fired for f in d.nearest)
    assert d.trigger == "none" and d.pending == [] and d.pending_since is None
    # nothing measured at all is no signal either, and nothing is near
    nothing = decide(Signals(), PolicyState(), POLICY, NOW)
    assert nothing.reasons == [] and nothing.nearest == []
    assert nothing.summary() == "no retrain: no signal reached its threshold"


@pytest.mark.parametrize(
    ("kw", "label", "text"),
    [
        ({"model_trained_at": NOW - timedelta(days=91)}, "schedule", "91 days old (max 90D)"),
        ({"performance_drop": 0.06}, "performance", "roc_auc 0.060 below"),
        ({"estimated_drop": 0.2}, "estimated", "estimate 0.200 below"),
        ({"drift_share": 0.75}, "drift", "drift share 75% ≥ 50%"),
        ({"drift_share": 0.1, "weighted_drift_share": 0.6}, "drift", "importance-weighted"),
        ({"detectors_fired": ("adwin",)}, "concept", "fired on the error stream: adwin"),
    ],
)
def test_each_signal_alone_triggers_with_its_reason(
    kw: dict[str, Any], label: str, text: str
) -> None:
    d = decide(signals(**kw), PERSISTS, POLICY, NOW)  # (drift: persisting)

    assert d.retrain and d.held_back == []
    assert len(d.reasons) == 1 and d.reasons[0].text.startswith(f"{label}: ")
    assert d.reasons[0].reason is Reason(label) and d.reasons[0].fired
    assert text in d.reasons[0].text
    assert d.trigger == label and d.at == NOW
    assert d.summary() == "retrain: " + d.reasons[0].text


@pytest.mark.parametrize(
    ("kw", "asks"),
    [
        ({"model_trained_at": NOW - timedelta(days=90)}, True),  # age ≥ max_model_age
        ({"model_trained_at": NOW - timedelta(days=90) + timedelta(seconds=1)}, False),
        ({"model_trained_at": NOW + timedelta(days=1)}, False),  # a clock ahead: not overdue
        ({"performance_drop": 0.05}, False),  # "more than" the allowed drop
        ({"performance_drop": 0.0501}, True),
        ({"performance_drop": -0.3}, False),  # better than the champion
        ({"estimated_drop": 0.05}, False),
        ({"estimated_drop": 0.0501}, True),
        ({"drift_share": 0.5}, True),  # share ≥ threshold, as Evidently's dataset drift
        ({"drift_share": 0.4999}, False),
    ],
)
def test_thresholds(kw: dict[str, Any], asks: bool) -> None:
    assert decide(signals(**kw), PERSISTS, POLICY, NOW).retrain is asks


def test_the_weighted_share_is_preferred_when_present() -> None:
    raw_only = decide(signals(drift_share=0.9), PERSISTS, POLICY, NOW)
    unimportant = decide(signals(drift_share=0.9, weighted_drift_share=0.05), PERSISTS, POLICY, NOW)
    important = decide(signals(drift_share=0.25, weighted_drift_share=0.7), PERSISTS, POLICY, NOW)

    assert raw_only.retrain and "importance" not in raw_only.reasons[0].text
    assert not unimportant.retrain and unimportant.reasons == []
    assert important.retrain
    assert "importance-weighted drift share 70%" in important.reasons[0].text


def test_only_the_detectors_the_policy_lists_count() -> None:
    fired = signals(detectors_fired=("page_hinkley", "ddm"))

    both = policy(detectors=["adwin", "ddm"])
    default = decide(fired, PolicyState(), both, NOW)
    ph_only = decide(fired, PolicyState(), policy(detectors=["page_hinkley"]), NOW)
    none = decide(fired, PolicyState(), policy(detectors=[]), NOW)
    unlisted = decide(signals(detectors_fired=("page_hinkley",)), PolicyState(), both, NOW)

    assert texts(default.reasons) == ["concept: detector(s) fired on the error stream: ddm"]
    assert texts(ph_only.reasons) == [
        "concept: detector(s) fired on the error stream: page_hinkley"
    ]
    assert not none.retrain and none.reasons == []
    assert not unlisted.retrain and unlisted.reasons == []


def test_a_signal_switched_off_in_the_policy_asks_for_nothing() -> None:
    everything = signals(
        model_trained_at=NOW - timedelta(days=400),
        performance_drop=0.5,
        estimated_drop=0.5,
        drift_share=1.0,
        detectors_fired=("adwin",),
        window_rows=10_000,
    )
    off = policy(
        max_model_age=None,
        performance_drop=None,
        estimated_drop=None,
        drift_share=None,
        detectors=[],
        window_growth=None,
    )

    d = decide(everything, PolicyState(trained_rows=1_000), off, NOW)

    assert not d.retrain and d.reasons == [] and d.held_back == [] and d.nearest == []


def test_simultaneous_signals_merge_into_one_decision() -> None:
    d = decide(
        signals(
            model_trained_at=NOW - timedelta(days=100),
            performance_drop=0.1,
            estimated_drop=0.08,
            drift_share=0.6,
            weighted_drift_share=0.8,
            detectors_fired=("adwin", "ddm"),
            window_rows=3_000,
        ),
        PolicyState(trained_rows=1_000, drifted_before=True),
        policy(detectors=["adwin", "ddm"]),
        NOW,
    )

    assert d.retrain and d.held_back == []
    assert len(d.reasons) == 6
    assert d.trigger == "schedule,performance,estimated,drift,concept,growth"
    assert "adwin, ddm" in d.reasons[-2].text


# brakes ---------------------------------------------------------------------------------------
ASKING = signals(performance_drop=0.2)


def test_cooldown_holds_back() -> None:
    recent = PolicyState(
        last_retrain=NOW - timedelta(hours=23), recent_retrains=(NOW - timedelta(hours=23),)
    )
    done = PolicyState(
        last_retrain=NOW - timedelta(days=1), recent_retrains=(NOW - timedelta(days=1),)
    )

    held = decide(ASKING, recent, POLICY, NOW)

    assert not held.retrain and held.reasons  # the reason stays: why it wanted to retrain
    assert len(held.held_back) == 1 and held.held_back[0].brake is Brake.COOLDOWN
    assert held.held_back[0].text.startswith("cooldown: ")
    assert "cooldown 1D" in held.held_back[0].text
    assert decide(ASKING, done, POLICY, NOW).retrain  # the cooldown is over at exactly 1D
    assert decide(ASKING, recent, policy(cooldown="12h"), NOW).retrain


def test_cap_per_period_holds_back() -> None:
    three = tuple(NOW - timedelta(days=d) for d in (6, 4, 2))
    capped = PolicyState(last_retrain=three[-1], recent_retrains=three)
    aged_out = PolicyState(
        last_retrain=NOW - timedelta(days=2), recent_retrains=(NOW - timedelta(days=8), *three[1:])
    )

    held = decide(ASKING, capped, POLICY, NOW)

    assert not held.retrain
    assert [h.brake for h in held.held_back] == [Brake.CAP]
    assert texts(held.held_back) == ["cap: 3 retrains in the last 7D (max 3)"]
    assert decide(ASKING, aged_out, POLICY, NOW).retrain  # one of them is older than 7D
    assert decide(ASKING, capped, policy(max_retrains=4), NOW).retrain
    assert not decide(ASKING, capped, policy(per="30D", max_retrains=3), NOW).retrain


def test_too_few_new_labels_hold_back() -> None:
    held = decide(signals(performance_drop=0.2, new_labels=499), PolicyState(), POLICY, NOW)

    assert not held.retrain
    assert [h.brake for h in held.held_back] == [Brake.LABELS]
    assert texts(held.held_back) == [
        "labels: 499 new labelled rows since the last training (need 500)"
    ]
    assert decide(signals(performance_drop=0.2, new_labels=500), PolicyState(), POLICY, NOW).retrain
    assert decide(
        signals(performance_drop=0.2, new_labels=0), PolicyState(), policy(min_new_labels=0), NOW
    ).retrain


@pytest.mark.parametrize(("trained_rows", "need"), [(5_000, 500), (4_999, 500), (123, 13)])
def test_min_new_labels_below_one_is_a_share_of_the_trained_rows(
    trained_rows: int, need: int
) -> None:
    p = policy(min_new_labels=0.1)
    state = PolicyState(trained_rows=trained_rows)

    held = decide(signals(performance_drop=0.2, new_labels=need - 1), state, p, NOW)
    enough = decide(signals(performance_drop=0.2, new_labels=need), state, p, NOW)

    assert not held.retrain and [h.brake for h in held.held_back] == [Brake.LABELS]
    assert f"(need {need:,})" in held.held_back[0].text
    assert enough.retrain and enough.held_back == []
    # the default is this share
    assert not decide(
        signals(performance_drop=0.2, new_labels=need - 1), state, RetrainingConfig(), NOW
    ).retrain


def test_min_new_labels_of_one_or_more_is_a_count() -> None:
    p = policy(min_new_labels=300)
    state = PolicyState(trained_rows=5_000)  # a share would need 1,500 or 15,000_000 here

    held = decide(signals(performance_drop=0.2, new_labels=299), state, p, NOW)

    assert [h.brake for h in held.held_back] == [Brake.LABELS]
    assert "(need 300)" in held.held_back[0].text
    assert decide(signals(performance_drop=0.2, new_labels=300), state, p, NOW).retrain
    assert not decide(
        signals(performance_drop=0.2, new_labels=0), state, policy(min_new_labels=1), NOW
    ).retrain


def test_every_brake_is_listed() -> None:
    times = tuple(NOW - timedelta(hours=h) for h in (100, 50, 1))
    state = PolicyState(last_retrain=times[-1], recent_retrains=times, drifted_before=True)

    d = decide(signals(drift_share=1.0, new_labels=3), state, POLICY, NOW)

    assert not d.retrain
    assert [h.brake for h in d.held_back] == [Brake.COOLDOWN, Brake.CAP, Brake.LABELS]
    assert [h.text.split(":")[0] for h in d.held_back] == ["cooldown", "cap", "labels"]
    assert d.trigger == "drift"
    assert d.summary().startswith("held back (cooldown: ")


def test_brakes_are_not_reported_without_a_signal() -> None:
    state = PolicyState(
        last_retrain=NOW - timedelta(minutes=5), recent_retrains=(NOW - timedelta(minutes=5),) * 5
    )

    d = decide(signals(new_labels=0), state, POLICY, NOW)

    assert not d.retrain and d.reasons == [] and d.held_back == [] and d.pending == []


def test_decision_to_dict() -> None:
    d = decide(signals(drift_share=0.9, new_labels=1), PERSISTS, POLICY, NOW)

    out = json.loads(json.dumps(d.to_dict()))

    assert out["retrain"] is False and out["trigger"] == "drift"
    assert out["reasons"] == texts(d.reasons) and out["held_back"] == texts(d.held_back)
    assert out["brakes"] == ["labels"] and out["reason_kinds"] == ["drift"]
    assert out["at"] == NOW.isoformat() and out["summary"] == d.summary()


# pending: a signal held back asks again until a retrain serves it --------------------------------
def test_a_detector_that_fired_in_a_cooldown_is_retrained_for_after_it() -> None:
    p = RetrainingConfig()  # cooldown 2 batches: two days with daily batches
    change = NOW - timedelta(hours=6)
    base = PolicyState(last_retrain=NOW - DAY, recent_retrains=(NOW - DAY,), trained_rows=1_000)

    held = decide(signals(detectors_fired=("adwin",), change_at=change), base, p, NOW, DAY)

    assert not held.retrain and [h.brake for h in held.held_back] == [Brake.COOLDOWN]
    assert [(f.reason, f.since) for f in held.pending] == [(Reason.CONCEPT, NOW)]
    assert held.pending_since == NOW and held.pending_change_at == change
    assert held.to_dict()["pending_since"] == NOW.isoformat()

    carried = replace(base, pending=tuple(held.pending), pending_change_at=held.pending_change_at)
    # still in the cooldown, the detector quiet (it fired once): held, still pending since NOW
    still = decide(signals(), carried, p, NOW + timedelta(hours=12), DAY)
    assert not still.retrain and still.trigger == "concept"
    assert still.pending_since == NOW and still.pending_change_at == change
    # firing again inside the cooldown keeps the time it first asked
    again = decide(signals(detectors_fired=("adwin",)), carried, p, NOW + timedelta(hours=13), DAY)
    assert [f.since for f in again.pending] == [NOW]

    later = NOW + 2 * DAY  # the cooldown is over; nothing measured asks any more
    served = decide(signals(), carried, p, later, DAY)

    assert served.retrain and served.held_back == [] and served.pending == []
    assert served.trigger == "concept" and served.reasons[0].reason is Reason.CONCEPT
    assert served.reasons[0].since == NOW
    assert served.since == change  # the window starts where the error rose
    # without growth the window is never cut
    assert (
        decide(signals(), carried, p.model_copy(update={"window_growth": None}), later, DAY).since
        is None
    )
    # forgotten (not passed back), the change would never be retrained for
    assert not decide(signals(), base, p, later, DAY).retrain


def test_a_pending_signal_and_a_new_one_ask_together() -> None:
    pending = Finding(
        Reason.CONCEPT,
        "concept: detector(s) fired on the error stream: adwin",
        1.0,
        1.0,
        True,
        NOW - DAY,
    )
    state = PolicyState(pending=(pending,), trained_rows=1_000, drifted_before=True)

    d = decide(signals(drift_share=0.9), state, POLICY, NOW)

    assert d.retrain and set(d.kinds) == {Reason.DRIFT, Reason.CONCEPT}
    assert {f.reason: f.since for f in d.reasons} == {Reason.DRIFT: NOW, Reason.CONCEPT: NOW - DAY}


# durations in batches -------------------------------------------------------------------------
def test_batches_scale_with_the_batch_period() -> None:
    p = RetrainingConfig()  # max_model_age "8 batches"
    aged = signals(model_trained_at=NOW - timedelta(days=60))

    weekly = decide(aged, PolicyState(), p, NOW, WEEK)
    yearly = decide(aged, PolicyState(), p, NOW, YEAR)

    assert weekly.retrain and weekly.trigger == "schedule"
    assert "max 8 batches" in weekly.reasons[0].text
    assert not yearly.retrain and yearly.reasons == []
    # unknown period: a day per batch
    assert decide(signals(model_trained_at=NOW - 8 * DAY), PolicyState(), p, NOW).retrain
    assert not decide(signals(model_trained_at=NOW - 7 * DAY), PolicyState(), p, NOW).retrain


@pytest.mark.parametrize(
    ("age", "asks"), [(8 * WEEK, True), (8 * WEEK - timedelta(seconds=1), False), (7 * WEEK, False)]
)
def test_eight_weekly_batches_is_eight_weeks(age: timedelta, asks: bool) -> None:
    d = decide(signals(model_trained_at=NOW - age), PolicyState(), RetrainingConfig(), NOW, WEEK)
    assert d.retrain is asks


def test_the_brakes_in_batches_scale_too() -> None:
    p = RetrainingConfig(max_retrains=4, per="20 batches")  # and the default 2-batch cooldown
    last = PolicyState(last_retrain=NOW - 10 * DAY, recent_retrains=(NOW - 10 * DAY,))

    assert decide(ASKING, last, p, NOW, DAY).retrain
    held = decide(ASKING, last, p, NOW, WEEK)
    assert [h.brake for h in held.held_back] == [Brake.COOLDOWN]
    assert "cooldown 2 batches" in held.held_back[0].text

    four = tuple(NOW - timedelta(days=d) for d in (100, 70, 40, 15))
    capped = PolicyState(last_retrain=four[-1], recent_retrains=four)
    assert decide(ASKING, capped, p, NOW, DAY).retrain  # 20 days: only one counts
    # 20 weeks: all four count (and 15 days is past the 2-week cooldown)
    assert [h.brake for h in decide(ASKING, capped, p, NOW, WEEK).held_back] == [Brake.CAP]


# nearest: every "no" is explained ---------------------------------------------------------------
def test_nearest_lists_the_signals_closest_to_their_thresholds() -> None:
    d = decide(
        signals(
            performance_drop=0.03,
            estimated_drop=0.01,
            drift_share=0.4,
            model_trained_at=NOW - timedelta(days=9),
        ),
        PolicyState(),
        POLICY,
        NOW,
    )

    assert not d.retrain and d.reasons == []
    # drift 0.8 of its threshold, performance 0.6, estimated 0.2, schedule 0.1: three shown
    assert [f.reason for f in d.nearest] == [Reason.DRIFT, Reason.PERFORMANCE, Reason.ESTIMATED]
    perf = d.nearest[1]
    assert (perf.value, perf.threshold) == pytest.approx((0.03, 0.05)) and not perf.fired
    assert "0.030 below" in perf.text and "retrain beyond 0.050" in perf.text
    assert d.summary() == (
        "no retrain: no signal reached its threshold (nearest: " + "; ".join(texts(d.nearest)) + ")"
    )
    assert "drift share 40% < 50%" in d.summary()
    assert d.to_dict()["nearest"] == texts(d.nearest)


@pytest.mark.parametrize("share", [0.5, 0.83])
def test_a_drift_the_champion_was_trained_for_is_nearest_not_a_reason(share: float) -> None:
    d = decide(
        signals(drift_share=share, performance_drop=0.03),
        PolicyState(trained_for=(Reason.DRIFT,), drifted_before=True),
        POLICY,
        NOW,
    )

    assert not d.retrain and d.reasons == [] and d.held_back == []
    first = d.nearest[0]
    assert first.reason is Reason.DRIFT and not first.fired and first.value == share
    assert "but the champion was trained for this drift" in first.text
    assert f"drift share {share:.0%} ≥ 50%" in first.text
    assert d.nearest[1].reason is Reason.PERFORMANCE
    assert "trained for this drift" in d.summary() and ONE_RUN not in first.text


# compute_signals: the measurements into signals ------------------------------------------------
def test_compute_signals_higher_is_better() -> None:
    s = compute_signals(
        metric="roc_auc",
        baseline={"roc_auc": 0.90, "f1": 0.7},
        realised={"roc_auc": 0.82},
        estimated=0.95,
        drift_share=0.3,
        weighted_drift_share=0.4,
        detectors_fired=["ddm", "page_hinkley", "ddm"],
        model_trained_at=FRESH,
        new_labels=700,
        window_rows=900,
        change_at=NOW - DAY,
    )

    assert s.performance_drop == pytest.approx(0.08)  # worse: positive
    assert s.estimated_drop == pytest.approx(-0.05)  # better: negative
    assert s.detectors_fired == ("ddm", "page_hinkley")  # not listed by the policy
    assert (s.metric, s.drift_share, s.weighted_drift_share, s.new_labels, s.window_rows) == (
        "roc_auc",
        0.3,
        0.4,
        700,
        900,
    )
    assert s.model_trained_at == FRESH and s.change_at == NOW - DAY
    assert decide(s, PolicyState(), POLICY, NOW).trigger == "performance"


def test_compute_signals_lower_is_better() -> None:
    worse = compute_signals(
        metric="rmse", baseline={"rmse": 1.0}, realised={"rmse": 1.2}, estimated=0.9
    )
    better = compute_signals(metric="rmse", baseline={"rmse": 1.0}, realised={"rmse": 0.7})

    assert worse.performance_drop == pytest.approx(0.2)
    assert worse.estimated_drop == pytest.approx(-0.1)
    assert better.performance_drop == pytest.approx(-0.3)
    assert (
        decide(
            replace(worse, model_trained_at=FRESH, new_labels=10_000), PolicyState(), POLICY, NOW
        ).trigger
        == "performance"
    )
    assert not decide(
        replace(better, model_trained_at=FRESH, new_labels=10_000), PolicyState(), POLICY, NOW
    ).retrain
    assert metric_drop("mae", 2.0, 2.5) == pytest.approx(0.5)
    assert metric_drop("accuracy", 0.8, 0.7) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("baseline", "realised", "estimated"),
    [
        ({"roc_auc": 0.9}, None, None),  # nothing measured
        ({"roc_auc": 0.9}, {}, None),
        ({"roc_auc": 0.9}, {"f1": 0.5}, None),  # not this metric
        ({"roc_auc": 0.9}, {"roc_auc": float("nan")}, float("nan")),
        ({"roc_auc": float("nan")}, {"roc_auc": 0.5}, 0.5),
        ({}, {"roc_auc": 0.5}, 0.5),  # no baseline
    ],
)
def test_compute_signals_none_when_not_measured(
    baseline: dict[str, float], realised: dict[str, float] | None, estimated: float | None
) -> None:
    s = compute_signals(metric="roc_auc", baseline=baseline, realised=realised, estimated=estimated)

    assert s.performance_drop is None and s.estimated_drop is None
    assert decide(replace(s, model_trained_at=FRESH), PolicyState(), POLICY, NOW).reasons == []


# enums and serialisation ----------------------------------------------------------------------
def test_reasons_and_brakes_are_enums_serialised_as_their_values() -> None:
    held = PolicyState(
        last_retrain=NOW - timedelta(hours=1), trained_rows=1_000, drifted_before=True
    )
    d = decide(
        signals(drift_share=0.9, detectors_fired=("adwin",), change_at=NOW - DAY, new_labels=3),
        held,
        POLICY,
        NOW,
    )

    assert d.kinds == [Reason.DRIFT, Reason.CONCEPT]
    assert d.trigger == "drift,concept" == f"{Reason.DRIFT.value},{Reason.CONCEPT.value}"
    out = d.to_dict()
    assert out["reason_kinds"] == ["drift", "concept"]
    assert all(type(k) is str for k in out["reason_kinds"] + out["brakes"])
    assert out["brakes"] == [Brake.COOLDOWN.value, Brake.LABELS.value]

    back = json.loads(json.dumps(out))  # no default=: datetimes are already strings
    assert back["pending_since"] == NOW.isoformat()
    assert back["pending_change_at"] == (NOW - DAY).isoformat()
    assert [p["reason"] for p in back["pending"]] == ["drift", "concept"]
    assert [Finding.from_dict(p) for p in back["pending"]] == d.pending


@pytest.mark.parametrize(
    "finding",
    [
        Finding(Reason.CONCEPT, "concept: fired", 1.0, 1.0, True, NOW - timedelta(hours=3)),
        Finding(Reason.PERFORMANCE, "performance: 0.030 below", 0.03, 0.05, False, None),
        Finding(Reason.SCHEDULE, "schedule", None, None),
    ],
)
def test_a_finding_round_trips(finding: Finding) -> None:
    back = Finding.from_dict(json.loads(json.dumps(finding.to_dict())))

    assert back == finding and back.reason is finding.reason
    assert back.since is None or back.since.tzinfo is not None


# config validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["3 batches", "1 batch", "12h", "90D", "2.5 batches"])
def test_durations_accept_batches_or_a_duration(value: str) -> None:
    assert RetrainingConfig(cooldown=value, per=value, max_model_age=value).cooldown == value


@pytest.mark.parametrize("key", ["cooldown", "per", "max_model_age"])
def test_a_duration_that_is_neither_is_refused_by_name(key: str) -> None:
    with pytest.raises(ValidationError, match=key) as e:
        RetrainingConfig(**{key: "soon"})
    assert "soon" in str(e.value) and "batches" in str(e.value)


@pytest.mark.parametrize(
    ("value", "ok"), [(0.1, True), (0.0, True), (1, True), (500, True), (1.5, False), (-0.1, False)]
)
def test_min_new_labels_is_a_share_or_a_whole_count(value: float, ok: bool) -> None:
    if ok:
        assert RetrainingConfig(min_new_labels=value).min_new_labels == value
    else:
        with pytest.raises(ValidationError, match="min_new_labels"):
            RetrainingConfig(min_new_labels=value)


# properties ------------------------------------------------------------------------------------
DETECTOR_NAMES = ["adwin", "page_hinkley", "ddm"]
maybe_drop = st.none() | st.floats(-0.5, 0.5, allow_nan=False)
maybe_share = st.none() | st.floats(0, 1, allow_nan=False)
batch_periods = st.sampled_from([None, timedelta(hours=1), DAY, WEEK])

policies = st.builds(
    RetrainingConfig,
    max_model_age=(
        st.none()
        | st.integers(1, 60).map(lambda d: f"{d}D")
        | st.integers(1, 12).map(lambda n: f"{n} batches")
    ),
    performance_drop=st.none() | st.floats(0, 0.3, allow_nan=False),
    estimated_drop=st.none() | st.floats(0, 0.3, allow_nan=False),
    drift_share=st.none() | st.floats(0.05, 1, allow_nan=False),
    detectors=st.lists(st.sampled_from(DETECTOR_NAMES), unique=True),
    cooldown=(
        st.integers(0, 96).map(lambda h: f"{h}h") | st.integers(0, 4).map(lambda n: f"{n} batches")
    ),
    max_retrains=st.integers(1, 5),
    per=st.integers(1, 14).map(lambda d: f"{d}D")
    | st.integers(1, 30).map(lambda n: f"{n} batches"),
    min_new_labels=st.integers(0, 1000) | st.floats(0, 0.99, allow_nan=False),
)


def duration(value: str, batch_period: timedelta | None) -> timedelta:
    """What a policy duration means (independently of the module): batches × the period."""
    if value.endswith(("batch", "batches")):
        return float(value.split()[0]) * (batch_period or DAY)
    return pd.Timedelta(value).to_pytimedelta()


def drift_reached(p: RetrainingConfig, seen: dict[str, Any]) -> bool:
    """This run's drift share (the weighted one where measured) reached the policy's."""
    share = seen.get("weighted_drift_share")
    share = seen.get("drift_share") if share is None else share
    return p.drift_share is not None and share is not None and share >= p.drift_share


def labels_needed(p: RetrainingConfig, trained_rows: int | None) -> int:
    if p.min_new_labels >= 1:
        return int(p.min_new_labels)
    return math.ceil(p.min_new_labels * trained_rows) if trained_rows else 0


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    """What one monitoring pass might see (the champion's age is the loop's)."""
    return {
        "performance_drop": draw(maybe_drop),
        "estimated_drop": draw(maybe_drop),
        "drift_share": draw(maybe_share),
        "weighted_drift_share": draw(maybe_share),
        "detectors_fired": tuple(draw(st.lists(st.sampled_from(DETECTOR_NAMES), unique=True))),
        "new_labels": draw(st.integers(0, 3000)),
    }


@settings(max_examples=300, deadline=None)
@given(
    policy_=policies,
    batch_period=batch_periods,
    initial_age_h=st.integers(0, 24 * 90),
    trained_rows=st.none() | st.integers(1, 20_000),
    steps=st.lists(st.tuples(st.integers(0, 48), observations()), min_size=1, max_size=40),
)
def test_a_monitoring_loop_never_breaks_the_cooldown_or_the_cap_nor_forgets_a_signal(
    policy_: RetrainingConfig,
    batch_period: timedelta | None,
    initial_age_h: int,
    trained_rows: int | None,
    steps: list[tuple[int, dict[str, Any]]],
) -> None:
    now = NOW
    trained_at = now - timedelta(hours=initial_age_h)
    state = PolicyState(trained_rows=trained_rows)
    retrains: list[datetime] = []
    for gap_h, seen in steps:
        now += timedelta(hours=gap_h)
        sig = Signals(model_trained_at=trained_at, metric="accuracy", **seen)

        d = decide(sig, state, policy_, now, batch_period)

        assert d.at == now
        asked = {f.reason: f.since for f in d.reasons}
        for f in state.pending:  # held back before: it asks again, since when it first asked
            assert asked.get(f.reason, "missing") == f.since, "a pending signal was dropped"
        if Reason.DRIFT in asked and all(f.reason is not Reason.DRIFT for f in state.pending):
            # a new drift request: it persisted from the previous run, and the model was not
            # trained for it
            assert state.drifted_before and drift_reached(policy_, seen)
            assert Reason.DRIFT not in state.trained_for
            event("drift asked")
        if d.retrain:
            assert d.reasons, "a retrain without a reason"
            assert d.held_back == [] and d.pending == []
            assert sig.new_labels >= labels_needed(policy_, trained_rows)
            assert d.trigger != "none"
            event("retrain")
            retrains.append(now)
            trained_at = now
            state = PolicyState(
                last_retrain=now,
                recent_retrains=(*state.recent_retrains, now),
                trained_rows=trained_rows,
                trained_for=tuple(d.kinds),
            )
        elif d.reasons:
            assert d.held_back, "a signal neither acted on nor held back"
            assert d.pending == d.reasons
            for b in d.held_back:
                event(f"held back: {b.brake.value}")
            state = replace(state, pending=tuple(d.pending), pending_change_at=d.pending_change_at)
        else:
            assert d.held_back == [] and d.pending == [] and d.trigger == "none"
        # the next run knows whether this one drifted
        state = replace(state, drifted_before=drift_reached(policy_, seen))
    cooldown = duration(policy_.cooldown, batch_period)
    per = duration(policy_.per, batch_period)
    for a, b in itertools.pairwise(retrains):
        assert b - a >= cooldown
    for t in retrains:
        assert sum(t - per <= u <= t for u in retrains) <= policy_.max_retrains


@settings(max_examples=300, deadline=None)
@given(
    policy_=policies,
    batch_period=batch_periods,
    seen=observations(),
    trained_at=st.none()
    | st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    retrains=st.lists(
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ),
        max_size=8,
    ),
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    drifted_before=st.booleans(),
)
def test_decide_never_crashes_and_brakes_never_change_the_reasons(
    policy_: RetrainingConfig,
    batch_period: timedelta | None,
    seen: dict[str, Any],
    trained_at: datetime | None,
    retrains: list[datetime],
    now: datetime,
    drifted_before: bool,
) -> None:
    sig = Signals(model_trained_at=trained_at, **seen)
    state = PolicyState(
        last_retrain=max(retrains, default=None),
        recent_retrains=tuple(retrains),
        drifted_before=drifted_before,
    )

    d = decide(sig, state, policy_, now, batch_period)
    free = decide(sig, PolicyState(drifted_before=drifted_before), policy_, now, batch_period)

    assert d.reasons == free.reasons  # the brakes hold back; they never invent or drop a reason
    assert d.retrain == (bool(d.reasons) and not d.held_back)
    assert free.retrain == (bool(free.reasons) and sig.new_labels >= labels_needed(policy_, None))
    assert decide(sig, state, policy_, now, batch_period) == d  # pure
    assert all(not f.fired for f in d.nearest) and len(d.nearest) <= 3
    closeness = [f.closeness for f in d.nearest]
    assert closeness == sorted(closeness, reverse=True)
    json.dumps(d.to_dict())
    # drift asks only when it persists
    assert (Reason.DRIFT in d.kinds) == (drifted_before and drift_reached(policy_, seen))


# growth, and the window's start after the error rose ---------------------------------------------
def test_a_located_change_sets_where_the_window_starts() -> None:
    at = NOW - timedelta(days=3)
    d = decide(signals(detectors_fired=("adwin",), change_at=at), PolicyState(), POLICY, NOW)
    assert d.retrain and d.since == at


def test_a_performance_drop_at_a_located_change_cuts_the_window_too() -> None:
    at = NOW - timedelta(days=3)
    d = decide(signals(performance_drop=0.2, change_at=at), PolicyState(), POLICY, NOW)
    assert d.retrain and d.since == at


def test_without_growth_the_window_is_never_cut() -> None:
    d = decide(
        signals(detectors_fired=("adwin",), change_at=NOW - timedelta(days=3)),
        PolicyState(),
        policy(window_growth=None),
        NOW,
    )
    assert d.retrain and d.since is None


def test_a_retrain_for_another_reason_does_not_cut_at_a_new_point() -> None:
    d = decide(signals(drift_share=0.9, change_at=NOW - timedelta(days=3)), PERSISTS, POLICY, NOW)
    assert d.retrain and d.since is None


@pytest.mark.parametrize(
    ("grown", "trained", "asks"),
    [(1_000, 1_000, False), (1_999, 1_000, False), (2_000, 1_000, True), (9_000, 1_000, True)],
)
def test_growth_when_the_window_holds_twice_the_rows(grown: int, trained: int, asks: bool) -> None:
    change = NOW - timedelta(days=10)
    state = PolicyState(change_at=change, trained_rows=trained)
    d = decide(signals(window_rows=grown), state, POLICY, NOW)
    assert d.retrain is asks
    if asks:
        assert d.trigger == "growth" and f"{grown:,}" in d.reasons[0].text
        assert d.since == change  # the window keeps starting at the change


def test_growth_is_off_when_configured_so() -> None:
    state = PolicyState(trained_rows=1_000)
    assert not decide(signals(window_rows=10_000), state, policy(window_growth=None), NOW).retrain


def test_after_the_window_is_past_the_change_the_window_is_the_configured_one() -> None:
    state = PolicyState(change_at=None, trained_rows=1_000)  # the caller cleared it
    d = decide(signals(window_rows=5_000), state, POLICY, NOW)
    assert d.retrain and d.trigger == "growth" and d.since is None


def test_growth_obeys_the_brakes() -> None:
    state = PolicyState(
        last_retrain=NOW - timedelta(hours=2), change_at=NOW - timedelta(days=1), trained_rows=1_000
    )
    d = decide(signals(window_rows=5_000), state, POLICY, NOW)
    assert not d.retrain and d.reasons and d.held_back[0].brake is Brake.COOLDOWN


def test_drift_asks_once_per_model() -> None:
    drifted = signals(drift_share=0.9)
    assert decide(drifted, PERSISTS, POLICY, NOW).trigger == "drift"
    # the model was trained for this drift: the same drift does not ask again, even though it
    # persists...
    again = decide(
        drifted, PolicyState(trained_for=(Reason.DRIFT,), drifted_before=True), POLICY, NOW
    )
    assert not again.retrain and again.reasons == []
    assert again.nearest[0].reason is Reason.DRIFT and not again.nearest[0].fired
    assert "trained for this drift" in again.nearest[0].text
    # ... but other signals still do
    both = decide(
        signals(drift_share=0.9, performance_drop=0.2),
        PolicyState(trained_for=(Reason.DRIFT, Reason.SCHEDULE), drifted_before=True),
        POLICY,
        NOW,
    )
    assert both.retrain and both.trigger == "performance"


# data drift asks when it persists over two runs ---------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [{"drift_share": 0.5}, {"drift_share": 0.9}, {"drift_share": 0.1, "weighted_drift_share": 0.6}],
)
def test_drift_in_one_run_only_does_not_ask_but_is_nearest(kw: dict[str, Any]) -> None:
    once = decide(signals(**kw), PolicyState(), POLICY, NOW)

    assert not once.retrain and once.reasons == [] and once.held_back == []
    assert once.pending == [] and once.trigger == "none"
    first = once.nearest[0]
    assert first.reason is Reason.DRIFT and not first.fired
    assert first.closeness >= 1  # at or over its threshold, yet not asking
    assert ONE_RUN in first.text and "≥ 50%" in first.text
    assert ONE_RUN in once.summary() and once.to_dict()["nearest"][0] == first.text

    # the same drift when the previous run drifted too: it asks
    persists = decide(signals(**kw), PERSISTS, POLICY, NOW)

    assert persists.retrain and persists.held_back == []
    assert persists.kinds == [Reason.DRIFT] and persists.trigger == "drift"
    assert persists.reasons[0].fired and ONE_RUN not in persists.reasons[0].text


def test_drift_below_the_threshold_never_asks_whatever_came_before() -> None:
    for state in (PolicyState(), PERSISTS):
        d = decide(signals(drift_share=0.4999), state, POLICY, NOW)
        assert not d.retrain and d.reasons == []
        assert d.nearest[0].reason is Reason.DRIFT and ONE_RUN not in d.nearest[0].text
        assert "< 50%" in d.nearest[0].text


def test_persisting_drift_the_champion_was_trained_for_does_not_ask() -> None:
    # once per model still holds when the drift persists
    state = PolicyState(trained_for=(Reason.DRIFT,), drifted_before=True)

    d = decide(signals(drift_share=0.9), state, POLICY, NOW)

    assert not d.retrain and d.reasons == [] and d.held_back == [] and d.pending == []
    assert d.nearest[0].reason is Reason.DRIFT
    assert "but the champion was trained for this drift" in d.nearest[0].text
    assert ONE_RUN not in d.nearest[0].text


# slices --------------------------------------------------------------------------------------
SLICE = (("region=south", 0.09, 0.04), ("channel=web", 0.06, 0.05))


def test_a_slice_regression_is_shown_but_asks_nothing_by_default() -> None:
    assert RetrainingConfig().slice_regression is False
    d = decide(signals(slice_regressions=SLICE), PolicyState(), policy(), NOW)
    assert not d.retrain and not d.reasons
    [near] = [f for f in d.nearest if f.reason == Reason.SLICE]
    assert "region=south by 0.090" in near.text and "slice_regression is off" in near.text
    assert near.value == pytest.approx(0.09) and near.threshold == pytest.approx(0.04)


def test_a_slice_regression_asks_for_a_retrain_when_enabled() -> None:
    d = decide(signals(slice_regressions=SLICE), PolicyState(), policy(slice_regression=True), NOW)
    assert d.retrain and d.kinds == [Reason.SLICE]
    assert "region=south by 0.090, channel=web by 0.060" in d.reasons[0].text
    assert d.since is None  # not an error rise located in time: the configured window


def test_no_slice_regression_means_no_slice_finding_and_the_old_decisions() -> None:
    for pol in (policy(), policy(slice_regression=True)):
        d = decide(signals(), PolicyState(), pol, NOW)
        assert not d.reasons and all(f.reason != Reason.SLICE for f in d.nearest)
    s = compute_signals(metric="roc_auc", baseline={"roc_auc": 0.8}, realised={"roc_auc": 0.8})
    assert s.slice_regressions == ()


def test_a_held_back_slice_regression_stays_pending() -> None:
    state = PolicyState(last_retrain=NOW - timedelta(hours=1))
    pol = policy(slice_regression=True)
    d = decide(signals(slice_regressions=SLICE), state, pol, NOW)
    assert not d.retrain and [f.reason for f in d.pending] == [Reason.SLICE]
    later = decide(signals(), PolicyState(pending=tuple(d.pending)), pol, NOW + 2 * DAY)
    assert later.retrain and later.kinds == [Reason.SLICE]
