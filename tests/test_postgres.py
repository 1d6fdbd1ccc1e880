"""Scale-out is configuration: the metadata DB, the backend store of MLflow's server and the
Prefect server's database on a real PostgreSQL server, with nothing but three URLs, given in
the environment (``MLOPS_STORAGE__...``) so that no password is written to mlops.yaml.

``MLOPS_TEST_POSTGRES_URL`` names a server and a role that may create databases; ``.ci/run``
starts a throwaway one (``.ci/postgres.sh``; by hand: ``eval "$(.ci/postgres.sh start)"``).
Without it the test skips, except under ``CI``, where it fails.

`mlops up` starts Prefect, its process worker and MLflow over three new databases; the ingest
deployment's run (in the worker) takes in the weekly batches; a version is trained, registered
and approved; then the state is read back with SQL from each database, and no SQLite file exists
in the workspace. A work pool of another type (docker) is deployed to without a worker.

The configuration keys themselves (environment overrides, drivers, the work pool's name) are
checked without a server, in the fast tests at the end.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import psycopg
import pytest
from psycopg import sql
from registry_helpers import demo_settings, write_config
from test_orchestration import _call, _deployment_id, _mlops, _start_run, _wait_for_run

from flows.deploy import render_deployments
from mlops_core.config import Settings, load_config, parse_config
from mlops_core.demo.stream import TIME, generate_stream
from mlops_core.errors import ConfigError
from mlops_core.ops.services import (
    PREFECT_SERVER,
    PREFECT_WORKER,
    ensure_work_pool,
    mlflow_artifact_root,
    read_service,
    start_prefect,
    tracking_uri,
)
from mlops_core.registry.registry import Registry
from mlops_core.train.pipeline import train_and_register


def _database(url: str, name: str, driver: str | None = None) -> str:
    """``url`` with another database (and, for SQLAlchemy, a driver: postgresql+DRIVER)."""
    parts = urlsplit(url)._replace(path=f"/{name}")
    if driver:
        parts = parts._replace(scheme=f"postgresql+{driver}")
    return parts.geturl()


def _rows(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, args).fetchall()


@pytest.fixture(scope="module")
def server_url() -> str:
    url = os.environ.get("MLOPS_TEST_POSTGRES_URL")
    if not url:
        why = (
            "MLOPS_TEST_POSTGRES_URL is not set (a PostgreSQL URL whose role may create "
            'databases); .ci/run sets it, or by hand: eval "$(.ci/postgres.sh start)"'
        )
        if os.environ.get("CI"):
            pytest.fail(f"{why}; under CI this test must run, not skip")
        pytest.skip(why)
    return url


@pytest.fixture(scope="module")
def databases(server_url: str) -> Iterator[dict[str, str]]:
    """Three new databases (metadata, mlflow, prefect) as libpq URLs; dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"mlops_{k}_{suffix}" for k in ("metadata", "mlflow", "prefect")}
    with psycopg.connect(server_url, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {k: _database(server_url, name) for k, name in names.items()}
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            for name in names.values():
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass
class Stack:
    settings: Settings
    config: Path
    env: dict[str, str]
    api: str
    up: dict[str, Any]
    dbs: dict[str, str]


@pytest.fixture(scope="module")
def stack(databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A demo project whose three stores are the new databases, `mlops up` run on it (Prefect
    server, process worker, MLflow server); `mlops down` afterwards, even on a failure."""
    root = tmp_path_factory.mktemp("postgres")
    plain = demo_settings(
        root,
        "unused",
        "pg-demo",
        storage={"mlflow_uri": None},
        data={"source": {"kind": "folder", "path": str(root / "landing")}},
        model={"search": {"trials": 1, "timeout_s": 30}},
        gate={"smoke_test": False},
    )
    # no URL, no password in it; `mlops up` creates the project, its metadata DB in Postgres
    config = write_config(plain, root / "mlops.yaml", create=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLOPS_"))}
    name = {k: urlsplit(url).path.lstrip("/") for k, url in databases.items()}
    env |= {
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_UI_ENABLED": "false",
        # SQLAlchemy URLs: psycopg (3) for ours and MLflow's, asyncpg for Prefect's server
        "MLOPS_STORAGE__DB_URL": _database(databases["metadata"], name["metadata"], "psycopg"),
        "MLOPS_STORAGE__MLFLOW_BACKEND_URI": _database(
            databases["mlflow"], name["mlflow"], "psycopg"
        ),
        "MLOPS_STORAGE__PREFECT_DB_URL": _database(
            databases["prefect"], name["prefect"], "asyncpg"
        ),
    }
    settings = load_config(config, environ=env)
    t0 = time.perf_counter()
    res = _mlops("up", "--config", str(config), "--json", env=env)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        up = json.loads(res.stdout) | {"wall_s": time.perf_counter() - t0}
        yield Stack(settings, config, env, up["services"]["prefect_api"], up, databases)
    finally:
        _mlops("down", "--config", str(config), env=env, timeout=120)


@pytest.mark.slow
def test_the_state_of_a_real_job_lives_in_postgres(stack: Stack) -> None:
    s, api, dbs = stack.settings, stack.api, stack.dbs
    ws = s.workspace
    assert s.db_url.startswith("postgresql+psycopg://")
    assert read_service(ws, PREFECT_WORKER) is not None  # a process pool: `mlops up` runs one

    # a couple of months of weekly batches land, and the ingest deployment's run (a process
    # of the worker, configured by the same environment) takes them in
    frame = generate_stream(3_000, days=140, seed=3).frame
    landing = Path(s.data.source.path)  # type: ignore[union-attr]
    landing.mkdir(parents=True, exist_ok=True)
    t0 = frame[TIME].min().normalize()
    frame[frame[TIME] < t0 + pd.Timedelta(weeks=12)].to_parquet(
        landing / "weeks.parquet", index=False
    )
    ingest_id = _deployment_id(api, "ingest", s.project)
    t1 = time.perf_counter()
    run_id = _start_run(api, ingest_id)
    run = _wait_for_run(
        api, ingest_id, timeout_s=180, after=set(), where=lambda r: r["id"] == run_id
    )
    t_ingest = time.perf_counter() - t1
    assert run["state_type"] == "COMPLETED", run["state"]

    # train, register and approve (here, through mlops_core: MLflow's server and the metadata DB)
    t2 = time.perf_counter()
    trained = train_and_register(s, trigger="initial")
    assert trained.version, trained
    reg = Registry(s)
    assert reg.approve(trained.version, by="ana", comment="first champion").ok
    t_train = time.perf_counter() - t2
    assert reg.champion() == trained.version

    # the metadata DB
    (accepted,) = _rows(dbs["metadata"], "select count(*) from batches where status = 'accepted'")[
        0
    ]
    assert accepted >= 10
    audit = _rows(
        dbs["metadata"],
        "select action, version, actor, outcome from audit_log where model = %s",
        s.project,
    )
    assert ("approve", trained.version, "ana", "applied") in audit, audit

    # MLflow's backend store
    assert _rows(dbs["mlflow"], "select name from registered_models") == [(s.project,)]
    versions = _rows(dbs["mlflow"], "select version from model_versions where name = %s", s.project)
    assert (int(trained.version),) in versions
    aliases = dict(
        _rows(
            dbs["mlflow"],
            "select alias, version from registered_model_aliases where name = %s",
            s.project,
        )
    )
    assert aliases.get("champion") == int(trained.version), aliases

    # Prefect's database: the pool, the deployments and the flow run the worker ran
    assert ("mlops", "process") in _rows(dbs["prefect"], "select name, type from work_pool")
    deployments = {n for (n,) in _rows(dbs["prefect"], "select name from deployment")}
    assert deployments == {s.project}
    runs = _rows(
        dbs["prefect"],
        "select r.state_type::text from flow_run r join deployment d "
        "on d.id = r.deployment_id join flow f on f.id = d.flow_id where f.name = "
        "'ingest' and r.id = %s",
        run_id,
    )
    assert runs == [("COMPLETED",)]

    # nothing fell back to SQLite, and no password was written where it would be read
    assert not list(ws.rglob("*.db")), list(ws.rglob("*.db"))
    password = urlsplit(dbs["metadata"]).password
    assert password and password not in stack.config.read_text()
    prefect_yaml = Path(stack.up["prefect_yaml"])
    assert password not in prefect_yaml.read_text()
    print(
        f"mlops up on Postgres {stack.up['wall_s']:.1f} s; ingest run {t_ingest:.1f} s; "
        f"train + register + approve {t_train:.1f} s"
    )


@pytest.mark.slow
def test_a_docker_pool_is_deployed_to_without_a_local_worker(stack: Stack) -> None:
    """A pool the user made of another type gets the deployments and no worker from `mlops up`
    (its workers run where Docker is: not on this machine)."""
    s, api = stack.settings, stack.api
    assert ensure_work_pool(api, "pg-docker", pool_type="docker") is True
    env = stack.env | {"MLOPS_ORCHESTRATION__WORK_POOL": "pg-docker"}
    res = _mlops("up", "--config", str(stack.config), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    said = " ".join(res.stdout.split())  # as printed, however the console wrapped it
    assert "'pg-docker' is not a process pool" in said, res.stdout
    assert "prefect worker start --pool pg-docker" in said, res.stdout
    server, worker = start_prefect(s.workspace, pool="pg-docker", db_url=s.storage.prefect_db_url)
    assert worker is None
    assert server == read_service(s.workspace, PREFECT_SERVER)  # the running one, kept
    dep = _call("GET", f"{api}/deployments/name/train/{s.project}").json()
    assert dep["work_pool_name"] == "pg-docker"
    assert ("pg-docker", "docker") in _rows(
        stack.dbs["prefect"], "select name, type from work_pool"
    )


# the configuration keys, without a server --------------------------------------------------
PG = "postgresql+psycopg://mlops:s3cr%40t@db.internal:5432"


def test_the_stores_urls_come_from_the_environment(tmp_path: Path) -> None:
    raw = {"storage": {"workspace": str(tmp_path / "ws"), "mlflow_artifacts": "artifacts"}}
    env = {
        "MLOPS_STORAGE__DB_URL": f"{PG}/metadata",
        "MLOPS_STORAGE__MLFLOW_BACKEND_URI": f"{PG}/mlflow",
        "MLOPS_STORAGE__PREFECT_DB_URL": "postgresql+asyncpg://mlops:s3cr%40t@db.internal/p",
        "MLOPS_ORCHESTRATION__WORK_POOL": "k8s-pool",
    }
    s = parse_config(raw, config_path=tmp_path / "mlops.yaml", environ=env)
    assert s.db_url == f"{PG}/metadata"
    assert s.storage.prefect_db_url == env["MLOPS_STORAGE__PREFECT_DB_URL"]
    # no MLflow server runs over this workspace: the backend store, addressed directly
    assert tracking_uri(s) == f"{PG}/mlflow"
    assert mlflow_artifact_root(s) == (tmp_path / "artifacts").as_uri()  # beside mlops.yaml
    s3 = parse_config({"storage": {"mlflow_artifacts": "s3://models/ct"}}, environ={})
    assert mlflow_artifact_root(s3) == "s3://models/ct"
    assert mlflow_artifact_root(parse_config({}, environ={})) is None  # the workspace folder
    pools = {d["work_pool"]["name"] for d in render_deployments(s, "mlops.yaml")["deployments"]}
    assert pools == {"k8s-pool"}
    assert parse_config({}, environ={}).orchestration.work_pool == "mlops"


def test_prefect_needs_an_async_driver_and_the_error_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({}, environ={"MLOPS_STORAGE__PREFECT_DB_URL": f"{PG}/prefect"})
    assert "storage.prefect_db_url (from $MLOPS_STORAGE__PREFECT_DB_URL)" in str(err.value)
    assert "postgresql+asyncpg://" in str(err.value)


def test_an_external_mlflow_and_the_servers_own_stores_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="mlflow_backend_uri would be ignored"):
        parse_config(
            {"storage": {"mlflow_uri": "http://mlflow:5000", "mlflow_backend_uri": f"{PG}/mlflow"}},
            environ={},
        )
