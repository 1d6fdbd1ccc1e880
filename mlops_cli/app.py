"""The `mlops` command line (Typer): the app, its command groups and the registration of the
commands (``mlops_cli.commands``). An entry point only: commands load the configuration, call
``mlops_core`` functions and print their results (``mlops_cli.render``); those that need Prefect
import ``flows`` inside the command, so `import mlops_core` stays light."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from mlops_cli.commands import backtest, data, demo, models, monitor, services, users

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


# in the order `mlops --help` lists them
for command in (
    data.ingest,
    data.init,
    models.train,
    models.learn,
    models.models,
    models.approve,
    models.reject,
    models.rollback,
    models.retrain,
    models.audit,
    models.package,
    monitor.monitor,
    monitor.decisions,
    backtest.backtest,
    demo.demo,
    services.deploy,
    services.up,
    services.serve,
    services.status,
    services.down,
    services.publish,
):
    app.command()(command)

batches_app.callback()(data.batches)
batches_app.command("withdraw")(data.batches_withdraw)
quarantine_app.command("list")(data.quarantine_list)
quarantine_app.command("show")(data.quarantine_show)
quarantine_app.command("release")(data.quarantine_release)
users_app.command("add")(users.users_add)
users_app.command("list")(users.users_list)


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
