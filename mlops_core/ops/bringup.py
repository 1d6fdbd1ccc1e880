"""Bringing a project's services up (``mlops up``, ``mlops demo --replay``): the Prefect server,
its work pool and worker, MLflow (unless ``storage.mlflow_uri`` names one), the dashboard and
the serving API, each started or found running.

Creating the deployments takes Prefect's own code (``flows.deploy``), so it is the caller's;
this module says which environment a Prefect client of the project needs and leaves this
process's environment alone."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from mlops_core.config import Settings
from mlops_core.ops.services import (
    HOST,
    dashboard_app,
    mlflow_artifact_root,
    prefect_api_url,
    prefect_env,
    prefect_home,
    start_dashboard,
    start_mlflow,
    start_prefect,
    start_serving,
)
from mlops_core.store import open_project

# a step's name in, a context around the step out (the CLI shows a spinner)
Step = Callable[[str], AbstractContextManager[Any]]


def _quietly(_what: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def free_or_none(port: int) -> int | None:
    """``port`` when it is free (else None: any free port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return None
    return int(port)


def prefect_client_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a Prefect client of the project needs (``PREFECT_API_URL``,
    ``PREFECT_HOME``...), empty when the project's Prefect server does not run. A
    ``PREFECT_API_URL`` already in ``environ`` (another server) wins."""
    api = environ.get("PREFECT_API_URL") or prefect_api_url(settings.workspace)
    return prefect_env(settings.workspace, api) if api else {}


def deployment_env(settings: Settings, api_url: str) -> dict[str, str]:
    """What ``flows.deploy`` reads from the environment to create the deployments on
    ``api_url``."""
    return {"PREFECT_API_URL": api_url, "PREFECT_HOME": str(prefect_home(settings.workspace))}


def start_services(
    settings: Settings,
    config: Path,
    *,
    timeout_s: float = 180.0,
    worker_env: dict[str, str] | None = None,
    step: Step = _quietly,
) -> dict[str, Any]:
    """Create the project if need be, then start (or find running) every service; returns
    their URLs: prefect, prefect_api, work_pool, worker_health (None for a pool that is not a
    process pool: its workers run where Docker or Kubernetes is), mlflow, dashboard (None
    without the dashboard's app) and serving."""
    ws = settings.workspace
    open_project(ws, settings.db_url, create=True)
    pool = settings.orchestration.work_pool
    with step("Starting the Prefect server, work pool and worker..."):
        server, worker = start_prefect(
            ws,
            timeout_s=timeout_s,
            worker_env=worker_env,
            pool=pool,
            db_url=settings.storage.prefect_db_url,
        )
    mlflow = _mlflow(settings, timeout_s, step)
    dashboard = None
    if dashboard_app().is_file():
        with step("Starting the dashboard..."):
            dashboard = start_dashboard(
                ws, config, port=free_or_none(settings.dashboard.port), timeout_s=timeout_s
            ).url
    with step("Starting the serving API..."):
        serving = start_serving(
            ws, config, port=free_or_none(settings.serving.port), timeout_s=timeout_s
        )
    return {
        "prefect": server.url,
        "prefect_api": f"{server.url}/api",
        "work_pool": pool,
        "worker_health": worker.health_url if worker else None,
        "mlflow": mlflow,
        "dashboard": dashboard,
        "serving": serving.url,
    }


def _mlflow(settings: Settings, timeout_s: float, step: Step) -> str | None:
    """The configured MLflow, or the project's own server, started."""
    if settings.storage.mlflow_uri:
        return settings.storage.mlflow_uri
    with step("Starting the MLflow server..."):
        return start_mlflow(
            settings.workspace,
            timeout_s=timeout_s,
            backend_uri=settings.storage.mlflow_backend_uri,
            artifacts=mlflow_artifact_root(settings),
        ).url
