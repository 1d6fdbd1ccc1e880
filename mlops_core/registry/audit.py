"""The registry's record of intent, in the metadata DB: who is champion (by compare-and-set,
with a generation), and the append-only audit log of every decision and registration.

No MLflow here: the champion is decided in these tables first, and the MLflow alias follows
(:meth:`mlops_core.registry.registry.Registry.reconcile` repairs it after a crash)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from mlops_core.registry.decision import DECISIONS, MOVES_CHAMPION
from mlops_core.registry.records import AuditRecord
from mlops_core.store import MetadataStore, audit_log, champion_state, utcnow


class AuditStore:
    """The champion state and the audit records of registered model ``name``."""

    def __init__(self, meta: MetadataStore, name: str) -> None:
        self.meta = meta
        self.name = name

    @contextlib.contextmanager
    def decision_lock(self) -> Iterator[sa.Connection]:
        """A write transaction that holds the model's decision lock: one decision at a time
        (an advisory lock on Postgres, SQLite's write lock otherwise)."""
        with self.meta.write(lock=f"decide:{self.name}") as conn:
            yield conn

    # the champion --------------------------------------------------------------------------
    def champion(self, conn: sa.Connection | None = None) -> tuple[str | None, int]:
        """(the champion the DB records, its generation); (None, 0) before the first."""
        q = sa.select(champion_state.c.version, champion_state.c.generation).where(
            champion_state.c.model == self.name
        )
        if conn is None:
            with self.meta.engine.connect() as c:
                row = c.execute(q).first()
        else:
            row = conn.execute(q).first()
        return (row[0], int(row[1])) if row else (None, 0)

    def set_champion(self, conn: sa.Connection, version: str | None, expected: str | None) -> bool:
        """Compare-and-set: make ``version`` champion only if it is still ``expected``."""
        cur, gen = self.champion(conn)
        if cur != expected:
            return False
        if gen == 0 and cur is None and not self._has_state(conn):
            conn.execute(
                champion_state.insert().values(
                    model=self.name, version=version, generation=1, updated_at=utcnow()
                )
            )
            return True
        done = conn.execute(
            champion_state.update()
            .where(champion_state.c.model == self.name, champion_state.c.generation == gen)
            .values(version=version, generation=gen + 1, updated_at=utcnow())
        )
        return bool(done.rowcount)

    def _has_state(self, conn: sa.Connection) -> bool:
        q = sa.select(champion_state.c.model).where(champion_state.c.model == self.name)
        return conn.execute(q).first() is not None

    # the audit log -------------------------------------------------------------------------
    def record(
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
        """Append one audit record (in ``conn``'s transaction when given); its id."""
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

    def records(
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

    def find_request(self, request_id: str) -> AuditRecord | None:
        """The record a request id was first used for, if any."""
        with self.meta.engine.connect() as conn:
            row = conn.execute(
                sa.select(audit_log).where(
                    audit_log.c.model == self.name, audit_log.c.request_id == request_id
                )
            ).first()
        return AuditRecord(**dict(row._mapping)) if row else None

    def decided(self, conn: sa.Connection, version: str) -> AuditRecord | None:
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

    def mark_alias_moved(self) -> None:
        """Stamp ``alias_moved_at`` on the applied champion moves not stamped yet (the alias
        has been seen to match the DB)."""
        unmarked = sa.and_(
            audit_log.c.model == self.name,
            audit_log.c.outcome == "applied",
            audit_log.c.alias_moved_at.is_(None),
            audit_log.c.action.in_(MOVES_CHAMPION),
        )
        with self.meta.engine.connect() as c:  # a read first: most calls have nothing to mark
            todo = c.execute(sa.select(audit_log.c.id).where(unmarked).limit(1)).first()
        if todo is not None:
            with self.meta.write() as conn:
                conn.execute(audit_log.update().where(unmarked).values(alias_moved_at=utcnow()))


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
