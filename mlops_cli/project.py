"""The project a command works on, and who runs the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_settings(config: Path) -> Any:
    from mlops_core.config import load_config

    return load_config(config)


def existing_project(config: Path) -> Any:
    """The settings of a project that exists: its workspace and metadata DB are there (see
    :func:`mlops_core.store.open_project`; only ``init`` and ``up`` create them)."""
    from mlops_core.errors import ProjectMissing
    from mlops_core.store import open_project

    settings = load_settings(config)
    try:
        open_project(settings.workspace, settings.db_url)
    except ProjectMissing as e:
        raise ProjectMissing(str(e).replace("--config FILE", f"--config {config}")) from None
    return settings


def registry(config: Path) -> Any:
    from mlops_core.registry.registry import Registry

    return Registry(existing_project(config))


def metadata(settings: Any) -> Any:
    from mlops_core.store import MetadataStore

    return MetadataStore(settings.db_url)


def login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "cli"


def cli_principal(name: str) -> Any:
    """Whoever runs the CLI, as an approver: they can read and write the workspace, the metadata
    DB and the users file anyway, so a role would protect nothing here. Their writes still go
    through mlops_core.ops.actions (comments, request ids, the four-eyes rule, the audit log)."""
    from mlops_core.ops.auth import Principal

    return Principal(name=name, role="approver", via="cli")
