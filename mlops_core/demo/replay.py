"""The demo stream replayed through the real deployments at an accelerated pace (``make up``).

A year of weekly files waits in ``incoming/``. The first weeks are moved into the landing folder
(the project's source), ingested by the ``ingest`` deployment and trained on by the ``train``
deployment; the demo approves that first version so monitoring has a champion (the approval
is audited like any other, by ``demo``). Then, a few weeks at a time, files move into the
landing folder and the ``ingest`` and ``monitor`` deployments run, as their cron schedules would
run them, only sooner. When the policy asks for a retrain, the ``monitor`` flow emits
``mlops.retrain.requested`` and the ``train`` deployment runs because of that event; the new
version waits for a person's approval.

Prefect is reached through its HTTP API (:mod:`mlops_core.ops.orchestration`); what happened is read
back from the metadata DB and the registry, the same records the CLI and the dashboard show.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_core.config import Settings
from mlops_core.monitor.run import list_decisions, list_runs
from mlops_core.ops.orchestration import (
    FINAL,
    FlowRunError,
    deployment_id,
    recent_runs,
    start_run,
    wait_run,
)
from mlops_core.store import MetadataStore, utcnow

log = logging.getLogger(__name__)

DEMO_ACTOR = "demo"


@dataclass
class Tick:
    """One step of the replay: the files that landed and what the deployments made of them."""

    number: int
    files: list[str]
    accepted: int = 0
    rows: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)  # origin, reason
    nothing_new: int = 0  # files that held no new batch (sent twice)
    monitoring: dict[str, Any] | None = None  # status, drift share, columns, decision
    training_run: str | None = None  # the train run the retrain event started
    serving: dict[str, Any] | None = None  # what the serving API answered (serve_files)
    online: dict[str, Any] | None = None  # the online update: version, status, rows learnt

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReplayResult:
    ticks: list[Tick]
    champion: str | None
    pending: list[dict[str, Any]]  # versions awaiting approval: version, trigger, reasons
    training_runs: list[dict[str, Any]]  # the event-started train runs: name, state
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "ticks": [t.to_dict() for t in self.ticks],
            "champion": self.champion,
            "pending": self.pending,
            "training_runs": self.training_runs,
            "seconds": round(self.seconds, 1),
        }


def incoming_files(incoming: Path) -> list[Path]:
    """The files still to land, oldest first (their names start with the week's date)."""
    return sorted(p for p in incoming.iterdir() if p.is_file()) if incoming.is_dir() else []


def land(files: list[Path], landing: Path) -> list[str]:
    """Move ``files`` into the landing folder, the way an upstream system drops them."""
    landing.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.move(str(f), landing / f.name)
    return [f.name for f in files]


def serve_files(
    url: str,
    files: list[Path],
    *,
    id_column: str | None,
    target: str | None,
    chunk: int = 1000,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Send the applications in ``files`` through the serving API (``POST /predict``, without
    the target) and, where a file holds them, their labels (``POST /feedback``, by the id
    column): what a client of the served model does. A file that cannot be read is skipped,
    a request that is refused (422: the file broke the schema) is counted."""
    import httpx
    import pandas as pd

    from mlops_core.serve.app import json_records

    out: dict[str, Any] = {
        "rows": 0,
        "refused": 0,
        "labels": 0,
        "unreadable": 0,
        "versions": [],
        "errors": [],
    }
    with httpx.Client(base_url=url, timeout=timeout) as client:
        client.post("/reload")  # a champion approved a moment ago is served from now on
        for path in files:
            try:
                df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            except (OSError, ValueError, UnicodeDecodeError):
                out["unreadable"] += 1
                continue
            labels = df[target] if target and target in df.columns else None
            features = df.drop(columns=[target], errors="ignore")
            for start in range(0, len(df), chunk):
                part = features.iloc[start : start + chunk]
                r = client.post("/predict", json=json_records(part))
                if r.status_code != 200:
                    out["refused"] += 1
                    out["errors"].append(
                        f"{path.name}: {r.status_code} {r.json().get('detail', '')}"[:300]
                    )
                    continue
                body = r.json()
                out["rows"] += len(body["predictions"])
                if body["version"] not in out["versions"]:
                    out["versions"].append(body["version"])
                if labels is None:
                    continue
                got = labels.iloc[start : start + chunk]
                fb = [
                    {"id": p["id"], "label": v.item() if hasattr(v, "item") else v}
                    for p, v in zip(body["predictions"], got, strict=True)
                    if pd.notna(v)
                ]
                if fb and client.post("/feedback", json=fb).status_code == 202:
                    out["labels"] += len(fb)
    return out


def watch_swap(
    url: str, record: dict[str, Any], version: str, timeout_s: float = 90.0
) -> dict[str, Any]:
    """Ask serving for one prediction after another until ``version`` answers: how long the
    swap took, how many requests were answered meanwhile, by which versions, and how many
    failed (the promise: none)."""
    import httpx

    t0 = time.perf_counter()
    answered, failed = 0, 0
    seen: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.perf_counter() - t0 < timeout_s:
            try:
                r = client.post("/predict", json=record)
            except httpx.HTTPError:
                failed += 1
                continue
            if r.status_code != 200:
                failed += 1
                continue
            answered += 1
            got = r.json()["version"]
            if not seen or seen[-1] != got:
                seen.append(got)
            if got == version:
                break
            time.sleep(0.05)
    return {
        "to": version,
        "seconds": round(time.perf_counter() - t0, 1),
        "swapped": bool(seen) and seen[-1] == version,
        "answered": answered,
        "failed": failed,
        "versions": seen,
    }


def _online_since(settings: Settings, since: datetime) -> dict[str, Any] | None:
    from mlops_core.registry.registry import Registry

    newest = [v for v in Registry(settings).online_versions() if v.created >= since]
    if not newest:
        return None
    v = newest[-1]
    return {
        "version": v.version,
        "status": v.status,
        "rows_learnt": v.tags.get("online_rows_learnt"),
        "metrics": v.metrics,
        "base": v.tags.get("online_base"),
    }


def _ingested_since(meta: MetadataStore, since: datetime, tick: Tick) -> None:
    new = [b for b in meta.list_batches() if b.created_at >= since]
    acc = [b for b in new if b.status == "accepted"]
    tick.accepted, tick.rows = len(acc), sum(b.rows for b in acc)
    tick.quarantined = [
        {"origin": Path(b.origin).name, "reason": b.reason}
        for b in new
        if b.status == "quarantined"
    ]
    origins = {Path(b.origin).name for b in new}
    tick.nothing_new = sum(1 for f in tick.files if f not in origins)


def _monitoring_since(meta: MetadataStore, project: str, since: datetime) -> dict[str, Any] | None:
    runs = list_runs(meta, project, 1)
    if not runs or datetime.fromisoformat(str(runs[0]["at"])) < since:  # naive UTC, stored
        return None
    run = runs[0]
    decided = list_decisions(meta, project, 1)
    decision = decided[0] if decided and decided[0]["monitoring_run"] == run["id"] else None
    drift = run.get("drift") or {}
    return {
        "id": run["id"],
        "status": run["status"],
        "rows": run.get("rows"),
        "served_rows": run.get("served_rows", 0),
        "drift_share": drift.get("drift_share"),
        "weighted_drift_share": drift.get("weighted_drift_share"),
        "drifted": [c["column"] for c in drift.get("columns", []) if c.get("drifted")],
        "detectors": [d["name"] for d in run.get("detectors", []) if d.get("fired")],
        "retrain": bool(decision and decision["retrain"]),
        "reasons": decision["reasons"] if decision else [],
        "held_back": decision["held_back"] if decision else [],
        "nearest": decision["nearest"] if decision else [],
        "pending_since": decision["pending_since"] if decision else None,
    }


def _event_runs(api: str, train_dep: str, since: datetime) -> list[dict[str, Any]]:
    """Train runs started by an event (not the weekly schedule, not by hand) since ``since``."""
    return [
        r
        for r in recent_runs(api, deployment=train_dep, since=since, limit=50)
        if not r["auto_scheduled"] and r["parameters"].get("trigger") != "initial"
    ]


@dataclass(frozen=True)
class _Deployments:
    """The project's deployments on the Prefect API at ``api``."""

    api: str
    project: str
    wait_s: float

    def start(self, flow: str, parameters: dict[str, Any] | None = None) -> str:
        return start_run(self.api, flow, self.project, parameters)

    def run(self, flow: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a run of deployment ``flow`` and wait until it completes."""
        return wait_run(self.api, self.start(flow, parameters), self.wait_s)


def replay(
    settings: Settings,
    api: str,
    incoming: Path,
    landing: Path,
    *,
    initial: int = 16,
    per_tick: int = 6,
    approve_first: Callable[[str], Any] | None = None,
    on_tick: Callable[[Tick], None] | None = None,
    say: Callable[[str], None] = log.info,
    wait_s: float = 900.0,
    serving_url: str | None = None,
) -> ReplayResult:
    """Replay the files in ``incoming`` through the project's deployments on ``api``.

    ``initial`` files land first and train the first model when there is no champion;
    ``approve_first(version)`` makes it champion (the caller's audited approval). Then
    ``per_tick`` files land per step: with ``serving_url``, their applications go through the
    serving API and their labels through its feedback endpoint; then ingest and monitor (and,
    with ``online.enabled``, the online update). Returns what happened once the training runs
    the events started have ended."""
    from mlops_core.registry.registry import Registry

    t0 = time.perf_counter()
    started = datetime.now(UTC)
    meta = MetadataStore(settings.db_url)
    reg = Registry(settings, meta)
    deployments = _Deployments(api, settings.project, wait_s)
    train_dep = deployment_id(api, "train", settings.project)
    ticks: list[Tick] = []
    if reg.champion() is None:
        ticks.append(_land_first(deployments, meta, incoming, landing, initial, say))
        if on_tick:
            on_tick(ticks[-1])
        _first_champion(deployments, reg, approve_first, say)
    number = len(ticks)
    while batch := incoming_files(incoming)[:per_tick]:
        tick = Tick(number, land(batch, landing))
        number += 1
        _step(settings, deployments, meta, train_dep, tick, landing, serving_url, say)
        if on_tick:
            on_tick(tick)
        ticks.append(tick)
    return _finish(deployments, reg, train_dep, ticks, started, t0, say)


def _land_first(
    deployments: _Deployments,
    meta: MetadataStore,
    incoming: Path,
    landing: Path,
    initial: int,
    say: Callable[[str], None],
) -> Tick:
    """Step 0: the first ``initial`` files land and are ingested."""
    tick = Tick(0, land(incoming_files(incoming)[:initial], landing))
    since = utcnow()
    say(f"{len(tick.files)} weekly files land; the ingest deployment runs")
    deployments.run("ingest")
    _ingested_since(meta, since, tick)
    return tick


def _first_champion(
    deployments: _Deployments,
    reg: Any,
    approve_first: Callable[[str], Any] | None,
    say: Callable[[str], None],
) -> None:
    """Train a first model (unless one awaits approval already) and have it approved."""
    if not any(v.status == "pending_approval" for v in reg.versions()):
        say("the train deployment trains a first model (search, hold-out, gate)")
        deployments.run("train", {"trigger": "initial"})
    pending = [v for v in reg.versions() if v.status == "pending_approval"]
    if pending and approve_first is not None:
        approve_first(pending[-1].version)
        say(
            f"v{pending[-1].version} approved by '{DEMO_ACTOR}' as the first champion; "
            "the publish-events deployment sends mlops.model.approved and the promote "
            "deployment runs on it"
        )
        deployments.start("publish-events")


def _step(
    settings: Settings,
    deployments: _Deployments,
    meta: MetadataStore,
    train_dep: str,
    tick: Tick,
    landing: Path,
    serving_url: str | None,
    say: Callable[[str], None],
) -> None:
    """One step on the files that just landed: served (with ``serving_url``), ingested,
    monitored, learnt online; and the train run a retrain event started, if any."""
    since = datetime.now(UTC)
    files = tick.files
    names = files[0] if len(files) == 1 else f"{files[0]} … {files[-1]}"
    say(f"{len(files)} weekly file(s) land ({names}); the ingest and monitor deployments run")
    if serving_url:
        tick.serving = serve_files(
            serving_url,
            [landing / f for f in files],
            id_column=settings.data.id_column,
            target=settings.data.target,
        )
        time.sleep(settings.serving.log_flush_seconds + 0.5)  # the log is written
    naive = since.replace(tzinfo=None)  # naive UTC, as stored
    deployments.run("ingest")
    _ingested_since(meta, naive, tick)
    deployments.run("monitor")
    tick.monitoring = _monitoring_since(meta, settings.project, naive)
    if settings.online.enabled:
        try:
            deployments.run("online-update")
        except FlowRunError as e:
            log.warning("%s", e)
        tick.online = _online_since(settings, naive)
    if tick.monitoring and tick.monitoring["retrain"]:
        tick.training_run = _training_started(deployments.api, train_dep, since)


def _training_started(api: str, train_dep: str, since: datetime) -> str | None:
    """The name of the train run the retrain event started (given a minute to appear)."""
    name = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and name is None:
        runs = _event_runs(api, train_dep, since)
        name = runs[0]["name"] if runs else None
        time.sleep(1.0)
    return name


def _finish(
    deployments: _Deployments,
    reg: Any,
    train_dep: str,
    ticks: list[Tick],
    started: datetime,
    t0: float,
    say: Callable[[str], None],
) -> ReplayResult:
    """Wait for the training runs the events started, then what the replay left."""
    api = deployments.api
    runs = _event_runs(api, train_dep, started)
    open_runs = [r for r in runs if r["state_type"] not in FINAL]
    if open_runs:
        say(f"waiting for {len(open_runs)} training run(s) started by mlops.retrain.requested")
    for r in open_runs:
        try:
            wait_run(api, r["id"], deployments.wait_s)
        except FlowRunError as e:  # a failed training is reported below, not fatal here
            log.warning("%s", e)
    runs = _event_runs(api, train_dep, started)
    awaiting = [
        {"version": v.version, "trigger": v.trigger, "metrics": v.metrics}
        for v in reg.versions()
        if v.status == "pending_approval"
    ]
    return ReplayResult(
        ticks,
        reg.champion(),
        awaiting,
        [
            {"name": r["name"], "state": r["state"], "trigger": r["parameters"].get("trigger")}
            for r in runs
        ],
        time.perf_counter() - t0,
    )


# the demo's approvals, by 'demo' and audited -------------------------------------------------
FIRST_APPROVAL = (
    "the demo approves its first model so that monitoring has a champion to compare new data with"
)
SWAP_APPROVAL = (
    "the demo approves the retrain its policy asked for, to show serving's hot swap; in your "
    "project a person decides"
)


def approve_as_demo(settings: Settings, version: str, comment: str) -> Any:
    """Approve ``version`` as the demo's approver (``demo``), through the audited actions."""
    from mlops_core.ops.actions import approve
    from mlops_core.ops.auth import Principal

    demo = Principal(name=DEMO_ACTOR, role="approver", via="cli")
    return approve(settings, demo, version, comment=comment)


def swap_to_retrain(
    settings: Settings,
    res: ReplayResult,
    landing: Path,
    *,
    prefect_api: str,
    serving_url: str | None,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any] | None:
    """The end of the demo's loop: approve the newest retrain the policy asked for (audited,
    by 'demo'), send the approval as an event (the promote flow tells serving to reload) and
    watch serving answer with it, without a failed request (:func:`watch_swap`). None when no
    retrain passed."""
    from mlops_core.serve.app import json_records

    retrained = [p for p in res.pending if p["trigger"] != "online"]
    if not retrained or not serving_url:
        return None
    version = retrained[-1]["version"]
    files = sorted(p for p in landing.iterdir() if p.suffix == ".parquet")
    if not files:
        return None
    row = first_row(files[-1], settings.data.target)
    if approve_as_demo(settings, version, SWAP_APPROVAL).outcome != "applied":
        return None
    start_run(prefect_api, "publish-events", settings.project)
    say(
        f"\nv{version} approved by '{DEMO_ACTOR}'; mlops.model.approved → the promote "
        "deployment tells serving to reload..."
    )
    return watch_swap(serving_url, json_records(row)[0], version)


def first_row(path: Path, target: str | None) -> Any:
    """The first record of a data file, without its target: a request to serving."""
    import pandas as pd

    return pd.read_parquet(path).drop(columns=[target] if target else [], errors="ignore").head(1)
