"""Prefect flows of the model life cycle, thin over ``mlops_core``.

- ``ingest``: pull what the configured source has ready, validate, store or quarantine; one event
  per new batch (``mlops.batch.accepted`` / ``mlops.batch.quarantined``).
- ``monitor``: drift, performance, detectors, the policy's decision (``mlops.drift.detected``,
  ``mlops.retrain.requested`` with the reasons and the window's start).
- ``train``: train, gate, register (pending, or champion in auto mode): ``mlops.model.registered``.
  At most one training per project at a time (a global concurrency limit), and a repeat on the
  same data and configuration returns the earlier result (cache keyed by the content hashes of
  the labelled batches).
- ``promote``: the side effects of an approval (``mlops.model.approved``): serving reloads.
- ``online-update``: the online model learns the new labels (``online.schedule``).
- ``publish_events``: approvals, rejections and retrain requests made in the CLI or dashboard →
  events (a person's retrain request becomes ``mlops.retrain.requested``, so it trains here).
- ``continuous_training``: one pass of the loop in one run, for a manual run or a backfill.

Every flow takes the path of ``mlops.yaml`` (``config``), relative to the working directory.
Decisions live in ``mlops_core``; this module adds retries, caching, concurrency and events.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from flows import events

log = logging.getLogger(__name__)

RETRIES = 3
LEASE_S = 60
BACKOFF = exponential_backoff(backoff_factor=5)  # 5 s, 10 s, 20 s (jittered)


def settings_for(config: str | Path) -> Any:
    """The settings of a project that exists (a flow never creates its workspace or DB)."""
    from mlops_core.config import load_config
    from mlops_core.store import open_project

    settings = load_config(Path(config))
    open_project(settings.workspace, settings.db_url)
    return settings


def is_transient(_task: Any, _run: Any, state: Any) -> bool:
    """Retry what may pass by itself: an unreachable source or server, a timeout, a locked
    database, MLflow answering 5xx (the registry's :class:`RegistryUnavailable`). Bad data
    and broken preconditions fail at once."""
    import httpx
    import sqlalchemy as sa

    from mlops_core.errors import ProjectMissing

    try:
        state.result()
    except ProjectMissing:
        return False  # a moved or deleted project does not come back by itself
    except (OSError, httpx.TransportError, sa.exc.OperationalError, TimeoutError):
        # SourceError, RegistryUnavailable (MLflow down or answering 5xx), ConnectionError
        # and friends are OSErrors; a RegistryError is an answer, and final
        return True
    except Exception:
        return False
    return False


def training_limit(project: str) -> str:
    return f"mlops-train-{project}"


def ensure_training_limit(project: str) -> str:
    """The project's global concurrency limit of one training (created if missing)."""
    from prefect.client.orchestration import get_client

    name = training_limit(project)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    return name


# tasks ---------------------------------------------------------------------------------------
@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
    task_run_name="ingest-source",
)
def ingest_task(config: str, paths: list[str] | None = None) -> dict[str, Any]:
    """Read the source (or ``paths``) and ingest. A unit is all or nothing and batch ids are
    content hashes, so a retry after a partial read records nothing twice."""
    from mlops_core.data.ingest import ingest

    return ingest(settings_for(config), paths or None).to_dict()


@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
    task_run_name="champion",
)
def champion_task(config: str) -> dict[str, Any]:
    """The champion and the versions awaiting a decision (MLflow)."""
    from mlops_core.registry.registry import Registry

    reg = Registry(settings_for(config))
    versions = reg.versions()
    return {
        "champion": reg.champion(),
        "versions": len(versions),
        "pending": [v.version for v in versions if v.status == "pending_approval"],
    }


@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
    task_run_name="monitor",
)
def monitor_task(config: str, batch_ids: list[str] | None = None) -> dict[str, Any]:
    from mlops_core.monitor.run import monitor

    res = monitor(settings_for(config), batch_ids or None)
    out = res.to_dict()
    d = res.decision
    out["trigger"] = d.trigger if d else ""
    out["since"] = events.since_text(d.since) if d else ""
    return out


