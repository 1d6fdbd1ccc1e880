"""`mlops users`: the dashboard's users, in a file outside the project's repository."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mlops_cli.errors import cli_errors, fail
from mlops_cli.options import ConfigOpt, JsonOpt
from mlops_cli.project import load_settings
from mlops_cli.render import out, print_json, print_users

UsersFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The users file (default: dashboard.users_file of the config, else "
        "~/.config/mlops/<project>/users.yaml).",
    ),
]


def _users_file(config: Path, file: Path | None) -> Path:
    """--file, or the project's users file; either way outside the project's repository."""
    from mlops_core.ops.auth import check_outside_repository, users_path

    if file is not None:
        base = load_settings(config).base_dir if config.is_file() else Path.cwd()
        return check_outside_repository(file, base)
    return users_path(load_settings(config))


@cli_errors()
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
        fail(f"unknown role '{role}'; roles: {', '.join(ROLES)}")
    path = _users_file(config, file)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt(
            f"Password for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
    add_user(path, name, password, role)
    out.print(f"{escape(name)} is a dashboard {role} ({path})")


@cli_errors()
def users_list(
    file: UsersFileOpt = None, config: ConfigOpt = Path("mlops.yaml"), as_json: JsonOpt = False
) -> None:
    """Dashboard users and their roles (never the hashes)."""
    from mlops_core.ops.auth import load_users

    path = _users_file(config, file)
    users = load_users(path)
    if as_json:
        print_json({"file": str(path), "users": [u.to_dict() for u in users.values()]})
        return
    print_users(path, users)
