"""The `mlops` command line (Typer). An entry point only: it loads the configuration, calls
`mlops_core` functions and prints their results. Commands that need Prefect import `flows` inside
the command, so `import mlops_core` stays light."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mlops_core.errors import MlopsError

app = typer.Typer(
    name="mlops",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    help="Continuous training for tabular models: ingest and validate data batches, train, "
    "gate, promote, monitor and retrain. Every command reads [bold]mlops.yaml[/] "
    "(--config, or $MLOPS_CONFIG).",
)
quarantine_app = typer.Typer(no_args_is_help=True, help="Inspect and replay quarantined batches.")
app.add_typer(quarantine_app, name="quarantine")
batches_app = typer.Typer(
    invoke_without_command=True, help="List the batches in the store; withdraw one from training."
)
app.add_typer(batches_app, name="batches")
users_app = typer.Typer(
    no_args_is_help=True,
    help="Dashboard users (dashboard.auth: password): "
    "names, roles and password hashes in a file outside the repository.",
)
app.add_typer(users_app, name="users")


def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=140)  # logs, CI: no wrapping


out = _console()
err = _console(stderr=True)

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", envvar="MLOPS_CONFIG", help="Project configuration file.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout.")]
STATUS_STYLE = {
    "accepted": "green",
    "quarantined": "red",
    "duplicate": "dim",
    "released": "cyan",
    "deferred": "yellow",
    "withdrawn": "magenta",
}


def _settings(config: Path) -> Any:
    from mlops_core.config import load_config

    return load_config(config)


def _project(config: Path) -> Any:
    """The settings of a project that exists: its workspace and metadata DB are there (see
    :func:`mlops_core.store.open_project`; only ``init`` and ``up`` create them)."""
    from mlops_core.errors import ProjectMissing
    from mlops_core.store import open_project

    settings = _settings(config)
    try:
        open_project(settings.workspace, settings.db_url)
    except ProjectMissing as e:
        raise ProjectMissing(str(e).replace("--config FILE", f"--config {config}")) from None
    return settings


def _fail(message: str, code: int = 1) -> None:
    # one line whatever the terminal's width: an error is read, grepped and logged whole
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # XGBoost's OpenMP threads otherwise spin while waiting, starving the services beside them
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # a command fails within a minute when MLflow goes away mid-way (the defaults: 7 retries
    # with back-off and 120 s a request, several minutes in all)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def _print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def _when(ts: Any) -> str:
    return f"{ts:%Y-%m-%d %H:%M}" if ts is not None else "-"


def _outcome_row(table: Table, o: Any) -> None:
    style = STATUS_STYLE.get(o.status, "")
    table.add_row(
        o.id,
        f"[{style}]{o.status}[/]",
        f"{o.rows:,}",
        f"{_when(o.start_time)} → {_when(o.end_time)}" if o.start_time else "-",
        escape(Path(o.origin).name if "://" not in o.origin else o.origin),
        escape(o.reason if o.status != "accepted" or o.findings else ""),
    )


def _batch_table(title: str) -> Table:
    t = Table(title=title, title_justify="left", expand=False)
    columns: list[tuple[str, dict[str, Any]]] = [
        ("batch", {"no_wrap": True}),
        ("status", {}),
        ("rows", {"justify": "right"}),
        ("time range", {"no_wrap": True}),
        ("from", {}),
        ("findings", {"overflow": "fold", "max_width": 70}),
    ]
    for col, kw in columns:
        t.add_column(col, **kw)
    return t


def run_ingest(settings: Any, paths: list[Path] | None, as_json: bool) -> dict[str, Any]:
    """Ingest with a progress bar on stderr; returns the report as a dict."""
    from mlops_core.data.ingest import IngestReport, iter_ingest

    report = IngestReport()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_progress(origin: str, done: int, total: int | None, unit: str) -> None:
        if origin not in tasks:
            tasks[origin] = progress.add_task(Path(origin).name[:40], total=total)
        progress.update(tasks[origin], completed=done, total=total)

    with progress:
        for o in iter_ingest(settings, paths or None, progress=on_progress):
            report.outcomes.append(o)
            if not as_json:
                note = (
                    o.reason
                    if o.status != "accepted"
                    else (
                        "warnings: " + ", ".join(sorted({f.rule for f in o.findings}))
                        if o.findings
                        else ""
                    )
                )
                progress.console.print(
                    f"[{STATUS_STYLE.get(o.status, '')}]{o.status:>11}[/] {o.id}  "
                    f"{o.rows:>9,} rows  {escape(Path(o.origin).name)}"
                    + (f"  [dim]{escape(note[:160])}[/]" if note else "")
                )
    if not as_json:
        summary = report.to_dict()
        out.print(
            f"[green]{summary['accepted']} accepted[/] ({summary['rows_accepted']:,} rows), "
            f"[red]{summary['quarantined']} quarantined[/], "
            f"{summary['duplicate']} already ingested"
            + (
                f", [yellow]{summary['deferred']} still being written[/] (read at the next run)"
                if summary["deferred"]
                else ""
            )
            + "."
        )
        if summary["quarantined"]:
            out.print(
                "See why with [bold]mlops quarantine show ID[/]; fix the data or the "
                "contract, then [bold]mlops quarantine release ID[/]."
            )
    return report.to_dict()


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Files or folders to ingest. Default: the configured data.source."),
    ] = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Ingest new data: split it into batches, validate each, store or quarantine it.

    Re-ingesting the same data is a no-op: batch ids come from content hashes."""
    try:
        settings = _project(config)
        result = run_ingest(settings, paths, as_json)
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json(result)


