"""The running system: `mlops up`, `down`, `status`, `serve`, and the Prefect deployments
(`deploy`, `publish`). Commands that need Prefect's own code import `flows` inside."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlops_cli.errors import cli_errors, fail
from mlops_cli.options import ConfigOpt, JsonOpt
from mlops_cli.project import existing_project, load_settings, metadata
from mlops_cli.render import err, out, print_json, print_status, print_up


def use_project_prefect(settings: Any) -> str | None:
    """Point this process at the project's Prefect server (if it runs); returns its API URL.
    A PREFECT_API_URL already set (another server) wins."""
    from mlops_core.ops.bringup import prefect_client_env

    env = prefect_client_env(settings, os.environ)
    for k, v in env.items():
        os.environ.setdefault(k, v)
    return env.get("PREFECT_API_URL")


def deploy_to(settings: Any, config: Path, out_file: Path | None, api: str | None) -> Path:
    """Write prefect.yaml (``out_file``, else under the workspace) and apply it on ``api``."""
    from flows.deploy import apply, config_parameter, render_prefect_yaml
    from mlops_core.ops.services import prefect_env, prefect_home

    text = render_prefect_yaml(settings, config_parameter(config))
    target = out_file or prefect_home(settings.workspace) / "prefect.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    if api:
        apply(target, api, prefect_env(settings.workspace, api))
    return target


def bring_up(
    settings: Any,
    config: Path,
    *,
    deploy: bool = True,
    timeout: float = 180.0,
    worker_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start (or find running) every service of the project and create the deployments;
    returns their URLs. Shows a spinner per step."""
    import time

    from mlops_core.ops.bringup import deployment_env, start_services

    t0 = time.perf_counter()
    urls = start_services(
        settings, config, timeout_s=timeout, worker_env=worker_env, step=err.status
    )
    deployed = None
    if deploy:
        os.environ.update(deployment_env(settings, urls["prefect_api"]))  # flows.deploy reads it
        with err.status("Creating the deployments..."):
            deployed = deploy_to(settings, config, None, urls["prefect_api"])
    return urls | {
        "prefect_yaml": str(deployed) if deployed else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


@cli_errors(RuntimeError, OSError)
def deploy(
    config: ConfigOpt = Path("mlops.yaml"),
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write prefect.yaml here (default: print it; with --apply, "
            "<workspace>/prefect/prefect.yaml).",
        ),
    ] = None,
    do_apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Create or update the deployments on the project's running Prefect "
            "server (`mlops up` starts it).",
        ),
    ] = False,
) -> None:
    """Render prefect.yaml from mlops.yaml (schedules, event triggers), and optionally apply
    it: ingestion and monitoring on monitoring.schedule, training on retraining.schedule and on
    mlops.retrain.requested, promotion on mlops.model.approved."""
    if not do_apply:
        _render_deployments(load_settings(config), config, out_file)
        return
    settings = existing_project(config)
    api = use_project_prefect(settings)
    if not api:
        fail("the project's Prefect server is not running: start it with `mlops up`")
    with err.status("Applying the deployments (prefect deploy --all)..."):
        target = deploy_to(settings, config, out_file, api)
    out.print(f"Applied {target} to {api}")


def _render_deployments(settings: Any, config: Path, out_file: Path | None) -> None:
    from flows.deploy import config_parameter, render_prefect_yaml

    text = render_prefect_yaml(settings, config_parameter(config))
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        out.print(f"Wrote {out_file}")


@cli_errors(RuntimeError, OSError)
def up(
    config: ConfigOpt = Path("mlops.yaml"),
    with_deploy: Annotated[
        bool, typer.Option("--deploy/--no-deploy", help="Create the deployments.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each health check.")] = 180.0,
    as_json: JsonOpt = False,
) -> None:
    """Start the project's services on 127.0.0.1, state under the workspace: the Prefect server,
    a process work pool and worker (orchestration.work_pool), the MLflow server (unless
    storage.mlflow_uri names yours), the dashboard and the serving API; create the deployments;
    wait for every health check; print the URLs. Databases are SQLite unless storage says
    otherwise (see docs/scale-out.md). Running services are kept."""
    urls = bring_up(load_settings(config), config, deploy=with_deploy, timeout=timeout)
    if as_json:
        print_json(
            {
                "services": {k: v for k, v in urls.items() if k not in ("prefect_yaml", "seconds")},
                "prefect_yaml": urls["prefect_yaml"],
                "seconds": urls["seconds"],
            }
        )
        return
    print_up(urls)


