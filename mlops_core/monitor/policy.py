"""The retraining policy: signals and ``now`` in, a decision with every reason out. Pure: no I/O.

Monitoring (:func:`mlops_core.monitor.run.monitor`) and the backtester
(:class:`mlops_core.backtest.engine.PolicyStrategy`) both measure, call :func:`compute_signals` to
turn
the measurements into :class:`Signals`, and call :func:`decide`: one signal path.

Signals that can ask for a retrain (:class:`Reason`): the champion's data is older than
``max_model_age`` (the schedule), realised performance below the champion's by more than
``performance_drop``, the label-free estimate below it by more than ``estimated_drop``, a
data-drift share (weighted by importance where known) at or above ``drift_share``, a
concept-drift detector firing, growth: the training window now holds ``window_growth`` times the
labelled rows the model was trained on, and (with ``slice_regression``) a slice that fell behind
the rest beyond its noise (:mod:`mlops_core.monitor.slices`). Brakes (:class:`Brake`): a
cooldown after the last retrain, a cap on retrains per period, and a minimum of new labelled
rows. Simultaneous signals become one request carrying all their reasons. Data drift asks when
it persists over two runs (``PolicyState.drifted_before``, unless ``drift_persists`` is off: the
drift tests of one small batch raise false alarms at their significance level), and once per
model: a model trained for a drift is not retrained for the same drift again.

A signal held back by a brake is not forgotten: it stays pending (``PolicyState.pending``,
``Decision.pending``) and asks again at every later decision, with the time it first asked,
until a retrain serves it. A detector fires once; without this, a change it found inside a
cooldown would never be retrained for.

Durations are in data time (the batches' time column) where there is one, and may be given in
batches (``"8 batches"``: eight median batch periods, ``batch_period``), which scales the policy
to the data's cadence. ``min_new_labels`` below 1 is a share of the rows the model was trained
on.

Growth and the window's start avoid a trap: right after a concept change the training window
is mostly old data, so a model retrained once is still poor, becomes the new baseline, and no
second signal comes. When the error rose (a detector fired, or the realised metric dropped) and
the caller located where (``Signals.change_at``), the retrain's window starts there
(``Decision.since``; the trainer keeps at least ``model.window.min_rows``), and later retrains
keep starting there (``PolicyState.change_at``) until the configured window no longer reaches
back to it (the caller then clears it). Growth retrains it each time the rows since the change
have doubled.

Every "no" is explained: ``Decision.nearest`` lists the signals closest to their thresholds
(drift 83% but the champion was trained for it; AUC drop 0.03 of 0.05 allowed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from mlops_core.config import RetrainingConfig, parse_span
from mlops_core.train.evaluation import HIGHER_IS_BETTER


class Reason(StrEnum):
    """A signal that can ask for a retrain."""

    SCHEDULE = "schedule"
    PERFORMANCE = "performance"
    ESTIMATED = "estimated"
    DRIFT = "drift"
    CONCEPT = "concept"
    GROWTH = "growth"
    SLICE = "slice"


class Brake(StrEnum):
    """What can hold a requested retrain back."""

    COOLDOWN = "cooldown"
    CAP = "cap"
    LABELS = "labels"


# signals that say the error rose: the window of their retrain starts where it rose
ERROR_REASONS = frozenset({Reason.PERFORMANCE, Reason.CONCEPT})
# retrains that no change asked for: never "false triggers" in a backtest
PLANNED_REASONS = frozenset({Reason.SCHEDULE, Reason.GROWTH})


@dataclass(frozen=True)
class Signals:
    """What monitoring observed. ``None`` = not measured (no labels, no drift check...)."""

    performance_drop: float | None = None  # champion's metric minus realised (≥0 = worse)
    estimated_drop: float | None = None  # the same for the label-free estimate
    drift_share: float | None = None
    weighted_drift_share: float | None = None
    detectors_fired: tuple[str, ...] = ()
    model_trained_at: datetime | None = None  # the end of the champion's training data
    new_labels: int = 0  # labelled rows since the last training
    metric: str = ""
    # labelled rows the training window would hold now (from ``PolicyState.change_at`` on,
    # while that is set)
    window_rows: int | None = None
    # where the champion's error rose (where a detector that fired places the change, else
    # :func:`mlops_core.monitor.detectors.locate_rise`, else the first row of the evidence): a time
    # in
    # production, a row number in the backtester. Used when a detector or the realised metric
    # asks for the retrain
    change_at: datetime | int | None = None
    # slices that fell behind the rest beyond noise and tolerance (monitor.slices), worst
    # first: (column=value, regression, the bound it exceeded)
    slice_regressions: tuple[tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class Finding:
    """One signal measured against its threshold. ``fired``: it asks for a retrain."""

    reason: Reason
    text: str
    value: float | None = None
    threshold: float | None = None
    fired: bool = False
    since: datetime | None = None  # when it first asked (a pending signal)

    @property
    def closeness(self) -> float:
        """Value over threshold: 1 or more fires (0 when not measured)."""
        if self.value is None or not self.threshold:
            return 0.0
        return float(self.value / self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason.value,
            "text": self.text,
            "value": self.value,
            "threshold": self.threshold,
            "fired": self.fired,
            "since": self.since.isoformat() if self.since else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            Reason(d["reason"]),
            d["text"],
            d.get("value"),
            d.get("threshold"),
            bool(d.get("fired")),
            pd.Timestamp(d["since"]).to_pydatetime() if d.get("since") else None,
        )


@dataclass(frozen=True)
class Hold:
    brake: Brake
    text: str


@dataclass(frozen=True)
class PolicyState:
    """The retraining history the brakes need."""

    last_retrain: datetime | None = None
    recent_retrains: tuple[datetime, ...] = ()  # times of retrains (any age; filtered here)
    # the change the model's window started at, while the configured window reaches back to it
    change_at: datetime | int | None = None
    trained_rows: int | None = None  # labelled rows the model was trained on
    trained_for: tuple[Reason, ...] = ()  # the signals the newest model was trained for
    # signals that asked and were held back, not served by a retrain since
    pending: tuple[Finding, ...] = ()
    pending_change_at: datetime | int | None = None  # where the pending error rise began
    # the previous run's drift share also reached ``drift_share``: data drift asks when it
    # persists over two runs (one run's tests on a small batch raise false alarms)
    drifted_before: bool = False


@dataclass
class Decision:
    retrain: bool
    reasons: list[Finding] = field(default_factory=list)  # the signals that ask for it
    held_back: list[Hold] = field(default_factory=list)  # why it is not done now (brakes)
    at: datetime | None = None
    # train on rows from here on: where the error rose, located now, else the change the
    # model's window already starts at; None: the configured window
    since: datetime | int | None = None
    # the signals nearest their thresholds that did not ask (the answer to "why not?")
    nearest: list[Finding] = field(default_factory=list)
    # held back: the signals that stay pending (they ask again next time), and where the error
    # rose for them
    pending: list[Finding] = field(default_factory=list)
    pending_change_at: datetime | int | None = None

    @property
    def kinds(self) -> list[Reason]:
        return list(dict.fromkeys(f.reason for f in self.reasons))

    @property
    def trigger(self) -> str:
        """A short trigger label for the training run: the signals, comma-separated."""
        return ",".join(self.kinds) or "none"

    @property
    def pending_since(self) -> datetime | None:
        times = [f.since for f in self.pending if f.since is not None]
        return min(times) if times else None

    def summary(self) -> str:
        """One line: what was decided and why (or why not)."""
        if self.retrain:
            return "retrain: " + "; ".join(f.text for f in self.reasons)
        if self.held_back:
            since = self.pending_since
            return (
                "held back ("
                + "; ".join(h.text for h in self.held_back)
                + ") — "
                + "; ".join(f.text for f in self.reasons)
                + (f"; pending since {since:%Y-%m-%d %H:%M}" if since else "")
            )
        near = "; ".join(f.text for f in self.nearest)
        return "no retrain: no signal reached its threshold" + (
            f" (nearest: {near})" if near else ""
        )

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return v.isoformat() if isinstance(v, datetime) else v

        return {
            "retrain": self.retrain,
            "reasons": [f.text for f in self.reasons],
            "held_back": [h.text for h in self.held_back],
            "reason_kinds": [k.value for k in self.kinds],
            "brakes": [h.brake.value for h in self.held_back],
            "at": plain(self.at),
            "since": plain(self.since),
            "nearest": [f.text for f in self.nearest],
            "pending": [f.to_dict() for f in self.pending],
            # every signal that asks, with when it first asked (served by a retrain)
            "asking": [f.to_dict() for f in self.reasons],
            "pending_since": plain(self.pending_since),
            "pending_change_at": plain(self.pending_change_at),
            "trigger": self.trigger,
            "summary": self.summary(),
        }


def metric_drop(metric: str, baseline: float | None, value: float | None) -> float | None:
    """How far ``value`` fell below ``baseline`` (≥ 0 = worse), whichever way ``metric``
    improves; ``None`` when either is missing."""
    if value is None or baseline is None or np.isnan(value) or np.isnan(baseline):
        return None
    return (baseline - value) if HIGHER_IS_BETTER.get(metric, True) else (value - baseline)


def compute_signals(
    *,
    metric: str,
    baseline: dict[str, float],
    realised: dict[str, float] | None = None,
    estimated: float | None = None,
    drift_share: float | None = None,
    weighted_drift_share: float | None = None,
    detectors_fired: tuple[str, ...] | list[str] = (),
    model_trained_at: datetime | None = None,
    new_labels: int = 0,
    window_rows: int | None = None,
    change_at: datetime | int | None = None,
    slice_regressions: tuple[tuple[str, float, float], ...] | list[tuple[str, float, float]] = (),
) -> Signals:
    """The signals of one monitoring step, from its measurements: the champion's ``baseline``
    metrics (its hold-out), the ``realised`` metrics on the labelled rows, the label-free
    ``estimated`` value of ``metric``, the drift shares and the detectors that fired."""
    return Signals(
        performance_drop=metric_drop(
            metric, baseline.get(metric), realised.get(metric) if realised else None
        ),
        estimated_drop=metric_drop(metric, baseline.get(metric), estimated),
        drift_share=drift_share,
        weighted_drift_share=weighted_drift_share,
        detectors_fired=tuple(dict.fromkeys(detectors_fired)),
        model_trained_at=model_trained_at,
        new_labels=new_labels,
        metric=metric,
        window_rows=window_rows,
        change_at=change_at,
        slice_regressions=tuple(slice_regressions),
    )


def median_period(times: list[datetime] | list[pd.Timestamp]) -> timedelta | None:
    """The median gap between distinct times (batch ends): what "N batches" means. Distinct,
    so that a label feed re-sending a week's rows adds no zero gaps; ``None`` with fewer than
    two."""
    gaps = np.diff(np.array(sorted(set(times)), dtype="datetime64[ns]"))
    return pd.Timedelta(np.median(gaps)).to_pytimedelta() if len(gaps) else None


def span(value: str | None, batch_period: timedelta | None) -> timedelta | None:
    """A policy duration as a ``timedelta``: ``"8 batches"`` is eight ``batch_period`` (one
    day each when the period is unknown)."""
    if value is None:
        return None
    amount, unit = parse_span(value)
    if unit == "batches":
        return amount * (batch_period or timedelta(days=1))
    return timedelta(seconds=amount)


def _schedule_finding(
    signals: Signals, policy: RetrainingConfig, now: datetime, batch_period: timedelta | None
) -> Finding | None:
    """The champion's data against ``max_model_age``."""
    max_age = span(policy.max_model_age, batch_period)
    if not (max_age and signals.model_trained_at is not None):
        return None
    age = now - signals.model_trained_at
    fired = age >= max_age
    return Finding(
        Reason.SCHEDULE,
        f"schedule: the champion's data is {_ago(age)} old "
        f"({'max' if fired else 'retrain at'} {policy.max_model_age})",
        age / max_age,
        1.0,
        fired,
    )