@app.command()
def init(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A CSV, Parquet or JSON sample of the data (to write a new mlops.yaml).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="The column to predict.")] = None,
    time: Annotated[str | None, typer.Option("--time", help="The event time column.")] = None,
    id_col: Annotated[str | None, typer.Option("--id", help="The row id column.")] = None,
    config: ConfigOpt = Path("mlops.yaml"),
    project: Annotated[
        str | None, typer.Option(help="Project name (default: from the file).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Create a project: write a commented mlops.yaml, inferring the task and feature kinds from
    a sample (--data, --target), and create its workspace and metadata DB.

    Without --data, create the workspace and metadata DB of the existing --config (a file
    written by hand, or after changing storage.workspace / storage.db_url). Only init and up
    create them: every other command refuses a project whose workspace or DB is missing."""
    from mlops_core.config import redact_url
    from mlops_core.ops.scaffold import init_project
    from mlops_core.store import open_project

    if data is None:
        if target is not None or not config.is_file():
            _fail(
                f"{config} does not exist: give --data SAMPLE --target COLUMN to write it"
                if target is None
                else "--target needs --data (a sample of the data)"
            )
            return
        try:
            settings = _settings(config)
            open_project(settings.workspace, settings.db_url, create=True)
        except MlopsError as e:
            _fail(str(e))
            return
        out.print(
            f"Project [bold]{escape(settings.project)}[/]: workspace {settings.workspace}, "
            f"metadata DB {escape(redact_url(settings.db_url))}. "
            f"Next: [bold]mlops ingest --config {config}[/]"
        )
        return
    if target is None:
        _fail("--data needs --target (the column to predict)")
        return
    try:
        path, schema = init_project(
            data, target, time=time, id_col=id_col, out=config, project=project, force=force
        )
        settings = _settings(path)
        open_project(settings.workspace, settings.db_url, create=True)
    except MlopsError as e:
        _fail(str(e))
        return
    out.print(
        f"Wrote [bold]{path}[/]: task [bold]{schema.task}[/], "
        f"{len(schema.numeric)} numeric, {len(schema.categorical)} categorical, "
        f"{len(schema.boolean)} boolean feature(s)."
    )
    for col, why in schema.left_out.items():
        out.print(f"  left out [yellow]{escape(col)}[/]: {escape(why)}")
    out.print(f"Workspace: {settings.workspace}")
    out.print(
        f"Review it, then: [bold]mlops ingest --config {path}[/] (after changing "
        f"storage.workspace or storage.db_url: [bold]mlops init --config {path}[/])"
    )


@batches_app.callback()
def batches(
    ctx: typer.Context,
    config: ConfigOpt = Path("mlops.yaml"),
    status: Annotated[
        str | None,
        typer.Option(
            help="Only batches with this status: accepted, quarantined, released or withdrawn."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the batches in the store, oldest first."""
    from mlops_core.store import MetadataStore

    if ctx.invoked_subcommand is not None:
        return

    try:
        recs = MetadataStore(_project(config).db_url).list_batches(status)
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"batches": [r.to_dict() for r in recs]})
        return
    t = _batch_table(f"{len(recs)} batch(es)")
    for r in recs:
        _outcome_row(t, r)
    out.print(t)


