"""Orchestration end to end, with a real Prefect server and process worker started by `mlops up`
(state under the test's workspace) and the session's MLflow server:

batches with a covariate shift land in the source folder and the ingest deployment takes them
in (``mlops.batch.accepted``) → the monitor deployment's run emits
``mlops.retrain.requested`` → the training deployment runs because of that event → a pending
version exists in MLflow with its trigger reasons → approve (CLI) → ``mlops publish`` sends
``mlops.model.approved`` → the promote deployment runs for that version. `mlops status` and
`mlops down` (worker before server) are checked on the way. The serving API `mlops up` started
answers applications and takes their labels; the monitoring run measures that log beside the
batches, and serving swaps to the promoted version.

Crash: the worker and its flow run are killed during a training; the heartbeat automation marks
the run Crashed, the champion is unchanged, no version was registered, and a re-run registers
exactly one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from registry_helpers import client_records, demo_settings, write_config

from mlops_core.config import Settings
from mlops_core.data.ingest import ingest
from mlops_core.demo.stream import TARGET, TIME, generate_stream
from mlops_core.monitor.run import list_decisions, list_runs
from mlops_core.ops.orchestration import deployments_status
from mlops_core.ops.services import (
    CRASH_AUTOMATION,
    PREFECT_SERVER,
    PREFECT_WORKER,
    SERVING,
    ServiceInfo,
    ensure_work_pool,
    prefect_request,
    read_service,
    start_prefect_worker,
)
from mlops_core.registry.registry import Registry
from mlops_core.store import MetadataStore
from mlops_core.train.pipeline import train_and_register

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
WEEK = pd.Timedelta(weeks=1)
MLOPS = str(Path(sys.executable).parent / "mlops")


@dataclass
class Stack:
    settings: Settings
    config: Path
    api: str
    env: dict[str, str]
    up: dict[str, Any]


def _mlops(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MLOPS, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


@pytest.fixture(scope="module")
def stack(mlflow_server: ServiceInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A small demo project with `mlops up` run on it; `mlops down` afterwards, even on a
    failure."""
    root = tmp_path_factory.mktemp("orchestration")
    settings = demo_settings(
        root,
        mlflow_server.url,
        "orch-demo",
        data={"source": {"kind": "folder", "path": str(root / "landing")}},
        model={"search": {"trials": 1, "timeout_s": 30}},
        # any challenger passes: the promotion and serving's swap are what is exercised here
        gate={"smoke_test": False, "min_improvement": -1.0, "max_slice_regression": None},
        monitoring={"min_rows": 50, "source": "both"},
        serving={"poll_seconds": 1},
        retraining={
            "cooldown": "1s",
            "min_new_labels": 0,
            "drift_share": 0.2,
            "drift_persists": False,
            "max_model_age": None,
        },
    )
    config = write_config(settings, root / "mlops.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_UI_ENABLED": "false"}
    t0 = time.perf_counter()
    res = _mlops("up", "--config", str(config), "--json", env=env)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        up = json.loads(res.stdout) | {"wall_s": time.perf_counter() - t0}
        yield Stack(settings, config, up["services"]["prefect_api"], env, up)
    finally:
        _mlops("down", "--config", str(config), env=env, timeout=120)


# the Prefect API, read with httpx -----------------------------------------------------------
def _call(method: str, url: str, **kw: Any) -> httpx.Response:
    """One API call (a 503, the server's SQLite busy, is retried); an error status raises."""
    return prefect_request(method, url, attempts=8, **kw).raise_for_status()


def _deployment_id(api: str, flow: str, name: str) -> str:
    return str(_call("GET", f"{api}/deployments/name/{flow}/{name}").json()["id"])


def _runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    return list(
        _call(
            "POST",
            f"{api}/flow_runs/filter",
            json={"deployments": {"id": {"any_": [deployment_id]}}, "sort": "START_TIME_DESC"},
        ).json()
    )


