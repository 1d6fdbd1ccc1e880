"""`mlops demo`: a demo project, ingested and trained on; with --replay, brought up and its
stream replayed through the running system's deployments."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlops_cli.commands.data import run_ingest
from mlops_cli.commands.services import bring_up
from mlops_cli.errors import cli_errors
from mlops_cli.options import JsonOpt
from mlops_cli.render import (
    err,
    out,
    print_generated,
    print_json,
    print_replayed,
    print_tick,
    print_training,
    print_up,
)

DirOpt = Annotated[Path, typer.Option("--dir", help="Where to create the demo project.")]
RowsOpt = Annotated[int, typer.Option(help="Rows in the generated stream.", min=1000)]
DaysOpt = Annotated[int, typer.Option(help="Days the stream covers.", min=28)]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Delete an existing demo project first.")]
TrainOpt = Annotated[
    bool,
    typer.Option(
        "--train/--no-train", help="Also train a first model and leave it awaiting approval."
    ),
]
ReplayOpt = Annotated[
    bool,
    typer.Option(
        "--replay",
        help="Bring the system up (`mlops up`: Prefect, worker, MLflow, dashboard) "
        "and replay the stream through the real deployments, a few weeks at a time: ingest and "
        "monitor runs, drift, a retrain started by the mlops.retrain.requested event, a "
        "candidate awaiting approval (a few minutes). `make up` runs this.",
    ),
]
BacktestOpt = Annotated[
    bool,
    typer.Option(
        "--backtest/--no-backtest",
        help="Backtest the policy against never retraining and retraining every batch on a "
        "sample of the stream (a few seconds), for the dashboard's Backtests page.",
    ),
]
PerStepOpt = Annotated[
    int, typer.Option(help="With --replay: weekly files landing per step.", min=1)
]
InitialOpt = Annotated[
    int, typer.Option(help="With --replay: weeks the first model trains on.", min=2)
]


@cli_errors()
def demo(
    directory: DirOpt = Path("demo-project"),
    rows: RowsOpt = 100_000,
    days: DaysOpt = 364,
    seed: SeedOpt = 42,
    fresh: FreshOpt = False,
    train: TrainOpt = True,
    replay: ReplayOpt = False,
    backtest: BacktestOpt = True,
    per_step: PerStepOpt = 6,
    initial: InitialOpt = 16,
    as_json: JsonOpt = False,
) -> None:
    """Generate a demo project (loan applications with drift, dropped weekly into a landing
    folder, a few of them faulty), ingest it batch by batch, and train a first model; with
    --replay, the same through the running system's deployments."""
    from mlops_core.demo.project import create_demo_project

    project = create_demo_project(
        directory, rows=rows, days=days, seed=seed, fresh=fresh, replay=replay
    )
    if project.files is not None and not as_json:
        print_generated(project, rows, days)
    if backtest:
        _backtest(project, as_json)
    if replay:
        _replay(project.settings, project.config, directory, initial, per_step, as_json)
    else:
        _ingest_and_train(project.settings, project.config, train, as_json)


def _backtest(project: Any, as_json: bool) -> None:
    """The demo's quick backtest, once per project (a result already there is kept)."""
    from mlops_core.backtest.engine import BacktestError
    from mlops_core.demo.backtest import STRATEGIES, demo_backtest_path, write_demo_backtest

    if demo_backtest_path(project.settings).exists():
        return
    if not as_json:
        out.print(
            f"\nBacktesting the retraining policy against {' and '.join(STRATEGIES[1:])} on a "
            "sample of the stream, for the dashboard's Backtests page..."
        )
    try:
        if as_json:
            res = write_demo_backtest(project.settings, project.stream)
        else:
            with err.status("Backtesting...") as status:
                res = write_demo_backtest(
                    project.settings,
                    project.stream,
                    progress=lambda name, i, n: status.update(f"Backtesting {name}: {i}/{n}"),
                )
    except BacktestError as e:
        if not as_json:
            out.print(f"  no backtest: {escape(str(e))}")
        return
    if not as_json:
        out.print(
            f"  {res.batches} batches of {res.rows:,} rows, mean {res.metric}: "
            + ", ".join(
                f"{n} {'n/a' if m is None else f'{m:.3f}'} ({res.retrains[n]} retrains)"
                for n, m in res.mean.items()
            )
            + f"; {res.seconds:.1f} s. Saved: {escape(str(res.path))}"
        )


def _ingest_and_train(settings: Any, cfg_path: Path, train: bool, as_json: bool) -> None:
    """`mlops demo` without --replay: ingest the landing folder, train a first model."""
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
            print_training(trained, settings)
    if as_json:
        print_json(
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


def _replay(
    settings: Any, cfg_path: Path, directory: Path, initial: int, per_step: int, as_json: bool
) -> None:
    """`mlops demo --replay`: up, then the stream through the deployments."""
    from mlops_core.demo.replay import incoming_files, swap_to_retrain

    incoming, landing = directory / "incoming", settings.resolve(settings.data.source.path)
    if not incoming_files(incoming):
        out.print(
            f"The stream was replayed already ({landing} holds it). Start over with "
            f"[bold]mlops demo --replay --fresh --dir {directory}[/], or see "
            f"[bold]mlops status -c {cfg_path}[/]."
        )
        return
    urls = _up(settings, cfg_path)
    if not as_json:
        print_up(urls)
        out.print(
            f"\nReplaying {len(incoming_files(incoming))} weekly files through the "
            f"deployments, {per_step} weeks per step (the policy counts in data time: "
            f"weeks of data, not seconds of replay). Watch the runs in Prefect "
            f"({urls['prefect']}) and the dashboard.\n"
        )
    res = _run_replay(settings, urls, incoming, landing, initial, per_step, as_json)
    swap = swap_to_retrain(
        settings,
        res,
        landing,
        prefect_api=urls["prefect_api"],
        serving_url=urls.get("serving"),
        say=(lambda _m: None) if as_json else out.print,
    )
    champion = swap["to"] if swap and swap["swapped"] else res.champion
    if as_json:
        print_json(
            res.to_dict()
            | {
                "services": urls,
                "project": str(cfg_path.resolve()),
                "swap": swap,
                "champion": champion,
            }
        )
        return
    print_replayed(res, swap, champion, urls, cfg_path)


@cli_errors(RuntimeError, OSError)
def _up(settings: Any, cfg_path: Path) -> dict[str, Any]:
    # the worker polls every 2 s (Prefect's default is 10): the demo is a few minutes
    return bring_up(settings, cfg_path, worker_env={"PREFECT_WORKER_QUERY_SECONDS": "2"})


@cli_errors(RuntimeError, OSError, prefix="the replay stopped: ")
def _run_replay(
    settings: Any,
    urls: dict[str, Any],
    incoming: Path,
    landing: Path,
    initial: int,
    per_step: int,
    as_json: bool,
) -> Any:
    from mlops_core.demo.replay import FIRST_APPROVAL, approve_as_demo, replay

    with err.status("Replaying...") if not as_json else contextlib.nullcontext():
        return replay(
            settings,
            urls["prefect_api"],
            incoming,
            landing,
            initial=initial,
            per_tick=per_step,
            approve_first=lambda version: approve_as_demo(settings, version, FIRST_APPROVAL),
            on_tick=(lambda _t: None) if as_json else print_tick,
            say=(lambda _m: None) if as_json else (lambda m: out.print(f"[dim]{escape(m)}[/]")),
            serving_url=urls.get("serving"),
        )
