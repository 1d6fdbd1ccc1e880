"""The model registry: the only module that talks to MLflow.

Versions are MLflow model versions; their status lives on the ``status`` tag (``candidate`` →
``pending_approval`` → ``approved`` / ``rejected``; ``retired``) and the ``champion`` and
``challenger`` aliases are the only pointers serving follows. Who is champion is decided in the
metadata DB first, by compare-and-set under its write lock, with an append-only audit record;
then the MLflow alias is moved. A crash between the two is repaired by :meth:`Registry.reconcile`,
which every operation runs first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlops_core.config import Settings
from mlops_core.errors import MlopsError, NotFoundError
from mlops_core.ops.services import (
    mlflow_artifact_root,
    mlflow_paths,
    require_reachable,
    tracking_uri,
)
from mlops_core.store import (
    MetadataStore,
    audit_log,
    champion_state,
    file_sha256,
    package_sha256,
    utcnow,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
RUN_HOST, RUN_PID = "mlops.host", "mlops.pid"  # tags of a training run: where it runs
STATUSES = ("candidate", "pending_approval", "approved", "rejected", "retired")
MODEL_CODE = Path(__file__).resolve().parents[1] / "train" / "pyfunc" / "tabular_model.py"
SYSTEM = "system"
# the audited actions that decide a version's fate once (a rollback re-decides the champion)
PAST = {
    "approve": "approved",
    "auto_promote": "promoted",
    "reject": "rejected",
    "gate_reject": "rejected by the gate",
    "supersede": "superseded",
}
DECISIONS = tuple(PAST)


class RegistryError(MlopsError, RuntimeError):
    """A registry operation was refused (wrong status, failed gate, changed champion...)."""


@dataclass
class VersionInfo:
    version: str
    status: str
    aliases: list[str]
    metrics: dict[str, float]
    trigger: str
    created: datetime
    run_id: str | None = None
    gate_passed: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def data_end(self) -> datetime | None:
        """The end of its training data in data time (its ``data_end`` tag, or its
        ``data_window``'s end); ``None`` without a time column."""
        for text in (self.tags.get("data_end"), self.tags.get("data_window", "").split("→")[-1]):
            text = (text or "").strip()
            if text and text not in ("None", "NaT"):
                try:
                    return pd.Timestamp(text).tz_localize(None).to_pydatetime()
                except (ValueError, TypeError):
                    continue
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "status": self.status,
            "aliases": self.aliases,
            "metrics": self.metrics,
            "trigger": self.trigger,
            "created": self.created.isoformat(),
            "run_id": self.run_id,
            "gate_passed": self.gate_passed,
        }