def _drop_findings(signals: Signals, policy: RetrainingConfig) -> list[Finding]:
    """The realised and the estimated metric against the champion's validation."""
    m = signals.metric
    out: list[Finding] = []
    for reason, drop, allowed, what in (
        (Reason.PERFORMANCE, signals.performance_drop, policy.performance_drop, m),
        (
            Reason.ESTIMATED,
            signals.estimated_drop,
            policy.estimated_drop,
            f"label-free {m} estimate",
        ),
    ):
        if allowed is None or drop is None:
            continue
        fired = drop > allowed
        out.append(
            Finding(
                reason,
                f"{reason.value}: {what} {abs(drop):.3f} "
                f"{'below' if drop >= 0 else 'above'} the champion's validation "
                f"({'allowed' if fired else 'retrain beyond'} {allowed:.3f})",
                max(drop, 0.0),
                allowed,
                fired,
            )
        )
    return out


def _drift_finding(
    signals: Signals, state: PolicyState, policy: RetrainingConfig
) -> Finding | None:
    """The drift share (importance-weighted where known) against ``drift_share``; it asks
    when it persists and the champion was not trained for it."""
    share = (
        signals.weighted_drift_share
        if signals.weighted_drift_share is not None
        else signals.drift_share
    )
    if policy.drift_share is None or share is None:
        return None
    kind = "importance-weighted " if signals.weighted_drift_share is not None else ""
    reached = share >= policy.drift_share
    # once per model: a model retrained for a drift has seen the drifted data; the drift
    # that persists against its (older) reference sample is expected, and retraining again
    # would add a batch, not a new view (that storm is what this stops)
    served = reached and Reason.DRIFT in state.trained_for
    persists = state.drifted_before or not policy.drift_persists
    note = (
        " but the champion was trained for this drift"
        if served
        else (
            " in one run only (asks when it persists into the next)"
            if reached and not persists
            else ""
        )
    )
    return Finding(
        Reason.DRIFT,
        f"drift: {kind}drift share {share:.0%} "
        f"{'≥' if reached else '<'} {policy.drift_share:.0%}{note}",
        share,
        policy.drift_share,
        reached and not served and persists,
    )


