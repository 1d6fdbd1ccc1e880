"""MLflow behind one adapter: the only module of the library that imports mlflow.

:class:`MlflowModels` is one registered model in one tracking server: its experiment and runs,
its versions, tags and aliases, its packaged models. Every MLflow error is translated here, so
nothing above this module knows MLflow's exceptions: :class:`RegistryUnavailable` when the
server does not answer or answers with a temporary failure (worth a retry), otherwise
:class:`RegistryError` (:class:`NotFoundError` for a version that does not exist).

MLflow's process-global tracking and registry URIs are never left set: the fluent calls that
need them (logging a model, loading one) set them for the call and put the previous ones back.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pandas as pd

from mlops_core.config import redact_url
from mlops_core.errors import (
    MlopsError,
    NotFoundError,
    RegistryError,
    RegistryUnavailable,
    ServiceUnavailable,
)
from mlops_core.ops.services import process_alive, require_reachable
from mlops_core.registry.records import RUN_HOST, RUN_PID, VersionInfo
from mlops_core.store import file_sha256, package_sha256

log = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).resolve().parents[1] / "train" / "pyfunc" / "tabular_model.py"
# MLflow's error codes of a failure that may pass (the server busy, restarting, rate-limited)
TRANSIENT = {
    "INTERNAL_ERROR",  # a 5xx
    "TEMPORARILY_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE",
}

P = ParamSpec("P")
R = TypeVar("R")


def translate_error(e: Exception, uri: str) -> MlopsError:
    """Our error for an exception MLflow (or its HTTP client) raised talking to ``uri``."""
    from mlflow.exceptions import MlflowException

    where = f"MLflow at {redact_url(uri)}"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    if isinstance(e, ServiceUnavailable):
        return RegistryUnavailable(str(e))
    if isinstance(e, MlflowException):
        code = str(getattr(e, "error_code", ""))
        if code == "RESOURCE_DOES_NOT_EXIST":
            return NotFoundError(f"{where}: {first}")
        # a request that never got an answer (connection refused, reset, timed out)
        if "API request to" in first or "Max retries" in first:
            return RegistryUnavailable(f"{where} does not answer: {first}")
        if code in TRANSIENT:
            return RegistryUnavailable(f"{where} failed: {first}")
        return RegistryError(f"{where}: {first}")
    return RegistryUnavailable(f"{where} does not answer: {type(e).__name__}: {first}")


def _transport_errors() -> tuple[type[BaseException], ...]:
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, ServiceUnavailable, requests.RequestException)


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` (a method of :class:`MlflowModels`) with MLflow's global URIs set to the
    model's server for the call (a local store resolves some references, such as a logged
    model's id, through them) and MLflow's errors translated."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        self = args[0]
        try:
            with scoped_uris(self.uri):  # type: ignore[attr-defined]
                return fn(*args, **kwargs)
        except MlopsError:  # ours already (a nested call translated it)
            raise
        except _transport_errors() as e:
            raise translate_error(e, self.uri) from e  # type: ignore[attr-defined,arg-type]

    return wrapper


_uri_lock = threading.RLock()
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def scoped_uris(uri: str) -> Iterator[Any]:
    """MLflow's global tracking and registry URIs (and the environment variables MLflow sets
    with them for subprocesses) set to ``uri`` for the block, then put back as they were.
    Yields the mlflow module."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _uri_lock:
        tracking, registry = tracking_utils._tracking_uri, registry_utils._registry_uri
        env = {k: os.environ.get(k) for k in _URI_ENV}
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(tracking)  # type: ignore[arg-type]  # None unsets it
            registry_utils._registry_uri = registry
            for k, v in env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class MlflowModels:
    """Registered model ``name`` in the MLflow at ``uri``; a new experiment's artifacts go to
    ``artifact_location`` (None: the server's default)."""

    def __init__(self, name: str, uri: str, artifact_location: str | None = None) -> None:
        self.name = name
        self.uri = uri
        self.artifact_location = artifact_location
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The MLflow client, made at first use after checking that the server answers (a
        :class:`RegistryUnavailable` in seconds, not minutes of MLflow's retries)."""
        if self._client is None:
            from mlflow import MlflowClient

            try:
                require_reachable(self.uri)
            except ServiceUnavailable as e:
                raise RegistryUnavailable(str(e)) from e
            self._client = MlflowClient(self.uri, registry_uri=self.uri)
        return self._client

    # experiments and runs ------------------------------------------------------------------
    @translated
    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(
                self.client.create_experiment(self.name, artifact_location=self.artifact_location)
            )
        except MlflowException as e:  # created concurrently: read theirs
            exp = self.client.get_experiment_by_name(self.name)
            if exp is None:
                raise RegistryError(f"cannot create MLflow experiment '{self.name}': {e}") from e
            return str(exp.experiment_id)

    @translated
    def end_dead_runs(self) -> list[str]:
        """Mark KILLED the runs still RUNNING whose process, on this machine, is gone."""
        host = socket.gethostname()
        ended = []
        for run in self.client.search_runs(
            [self.experiment_id()], filter_string="attributes.status = 'RUNNING'", max_results=200
        ):
            tags = run.data.tags
            if tags.get(RUN_HOST) != host or not tags.get(RUN_PID, "").isdigit():
                continue
            if process_alive(int(tags[RUN_PID])):
                continue
            self.client.set_terminated(run.info.run_id, "KILLED")
            log.warning(
                "run %s of process %s had died while running: marked KILLED",
                run.info.run_id,
                tags[RUN_PID],
            )
            ended.append(run.info.run_id)
        return ended

    @translated
    def log_candidate(
        self,
        *,
        model_dir: Path,
        artifacts: dict[str, Path],
        run_name: str,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        files: dict[str, Path],
        input_example: Any,
        signature_output: Any,
    ) -> tuple[str, str]:
        """Log a run with its model (not yet registered) and files. Returns (run_id, model_uri).

        ``files`` maps an artifact sub-folder to a local file or folder to upload."""
        import mlflow

        signature = _signature(input_example, signature_output)
        experiment = self.experiment_id()
        # MLflow prints the run's URL on stdout when a run ends: keep stdout for the output of
        # our commands (`mlops train --json`)
        with (
            contextlib.redirect_stdout(sys.stderr),
            mlflow.start_run(
                experiment_id=experiment,
                run_name=run_name,
                tags={RUN_HOST: socket.gethostname(), RUN_PID: str(os.getpid())},
            ) as run,
        ):
            mlflow.log_params({k: _param(v) for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _finite(v)})
            mlflow.set_tags(tags)
            self._log_files(run.info.run_id, files)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={k: str(v) for k, v in artifacts.items()},
                pip_requirements=pip_requirements(),
                signature=signature,
                input_example=input_example,
            )
            return run.info.run_id, info.model_uri

    @translated
    def log_run_files(self, run_id: str, files: dict[str, Path]) -> None:
        self._log_files(run_id, files)

    def _log_files(self, run_id: str, files: dict[str, Path]) -> None:
        for sub, path in files.items():
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=sub)
            else:
                self.client.log_artifact(run_id, str(path), artifact_path=sub)

    # versions ------------------------------------------------------------------------------
    @translated
    def ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            with contextlib.suppress(MlflowException):  # created concurrently
                self.client.create_registered_model(self.name)

    @translated
    def create_version(
        self, model_uri: str, run_id: str, tags: dict[str, str], description: str | None
    ) -> str:
        """A new version of the logged model at ``model_uri``, with its tags set in the call."""
        mv = self.client.create_model_version(
            self.name,
            source=model_uri,
            run_id=run_id,
            tags=tags,
            description=description,
            model_id=model_uri.removeprefix("models:/")
            if model_uri.startswith("models:/m-")
            else None,
        )
        return str(mv.version)

    @translated
    def aliases(self) -> dict[str, str]:
        """alias → version; empty while the model is not registered."""
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(self.name)
        except MlflowException as e:
            if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
        return {k: str(v) for k, v in (rm.aliases or {}).items()}

    @translated
    def version(self, version: str) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.name, str(version))
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise NotFoundError(f"model '{self.name}' has no version {version}") from None
        return _info(mv, self.aliases())

    @translated
    def versions(self, model_type: str | None = None) -> list[VersionInfo]:
        """Every version (of ``model_type`` only, when given), oldest first."""
        aliases = self.aliases()
        mvs = self.client.search_model_versions(f"name='{self.name}'")
        return sorted(
            (
                _info(mv, aliases)
                for mv in mvs
                if model_type is None or (mv.tags or {}).get("model_type") == model_type
            ),
            key=lambda v: int(v.version),
        )

    @translated
    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)

    @translated
    def set_alias(self, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``; None removes it (a missing alias is fine)."""
        from mlflow.exceptions import MlflowException

        if version is None:
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model_alias(self.name, alias)
        else:
            self.client.set_registered_model_alias(self.name, alias, version)

    # packaged models -----------------------------------------------------------------------
    def model_uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}"

    @translated
    def load(self, version: str) -> Any:
        """The packaged model (pyfunc) of ``version``."""
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(self.model_uri(version))

    def predict(self, version: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions of ``version`` for ``frame``, its columns first cast to the types in the
        model's signature (MLflow refuses even int → double)."""
        model = self.load(version)
        return model.predict(conform_to_signature(frame, model.metadata.get_input_schema()))

    @translated
    def download_run_file(self, run_id: str, path: str, dst: Path) -> Path:
        """Download ``path`` of run ``run_id`` into folder ``dst``; the local file."""
        import mlflow.artifacts

        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(dst)
            )
        )

    @translated
    def download(self, model_uri: str, dst: Path) -> Path:
        import mlflow.artifacts

        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))

    def artifact_hash(self, version: str) -> str:
        """sha256 of the version's model file, as stored now."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.download(self.model_uri(version), Path(tmp))
            files = [
                p
                for p in (local / "artifacts").rglob("*")
                if p.is_file() and p.name.startswith("model.")
            ]
            if not files:
                raise RegistryError(f"version {version} has no model file")
            return file_sha256(files[0])

    def package_hash(self, model_uri: str) -> str:
        """:func:`package_sha256` of the model package at ``model_uri``, as stored now."""
        with tempfile.TemporaryDirectory() as tmp:
            return package_sha256(self.download(model_uri, Path(tmp)))


def _signature(input_example: Any, output: Any) -> Any:
    """The model's signature, every input column optional: a request may leave any out (the
    model handles missing values)."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import ColSpec, Schema

    with warnings.catch_warnings():  # class labels are integers on purpose
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer")
        inferred = infer_signature(input_example, output)
    return ModelSignature(
        inputs=Schema([ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]),
        outputs=inferred.outputs,
    )