@cli_errors()
def serve(
    config: ConfigOpt = Path("mlops.yaml"),
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 for every interface.")
    ] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default serving.port).")] = None,
) -> None:
    """Serve the champion over HTTP until interrupted (`mlops up` runs it in the background).

    POST /predict takes one record or a list and answers with the version that produced the
    predictions; POST /feedback takes labels by row id; GET /health, /model, /metrics
    (Prometheus) and /docs. It follows the champion alias (polling every serving.poll_seconds;
    the promote flow nudges it through POST /reload), loading and checking a new version off the
    request path before it swaps; if that fails the old version keeps serving. Every request is
    logged under <workspace>/predictions for `mlops monitor` (monitoring.source)."""
    from mlops_core.serve.app import serve as run_serving

    settings = existing_project(config)
    err.print(
        f"Serving '{settings.project}' on http://{host}:{port or settings.serving.port} "
        "(Ctrl+C stops)"
    )
    run_serving(settings, host=host, port=port)


@cli_errors(RuntimeError)
def status(config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False) -> None:
    """Each service's health, the deployments and their next runs, the champion, versions
    awaiting approval and the last retraining decisions."""
    doc, api = _status_of(existing_project(config))
    if as_json:
        print_json(doc)
        return
    print_status(doc, api)


def _status_of(settings: Any) -> tuple[dict[str, Any], str | None]:
    """What `mlops status` shows, and the API URL of the project's Prefect server (if it runs)."""
    from mlops_core.monitor.run import list_decisions
    from mlops_core.ops.services import prefect_api_url
    from mlops_core.read.views import service_health
    from mlops_core.registry.registry import Registry

    services = [
        {
            "name": h.name,
            "running": h.running,
            "healthy": h.healthy,
            "url": h.url,
            "pid": h.pid,
            "where": h.where,
        }
        for h in service_health(settings, timeout=2.0)
    ]
    api = prefect_api_url(settings.workspace)
    deps = _deployments(api, settings.project) if api else []
    reg = Registry(settings)
    versions = reg.versions()
    doc = {
        "services": services,
        "deployments": deps,
        "champion": reg.champion(),
        "pending": [v.to_dict() for v in versions if v.status == "pending_approval"],
        "decisions": list_decisions(metadata(settings), settings.project, 5),
    }
    return doc, api


def _deployments(api: str, project: str) -> list[dict[str, Any]]:
    """The project's deployments; none, with a note, when the server does not answer."""
    import httpx

    from mlops_core.ops.orchestration import deployments_status

    try:
        return deployments_status(api, project)
    except httpx.HTTPError as e:
        err.print(f"[yellow]cannot read the deployments from {api}: {escape(str(e))}[/]")
        return []


@cli_errors()
def down(config: ConfigOpt = Path("mlops.yaml")) -> None:
    """Stop the services `mlops up` started, by process id: serving first, the worker before
    the server."""
    from mlops_core.ops.services import stop_all

    stopped = stop_all(load_settings(config).workspace)
    out.print("Stopped " + (", ".join(stopped) if stopped else "nothing (none was running)"))


@cli_errors()
def publish(config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False) -> None:
    """Send the approvals, rejections, rollbacks and retrain requests recorded since the last
    publication as Prefect events now (mlops.model.approved / mlops.model.rejected /
    mlops.retrain.requested); the publish-events deployment does it every two minutes anyway."""
    settings = existing_project(config)
    if not use_project_prefect(settings):
        fail("no Prefect server: start it with `mlops up` (or set PREFECT_API_URL)")
    from flows.events import publish_decisions

    sent = publish_decisions(settings)
    if as_json:
        print_json({"sent": sent})
        return
    for s in sent:
        out.print(
            f"sent {s['event']} ({s['action']} "
            + (f"v{s['version']})" if s["version"] else f"by {escape(s['actor'])})")
        )
    if not sent:
        out.print("Nothing new to publish.")
