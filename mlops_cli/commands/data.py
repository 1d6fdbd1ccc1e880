"""Data in: `mlops init`, `mlops ingest`, `mlops batches` and `mlops quarantine`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlops_cli.errors import cli_errors, fail
from mlops_cli.options import CommentOpt, ConfigOpt, JsonOpt, RequestOpt
from mlops_cli.project import cli_principal, existing_project, load_settings, login_name
from mlops_cli.render import (
    ingest_progress,
    out,
    outcome_line,
    print_applied,
    print_batches,
    print_ingested,
    print_json,
    print_quarantined,
)

BatchIdArg = Annotated[str, typer.Argument(help="Batch id (a prefix will do).")]


def run_ingest(settings: Any, paths: list[Path] | None, as_json: bool) -> dict[str, Any]:
    """Ingest with a progress bar on stderr; returns the report as a dict."""
    from mlops_core.data.ingest import IngestReport, iter_ingest

    report = IngestReport()
    progress = ingest_progress()
    tasks: dict[str, Any] = {}

    def on_progress(origin: str, done: int, total: int | None, unit: str) -> None:
        if origin not in tasks:
            tasks[origin] = progress.add_task(Path(origin).name[:40], total=total)
        progress.update(tasks[origin], completed=done, total=total)

    with progress:
        for o in iter_ingest(settings, paths or None, progress=on_progress):
            report.outcomes.append(o)
            if not as_json:
                progress.console.print(outcome_line(o))
    if not as_json:
        print_ingested(report.to_dict())
    return report.to_dict()


@cli_errors()
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
    result = run_ingest(existing_project(config), paths, as_json)
    if as_json:
        print_json(result)


@cli_errors()
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
    if data is None:
        _create_project(config, target)
    elif target is None:
        fail("--data needs --target (the column to predict)")
    else:
        _write_project(data, target, time, id_col, config, project, force)


def _create_project(config: Path, target: str | None) -> None:
    """`mlops init` without --data: the workspace and metadata DB of an existing config."""
    from mlops_core.config import redact_url
    from mlops_core.store import open_project

    if target is not None or not config.is_file():
        fail(
            f"{config} does not exist: give --data SAMPLE --target COLUMN to write it"
            if target is None
            else "--target needs --data (a sample of the data)"
        )
    settings = load_settings(config)
    open_project(settings.workspace, settings.db_url, create=True)
    out.print(
        f"Project [bold]{escape(settings.project)}[/]: workspace {settings.workspace}, "
        f"metadata DB {escape(redact_url(settings.db_url))}. "
        f"Next: [bold]mlops ingest --config {config}[/]"
    )


def _write_project(
    data: Path,
    target: str,
    time: str | None,
    id_col: str | None,
    config: Path,
    project: str | None,
    force: bool,
) -> None:
    """`mlops init --data --target`: a new mlops.yaml inferred from the sample, and its project."""
    from mlops_core.ops.scaffold import init_project
    from mlops_core.store import open_project

    path, schema = init_project(
        data, target, time=time, id_col=id_col, out=config, project=project, force=force
    )
    settings = load_settings(path)
    open_project(settings.workspace, settings.db_url, create=True)
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


@cli_errors()
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

    recs = MetadataStore(existing_project(config).db_url).list_batches(status)
    if as_json:
        print_json({"batches": [r.to_dict() for r in recs]})
        return
    print_batches(f"{len(recs)} batch(es)", recs)


@cli_errors(LookupError)
def batches_withdraw(
    batch_id: BatchIdArg,
    comment: CommentOpt,
    config: ConfigOpt = Path("mlops.yaml"),
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Who withdraws (recorded in the audit log; default: your login name)."
        ),
    ] = None,
    request_id: RequestOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take an accepted batch out of training and monitoring; its data stays. Audited.

    The batch keeps its data and record, with status withdrawn. Use it for a batch that was
    accepted but should not have been (wrong labels, a broken upstream export)."""
    from mlops_core.ops.actions import withdraw

    res = withdraw(
        existing_project(config),
        cli_principal(by or login_name()),
        batch_id,
        comment=comment,
        request_id=request_id,
    )
    if as_json:
        print_json({"id": res.batch_id, "outcome": res.outcome, "message": res.message})
    else:
        print_applied(res.outcome, res.message)


@cli_errors()
def quarantine_list(
    config: ConfigOpt = Path("mlops.yaml"),
    as_json: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="Include released ones.")] = False,
) -> None:
    """Quarantined batches and why."""
    from mlops_core.store import MetadataStore

    recs = MetadataStore(existing_project(config).db_url).list_batches(
        ["quarantined", "released"] if all_ else "quarantined"
    )
    if as_json:
        print_json({"quarantined": [r.to_dict() for r in recs]})
        return
    if not recs:
        out.print("Nothing in quarantine.")
        return
    print_batches(f"{len(recs)} quarantined batch(es)", recs)


@cli_errors(LookupError)
def quarantine_show(
    batch_id: BatchIdArg, config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False
) -> None:
    """Every finding of one quarantined batch, and where its data is kept."""
    from mlops_core.store import MetadataStore

    settings = existing_project(config)
    rec = MetadataStore(settings.db_url).get_batch(batch_id)
    if as_json:
        print_json(rec.to_dict())
        return
    print_quarantined(rec, settings.workspace / rec.path)


@cli_errors(LookupError)
def quarantine_release(
    batch_id: BatchIdArg,
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
    request_id: RequestOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a quarantined batch after fixing its data (in the quarantine folder) or the
    contract (contract.yaml in the workspace). Audited."""
    from mlops_core.ops.actions import release

    res = release(
        existing_project(config),
        cli_principal(by or login_name()),
        batch_id,
        comment=comment,
        request_id=request_id,
        force=force,
    )
    if as_json:
        print_json(
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