@batches_app.command("withdraw")
def batches_withdraw(
    batch_id: Annotated[str, typer.Argument(help="Batch id (a prefix will do).")],
    comment: Annotated[str, typer.Option(help="Why (required; kept in the audit log).")],
    config: ConfigOpt = Path("mlops.yaml"),
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Who withdraws (recorded in the audit log; default: your login name)."
        ),
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option("--request-id", help="Idempotency key: the same request twice is done once."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Take an accepted batch out of training and monitoring; its data stays. Audited.

    The batch keeps its data and record, with status withdrawn. Use it for a batch that was
    accepted but should not have been (wrong labels, a broken upstream export)."""
    from mlops_core.ops.actions import withdraw

    try:
        res = withdraw(
            _project(config),
            _cli_principal(by or _login_name()),
            batch_id,
            comment=comment,
            request_id=request_id,
        )
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"id": res.batch_id, "outcome": res.outcome, "message": res.message})
    else:
        out.print(
            f"[green]{escape(res.message)}[/]" if res.outcome == "applied" else escape(res.message)
        )


@quarantine_app.command("list")
def quarantine_list(
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="Include released ones.")] = False,
) -> None:
    """Quarantined batches and why."""
    from mlops_core.store import MetadataStore

    try:
        recs = MetadataStore(_project(config).db_url).list_batches(
            ["quarantined", "released"] if all_ else "quarantined"
        )
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"quarantined": [r.to_dict() for r in recs]})
        return
    if not recs:
        out.print("Nothing in quarantine.")
        return
    t = _batch_table(f"{len(recs)} quarantined batch(es)")
    for r in recs:
        _outcome_row(t, r)
    out.print(t)


@quarantine_app.command("show")
def quarantine_show(
    batch_id: Annotated[str, typer.Argument(help="Batch id (a prefix will do).")],
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Every finding of one quarantined batch, and where its data is kept."""
    from mlops_core.store import MetadataStore

    try:
        settings = _project(config)
        rec = MetadataStore(settings.db_url).get_batch(batch_id)
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    if as_json:
        _print_json(rec.to_dict())
        return
    folder = settings.workspace / rec.path
    out.print(
        f"[bold]{rec.id}[/]  [{STATUS_STYLE.get(rec.status, '')}]{rec.status}[/]  "
        f"{rec.rows:,} rows  from {escape(rec.origin)}"
    )
    for f in rec.findings:
        color = "red" if f["severity"] == "fatal" else "yellow"
        out.print(f"  [{color}]{f['severity']:>7}[/] {f['rule']}: {escape(f['message'])}")
    out.print(f"Kept at {folder}")
    if rec.released_as:
        out.print(f"Released as {', '.join(rec.released_as)}")


@quarantine_app.command("release")
def quarantine_release(
    batch_id: Annotated[str, typer.Argument(help="Batch id (a prefix will do).")],
    config: ConfigOpt = Path("mlops.yaml"),
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Accept the rows despite their findings (recorded with the batch)."
        ),
    ] = False,
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Who releases (recorded in the audit log; default: your login name)."
        ),
    ] = None,
    comment: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
    request_id: Annotated[
        str | None,
        typer.Option("--request-id", help="Idempotency key: the same request twice is done once."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a quarantined batch after fixing its data (in the quarantine folder) or the
    contract (contract.yaml in the workspace). Audited."""
    from mlops_core.ops.actions import release

    try:
        res = release(
            _project(config),
            _cli_principal(by or _login_name()),
            batch_id,
            comment=comment,
            request_id=request_id,
            force=force,
        )
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    if as_json:
        _print_json(
            {
                "id": res.quarantined_id,
                "released": res.released,
                "message": res.message,
                "batches": [o.to_dict() for o in res.outcomes],
            }
        )
    else:
        color = "green" if res.released else "red"
        out.print(f"[{color}]{res.quarantined_id}: {escape(res.message)}[/]")
    if not res.released:
        raise typer.Exit(1)


def _registry(config: Path) -> Any:
    from mlops_core.registry.registry import Registry

    return Registry(_project(config))


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "cli"


def _cli_principal(name: str) -> Any:
    """Whoever runs the CLI, as an approver: they can read and write the workspace, the metadata
    DB and the users file anyway, so a role would protect nothing here. Their writes still go
    through mlops_core.ops.actions (comments, request ids, the four-eyes rule, the audit log)."""
    from mlops_core.ops.auth import Principal

    return Principal(name=name, role="approver", via="cli")


def _print_decision(res: Any, as_json: bool) -> None:
    if as_json:
        _print_json(res.to_dict())
    else:
        color = {"applied": "green", "noop": "yellow"}.get(res.outcome, "red")
        out.print(
            f"[{color}]{res.outcome}[/]: {escape(res.message)}  [dim](request {res.request_id})[/]"
        )
    if res.outcome == "refused":
        raise typer.Exit(1)


ByOpt = Annotated[str, typer.Option("--by", help="Who decides (recorded in the audit log).")]
RequestOpt = Annotated[
    str | None,
    typer.Option("--request-id", help="Idempotency key: the same request twice is done once."),
]
ExpectOpt = Annotated[
    str | None,
    typer.Option(
        "--expect-champion",
        help="The champion you saw ('none' if there was none); refused if it "
        "changed meanwhile. Default: the champion now.",
    ),
]


def _expected(expect_champion: str | None) -> Any:
    """--expect-champion as the registry takes it: ... (whatever it is now), None or a version."""
    if expect_champion is None:
        return ...
    return None if expect_champion.lower() == "none" else expect_champion


@app.command()
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


@app.command()
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

    try:
        settings = _project(config)
        with err.status(doing):
            res = train_and_register(settings, **kwargs)
    except MlopsError as e:
        _fail(str(e))
        return
    except Exception as e:  # MLflow gone or refusing an upload, a full disk: one line
        from mlflow.exceptions import MlflowException

        if not isinstance(e, MlflowException | OSError):
            raise
        from mlops_core.config import redact_url
        from mlops_core.ops.services import tracking_uri

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        _fail(
            f"training failed, nothing was registered: {type(e).__name__}: {first[:300]} "
            f"(MLflow at {redact_url(tracking_uri(settings))}; more with --verbose)"
        )
        return
    if as_json:
        _print_json(res.to_dict())
        return
    _print_training(res, settings)


def _print_training(res: Any, settings: Any) -> None:
    color = {"pending_approval": "yellow", "approved": "green"}.get(res.status, "red")
    if "online_base" in res.best_params:
        what = (
            f"online, v{res.best_params['online_base']} continued on "
            f"{res.best_params['rows_learnt']:,} new labelled rows"
        )
    else:
        what = (
            f"{settings.model.type}, {res.rows:,} rows, {res.batches} batches, {res.trials} trials"
        )
    out.print(f"Version [bold]{res.version}[/] ({what}): [{color}]{res.status}[/]")
    for k, v in res.metrics.items():
        champ = res.champion_metrics.get(k) if res.champion_metrics else None
        out.print(
            f"  {k:>18} {v:8.4f}"
            + (f"   champion v{res.champion_version}: {champ:.4f}" if champ is not None else "")
        )
    for r in res.gate.reasons:
        out.print(f"  [{'green' if r.startswith('PASS') else 'red'}]{escape(r)}[/]")
    if res.status == "pending_approval":
        out.print(f"Approve with: [bold]mlops approve {res.version} --by NAME --comment WHY[/]")


@app.command()
def models(config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False) -> None:
    """All versions with their status, aliases, trigger and hold-out metrics."""
    try:
        reg = _registry(config)
        versions = reg.versions()
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"versions": [v.to_dict() for v in versions]})
        return
    t = Table(title=f"{reg.name}: {len(versions)} version(s)", title_justify="left")
    for c in ("version", "status", "aliases", "trigger", "created", "metrics"):
        t.add_column(c)
    for v in versions:
        t.add_row(
            v.version,
            v.status,
            ", ".join(v.aliases),
            v.trigger,
            f"{v.created:%Y-%m-%d %H:%M}",
            "  ".join(f"{k}={x:.3f}" for k, x in list(v.metrics.items())[:4]),
        )
    out.print(t)


@app.command()
def approve(
    version: Annotated[str, typer.Argument(help="The pending version to make champion.")],
    by: ByOpt,
    comment: Annotated[str, typer.Option(help="Why (required; kept in the audit log).")],
    expect_champion: ExpectOpt = None,
    request_id: RequestOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Approve a pending version: it becomes champion (audited first, then the alias moves)."""
    from mlops_core.ops.actions import approve as approve_version

    try:
        res = approve_version(
            _project(config),
            _cli_principal(by),
            version,
            comment=comment,
            expected_champion=_expected(expect_champion),
            request_id=request_id,
        )
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    _print_decision(res, as_json)


@app.command()
def reject(
    version: Annotated[str, typer.Argument(help="The pending version to reject.")],
    by: ByOpt,
    comment: Annotated[str, typer.Option(help="Why (required; kept in the audit log).")],
    request_id: RequestOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Reject a pending version."""
    from mlops_core.ops.actions import reject as reject_version

    try:
        res = reject_version(
            _project(config), _cli_principal(by), version, comment=comment, request_id=request_id
        )
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    _print_decision(res, as_json)


@app.command()
def rollback(
    by: ByOpt,
    comment: Annotated[str, typer.Option(help="Why (required; kept in the audit log).")],
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

    try:
        res = rollback_version(
            _project(config),
            _cli_principal(by),
            to=to,
            comment=comment,
            expected_champion=_expected(expect_champion),
            request_id=request_id,
        )
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    _print_decision(res, as_json)


@app.command()
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
    request_id: RequestOpt = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Request a retraining now. The request is recorded in the audit log and published as
    mlops.retrain.requested (by the publish-events deployment, or [bold]mlops publish[/]) when
    Prefect runs; the training deployment trains on that event. With dashboard.four_eyes, the
    version it trains must be approved by someone else."""
    from mlops_core.ops.actions import request_retrain

    try:
        res = request_retrain(
            _project(config), _cli_principal(by), reason=reason, request_id=request_id
        )
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    if as_json:
        _print_json(res.to_dict())
        return
    color = "green" if res.outcome == "applied" else "yellow"
    out.print(
        f"[{color}]{res.outcome}[/]: {escape(res.message)}  [dim](request {res.request_id})[/]"
    )


def _users_file(config: Path, file: Path | None) -> Path:
    """--file, or the project's users file; either way outside the project's repository."""
    from mlops_core.ops.auth import check_outside_repository, users_path

    if file is not None:
        base = _settings(config).base_dir if config.is_file() else Path.cwd()
        return check_outside_repository(file, base)
    return users_path(_settings(config))


UsersFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The users file (default: dashboard.users_file of the config, else "
        "~/.config/mlops/<project>/users.yaml).",
    ),
]


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, _ . @ + -).")],
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="viewer (reads) or approver (also "
            "approves, rejects, rolls back, releases, retrains).",
        ),
    ],
    file: UsersFileOpt = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from the first line of stdin (scripts) instead of prompting.",
        ),
    ] = False,
    config: ConfigOpt = Path("mlops.yaml"),
) -> None:
    """Add a dashboard user, or change one's role and password. The password is prompted twice,
    hidden; only its scrypt hash is stored, in a file of mode 0600."""
    from mlops_core.ops.auth import ROLES, add_user

    if role not in ROLES:
        _fail(f"unknown role '{role}'; roles: {', '.join(ROLES)}")
        return
    try:
        path = _users_file(config, file)
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt(
                f"Password for {name}", hide_input=True, confirmation_prompt=True, err=True
            )
        add_user(path, name, password, role)
    except MlopsError as e:
        _fail(str(e))
        return
    out.print(f"{escape(name)} is a dashboard {role} ({path})")


@users_app.command("list")
def users_list(
    file: UsersFileOpt = None, config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False
) -> None:
    """Dashboard users and their roles (never the hashes)."""
    from mlops_core.ops.auth import load_users

    try:
        path = _users_file(config, file)
        users = load_users(path)
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"file": str(path), "users": [u.to_dict() for u in users.values()]})
        return
    if not users:
        out.print(
            f"No users in {path}: add one with [bold]mlops users add NAME --role approver[/]."
        )
        return
    t = Table(title=f"{len(users)} user(s) in {path}", title_justify="left")
    for c in ("user", "role"):
        t.add_column(c)
    for u in users.values():
        t.add_row(escape(u.name), u.role)
    out.print(t)