def _concept_finding(signals: Signals, policy: RetrainingConfig) -> Finding | None:
    """The configured detectors that fired on the error stream."""
    fired_d = [d for d in signals.detectors_fired if d in policy.detectors]
    if not fired_d:
        return None
    return Finding(
        Reason.CONCEPT,
        "concept: detector(s) fired on the error stream: " + ", ".join(fired_d),
        1.0,
        1.0,
        True,
    )


def _growth_finding(
    signals: Signals, state: PolicyState, policy: RetrainingConfig
) -> Finding | None:
    """The training window's labelled rows against ``window_growth`` times the trained ones."""
    grown, trained = signals.window_rows, state.trained_rows
    if not (policy.window_growth and grown and trained):
        return None
    fired = grown >= policy.window_growth * trained
    return Finding(
        Reason.GROWTH,
        f"growth: the training window holds {grown:,} "
        f"labelled rows, {grown / trained:.1f}x the {trained:,} the model "
        f"was trained on (retrain at {policy.window_growth:g}x)",
        grown / trained,
        policy.window_growth,
        fired,
    )


def _slice_finding(signals: Signals, policy: RetrainingConfig) -> Finding | None:
    """Slices that fell behind the rest beyond noise; they ask when ``slice_regression`` is
    on (else the finding is shown among the nearest, and asks nothing)."""
    flagged = signals.slice_regressions
    if not flagged:
        return None
    _, worst, bound = max(flagged, key=lambda f: f[1])
    listed = ", ".join(f"{n} by {r:.3f}" for n, r, _ in flagged[:3])
    more = f" and {len(flagged) - 3} more" if len(flagged) > 3 else ""
    return Finding(
        Reason.SLICE,
        f"slice: {signals.metric} of {listed}{more} fell behind the rest beyond noise"
        + ("" if policy.slice_regression else " (retraining.slice_regression is off)"),
        worst,
        bound,
        policy.slice_regression,
    )


