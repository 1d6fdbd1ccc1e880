"""The retraining policy: signals and ``now`` in, a decision with every reason out. Pure: no I/O.

Signals that can ask for a retrain: the champion is older than ``max_model_age`` (the schedule),
realised performance below the champion's by more than ``performance_drop``, the label-free
estimate below it by more than ``estimated_drop``, a data-drift share (weighted by importance
where known) at or above ``drift_share``, a concept-drift detector firing, and growth: the
training window now holds ``window_growth`` times the labelled rows the model was trained on.
Brakes: a cooldown after the last retrain, a cap on retrains per period, and a minimum of new
labelled rows. Simultaneous signals become one request carrying all their reasons. Data drift
asks once per model: a model trained for a drift is not retrained for the same drift again.

Growth and the window's start avoid a trap: right after a concept change the training window
is mostly old data, so a model retrained once is still poor, becomes the new baseline, and no
second signal comes. When the error rose (a detector fired, or the realised metric dropped) and
the caller located where (``Signals.change_at``), the retrain's window starts there
(``Decision.since``), and later retrains keep starting there (``PolicyState.change_at``) until
the configured window no longer reaches back to it (the caller then clears it). The model then
learns from few rows, and growth retrains it each time the rows since the change have doubled.
Growth also retrains a young project's first models as labels accumulate; once the window is
full (``model.window``), it holds as many rows as the model had and growth stays quiet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from mlops_core.config import RetrainingConfig


@dataclass(frozen=True)
class Signals:
    """What monitoring observed. ``None`` = not measured (no labels, no drift check...)."""

    performance_drop: float | None = None  # champion's metric minus realised (≥0 = worse)
    estimated_drop: float | None = None  # the same for the label-free estimate
    drift_share: float | None = None
    weighted_drift_share: float | None = None
    detectors_fired: tuple[str, ...] = ()
    model_trained_at: datetime | None = None
    new_labels: int = 0  # labelled rows since the last training
    metric: str = ""
    # labelled rows the training window would hold now (from ``PolicyState.change_at`` on,
    # while that is set)
    window_rows: int | None = None
    # where the champion's error rose (where a detector that fired places the change, else
    # :func:`mlops_core.detectors.locate_rise`, else the first row of the evidence): a time in
    # production, a row number in the backtester. Used when a detector or the realised metric
    # asks for the retrain
    change_at: datetime | int | None = None


@dataclass(frozen=True)
class PolicyState:
    """The retraining history the brakes need."""

    last_retrain: datetime | None = None
    recent_retrains: tuple[datetime, ...] = ()  # times of retrains (any age; filtered here)
    # the change the model's window started at, while the configured window reaches back to it
    change_at: datetime | int | None = None
    trained_rows: int | None = None  # labelled rows the model was trained on
    trained_for: tuple[str, ...] = ()  # the signals the newest model was trained for


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)  # the signals that ask for it
    held_back: list[str] = field(default_factory=list)  # why it is not done now (brakes)
    at: datetime | None = None
    # train on rows from here on: where the error rose, located now, else the change the
    # model's window already starts at; None: the configured window
    since: datetime | int | None = None

    @property
    def trigger(self) -> str:
        """A short trigger label for the training run: the signals, comma-separated."""
        return ",".join(r.split(":")[0] for r in self.reasons) or "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"trigger": self.trigger}


def decide(signals: Signals, state: PolicyState, policy: RetrainingConfig,
           now: datetime) -> Decision:
    reasons: list[str] = []
    if policy.max_model_age and signals.model_trained_at is not None:
        age = now - signals.model_trained_at
        if age >= pd.Timedelta(policy.max_model_age):
            reasons.append(f"schedule: the champion is {age.days} days old "
                           f"(max {policy.max_model_age})")
    if policy.performance_drop is not None and signals.performance_drop is not None and \
            signals.performance_drop > policy.performance_drop:
        reasons.append(f"performance: {signals.metric} {signals.performance_drop:.3f} below "
                       f"the champion's validation (allowed {policy.performance_drop:.3f})")
    if policy.estimated_drop is not None and signals.estimated_drop is not None and \
            signals.estimated_drop > policy.estimated_drop:
        reasons.append(f"estimated: label-free {signals.metric} estimate "
                       f"{signals.estimated_drop:.3f} below the champion's "
                       f"(allowed {policy.estimated_drop:.3f})")
    share = signals.weighted_drift_share if signals.weighted_drift_share is not None \
        else signals.drift_share
    # once per model: a model retrained for a drift has seen the drifted data; the drift that
    # persists against its (older) reference sample is expected, and retraining again would
    # add a batch, not a new view (that storm is what this stops)
    if policy.drift_share is not None and share is not None and share >= policy.drift_share \
            and "drift" not in state.trained_for:
        kind = "importance-weighted " if signals.weighted_drift_share is not None else ""
        reasons.append(f"drift: {kind}drift share {share:.0%} ≥ {policy.drift_share:.0%}")
    fired = [d for d in signals.detectors_fired if d in policy.detectors]
    if fired:
        reasons.append(f"concept: detector(s) fired on the error stream: {', '.join(fired)}")
    grown, trained = signals.window_rows, state.trained_rows
    if policy.window_growth and grown and trained and grown >= policy.window_growth * trained:
        reasons.append(f"growth: the training window holds {grown:,} labelled rows, "
                       f"{grown / trained:.1f}x the {trained:,} the model was trained on")
    decision = Decision(retrain=False, reasons=reasons, at=now)
    if not reasons:
        return decision
    if state.last_retrain is not None and now - state.last_retrain < pd.Timedelta(
            policy.cooldown):
        decision.held_back.append(f"cooldown: last retrain {state.last_retrain:%Y-%m-%d %H:%M}, "
                                  f"cooldown {policy.cooldown}")
    window_start = now - pd.Timedelta(policy.per)
    recent = [t for t in state.recent_retrains if window_start <= t <= now]
    if len(recent) >= policy.max_retrains:
        decision.held_back.append(f"cap: {len(recent)} retrains in the last {policy.per} "
                                  f"(max {policy.max_retrains})")
    if signals.new_labels < policy.min_new_labels:
        decision.held_back.append(f"labels: {signals.new_labels:,} new labelled rows since the "
                                  f"last training (need {policy.min_new_labels:,})")
    decision.retrain = not decision.held_back
    if decision.retrain and policy.window_growth:  # (a cut window that never grows: a trap)
        # the error rose: the rows before the change belong to the old concept
        erred = bool(fired) or any(r.startswith("performance") for r in reasons)
        located = signals.change_at if erred else None
        decision.since = located if located is not None else state.change_at
    return decision