def _training_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Same configuration, same labelled batches (by content hash), same window start: the same
    training. Anything new (a batch, a label, a config change) makes a new key."""
    from mlops_core.store import MetadataStore
    from mlops_core.train.pipeline import config_hash

    settings = settings_for(parameters["config"])
    hashes = sorted(
        r.content_sha256
        for r in MetadataStore(settings.db_url).list_batches("accepted")
        if r.has_labels
    )
    digest = hashlib.sha256(
        "\n".join(
            [settings.project, config_hash(settings), parameters.get("since") or "", *hashes]
        ).encode()
    )
    return f"mlops-train-{settings.project}-{digest.hexdigest()[:24]}"


@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_key_fn=_training_cache_key,
    cache_expiration=timedelta(days=7),
    persist_result=True,
    task_run_name="train-{trigger}",
)
def train_task(
    config: str, trigger: str, since: str = "", requested_by: str = ""
) -> dict[str, Any]:
    """Train, gate and register. Registration is the last step, so a retry after a failure
    registers at most one version."""
    from mlops_core.train.pipeline import train_and_register

    when = datetime.fromisoformat(since) if since else None
    return train_and_register(
        settings_for(config), trigger=trigger, since=when, requested_by=requested_by or None
    ).to_dict()


@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
    task_run_name="record-action",
)
def record_action_task(config: str, monitoring_run: str, outcome: dict[str, Any]) -> None:
    from mlops_core.monitor.run import record_action
    from mlops_core.store import MetadataStore

    record_action(MetadataStore(settings_for(config).db_url), monitoring_run, outcome)


@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
    task_run_name="publish-decisions",
)
def publish_task(config: str) -> list[dict[str, Any]]:
    return events.publish_decisions(settings_for(config))


@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
    task_run_name="reconcile-registry",
)
def reconcile_task(config: str) -> dict[str, Any]:
    """Make MLflow's aliases follow the decisions recorded in the metadata DB."""
    from mlops_core.registry.registry import Registry

    reg = Registry(settings_for(config))
    repaired = reg.reconcile()
    return {"champion": reg.champion(), "repaired": repaired}


# flows ---------------------------------------------------------------------------------------
@flow(name="ingest", log_prints=False)
def ingest(config: str = "mlops.yaml", paths: list[str] | None = None) -> dict[str, Any]:
    """Ingest what the source has ready; an event per new batch."""
    logger = get_run_logger()
    report = ingest_task(config, paths)
    project = settings_for(config).project
    for b in report["batches"]:
        if b["status"] not in ("accepted", "quarantined"):
            continue  # duplicates: nothing new happened
        events.emit(
            events.BATCH_ACCEPTED if b["status"] == "accepted" else events.BATCH_QUARANTINED,
            project,
            {
                k: b[k]
                for k in ("id", "rows", "origin", "start_time", "end_time", "has_labels", "reason")
            },
            related=[
                {"prefect.resource.id": f"mlops.batch.{b['id']}", "prefect.resource.role": "batch"}
            ],
        )
    logger.info(
        "%s accepted (%s rows), %s quarantined, %s already ingested",
        report["accepted"],
        report["rows_accepted"],
        report["quarantined"],
        report["duplicate"],
    )
    return report


@flow(name="monitor")
def monitor(
    config: str = "mlops.yaml", batch_ids: list[str] | None = None, request_retrain: bool = True
) -> dict[str, Any] | None:
    """Monitor new batches against the champion. On a retrain decision, emit
    ``mlops.retrain.requested`` (the training deployment's trigger) unless ``request_retrain``
    is false (the caller trains itself)."""
    logger = get_run_logger()
    project = settings_for(config).project
    publish_task(config)
    if champion_task(config)["champion"] is None:
        logger.info("no champion yet: nothing to monitor against")
        return None
    res = monitor_task(config, batch_ids)
    drift = res["drift"]
    if res["status"] == "drift":
        events.emit(
            events.DRIFT_DETECTED,
            project,
            {
                "monitoring_run": res["id"],
                "champion_version": res["champion_version"],
                "drift_share": drift.get("drift_share"),
                "weighted_drift_share": drift.get("weighted_drift_share"),
                "columns": [c["column"] for c in drift.get("columns", []) if c.get("drifted")],
                "batch_ids": res["batch_ids"],
                "report": res.get("report"),
            },
        )
    decision = res.get("decision") or {}
    if decision.get("retrain") and request_retrain:
        events.emit(
            events.RETRAIN_REQUESTED,
            project,
            events.retrain_payload(
                trigger=res["trigger"],
                reasons=decision.get("reasons", []),
                since=res["since"],
                monitoring_run=res["id"],
                requested_by=events.POLICY,
                champion_version=res["champion_version"],
            ),
        )
    logger.info(
        "monitoring run %s: %s; retrain: %s %s",
        res["id"],
        res["status"],
        bool(decision.get("retrain")),
        decision.get("reasons", []),
    )
    return res


@flow(name="train")
def train(
    config: str = "mlops.yaml",
    trigger: str = "schedule",
    since: str = "",
    monitoring_run: str = "",
    requested_by: str = "",
) -> dict[str, Any]:
    """Train, gate and register one version; at most one at a time per project.
    ``since``: ISO time the window starts at (``Decision.since``); ``monitoring_run``: the run
    whose decision asked for it (what was done is recorded there); ``requested_by``: who asked
    (a person's retrain request, or ``policy``), tagged on the version for the four-eyes rule."""
    from prefect.concurrency.sync import concurrency

    logger = get_run_logger()
    project = settings_for(config).project
    limit = ensure_training_limit(project)
    # the slot's lease is renewed while the training runs; a run whose process was killed
    # frees it when the lease lapses (a minute), so the re-run does not wait long
    with concurrency(limit, occupy=1, strict=True, lease_duration=LEASE_S):
        state = train_task(config, trigger or "manual", since, requested_by, return_state=True)
    outcome = state.result()
    if monitoring_run:
        record_action_task(config, monitoring_run, outcome)
    if state.name == "Cached":  # the same training was done before: nothing new to announce
        logger.info(
            "version %s: %s (the cached result of the same training)",
            outcome["version"],
            outcome["status"],
        )
        return outcome
    events.emit(
        events.MODEL_REGISTERED,
        project,
        {
            "version": outcome["version"],
            "status": outcome["status"],
            "trigger": outcome["trigger"],
            "gate_passed": outcome["gate"].get("passed"),
            "gate_reasons": outcome["gate"].get("reasons", []),
            "metrics": outcome["metrics"],
            "since": since,
            "monitoring_run": monitoring_run,
            "requested_by": requested_by,
            "run_id": outcome["run_id"],
        },
    )
    publish_task(config)  # auto-promotion or a gate rejection: their events now
    logger.info(
        "version %s: %s (trigger %s)", outcome["version"], outcome["status"], outcome["trigger"]
    )
    return outcome