def _wait_for_run(
    api: str, deployment_id: str, *, timeout_s: float, after: set[str], where: Any = None
) -> dict[str, Any]:
    """The first new run of a deployment (not in ``after``) that reaches a final state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in _runs(api, deployment_id):
            if run["id"] in after or (where and not where(run)):
                continue
            if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
        time.sleep(1)
    seen = [(r["name"], r["state_type"]) for r in _runs(api, deployment_id)]
    raise AssertionError(
        f"no run of deployment {deployment_id} finished in {timeout_s} s; runs: {seen}"
    )


def _start_run(api: str, deployment_id: str, parameters: dict[str, Any] | None = None) -> str:
    return str(
        _call(
            "POST",
            f"{api}/deployments/{deployment_id}/create_flow_run",
            json={"parameters": parameters or {}},
        ).json()["id"]
    )


def _weeks(frame: pd.DataFrame, first: int, stop: int) -> pd.DataFrame:
    t0 = frame[TIME].min().normalize()
    return frame[(frame[TIME] >= t0 + first * WEEK) & (frame[TIME] < t0 + stop * WEEK)]


# tests ----------------------------------------------------------------------------------------
def test_up_starts_the_services_and_creates_the_deployments(stack: Stack) -> None:
    ws = stack.settings.workspace
    server, worker = read_service(ws, PREFECT_SERVER), read_service(ws, PREFECT_WORKER)
    assert server and worker
    assert stack.api == f"{server.url}/api" and server.url.startswith("http://127.0.0.1:")
    assert ensure_work_pool(stack.api) is False  # created by `mlops up`: idempotent
    assert (ws / "prefect" / "prefect.db").exists()  # Prefect's SQLite under the workspace
    automations = _call("POST", f"{stack.api}/automations/filter", json={}).json()
    assert CRASH_AUTOMATION in {a["name"] for a in automations}
    res = _mlops("status", "--config", str(stack.config), "--json", env=stack.env)
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    health = {s["name"]: s["healthy"] for s in status["services"]}
    assert health[PREFECT_SERVER] and health[PREFECT_WORKER]
    assert health[SERVING]  # up before any champion: it answers /health, not yet /predict
    assert read_service(ws, SERVING).url == stack.up["services"]["serving"]
    deps = {d["name"]: d for d in status["deployments"]}
    assert set(deps) == {
        f"{f}/orch-demo"
        for f in ("ingest", "monitor", "train", "promote", "publish-events", "continuous-training")
    }
    assert deps["train/orch-demo"]["schedules"] == ["cron 0 3 * * 1"]
    assert deps["train/orch-demo"]["triggers"] == ["mlops.retrain.requested"]
    assert deps["promote/orch-demo"]["triggers"] == ["mlops.model.approved"]
    # the scheduler makes the next runs on its own loop (every 60 s by default): wait for it
    deadline = time.monotonic() + 150
    while not deps["monitor/orch-demo"]["next_runs"] and time.monotonic() < deadline:
        time.sleep(2)
        deps = {d["name"]: d for d in deployments_status(stack.api, "orch-demo")}
    assert deps["monitor/orch-demo"]["next_runs"]
    print(f"mlops up: {stack.up['wall_s']:.1f} s")


def test_drift_requests_a_retrain_the_event_trains_and_approval_promotes(stack: Stack) -> None:
    s, api = stack.settings, stack.api
    frame = generate_stream(8_000, days=364, seed=7).frame  # ~150 rows a week
    landing = Path(s.data.source.path)  # type: ignore[union-attr]
    landing.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _weeks(frame, 0, 10).to_parquet(landing / "early.parquet", index=False)
    early = ingest(s).count("accepted")  # the first weeks, straight through mlops_core
    assert early >= 9
    first = train_and_register(s, trigger="initial")
    reg = Registry(s)
    assert reg.approve(first.version, by="test", comment="first champion").ok
    t_champion = time.perf_counter() - t0
    serving = stack.up["services"]["serving"]
    _wait(
        lambda: httpx.get(f"{serving}/health", timeout=5).json()["version"] == first.version,
        60,
        "serving to load the first champion",
    )

    # applications are answered by serving, their outcomes come back through /feedback
    served = _weeks(frame, 30, 32)
    answer = httpx.post(f"{serving}/predict", json=client_records(served), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == first.version
    fed = httpx.post(
        f"{serving}/feedback",
        timeout=60,
        json=[
            {"id": p["id"], "label": int(y)}
            for p, y in zip(answer.json()["predictions"], served[TARGET], strict=True)
        ],
    )
    assert fed.status_code == 202, fed.text

    # the covariate shift (weeks 30-40) lands, and the ingest deployment takes it in
    _weeks(frame, 30, 40).to_parquet(landing / "shifted.parquet", index=False)
    ingest_id = _deployment_id(api, "ingest", s.project)
    run_id = _start_run(api, ingest_id)
    ing = _wait_for_run(
        api, ingest_id, timeout_s=180, after=set(), where=lambda r: r["id"] == run_id
    )
    assert ing["state_type"] == "COMPLETED", ing["state"]
    shifted = len(MetadataStore(s.db_url).list_batches("accepted")) - early
    assert shifted >= 9
    train_id = _deployment_id(api, "train", s.project)
    before_train = {r["id"] for r in _runs(api, train_id)}
    monitor_id = _deployment_id(api, "monitor", s.project)
    t1 = time.perf_counter()
    run_id = _start_run(api, monitor_id)
    mon = _wait_for_run(
        api, monitor_id, timeout_s=180, after=set(), where=lambda r: r["id"] == run_id
    )
    assert mon["state_type"] == "COMPLETED", mon["state"]
    t_monitor = time.perf_counter() - t1

    # the decision in the metadata DB asked for a retrain
    (decision,) = list_decisions(MetadataStore(s.db_url), s.project, 1)
    assert decision["retrain"], decision
    # ... measured on the new batches and on what serving answered (monitoring.source: both)
    (measured,) = list_runs(MetadataStore(s.db_url), s.project, 1)
    assert measured["served_rows"] == len(served)

    # ... the automation starts the training deployment with the event's parameters
    run = _wait_for_run(api, train_id, timeout_s=300, after=before_train)
    t_train = time.perf_counter() - t1
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["monitoring_run"] == decision["monitoring_run"]
    assert run["parameters"]["trigger"] and run["parameters"]["trigger"] != "schedule"
    versions = {v.version: v for v in Registry(s).versions()}
    new = [v for v in versions.values() if v.version != first.version]
    assert len(new) == 1, versions
    pending = new[0]
    assert pending.status in ("pending_approval", "rejected")  # the gate decides
    assert pending.trigger == run["parameters"]["trigger"]
    reasons = [r.split(":")[0] for r in decision["reasons"]]
    assert pending.trigger.split(",") == reasons
    (acted,) = list_decisions(MetadataStore(s.db_url), s.project, 1)
    assert acted["acted"]["version"] == pending.version  # recorded against the decision
    limit = _call("GET", f"{api}/v2/concurrency_limits/mlops-train-{s.project}")
    assert limit.json()["limit"] == 1, limit.text

    # the same training again (same batches, config and window start): the cached result,
    # no second version
    t3 = time.perf_counter()
    again = _start_run(api, train_id, {"trigger": "manual", "since": run["parameters"]["since"]})
    rerun = _wait_for_run(
        api, train_id, timeout_s=180, after=set(), where=lambda r: r["id"] == again
    )
    t_cached = time.perf_counter() - t3
    assert rerun["state_type"] == "COMPLETED", rerun["state"]
    assert len(Registry(s).versions()) == len(versions)
    tasks = _call(
        "POST", f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [again]}}}
    ).json()
    assert "Cached" in {t["state_name"] for t in tasks}, [
        (t["name"], t["state_name"]) for t in tasks
    ]
    registered = _call(
        "POST",
        f"{api}/events/filter",
        json={
            "filter": {
                "event": {"name": ["mlops.model.registered"]},
                "resource": {"id": [f"mlops.project.{s.project}"]},
            },
            "limit": 50,
        },
    ).json()["events"]
    assert [e["payload"]["version"] for e in registered] == [pending.version]  # not twice

    # approval (outside Prefect) → mlops publish → mlops.model.approved → promote deployment
    if pending.status != "pending_approval":
        pytest.skip(f"the gate rejected v{pending.version}; promotion not exercised")
    promote_id = _deployment_id(api, "promote", s.project)
    before_promote = {r["id"] for r in _runs(api, promote_id)}
    res = _mlops(
        "approve",
        pending.version,
        "--by",
        "ana",
        "--comment",
        "better on recent data",
        "--config",
        str(stack.config),
        env=stack.env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    t2 = time.perf_counter()
    res = _mlops("publish", "--config", str(stack.config), "--json", env=stack.env)
    assert res.returncode == 0, res.stdout + res.stderr
    promoted = _wait_for_run(
        api,
        promote_id,
        timeout_s=180,
        after=before_promote,
        where=lambda r: r["parameters"].get("version") == pending.version,
    )
    t_promote = time.perf_counter() - t2
    assert promoted["state_type"] == "COMPLETED", promoted["state"]
    assert promoted["parameters"]["action"] == "approve"
    assert Registry(s).champion() == pending.version
    # serving swapped to the new champion (told by the promote flow, or by its own poll)
    _wait(
        lambda: httpx.get(f"{serving}/health", timeout=5).json()["version"] == pending.version,
        60,
        "serving to swap to the new champion",
    )
    after = httpx.post(f"{serving}/predict", json=client_records(served.head(3)), timeout=60)
    assert after.json()["version"] == pending.version

    # every event, with the project as its resource
    got = _call(
        "POST",
        f"{api}/events/filter",
        json={
            "filter": {
                "event": {"prefix": ["mlops."]},
                "resource": {"id": [f"mlops.project.{s.project}"]},
            },
            "limit": 50,
        },
    )
    names = [e["event"] for e in got.json()["events"]]
    assert names.count("mlops.batch.accepted") == shifted, names  # not the early ones
    for name in (
        "mlops.drift.detected",
        "mlops.retrain.requested",
        "mlops.model.registered",
        "mlops.model.approved",
    ):
        assert name in names, names
    (requested,) = [e for e in got.json()["events"] if e["event"] == "mlops.retrain.requested"]
    assert requested["payload"]["reasons"] == decision["reasons"]
    print(
        f"champion {t_champion:.1f} s; monitor run {t_monitor:.1f} s; event → trained "
        f"{t_train:.1f} s after the monitor run started; cached re-run {t_cached:.1f} s; "
        f"approve → promoted {t_promote:.1f} s"
    )


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _wait(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_a_worker_killed_during_training_crashes_the_run_and_a_rerun_registers_once(
    stack: Stack,
) -> None:
    s, api, ws = stack.settings, stack.api, stack.settings.workspace
    frame = generate_stream(8_000, days=364, seed=7).frame
    landing = Path(s.data.source.path)  # type: ignore[union-attr]
    landing.mkdir(parents=True, exist_ok=True)
    _weeks(frame, 40, 42).to_parquet(landing / "later.parquet", index=False)
    assert ingest(s).count("accepted") > 0  # new data: a new training, not the cached one
    reg = Registry(s)
    versions, champion = len(reg.versions()), reg.champion()
    train_id = _deployment_id(api, "train", s.project)

    run_id = _start_run(api, train_id, {"trigger": "crash-test"})

    def training() -> bool:
        tasks = _call(
            "POST", f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}
        ).json()
        return any(t["name"].startswith("train-") and t["state_type"] == "RUNNING" for t in tasks)

    _wait(training, 180, "the training task to run")
    worker = read_service(ws, PREFECT_WORKER)
    assert worker is not None
    t0 = time.perf_counter()
    for pid in [worker.pid, *_descendants(worker.pid)]:  # the machine dies: worker and run
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def crashed() -> dict[str, Any] | None:
        run = _call("GET", f"{api}/flow_runs/{run_id}").json()
        assert run["state_type"] in ("RUNNING", "CRASHED"), run["state"]
        return run if run["state_type"] == "CRASHED" else None

    run = _wait(crashed, 240, "the automation to mark the run crashed")
    t_crashed = time.perf_counter() - t0
    assert "heartbeat" in (run["state"]["message"] or "")
    reg = Registry(s)
    assert len(reg.versions()) == versions  # no half version
    assert reg.champion() == champion

    start_prefect_worker(ws, api, env={"PREFECT_WORKER_QUERY_SECONDS": "2"})
    t1 = time.perf_counter()
    again = _start_run(api, train_id, {"trigger": "crash-test"})
    rerun = _wait_for_run(
        api, train_id, timeout_s=300, after=set(), where=lambda r: r["id"] == again
    )
    assert rerun["state_type"] == "COMPLETED", rerun["state"]
    assert len(Registry(s).versions()) == versions + 1  # exactly one
    assert Registry(s).champion() == champion
    print(f"killed → crashed {t_crashed:.0f} s; re-run {time.perf_counter() - t1:.0f} s")


def test_continuous_training_runs_one_pass_of_the_loop(stack: Stack) -> None:
    """Ingest (nothing new), monitor without an event, train in the same run if the policy
    says so: a decision is recorded, and acted on when it asks for a retrain."""
    s, api = stack.settings, stack.api
    meta = MetadataStore(s.db_url)
    decided = len(list_decisions(meta, s.project, 100))
    versions = len(Registry(s).versions())
    ct_id = _deployment_id(api, "continuous-training", s.project)
    rid = _start_run(api, ct_id)
    run = _wait_for_run(api, ct_id, timeout_s=300, after=set(), where=lambda r: r["id"] == rid)
    assert run["state_type"] == "COMPLETED", run["state"]
    latest = list_decisions(meta, s.project, 100)
    assert len(latest) == decided + 1
    trained = len(Registry(s).versions()) - versions
    assert trained == (1 if latest[0]["retrain"] else 0)
    if latest[0]["retrain"]:
        assert latest[0]["acted"]["version"]


def test_down_stops_the_worker_before_the_server(stack: Stack) -> None:
    ws = stack.settings.workspace
    res = _mlops("down", "--config", str(stack.config), env=stack.env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "prefect-worker, prefect-server" in res.stdout
    assert read_service(ws, PREFECT_WORKER) is None and read_service(ws, PREFECT_SERVER) is None
