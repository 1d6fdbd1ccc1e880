"""What the dashboard's Pipeline page reads from the project's Prefect server: the deployments
(schedules, triggers, next runs), the flow runs that ran or run now (newest first), and the
scheduled ones apart (soonest first), so that runs scheduled ahead never crowd out what
happened. Through :mod:`mlops_core.ops.orchestration` (HTTP, bounded by a timeout and a limit
per list); an unreachable server is a value, not an exception."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from mlops_core.config import Settings


@dataclass
class PipelineRuns:
    api_url: str | None  # None: the project's Prefect server is not running
    reachable: bool
    error: str | None
    deployments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # ran or running, newest first
    scheduled: list[dict[str, Any]] = field(default_factory=list)  # to run, soonest first

    @property
    def ui_url(self) -> str | None:
        """The Prefect UI beside its API (``…/api`` → ``…``)."""
        if not self.api_url:
            return None
        api = self.api_url.rstrip("/")
        return api[: -len("/api")] if api.endswith("/api") else api


def pipeline_runs(
    settings: Settings,
    api_url: str | None = None,
    *,
    timeout: float = 3.0,
    runs: int = 20,
    scheduled: int = 10,
) -> PipelineRuns:
    """Deployments, the newest ``runs`` flow runs that started (completed, failed, running,
    pending...) and the next ``scheduled`` ones, from the project's Prefect server (``api_url``,
    default: the one ``mlops up`` started)."""
    import httpx

    from mlops_core.ops.orchestration import deployments_status, recent_runs
    from mlops_core.ops.services import prefect_api_url

    api = api_url or prefect_api_url(settings.workspace)
    if not api:
        return PipelineRuns(None, False, None)
    out = PipelineRuns(api, True, None)
    try:
        out.deployments = deployments_status(api, settings.project, timeout=timeout)
        if not out.deployments:
            return out
        ran = recent_runs(api, settings.project, limit=runs, timeout=timeout, scheduled=False)
        ahead = recent_runs(api, settings.project, limit=scheduled, timeout=timeout, scheduled=True)
    except (httpx.HTTPError, ValueError) as e:
        return PipelineRuns(api, False, f"{type(e).__name__}: {e}"[:300])
    names = {d["id"]: d["name"] for d in out.deployments}
    ui = out.ui_url
    # a server that ignores the state filter must not mix the two lists either
    out.runs = [_row(r, names, ui) for r in ran if r.get("state_type") != "SCHEDULED"]
    out.scheduled = [_row(r, names, ui) for r in ahead if r.get("state_type") == "SCHEDULED"]
    return out


def _row(r: dict[str, Any], names: dict[str, str], ui: str | None) -> dict[str, Any]:
    """One flow run as the page's tables show it."""
    return {
        "flow run": r["name"],
        "deployment": names.get(r.get("deployment_id") or "", r.get("flow", "")),
        "state": r.get("state"),
        "state_type": r.get("state_type"),
        "expected start": api_time(r.get("expected_start")),
        "start": api_time(r.get("start")),
        "end": api_time(r.get("end")),
        "seconds": r.get("seconds"),
        "scheduled": r.get("auto_scheduled"),
        "parameters": json.dumps(r.get("parameters") or {}, default=str)[:300],
        "link": f"{ui}/runs/flow-run/{r['id']}" if ui and r.get("id") else None,
    }


def api_time(iso: str | None) -> datetime | None:
    """A Prefect API timestamp as naive UTC (our convention)."""
    if not iso:
        return None
    t = pd.Timestamp(iso)
    return (t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t).to_pydatetime()


def service_link(url: str | None) -> str | None:
    """A service's address as a link the browser can open (http or https), else None."""
    return url if url and url.split("://", 1)[0] in ("http", "https") else None
