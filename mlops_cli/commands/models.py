"""Models: `mlops train` and `learn`, `models`, the decisions on a version (approve, reject,
rollback, retrain), the audit log and `package`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlops_cli.errors import cli_errors
from mlops_cli.options import ByOpt, CommentOpt, ConfigOpt, ExpectOpt, JsonOpt, RequestOpt
from mlops_cli.project import cli_principal, existing_project, registry
from mlops_cli.render import (
    out,
    print_audit,
    print_decision,
    print_json,
    print_models,
    print_training,
    steps,
)

TRAINING_FAILED = "training failed, nothing was registered"


def _expected(expect_champion: str | None) -> Any:
    """--expect-champion as the registry takes it: ... (whatever it is now), None or a version."""
    if expect_champion is None:
        return ...
    return None if expect_champion.lower() == "none" else expect_champion


@cli_errors(failing=TRAINING_FAILED)
def train(
    config: ConfigOpt = Path("mlops.yaml"),
    trigger: Annotated[
        str,
        typer.Option(
            "--trigger",
            help="Why: manual, schedule, drift, performance... (recorded with the version).",
        ),
    ] = "manual",
    as_json: JsonOpt = False,
) -> None:
    """Train on the configured window of labelled batches, gate against the champion, and
    register the new version (pending approval, or champion in auto mode)."""
    _train(
        config,
        as_json,
        "Training: search, hold-out evaluation, packaging, smoke test, gate...",
        trigger=trigger,
    )


@cli_errors(failing=TRAINING_FAILED)
def learn(
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Update the online model with the labels that arrived, and register it as a version.

    It continues the newest online version (or the champion, an XGBoost model) on the labelled
    rows it has not learnt: /feedback labels joined to the prediction log, and labelled batches
    newer than its data; a few trees per update. The result is scored on the newest rows before
    it learns them, gated against the champion and registered pending approval, like any
    training; serving runs it in shadow (online.enabled, serving.shadow) until it is approved
    or a newer one replaces it. The online-update deployment runs this on online.schedule."""
    _train(
        config,
        as_json,
        "Learning the new labels, evaluation, packaging, gate...",
        trigger="online",
        online=True,
    )


def _train(config: Path, as_json: bool, doing: str, **kwargs: Any) -> None:
    """`mlops train` and `mlops learn`: one training with a spinner, then its outcome."""
    from mlops_core.train.pipeline import train_and_register

    settings = existing_project(config)
    with steps(doing) as say:
        res = train_and_register(settings, progress=say, **kwargs)
    if as_json:
        print_json(res.to_dict())
        return
    print_training(res, settings)


@cli_errors()
def models(config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False) -> None:
    """All versions with their status, aliases, trigger and hold-out metrics."""
    reg = registry(config)
    versions = reg.versions()
    if as_json:
        print_json({"versions": [v.to_dict() for v in versions]})
        return
    print_models(reg.name, versions)


