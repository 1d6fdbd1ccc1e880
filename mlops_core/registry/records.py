"""The registry's records: a model version, an audit record, what a decision did; the names of
the aliases and statuses. Plain data, shared by the adapter, the audit store and the decision."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

CHAMPION = "champion"
CHALLENGER = "challenger"
RUN_HOST, RUN_PID = "mlops.host", "mlops.pid"  # tags of a training run: where it runs
STATUSES = ("candidate", "pending_approval", "approved", "rejected", "retired")
SYSTEM = "system"


@dataclass
class VersionInfo:
    version: str
    status: str
    aliases: list[str]
    metrics: dict[str, float]
    trigger: str
    created: datetime
    run_id: str | None = None
    gate_passed: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def data_end(self) -> datetime | None:
        """The end of its training data in data time (its ``data_end`` tag, or its
        ``data_window``'s end); ``None`` without a time column."""
        for text in (self.tags.get("data_end"), self.tags.get("data_window", "").split("→")[-1]):
            text = (text or "").strip()
            if text and text not in ("None", "NaT"):
                try:
                    return pd.Timestamp(text).tz_localize(None).to_pydatetime()
                except (ValueError, TypeError):
                    continue
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "aliases": self.aliases,
            "metrics": self.metrics,
            "trigger": self.trigger,
            "created": self.created.isoformat(),
            "run_id": self.run_id,
            "gate_passed": self.gate_passed,
        }


@dataclass
class DecisionResult:
    """What an approve / reject / rollback did."""

    outcome: str  # applied | refused | noop (a repeated request)
    action: str
    version: str | None
    champion: str | None  # after the operation
    previous_champion: str | None
    message: str
    request_id: str

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "noop")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    model: str
    version: str | None
    previous_champion: str | None
    outcome: str
    reason: str
    evidence: str | None
    request_id: str | None
    alias_moved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("at", "alias_moved_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d
