"""Ingestion: source units → batches → validation → batch store or quarantine.

A unit (a file, one incremental read) is all or nothing: its batches are staged and recorded in
the metadata DB only once the whole unit has been read. A unit that cannot be read (corrupt,
wrong encoding...) is quarantined whole, with the reason, and ingestion goes on with the next.
Batch ids come from content hashes, so ingesting the same data twice records nothing new.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mlops_core.config import Settings
from mlops_core.data.batching import Batcher
from mlops_core.data.sources import ProgressFn, SourceUnit, data_files, file_unit, source_units
from mlops_core.data.validation import (
    Finding,
    SchemaContract,
    ValidationReport,
    content_hash,
    freeze_contract,
    load_contract,
    save_contract,
    validate_batch,
)
from mlops_core.errors import FileNotReady, FileRejected, MlopsError, SourceError
from mlops_core.store import (
    BatchRecord,
    BatchStore,
    MetadataStore,
    atomic_write_bytes,
    file_sha256,
    utcnow,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

ID_CHARS = 16  # hex characters of the content hash in a batch id


@dataclass
class BatchOutcome:
    """What became of one batch."""

    id: str
    status: str  # accepted | quarantined | duplicate | deferred (a file still being written)
    rows: int
    origin: str
    start_time: datetime | None = None
    end_time: datetime | None = None
    has_labels: bool = False
    findings: list[Finding] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "rows": self.rows,
            "origin": self.origin,
            "start_time": self.start_time.isoformat() if self.start_time else None,
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "has_labels": self.has_labels,
            "reason": self.reason,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class IngestReport:
    outcomes: list[BatchOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def rows(self) -> int:
        return sum(o.rows for o in self.outcomes if o.status == "accepted")

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.count("accepted"),
            "quarantined": self.count("quarantined"),
            "duplicate": self.count("duplicate"),
            "deferred": self.count("deferred"),
            "rows_accepted": self.rows,
            "batches": [o.to_dict() for o in self.outcomes],
        }


@dataclass
class _Staged:
    record: BatchRecord
    outcome: BatchOutcome
    written: list[Path]


def _write_frame(df: pd.DataFrame, path: Path) -> None:
    try:
        write_parquet_atomic(df, path)
    except (pa.ArrowException, ValueError, TypeError):
        # mixed python types cannot be stored as a typed column: keep them as text
        safe = df.copy()
        for c in safe.columns:
            if safe[c].dtype == object:
                safe[c] = safe[c].map(lambda v: v if v is None else str(v))
        write_parquet_atomic(safe, path)


def _reason_text(rec: BatchRecord, findings: Iterable[Finding]) -> str:
    lines = [
        f"Batch {rec.id} was quarantined at {rec.created_at:%Y-%m-%d %H:%M:%S} UTC.",
        f"Origin: {rec.origin}",
        f"Rows: {rec.rows:,}",
        "",
        "Findings:",
    ]
    for f in findings:
        lines.append(f"  [{f.severity.upper()}] {f.rule}: {f.message}")
    lines += [
        "",
        "Nothing was lost: the data is kept whole in this folder.",
        "To replay it after fixing the data (edit the file here) or the contract",
        f"(contract.yaml in the workspace):  mlops quarantine release {rec.id}",
    ]
    return "\n".join(lines) + "\n"


class Ingestor:
    """Runs units through batching and validation into the store; one per ingest call."""

    def __init__(
        self, settings: Settings, meta: MetadataStore | None = None, now: datetime | None = None
    ) -> None:
        self.settings = settings
        self.workspace = settings.workspace
        self.meta = meta or MetadataStore(settings.db_url)
        self.store = BatchStore(self.workspace)
        self.now = now or utcnow()
        self.contract: SchemaContract | None = load_contract(self.workspace)
        self._contract_unsaved = False

    # one unit ----------------------------------------------------------------------------
    def run_unit(
        self, unit: SourceUnit, progress: ProgressFn | None = None, *, commit: bool = True
    ) -> list[BatchOutcome]:
        d = self.settings.data
        batcher = Batcher(
            size=d.batch.size,
            period=d.batch.period,
            time_column=d.time_column,
            time_format=d.time_format,
        )
        staged: list[_Staged] = []
        contract_before = self.contract
        try:
            for chunk in unit.read_chunks(progress):
                staged += [self._stage(b, unit, staged) for b in batcher.add(chunk)]
            staged += [self._stage(b, unit, staged) for b in batcher.flush()]
        except FileNotReady as e:  # still being written: nothing kept, read again next run
            self._discard(staged)
            self.contract, self._contract_unsaved = contract_before, False
            log.warning("%s", e)
            return [
                BatchOutcome(id="", status="deferred", rows=0, origin=unit.origin, reason=str(e))
            ]
        except FileRejected as e:
            self._discard(staged)
            self.contract, self._contract_unsaved = contract_before, False
            if not commit:
                return [
                    BatchOutcome(
                        id="",
                        status="quarantined",
                        rows=0,
                        origin=unit.origin,
                        findings=[Finding(e.rule, "fatal", e.message)],
                        reason=e.message,
                    )
                ]
            outcome = self._quarantine_unit(unit, e)
            unit.on_done()
            return [outcome]
        if not staged and commit:
            unit.on_done()  # nothing new (an incremental read that returned no rows)
        if commit:
            self.commit(staged)
            unit.on_done()
        else:
            self._pending = staged
        return [s.outcome for s in staged]

    def commit(self, staged: list[_Staged]) -> None:
        if self._contract_unsaved and self.contract is not None:
            if not save_contract(self.contract, self.workspace):  # another process was first
                log.info("contract frozen concurrently by another process; keeping theirs")
            self._contract_unsaved = False
        for s in staged:
            if s.outcome.status == "duplicate":
                continue
            if not self.meta.add_batch(s.record):  # a concurrent ingest recorded it first
                s.outcome.status = "duplicate"

    def _discard(self, staged: list[_Staged]) -> None:
        for s in staged:
            for p in s.written:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def _existing(self, digest: str, staged: list[_Staged]) -> str | None:
        for prefix in ("b-", "q-"):
            bid = prefix + digest[:ID_CHARS]
            if any(s.record.id == bid for s in staged):
                return bid
            try:
                self.meta.get_batch(bid)
                return bid
            except LookupError:
                continue
        return None

    def _stage(
        self,
        frame: pd.DataFrame,
        unit: SourceUnit,
        staged: list[_Staged],
        *,
        force: bool = False,
        skip_id: str | None = None,
    ) -> _Staged:
        digest = content_hash(frame)
        rows = len(frame)
        existing = self._existing(digest, staged)
        if existing and existing != skip_id:
            return self._stage_duplicate(existing, unit, staged, rows, digest)
        report = validate_batch(frame, self.settings, self.contract, self.now)
        accepted = report.is_accepted or force
        bid = ("b-" if accepted else "q-") + digest[:ID_CHARS]
        if accepted:
            path, written = self._write_accepted(frame, report, bid)
        else:
            path, written = self._write_quarantined(frame, bid, skip_id)
        reason = (
            report.reason
            if not (force and report.fatal)
            else "released by force despite: " + report.reason
        )
        rec = BatchRecord(
            id=bid,
            status="accepted" if accepted else "quarantined",
            source=unit.kind,
            origin=unit.origin,
            rows=rows,
            start_time=report.start_time,
            end_time=report.end_time,
            content_sha256=digest,
            has_labels=report.has_labels and accepted,
            path=self.store.relative(path),
            created_at=self.now,
            findings=[f.to_dict() for f in report.findings],
            reason=reason,
        )
        if not accepted and bid != skip_id:
            self._write_quarantine_notes(path, rec, report)
        out = BatchOutcome(
            id=bid,
            status=rec.status,
            rows=rows,
            origin=unit.origin,
            start_time=report.start_time,
            end_time=report.end_time,
            has_labels=rec.has_labels,
            findings=report.findings,
            reason=reason,
        )
        return _Staged(record=rec, outcome=out, written=written)

    def _stage_duplicate(
        self, existing: str, unit: SourceUnit, staged: list[_Staged], rows: int, digest: str
    ) -> _Staged:
        """A batch already recorded (or repeated in this input): nothing is written."""
        rec = (
            self.meta.get_batch(existing)
            if not any(s.record.id == existing for s in staged)
            else None
        )
        out = BatchOutcome(
            id=existing,
            status="duplicate",
            rows=rows,
            origin=unit.origin,
            start_time=rec.start_time if rec else None,
            end_time=rec.end_time if rec else None,
            reason=f"already ingested ({rec.status})" if rec else "repeated in this input",
        )
        return _Staged(
            record=_placeholder(existing, unit, rows, digest, self.now), outcome=out, written=[]
        )

    def _write_accepted(
        self, frame: pd.DataFrame, report: ValidationReport, bid: str
    ) -> tuple[Path, list[Path]]:
        """Store the conformed batch, freezing the contract from it if there is none yet;
        returns (its path, what was written)."""
        path = self.store.batch_path(bid)
        assert report.frame is not None
        _write_frame(report.frame, path)
        if self.contract is None:
            # the contract keeps the columns in the order the data has them (the conformed
            # frame puts id and time first), or every later batch warns of column_order
            own = [c for c in dict.fromkeys(frame.columns) if c in report.frame.columns]
            self.contract = freeze_contract(report.frame[own], self.settings, bid, self.now)
            self._contract_unsaved = True
        return path, [path]

    def _write_quarantined(
        self, frame: pd.DataFrame, bid: str, skip_id: str | None
    ) -> tuple[Path, list[Path]]:
        """Keep the batch as it came in quarantine; returns (its folder, what was written)."""
        path = self.store.quarantine_path(bid)
        if bid == skip_id:  # a release that still fails leaves the kept batch as it was
            return path, []
        _write_frame(frame, path / "data.parquet")
        return path, [path]

    def _write_quarantine_notes(
        self,
        folder: Path,
        rec: BatchRecord,
        report: ValidationReport | None,
        findings: list[Finding] | None = None,
    ) -> None:
        fs = findings if findings is not None else (report.findings if report else [])
        atomic_write_bytes(folder / "reason.txt", _reason_text(rec, fs).encode())
        atomic_write_bytes(
            folder / "report.json",
            json.dumps(
                {"batch": rec.to_dict(), "findings": [f.to_dict() for f in fs]},
                indent=2,
                default=str,
            ).encode(),
        )

    def _quarantine_unit(self, unit: SourceUnit, err: FileRejected) -> BatchOutcome:
        """Keep an unreadable unit whole (the file itself) beside its reason."""
        if unit.raw_file is not None and unit.raw_file.exists():
            digest = file_sha256(unit.raw_file)
        else:
            digest = hashlib.sha256(unit.raw_bytes or unit.origin.encode()).hexdigest()
        bid = "q-" + digest[:ID_CHARS]
        finding = Finding(err.rule, "fatal", err.message)
        try:
            old = self.meta.get_batch(bid)
            return BatchOutcome(
                id=bid,
                status="duplicate",
                rows=0,
                origin=unit.origin,
                reason=f"already ingested ({old.status})",
                findings=[finding],
            )
        except LookupError:
            pass
        folder = self.store.quarantine_path(bid)
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"data{unit.raw_suffix}"
        if unit.raw_file is not None and unit.raw_file.exists():
            shutil.copyfile(unit.raw_file, kept)
        elif unit.raw_bytes is not None:
            atomic_write_bytes(kept, unit.raw_bytes)
        rec = BatchRecord(
            id=bid,
            status="quarantined",
            source=unit.kind,
            origin=unit.origin,
            rows=0,
            start_time=None,
            end_time=None,
            content_sha256=digest,
            has_labels=False,
            path=self.store.relative(folder),
            created_at=self.now,
            findings=[finding.to_dict()],
            reason=err.message,
        )
        self._write_quarantine_notes(folder, rec, None, [finding])
        if not self.meta.add_batch(rec):
            return BatchOutcome(
                id=bid,
                status="duplicate",
                rows=0,
                origin=unit.origin,
                reason="already ingested",
                findings=[finding],
            )
        return BatchOutcome(
            id=bid,
            status="quarantined",
            rows=0,
            origin=unit.origin,
            findings=[finding],
            reason=err.message,
        )


def _placeholder(bid: str, unit: SourceUnit, rows: int, digest: str, now: datetime) -> BatchRecord:
    return BatchRecord(
        id=bid,
        status="duplicate",
        source=unit.kind,
        origin=unit.origin,
        rows=rows,
        start_time=None,
        end_time=None,
        content_sha256=digest,
        has_labels=False,
        path="",
        created_at=now,
        findings=[],
        reason="",
    )


def _units_for_paths(settings: Settings, paths: Iterable[Path]) -> list[SourceUnit]:
    """One unit per named file, and per data file of a named folder. Every path is checked
    before anything is read: a missing one, or a folder with no data file (a folder named
    ``x.csv`` included), is an error that names it."""
    files: list[Path] = []
    for p in map(settings.resolve, paths):
        if p.is_dir():
            found = sorted(data_files(p))
            if not found:
                raise SourceError(
                    f"{p} is a folder with no data file in it (.csv, .parquet, "
                    ".json; hidden, partial and linked files are skipped)"
                )
            files += found
        elif not p.exists():
            raise SourceError(f"{p}: no such file")
        else:
            files.append(p)
    return [file_unit(f, settings.data, settings.data.source) for f in files]


def iter_ingest(
    settings: Settings,
    paths: Iterable[Path | str] | None = None,
    *,
    meta: MetadataStore | None = None,
    now: datetime | None = None,
    progress: ProgressFn | None = None,
) -> Iterator[BatchOutcome]:
    """Ingest the given files (or what the configured source has ready), yielding what became
    of each batch as soon as its unit (file, read) is recorded.

    Raises :class:`~mlops_core.errors.SourceError` when the source cannot be reached at all;
    a bad file or batch is quarantined and reported instead.
    """
    ing = Ingestor(settings, meta, now)
    if paths:
        units: Iterable[SourceUnit] = _units_for_paths(settings, [Path(p) for p in paths])
    elif settings.data.source is not None:
        units = source_units(settings.data.source, settings.data, ing.meta, settings.resolve)
    else:
        raise MlopsError(
            "no data.source in the configuration: pass files, e.g. `mlops ingest data/*.csv`"
        )
    for unit in units:
        yield from ing.run_unit(unit, progress)


def ingest(
    settings: Settings,
    paths: Iterable[Path | str] | None = None,
    *,
    meta: MetadataStore | None = None,
    now: datetime | None = None,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """:func:`iter_ingest`, collected into one report."""
    return IngestReport(list(iter_ingest(settings, paths, meta=meta, now=now, progress=progress)))


@dataclass
class ReleaseResult:
    quarantined_id: str
    released: bool
    outcomes: list[BatchOutcome]
    message: str


def release_batch(
    settings: Settings,
    batch_id: str,
    *,
    force: bool = False,
    meta: MetadataStore | None = None,
    now: datetime | None = None,
) -> ReleaseResult:
    """Replay a quarantined batch against the current contract (after the data in its folder or
    the contract was fixed). It is released only if every batch it yields is accepted; with
    ``force`` a batch whose rows could be read is accepted despite its findings (recorded)."""
    ing = Ingestor(settings, meta, now)
    rec = ing.meta.get_batch(batch_id)
    if rec.status != "quarantined":
        raise MlopsError(f"batch {rec.id} is {rec.status}, not quarantined")
    folder = ing.workspace / rec.path
    data_files = sorted(folder.glob("data.*"))
    if not data_files:
        raise MlopsError(f"{folder}: the quarantined data is missing")
    kept = data_files[0]
    unit = file_unit(kept, settings.data, settings.data.source, kind=rec.source)
    unit.origin = rec.origin
    if kept.name == "data.parquet" and rec.rows:  # batch-level quarantine: one batch, as kept
        frame = pd.read_parquet(kept)
        staged = [ing._stage(frame, unit, [], force=force, skip_id=rec.id)]
    else:
        outcomes = ing.run_unit(unit, commit=False)
        if any(o.status == "quarantined" and not o.id for o in outcomes):
            return ReleaseResult(rec.id, False, outcomes, f"still unreadable: {outcomes[0].reason}")
        staged = ing._pending
    outcomes = [s.outcome for s in staged]
    bad = [o for o in outcomes if o.status == "quarantined"]
    if bad:
        ing._discard([s for s in staged if s.outcome.status == "quarantined"])
        ing._discard([s for s in staged if s.outcome.status == "accepted"])
        return ReleaseResult(
            rec.id,
            False,
            outcomes,
            "still refused: "
            + "; ".join(o.reason for o in bad)
            + (" (use --force to accept anyway)" if kept.name == "data.parquet" else ""),
        )
    ing.commit(staged)
    new_ids = [o.id for o in outcomes]
    ing.meta.mark_released(rec.id, new_ids)
    return ReleaseResult(rec.id, True, outcomes, f"released as {', '.join(new_ids)}")
