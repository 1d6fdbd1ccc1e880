"""The project's Prefect server seen through its HTTP API (httpx; no Prefect import): the
deployments and their next runs, recent flow runs, starting a deployment's run and waiting
for it. Used by ``mlops status``, the dashboard's Pipeline page and the demo replay."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx

from mlops_core.errors import MlopsError
from mlops_core.ops.services import prefect_request

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class FlowRunError(MlopsError, RuntimeError):
    """A flow run ended in a state other than Completed, or did not end in time."""


def _when(iso: str | None) -> str:
    """An API timestamp as ``YYYY-MM-DD HH:MM UTC``."""
    return f"{iso[:10]} {iso[11:16]} UTC" if iso else ""


def parse_time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _call(http: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    res = prefect_request(method, path, client=http, **({"json": body} if body is not None else {}))
    return res.raise_for_status().json()


def _client(api_url: str, timeout: float) -> httpx.Client:
    return httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout)


def deployments_status(api_url: str, project: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The project's deployments on the server (by name), with their schedules, triggers, next
    scheduled runs and last run."""
    with _client(api_url, timeout) as http:
        deps = _call(
            http, "POST", "/deployments/filter", {"deployments": {"name": {"any_": [project]}}}
        )
        if not deps:
            return []
        flows = {
            f["id"]: f["name"]
            for f in _call(
                http,
                "POST",
                "/flows/filter",
                {"flows": {"id": {"any_": list({d["flow_id"] for d in deps})}}},
            )
        }
        automations = _call(http, "POST", "/automations/filter", {})
        return [
            _deployment_status(http, d, flows, automations)
            for d in sorted(deps, key=lambda d: flows.get(d["flow_id"], ""))
        ]


def _deployment_status(
    http: httpx.Client, d: dict[str, Any], flows: dict[str, str], automations: list[Any]
) -> dict[str, Any]:
    """One deployment: its schedules, the triggers of the automations that run it, its next
    three scheduled runs and its last run."""
    runs = _call(
        http,
        "POST",
        "/flow_runs/filter",
        {
            "deployments": {"id": {"any_": [d["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 3,
        },
    )
    last = _call(
        http,
        "POST",
        "/flow_runs/filter",
        {
            "deployments": {"id": {"any_": [d["id"]]}},
            "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED"]}}},
            "sort": "START_TIME_DESC",
            "limit": 1,
        },
    )
    trig = [
        ", ".join(a.get("trigger", {}).get("expect") or [])
        for a in automations
        if any(act.get("deployment_id") == d["id"] for act in a.get("actions", []))
    ]
    return {
        "name": f"{flows.get(d['flow_id'], '?')}/{d['name']}",
        "id": d["id"],
        "schedules": [_schedule(s.get("schedule") or {}) for s in d.get("schedules") or []],
        "triggers": [t for t in trig if t],
        "next_runs": [_when(r.get("expected_start_time")) for r in runs],
        "last_run": (
            f"{last[0]['state_name']} {_when(last[0].get('start_time'))}" if last else None
        ),
    }


def _schedule(sch: dict[str, Any]) -> str:
    if "cron" in sch:
        return f"cron {sch['cron']}"
    if "interval" in sch:
        return f"every {float(sch['interval']):g} s"
    return str(sch)


def deployment_id(api_url: str, flow: str, project: str, timeout: float = 30.0) -> str:
    """The id of deployment ``flow/project``."""
    with _client(api_url, timeout) as http:
        return str(_call(http, "GET", f"/deployments/name/{flow}/{project}")["id"])


def start_run(
    api_url: str,
    flow: str,
    project: str,
    parameters: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create a flow run of deployment ``flow/project`` (the worker picks it up, as it would
    a scheduled one); returns its id."""
    dep = deployment_id(api_url, flow, project, timeout)
    with _client(api_url, timeout) as http:
        run = _call(
            http, "POST", f"/deployments/{dep}/create_flow_run", {"parameters": parameters or {}}
        )
    return str(run["id"])


def flow_run(api_url: str, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
    with _client(api_url, timeout) as http:
        return dict(_call(http, "GET", f"/flow_runs/{run_id}"))


def wait_run(
    api_url: str, run_id: str, wait_s: float = 900.0, poll_s: float = 0.5
) -> dict[str, Any]:
    """Wait until the flow run ends; returns it when Completed, else raises FlowRunError."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        run = flow_run(api_url, run_id)
        if run["state_type"] in FINAL:
            if run["state_type"] != "COMPLETED":
                raise FlowRunError(
                    f"flow run {run['name']} ended {run['state_type']}: "
                    f"{(run.get('state') or {}).get('message')}"
                )
            return run
        time.sleep(poll_s)
    raise FlowRunError(f"flow run {run_id} did not end within {wait_s:.0f} s")


# the order of recent_runs(scheduled=...): every run, those that ran, those still to run
_RUN_SORT = {
    None: "EXPECTED_START_TIME_DESC",
    False: "START_TIME_DESC",
    True: "EXPECTED_START_TIME_ASC",
}


def recent_runs(
    api_url: str,
    project: str | None = None,
    *,
    deployment: str | None = None,
    limit: int = 20,
    since: datetime | None = None,
    timeout: float = 10.0,
    scheduled: bool | None = None,
) -> list[dict[str, Any]]:
    """The newest flow runs (of the project's deployments, or of one deployment id), newest
    first: id, name, flow, deployment, state, start and end, whether a schedule made it.

    ``scheduled``: None, every run (by expected start, so future scheduled runs come first);
    False, the runs that started or ended (not the Scheduled ones), by start time, newest
    first; True, only the Scheduled ones, soonest first. One request of at most ``limit``
    runs, and one for their flows' names."""
    body: dict[str, Any] = {"sort": _RUN_SORT[scheduled], "limit": limit}
    runs_filter: dict[str, Any] = {}
    if scheduled is not None:
        key = "any_" if scheduled else "not_any_"
        runs_filter["state"] = {"type": {key: ["SCHEDULED"]}}
    if since is not None:
        runs_filter["expected_start_time"] = {"after_": since.isoformat()}
    if runs_filter:
        body["flow_runs"] = runs_filter
    if deployment:
        body["deployments"] = {"id": {"any_": [deployment]}}
    elif project:
        body["deployments"] = {"name": {"any_": [project]}}
    with _client(api_url, timeout) as http:
        runs = _call(http, "POST", "/flow_runs/filter", body)
        flows = _flow_names(http, {r["flow_id"] for r in runs})
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "flow": flows.get(r["flow_id"], "?"),
            "deployment_id": r.get("deployment_id"),
            "state": r.get("state_name"),
            "state_type": r.get("state_type"),
            "expected_start": r.get("expected_start_time"),
            "start": r.get("start_time"),
            "end": r.get("end_time"),
            "seconds": r.get("total_run_time"),
            "auto_scheduled": r.get("auto_scheduled"),
            "parameters": r.get("parameters") or {},
        }
        for r in runs
    ]


def _flow_names(http: httpx.Client, ids: set[str]) -> dict[str, str]:
    """The names of these flows, by id (no request for none)."""
    if not ids:
        return {}
    found = _call(http, "POST", "/flows/filter", {"flows": {"id": {"any_": sorted(ids)}}})
    return {f["id"]: f["name"] for f in found}


def task_seconds(api_url: str, run_id: str, prefix: str, timeout: float = 30.0) -> float:
    """Run time of the flow run's tasks whose names start with ``prefix``."""
    with _client(api_url, timeout) as http:
        tasks = _call(http, "POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    return float(sum(t["total_run_time"] for t in tasks if t["name"].startswith(prefix)))
