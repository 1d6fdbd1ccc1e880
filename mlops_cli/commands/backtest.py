"""`mlops backtest`: retraining strategies compared on a labelled history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mlops_cli.errors import cli_errors
from mlops_cli.project import load_settings
from mlops_cli.render import backtest_progress, err, out, print_backtest

STRATEGIES = ",".join(
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
)

DataOpt = Annotated[
    Path,
    typer.Option("--data", help="Historical data: a Parquet, CSV or JSON file with labels."),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="Label column (default: data.target of the config)."),
]
TimeOpt = Annotated[
    str | None,
    typer.Option(
        "--time",
        help="Time column; rows are replayed in its order. Without it, the file's "
        "order, and batch i counts as day i for the policy's durations.",
    ),
]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Rows per batch.")]
BatchPeriodOpt = Annotated[
    str | None,
    typer.Option("--batch-period", help="One batch per period of the time column, e.g. 7D or W."),
]
InitialOpt = Annotated[
    int, typer.Option("--initial-batches", min=1, help="Batches that train the first model.")
]
WindowOpt = Annotated[
    str | None,
    typer.Option(
        "--window",
        help="Training window: newest ROWS, or a PERIOD such as 180D (default: "
        "model.window of the config; neither = all labelled rows).",
    ),
]
LabelDelayOpt = Annotated[
    int, typer.Option("--label-delay", min=0, help="Batches until a batch's labels arrive.")
]
StrategiesOpt = Annotated[
    str,
    typer.Option(
        "--strategies",
        help="Comma-separated: static, periodic:P, every-batch, performance, "
        "drift, detector:adwin|page-hinkley|ddm, estimated, online, policy.",
    ),
]
MetricOpt = Annotated[
    str | None,
    typer.Option("--metric", help="Metric to compare on (default: accuracy; rmse for regression)."),
]
BacktestConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="MLOPS_CONFIG",
        help="Configuration whose model, monitoring "
        "and retraining policy to replay (default: ./mlops.yaml if present, else defaults).",
    ),
]
JsonOutOpt = Annotated[
    Path | None, typer.Option("--json", help="Write the result here (JSON; docs/backtest.md).")
]
HtmlOutOpt = Annotated[
    Path | None, typer.Option("--html", help="Write an HTML page with the charts here.")
]


@cli_errors(FileNotFoundError)
def backtest(
    data: DataOpt,
    target: TargetOpt = None,
    time_col: TimeOpt = None,
    batch_size: BatchSizeOpt = None,
    batch_period: BatchPeriodOpt = None,
    initial_batches: InitialOpt = 5,
    window: WindowOpt = None,
    label_delay: LabelDelayOpt = 0,
    strategies: StrategiesOpt = STRATEGIES,
    metric: MetricOpt = None,
    config: BacktestConfigOpt = None,
    json_out: JsonOutOpt = None,
    html_out: HtmlOutOpt = None,
) -> None:
    """Replay a labelled history batch by batch and compare retraining strategies on quality
    against retraining cost, with the same training, monitoring and policy code as production.

    With a project configuration (--config, $MLOPS_CONFIG or ./mlops.yaml), the result is also
    saved as JSON under [bold]<workspace>/backtests/[/], where the dashboard's Backtests page
    shows it.

    Example: [bold]mlops backtest --data history.parquet --target y --time ts --batch-period 7D
    --json bt.json --html bt.html[/]"""
    from mlops_core.backtest.engine import load_history, write_html, write_json

    cfg = (
        config
        if config is not None
        else (Path("mlops.yaml") if Path("mlops.yaml").is_file() else None)
    )
    settings = load_settings(cfg) if cfg is not None else None
    history = load_history(
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
    for note in history.notes:
        err.print(f"[dim]note: {escape(note)}[/]")
    result = _run(history, names, metric)
    print_backtest(result, history)
    if json_out:
        out.print(f"JSON: {write_json(result, json_out)}")
    if html_out:
        out.print(f"HTML: {write_html(result, html_out)}")
    if settings is not None:
        _keep(result, settings, data)


def _run(history: Any, names: list[str], metric: str | None) -> Any:
    """The strategies replayed, a progress bar each."""
    from mlops_core.backtest.engine import run_backtest

    progress = backtest_progress()
    tasks: dict[str, Any] = {}

    def on_progress(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = progress.add_task(name, total=total)
        progress.update(tasks[name], completed=done)

    with progress:
        return run_backtest(history, names, metric=metric, progress=on_progress)


def _keep(result: Any, settings: Any, data: Path) -> None:
    """The result where the dashboard's Backtests page finds it."""
    import time

    from mlops_core.backtest.engine import write_json
    from mlops_core.read.views import backtests_dir

    kept = backtests_dir(settings) / f"{data.stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.print(f"Saved for the dashboard: {write_json(result, kept)}")