@task(
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
    task_run_name="learn",
)
def learn_task(config: str) -> dict[str, Any] | None:
    """Continue the online model on the new labels and register the snapshot; None when
    there is nothing new to learn yet."""
    from mlops_core.train.fit import NothingNewError
    from mlops_core.train.pipeline import train_and_register

    try:
        return train_and_register(settings_for(config), trigger="online", online=True).to_dict()
    except NothingNewError as e:
        get_run_logger().info("%s", e)
        return None


@flow(name="online-update")
def online_update(config: str = "mlops.yaml") -> dict[str, Any] | None:
    """The online model learns the labels that arrived (feedback and labelled batches) and is
    registered as a version: gated, pending approval, run in shadow by serving. Shares the
    training slot, so it never runs beside a training."""
    from prefect.concurrency.sync import concurrency

    project = settings_for(config).project
    with concurrency(ensure_training_limit(project), occupy=1, strict=True, lease_duration=LEASE_S):
        outcome = learn_task(config)
    if outcome is not None:
        events.emit(
            events.MODEL_REGISTERED,
            project,
            {
                "version": outcome["version"],
                "status": outcome["status"],
                "trigger": outcome["trigger"],
                "gate_passed": outcome["gate"].get("passed"),
                "gate_reasons": outcome["gate"].get("reasons", []),
                "metrics": outcome["metrics"],
                "since": "",
                "monitoring_run": "",
                "requested_by": "",
                "run_id": outcome["run_id"],
            },
        )
        publish_task(config)
    return outcome


@task(retries=RETRIES, retry_delay_seconds=BACKOFF)
def reload_serving_task(config: str) -> dict[str, Any] | None:
    """Tell the project's serving API to serve the champion now (it also polls the alias).
    None when no serving runs."""
    from mlops_core.ops.services import notify_serving

    return notify_serving(settings_for(config).workspace)


@flow(name="promote")
def promote(
    config: str = "mlops.yaml", version: str = "", action: str = "approve"
) -> dict[str, Any]:
    """Side effects of an approval or a rollback: make sure MLflow's champion alias follows
    the recorded decision (repairs a crash between the audit record and the alias), then tell
    serving to load it (off its request path; if loading fails the old version keeps serving
    and the failure is reported here and on /model). Idempotent."""
    logger = get_run_logger()
    state = reconcile_task(config)
    if version and state["champion"] != str(version):
        logger.warning(
            "v%s was %s, but the champion is now v%s", version, action, state["champion"]
        )
    served = reload_serving_task(config)
    if served is None:
        logger.info("no serving API runs: nothing to reload")
    elif served.get("error"):
        logger.error("serving did not swap to v%s: %s", state["champion"], served["error"])
    else:
        logger.info("serving answers with v%s", served.get("version"))
    logger.info("champion is v%s (%s of v%s)", state["champion"], action, version)
    return state | {"version": version, "action": action, "serving": served}


@flow(name="publish-events")
def publish_events(config: str = "mlops.yaml") -> list[dict[str, Any]]:
    """Approvals, rejections, rollbacks and retrain requests recorded since the last call →
    events."""
    return publish_task(config)


@flow(name="continuous-training")
def continuous_training(config: str = "mlops.yaml", train_now: bool = True) -> dict[str, Any]:
    """One pass of the loop in one run: ingest → monitor → train if the policy says so (or a
    first model when there is none)."""
    report = ingest(config)
    state = champion_task(config)
    result: dict[str, Any] = {
        "ingest": {k: v for k, v in report.items() if k != "batches"},
        "monitor": None,
        "training": None,
    }
    if state["champion"] is None:
        if train_now and not state["versions"]:
            result["training"] = train(config, trigger="initial")
        return result
    res = monitor(config, request_retrain=not train_now)
    result["monitor"] = res
    decision = (res or {}).get("decision") or {}
    if train_now and decision.get("retrain"):
        result["training"] = train(
            config,
            trigger=res["trigger"],
            since=res["since"],
            monitoring_run=res["id"],
            requested_by=events.POLICY,
        )
    return result