@app.command()
def audit(
    config: ConfigOpt = Path("mlops.yaml"),
    limit: Annotated[int, typer.Option(help="Newest records to show.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: every approval, rejection, promotion and rollback, newest first."""
    try:
        recs = _registry(config).audit(limit=limit)
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"audit": [r.to_dict() for r in recs]})
        return
    t = Table(title="Audit log", title_justify="left")
    for c in ("at", "actor", "action", "version", "previous", "outcome", "reason"):
        t.add_column(c, overflow="fold")
    for r in recs:
        t.add_row(
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            r.actor,
            r.action,
            r.version or "",
            r.previous_champion or "",
            r.outcome,
            escape(r.reason),
        )
    out.print(t)


@app.command()
def package(
    version: Annotated[str, typer.Argument(help="Version to package.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    config: ConfigOpt = Path("mlops.yaml"),
) -> None:
    """Write a self-contained folder: the MLflow model and a Dockerfile that serves it."""
    from mlops_core.serve.packaging import package_version

    try:
        folder = package_version(_registry(config), version, out_dir)
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    out.print(
        f"Wrote {folder}. Build and run where Docker runs:\n"
        f"  docker build -t {folder.name} {folder}\n"
        f"  docker run -p 8080:8080 {folder.name}"
    )


@app.command()
def monitor(
    batch: Annotated[
        list[str] | None,
        typer.Option(
            "--batch",
            help="Batch id to monitor (repeatable). Default: the batches accepted since "
            "the last monitoring run.",
        ),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain",
            help="If the policy decides to retrain, train now (as `mlops train "
            "--trigger REASONS`).",
        ),
    ] = False,
    report: Annotated[
        bool | None,
        typer.Option(
            "--report/--no-report",
            help="Write the Evidently HTML report (default: on a drift, per monitoring.report).",
        ),
    ] = None,
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
) -> None:
    """Compare new batches with the champion's reference: data drift (Evidently), realised and
    estimated performance, concept-drift detectors; then the retraining policy decides."""
    from mlops_core.monitor.run import monitor as run_monitor
    from mlops_core.monitor.run import record_action

    try:
        settings = _project(config)
        with err.status("Monitoring..."):
            res = run_monitor(settings, batch, report=report)
        trained = None
        if retrain and res.decision and res.decision.retrain:
            from mlops_core.train.pipeline import train_and_register

            with err.status(f"Retraining ({res.decision.trigger})..."):
                trained = train_and_register(
                    settings,
                    trigger=res.decision.trigger,
                    since=res.decision.since,  # type: ignore[arg-type]
                )
            record_action(_metadata(settings), res.id, trained.to_dict())
    except (MlopsError, LookupError) as e:
        _fail(str(e))
        return
    if as_json:
        _print_json(res.to_dict() | {"training": trained.to_dict() if trained else None})
        return
    d = res.drift
    color = {"ok": "green", "drift": "red"}.get(d.status, "yellow")
    out.print(
        f"Monitoring run [bold]{res.id}[/]: champion v{res.champion_version}, "
        f"{len(res.batch_ids)} batch(es), {res.rows:,} rows ({res.labelled_rows:,} "
        f"labelled)"
    )
    out.print(f"  data drift: [{color}]{d.status}[/] {escape(d.message)}")
    for c in d.columns:
        if c.drifted or c.status in ("all_missing", "constant"):
            detail = (
                f"{c.method} {c.score:.3f} (threshold {c.threshold:g})"
                if c.score is not None
                else c.status
            )
            out.print(
                f"    {'[red]drift[/]' if c.drifted else '[yellow]skipped[/]'} "
                f"{escape(c.column)}: {detail}"
            )
    m = res.metric
    if res.performance:
        out.print(
            f"  realised {m}: {res.performance.get(m, float('nan')):.4f} "
            f"(champion at training {res.baseline.get(m, float('nan')):.4f})"
        )
    if m in res.estimated:
        est = res.estimated[m]
        out.print(
            f"  estimated {m} without labels: {est['value']:.4f} "
            f"[{est['low']:.4f}, {est['high']:.4f}]"
        )
    for rec in res.reconciled:
        out.print(
            f"  labels arrived for run {rec['run']}: realised {rec['metric']} "
            f"{rec['realised']:.4f} vs estimated {rec['estimated']:.4f} "
            f"[{rec['low']:.4f}, {rec['high']:.4f}] on {rec['rows']:,} rows"
        )
    for det in res.detectors:
        out.print(
            f"  detector {det.name}: {'[red]fired[/]' if det.fired else 'quiet'} "
            f"on {det.rows:,} rows"
        )
    dec = res.decision
    if dec:
        verdict = "[red]retrain[/]" if dec.retrain else "no retrain"
        out.print(f"  decision: {verdict}")
        for r in dec.reasons:
            out.print(
                f"    signal: {escape(r.text)}"
                + (
                    f" [dim](pending since {_when(r.since)})[/]"
                    if r.since and r.since != dec.at
                    else ""
                )
            )
        for h in dec.held_back:
            out.print(f"    held back: {escape(h.text)} [dim](stays pending)[/]")
        if not dec.reasons:
            for f in dec.nearest:
                out.print(f"    nearest: {escape(f.text)}")
            if not dec.nearest:
                out.print("    nearest: no signal was measured (no labels, too few rows)")
        if dec.retrain and dec.since is not None:
            out.print(f"    window: from the change at {_when(dec.since)} on")
    if res.report:
        out.print(f"  report: {settings.workspace / res.report}")
    if trained:
        _print_training(trained, settings)


def _metadata(settings: Any) -> Any:
    from mlops_core.store import MetadataStore

    return MetadataStore(settings.db_url)


@app.command()
def decisions(
    config: ConfigOpt = Path("mlops.yaml"),
    limit: Annotated[int, typer.Option(help="Newest decisions to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Why the system did or did not retrain: every monitoring run's decision, newest first."""
    from mlops_core.monitor.run import list_decisions, list_runs

    try:
        settings = _project(config)
        meta = _metadata(settings)
        decided = list_decisions(meta, settings.project, limit)
        runs = {r["id"]: r for r in list_runs(meta, settings.project, limit * 2)}
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"decisions": decided})
        return
    if not decided:
        out.print("No monitoring decisions yet: run [bold]mlops monitor[/].")
        return
    t = Table(title="Retraining decisions", title_justify="left")
    for c in ("at", "run", "drift", "retrain", "signals (or the nearest)", "held back", "acted"):
        t.add_column(c, overflow="fold")
    for d in decided:
        run = runs.get(d["monitoring_run"] or "", {})
        acted = d.get("acted") or {}
        why = (
            "\n".join(d["reasons"])
            or "\n".join(f"[dim]{escape(n)}[/]" for n in d.get("nearest") or [])
            or "-"
        )
        held = "\n".join(d["held_back"]) + (
            f"\npending since {d['pending_since']}" if d.get("pending_since") else ""
        )
        t.add_row(
            f"{d['at']:%Y-%m-%d %H:%M}",
            d["monitoring_run"] or "",
            str(run.get("status", "")),
            "[red]yes[/]" if d["retrain"] else "no",
            why if not d["reasons"] else escape(why),
            escape(held),
            f"v{acted['version']} {acted.get('status', '')}" if acted.get("version") else "",
        )
    out.print(t)


@app.command()
def backtest(
    data: Annotated[
        Path,
        typer.Option("--data", help="Historical data: a Parquet, CSV or JSON file with labels."),
    ],
    target: Annotated[
        str | None,
        typer.Option("--target", help="Label column (default: data.target of the config)."),
    ] = None,
    time_col: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="Time column; rows are replayed in its order. Without it, the file's "
            "order, and batch i counts as day i for the policy's durations.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Rows per batch.")
    ] = None,
    batch_period: Annotated[
        str | None,
        typer.Option(
            "--batch-period", help="One batch per period of the time column, e.g. 7D or W."
        ),
    ] = None,
    initial_batches: Annotated[
        int, typer.Option("--initial-batches", min=1, help="Batches that train the first model.")
    ] = 5,
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            help="Training window: newest ROWS, or a PERIOD such as 180D (default: "
            "model.window of the config; neither = all labelled rows).",
        ),
    ] = None,
    label_delay: Annotated[
        int, typer.Option("--label-delay", min=0, help="Batches until a batch's labels arrive.")
    ] = 0,
    strategies: Annotated[
        str,
        typer.Option(
            "--strategies",
            help="Comma-separated: static, periodic:P, every-batch, performance, "
            "drift, detector:adwin|page-hinkley|ddm, estimated, online, policy.",
        ),
    ] = ",".join(
        (
            "static",
            "every-batch",
            "periodic:10",
            "performance",
            "drift",
            "detector:adwin",
            "estimated",
            "policy",
        )
    ),
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric", help="Metric to compare on (default: accuracy; rmse for regression)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="MLOPS_CONFIG",
            help="Configuration whose model, monitoring "
            "and retraining policy to replay (default: ./mlops.yaml if present, else defaults).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the result here (JSON; docs/backtest.md).")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write an HTML page with the charts here.")
    ] = None,
) -> None:
    """Replay a labelled history batch by batch and compare retraining strategies on quality
    against retraining cost, with the same training, monitoring and policy code as production.

    With a project configuration (--config, $MLOPS_CONFIG or ./mlops.yaml), the result is also
    saved as JSON under [bold]<workspace>/backtests/[/], where the dashboard's Backtests page
    shows it.

    Example: [bold]mlops backtest --data history.parquet --target y --time ts --batch-period 7D
    --json bt.json --html bt.html[/]"""
    from mlops_core.backtest.engine import load_history, run_backtest, write_html, write_json

    try:
        cfg = (
            config
            if config is not None
            else (Path("mlops.yaml") if Path("mlops.yaml").is_file() else None)
        )
        settings = _settings(cfg) if cfg is not None else None
        replay = load_history(
            data,
            target=target,
            time_column=time_col,
            batch_size=batch_size,
            batch_period=batch_period,
            initial_batches=initial_batches,
            window=window,
            label_delay=label_delay,
            settings=settings,
        )
        names = [s.strip() for s in strategies.split(",") if s.strip()]
        for note in replay.notes:
            err.print(f"[dim]note: {escape(note)}[/]")
        progress = Progress(
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} batches"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        tasks: dict[str, Any] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        with progress:
            result = run_backtest(replay, names, metric=metric, progress=on_progress)
    except (MlopsError, FileNotFoundError) as e:
        _fail(str(e))
        return
    m = result.metric_name
    table = Table(
        title=f"Backtest of {result.dataset}: {result.batches} batches scored "
        f"({replay.n_batches} in all, {replay.initial_batches} to start)",
        title_justify="left",
    )
    for col in (
        "strategy",
        f"mean {m}",
        "retrains",
        "train CPU s",
        "monitor CPU s",
        "detection delay",
        "false triggers",
    ):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for s in result.strategies:
        delays = ", ".join("-" if d is None else str(d) for d in s.detection_delays) or "n/a"
        table.add_row(
            s.name,
            "n/a" if s.mean_metric is None else f"{s.mean_metric:.4f}",
            f"{s.retrains} ({s.retrains / max(result.batches, 1):.0%})",
            f"{s.train_cpu_s:.1f}",
            f"{s.monitor_cpu_s:.1f}",
            delays,
            "n/a" if s.false_triggers is None else str(s.false_triggers),
        )
    out.print(table)
    if json_out:
        out.print(f"JSON: {write_json(result, json_out)}")
    if html_out:
        out.print(f"HTML: {write_html(result, html_out)}")
    if settings is not None:  # where the dashboard's Backtests page finds it
        import time

        from mlops_core.read.views import backtests_dir

        kept = backtests_dir(settings) / f"{data.stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.print(f"Saved for the dashboard: {write_json(result, kept)}")


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the demo project.")
    ] = Path("demo-project"),
    rows: Annotated[int, typer.Option(help="Rows in the generated stream.", min=1000)] = 100_000,
    days: Annotated[int, typer.Option(help="Days the stream covers.", min=28)] = 364,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete an existing demo project first.")
    ] = False,
    train: Annotated[
        bool,
        typer.Option(
            "--train/--no-train", help="Also train a first model and leave it awaiting approval."
        ),
    ] = True,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Bring the system up (`mlops up`: Prefect, worker, MLflow, dashboard) "
            "and replay the stream through the real deployments, a few weeks at a time: ingest and "
            "monitor runs, drift, a retrain started by the mlops.retrain.requested event, a "
            "candidate awaiting approval (a few minutes). `make up` runs this.",
        ),
    ] = False,
    per_step: Annotated[
        int, typer.Option(help="With --replay: weekly files landing per step.", min=1)
    ] = 6,
    initial: Annotated[
        int, typer.Option(help="With --replay: weeks the first model trains on.", min=2)
    ] = 16,
    as_json: JsonOpt = False,
) -> None:
    """Generate a demo project (loan applications with drift, dropped weekly into a landing
    folder, a few of them faulty), ingest it batch by batch, and train a first model; with
    --replay, the same through the running system's deployments."""
    from mlops_core.config import load_config
    from mlops_core.demo.stream import ID, TARGET, TIME, generate_stream, write_landing
    from mlops_core.ops.scaffold import InferredSchema, render_config

    if fresh and directory.exists():
        from mlops_core.ops.services import stop_all

        if (directory / "mlops.yaml").exists():
            with contextlib.suppress(MlopsError):
                stop_all(load_config(directory / "mlops.yaml").workspace)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / "mlops.yaml"
    stream = generate_stream(rows, days=days, seed=seed)
    # with --replay the weekly files wait in incoming/ and land during the replay
    drop = directory / ("incoming" if replay else "landing")
    if not (directory / "landing").exists() and not drop.exists():
        files = write_landing(stream, drop)
        (directory / "drift_points.json").write_text(stream.drift_json(), encoding="utf-8")
        if not as_json:
            faults = [f for f in files if f.fault]
            out.print(
                f"Generated {rows:,} loan applications over {days} days into "
                f"{len(files)} weekly files in [bold]{drop}[/] "
                f"({len(faults)} spoiled on purpose: "
                f"{', '.join(sorted({f.fault or '' for f in faults}))})."
            )
            for p in stream.drift_points:
                out.print(
                    f"  true drift: [bold]{p.kind}[/] {p.start:%Y-%m-%d}"
                    + (f" → {p.end:%Y-%m-%d}" if p.end != p.start else "")
                    + f": {p.description}"
                )
    if not cfg_path.exists():
        schema = InferredSchema("binary", **stream.features)  # type: ignore[arg-type]
        text = render_config(
            project="loans-demo",
            data=Path("landing"),
            target=TARGET,
            time=TIME,
            id_col=ID,
            schema=schema,
            source_kind="folder",
            trials=5,
            # the replay sends the applications through the serving API:
            # monitoring measures what it answered, the online model learns
            monitoring_source="predictions" if replay else "batches",
            online=replay,
        )
        cfg_path.write_text(text, encoding="utf-8")
    settings = load_config(cfg_path)
    if replay:
        _replay_demo(settings, cfg_path, directory, initial, per_step, as_json)
        return
    result = run_ingest(settings, None, as_json)
    trained = None
    if train:
        from mlops_core.train.pipeline import train_and_register

        if not as_json:
            out.print(
                "\nTraining a first model on the labelled batches (search, hold-out, "
                "smoke test, gate)..."
            )
        with err.status("Training..."):
            trained = train_and_register(settings, trigger="demo")
        if not as_json:
            _print_training(trained, settings)
    if as_json:
        _print_json(
            result
            | {
                "project": str(cfg_path.resolve()),
                "training": trained.to_dict() if trained else None,
            }
        )
    else:
        out.print(
            f"\nProject: [bold]{cfg_path}[/]. Next: mlops quarantine list -c {cfg_path}"
            + (f"; mlops models -c {cfg_path}" if trained else "")
        )


