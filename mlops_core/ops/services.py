"""Start, health-check and stop the local services of a project: the MLflow tracking server, the
Prefect server, its process work pool and a worker, the dashboard and the serving API.

Each service runs as its own process group, bound to 127.0.0.1 on a free port, logging to
``<workspace>/logs/<name>.log``; its pid, port and URL are kept in ``<workspace>/run/<name>.json``
so another command (``mlops down``) can find and stop it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from mlops_core.config import Settings
from mlops_core.errors import MlopsError, ServiceUnavailable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class ServiceError(MlopsError, RuntimeError):
    """A service did not start, or did not become healthy in time."""


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    pid: int
    port: int
    url: str
    health_url: str
    log_file: str
    started_at: float


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _run_dir(workspace: Path) -> Path:
    return workspace / "run"


def _bin(name: str) -> str:
    """An executable of this environment (the venv's bin), whatever PATH says."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("DO_NOT_TRACK", "1")
    # XGBoost's OpenMP threads spin while they wait, starving the services beside them (the
    # worker's flow runs train)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.update(extra or {})
    return env


def require_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`ServiceUnavailable` at once when an HTTP(S) MLflow URI does not answer
    (any HTTP answer counts: a proxy may not serve ``/health``), instead of MLflow's client
    retrying for minutes. Other URIs (a local store, ``databricks``) are not checked."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        httpx.get(uri.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as e:
        raise ServiceUnavailable(
            f"MLflow at {uri} does not answer ({type(e).__name__}): start it (`mlops up`) or "
            "check storage.mlflow_uri"
        ) from None


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_service(workspace: Path, name: str) -> ServiceInfo | None:
    """The recorded service, if its process is still alive."""
    path = _run_dir(workspace) / f"{name}.json"
    if not path.exists():
        return None
    info = ServiceInfo(**json.loads(path.read_text()))
    if not process_alive(info.pid):
        path.unlink(missing_ok=True)
        return None
    return info


def start_service(
    workspace: Path,
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    health_path: str,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    cwd: Path | None = None,
) -> ServiceInfo:
    """Start ``argv`` in its own process group and wait until ``health_path`` answers 200."""
    existing = read_service(workspace, name)
    if existing and is_healthy(existing.health_url):
        return existing
    logs = workspace / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _run_dir(workspace).mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{name}.log"
    url = f"http://{HOST}:{port}"
    with open(log_file, "ab") as fh:
        proc = subprocess.Popen(
            list(argv),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
    info = ServiceInfo(
        name=name,
        pid=proc.pid,
        port=port,
        url=url,
        health_url=url + health_path,
        log_file=str(log_file),
        started_at=time.time(),
    )
    (_run_dir(workspace) / f"{name}.json").write_text(json.dumps(asdict(info)))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (_run_dir(workspace) / f"{name}.json").unlink(missing_ok=True)
            raise ServiceError(
                f"{name} exited with code {proc.returncode} while starting; "
                f"last lines of {log_file}:\n{_tail(log_file)}"
            )
        if is_healthy(info.health_url):
            log.info("%s is up at %s (pid %s)", name, url, proc.pid)
            return info
        time.sleep(0.3)
    stop_service(workspace, name)
    raise ServiceError(
        f"{name} did not answer {info.health_url} within {timeout_s:.0f} s; "
        f"last lines of {log_file}:\n{_tail(log_file)}"
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_service(workspace: Path, name: str, timeout_s: float = 15.0) -> bool:
    """SIGTERM the service's process group, then SIGKILL after ``timeout_s``. True if it ran."""
    path = _run_dir(workspace) / f"{name}.json"
    if not path.exists():
        return False
    info = ServiceInfo(**json.loads(path.read_text()))
    path.unlink(missing_ok=True)
    if not process_alive(info.pid):
        return False
    try:
        os.killpg(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)  # reap it if it is our child
        if not process_alive(info.pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info.pid, signal.SIGKILL)
    return True


# MLflow ------------------------------------------------------------------------------------
MLFLOW = "mlflow"


def mlflow_paths(workspace: Path) -> tuple[Path, Path]:
    """(backend SQLite file, artifact folder) of the project's local MLflow."""
    root = workspace / "mlflow"
    return root / "mlflow.db", root / "artifacts"


def local_mlflow_uri(workspace: Path) -> str:
    """The store the local server serves, addressed directly (no server needed)."""
    db, _ = mlflow_paths(workspace)
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def start_mlflow(
    workspace: Path,
    port: int | None = None,
    timeout_s: float = 120.0,
    *,
    backend_uri: str | None = None,
    artifacts: str | None = None,
) -> ServiceInfo:
    """Start (or find running) the project's MLflow tracking server: backend store
    ``backend_uri`` (``storage.mlflow_backend_uri``, e.g. Postgres; default SQLite in the
    workspace), artifact root ``artifacts`` (a URI such as ``s3://bucket/prefix``; default a
    folder in the workspace).

    Artifacts are not proxied (``--default-artifact-root``, ``--no-serve-artifacts``), so that
    clients addressing the backend store directly and clients of the server see the same
    artifact locations; with ``s3://`` every client that logs or loads a model needs boto3 and
    the credentials."""
    db, folder = mlflow_paths(workspace)
    db.parent.mkdir(parents=True, exist_ok=True)
    if artifacts is None:
        folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        _bin("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--default-artifact-root",
        artifacts or folder.as_uri(),
        "--no-serve-artifacts",
        "--workers",
        "1",
    ]
    # a configured URL (it may hold a password) goes through the environment, not the command
    # line that every user of the machine can read
    env = {}
    if backend_uri:
        env["MLFLOW_BACKEND_STORE_URI"] = backend_uri
    else:
        argv += ["--backend-store-uri", f"sqlite:///{db}"]
    return start_service(
        workspace, MLFLOW, argv, port=port, health_path="/health", env=env, timeout_s=timeout_s
    )


def mlflow_artifact_root(settings: Settings) -> str | None:
    """``storage.mlflow_artifacts`` as the server's artifact root: a URI as it is, a folder
    (relative to mlops.yaml) as a ``file://`` URI; None for the default folder."""
    where = settings.storage.mlflow_artifacts
    if not where or "://" in where:
        return where
    return settings.resolve(where).as_uri()


def tracking_uri(settings: Settings) -> str:
    """Where MLflow is: the configured URI as is; else the project's local server if it runs;
    else the same local store addressed directly."""
    if settings.storage.mlflow_uri:
        return settings.storage.mlflow_uri
    running = read_service(settings.workspace, MLFLOW)
    if running and is_healthy(running.health_url):
        return running.url
    return settings.storage.mlflow_backend_uri or local_mlflow_uri(settings.workspace)


# Prefect -----------------------------------------------------------------------------------
# The project's own Prefect server (SQLite under <workspace>/prefect), a process work pool and
# one worker. No Prefect import here: the server and worker are commands, the pool is created
# through the server's HTTP API.
PREFECT_SERVER = "prefect-server"
PREFECT_WORKER = "prefect-worker"
WORK_POOL = "mlops"


def prefect_home(workspace: Path) -> Path:
    return workspace / "prefect"


def prefect_env(workspace: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment every Prefect process of the project runs with (server, worker, CLI);
    the worker passes it on to the flow runs it starts."""
    env = {
        "PREFECT_HOME": str(prefect_home(workspace)),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def prefect_api_url(workspace: Path) -> str | None:
    """``http://127.0.0.1:PORT/api`` of the project's running Prefect server, else None."""
    info = read_service(workspace, PREFECT_SERVER)
    return f"{info.url}/api" if info else None


def start_prefect_server(
    workspace: Path, port: int | None = None, timeout_s: float = 120.0, *, db_url: str | None = None
) -> ServiceInfo:
    """Start (or find running) the project's Prefect server on 127.0.0.1, its database
    ``db_url`` (``storage.prefect_db_url``, ``postgresql+asyncpg://...``; default SQLite in
    ``<workspace>/prefect``). Postgres needs the ``pg_trgm`` extension: the server creates it
    on its first start, which a database owner may do (it is a trusted extension)."""
    prefect_home(workspace).mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(port)]
    # concurrency leases (the one-training-at-a-time slot) on disk under PREFECT_HOME: kept in
    # memory (the default) they are lost when the server restarts, and a slot taken by a flow
    # running across the restart is never given back
    leases = "prefect.server.concurrency.lease_storage.filesystem"
    env = prefect_env(workspace) | {"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": leases}
    if db_url:  # both names: the newer one wins over an older one inherited from the shell
        env |= {
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": db_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
        }
    return start_service(
        workspace,
        PREFECT_SERVER,
        argv,
        port=port,
        health_path="/api/health",
        env=env,
        timeout_s=timeout_s,
    )


def ensure_work_pool(
    api_url: str, name: str = WORK_POOL, pool_type: str = "process", timeout: float = 30.0
) -> bool:
    """Create the work pool unless it exists (of whatever type: see :func:`work_pool_type`).
    True if it was created. The worker fills in the pool's default job template when it first
    connects."""
    base = api_url.rstrip("/")
    try:
        got = prefect_request("GET", f"{base}/work_pools/{name}", timeout=timeout)
        if got.status_code == 200:
            return False
        res = prefect_request(
            "POST", f"{base}/work_pools/", timeout=timeout, json={"name": name, "type": pool_type}
        )
    except httpx.HTTPError as e:
        raise ServiceError(f"cannot reach the Prefect API at {base}: {e}") from e
    if res.status_code == 409:  # created meanwhile
        return False
    if res.status_code >= 400:
        raise ServiceError(
            f"cannot create work pool '{name}': HTTP {res.status_code} {res.text[:300]}"
        )
    return True


def work_pool_type(api_url: str, name: str, timeout: float = 30.0) -> str | None:
    """The type of work pool ``name`` (``process``, ``docker``, ``kubernetes``...), None if
    there is no such pool."""
    base = api_url.rstrip("/")
    try:
        got = prefect_request("GET", f"{base}/work_pools/{name}", timeout=timeout)
    except httpx.HTTPError as e:
        raise ServiceError(f"cannot reach the Prefect API at {base}: {e}") from e
    if got.status_code == 404:
        return None
    if got.status_code >= 400:
        raise ServiceError(
            f"cannot read work pool '{name}': HTTP {got.status_code} {got.text[:300]}"
        )
    return str(got.json()["type"])


def prefect_request(
    method: str,
    url: str,
    *,
    client: httpx.Client | None = None,
    attempts: int = 6,
    timeout: float = 30.0,
    **kw: Any,
) -> httpx.Response:
    """One call to the Prefect API (through ``client`` if given, ``url`` then relative to its
    base); a 503 (the server's SQLite busy under load) is retried with backoff, as Prefect's
    own client does. The last response is returned as it is."""
    for attempt in range(attempts):
        res = (
            client.request(method, url, **kw)
            if client is not None
            else httpx.request(method, url, timeout=timeout, **kw)
        )
        if res.status_code != 503:
            break
        time.sleep(0.5 * 2 ** min(attempt, 3))
    return res


CRASH_AUTOMATION = "mlops: mark flow runs crashed when their heartbeats stop"
HEARTBEAT_S = 30  # flow runs of the worker emit prefect.flow-run.heartbeat this often


def ensure_crash_automation(
    api_url: str, within_s: int = 3 * HEARTBEAT_S, timeout: float = 30.0
) -> bool:
    """Create (unless it exists) the automation that marks a flow run Crashed when its
    heartbeats stop for ``within_s`` seconds (a worker or flow-run process killed), so nothing
    stays Running forever. True if it was created."""
    base = api_url.rstrip("/")
    body = {
        "name": CRASH_AUTOMATION,
        "enabled": True,
        "description": "Created by mlops up: a flow run whose heartbeats stopped is crashed.",
        "trigger": {
            "type": "event",
            "posture": "Proactive",
            "after": ["prefect.flow-run.heartbeat"],
            "expect": [
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            ],
            "match": {"prefect.resource.id": ["prefect.flow-run.*"]},
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": within_s,
        },
        "actions": [
            {
                "type": "change-flow-run-state",
                "state": "CRASHED",
                "message": f"no heartbeat for {within_s} s: the worker or the flow run's "
                "process died",
            }
        ],
    }
    try:
        got = prefect_request("POST", f"{base}/automations/filter", timeout=timeout, json={})
        got.raise_for_status()
        if any(a.get("name") == CRASH_AUTOMATION for a in got.json()):
            return False
        res = prefect_request("POST", f"{base}/automations/", timeout=timeout, json=body)
    except httpx.HTTPError as e:
        raise ServiceError(f"cannot reach the Prefect API at {base}: {e}") from e
    if res.status_code >= 400:
        raise ServiceError(
            f"cannot create the crash automation: HTTP {res.status_code} {res.text[:300]}"
        )
    return True


def start_prefect_worker(
    workspace: Path,
    api_url: str,
    pool: str = WORK_POOL,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
) -> ServiceInfo:
    """Start (or find running) a process worker on ``pool``, with its health check server on
    127.0.0.1 (``/health`` answers 200 while the worker polls). ``env`` adds variables (e.g.
    ``PREFECT_WORKER_QUERY_SECONDS``), passed on to the flow runs."""
    port = port or free_port()
    argv = [
        _bin("prefect"),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--with-healthcheck",
    ]
    extra = (
        prefect_env(workspace, api_url)
        | {
            "PREFECT_WORKER_WEBSERVER_HOST": HOST,
            "PREFECT_WORKER_WEBSERVER_PORT": str(port),
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        }
        | dict(env or {})
    )
    return start_service(
        workspace,
        PREFECT_WORKER,
        argv,
        port=port,
        health_path="/health",
        env=extra,
        timeout_s=timeout_s,
    )


def start_prefect(
    workspace: Path,
    *,
    pool: str = WORK_POOL,
    worker_env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
    db_url: str | None = None,
) -> tuple[ServiceInfo, ServiceInfo | None]:
    """Server (its database ``db_url``, default SQLite), then pool and crash automation, then
    a worker: (server, worker). ``pool`` is created as a process pool unless it exists; a pool
    of another type (docker, kubernetes: created by the user) gets no worker here, since its
    workers run where Docker or Kubernetes is: then worker is None."""
    server = start_prefect_server(workspace, timeout_s=timeout_s, db_url=db_url)
    api = f"{server.url}/api"
    ensure_work_pool(api, pool)
    ensure_crash_automation(api)
    if work_pool_type(api, pool) != "process":
        return server, None
    worker = start_prefect_worker(workspace, api, pool, env=worker_env, timeout_s=timeout_s)
    return server, worker


def stop_prefect(workspace: Path) -> list[str]:
    """Stop the worker, then the server (a worker whose server went first does not exit).
    Returns the names of those that were running."""
    return [name for name in (PREFECT_WORKER, PREFECT_SERVER) if stop_service(workspace, name)]


# Dashboard ---------------------------------------------------------------------------------
DASHBOARD = "dashboard"


def dashboard_app() -> Path:
    """The Streamlit entry point (``dashboard/app.py`` beside ``mlops_core``)."""
    return Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def start_dashboard(
    workspace: Path, config_path: Path, port: int | None = None, timeout_s: float = 120.0
) -> ServiceInfo:
    """Start (or find running) the project's Streamlit dashboard on 127.0.0.1; the app finds
    the project through ``MLOPS_CONFIG``."""
    app = dashboard_app()
    if not app.is_file():
        raise ServiceError(f"the dashboard app is missing: {app}")
    port = port or free_port()
    argv = [
        _bin("streamlit"),
        "run",
        str(app),
        "--server.address",
        HOST,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]  # no "Deploy" button: this is self-hosted
    return start_service(
        workspace,
        DASHBOARD,
        argv,
        port=port,
        health_path="/_stcore/health",
        env={"MLOPS_CONFIG": str(Path(config_path).resolve())},
        timeout_s=timeout_s,
        cwd=app.parent.parent,
    )


# Serving -----------------------------------------------------------------------------------
SERVING = "serving"


def start_serving(
    workspace: Path,
    config_path: Path,
    port: int | None = None,
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> ServiceInfo:
    """Start (or find running) `mlops serve` for the project on 127.0.0.1. It answers
    ``/health`` at once and serves the champion as soon as it has loaded and checked it."""
    port = port or free_port()
    argv = [
        _bin("mlops"),
        "serve",
        "--config",
        str(Path(config_path).resolve()),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    return start_service(
        workspace, SERVING, argv, port=port, health_path="/health", env=env, timeout_s=timeout_s
    )


def notify_serving(workspace: Path, timeout: float = 120.0) -> dict[str, object] | None:
    """Ask the project's running serving API to serve the champion alias's version now
    (``POST /reload``). None when no serving runs; its answer otherwise (the version served
    and, when the new version failed to load, the error: the old version keeps serving)."""
    info = read_service(workspace, SERVING)
    if info is None:
        return None
    try:
        res = httpx.post(f"{info.url}/reload", timeout=timeout)
    except httpx.HTTPError as e:
        return {"error": f"serving at {info.url} did not answer: {e}", "swapped": False}
    try:
        return dict(res.json())
    except ValueError:
        return {"error": f"serving answered {res.status_code}", "swapped": False}


SERVICES = (PREFECT_SERVER, PREFECT_WORKER, MLFLOW, DASHBOARD, SERVING)


def stop_all(workspace: Path) -> list[str]:
    """Stop every service of the project: serving first, the worker before the server."""
    stopped = [SERVING] if stop_service(workspace, SERVING) else []
    stopped += stop_prefect(workspace)
    return stopped + [name for name in (MLFLOW, DASHBOARD) if stop_service(workspace, name)]
