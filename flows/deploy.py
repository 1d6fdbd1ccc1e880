"""``prefect.yaml`` rendered from ``mlops.yaml`` (``mlops deploy``), so that the schedules in
the two never disagree, and applied to the project's Prefect server (``mlops deploy --apply``).

Deployments, one per flow, each named after the project (``train/<project>``):

| flow | when |
| --- | --- |
| ``ingest`` | cron ``monitoring.schedule`` (default hourly); by hand without ``data.source`` |
| ``monitor`` | the same cron: it monitors what was accepted since its last run |
| ``train`` | cron ``retraining.schedule`` (default Mon 03:00 UTC), ``mlops.retrain.requested`` |
| ``promote`` | on ``mlops.model.approved`` |
| ``online-update`` | on ``online.schedule`` (only with ``online.enabled``) |
| ``publish-events`` | every two minutes: approvals, retrain requests (CLI, dashboard) → events |
| ``continuous-training`` | by hand (``prefect deployment run``), for a manual pass or a backfill |

Event triggers match the project's resource (``mlops.project.<project>``), so several projects
can share a server. Entry points are paths relative to the folder that holds ``flows/`` (the
code root): ``prefect deploy`` runs there, and with no ``pull`` section Prefect records that
folder as each deployment's working directory. The ``config`` parameter is relative to it when
``mlops.yaml`` lies under it, else absolute.

This module imports neither Prefect nor ``mlops_core`` at import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from flows import events

DEFAULT_INGEST_CRON = "0 * * * *"
DEFAULT_TRAIN_CRON = "0 3 * * 1"
PUBLISH_INTERVAL_S = 120
ENTRY = "flows/lifecycle.py"
PREFECT_VERSION = "3.9.1"


def code_root() -> Path:
    """The folder that holds the ``flows`` package: where ``prefect deploy`` runs."""
    return Path(__file__).resolve().parent.parent


def config_parameter(config_path: Path, root: Path | None = None) -> str:
    """How the flows find ``mlops.yaml``: relative to the code root when under it."""
    path = Path(config_path).resolve()
    try:
        return str(path.relative_to((root or code_root()).resolve()))
    except ValueError:
        return str(path)


def _trigger(project: str, event: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "event",
        "enabled": True,
        "match": {"prefect.resource.id": events.resource_id(project)},
        "expect": [event],
        "parameters": parameters,
    }


def render_deployments(
    settings: Any, config: str, *, pool: str | None = None, timezone: str = "UTC"
) -> dict[str, Any]:
    """The ``prefect.yaml`` document (a dict) for ``settings``; ``config`` is the path the
    flows get as their ``config`` parameter. Every deployment goes to work pool ``pool``
    (default ``orchestration.work_pool``)."""
    project = settings.project
    pool = pool or settings.orchestration.work_pool
    watch_cron = settings.monitoring.schedule or DEFAULT_INGEST_CRON
    train_cron = settings.retraining.schedule or DEFAULT_TRAIN_CRON
    params = {"config": config}
    tags = ["mlops", f"project:{project}"]

    def deployment(flow: str, function: str, description: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": project,
            "entrypoint": f"{ENTRY}:{function}",
            "description": description,
            "tags": list(tags),
            "work_pool": {"name": pool},
            "parameters": dict(params),
            **extra,
        }

    return {
        "name": "mlops-ct",
        "prefect-version": PREFECT_VERSION,
        "deployments": [
            deployment(
                "ingest",
                "ingest",
                "Ingest what the source has ready.",
                # without data.source there is nothing to pull: by hand, with paths
                **(
                    {"schedules": [{"cron": watch_cron, "timezone": timezone}]}
                    if settings.data.source is not None
                    else {}
                ),
            ),
            deployment(
                "monitor",
                "monitor",
                "Drift, performance and detectors against the "
                "champion; the retraining policy decides.",
                schedules=[{"cron": watch_cron, "timezone": timezone}],
            ),
            deployment(
                "train",
                "train",
                "Train, gate and register a version: weekly, and "
                "when monitoring requests a retrain.",
                schedules=[{"cron": train_cron, "timezone": timezone}],
                concurrency_limit=1,
                triggers=[
                    _trigger(
                        project,
                        events.RETRAIN_REQUESTED,
                        {
                            "config": config,
                            "trigger": "{{ event.payload.trigger }}",
                            "since": "{{ event.payload.since }}",
                            "monitoring_run": "{{ event.payload.monitoring_run }}",
                            # default(''): an event from before the key existed still renders
                            "requested_by": "{{ event.payload.requested_by | default('') }}",
                        },
                    )
                ],
            ),
            deployment(
                "promote",
                "promote",
                "Side effects of an approval.",
                triggers=[
                    _trigger(
                        project,
                        events.MODEL_APPROVED,
                        {
                            "config": config,
                            "version": "{{ event.payload.version }}",
                            "action": "{{ event.payload.action }}",
                        },
                    )
                ],
            ),
            deployment(
                "publish-events",
                "publish_events",
                "Approvals and rejections recorded in the CLI or dashboard, as events.",
                schedules=[{"interval": PUBLISH_INTERVAL_S, "timezone": timezone}],
            ),
            deployment(
                "continuous-training",
                "continuous_training",
                "One pass of the loop "
                "(ingest, monitor, train if needed), by hand or for a backfill.",
            ),
            *(
                [
                    deployment(
                        "online-update",
                        "online_update",
                        "The online model learns the "
                        "labels that arrived and is registered as a version.",
                        **(
                            {
                                "schedules": [
                                    {"cron": settings.online.schedule, "timezone": timezone}
                                ]
                            }
                            if settings.online.schedule
                            else {}
                        ),
                    )
                ]
                if settings.online.enabled
                else []
            ),
        ],
    }


HEADER = """\
# Prefect deployments of project '{project}', rendered by `mlops deploy` from
# {config}. Change the schedules there (monitoring.schedule, retraining.schedule), then
# render again.
# Apply with `mlops deploy --apply` (or `prefect --no-prompt deploy --all` from this folder
# against the project's server). No pull section: Prefect records the folder deployed from
# (the one holding flows/) as the working directory of every run.
"""


def render_prefect_yaml(settings: Any, config: str, *, pool: str | None = None) -> str:
    """The text of ``prefect.yaml`` for ``settings`` (see :func:`render_deployments`)."""
    doc = render_deployments(settings, config, pool=pool)
    return HEADER.format(project=settings.project, config=config) + yaml.safe_dump(
        doc, sort_keys=False, width=100
    )


def apply(
    prefect_file: Path, api_url: str, env: dict[str, str] | None = None, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``prefect --no-prompt deploy --all`` of ``prefect_file`` against ``api_url``, from the
    code root. Raises ``RuntimeError`` with Prefect's output when it fails."""
    prefect = Path(sys.executable).parent / "prefect"
    full_env = dict(os.environ) | dict(env or {}) | {"PREFECT_API_URL": api_url}
    res = subprocess.run(
        [
            str(prefect) if prefect.exists() else "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(Path(prefect_file).resolve()),
        ],
        cwd=code_root(),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"prefect deploy failed (exit {res.returncode}):\n{(res.stdout + res.stderr)[-3000:]}"
        )
    return res