def _replay_demo(
    settings: Any, cfg_path: Path, directory: Path, initial: int, per_step: int, as_json: bool
) -> None:
    """`mlops demo --replay`: up, then the stream through the deployments."""
    from mlops_core.demo.replay import DEMO_ACTOR, Tick, incoming_files, replay
    from mlops_core.ops.actions import approve
    from mlops_core.ops.auth import Principal

    incoming, landing = directory / "incoming", settings.resolve(settings.data.source.path)
    if not incoming_files(incoming):
        out.print(
            f"The stream was replayed already ({landing} holds it). Start over with "
            f"[bold]mlops demo --replay --fresh --dir {directory}[/], or see "
            f"[bold]mlops status -c {cfg_path}[/]."
        )
        return
    try:
        # the worker polls every 2 s (Prefect's default is 10): the demo is a few minutes
        urls = _bring_up(settings, cfg_path, worker_env={"PREFECT_WORKER_QUERY_SECONDS": "2"})
    except (MlopsError, RuntimeError, OSError) as e:
        _fail(str(e))
        return
    if not as_json:
        _print_up(urls)
        out.print(
            f"\nReplaying {len(incoming_files(incoming))} weekly files through the "
            f"deployments, {per_step} weeks per step (the policy counts in data time: "
            f"weeks of data, not seconds of replay). Watch the runs in Prefect "
            f"({urls['prefect']}) and the dashboard.\n"
        )
    demo = Principal(name=DEMO_ACTOR, role="approver", via="cli")

    def approve_first(version: str) -> None:
        approve(
            settings,
            demo,
            version,
            comment="the demo approves its first model so that "
            "monitoring has a champion to compare new data with",
        )

    def show(t: Tick) -> None:
        if as_json:
            return
        out.print(
            f"[bold]step {t.number}[/]: {len(t.files)} files landed → "
            f"{t.accepted} batches accepted ({t.rows:,} rows)"
            + (f", {t.nothing_new} held nothing new" if t.nothing_new else "")
        )
        for q in t.quarantined:
            out.print(f"  [red]quarantined[/] {escape(q['origin'])}: {escape(q['reason'])}")
        sv = t.serving
        if sv:
            out.print(
                f"  serving: {sv['rows']:,} applications answered by "
                + ", ".join(f"v{v}" for v in sv["versions"])
                + f", {sv['labels']:,} labels sent to /feedback"
                + (f", [red]{sv['refused']} request(s) refused[/]" if sv["refused"] else "")
                + (f", {sv['unreadable']} file(s) unreadable" if sv["unreadable"] else "")
            )
            for e in sv["errors"][:2]:
                out.print(f"    [dim]{escape(e)}[/]")
        m = t.monitoring
        if m:
            drift = m.get("weighted_drift_share") or m.get("drift_share") or 0.0
            out.print(
                f"  monitor: {m['status']}, drift share {drift:.0%}"
                + (f" ({', '.join(m['drifted'][:5])})" if m["drifted"] else "")
                + (f", detectors fired: {', '.join(m['detectors'])}" if m["detectors"] else "")
            )
            if m["retrain"]:
                out.print("  decision: [red]retrain[/] — " + escape("; ".join(m["reasons"])))
                out.print(
                    f"  mlops.retrain.requested → train run "
                    f"[bold]{t.training_run or '(not seen yet)'}[/]"
                )
            elif m["held_back"]:
                out.print(
                    "  decision: held back — "
                    + escape("; ".join(m["held_back"]))
                    + " — pending: "
                    + escape("; ".join(m["reasons"]))
                    + (f" (since {m['pending_since']})" if m.get("pending_since") else "")
                )
            else:
                out.print(
                    "  decision: no retrain"
                    + (f" (nearest: {escape('; '.join(m['nearest']))})" if m.get("nearest") else "")
                )
        if t.online:
            o = t.online
            out.print(
                f"  online: v{o['version']} (v{o['base']} continued on "
                f"{o['rows_learnt']} new labelled rows): {o['status']}; in shadow "
                "until approved or replaced"
                if o["status"] == "pending_approval"
                else f"  online: v{o['version']} (v{o['base']} continued on "
                f"{o['rows_learnt']} new labelled rows): {o['status']} by the gate"
            )

    try:
        with err.status("Replaying...") if not as_json else contextlib.nullcontext():
            res = replay(
                settings,
                urls["prefect_api"],
                incoming,
                landing,
                initial=initial,
                per_tick=per_step,
                approve_first=approve_first,
                on_tick=show,
                say=(lambda _m: None) if as_json else (lambda m: out.print(f"[dim]{escape(m)}[/]")),
                serving_url=urls.get("serving"),
            )
    except (MlopsError, RuntimeError, OSError) as e:
        _fail(f"the replay stopped: {e}")
        return
    swap = _demo_swap(settings, res, urls, demo, landing, as_json)
    if as_json:
        _print_json(
            res.to_dict()
            | {
                "services": urls,
                "project": str(cfg_path.resolve()),
                "swap": swap,
                "champion": swap["to"] if swap and swap["swapped"] else res.champion,
            }
        )
        return
    served = [t.serving for t in res.ticks if t.serving]
    champion = swap["to"] if swap and swap["swapped"] else res.champion
    out.print(
        f"\nReplayed in {res.seconds:.0f} s. Champion: v{champion}."
        + (
            f" Serving answered {sum(x['rows'] for x in served):,} applications and "
            f"took {sum(x['labels'] for x in served):,} labels ({urls['serving']})."
            if served
            else ""
        )
    )
    for r in res.training_runs:
        out.print(
            f"  train run {r['name']} (trigger {r['trigger']}, started by "
            f"mlops.retrain.requested): {r['state']}"
        )
    if swap:
        out.print(
            f"  the demo approved v{swap['to']} (the retrain its policy asked for) to "
            f"show the hot swap: serving answered with "
            f"{' → '.join('v' + v for v in swap['versions'])} after {swap['seconds']} s, "
            f"{swap['answered']} requests answered meanwhile, {swap['failed']} failed"
        )
    for p in res.pending:
        if swap and p["version"] == swap["to"]:
            continue
        out.print(
            f"  [bold]v{p['version']}[/] awaits approval (trigger {p['trigger']}): "
            f"[bold]mlops approve {p['version']} --by NAME --comment WHY -c {cfg_path}[/]"
            + (f" or on the dashboard, {urls['dashboard']}/approvals" if urls["dashboard"] else "")
        )
    out.print(f"Stop everything with [bold]mlops down -c {cfg_path}[/].")


