"""Every write a person makes, from the dashboard or the CLI: approve, reject, rollback, release
a quarantined batch, request a retrain. Each checks the principal's role as it is at the moment
of the write (read again from the users file or the approvers list, not kept from sign-in; not
only by hiding buttons), refuses and audits what it may not do, and takes a request
id so that a double click or a rerun is done once.

- A refusal for lack of a role, or by the four-eyes rule (``dashboard.four_eyes``: the approver
  must not be whoever requested the retrain that produced the version), is appended to the audit
  log with outcome ``refused`` and raised as :class:`AuthorizationError`. Appending never
  changes or removes a record: a second refusal under the same request id is not recorded twice.
- A request id seen before answers ``noop`` ("already handled"); an approval whose expected
  champion changed meanwhile answers ``refused`` with the registry's message (a lost race).
- Approve, reject and rollback need a comment (:class:`InputError`); a retrain request needs a
  reason. The request is an audit record that ``flows.events`` publishes as
  ``mlops.retrain.requested`` (the training deployment's trigger).
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mlops_core.config import Settings
from mlops_core.errors import AuthorizationError, InputError, MlopsError, NotFoundError, excerpt
from mlops_core.ops.auth import Principal, authorize, current_principal
from mlops_core.registry.audit import AuditStore
from mlops_core.registry.registry import AuditRecord, DecisionResult, Registry, VersionInfo
from mlops_core.store import BatchRecord, MetadataStore, audit_log, champion_state, utcnow

if TYPE_CHECKING:
    from mlops_core.data.ingest import ReleaseResult

log = logging.getLogger(__name__)

REQUESTED_BY = "requested_by"  # the version tag naming who asked for the retrain
REQUEST_RETRAIN = "request_retrain"  # the audit action of a retrain request


@dataclass
class RetrainRequest:
    """A recorded request to retrain; ``outcome`` is ``applied`` or ``noop`` (seen before).
    ``queued``: it waits for the services to publish it and train (not when the caller trains
    it in its own process); ``services_running``: whether the project's Prefect server answered
    (None when not asked)."""

    outcome: str
    request_id: str
    requested_by: str
    reason: str
    at: datetime | None
    audit_id: int | None
    message: str
    queued: bool = False
    services_running: bool | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "noop")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at"] = self.at.isoformat() if self.at else None
        return d


# the audit log, read and appended without MLflow ---------------------------------------------
def _find_request(meta: MetadataStore, model: str, request_id: str) -> AuditRecord | None:
    with meta.engine.connect() as conn:
        row = conn.execute(
            sa.select(audit_log).where(
                audit_log.c.model == model, audit_log.c.request_id == request_id
            )
        ).first()
    return AuditRecord(**dict(row._mapping)) if row else None


def _champion(meta: MetadataStore, model: str) -> str | None:
    with meta.engine.connect() as conn:
        return conn.execute(
            sa.select(champion_state.c.version).where(champion_state.c.model == model)
        ).scalar_one_or_none()


def _append(
    meta: MetadataStore,
    model: str,
    *,
    actor: str,
    action: str,
    outcome: str,
    reason: str,
    version: str | None = None,
    previous: str | None = None,
    evidence: str | None = None,
    request_id: str | None = None,
) -> int | None:
    """Append one audit record (an insert, nothing else); None if its request id is taken."""
    try:
        return AuditStore(meta, model).record(
            actor, action, version, previous, outcome, reason, evidence, request_id
        )
    except sa.exc.IntegrityError:
        return None


def _refuse(
    meta: MetadataStore,
    model: str,
    principal: Principal,
    action: str,
    why: str,
    *,
    version: str | None = None,
    comment: str = "",
    evidence: str | None = None,
    request_id: str | None = None,
    error: type[MlopsError] = AuthorizationError,
) -> MlopsError:
    """Audit a refused attempt (who tried what, and why not); the error to raise
    (:class:`AuthorizationError` for a role or rule, another for a wrong state or input)."""
    _append(
        meta,
        model,
        actor=principal.name,
        action=action,
        outcome="refused",
        reason=f"{why} (via {principal.via})" + (f" (comment: {comment})" if comment else ""),
        version=version,
        previous=_champion(meta, model),
        evidence=evidence,
        request_id=request_id,
    )
    log.warning("refused %s by %s: %s", action, principal.name, why)
    return error(why)


def _authorize(
    settings: Settings,
    meta: MetadataStore,
    model: str,
    principal: Principal,
    action: str,
    *,
    version: str | None = None,
    comment: str | None = "",
    evidence: str | None = None,
    request_id: str | None = None,
    require: str | None = None,
) -> Principal:
    """The principal with its role as it is now (see :func:`current_principal`), if that role
    may do ``action`` and, with ``require`` (e.g. "a comment"), ``comment`` says why; otherwise
    the refusal is audited and raised."""
    principal = current_principal(settings, principal)
    error: type[MlopsError]
    try:
        authorize(principal, action)
    except AuthorizationError as e:
        why, error = str(e), AuthorizationError
    else:
        if require is None or (comment or "").strip():
            return principal
        why, error = f"{require} is required: say why (it is kept in the audit log)", InputError
    raise _refuse(
        meta,
        model,
        principal,
        action,
        why,
        version=version,
        comment=comment or "",
        evidence=evidence,
        request_id=request_id,
        error=error,
    ) from None


def _earlier(
    meta: MetadataStore,
    model: str,
    principal: Principal,
    request_id: str,
    action: str,
    *,
    evidence: str | None = None,
    comment: str = "",
) -> AuditRecord | None:
    """The record of an earlier request with this id, if it was this same request (a double
    click, a retry); an id already used for another action or target is refused, audited."""
    prior = _find_request(meta, model, request_id)
    # a release records its batch and what it became ("batch:q-1 -> b-2"), and an id prefix
    # names a batch: the same target is the recorded evidence's start
    if prior is not None and (
        prior.action != action or not (prior.evidence or "").startswith(evidence or "")
    ):
        raise _refuse(
            meta,
            model,
            principal,
            action,
            f"request id {request_id} was used for another action ({prior.action} "
            f"{prior.evidence or prior.version or ''}); use a new one",
            comment=comment,
            evidence=evidence,
            error=InputError,
        )
    return prior


def record_failed_sign_in(
    settings: Settings, username: str, *, meta: MetadataStore, via: str = "password"
) -> None:
    """Audit a refused sign-in (a wrong name or password): who tried, never the password."""
    _append(
        meta,
        settings.project,
        actor=excerpt(str(username).strip() or "?", 80),
        action="sign_in",
        outcome="refused",
        reason=f"wrong user name or password (via {via})",
    )


def _registry(settings: Settings, registry: Registry | None) -> Registry:
    return registry if registry is not None else Registry(settings)


# decisions on versions -------------------------------------------------------------------------
def approve(
    settings: Settings,
    principal: Principal,
    version: str,
    *,
    comment: str,
    request_id: str | None = None,
    expected_champion: str | EllipsisType | None = Ellipsis,
    registry: Registry | None = None,
) -> DecisionResult:
    """Make a pending version champion. ``expected_champion``: the champion the approver saw
    (None: there was none; default: whatever it is now); if it changed meanwhile the approval is
    refused, and says so."""
    reg = _registry(settings, registry)
    version = str(version)
    principal = _authorize(
        settings,
        reg.meta,
        reg.name,
        principal,
        "approve",
        version=version,
        comment=comment,
        request_id=request_id,
        require="a comment",
    )
    comment = (comment or "").strip()
    if settings.dashboard.four_eyes:
        requested_by = reg.version(version).tags.get(REQUESTED_BY, "").strip()
        if requested_by and requested_by.casefold() == principal.name.strip().casefold():
            raise _refuse(
                reg.meta,
                reg.name,
                principal,
                "approve",
                f"four-eyes rule: v{version} was trained at {requested_by}'s request; "
                "another approver must approve it",
                version=version,
                comment=comment,
                request_id=request_id,
            )
    return reg.approve(
        version,
        by=principal.name,
        comment=comment,
        expected_champion=expected_champion,
        request_id=request_id,
    )


def reject(
    settings: Settings,
    principal: Principal,
    version: str,
    *,
    comment: str,
    request_id: str | None = None,
    registry: Registry | None = None,
) -> DecisionResult:
    """Reject a pending version (it never becomes champion)."""
    reg = _registry(settings, registry)
    version = str(version)
    principal = _authorize(
        settings,
        reg.meta,
        reg.name,
        principal,
        "reject",
        version=version,
        comment=comment,
        request_id=request_id,
        require="a comment",
    )
    comment = (comment or "").strip()
    return reg.reject(version, by=principal.name, comment=comment, request_id=request_id)


def rollback(
    settings: Settings,
    principal: Principal,
    *,
    to: str | None = None,
    comment: str,
    request_id: str | None = None,
    expected_champion: str | EllipsisType | None = Ellipsis,
    registry: Registry | None = None,
) -> DecisionResult:
    """Make a previously approved version champion again: ``to``, or by default the champion
    before the current one (see :func:`rollback_targets`)."""
    reg = _registry(settings, registry)
    target = None if to is None else str(to)
    principal = _authorize(
        settings,
        reg.meta,
        reg.name,
        principal,
        "rollback",
        version=target,
        comment=comment,
        request_id=request_id,
        require="a comment",
    )
    comment = (comment or "").strip()
    return reg.rollback(
        by=principal.name,
        comment=comment,
        to=target,
        request_id=request_id,
        expected_champion=expected_champion,
    )


def approvable_versions(settings: Settings, registry: Registry | None = None) -> list[VersionInfo]:
    """Versions awaiting a decision (``pending_approval``), newest first."""
    versions = _registry(settings, registry).versions()
    return [v for v in reversed(versions) if v.status == "pending_approval"]


def rollback_targets(settings: Settings, registry: Registry | None = None) -> list[VersionInfo]:
    """Previously approved versions one can roll back to (approved or retired, the gate passed,
    not the champion now), newest first."""
    reg = _registry(settings, registry)
    versions = reg.versions()
    champion = reg.champion()
    return [
        v
        for v in reversed(versions)
        if v.status in ("approved", "retired") and v.version != champion and v.gate_passed is True
    ]


# other writes ------------------------------------------------------------------------------------
def release(
    settings: Settings,
    principal: Principal,
    batch_id: str,
    *,
    comment: str = "",
    request_id: str | None = None,
    force: bool = False,
    meta: MetadataStore | None = None,
) -> ReleaseResult:
    """Replay a quarantined batch (see :func:`mlops_core.data.ingest.release_batch`) and audit it
    (action ``release``: ``applied`` when released, ``refused`` when its rows are still
    refused). ``force`` accepts readable rows despite their findings."""
    from mlops_core.data.ingest import ReleaseResult

    meta = meta or MetadataStore(settings.db_url)
    model = settings.project
    principal = _authorize(
        settings,
        meta,
        model,
        principal,
        "release",
        comment=comment,
        evidence=f"batch:{batch_id}",
        request_id=request_id,
    )
    rid = request_id or uuid.uuid4().hex
    prior = _earlier(
        meta, model, principal, rid, "release", evidence=f"batch:{batch_id}", comment=comment
    )
    if prior is not None:
        return ReleaseResult(
            batch_id,
            prior.outcome == "applied",
            [],
            f"request {rid} was already handled ({prior.outcome})",
        )
    res = _release_batch(settings, meta, principal, batch_id, comment, rid, force=force)
    _audit_release(meta, model, principal, res, comment, rid, force=force)
    return res


def _release_batch(
    settings: Settings,
    meta: MetadataStore,
    principal: Principal,
    batch_id: str,
    comment: str,
    request_id: str,
    *,
    force: bool,
) -> ReleaseResult:
    """Replay the batch; a batch that cannot be (not quarantined, not found, its data missing)
    is refused, audited."""
    from mlops_core.data.ingest import release_batch

    try:
        return release_batch(settings, batch_id, force=force, meta=meta)
    except (MlopsError, LookupError) as e:
        raise _refuse(
            meta,
            settings.project,
            principal,
            "release",
            str(e),
            comment=comment,
            evidence=f"batch:{batch_id}",
            request_id=request_id,
            error=NotFoundError if isinstance(e, LookupError) else MlopsError,
        ) from None


def _audit_release(
    meta: MetadataStore,
    model: str,
    principal: Principal,
    res: ReleaseResult,
    comment: str,
    request_id: str,
    *,
    force: bool,
) -> None:
    """Audit a replay: ``applied`` when released (the batch and what it became), ``refused``
    when its rows are still refused."""
    evidence = f"batch:{res.quarantined_id}" + (
        " -> " + ",".join(o.id for o in res.outcomes) if res.released else ""
    )
    note = ("forced; " if force else "") + res.message
    _append(
        meta,
        model,
        actor=principal.name,
        action="release",
        outcome="applied" if res.released else "refused",
        reason=f"{comment.strip()} ({note})" if comment and comment.strip() else note,
        evidence=evidence[:2000],
        request_id=request_id,
    )


@dataclass
class WithdrawResult:
    """``applied`` (the batch is withdrawn now) or ``noop`` (this request was handled before)."""

    outcome: str
    batch_id: str
    message: str


def withdraw(
    settings: Settings,
    principal: Principal,
    batch_id: str,
    *,
    comment: str,
    request_id: str | None = None,
    meta: MetadataStore | None = None,
) -> WithdrawResult:
    """Take an accepted batch out of training and monitoring windows without deleting it (its
    data and record stay; status ``withdrawn``); audited as ``withdraw``. A batch that is not
    accepted (any more) is refused, and the refusal audited."""
    meta = meta or MetadataStore(settings.db_url)
    model = settings.project
    principal = _authorize(
        settings,
        meta,
        model,
        principal,
        "withdraw",
        comment=comment,
        evidence=f"batch:{batch_id}",
        request_id=request_id,
        require="a comment",
    )
    comment = (comment or "").strip()
    rid = request_id or uuid.uuid4().hex
    prior = _earlier(
        meta, model, principal, rid, "withdraw", evidence=f"batch:{batch_id}", comment=comment
    )
    if prior is not None:
        return WithdrawResult(
            "noop", batch_id, f"request {rid} was already handled ({prior.outcome})"
        )
    rec = _withdraw_batch(meta, model, principal, batch_id, comment, rid)
    _append(
        meta,
        model,
        actor=principal.name,
        action="withdraw",
        outcome="applied",
        reason=comment,
        evidence=f"batch:{rec.id}",
        request_id=rid,
    )
    log.info("batch %s withdrawn by %s: %s", rec.id, principal.name, comment)
    return WithdrawResult(
        "applied",
        rec.id,
        f"batch {rec.id} withdrawn: its {rec.rows:,} rows "
        "are kept but no longer train or monitor any model",
    )


def _withdraw_batch(
    meta: MetadataStore,
    model: str,
    principal: Principal,
    batch_id: str,
    comment: str,
    request_id: str,
) -> BatchRecord:
    """Mark the batch withdrawn; a batch not found, or not accepted (any more), is refused,
    audited."""
    try:
        rec = meta.get_batch(batch_id)
    except LookupError as e:
        raise _refuse(
            meta,
            model,
            principal,
            "withdraw",
            str(e),
            comment=comment,
            evidence=f"batch:{batch_id}",
            request_id=request_id,
            error=NotFoundError,
        ) from None
    if not meta.withdraw_batch(rec.id):
        raise _refuse(
            meta,
            model,
            principal,
            "withdraw",
            f"batch {rec.id} is {meta.get_batch(rec.id).status}, not accepted: only "
            "an accepted batch can be withdrawn",
            comment=comment,
            evidence=f"batch:{rec.id}",
            request_id=request_id,
            error=MlopsError,
        )
    return rec


def services_running(settings: Settings) -> bool:
    """Whether the Prefect server the project's requests go to (``PREFECT_API_URL``, else the
    one `mlops up` started) answers its health check: what publishes a retrain request and
    trains on it."""
    from mlops_core.ops.services import is_healthy, prefect_api_url

    api = os.environ.get("PREFECT_API_URL") or prefect_api_url(settings.workspace)
    return bool(api) and is_healthy(f"{str(api).rstrip('/')}/health", timeout=2.0)


def _queued_message(running: bool) -> str:
    if running:
        return (
            "queued: the publish-events deployment publishes it within two minutes and the "
            "train deployment trains on it (`mlops publish` sends it now)"
        )
    return (
        "queued until the services run: the project's Prefect server does not answer, so "
        "nothing trains until they do (`mlops up` starts them)"
    )


def request_retrain(
    settings: Settings,
    principal: Principal,
    *,
    reason: str,
    request_id: str | None = None,
    meta: MetadataStore | None = None,
    in_process: bool = False,
) -> RetrainRequest:
    """Record a request to retrain now. It is published as ``mlops.retrain.requested``
    (trigger ``manual``, ``requested_by`` the principal) by the events outbox, and the version it
    trains carries the ``requested_by`` tag that the four-eyes rule checks.

    ``in_process``: the caller trains it itself, now (`mlops retrain --now`): the request is
    audited with outcome ``recorded``, which the outbox does not publish, so the services do not
    train it a second time."""
    meta = meta or MetadataStore(settings.db_url)
    model = settings.project
    principal = _authorize(
        settings,
        meta,
        model,
        principal,
        REQUEST_RETRAIN,
        comment=reason or "",
        request_id=request_id,
        require="a reason",
    )
    reason = (reason or "").strip()
    rid = request_id or uuid.uuid4().hex
    prior = _earlier(meta, model, principal, rid, REQUEST_RETRAIN, comment=reason)
    audit_id = None
    if prior is None:
        audit_id = _append(
            meta,
            model,
            actor=principal.name,
            action=REQUEST_RETRAIN,
            outcome="recorded" if in_process else "applied",
            reason=reason,
            previous=_champion(meta, model),
            request_id=rid,
        )
        if audit_id is None:  # the same request, recorded a moment ago by its twin
            prior = _find_request(meta, model, rid)
    if prior is not None:
        return RetrainRequest(
            "noop",
            rid,
            prior.actor,
            prior.reason,
            prior.at,
            prior.id,
            f"request {rid} was already handled ({prior.outcome})",
            queued=prior.outcome == "applied",
        )
    return _applied_request(settings, rid, principal.name, reason, audit_id, in_process)


def _applied_request(
    settings: Settings,
    rid: str,
    by: str,
    reason: str,
    audit_id: int | None,
    in_process: bool,
) -> RetrainRequest:
    """The answer to a new request: trained by the caller now, or queued for the services
    (saying whether they run)."""
    if in_process:
        return RetrainRequest(
            "applied", rid, by, reason, utcnow(), audit_id, "training now, in this process"
        )
    running = services_running(settings)
    message = _queued_message(running)
    return RetrainRequest(
        "applied", rid, by, reason, utcnow(), audit_id, message, True, services_running=running
    )
