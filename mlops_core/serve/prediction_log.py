"""The prediction log: what serving answered, and the labels that came back later.

Serving hands each answered request to a :class:`LogWriter` (a bounded queue and one thread), so
writing never sits on the request path; the thread writes Parquet segments under
``<workspace>/predictions/``:

- ``served/<YYYY-MM-DD>/<time>-<id>.parquet``: one row per predicted row: the features as sent,
  ``served_request_id``, ``served_row_id``, ``served_at`` (UTC), ``served_version``,
  ``served_latency_ms``, ``served_prediction``, ``served_proba_<class>`` and, when an online
  model runs in shadow, ``shadow_version`` and ``shadow_prediction``;
- ``feedback/<YYYY-MM-DD>/<time>-<id>.parquet``: ``served_row_id``, ``label`` (as text),
  ``labelled_at``.

:func:`read_log` joins the newest label of each row; monitoring reads it as its current data
(``monitoring.source``) and the dashboard's Serving page draws it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SERVED = "served"
FEEDBACK = "feedback"
META_PREFIXES = ("served_", "shadow_")
LABEL = "label"


def log_dir(workspace: Path) -> Path:
    return workspace / "predictions"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as all our times


def write_segment(folder: Path, frame: pd.DataFrame | Any, at: datetime | None = None) -> Path:
    """Write ``frame`` (a DataFrame or an Arrow table) as a new segment under
    ``folder/<date>/``, atomically: a reader never sees half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    at = at or _now()
    day = folder / at.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"{at.strftime('%H%M%S.%f')}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    table = (
        frame
        if isinstance(frame, pa.Table)
        else pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    )
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


class AsText(list):  # type: ignore[type-arg]
    """Values to log as text, converted on the writer's thread (not the request's)."""


def _table(item: pd.DataFrame | dict[str, Any], rows: int) -> Any:
    """An Arrow table of a queued item: a DataFrame, or columns by name where a scalar stands
    for the same value on every row (a request's id, version, time)."""
    import pyarrow as pa

    if isinstance(item, pd.DataFrame):
        return pa.Table.from_pandas(item.reset_index(drop=True), preserve_index=False)
    cols = {}
    for name, v in item.items():
        if isinstance(v, AsText):
            cols[name] = pa.array([None if x is None else str(x) for x in v], type=pa.string())
        elif isinstance(v, np.ndarray | list):
            cols[name] = pa.array(v, from_pandas=True)
        else:
            cols[name] = pa.array([v] * rows, from_pandas=True)
    return pa.table(cols)