def _info(mv: Any, aliases: dict[str, str]) -> VersionInfo:
    tags = dict(mv.tags or {})
    gp = tags.get("gate_passed")
    return VersionInfo(
        version=str(mv.version),
        status=tags.get("status", "candidate"),
        aliases=sorted(a for a, v in aliases.items() if v == str(mv.version)),
        metrics=json.loads(tags.get("metrics", "{}")),
        trigger=tags.get("trigger", ""),
        created=datetime.fromtimestamp(  # naive UTC, as all our times
            mv.creation_timestamp / 1000, UTC
        ).replace(tzinfo=None),
        run_id=mv.run_id,
        gate_passed=None if gp is None else gp == "true",
        tags=tags,
    )


def pip_requirements() -> list[str]:
    """Exact pins of what the packaged model imports. One xgboost line only: MLflow's own
    inference writes both ``xgboost-cpu`` and ``xgboost``, which install the same module."""
    from importlib import metadata

    reqs = []
    for dist in ("mlflow", "pandas", "numpy", "scikit-learn", "scipy", "skops", "pyarrow"):
        reqs.append(f"{dist}=={metadata.version(dist)}")
    for dist in ("xgboost-cpu", "xgboost"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
            break
        except metadata.PackageNotFoundError:
            continue
    return reqs


def conform_to_signature(frame: pd.DataFrame, schema: Any) -> pd.DataFrame:
    """The columns a signature names, cast to its types; missing columns come as missing."""
    if schema is None:
        return frame
    out = {}
    for spec in schema.inputs:
        s = (
            frame[spec.name]
            if spec.name in frame.columns
            else pd.Series(None, index=frame.index, dtype=object)
        )
        kind = str(spec.type).lower()
        if kind in ("double", "float", "datatype.double", "datatype.float"):
            out[spec.name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif kind in ("long", "integer", "datatype.long", "datatype.integer"):
            out[spec.name] = pd.to_numeric(s, errors="coerce")
        elif kind in ("string", "datatype.string"):
            out[spec.name] = (
                s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))
            )
        else:
            out[spec.name] = (
                s.astype(object).where(s.notna(), None)
                if isinstance(s.dtype, pd.CategoricalDtype)
                else s
            )
    return pd.DataFrame(out, index=frame.index)


def _finite(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))


def _param(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:6000]