def _demo_swap(
    settings: Any, res: Any, urls: dict[str, Any], demo: Any, landing: Path, as_json: bool
) -> dict[str, Any] | None:
    """The end of the demo's loop: approve the newest retrain the policy asked for (audited,
    by 'demo'), send the approval as an event (the promote flow tells serving to reload) and
    watch serving answer with it, without a failed request. None when no retrain passed."""
    from mlops_core.demo.replay import watch_swap
    from mlops_core.ops.actions import approve
    from mlops_core.ops.orchestration import start_run
    from mlops_core.serve.app import json_records

    retrained = [p for p in res.pending if p["trigger"] != "online"]
    if not retrained or not urls.get("serving"):
        return None
    version = retrained[-1]["version"]
    files = sorted(p for p in landing.iterdir() if p.suffix == ".parquet")
    if not files:
        return None
    row = _first_row(files[-1], settings.data.target)
    outcome = approve(
        settings,
        demo,
        version,
        comment="the demo approves the retrain its "
        "policy asked for, to show serving's hot swap; in your project a person "
        "decides",
    )
    if outcome.outcome != "applied":
        return None
    start_run(urls["prefect_api"], "publish-events", settings.project)
    if not as_json:
        out.print(
            f"\nv{version} approved by 'demo'; mlops.model.approved → the promote "
            "deployment tells serving to reload..."
        )
    return watch_swap(urls["serving"], json_records(row)[0], version)