class LogWriter:
    """A thread that writes what serving hands it as segments, every ``flush_seconds`` or
    sooner when ``flush_rows`` wait. ``put`` only appends to a list: the thread wakes at its
    deadline and turns everything waiting into Arrow and Parquet at once, so the request path
    neither converts nor contends with it per request. Memory is bounded: at most ``max_rows``
    rows wait; beyond that a request's rows are dropped and counted (``on_drop``), because
    serving must not wait for a disk."""

    def __init__(
        self,
        workspace: Path,
        *,
        max_rows: int = 200_000,
        flush_seconds: float = 2.0,
        flush_rows: int = 50_000,
        on_drop: Callable[[int], None] | None = None,
        on_write: Callable[[str, int], None] | None = None,
    ) -> None:
        self.root = log_dir(workspace)
        self.max_rows = max_rows
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.on_drop = on_drop
        self.on_write = on_write
        self._pending: dict[str, list[tuple[Any, int]]] = {SERVED: [], FEEDBACK: []}
        self._waiting = 0  # rows handed over, not yet written
        self._lock = threading.Lock()
        self._wake = threading.Event()  # flush now: enough rows, a flush() or close()
        self._flushed = threading.Condition(self._lock)
        self._generation = 0  # flushes done
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def put(self, kind: str, frame: pd.DataFrame | dict[str, Any], rows: int | None = None) -> bool:
        """Hand over ``frame`` (or its columns by name, ``rows`` long, where a scalar is the
        same value on every row) for the ``kind`` folder (:data:`SERVED` or
        :data:`FEEDBACK`). False (and counted) when the queue is full."""
        n = len(frame) if rows is None else rows
        with self._lock:
            full = self._waiting + n > self.max_rows
            if not full:
                self._waiting += n
                self._pending[kind].append((frame, n))
                if self._waiting >= self.flush_rows:
                    self._wake.set()
        if full:
            log.warning("prediction log queue full: %d rows not logged", n)
            if self.on_drop:
                self.on_drop(n)
            return False
        return True

    @property
    def waiting(self) -> int:
        return self._waiting

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything handed over so far now; True once written."""
        with self._lock:
            target = self._generation + 1
            self._wake.set()
            return self._flushed.wait_for(lambda: self._generation >= target, timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            with self._lock:
                self._wake.clear()
                pending = {k: v for k, v in self._pending.items() if v}
                self._pending = {SERVED: [], FEEDBACK: []}
                stop = self._stop
            rows = sum(n for items in pending.values() for _, n in items)
            for kind, items in pending.items():
                self._write(kind, items)
            with self._lock:
                self._waiting -= rows
                self._generation += 1
                self._flushed.notify_all()
            if stop:
                return

    def _write(self, kind: str, items: list[tuple[Any, int]]) -> None:
        import pyarrow as pa

        n = sum(k for _, k in items)
        try:
            tables = [_table(data, k) for data, k in items]
            # columns a request lacked (a shadow, another version's classes) are nulls
            table = (
                pa.concat_tables(tables, promote_options="permissive")
                if len(tables) > 1
                else tables[0]
            )
            write_segment(self.root / kind, table)
            if self.on_write:
                self.on_write(kind, n)
        except (OSError, ValueError, TypeError, pa.ArrowException) as e:  # counted
            log.error("prediction log: %d %s rows not written: %s", n, kind, e)
            if self.on_drop:
                self.on_drop(n)

    def close(self, timeout: float = 30.0) -> None:
        """Write what waits and stop the thread."""
        if self._thread.is_alive():
            with self._lock:
                self._stop = True
                self._wake.set()
            self._thread.join(timeout)


def _segments(folder: Path, since: datetime | None) -> list[Path]:
    if not folder.is_dir():
        return []
    first = since.strftime("%Y-%m-%d") if since else ""
    return sorted(
        p
        for day in folder.iterdir()
        if day.is_dir() and day.name >= first
        for p in day.glob("*.parquet")
    )


def _read(paths: list[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_feedback(workspace: Path) -> pd.DataFrame:
    """Every label received, the newest per row (``served_row_id``, ``label``,
    ``labelled_at``)."""
    fb = _read(_segments(log_dir(workspace) / FEEDBACK, None))
    if fb.empty:
        return pd.DataFrame(columns=["served_row_id", LABEL, "labelled_at"])
    return fb.sort_values("labelled_at").drop_duplicates("served_row_id", keep="last")


def read_log(
    workspace: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    version: str | None = None,
    labels: bool = True,
) -> pd.DataFrame:
    """Served rows logged after ``since`` (exclusive) and up to ``until``, optionally of one
    model version, with the newest label of each (``label``: text, missing when none came)."""
    served = _read(_segments(log_dir(workspace) / SERVED, since))
    if served.empty:
        return served
    keep = pd.Series(True, index=served.index)
    if since is not None:
        keep &= served["served_at"] > since
    if until is not None:
        keep &= served["served_at"] <= until
    if version is not None:
        keep &= served["served_version"].astype(str) == str(version)
    served = served[keep].reset_index(drop=True)
    if labels:
        fb = read_feedback(workspace)[["served_row_id", LABEL, "labelled_at"]]
        served = served.merge(fb, on="served_row_id", how="left")
    return served


def features_of(log_rows: pd.DataFrame) -> pd.DataFrame:
    """The columns a client sent (no served_/shadow_ columns, no label)."""
    return log_rows[
        [
            c
            for c in log_rows.columns
            if not c.startswith(META_PREFIXES) and c not in (LABEL, "labelled_at")
        ]
    ]
