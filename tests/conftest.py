"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# XGBoost's OpenMP threads spin while they wait; on a shared 2-core machine that starves the
# servers the tests start. Passive waiting costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    """``shared/data`` beside the checkout (as CI lays it out), or $MLOPS_SHARED_DATA."""
    for p in (
        os.environ.get("MLOPS_SHARED_DATA"),
        REPO.parent / "shared" / "data",
        Path("/work/shared/data"),
    ):
        if p and (Path(p) / "car_loan.parquet").exists():
            return Path(p)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder with car_loan.parquet and employment_ma.parquet. Missing data fails in CI
    (where it is always laid beside the checkout) and skips elsewhere."""
    path = find_shared_data()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("shared data sets not found beside the checkout (../shared/data)")
        pytest.skip("shared data sets not found (set MLOPS_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real MLflow tracking server (SQLite backend, local artifacts) for the whole session,
    started and stopped by mlops_core.ops.services. Tests give their settings
    ``storage.mlflow_uri = mlflow_server.url`` and their own project (registered model) name."""
    from mlops_core.ops.services import MLFLOW, start_mlflow, stop_service

    workspace = tmp_path_factory.mktemp("mlflow-server")
    info = start_mlflow(workspace)
    try:
        yield info
    finally:
        stop_service(workspace, MLFLOW)