def _first_row(path: Path, target: str | None) -> Any:
    import pandas as pd

    return pd.read_parquet(path).drop(columns=[target] if target else [], errors="ignore").head(1)


# Orchestration: Prefect server, work pool and worker, deployments ------------------------------
def _prefect_env_for(settings: Any) -> str | None:
    """Point this process at the project's Prefect server (if it runs); returns its API URL.
    A PREFECT_API_URL already set (another server) wins."""
    from mlops_core.ops.services import prefect_api_url, prefect_env

    api = os.environ.get("PREFECT_API_URL") or prefect_api_url(settings.workspace)
    if api:
        for k, v in prefect_env(settings.workspace, api).items():
            os.environ.setdefault(k, v)
    return api


def _deploy(settings: Any, config: Path, out_file: Path | None, api: str | None) -> Path:
    from flows.deploy import apply, config_parameter, render_prefect_yaml
    from mlops_core.ops.services import prefect_env, prefect_home

    text = render_prefect_yaml(settings, config_parameter(config))
    target = out_file or prefect_home(settings.workspace) / "prefect.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    if api:
        apply(target, api, prefect_env(settings.workspace, api))
    return target


@app.command()
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
    try:
        settings = _project(config) if do_apply else _settings(config)
        if not do_apply:
            from flows.deploy import config_parameter, render_prefect_yaml

            text = render_prefect_yaml(settings, config_parameter(config))
            if out_file is None:
                sys.stdout.write(text)
            else:
                out_file.write_text(text, encoding="utf-8")
                out.print(f"Wrote {out_file}")
            return
        api = _prefect_env_for(settings)
    except MlopsError as e:
        _fail(str(e))
        return
    if not api:
        _fail("the project's Prefect server is not running: start it with `mlops up`")
        return
    try:
        with err.status("Applying the deployments (prefect deploy --all)..."):
            target = _deploy(settings, config, out_file, api)
    except (MlopsError, RuntimeError, OSError) as e:
        _fail(str(e))
        return
    out.print(f"Applied {target} to {api}")