def _findings(
    signals: Signals,
    state: PolicyState,
    policy: RetrainingConfig,
    now: datetime,
    batch_period: timedelta | None,
) -> list[Finding]:
    """Every measured signal against its threshold, asking or not."""
    found = [
        _schedule_finding(signals, policy, now, batch_period),
        *_drop_findings(signals, policy),
        _drift_finding(signals, state, policy),
        _concept_finding(signals, policy),
        _growth_finding(signals, state, policy),
        _slice_finding(signals, policy),
    ]
    return [f for f in found if f is not None]


def _ago(age: timedelta) -> str:
    days = age.total_seconds() / 86400
    if days >= 2:
        return f"{days:,.0f} days"
    hours = age.total_seconds() / 3600
    return f"{hours:.1f} hours" if hours >= 1 else f"{age.total_seconds():.0f} s"


def min_new_labels(policy: RetrainingConfig, trained_rows: int | None) -> int:
    """The brake's minimum of new labelled rows: a count, or a share of the trained rows."""
    if policy.min_new_labels >= 1 or not trained_rows:
        return int(policy.min_new_labels) if policy.min_new_labels >= 1 else 0
    return int(np.ceil(policy.min_new_labels * trained_rows))


def _asking(findings: list[Finding], state: PolicyState, now: datetime) -> list[Finding]:
    """The signals that ask now, and those held back before and not served since, each with
    when it first asked."""
    reasons = [f for f in findings if f.fired]
    asking = {f.reason for f in reasons}
    # what was held back before and not served since asks again, with when it first asked
    # (the schedule and growth are measured afresh every time: only what was observed once,
    # a detector, a drop, a drift, asks again when it is no longer measured)
    first = {f.reason: f.since for f in state.pending}
    return [replace(f, since=first.get(f.reason) or now) for f in reasons] + [
        f for f in state.pending if f.reason not in asking and f.reason not in PLANNED_REASONS
    ]


