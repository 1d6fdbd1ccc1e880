"""The options several commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", envvar="MLOPS_CONFIG", help="Project configuration file.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout.")]
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
CommentOpt = Annotated[str, typer.Option(help="Why (required; kept in the audit log).")]
