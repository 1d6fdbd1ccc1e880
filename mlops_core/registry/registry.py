"""The model registry: versions, aliases and who is champion, over two stores.

Versions are MLflow model versions (:mod:`mlops_core.registry.mlflow_adapter`, the only module
that talks to MLflow); their status lives on the ``status`` tag (``candidate`` →
``pending_approval`` → ``approved`` / ``rejected``; ``retired``) and the ``champion`` and
``challenger`` aliases are the only pointers serving follows. Who is champion is decided in the
metadata DB first (:mod:`mlops_core.registry.audit`), by compare-and-set under its decision
lock, with an append-only audit record, by the pure rules of
:mod:`mlops_core.registry.decision`; then the MLflow alias is moved. A crash between the two is
repaired by :meth:`Registry.reconcile`, which every decision runs first, and so do the reads a
person sees (:meth:`Registry.champion`, :meth:`Registry.versions`): a listing never shows an
alias a crash left behind.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from pathlib import Path
from types import EllipsisType
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlops_core.config import Settings
from mlops_core.errors import NotFoundError, RegistryError
from mlops_core.ops.services import mlflow_artifact_root, mlflow_paths, tracking_uri
from mlops_core.registry import decision
from mlops_core.registry.audit import AuditStore
from mlops_core.registry.mlflow_adapter import MlflowModels, conform_to_signature
from mlops_core.registry.records import (
    CHALLENGER,
    CHAMPION,
    RUN_HOST,
    RUN_PID,
    STATUSES,
    SYSTEM,
    AuditRecord,
    DecisionResult,
    VersionInfo,
)
from mlops_core.registry.smoke import SmokeTest, smoke_test
from mlops_core.store import MetadataStore, file_sha256, package_sha256

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "RUN_HOST",
    "RUN_PID",
    "AuditRecord",
    "DecisionResult",
    "Registry",
    "RegistryError",
    "SmokeTest",
    "VersionInfo",
    "conform_to_signature",
    "file_sha256",
    "smoke_test",
]

log = logging.getLogger(__name__)


class Registry:
    """Registered model ``settings.project`` in the configured MLflow, and its decisions in
    the metadata DB. Making one talks to neither, and sets no process-global MLflow state."""

    def __init__(
        self, settings: Settings, meta: MetadataStore | None = None, uri: str | None = None
    ) -> None:
        self.settings = settings
        self.name = settings.project
        self.uri = uri or tracking_uri(settings)
        self.meta = meta or MetadataStore(settings.db_url)
        location = None
        if settings.storage.mlflow_uri is None:  # the project's own MLflow: its artifact root
            location = (
                mlflow_artifact_root(settings) or mlflow_paths(settings.workspace)[1].as_uri()
            )
        self.mlflow = MlflowModels(self.name, self.uri, location)
        self.records = AuditStore(self.meta, self.name)

    @property
    def client(self) -> Any:
        """MLflow's client, for tests and tools that look behind the registry."""
        return self.mlflow.client

    # experiments and runs (the adapter's) --------------------------------------------------
    def experiment_id(self) -> str:
        return self.mlflow.experiment_id()

    def end_dead_runs(self) -> list[str]:
        """Mark KILLED the project's runs still RUNNING whose process, on this machine, is
        gone (a training killed, or its machine rebooted mid-run): MLflow cannot know, and
        would show them running for ever. Runs of other machines are left alone. Returns the
        run ids it ended."""
        return self.mlflow.end_dead_runs()

    def log_candidate(self, **kwargs: Any) -> tuple[str, str]:
        """Log a run with its model (not yet registered) and files: see
        :meth:`MlflowModels.log_candidate`. Returns (run_id, model_uri)."""
        return self.mlflow.log_candidate(**kwargs)

    def log_run_files(self, run_id: str, files: dict[str, Path]) -> None:
        self.mlflow.log_run_files(run_id, files)

    def register(
        self, model_uri: str, run_id: str, tags: dict[str, str], description: str | None = None
    ) -> str:
        """Register a logged model as a new version, with its tags (and the model card as its
        description) set in the same call; audited."""
        version = self.mlflow.create_version(model_uri, run_id, tags, description)
        self.records.record(
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
        self.mlflow.ensure_registered_model()

    # reading -------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        return self.mlflow.aliases()

    def champion(self) -> str | None:
        self.reconcile()
        return self._db_champion()[0]

    def version(self, version: str) -> VersionInfo:
        return self.mlflow.version(version)

    def versions(self) -> list[VersionInfo]:
        self.reconcile()  # a listing must not show an alias a crash left behind
        return self.mlflow.versions()

    def online_versions(self) -> list[VersionInfo]:
        """Versions an online update registered (``model_type`` online), oldest first. Reads
        only: no reconcile (serving calls it)."""
        return self.mlflow.versions(model_type="online")

    def model_uri(self, version: str) -> str:
        return self.mlflow.model_uri(version)

    def load(self, version: str) -> Any:
        """The packaged model (pyfunc) of ``version``."""
        return self.mlflow.load(version)

    def predict(self, version: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Predictions of ``version`` for ``frame``, its columns first cast to the types in the
        model's signature (MLflow refuses even int → double)."""
        return self.mlflow.predict(version, frame)

    def run_file(self, version: str, path: str, cache_dir: Path) -> Path:
        """A file of the version's training run (e.g. ``reference/reference.parquet``), kept
        in ``cache_dir`` once downloaded: artifacts of a version never change."""
        target = cache_dir / f"{self.name}-v{version}" / path
        if not target.exists():
            info = self.version(version)
            if not info.run_id:
                raise NotFoundError(f"version {version} has no training run")
            scratch = cache_dir / f".download-{uuid.uuid4().hex}"
            tmp = self.mlflow.download_run_file(info.run_id, path, scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(target)
        return target

    def download(self, version: str, dst: Path) -> Path:
        return self.mlflow.download(self.model_uri(version), dst)

    def artifact_hash(self, version: str) -> str:
        """sha256 of the version's model file, as stored now."""
        return self.mlflow.artifact_hash(version)

    def package_hash(self, model_uri: str) -> str:
        """:func:`package_sha256` of the model package at ``model_uri``, as stored now."""
        return self.mlflow.package_hash(model_uri)

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

    # tags and the challenger ---------------------------------------------------------------
    def set_status(self, version: str, status: str) -> None:
        assert status in STATUSES
        self.mlflow.set_tags(version, {"status": status})

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(version, tags)

    def set_challenger(self, version: str | None) -> None:
        self.mlflow.set_alias(CHALLENGER, version)

    # audit ---------------------------------------------------------------------------------
    def record_gate_rejection(
        self, version: str, champion: str | None, reasons: list[str], run_id: str
    ) -> None:
        """Audit that the gate refused ``version`` (its status tag already says rejected)."""
        self.records.record(
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
                self.records.record(
                    SYSTEM,
                    "supersede",
                    v.version,
                    None,
                    "applied",
                    f"online snapshot superseded by v{newer}, which continued it",
                )
                done.append(v.version)
        return done

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
        return self.records.records(
            limit=limit, action=action, actor=actor, version=version, after_id=after_id
        )

    def _find_request(self, request_id: str) -> AuditRecord | None:
        return self.records.find_request(request_id)

    def _db_champion(self, conn: sa.Connection | None = None) -> tuple[str | None, int]:
        return self.records.champion(conn)

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
            repaired = self._repair_alias()
        self.records.mark_alias_moved()
        if repaired:
            log.warning("registry reconcile: %s", "; ".join(repaired))
        return repaired

    def _repair_alias(self) -> list[str]:
        with self.records.decision_lock() as conn:
            want = self._db_champion(conn)[0]
            have = self.aliases().get(CHAMPION)
            if want is None and have is not None:
                # an alias set outside this tool (MLflow UI): adopt it, and audit that
                self.records.set_champion(conn, have, None)
                reason = "champion alias found in MLflow without a record; adopted"
                self.records.record(SYSTEM, "adopt", have, None, "applied", reason, conn=conn)
                return [f"adopted champion v{have} from MLflow"]
            if want != have:
                self._move_alias(want, have)
                return [f"champion alias moved v{have} -> v{want}"]
        return []

    def _move_alias(self, version: str | None, previous: str | None) -> None:
        """Point ``champion`` at ``version`` and update status tags (idempotent)."""
        if version is None:
            self.mlflow.set_alias(CHAMPION, None)
            return
        self.mlflow.set_alias(CHAMPION, version)
        self.set_status(version, "approved")
        if previous and previous != version:
            self.set_status(previous, "retired")
        if self.aliases().get(CHALLENGER) == version:
            self.set_challenger(None)

    def _verify_promotable(self, version: str) -> None:
        """Raise :class:`RegistryError` unless ``version`` passed the gate and its package
        still hashes to what was registered."""
        if self.version(version).gate_passed is not True:
            raise RegistryError(f"version {version} did not pass the promotion gate")
        with tempfile.TemporaryDirectory() as tmp:
            self.verify_package(version, self.download(version, Path(tmp)))

    def _package_problem(self, version: str) -> str | None:
        """Why ``version`` cannot become champion (the gate, its package's hash), or None."""
        try:
            self._verify_promotable(version)
        except RegistryError as e:
            return str(e)
        return None

    def _begin(
        self, action: str, version: str, by: str, request_id: str | None, any_version: bool = False
    ) -> tuple[str, DecisionResult | None]:
        """Start a decision: repair MLflow from the DB, then (request id, the answer if that
        request was seen before). The same request again (a retry, a double click) is a no-op;
        its id reused for another action or version is refused, and the refusal audited."""
        self.reconcile()
        rid = request_id or uuid.uuid4().hex
        prior = self._find_request(rid)
        repeat = decision.repeat_of(prior, action, version, any_version)
        if prior is None or repeat == "new":
            return rid, None
        current = self._db_champion()[0]
        if repeat == "reused":
            why = decision.reused_message(rid, prior)
            self.records.record(by, action, version, current, "refused", why)
            return rid, DecisionResult("refused", action, version, current, current, why, rid)
        return rid, DecisionResult(
            "noop",
            prior.action,
            prior.version,
            current,
            prior.previous_champion,
            decision.handled_message(rid, prior),
            rid,
        )

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
        # no expectation: the champion when this decision started
        expect = self._db_champion()[0] if isinstance(expected, EllipsisType) else expected
        rid, done = self._begin(action, version, by, request_id, any_version)
        if done is not None:
            return done
        info = self.version(version)
        moves_champion = action in decision.MOVES_CHAMPION
        package_problem = (
            self._package_problem(version) if moves_champion and info.status in allowed else None
        )
        evidence = f"runs:/{info.run_id}" if info.run_id else None
        with self.records.decision_lock() as conn:  # one decision at a time
            current = self._db_champion(conn)[0]
            refusal = decision.refusal(
                action,
                version,
                status=info.status,
                allowed=allowed,
                package_problem=package_problem,
                current=current,
                prior=self.records.decided(conn, version) if action != "rollback" else None,
            )
            if (
                refusal is None
                and moves_champion
                and not self.records.set_champion(conn, version, expect)
            ):
                refusal = decision.changed_meanwhile(expect, self._db_champion(conn)[0])
            reason = comment if not refusal else f"{refusal} (comment: {comment})"
            outcome = "refused" if refusal else "applied"
            try:
                self.records.record(
                    by, action, version, current, outcome, reason, evidence, rid, conn=conn
                )
            except sa.exc.IntegrityError:  # the same request raced itself
                conn.rollback()
                why = f"request {rid} was already handled; nothing was changed"
                return DecisionResult("noop", action, version, current, current, why, rid)
        if refusal:
            return DecisionResult("refused", action, version, current, current, refusal, rid)
        return self._apply(action, version, current, rid)

    def _apply(self, action: str, version: str, current: str | None, rid: str) -> DecisionResult:
        """Make MLflow say what the DB decided: the alias moved, or the version rejected."""
        if action not in decision.MOVES_CHAMPION:
            self.set_status(version, "rejected")
            if self.aliases().get(CHALLENGER) == version:
                self.set_challenger(None)
            return DecisionResult(
                "applied", action, version, current, current, f"v{version} rejected", rid
            )
        self._move_alias(version, current)  # a crash here is repaired by reconcile()
        self.reconcile()
        was = "v" + current if current else "none"
        return DecisionResult(
            "applied", action, version, version, current, f"v{version} is champion (was {was})", rid
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
                    decision.handled_message(request_id, prior),
                    request_id,
                )
        if to is None:
            to = decision.rollback_target(self.champion(), self.audit())
            if to is None:
                raise RegistryError("no earlier champion to roll back to; use --to VERSION")
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