def _nearest(findings: list[Finding]) -> list[Finding]:
    """The three signals nearest their thresholds that do not ask."""
    return sorted(
        (f for f in findings if not f.fired and f.value is not None and f.closeness > 0),
        key=lambda f: -f.closeness,
    )[:3]


def _brakes(
    signals: Signals,
    state: PolicyState,
    policy: RetrainingConfig,
    now: datetime,
    batch_period: timedelta | None,
) -> list[Hold]:
    """The brakes that hold a retrain back now: cooldown, cap, too few new labels."""
    held: list[Hold] = []
    cooldown = span(policy.cooldown, batch_period)
    if state.last_retrain is not None and cooldown and now - state.last_retrain < cooldown:
        held.append(
            Hold(
                Brake.COOLDOWN,
                (
                    f"cooldown: last retrain {state.last_retrain:%Y-%m-%d %H:%M}, cooldown "
                    f"{policy.cooldown}"
                ),
            )
        )
    per = span(policy.per, batch_period) or timedelta(0)
    recent = [t for t in state.recent_retrains if now - per <= t <= now]
    if len(recent) >= policy.max_retrains:
        held.append(
            Hold(
                Brake.CAP,
                f"cap: {len(recent)} retrains in the last {policy.per} (max {policy.max_retrains})",
            )
        )
    need = min_new_labels(policy, state.trained_rows)
    if signals.new_labels < need:
        held.append(
            Hold(
                Brake.LABELS,
                (
                    f"labels: {signals.new_labels:,} new labelled rows since the last training "
                    f"(need {need:,})"
                ),
            )
        )
    return held


def _located(
    signals: Signals, state: PolicyState, reasons: list[Finding], asking: set[Reason]
) -> datetime | int | None:
    """Where the error rose, when an error signal asks: located now if one asks now (of the
    ``asking`` ones), else where it rose for the pending ones."""
    erred = any(f.reason in ERROR_REASONS for f in reasons)
    located = (
        signals.change_at
        if any(f.reason in ERROR_REASONS for f in reasons if f.reason in asking)
        else None
    )
    if located is None and erred:
        located = state.pending_change_at
    return located


def decide(
    signals: Signals,
    state: PolicyState,
    policy: RetrainingConfig,
    now: datetime,
    batch_period: timedelta | None = None,
) -> Decision:
    findings = _findings(signals, state, policy, now, batch_period)
    reasons = _asking(findings, state, now)
    decision = Decision(retrain=False, reasons=reasons, at=now, nearest=_nearest(findings))
    if not reasons:
        return decision
    decision.held_back = _brakes(signals, state, policy, now, batch_period)
    decision.retrain = not decision.held_back
    located = _located(signals, state, reasons, {f.reason for f in findings if f.fired})
    if not decision.retrain:
        decision.pending = reasons
        decision.pending_change_at = located
        return decision
    if policy.window_growth:  # (a cut window that never grows: a trap)
        # the error rose: the rows before the change belong to the old concept
        decision.since = located if located is not None else state.change_at
    return decision
