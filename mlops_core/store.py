"""The metadata DB (SQLAlchemy) and the batch store (Parquet files under the workspace).

SQLite is the default and runs in WAL mode with a busy timeout, and every write transaction starts
with ``BEGIN IMMEDIATE`` so that concurrent writers queue instead of failing; any other SQLAlchemy
URL (Postgres) works unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mlops_core.errors import NotFoundError, ProjectMissing, ServiceUnavailable

log = logging.getLogger(__name__)

metadata = sa.MetaData()

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    # accepted | quarantined | released | withdrawn
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("origin", sa.Text, nullable=False),  # file path, URL or query it came from
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("start_time", sa.DateTime, nullable=True, index=True),
    sa.Column("end_time", sa.DateTime, nullable=True),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("has_labels", sa.Boolean, nullable=False, default=False),
    sa.Column("path", sa.Text, nullable=False),  # relative to the workspace
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
    sa.Column("findings", sa.Text, nullable=False, default="[]"),  # JSON list of findings
    sa.Column("reason", sa.Text, nullable=False, default=""),  # one line for people
    sa.Column("released_as", sa.Text, nullable=True),  # JSON list of batch ids after release
)

source_state = sa.Table(
    "source_state",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)


# the registry's state in the metadata DB: who is champion (compare-and-set under a write
# lock) and the append-only audit log of every approval, rejection, promotion and rollback
champion_state = sa.Table(
    "champion_state",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(20), nullable=True),
    sa.Column("generation", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),  # approve|reject|rollback|register...
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.String(20), nullable=True),
    sa.Column("previous_champion", sa.String(20), nullable=True),
    sa.Column("outcome", sa.String(20), nullable=False),  # applied | refused | recorded
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("evidence", sa.Text, nullable=True),
    sa.Column("request_id", sa.String(100), nullable=True),  # idempotency key
    sa.Column("alias_moved_at", sa.DateTime, nullable=True),  # set once MLflow reflects it
    sa.UniqueConstraint("model", "request_id", name="uq_audit_request"),
)


monitoring_runs = sa.Table(
    "monitoring_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("champion_version", sa.String(20), nullable=True),
    sa.Column("batch_ids", sa.Text, nullable=False),  # JSON list
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # ok | drift | not_enough_data
    sa.Column("drift_share", sa.Float, nullable=True),
    sa.Column("weighted_drift_share", sa.Float, nullable=True),
    sa.Column("summary", sa.Text, nullable=False),  # JSON: the whole typed result
    sa.Column("report_path", sa.Text, nullable=True),  # relative to the workspace
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("monitoring_run", sa.String(40), nullable=True),
    sa.Column("retrain", sa.Boolean, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),  # JSON list
    sa.Column("held_back", sa.Text, nullable=False),  # JSON list
    sa.Column("acted", sa.Text, nullable=True),  # what was done: the training outcome
)


def utcnow() -> datetime:
    """Naive UTC now, the convention of every timestamp we store."""
    return datetime.now(UTC).replace(tzinfo=None)


def _enable_wal(cur: Any, timeout_s: float = 60.0) -> None:
    """Switch the SQLite file to WAL (a no-op once it is). Switching a new file needs an
    exclusive lock, and SQLite answers "database is locked" at once, without waiting out the
    busy timeout, while another process opening the same new file holds one: so retry."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``, with the SQLite settings that make concurrent writers safe."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=60000")
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front, so a writer waits (busy_timeout) instead
            # of failing later when a read transaction tries to upgrade
            immediate = conn.get_execution_options().get("immediate", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


@dataclass(frozen=True)
class BatchRecord:
    id: str
    status: str
    source: str
    origin: str
    rows: int
    start_time: datetime | None
    end_time: datetime | None
    content_sha256: str
    has_labels: bool
    path: str
    created_at: datetime
    findings: list[dict[str, Any]]
    reason: str
    released_as: list[str] | None = None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> BatchRecord:
        m = dict(row._mapping)
        m["findings"] = json.loads(m["findings"] or "[]")
        m["released_as"] = json.loads(m["released_as"]) if m["released_as"] else None
        return cls(**m)

    def to_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        for k in ("start_time", "end_time", "created_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


def open_project(workspace: Path, db_url: str, *, create: bool = False) -> None:
    """Check that the project's workspace and metadata DB exist, or with ``create`` make them.

    Without ``create`` a missing one is :class:`ProjectMissing`, and nothing is created (no
    folder, no empty DB): a workspace moved or deleted must not come back empty with a new
    audit history and a new model registry starting at version 1. ``mlops init`` and
    ``mlops up`` create; every other command and the flows only open."""
    if create:  # the folder, and the tables (create_all: those already there are kept)
        workspace.mkdir(parents=True, exist_ok=True)
        try:
            MetadataStore(db_url).dispose()
        except sa.exc.OperationalError as e:
            raise _unreachable(db_url, e) from None
        return
    missing = []
    if not workspace.is_dir():
        missing.append(f"the workspace {workspace} (storage.workspace)")
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not Path(path).is_file():
            missing.append(f"the metadata DB {path} (storage.db_url)")
    elif not missing:
        engine = sa.create_engine(db_url, pool_pre_ping=True)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("audit_log"):
                    missing.append(f"the metadata tables in {engine.url!r} (storage.db_url)")
        except sa.exc.OperationalError as e:
            raise _unreachable(db_url, e) from None
        finally:
            engine.dispose()
    if missing:
        raise ProjectMissing(
            "no project here: missing " + " and ".join(missing) + ". If it was moved, point "
            "storage.workspace (or storage.db_url) at it; to start a new project from this "
            "config run `mlops init --config FILE` (or `mlops up`). Nothing was created."
        )


def _unreachable(db_url: str, e: sa.exc.OperationalError) -> ServiceUnavailable:
    shown = sa.engine.make_url(db_url).render_as_string(hide_password=True)
    first = (str(e.orig).strip().splitlines() or ["no answer"])[0]
    return ServiceUnavailable(f"the metadata DB {shown} cannot be reached: {first}")


class MetadataStore:
    """Batches, their validation findings and the sources' incremental state."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        # in a write transaction: two processes opening a new SQLite file at once queue up here
        # instead of one failing with "database is locked" (a read upgraded to a write)
        with self.write() as conn:
            metadata.create_all(conn)

    @contextmanager
    def write(self, lock: str | None = None) -> Iterator[Connection]:
        """A write transaction. SQLite takes its one write lock up front (BEGIN IMMEDIATE), so
        writers run one at a time. ``lock`` names a critical section (e.g. the decisions on one
        model) that must also run one at a time on a server database: there a transaction-scoped
        advisory lock of that name is taken first."""
        with self.engine.connect().execution_options(immediate=True) as conn, conn.begin():
            if lock is not None and conn.dialect.name == "postgresql":
                key = zlib.crc32(lock.encode()) - 2**31  # a signed 32-bit key
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()

    # batches -----------------------------------------------------------------------------
    def add_batch(self, record: BatchRecord) -> bool:
        """Insert ``record``; False (and nothing written) if a batch with its id exists."""
        values = record.__dict__ | {
            "findings": json.dumps(record.findings, default=str),
            "released_as": json.dumps(record.released_as) if record.released_as else None,
        }
        with self.write() as conn:
            exists = conn.execute(sa.select(batches.c.id).where(batches.c.id == record.id)).first()
            if exists:
                return False
            conn.execute(batches.insert().values(**values))
        return True

    def get_batch(self, batch_id: str) -> BatchRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
            if row is None:  # allow unique prefixes, as git does
                rows = conn.execute(
                    sa.select(batches)
                    .where(batches.c.id.startswith(batch_id, autoescape=True))
                    .limit(2)
                ).all()
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise NotFoundError(f"no batch with id '{batch_id}'")
        return BatchRecord.from_row(row)

    def list_batches(
        self, status: str | Sequence[str] | None = None, limit: int | None = None
    ) -> list[BatchRecord]:
        q = sa.select(batches).order_by(batches.c.start_time, batches.c.created_at)
        if status:
            q = q.where(batches.c.status.in_([status] if isinstance(status, str) else status))
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [BatchRecord.from_row(r) for r in conn.execute(q)]

    def withdraw_batch(self, batch_id: str) -> bool:
        """Take an accepted batch out of every training and monitoring window, keeping its
        data and record (status ``withdrawn``). Compare-and-set: False unless it was
        ``accepted`` at that moment."""
        with self.write() as conn:
            done = conn.execute(
                batches.update()
                .where(batches.c.id == batch_id, batches.c.status == "accepted")
                .values(status="withdrawn")
            )
        return bool(done.rowcount)

    def mark_released(self, batch_id: str, new_ids: list[str]) -> None:
        with self.write() as conn:
            conn.execute(
                batches.update()
                .where(batches.c.id == batch_id)
                .values(status="released", released_as=json.dumps(new_ids))
            )

    # sources' incremental state ----------------------------------------------------------
    def get_state(self, key: str, default: Any = None) -> Any:
        with self.engine.connect() as conn:
            v = conn.execute(
                sa.select(source_state.c.value).where(source_state.c.key == key)
            ).scalar_one_or_none()
        return json.loads(v) if v is not None else default

    def set_state(self, key: str, value: Any) -> None:
        payload = json.dumps(value, default=str)
        with self.write() as conn:
            updated = conn.execute(
                source_state.update()
                .where(source_state.c.key == key)
                .values(value=payload, updated_at=utcnow())
            ).rowcount
            if not updated:
                conn.execute(
                    source_state.insert().values(key=key, value=payload, updated_at=utcnow())
                )

    def delete_state(self, key: str) -> None:
        with self.write() as conn:
            conn.execute(source_state.delete().where(source_state.c.key == key))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# files MLflow adds to a model folder when it is downloaded by a registry URI
_DOWNLOAD_ONLY = {"registered_model_meta"}


def package_sha256(folder: Path) -> str:
    """sha256 over a whole model package: every file's relative path and content (code, spec,
    MLmodel, environment files and the model itself), in path order, so no file can change,
    appear or go unnoticed."""
    h = hashlib.sha256()
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name not in _DOWNLOAD_ONLY
    ):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(file_sha256(path).encode() + b"\n")
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` so that readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_released(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file as pandas, Arrow's buffers handed back to the system after the copy: a
    Dask worker that reads batch after batch otherwise keeps Arrow's high-water mark as
    unmanaged memory, and Dask pauses a worker whose memory passes 80% of its limit."""
    import pyarrow as pa

    frame = pd.read_parquet(path, columns=columns)
    pa.default_memory_pool().release_unused()
    return frame


CHUNK_ROWS = 16_384  # rows a reader of a batch file holds at a time (read_chunks)


def read_chunks(
    path: Path | str, columns: list[str] | None = None, rows: int = CHUNK_ROWS
) -> Iterator[Any]:
    """A Parquet file ``rows`` stored rows at a time, as Arrow record batches (``columns`` in
    that order): a reader holds a chunk, not a file. Read whole, a batch file peaked at
    several times its size in a Dask worker, which then died of its memory limit; read
    65,536 rows at a time, a 280,000-row batch still took 130 MB more than before its read,
    16,384 at a time 60 MB."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False) as f:
        for batch in f.iter_batches(batch_size=rows, columns=columns, use_threads=False):
            yield batch.select(columns) if columns is not None else batch


@contextmanager
def lean_memory() -> Iterator[None]:
    """Reading (or training) with the process's memory made room for it: what the C
    allocator holds but no longer uses handed back before and after (Dask's own remedy for
    a worker's unmanaged memory, ``malloc_trim``), and Arrow allocating through the C
    allocator meanwhile (its default pool keeps what a read freed)."""
    import pyarrow as pa

    pool = pa.default_memory_pool()
    _trim()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        _trim()


def _trim() -> None:
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class BatchStore:
    """Accepted batches as Parquet, quarantined ones kept whole with a reason file."""

    def __init__(self, workspace: Path) -> None:
        self.root = workspace
        self.batches_dir = workspace / "batches"
        self.quarantine_dir = workspace / "quarantine"

    def batch_path(self, batch_id: str) -> Path:
        return self.batches_dir / f"{batch_id}.parquet"

    def quarantine_path(self, batch_id: str) -> Path:
        return self.quarantine_dir / batch_id

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def read(self, record: BatchRecord, columns: list[str] | None = None) -> pd.DataFrame:
        path = self.root / record.path
        if path.is_dir():  # quarantined rows kept as Parquet beside the reason
            path = path / "data.parquet"
        return pd.read_parquet(path, columns=columns)

    def labelled_rows(self, record: BatchRecord, target: str) -> int:
        """Rows of a stored batch whose ``target`` is present: from the Parquet footer's null
        counts (no data read) where it has them, else by reading the column."""
        import pyarrow.parquet as pq

        path = self.root / record.path
        if path.is_dir():
            path = path / "data.parquet"
        try:
            md = pq.ParquetFile(path).metadata
            j = md.schema.names.index(target)
            nulls = 0
            for i in range(md.num_row_groups):
                stats = md.row_group(i).column(j).statistics
                if stats is None or not stats.has_null_count:
                    raise LookupError(target)
                nulls += stats.null_count
            return md.num_rows - nulls
        except (LookupError, ValueError):  # no such column, or no statistics
            frame = (
                self.read(record, [target])
                if target in pq.read_schema(path).names
                else pd.DataFrame({target: []})
            )
            return int(frame[target].notna().sum())

    def read_accepted(
        self, meta: MetadataStore, *, labelled_only: bool = False, columns: list[str] | None = None
    ) -> pd.DataFrame:
        """All accepted batches in time order, as one frame (for training and monitoring)."""
        recs = [r for r in meta.list_batches("accepted") if r.has_labels or not labelled_only]
        if not recs:
            return pd.DataFrame(columns=columns)
        return pd.concat([self.read(r, columns) for r in recs], ignore_index=True)


def decision_row(r: Any) -> dict[str, Any]:
    """A decisions row (joined with its run's ``summary``) as a dict."""
    m = dict(r._mapping)
    summary = m.pop("summary", None)
    full = (json.loads(summary).get("decision") or {}) if summary else {}
    return m | {
        "reasons": json.loads(r.reasons),
        "held_back": json.loads(r.held_back),
        "acted": json.loads(r.acted) if r.acted else None,
        "nearest": full.get("nearest") or [],
        "pending_since": full.get("pending_since"),
        "reason_kinds": full.get("reason_kinds") or [],
        "summary": full.get("summary"),
    }
