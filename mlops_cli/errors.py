"""How a command fails: one line on stderr, ``error: ...``, whatever the terminal's width, and
exit code 1; never a traceback for an error the library raised on purpose
(:class:`mlops_core.errors.MlopsError`). Commands use :func:`cli_errors` instead of their own
try/except, and :func:`fail` for a refusal of their own."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import typer
from rich.markup import escape

from mlops_cli.render import err
from mlops_core.errors import MlopsError, RegistryError

P = ParamSpec("P")
R = TypeVar("R")

# an exit on purpose (typer.Exit, a prompt's Ctrl+C) is a RuntimeError too: it passes through
_EXITS = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    # one line whatever the terminal's width: an error is read, grepped and logged whole
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(
    *also: type[Exception], prefix: str = "", failing: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a command (or a step of one) so that an :class:`MlopsError`, or one of the
    exception types ``also`` (``LookupError``, ``OSError``...), ends it with :func:`fail`
    (``prefix`` before the message).

    ``failing`` ("training failed, nothing was registered") also turns MLflow going away or
    refusing an upload, and a full disk, into one line that names the project's MLflow (the
    command's ``config`` argument says which project)."""

    caught: tuple[type[Exception], ...] = (MlopsError, *also)

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return command(*args, **kwargs)
            except _EXITS:
                raise
            except Exception as e:
                if failing is not None and _infrastructure_failure(e):
                    fail(_failed_line(failing, e, kwargs.get("config")))
                if isinstance(e, caught):
                    fail(prefix + str(e))
                raise

        return wrapper

    return decorate


def _infrastructure_failure(e: Exception) -> bool:
    """MLflow gone or refusing an upload (the registry's :class:`RegistryError`), a full disk
    (an ``OSError`` of ours is something else: a missing project, an unreadable source)."""
    return isinstance(e, RegistryError) or (
        isinstance(e, OSError) and not isinstance(e, MlopsError)
    )


def _failed_line(failing: str, e: Exception, config: Any) -> str:
    from mlops_core.config import load_config, redact_url
    from mlops_core.ops.services import tracking_uri

    if isinstance(e, RegistryError):  # it names MLflow already
        return f"{failing}: {e}"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    where = redact_url(tracking_uri(load_config(Path(config))))
    return f"{failing}: {type(e).__name__}: {first[:300]} (MLflow at {where}; more with --verbose)"