@cli_errors(LookupError)
def approve(
    version: Annotated[str, typer.Argument(help="The pending version to make champion.")],
    by: ByOpt,
    comment: CommentOpt,
    expect_champion: ExpectOpt = None,
    request_id: RequestOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Approve a pending version: it becomes champion (audited first, then the alias moves)."""
    from mlops_core.ops.actions import approve as approve_version

    res = approve_version(
        existing_project(config),
        cli_principal(by),
        version,
        comment=comment,
        expected_champion=_expected(expect_champion),
        request_id=request_id,
    )
    print_decision(res, as_json)


@cli_errors(LookupError)
def reject(
    version: Annotated[str, typer.Argument(help="The pending version to reject.")],
    by: ByOpt,
    comment: CommentOpt,
    request_id: RequestOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Reject a pending version."""
    from mlops_core.ops.actions import reject as reject_version

    res = reject_version(
        existing_project(config), cli_principal(by), version, comment=comment, request_id=request_id
    )
    print_decision(res, as_json)


@cli_errors(LookupError)
def rollback(
    by: ByOpt,
    comment: CommentOpt,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Version to restore (default: the champion before the current one)."
        ),
    ] = None,
    expect_champion: ExpectOpt = None,
    request_id: RequestOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Make a previously approved version champion again. One action."""
    from mlops_core.ops.actions import rollback as rollback_version

    res = rollback_version(
        existing_project(config),
        cli_principal(by),
        to=to,
        comment=comment,
        expected_champion=_expected(expect_champion),
        request_id=request_id,
    )
    print_decision(res, as_json)


@cli_errors(LookupError)
def retrain(
    by: Annotated[
        str,
        typer.Option(
            "--by", help="Who asks (recorded in the audit log and tagged on the version it trains)."
        ),
    ],
    reason: Annotated[
        str,
        typer.Option(
            "--reason", help="Why (required; kept in the audit log, and the reason of the event)."
        ),
    ],
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Train here, in this process, right away (as [bold]mlops train[/] does), "
            "instead of queueing the request for the services.",
        ),
    ] = False,
    request_id: RequestOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Request a retraining. The request is recorded in the audit log and queued: published as
    mlops.retrain.requested (by the publish-events deployment, or [bold]mlops publish[/]) while
    the services run ([bold]mlops up[/]), and the training deployment trains on that event;
    while they do not run, it waits for them. With --now it trains here instead, and is not
    queued. With dashboard.four_eyes, the version it trains must be approved by someone else."""
    from mlops_core.ops.actions import request_retrain

    settings = existing_project(config)
    res = request_retrain(
        settings, cli_principal(by), reason=reason, request_id=request_id, in_process=now
    )
    trained = None
    if now and res.outcome == "applied":
        if not as_json:
            _print_request(res)
        trained = _train_now(settings, res.requested_by, config=config)
    if as_json:
        print_json(res.to_dict() | ({"training": trained.to_dict()} if trained else {}))
    elif trained is not None:
        print_training(trained, settings)
    else:
        _print_request(res)


def _print_request(res: Any) -> None:
    """A new request says what happens to it (queued, whether the services run, or trained
    now); one seen before says so."""
    waits = res.queued and res.services_running is False
    said = escape(res.message if res.outcome == "applied" else f"{res.outcome}: {res.message}")
    color = "yellow" if waits or res.outcome != "applied" else "green"
    out.print(f"[{color}]{said}[/]  [dim](request {res.request_id})[/]")
    if waits:
        out.print(
            "Not waiting for the services: [bold]mlops retrain --now[/] trains in this process "
            "instead of queueing"
        )


@cli_errors(failing=TRAINING_FAILED)
def _train_now(settings: Any, requested_by: str, *, config: Path) -> Any:
    """The requested training, here (`mlops retrain --now`): as the train deployment would run
    it on the request's event (trigger ``manual``, ``requested_by`` for the four-eyes rule)."""
    from mlops_core.train.pipeline import train_and_register

    with steps("Training the requested retrain...") as say:
        return train_and_register(
            settings, trigger="manual", requested_by=requested_by, progress=say
        )


@cli_errors()
def audit(
    config: ConfigOpt = Path("mlops.yaml"),
    limit: Annotated[int, typer.Option(help="Newest records to show.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: every approval, rejection, promotion and rollback, newest first."""
    recs = registry(config).audit(limit=limit)
    if as_json:
        print_json({"audit": [r.to_dict() for r in recs]})
        return
    print_audit(recs)


@cli_errors(LookupError)
def package(
    version: Annotated[str, typer.Argument(help="Version to package.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    config: ConfigOpt = Path("mlops.yaml"),
) -> None:
    """Write a self-contained folder: the MLflow model and a Dockerfile that serves it."""
    from mlops_core.serve.packaging import package_version

    folder = package_version(registry(config), version, out_dir)
    out.print(
        f"Wrote {folder}. Build and run where Docker runs:\n"
        f"  docker build -t {folder.name} {folder}\n"
        f"  docker run -p 8080:8080 {folder.name}"
    )
