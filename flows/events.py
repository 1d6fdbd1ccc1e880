"""The project's Prefect events: names, the project resource, emitting, and the audit outbox.

Every event has the project as its resource (``mlops.project.<project>``), so a user's own
automation can match one project or all (``mlops.project.*``).

Approvals, rejections, rollbacks and retrain requests are made outside Prefect (the CLI, the
dashboard), through ``mlops_core.ops.actions``, which appends them to the audit log (approvals
before
an alias moves). The audit log is the outbox: :func:`publish_decisions` turns the records not yet
published into ``mlops.model.approved`` / ``mlops.model.rejected`` / ``mlops.retrain.requested``
events and moves a watermark in the metadata DB. It runs at the end of the train and monitor
flows, every two minutes as the ``publish-events`` deployment, and on demand (``mlops publish``).
So the CLI and the dashboard never need Prefect, and an approval made while Prefect is down is
published when it comes back.
The watermark moves before the events are sent; two publishers running at the same instant may
both send a record, which is harmless: the promote flow is idempotent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

BATCH_ACCEPTED = "mlops.batch.accepted"
BATCH_QUARANTINED = "mlops.batch.quarantined"
DRIFT_DETECTED = "mlops.drift.detected"
RETRAIN_REQUESTED = "mlops.retrain.requested"
MODEL_REGISTERED = "mlops.model.registered"
MODEL_APPROVED = "mlops.model.approved"
MODEL_REJECTED = "mlops.model.rejected"
EVENTS = (
    BATCH_ACCEPTED,
    BATCH_QUARANTINED,
    DRIFT_DETECTED,
    RETRAIN_REQUESTED,
    MODEL_REGISTERED,
    MODEL_APPROVED,
    MODEL_REJECTED,
)

# audit actions → event (only applied decisions and requests are published)
AUDIT_EVENTS = {
    "approve": MODEL_APPROVED,
    "auto_promote": MODEL_APPROVED,
    "rollback": MODEL_APPROVED,
    "reject": MODEL_REJECTED,
    "gate_reject": MODEL_REJECTED,
    "request_retrain": RETRAIN_REQUESTED,
}
# who asked for a retrain the monitoring policy decided (``requested_by`` of the event)
POLICY = "policy"
WATERMARK_KEY = "prefect.events.audit_published"


def resource_id(project: str) -> str:
    return f"mlops.project.{project}"


def resource(project: str) -> dict[str, str]:
    return {"prefect.resource.id": resource_id(project), "prefect.resource.name": project}


def emit(
    event: str,
    project: str,
    payload: dict[str, Any] | None = None,
    related: list[dict[str, str]] | None = None,
) -> Any:
    """Send one event about ``project`` (a no-op, logged, when no Prefect API is configured)."""
    from prefect.events import emit_event

    sent = emit_event(
        event=event, resource=resource(project), payload=payload or {}, related=related
    )
    if sent is None:
        log.info("event %s not sent (no Prefect API configured)", event)
    return sent


def since_text(since: datetime | int | None) -> str:
    """``Decision.since`` as an event payload field: ISO time, or "" when unset."""
    if since is None:
        return ""
    return since.isoformat() if isinstance(since, datetime) else str(since)


def retrain_payload(
    *,
    trigger: str,
    reasons: list[str],
    since: str = "",
    monitoring_run: str = "",
    requested_by: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """The payload of ``mlops.retrain.requested``. Every key the training deployment's trigger
    templates (``flows.deploy``) is always present: Prefect fails to render a missing one."""
    return {
        "trigger": trigger,
        "reasons": list(reasons),
        "since": since,
        "monitoring_run": monitoring_run,
        "requested_by": requested_by,
        **extra,
    }


def audit_payload(
    action: str,
    version: str | None,
    *,
    actor: str = "",
    reason: str = "",
    previous_champion: str | None = None,
    audit_id: int | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The payload of the event of one audit record (``action`` as in the audit log)."""
    if action == "request_retrain":  # a person asked: the train flow's parameters
        return retrain_payload(
            trigger="manual",
            reasons=[reason],
            requested_by=actor,
            champion_version=previous_champion,
            audit_id=audit_id,
            request_id=request_id,
        )
    return {
        "version": version,
        "action": action,
        "actor": actor,
        "reason": reason,
        "previous_champion": previous_champion,
        "audit_id": audit_id,
    }


def emit_decision(
    project: str,
    action: str,
    version: str | None,
    *,
    actor: str = "",
    reason: str = "",
    previous_champion: str | None = None,
    audit_id: int | None = None,
    request_id: str | None = None,
) -> Any:
    """Emit the event of one approval / rejection / rollback / retrain request (``action`` as
    in the audit log). Returns None for an action that has no event."""
    event = AUDIT_EVENTS.get(action)
    if event is None:
        return None
    return emit(
        event,
        project,
        audit_payload(
            action,
            version,
            actor=actor,
            reason=reason,
            previous_champion=previous_champion,
            audit_id=audit_id,
            request_id=request_id,
        ),
    )


def publish_decisions(settings: Any, limit: int = 200) -> list[dict[str, Any]]:
    """Publish the audit records made since the last call (the outbox), oldest first, at most
    ``limit`` records a call (the rest the next call: refused attempts cannot crowd one out);
    returns what was sent."""
    from mlops_core.registry.registry import Registry
    from mlops_core.store import MetadataStore

    meta = MetadataStore(settings.db_url)
    reg = Registry(settings, meta)
    mark = int(meta.get_state(WATERMARK_KEY, 0) or 0)
    new = reg.audit(after_id=mark, limit=limit)
    if new:  # moved before sending: a crash in between loses events rather than repeat them
        meta.set_state(WATERMARK_KEY, max(r.id for r in new))
    sent = []
    for r in new:
        if r.outcome != "applied" or r.action not in AUDIT_EVENTS:
            continue
        emit_decision(
            settings.project,
            r.action,
            r.version,
            actor=r.actor,
            reason=r.reason,
            previous_champion=r.previous_champion,
            audit_id=r.id,
            request_id=r.request_id,
        )
        sent.append(
            {
                "event": AUDIT_EVENTS[r.action],
                "action": r.action,
                "version": r.version,
                "actor": r.actor,
                "audit_id": r.id,
            }
        )
    return sent
