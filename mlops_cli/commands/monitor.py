"""Monitoring: `mlops monitor` and the retraining decisions it records (`mlops decisions`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlops_cli.errors import cli_errors
from mlops_cli.options import ConfigOpt, JsonOpt
from mlops_cli.project import existing_project, metadata
from mlops_cli.render import (
    err,
    out,
    print_decisions,
    print_json,
    print_monitoring,
    print_training,
)

BatchOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--batch",
        help="Batch id to monitor (repeatable). Default: the batches accepted since "
        "the last monitoring run.",
    ),
]
RetrainOpt = Annotated[
    bool,
    typer.Option(
        "--retrain",
        help="If the policy decides to retrain, train now (as `mlops train --trigger REASONS`).",
    ),
]
ReportOpt = Annotated[
    bool | None,
    typer.Option(
        "--report/--no-report",
        help="Write the Evidently HTML report (default: on a drift, per monitoring.report).",
    ),
]


@cli_errors(LookupError)
def monitor(
    batch: BatchOpt = None,
    retrain: RetrainOpt = False,
    report: ReportOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Compare new batches with the champion's reference: data drift (Evidently), realised and
    estimated performance, concept-drift detectors; then the retraining policy decides."""
    from mlops_core.monitor.run import monitor as run_monitor

    settings = existing_project(config)
    with err.status("Monitoring..."):
        res = run_monitor(settings, batch, report=report)
    trained = _retrain(settings, res) if retrain and res.decision and res.decision.retrain else None
    if as_json:
        print_json(res.to_dict() | {"training": trained.to_dict() if trained else None})
        return
    print_monitoring(res, settings)
    if trained:
        print_training(trained, settings)


def _retrain(settings: Any, res: Any) -> Any:
    """`mlops monitor --retrain`: train as the decision says, and record it with the run."""
    from mlops_core.monitor.run import record_action
    from mlops_core.train.pipeline import train_and_register

    with err.status(f"Retraining ({res.decision.trigger})..."):
        trained = train_and_register(
            settings,
            trigger=res.decision.trigger,
            since=res.decision.since,
        )
    record_action(metadata(settings), res.id, trained.to_dict())
    return trained


@cli_errors()
def decisions(
    config: ConfigOpt = Path("mlops.yaml"),
    limit: Annotated[int, typer.Option(help="Newest decisions to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Why the system did or did not retrain: every monitoring run's decision, newest first."""
    from mlops_core.monitor.run import list_decisions, list_runs

    settings = existing_project(config)
    meta = metadata(settings)
    decided = list_decisions(meta, settings.project, limit)
    runs = {r["id"]: r for r in list_runs(meta, settings.project, limit * 2)}
    if as_json:
        print_json({"decisions": decided})
        return
    if not decided:
        out.print("No monitoring decisions yet: run [bold]mlops monitor[/].")
        return
    print_decisions(decided, runs)