@dataclass
class DecisionResult:
    """What an approve / reject / rollback did."""

    outcome: str  # applied | refused | noop (a repeated request)
    action: str
    version: str | None
    champion: str | None  # after the operation
    previous_champion: str | None
    message: str
    request_id: str

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "noop")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    model: str
    version: str | None
    previous_champion: str | None
    outcome: str
    reason: str
    evidence: str | None
    request_id: str | None
    alias_moved_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("at", "alias_moved_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


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


class Registry:
    """Registered model ``settings.project`` in the configured MLflow."""

    def __init__(
        self, settings: Settings, meta: MetadataStore | None = None, uri: str | None = None
    ) -> None:
        import mlflow

        self.settings = settings
        self.name = settings.project
        self.uri = uri or tracking_uri(settings)
        self.meta = meta or MetadataStore(settings.db_url)
        self._mlflow = mlflow
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The MLflow client, made at first use after checking that the server answers (a
        :class:`ServiceUnavailable` in seconds, not minutes of MLflow's retries). Nothing
        is asked of MLflow before that: a refusal (a missing role) comes first."""
        if self._client is None:
            from mlflow import MlflowClient

            require_reachable(self.uri)
            self._client = MlflowClient(self.uri, registry_uri=self.uri)
        return self._client

    # experiments and runs ----------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.settings.storage.mlflow_uri is None

    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.name)
        if exp is not None:
            return str(exp.experiment_id)
        location = (
            (
                mlflow_artifact_root(self.settings)
                or mlflow_paths(self.settings.workspace)[1].as_uri()
            )
            if self.is_local
            else None
        )
        try:
            return str(self.client.create_experiment(self.name, artifact_location=location))
        except MlflowException as e:  # created concurrently: read theirs
            exp = self.client.get_experiment_by_name(self.name)
            if exp is None:
                raise RegistryError(f"cannot create MLflow experiment '{self.name}': {e}") from e
            return str(exp.experiment_id)

    def end_dead_runs(self) -> list[str]:
        """Mark KILLED the project's runs still RUNNING whose process, on this machine, is
        gone (a training killed, or its machine rebooted mid-run): MLflow cannot know, and
        would show them running for ever. Runs of other machines are left alone. Returns the
        run ids it ended."""
        host = socket.gethostname()
        ended = []
        for run in self.client.search_runs(
            [self.experiment_id()], filter_string="attributes.status = 'RUNNING'", max_results=200
        ):
            tags = run.data.tags
            if tags.get(RUN_HOST) != host or not tags.get(RUN_PID, "").isdigit():
                continue
            if _alive(int(tags[RUN_PID])):
                continue
            self.client.set_terminated(run.info.run_id, "KILLED")
            log.warning(
                "run %s of process %s had died while running: marked KILLED",
                run.info.run_id,
                tags[RUN_PID],
            )
            ended.append(run.info.run_id)
        return ended

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
        mlflow = self._mlflow
        from mlflow.models import ModelSignature, infer_signature
        from mlflow.types.schema import ColSpec, Schema

        with warnings.catch_warnings():  # class labels are integers on purpose
            warnings.filterwarnings("ignore", message=".*Inferred schema contains integer")
            inferred = infer_signature(input_example, signature_output)
        # every input column may be missing in a request: the model handles missing values
        signature = ModelSignature(
            inputs=Schema(
                [ColSpec(c.type, c.name, required=False) for c in inferred.inputs.inputs]
            ),
            outputs=inferred.outputs,
        )
        # MLflow prints the run's URL on stdout when a run ends: keep stdout for the output of
        # our commands (`mlops train --json`)
        with (
            contextlib.redirect_stdout(sys.stderr),
            mlflow.start_run(
                experiment_id=self.experiment_id(),
                run_name=run_name,
                tags={RUN_HOST: socket.gethostname(), RUN_PID: str(os.getpid())},
            ) as run,
        ):
            mlflow.log_params({k: _param(v) for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if _finite(v)})
            mlflow.set_tags(tags)
            for sub, path in files.items():
                if path.is_dir():
                    mlflow.log_artifacts(str(path), artifact_path=sub)
                else:
                    mlflow.log_artifact(str(path), artifact_path=sub)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={k: str(v) for k, v in artifacts.items()},
                pip_requirements=pip_requirements(),
                signature=signature,
                input_example=input_example,
            )
            return run.info.run_id, info.model_uri

    def log_run_files(self, run_id: str, files: dict[str, Path]) -> None:
        for sub, path in files.items():
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=sub)
            else:
                self.client.log_artifact(run_id, str(path), artifact_path=sub)

    def register(
        self, model_uri: str, run_id: str, tags: dict[str, str], description: str | None = None
    ) -> str:
        """Register a logged model as a new version, with its tags (and the model card as its
        description) set in the same call."""
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
        version = str(mv.version)
        self._audit(
            SYSTEM,
            "register",
            version,
            None,
            "recorded",
            f"registered with status {tags.get('status')}",
            f"runs:/{run_id}",
        )
        return version

    def ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            with contextlib.suppress(MlflowException):  # created concurrently
                self.client.create_registered_model(self.name)

    # reading -------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(self.name)
        except MlflowException:
            return {}
        return {k: str(v) for k, v in (rm.aliases or {}).items()}

    def champion(self) -> str | None:
        self.reconcile()
        return self._db_champion()[0]

    def version(self, version: str) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.name, str(version))
        except MlflowException:
            raise NotFoundError(f"model '{self.name}' has no version {version}") from None
        return self._info(mv, self.aliases())

    def versions(self) -> list[VersionInfo]:
        self.reconcile()  # a listing must not show an alias a crash left behind
        aliases = self.aliases()
        mvs = self.client.search_model_versions(f"name='{self.name}'")
        return sorted((self._info(mv, aliases) for mv in mvs), key=lambda v: int(v.version))

    def online_versions(self) -> list[VersionInfo]:
        """Versions an online update registered (``model_type`` online), oldest first. Reads
        only: no reconcile (serving calls it)."""
        aliases = self.aliases()
        mvs = self.client.search_model_versions(f"name='{self.name}'")
        return sorted(
            (
                self._info(mv, aliases)
                for mv in mvs
                if (mv.tags or {}).get("model_type") == "online"
            ),
            key=lambda v: int(v.version),
        )

    def _info(self, mv: Any, aliases: dict[str, str]) -> VersionInfo:
        tags = dict(mv.tags or {})
        metrics = json.loads(tags.get("metrics", "{}"))
        gp = tags.get("gate_passed")
        return VersionInfo(
            version=str(mv.version),
            status=tags.get("status", "candidate"),
            aliases=sorted(a for a, v in aliases.items() if v == str(mv.version)),
            metrics=metrics,
            trigger=tags.get("trigger", ""),
            created=datetime.fromtimestamp(  # naive UTC, as all our times
                mv.creation_timestamp / 1000, UTC
            ).replace(tzinfo=None),
            run_id=mv.run_id,
            gate_passed=None if gp is None else gp == "true",
            tags=tags,
        )

    def model_uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}"

    def load(self, version: str) -> Any:
        """The packaged model (pyfunc) of ``version``."""
        return self._mlflow.pyfunc.load_model(self.model_uri(version))

    def predict(self, version: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions of ``version`` for ``frame``, its columns first cast to the types in the
        model's signature (MLflow refuses even int → double)."""
        model = self.load(version)
        return model.predict(conform_to_signature(frame, model.metadata.get_input_schema()))

    def run_file(self, version: str, path: str, cache_dir: Path) -> Path:
        """A file of the version's training run (e.g. ``reference/reference.parquet``), kept
        in ``cache_dir`` once downloaded: artifacts of a version never change."""
        target = cache_dir / f"{self.name}-v{version}" / path
        if not target.exists():
            info = self.version(version)
            if not info.run_id:
                raise NotFoundError(f"version {version} has no training run")
            tmp = Path(
                self._mlflow.artifacts.download_artifacts(
                    run_id=info.run_id,
                    artifact_path=path,
                    dst_path=str(cache_dir / f".download-{uuid.uuid4().hex}"),
                )
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(target)
        return target

    def download(self, version: str, dst: Path) -> Path:
        return Path(
            self._mlflow.artifacts.download_artifacts(
                artifact_uri=self.model_uri(version), dst_path=str(dst)
            )
        )

    def artifact_hash(self, version: str) -> str:
        """sha256 of the version's model file, as stored now."""
        with tempfile.TemporaryDirectory() as tmp:
            local = self.download(version, Path(tmp))
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
            return package_sha256(
                Path(
                    self._mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
                )
            )

    def verify_package(self, version: str, folder: Path) -> None:
        """Raise :class:`RegistryError` unless ``folder`` (the version's downloaded package)
        hashes to the ``package_sha256`` recorded at registration (versions registered before
        that tag existed: their model file against ``model_sha256``)."""
        tags = self.version(version).tags
        want = tags.get("package_sha256")
        if want:
            have = package_sha256(folder)
            what = "package"
        else:
            want = tags.get("model_sha256")
            files = sorted(p for p in (folder / "artifacts").rglob("model.*") if p.is_file())
            have = file_sha256(files[0]) if files else "(no model file)"
            what = "model file"
        if not want or want != have:
            raise RegistryError(
                f"version {version}: the {what}'s sha256 no longer matches "
                f"the one recorded at registration ({want} != {have})"
            )

    def set_status(self, version: str, status: str) -> None:
        assert status in STATUSES
        self.client.set_model_version_tag(self.name, version, "status", status)

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(self.name, version, k, v)

    def set_challenger(self, version: str | None) -> None:
        from mlflow.exceptions import MlflowException

        if version is None:
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model_alias(self.name, CHALLENGER)
        else:
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)

    # audit ---------------------------------------------------------------------------------
    def record_gate_rejection(
        self, version: str, champion: str | None, reasons: list[str], run_id: str
    ) -> None:
        """Audit that the gate refused ``version`` (its status tag already says rejected)."""
        self._audit(
            "gate",
            "gate_reject",
            version,
            champion,
            "applied",
            "; ".join(reasons),
            f"runs:/{run_id}",
        )

    def supersede_online(self, newer: str) -> list[str]:
        """Retire the online snapshots still awaiting approval that ``newer`` (a later
        snapshot, continued from them) replaces; each is audited. Returns their versions."""
        done = []
        for v in self.online_versions():
            if (
                v.version != newer
                and int(v.version) < int(newer)
                and v.status == "pending_approval"
            ):
                self.set_tags(v.version, {"status": "retired", "superseded_by": newer})
                self._audit(
                    SYSTEM,
                    "supersede",
                    v.version,
                    None,
                    "applied",
                    f"online snapshot superseded by v{newer}, which continued it",
                )
                done.append(v.version)
        return done

    def _audit(
        self,
        actor: str,
        action: str,
        version: str | None,
        previous: str | None,
        outcome: str,
        reason: str,
        evidence: str | None = None,
        request_id: str | None = None,
        conn: sa.Connection | None = None,
    ) -> int:
        values = dict(
            at=utcnow(),
            actor=actor,
            action=action,
            model=self.name,
            version=version,
            previous_champion=previous,
            outcome=outcome,
            reason=reason,
            evidence=evidence,
            request_id=request_id,
        )
        if conn is not None:
            return _inserted_id(conn.execute(audit_log.insert().values(**values)))
        with self.meta.write() as c:
            return _inserted_id(c.execute(audit_log.insert().values(**values)))

    def audit(
        self,
        *,
        limit: int | None = None,
        action: str | None = None,
        actor: str | None = None,
        version: str | None = None,
        after_id: int | None = None,
    ) -> list[AuditRecord]:
        """Audit records, newest first; with ``after_id``, those appended after that record,
        oldest first (how an outbox reads: ``limit`` at a time, none skipped)."""
        q = (
            sa.select(audit_log)
            .where(audit_log.c.model == self.name)
            .order_by(audit_log.c.id.desc() if after_id is None else audit_log.c.id.asc())
        )
        if after_id is not None:
            q = q.where(audit_log.c.id > after_id)
        if action:
            q = q.where(audit_log.c.action == action)
        if actor:
            q = q.where(audit_log.c.actor == actor)
        if version:
            q = q.where(audit_log.c.version == str(version))
        if limit:
            q = q.limit(limit)
        with self.meta.engine.connect() as conn:
            return [AuditRecord(**dict(r._mapping)) for r in conn.execute(q)]

    def _find_request(self, request_id: str) -> AuditRecord | None:
        with self.meta.engine.connect() as conn:
            row = conn.execute(
                sa.select(audit_log).where(
                    audit_log.c.model == self.name, audit_log.c.request_id == request_id
                )
            ).first()
        return AuditRecord(**dict(row._mapping)) if row else None

    def _db_champion(self, conn: sa.Connection | None = None) -> tuple[str | None, int]:
        q = sa.select(champion_state.c.version, champion_state.c.generation).where(
            champion_state.c.model == self.name
        )
        if conn is None:
            with self.meta.engine.connect() as c:
                row = c.execute(q).first()
        else:
            row = conn.execute(q).first()
        return (row[0], int(row[1])) if row else (None, 0)

    # the champion: decide in the DB, then move the alias ------------------------------------
    def reconcile(self) -> list[str]:
        """Make MLflow match the metadata DB (the record of intent). Returns what it repaired.

        A mismatch seen without the lock may be a decision half-way (committed, alias not
        moved yet): the repair reads both again and moves the alias under the decision lock,
        so a stale read never moves the alias back over a decision made meanwhile."""
        repaired = []
        have = self.aliases().get(CHAMPION)  # the alias first: a decision moves it last
        want, _ = self._db_champion()
        if want != have:
            with self.meta.write(lock=f"decide:{self.name}") as conn:
                want = self._db_champion(conn)[0]
                have = self.aliases().get(CHAMPION)
                if want is None and have is not None:
                    # an alias set outside this tool (MLflow UI): adopt it, and audit that
                    self._set_db_champion(conn, have, None)
                    self._audit(
                        SYSTEM,
                        "adopt",
                        have,
                        None,
                        "applied",
                        "champion alias found in MLflow without a record; adopted",
                        conn=conn,
                    )
                    return [f"adopted champion v{have} from MLflow"]
                if want != have:
                    self._move_alias(want, have)
                    repaired.append(f"champion alias moved v{have} -> v{want}")
        unmarked = sa.and_(
            audit_log.c.model == self.name,
            audit_log.c.outcome == "applied",
            audit_log.c.alias_moved_at.is_(None),
            audit_log.c.action.in_(["approve", "rollback", "auto_promote"]),
        )
        with self.meta.engine.connect() as c:  # a read first: most calls have nothing to mark
            todo = c.execute(sa.select(audit_log.c.id).where(unmarked).limit(1)).first()
        if todo is not None:
            with self.meta.write() as conn:
                conn.execute(audit_log.update().where(unmarked).values(alias_moved_at=utcnow()))
        if repaired:
            log.warning("registry reconcile: %s", "; ".join(repaired))
        return repaired

    def _set_db_champion(
        self, conn: sa.Connection, version: str | None, expected: str | None
    ) -> bool:
        """Compare-and-set: only if the champion is still ``expected``."""
        cur, gen = self._db_champion(conn)
        if cur != expected:
            return False
        if (
            gen == 0
            and cur is None
            and conn.execute(
                sa.select(champion_state.c.model).where(champion_state.c.model == self.name)
            ).first()
            is None
        ):
            conn.execute(
                champion_state.insert().values(
                    model=self.name, version=version, generation=1, updated_at=utcnow()
                )
            )
        else:
            done = conn.execute(
                champion_state.update()
                .where(champion_state.c.model == self.name, champion_state.c.generation == gen)
                .values(version=version, generation=gen + 1, updated_at=utcnow())
            )
            return bool(done.rowcount)
        return True

    def _move_alias(self, version: str | None, previous: str | None) -> None:
        """Point ``champion`` at ``version`` and update status tags (idempotent)."""
        from mlflow.exceptions import MlflowException

        if version is None:
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model_alias(self.name, CHAMPION)
            return
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        self.set_status(version, "approved")
        if previous and previous != version:
            self.set_status(previous, "retired")
        if self.aliases().get(CHALLENGER) == version:
            self.set_challenger(None)

    def _verify_promotable(self, version: str) -> None:
        info = self.version(version)
        if info.gate_passed is not True:
            raise RegistryError(f"version {version} did not pass the promotion gate")
        with tempfile.TemporaryDirectory() as tmp:
            self.verify_package(version, self.download(version, Path(tmp)))

    def _begin(
        self, action: str, version: str, by: str, request_id: str | None, any_version: bool = False
    ) -> tuple[str, DecisionResult | None]:
        """Start a decision: repair MLflow from the DB, then (request id, the answer if that
        request was seen before). The same request again (a retry, a double click) is a no-op;
        its id reused for another action or version is refused, and the refusal audited.
        ``any_version``: the version was not chosen by the caller (a rollback to "the one
        before", which the first click has changed), so the same action is the same request."""
        self.reconcile()
        rid = request_id or uuid.uuid4().hex
        prior = self._find_request(rid)
        if prior is None:
            return rid, None
        current = self._db_champion()[0]
        if prior.action != action or (prior.version != version and not any_version):
            why = (
                f"request id {rid} was already used for {prior.action} v{prior.version}; "
                "a new action needs a new request id"
            )
            self._audit(by, action, version, current, "refused", why)
            return rid, DecisionResult("refused", action, version, current, current, why, rid)
        return rid, DecisionResult(
            "noop",
            prior.action,
            prior.version,
            current,
            prior.previous_champion,
            f"request {rid} was already handled ({prior.outcome}); nothing was changed",
            rid,
        )

    def _decided(self, conn: sa.Connection, version: str) -> AuditRecord | None:
        """The decision already applied to ``version`` (approved, rejected by a person or the
        gate, superseded), read inside the decision lock; None while it awaits one."""
        row = conn.execute(
            sa.select(audit_log)
            .where(
                audit_log.c.model == self.name,
                audit_log.c.version == version,
                audit_log.c.outcome == "applied",
                audit_log.c.action.in_(DECISIONS),
            )
            .order_by(audit_log.c.id)
            .limit(1)
        ).first()
        return AuditRecord(**dict(row._mapping)) if row else None

    def _decide(
        self,
        action: str,
        version: str,
        by: str,
        comment: str,
        expected: str | EllipsisType | None,
        request_id: str | None,
        allowed: tuple[str, ...],
        any_version: bool = False,
    ) -> DecisionResult:
        """The one path of every decision on a version: approve, auto-promote, rollback,
        reject. The slow checks (status, package hash) run first; then, under the decision
        lock, the champion and the version's earlier decision are read again and the decision
        is made by compare-and-set, audited in the same transaction. Two decisions on one
        version at once: one applies, the other is refused and says why."""
        if expected is Ellipsis:  # no expectation: the champion when this decision started
            expected = self._db_champion()[0]
        rid, done = self._begin(action, version, by, request_id, any_version)
        if done is not None:
            return done
        info = self.version(version)
        moves_champion = action != "reject"
        refusal = None
        if info.status not in allowed:
            refusal = f"version {version} is {info.status}; {action} needs {' or '.join(allowed)}"
        elif moves_champion:
            try:
                self._verify_promotable(version)
            except RegistryError as e:
                refusal = str(e)
        evidence = f"runs:/{info.run_id}" if info.run_id else None
        with self.meta.write(lock=f"decide:{self.name}") as conn:  # one decision at a time
            current = self._db_champion(conn)[0]
            prior = self._decided(conn, version) if action != "rollback" else None
            if refusal is None and version == current:
                refusal = (
                    f"version {version} is the champion; it cannot be rejected"
                    if action == "reject"
                    else f"version {version} is already the champion; nothing was changed"
                )
            elif refusal is None and prior is not None:
                refusal = (
                    f"version {version} was already {PAST[prior.action]} (by "
                    f"{prior.actor} at {prior.at:%Y-%m-%d %H:%M:%S} UTC); nothing was "
                    "changed"
                )
            elif (
                refusal is None
                and moves_champion
                and not self._set_db_champion(conn, version, expected)
            ):  # type: ignore[arg-type]
                now = self._db_champion(conn)[0]
                refusal = (
                    f"the champion changed while you decided: expected "
                    f"{'v' + str(expected) if expected else 'none'}, now "
                    f"{'v' + now if now else 'none'}; nothing was changed"
                )
            outcome = "refused" if refusal else "applied"
            try:
                self._audit(
                    by,
                    action,
                    version,
                    current,
                    outcome,
                    comment if not refusal else f"{refusal} (comment: {comment})",
                    evidence,
                    rid,
                    conn=conn,
                )
            except sa.exc.IntegrityError:  # the same request raced itself
                conn.rollback()
                return DecisionResult(
                    "noop",
                    action,
                    version,
                    current,
                    current,
                    f"request {rid} was already handled; nothing was changed",
                    rid,
                )
        if refusal:
            return DecisionResult("refused", action, version, current, current, refusal, rid)
        if not moves_champion:
            self.set_status(version, "rejected")
            if self.aliases().get(CHALLENGER) == version:
                self.set_challenger(None)
            return DecisionResult(
                "applied", action, version, current, current, f"v{version} rejected", rid
            )
        self._move_alias(version, current)  # a crash here is repaired by reconcile()
        self.reconcile()
        return DecisionResult(
            "applied",
            action,
            version,
            version,
            current,
            f"v{version} is champion (was {'v' + current if current else 'none'})",
            rid,
        )

    def approve(
        self,
        version: str,
        *,
        by: str,
        comment: str = "",
        expected_champion: str | EllipsisType | None = Ellipsis,
        request_id: str | None = None,
    ) -> DecisionResult:
        """Make a pending version champion. ``expected_champion`` is the champion the approver
        saw; if it changed meanwhile the approval is refused (and audited)."""
        return self._decide(
            "approve",
            str(version),
            by,
            comment,
            expected_champion,
            request_id,
            ("pending_approval",),
        )

    def auto_promote(self, version: str, *, comment: str) -> DecisionResult:
        return self._decide(
            "auto_promote",
            str(version),
            SYSTEM,
            comment,
            Ellipsis,
            None,
            ("pending_approval", "candidate"),
        )

    def rollback(
        self,
        *,
        by: str,
        comment: str,
        to: str | None = None,
        request_id: str | None = None,
        expected_champion: str | EllipsisType | None = Ellipsis,
    ) -> DecisionResult:
        """Make a previously approved version champion again (default: the one before).
        Without ``to``, a request id seen before is the same request (a double click), whatever
        the champion is now."""
        default = to is None
        if default and request_id is not None:
            prior = self._find_request(request_id)
            if prior is not None and prior.action == "rollback":
                current = self._db_champion()[0]
                return DecisionResult(
                    "noop",
                    prior.action,
                    prior.version,
                    current,
                    prior.previous_champion,
                    f"request {request_id} was already handled "
                    f"({prior.outcome}); nothing was changed",
                    request_id,
                )
        if to is None:
            current = self.champion()
            previous = [
                r.previous_champion
                for r in self.audit()
                if r.outcome == "applied"
                and r.version == current
                and r.action in ("approve", "rollback", "auto_promote")
                and r.previous_champion
            ]
            if not previous:
                raise RegistryError("no earlier champion to roll back to; use --to VERSION")
            to = previous[0]
        return self._decide(
            "rollback",
            str(to),
            by,
            comment,
            expected_champion,
            request_id,
            ("approved", "retired"),
            any_version=default,
        )

    def reject(
        self, version: str, *, by: str, comment: str, request_id: str | None = None
    ) -> DecisionResult:
        """Reject a pending version: it never becomes champion. Shares :meth:`_decide` with
        approve, so a rejection racing an approval of the same version cannot both apply."""
        if not comment.strip():
            raise RegistryError("a rejection needs a comment saying why")
        return self._decide(
            "reject", str(version), by, comment, None, request_id, ("pending_approval", "candidate")
        )


_SMOKE_CODE = """
import json, sys
import mlflow, mlflow.pyfunc, pandas as pd, xgboost, sklearn  # the libraries, before any model
print("ready", flush=True)
job = json.loads(sys.stdin.readline())
mlflow.set_tracking_uri(job["tracking"]); mlflow.set_registry_uri(job["tracking"])
model = mlflow.pyfunc.load_model(job["model_uri"])
out = model.predict(pd.read_parquet(job["example"]))
print(json.dumps([str(v) for v in out["prediction"]]), flush=True)
"""


class SmokeTest:
    """Load and predict a packaged model in a fresh Python process.

    The process starts (and imports its libraries) as soon as the object is made, so a training
    run can start it before its search and only pay for loading the model at the end. It never
    sees the trained objects: only the model URI and an example file."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-smoke-")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SMOKE_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def submit(self, model_uri: str, example: pd.DataFrame, tracking: str) -> None:
        path = Path(self._tmp.name) / "example.parquet"
        example.to_parquet(path, index=False)
        assert self._proc.stdin is not None
        job = {"model_uri": model_uri, "example": str(path), "tracking": tracking}
        try:
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()  # one line is the whole job; communicate() closes stdin
        except BrokenPipeError:
            pass  # the process died; result() says why

    def result(self, timeout_s: float = 180) -> tuple[bool, str, list[str] | None]:
        """(ok, detail, predictions as text)."""
        try:
            out, errtext = self._proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            return False, f"timed out after {timeout_s:.0f} s", None
        finally:
            self._tmp.cleanup()
        if self._proc.returncode != 0:
            tail = (errtext.strip().splitlines() or ["(no output)"])[-1]
            return False, f"failed: {tail[-400:]}", None
        try:
            preds = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return False, f"unreadable output: {out[-200:]}", None
        return True, f"{len(preds)} predictions", preds

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._tmp.cleanup()


def smoke_test(
    model_uri: str, example: pd.DataFrame, tracking: str, timeout_s: float = 180
) -> tuple[bool, str, list[str] | None]:
    """Load ``model_uri`` in a fresh Python process and predict ``example`` (passed as Parquet,
    so types survive). Returns (ok, detail, predictions as text)."""
    test = SmokeTest()
    test.submit(model_uri, example, tracking)
    return test.result(timeout_s)


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


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finite(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))


def _param(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s[:6000]
