"""The retraining policy (pure): each signal alone asks for a retrain with its reason, none asks
for nothing, the brakes (cooldown, cap per period, new labels) hold a request back with their
reason, simultaneous signals merge into one decision; and (Hypothesis) no sequence of signals
over time makes a simulated monitoring loop violate the cooldown or the cap, or retrain
without a reason."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mlops_core.config import RetrainingConfig
from mlops_core.triggers import Decision, PolicyState, Signals, decide

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
POLICY = RetrainingConfig()  # 90D age, 0.05 drops, 0.5 share, adwin, 1D cooldown, 3 per 7D
FRESH = NOW - timedelta(days=2)  # a champion trained recently: no schedule reason


def signals(**kw: Any) -> Signals:
    """Signals that ask for nothing, enough new labels, a fresh champion; ``kw`` changes them."""
    return Signals(**({"model_trained_at": FRESH, "new_labels": 10_000, "metric": "roc_auc"}
                      | kw))


def policy(**kw: Any) -> RetrainingConfig:
    return POLICY.model_copy(update=kw)


def test_no_signal_no_retrain() -> None:
    d = decide(signals(performance_drop=0.01, estimated_drop=-0.02, drift_share=0.2,
                       weighted_drift_share=0.1), PolicyState(), POLICY, NOW)

    assert d == Decision(retrain=False, reasons=[], held_back=[], at=NOW)
    assert d.trigger == "none"
    # nothing measured at all is no signal either
    assert decide(Signals(), PolicyState(), POLICY, NOW).reasons == []


@pytest.mark.parametrize(("kw", "label", "text"), [
    ({"model_trained_at": NOW - timedelta(days=91)}, "schedule", "91 days old (max 90D)"),
    ({"performance_drop": 0.06}, "performance", "roc_auc 0.060 below"),
    ({"estimated_drop": 0.2}, "estimated", "estimate 0.200 below"),
    ({"drift_share": 0.75}, "drift", "drift share 75% ≥ 50%"),
    ({"drift_share": 0.1, "weighted_drift_share": 0.6}, "drift", "importance-weighted"),
    ({"detectors_fired": ("adwin",)}, "concept", "fired on the error stream: adwin"),
])
def test_each_signal_alone_triggers_with_its_reason(kw: dict[str, Any], label: str,
                                                    text: str) -> None:
    d = decide(signals(**kw), PolicyState(), POLICY, NOW)

    assert d.retrain and d.held_back == []
    assert len(d.reasons) == 1 and d.reasons[0].startswith(f"{label}: ")
    assert text in d.reasons[0]
    assert d.trigger == label and d.at == NOW


@pytest.mark.parametrize(("kw", "asks"), [
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
])
def test_thresholds(kw: dict[str, Any], asks: bool) -> None:
    assert decide(signals(**kw), PolicyState(), POLICY, NOW).retrain is asks


def test_the_weighted_share_is_preferred_when_present() -> None:
    raw_only = decide(signals(drift_share=0.9), PolicyState(), POLICY, NOW)
    unimportant = decide(signals(drift_share=0.9, weighted_drift_share=0.05), PolicyState(),
                         POLICY, NOW)
    important = decide(signals(drift_share=0.25, weighted_drift_share=0.7), PolicyState(),
                       POLICY, NOW)

    assert raw_only.retrain and "importance" not in raw_only.reasons[0]
    assert not unimportant.retrain and unimportant.reasons == []
    assert important.retrain and "importance-weighted drift share 70%" in important.reasons[0]


def test_only_the_detectors_the_policy_lists_count() -> None:
    fired = signals(detectors_fired=("page_hinkley", "ddm"))

    both = policy(detectors=["adwin", "ddm"])
    default = decide(fired, PolicyState(), both, NOW)
    ph_only = decide(fired, PolicyState(), policy(detectors=["page_hinkley"]), NOW)
    none = decide(fired, PolicyState(), policy(detectors=[]), NOW)
    unlisted = decide(signals(detectors_fired=("page_hinkley",)), PolicyState(), both, NOW)

    assert default.reasons == ["concept: detector(s) fired on the error stream: ddm"]
    assert ph_only.reasons == ["concept: detector(s) fired on the error stream: page_hinkley"]
    assert not none.retrain and none.reasons == []
    assert not unlisted.retrain and unlisted.reasons == []


def test_a_signal_switched_off_in_the_policy_asks_for_nothing() -> None:
    everything = signals(model_trained_at=NOW - timedelta(days=400), performance_drop=0.5,
                         estimated_drop=0.5, drift_share=1.0, detectors_fired=("adwin",),
                         window_rows=10_000)
    off = policy(max_model_age=None, performance_drop=None, estimated_drop=None,
                 drift_share=None, detectors=[], window_growth=None)

    d = decide(everything, PolicyState(trained_rows=1_000), off, NOW)

    assert not d.retrain and d.reasons == [] and d.held_back == []


def test_simultaneous_signals_merge_into_one_decision() -> None:
    d = decide(signals(model_trained_at=NOW - timedelta(days=100), performance_drop=0.1,
                       estimated_drop=0.08, drift_share=0.6, weighted_drift_share=0.8,
                       detectors_fired=("adwin", "ddm"), window_rows=3_000),
               PolicyState(trained_rows=1_000), policy(detectors=["adwin", "ddm"]), NOW)

    assert d.retrain and d.held_back == []
    assert len(d.reasons) == 6
    assert d.trigger == "schedule,performance,estimated,drift,concept,growth"
    assert "adwin, ddm" in d.reasons[-2]


# brakes ---------------------------------------------------------------------------------------
ASKING = signals(performance_drop=0.2)


def test_cooldown_holds_back() -> None:
    recent = PolicyState(last_retrain=NOW - timedelta(hours=23),
                         recent_retrains=(NOW - timedelta(hours=23),))
    done = PolicyState(last_retrain=NOW - timedelta(days=1),
                       recent_retrains=(NOW - timedelta(days=1),))

    held = decide(ASKING, recent, POLICY, NOW)

    assert not held.retrain and held.reasons  # the reason stays: why it wanted to retrain
    assert len(held.held_back) == 1 and held.held_back[0].startswith("cooldown: ")
    assert "cooldown 1D" in held.held_back[0]
    assert decide(ASKING, done, POLICY, NOW).retrain  # the cooldown is over at exactly 1D
    assert decide(ASKING, recent, policy(cooldown="12h"), NOW).retrain


def test_cap_per_period_holds_back() -> None:
    three = tuple(NOW - timedelta(days=d) for d in (6, 4, 2))
    capped = PolicyState(last_retrain=three[-1], recent_retrains=three)
    aged_out = PolicyState(last_retrain=NOW - timedelta(days=2),
                           recent_retrains=(NOW - timedelta(days=8), *three[1:]))

    held = decide(ASKING, capped, POLICY, NOW)

    assert not held.retrain
    assert held.held_back == ["cap: 3 retrains in the last 7D (max 3)"]
    assert decide(ASKING, aged_out, POLICY, NOW).retrain  # one of them is older than 7D
    assert decide(ASKING, capped, policy(max_retrains=4), NOW).retrain
    assert not decide(ASKING, capped, policy(per="30D", max_retrains=3), NOW).retrain


def test_too_few_new_labels_hold_back() -> None:
    held = decide(signals(performance_drop=0.2, new_labels=499), PolicyState(), POLICY, NOW)

    assert not held.retrain
    assert held.held_back == ["labels: 499 new labelled rows since the last training "
                              "(need 500)"]
    assert decide(signals(performance_drop=0.2, new_labels=500), PolicyState(), POLICY,
                  NOW).retrain
    assert decide(signals(performance_drop=0.2, new_labels=0), PolicyState(),
                  policy(min_new_labels=0), NOW).retrain


def test_every_brake_is_listed() -> None:
    times = tuple(NOW - timedelta(hours=h) for h in (100, 50, 1))
    state = PolicyState(last_retrain=times[-1], recent_retrains=times)

    d = decide(signals(drift_share=1.0, new_labels=3), state, POLICY, NOW)

    assert not d.retrain
    assert [b.split(":")[0] for b in d.held_back] == ["cooldown", "cap", "labels"]
    assert d.trigger == "drift"


def test_brakes_are_not_reported_without_a_signal() -> None:
    state = PolicyState(last_retrain=NOW - timedelta(minutes=5),
                        recent_retrains=(NOW - timedelta(minutes=5),) * 5)

    d = decide(signals(new_labels=0), state, POLICY, NOW)

    assert not d.retrain and d.reasons == [] and d.held_back == []


def test_decision_to_dict() -> None:
    d = decide(signals(drift_share=0.9, new_labels=1), PolicyState(), POLICY, NOW)

    out = json.loads(json.dumps(d.to_dict(), default=str))

    assert out["retrain"] is False and out["trigger"] == "drift"
    assert out["reasons"] == d.reasons and out["held_back"] == d.held_back
    assert out["at"] == str(NOW)


# properties ------------------------------------------------------------------------------------
DETECTOR_NAMES = ["adwin", "page_hinkley", "ddm"]
maybe_drop = st.none() | st.floats(-0.5, 0.5, allow_nan=False)
maybe_share = st.none() | st.floats(0, 1, allow_nan=False)

policies = st.builds(
    RetrainingConfig,
    max_model_age=st.none() | st.integers(1, 60).map(lambda d: f"{d}D"),
    performance_drop=st.none() | st.floats(0, 0.3, allow_nan=False),
    estimated_drop=st.none() | st.floats(0, 0.3, allow_nan=False),
    drift_share=st.none() | st.floats(0.05, 1, allow_nan=False),
    detectors=st.lists(st.sampled_from(DETECTOR_NAMES), unique=True),
    cooldown=st.integers(0, 96).map(lambda h: f"{h}h"),
    max_retrains=st.integers(1, 5),
    per=st.integers(1, 14).map(lambda d: f"{d}D"),
    min_new_labels=st.integers(0, 1000),
)


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
@given(policy_=policies, initial_age_h=st.integers(0, 24 * 90),
       steps=st.lists(st.tuples(st.integers(0, 48), observations()), min_size=1, max_size=40))
def test_a_monitoring_loop_never_breaks_the_cooldown_or_the_cap(
        policy_: RetrainingConfig, initial_age_h: int,
        steps: list[tuple[int, dict[str, Any]]]) -> None:
    now = NOW
    trained_at = now - timedelta(hours=initial_age_h)
    state = PolicyState()
    retrains: list[datetime] = []
    for gap_h, seen in steps:
        now += timedelta(hours=gap_h)
        sig = Signals(model_trained_at=trained_at, metric="accuracy", **seen)

        d = decide(sig, state, policy_, now)

        assert d.at == now
        if d.retrain:
            assert d.reasons, "a retrain without a reason"
            assert d.held_back == [] and sig.new_labels >= policy_.min_new_labels
            assert d.trigger != "none"
            event("retrain")
            retrains.append(now)
            trained_at = now
            state = PolicyState(last_retrain=now, recent_retrains=(*state.recent_retrains, now))
        elif d.reasons:
            assert d.held_back, "a signal neither acted on nor held back"
            for b in d.held_back:
                event("held back: " + b.split(":")[0])
        else:
            assert d.held_back == [] and d.trigger == "none"
    cooldown, per = pd.Timedelta(policy_.cooldown), pd.Timedelta(policy_.per)
    for a, b in itertools.pairwise(retrains):
        assert b - a >= cooldown
    for t in retrains:
        assert sum(t - per <= u <= t for u in retrains) <= policy_.max_retrains


@settings(max_examples=300, deadline=None)
@given(policy_=policies, seen=observations(),
       trained_at=st.none() | st.datetimes(min_value=datetime(2000, 1, 1),
                                           max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       retrains=st.lists(st.datetimes(min_value=datetime(2000, 1, 1),
                                      max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
                         max_size=8),
       now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                        timezones=st.just(UTC)))
def test_decide_never_crashes_and_brakes_never_change_the_reasons(
        policy_: RetrainingConfig, seen: dict[str, Any], trained_at: datetime | None,
        retrains: list[datetime], now: datetime) -> None:
    sig = Signals(model_trained_at=trained_at, **seen)
    state = PolicyState(last_retrain=max(retrains, default=None),
                        recent_retrains=tuple(retrains))

    d = decide(sig, state, policy_, now)
    free = decide(sig, PolicyState(), policy_, now)

    assert d.reasons == free.reasons  # the brakes hold back; they never invent or drop a reason
    assert d.retrain == (bool(d.reasons) and not d.held_back)
    assert free.retrain == (bool(free.reasons) and sig.new_labels >= policy_.min_new_labels)
    assert decide(sig, state, policy_, now) == d  # pure
    json.dumps(d.to_dict(), default=str)


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
    d = decide(signals(detectors_fired=("adwin",), change_at=NOW - timedelta(days=3)),
               PolicyState(), policy(window_growth=None), NOW)
    assert d.retrain and d.since is None


def test_a_retrain_for_another_reason_does_not_cut_at_a_new_point() -> None:
    d = decide(signals(drift_share=0.9, change_at=NOW - timedelta(days=3)), PolicyState(),
               POLICY, NOW)
    assert d.retrain and d.since is None


@pytest.mark.parametrize(("grown", "trained", "asks"), [
    (1_000, 1_000, False), (1_999, 1_000, False), (2_000, 1_000, True), (9_000, 1_000, True)])
def test_growth_when_the_window_holds_twice_the_rows(grown: int, trained: int,
                                                     asks: bool) -> None:
    change = NOW - timedelta(days=10)
    state = PolicyState(change_at=change, trained_rows=trained)
    d = decide(signals(window_rows=grown), state, POLICY, NOW)
    assert d.retrain is asks
    if asks:
        assert d.trigger == "growth" and f"{grown:,}" in d.reasons[0]
        assert d.since == change  # the window keeps starting at the change


def test_growth_is_off_when_configured_so() -> None:
    state = PolicyState(trained_rows=1_000)
    assert not decide(signals(window_rows=10_000), state, policy(window_growth=None),
                      NOW).retrain


def test_after_the_window_is_past_the_change_the_window_is_the_configured_one() -> None:
    state = PolicyState(change_at=None, trained_rows=1_000)  # the caller cleared it
    d = decide(signals(window_rows=5_000), state, POLICY, NOW)
    assert d.retrain and d.trigger == "growth" and d.since is None


def test_growth_obeys_the_brakes() -> None:
    state = PolicyState(last_retrain=NOW - timedelta(hours=2), change_at=NOW - timedelta(days=1),
                        trained_rows=1_000)
    d = decide(signals(window_rows=5_000), state, POLICY, NOW)
    assert not d.retrain and d.reasons and d.held_back[0].startswith("cooldown")


def test_drift_asks_once_per_model() -> None:
    drifted = signals(drift_share=0.9)
    assert decide(drifted, PolicyState(), POLICY, NOW).trigger == "drift"
    # the model was trained for this drift: the same drift does not ask again...
    again = decide(drifted, PolicyState(trained_for=("drift",)), POLICY, NOW)
    assert not again.retrain and again.reasons == []
    # ... but other signals still do
    both = decide(signals(drift_share=0.9, performance_drop=0.2),
                  PolicyState(trained_for=("drift", "schedule")), POLICY, NOW)
    assert both.retrain and both.trigger == "performance"
