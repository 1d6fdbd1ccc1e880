"""The retraining policy: signals and ``now`` in, a decision with every reason out. Pure: no I/O.

Signals that can ask for a retrain: the champion is older than ``max_model_age`` (the schedule),
realised performance below the champion's by more than ``performance_drop``, the label-free
estimate below it by more than ``estimated_drop``, a data-drift share (weighted by importance
where known) at or above ``drift_share``, and a concept-drift detector firing. Brakes: a
cooldown after the last retrain, a cap on retrains per period, and a minimum of new labelled
rows. Simultaneous signals become one request carrying all their reasons.
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


@dataclass(frozen=True)
class PolicyState:
    """The retraining history the brakes need."""

    last_retrain: datetime | None = None
    recent_retrains: tuple[datetime, ...] = ()  # times of retrains (any age; filtered here)


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)  # the signals that ask for it
    held_back: list[str] = field(default_factory=list)  # why it is not done now (brakes)
    at: datetime | None = None

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
    if policy.drift_share is not None and share is not None and share >= policy.drift_share:
        kind = "importance-weighted " if signals.weighted_drift_share is not None else ""
        reasons.append(f"drift: {kind}drift share {share:.0%} ≥ {policy.drift_share:.0%}")
    fired = [d for d in signals.detectors_fired if d in policy.detectors]
    if fired:
        reasons.append(f"concept: detector(s) fired on the error stream: {', '.join(fired)}")
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
    return decision