def _bring_up(
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

    from mlops_core.ops.services import (
        dashboard_app,
        mlflow_artifact_root,
        start_dashboard,
        start_mlflow,
        start_prefect,
        start_serving,
    )
    from mlops_core.store import open_project

    ws = settings.workspace
    open_project(ws, settings.db_url, create=True)
    t0 = time.perf_counter()
    pool = settings.orchestration.work_pool
    with err.status("Starting the Prefect server, work pool and worker..."):
        # no worker for a docker or kubernetes pool: its workers run where Docker or K8s is
        server, worker = start_prefect(
            ws,
            timeout_s=timeout,
            worker_env=worker_env,
            pool=pool,
            db_url=settings.storage.prefect_db_url,
        )
    mlflow_info = None
    if not settings.storage.mlflow_uri:
        with err.status("Starting the MLflow server..."):
            mlflow_info = start_mlflow(
                ws,
                timeout_s=timeout,
                backend_uri=settings.storage.mlflow_backend_uri,
                artifacts=mlflow_artifact_root(settings),
            )
    dashboard = None
    if dashboard_app().is_file():
        with err.status("Starting the dashboard..."):
            dashboard = start_dashboard(
                ws, config, port=_free_or_none(settings.dashboard.port), timeout_s=timeout
            )
    with err.status("Starting the serving API..."):
        serving = start_serving(
            ws, config, port=_free_or_none(settings.serving.port), timeout_s=timeout
        )
    api = f"{server.url}/api"
    deployed = None
    if deploy:
        for k, v in {"PREFECT_API_URL": api, "PREFECT_HOME": str(ws / "prefect")}.items():
            os.environ[k] = v
        with err.status("Creating the deployments..."):
            deployed = _deploy(settings, config, None, api)
    return {
        "prefect": server.url,
        "prefect_api": api,
        "work_pool": pool,
        "worker_health": worker.health_url if worker else None,
        "mlflow": mlflow_info.url if mlflow_info else settings.storage.mlflow_uri,
        "dashboard": dashboard.url if dashboard else None,
        "serving": serving.url,
        "prefect_yaml": str(deployed) if deployed else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _free_or_none(port: int) -> int | None:
    """``port`` when it is free (else None: any free port)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return None
    return int(port)


def _print_up(urls: dict[str, Any]) -> None:
    out.print(f"Up in {urls['seconds']:.0f} s:")
    out.print(f"  Prefect UI and API  {urls['prefect']}  (api {urls['prefect_api']})")
    if urls["worker_health"]:
        out.print(
            f"  Prefect worker      pool '{urls['work_pool']}', health {urls['worker_health']}"
        )
    else:
        out.print(
            f"  work pool           '{urls['work_pool']}' is not a process pool: no worker "
            "here; run one where Docker or Kubernetes is: [bold]prefect worker start "
            f"--pool {urls['work_pool']}[/] (with PREFECT_API_URL set)"
        )
    out.print(f"  MLflow              {urls['mlflow']}")
    if urls["dashboard"]:
        out.print(f"  dashboard           [bold]{urls['dashboard']}[/]")
    out.print(
        f"  serving API         [bold]{urls['serving']}[/]  (POST /predict, /feedback; "
        "GET /model, /metrics, /docs)"
    )
    if urls["prefect_yaml"]:
        out.print(f"  deployments         {urls['prefect_yaml']}")
    out.print(
        f"Point Prefect's CLI at it: [bold]export PREFECT_API_URL={urls['prefect_api']}[/]. "
        "See [bold]mlops status[/]; stop with [bold]mlops down[/]."
    )


@app.command()
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
    try:
        urls = _bring_up(_settings(config), config, deploy=with_deploy, timeout=timeout)
    except (MlopsError, RuntimeError, OSError) as e:
        _fail(str(e))
        return
    if as_json:
        _print_json(
            {
                "services": {k: v for k, v in urls.items() if k not in ("prefect_yaml", "seconds")},
                "prefect_yaml": urls["prefect_yaml"],
                "seconds": urls["seconds"],
            }
        )
        return
    _print_up(urls)


@app.command()
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

    try:
        settings = _project(config)
    except MlopsError as e:
        _fail(str(e))
        return
    err.print(
        f"Serving '{settings.project}' on http://{host}:{port or settings.serving.port} "
        "(Ctrl+C stops)"
    )
    run_serving(settings, host=host, port=port)


@app.command()
def status(config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False) -> None:
    """Each service's health, the deployments and their next runs, the champion, versions
    awaiting approval and the last retraining decisions."""
    from mlops_core.monitor.run import list_decisions
    from mlops_core.ops.orchestration import deployments_status
    from mlops_core.ops.services import prefect_api_url
    from mlops_core.read.views import service_health

    try:
        settings = _project(config)
        ws = settings.workspace
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
        api = prefect_api_url(ws)
        deps: list[dict[str, Any]] = []
        if api:
            import httpx

            try:
                deps = deployments_status(api, settings.project)
            except httpx.HTTPError as e:
                err.print(f"[yellow]cannot read the deployments from {api}: {escape(str(e))}[/]")
        reg = _registry(config)
        versions = reg.versions()
        champion = reg.champion()
        pending = [v.to_dict() for v in versions if v.status == "pending_approval"]
        decided = list_decisions(_metadata(settings), settings.project, 5)
    except (MlopsError, RuntimeError) as e:
        _fail(str(e))
        return
    if as_json:
        _print_json(
            {
                "services": services,
                "deployments": deps,
                "champion": champion,
                "pending": pending,
                "decisions": decided,
            }
        )
        return
    t = Table(title="Services", title_justify="left")
    for c in ("service", "health", "url", "pid"):
        t.add_column(c)
    for s in services:
        health = (
            "[dim]direct store[/]"
            if s["where"] == "direct"
            else (
                "[green]healthy[/]"
                if s["healthy"]
                else ("[red]unhealthy[/]" if s["running"] else "[dim]stopped[/]")
            )
        )
        if s["where"] == "external":
            health += " (external)"
        t.add_row(str(s["name"]), health, str(s["url"] or ""), str(s["pid"] or ""))
    out.print(t)
    if deps:
        t = Table(title="Deployments", title_justify="left")
        for c in ("deployment", "schedules", "triggers", "next runs", "last run"):
            t.add_column(c, overflow="fold")
        for d in deps:
            t.add_row(
                d["name"],
                "\n".join(d["schedules"]) or "-",
                "\n".join(d["triggers"]) or "-",
                "\n".join(d["next_runs"][:3]) or "-",
                d["last_run"] or "-",
            )
        out.print(t)
    elif api:
        out.print("No deployments: run [bold]mlops deploy --apply[/].")
    out.print(f"Champion: {'v' + champion if champion else 'none'}")
    for p in pending:
        out.print(
            f"  awaiting approval: v{p['version']} (trigger {p['trigger']}): "
            f"[bold]mlops approve {p['version']} --by NAME --comment WHY[/]"
        )
    for d in decided:
        verdict = "[red]retrain[/]" if d["retrain"] else "no retrain"
        out.print(f"  {d['at']:%Y-%m-%d %H:%M} {verdict} {escape('; '.join(d['reasons']) or '-')}")


@app.command()
def down(config: ConfigOpt = Path("mlops.yaml")) -> None:
    """Stop the services `mlops up` started, by process id: serving first, the worker before
    the server."""
    from mlops_core.ops.services import stop_all

    try:
        stopped = stop_all(_settings(config).workspace)
    except MlopsError as e:
        _fail(str(e))
        return
    out.print("Stopped " + (", ".join(stopped) if stopped else "nothing (none was running)"))


@app.command()
def publish(config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False) -> None:
    """Send the approvals, rejections, rollbacks and retrain requests recorded since the last
    publication as Prefect events now (mlops.model.approved / mlops.model.rejected /
    mlops.retrain.requested); the publish-events deployment does it every two minutes anyway."""
    try:
        settings = _project(config)
        if not _prefect_env_for(settings):
            _fail("no Prefect server: start it with `mlops up` (or set PREFECT_API_URL)")
            return
        from flows.events import publish_decisions

        sent = publish_decisions(settings)
    except MlopsError as e:
        _fail(str(e))
        return
    if as_json:
        _print_json({"sent": sent})
        return
    for s in sent:
        out.print(
            f"sent {s['event']} ({s['action']} "
            + (f"v{s['version']})" if s["version"] else f"by {escape(s['actor'])})")
        )
    if not sent:
        out.print("Nothing new to publish.")


def _short_helps(*apps: typer.Typer) -> None:
    """The command lists show each command's first sentence on one flowing line (a docstring's
    own line breaks would otherwise cut the list into ragged pieces); `--help` on a command
    still shows it whole."""
    for a in apps:
        for info in a.registered_commands:
            doc = info.help or (info.callback.__doc__ if info.callback else None)
            if doc and not info.short_help:
                para = " ".join(doc.strip().split("\n\n")[0].split())
                info.short_help = para.split(". ")[0].rstrip(".") + "."


_short_helps(app, quarantine_app, users_app)

if __name__ == "__main__":  # pragma: no cover
    app()
