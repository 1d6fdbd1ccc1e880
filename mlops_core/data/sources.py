"""Readers for the places new data comes from: a file, a folder, a SQL query, an HTTP endpoint.

Each source yields :class:`SourceUnit` objects: one file, or one incremental read. A unit reads in
chunks (so memory stays bounded by the chunk size), can be kept whole for quarantine, and is
marked done (file seen, watermark advanced) only after the ingest has recorded what came of it.
A unit that cannot be parsed raises :class:`FileRejected` with the rule that names the problem.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from mlops_core.config import (
    CsvOptions,
    DataConfig,
    SourceConfig,
    is_secret_param,
    redact_url,
)
from mlops_core.errors import FileNotReady, FileRejected, SourceError, excerpt
from mlops_core.store import MetadataStore

log = logging.getLogger(__name__)

FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_OTHER_DELIMITERS = [";", "\t", "|", ","]

# (origin, done, total, unit): progress of reading one unit; total is None when unknown
ProgressFn = Callable[[str, int, int | None, str], None]


@dataclass
class SourceUnit:
    """One thing to ingest: a file, or the rows one incremental read returned."""

    kind: str  # file | folder | sql | http
    origin: str  # for people: path, URL or query
    read_chunks: Callable[[ProgressFn | None], Iterator[pd.DataFrame]]
    raw_file: Path | None = None  # the file itself, kept whole if it cannot be read
    raw_bytes: bytes | None = None  # or the body an HTTP read returned
    raw_suffix: str = ".bin"
    on_done: Callable[[], None] = field(default=lambda: None)


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FileRejected(
            "corrupt_file",
            f"{path.name}: unknown file type '{path.suffix}'; "
            "expected .csv, .parquet or .json (or set data.source.format)",
        )
    return fmt


def _check_size(path: Path, max_mb: float) -> int:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    if size > max_mb * 1024 * 1024:
        raise FileRejected(
            "file_too_large",
            f"{path.name} is {size / 2**20:,.1f} MB, over the "
            f"{max_mb:,g} MB cap (data.limits.max_file_mb)",
        )
    if size == 0:
        raise FileRejected("empty_file", f"{path.name} is empty (0 bytes)")
    return size


def _check_header(
    first_line: str, opts: CsvOptions, max_columns: int, expected: list[str], name: str
) -> None:
    header = next(csv.reader([first_line], delimiter=opts.delimiter), [])
    if len(header) > max_columns:
        raise FileRejected(
            "too_many_columns",
            f"{name} has {len(header):,} columns, over the "
            f"cap of {max_columns:,} (data.limits.max_columns)",
        )
    twice = {
        c: [i + 1 for i, h in enumerate(header) if h == c] for c in header if header.count(c) > 1
    }
    if twice:
        shown = "; ".join(
            f"{excerpt(c)!r} (columns {', '.join(map(str, at))})"
            for c, at in list(twice.items())[:SHOWN_BAD_ROWS]
        )
        raise FileRejected(
            "duplicate_columns",
            f"{name}: the header names a column more than "
            f"once: {shown}. Rename one, in the quarantine folder, then release it",
        )
    if len(header) == 1 and len(expected) > 1:
        for d in _OTHER_DELIMITERS:
            if d != opts.delimiter and d in first_line:
                alt = next(csv.reader([first_line], delimiter=d))
                if len(alt) > 1:
                    shown = {"\t": "tab"}.get(d, repr(d))
                    raise FileRejected(
                        "wrong_delimiter",
                        f"{name}: the header has one column "
                        f"with '{opts.delimiter}' but {len(alt)} with {shown}; "
                        f"the file looks {shown}-separated (set "
                        "data.source.csv.delimiter)",
                    )


# a file cut mid-row and modified less than this long ago is still being written (deferred);
# older, it is quarantined as torn
WRITE_SETTLE_S = 60
SHOWN_BAD_ROWS = 3  # bad rows quoted in a rejection


# what a file that is not text starts with, and what to do about it
_MAGIC = [
    (b"\x1f\x8b", "gzip-compressed", "decompress it (gunzip) and ingest the file inside"),
    (
        b"PK\x03\x04",
        "a ZIP archive (an Excel .xlsx workbook is one)",
        "unzip it, or export the sheet as CSV",
    ),
    (b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook", "export the sheet as CSV"),
    (b"PAR1", "a Parquet file", "name it .parquet"),
    (b"BZh", "bzip2-compressed", "decompress it (bunzip2) and ingest the file inside"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it (unxz) and ingest the file inside"),
]
_NUL_SCAN_BLOCK = 1 << 24


def _sniff(head: bytes, name: str, encoding: str) -> None:
    """Reject a file that is not text in a way a person recognises: compressed, an archive or
    a workbook named .csv, or UTF-16 text read as UTF-8."""
    for magic, what, todo in _MAGIC:
        if head.startswith(magic):
            raise FileRejected("wrong_format", f"{name} is {what}, not {encoding} text: {todo}")
    if not encoding.lower().replace("-", "").startswith("utf16") and (
        head.startswith((b"\xff\xfe", b"\xfe\xff"))
        or (
            len(head) >= 8
            and any(head[z:8:2] == b"\0" * 4 and b"\0" not in head[1 - z : 8 : 2] for z in (0, 1))
        )
    ):
        raise FileRejected(
            "encoding",
            f"{name} is UTF-16 text, not {encoding}: set "
            "data.source.csv.encoding: utf-16, or save it as UTF-8",
        )


def _blocks(source: Path | bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, block) over a file in blocks of :data:`_NUL_SCAN_BLOCK`, or a body whole."""
    if isinstance(source, bytes):
        yield 0, source
        return
    offset = 0
    with open(source, "rb") as fb:
        while block := fb.read(_NUL_SCAN_BLOCK):
            yield offset, block
            offset += len(block)


def _check_nul(source: Path | bytes, name: str) -> None:
    """A NUL byte never belongs in CSV text: the file is binary, or corrupted (a disk or a
    transfer filled a hole with zeros). pandas would keep it inside a value. A clean file costs
    one ``memchr`` pass; counting and locating are for the error only."""
    first = next(
        (off + at for off, block in _blocks(source) if (at := block.find(b"\0")) >= 0), None
    )
    if first is None:
        return
    count = line = 0
    for off, block in _blocks(source):
        count += block.count(b"\0")
        if off < first:
            line += block.count(b"\n", 0, first - off)
    raise FileRejected(
        "nul_bytes",
        f"{name} holds {count:,} NUL byte(s), the first at byte {first:,} (line {line + 1:,}): "
        "a binary or damaged file, not CSV text",
    )


def _check_line_end(source: Path | bytes, name: str) -> None:
    """A file's last row ends with a line break, or it looks cut off while it was written."""
    if isinstance(source, bytes):  # an HTTP body: complete when the response was
        last = b"\n"
    else:
        with open(source, "rb") as fb:
            fb.seek(0, io.SEEK_END)
            fb.seek(max(0, fb.tell() - 1))
            last = fb.read(1)
    if last not in (b"\n", b"\r"):
        raise FileRejected(
            "torn_row",
            f"{name} does not end with a line break: its last row looks cut "
            "off while the file was written. If the file is complete, add a line break at its "
            "end in the quarantine folder, then release it",
        )


_BadRow = tuple[int | None, int, int, str]  # (line, fields expected, fields found, text)


def _bad_rows(
    readable: Path | bytes, name: str, opts: CsvOptions, newlines_in_values: bool
) -> list[_BadRow] | None:
    """The rows whose number of fields is not the header's; None if Arrow cannot parse the
    file at all (the pandas read then names the problem)."""
    bad: list[_BadRow] = []

    def on_bad(row: Any) -> str:
        bad.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    source = io.BytesIO(readable) if isinstance(readable, bytes) else readable
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(encoding=opts.encoding, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=opts.delimiter,
                newlines_in_values=newlines_in_values,
                invalid_row_handler=on_bad,
            ),
            convert_options=pacsv.ConvertOptions(include_columns=[]),
        )
        for _ in reader:
            pass
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        log.debug("%s: the row check could not parse it (%s); pandas decides", name, e)
        return None  # unreadable in another way: the pandas read names it
    return bad


def _reject_bad_rows(bad: list[_BadRow], name: str) -> None:
    """Raise the rejection that names what is wrong with ``bad`` (non-empty)."""
    quoted = next((text for _n, _w, _g, text in bad if text.count('"') % 2), None)
    if quoted is not None:
        raise FileRejected(
            "corrupt_file",
            f"{name}: malformed CSV: a quote is never "
            f"closed (from {excerpt(quoted)!r}); an unclosed quote?",
        )
    shown = "; ".join(
        (f"line {n}: " if n is not None else "") + f"{got} of {want} fields ({excerpt(text)!r})"
        for n, want, got, text in bad[:SHOWN_BAD_ROWS]
    )
    short = any(got < want for _n, want, got, _t in bad)
    raise FileRejected(
        "short_row" if short else "extra_fields",
        f"{name}: {len(bad):,} row(s) do not have the header's number of fields "
        f"({shown}{'; …' if len(bad) > SHOWN_BAD_ROWS else ''}); the file may be cut "
        "or hand-edited. Fix it in the quarantine folder, then release it",
    )


def _check_rows(source: Path | bytes, name: str, opts: CsvOptions) -> None:
    """Every row has as many fields as the header, and a file's last row ends with a line
    break.

    pandas pads a row with too few fields with NaN; a file cut off while it was written ends
    in a row cut mid-value that parses as data. Either rejects the whole file (it is
    quarantined; nothing of it is used). One pass of Arrow's multi-threaded parser, converting
    no column."""
    _check_line_end(source, name)
    # fast (parallel) without line breaks inside quoted values; where a bad row has a quote,
    # again with them allowed (a quoted value may span lines)
    bad = _bad_rows(source, name, opts, False)
    if bad and any(text.count('"') % 2 for _n, _w, _g, text in bad):
        bad = _bad_rows(source, name, opts, True)
    if bad:
        _reject_bad_rows(bad, name)


def _csv_head(path: Path, opts: CsvOptions) -> str:
    """The text of the file's first 64 KB (rejecting a file that is not text)."""
    with open(path, "rb") as fb:
        head = fb.read(1 << 16)
    _sniff(head, path.name, opts.encoding)
    try:
        return head.decode(opts.encoding)
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a multi-byte character cut by our 64 KB read
            raise FileRejected(
                "encoding",
                f"{path.name} is not {opts.encoding} text: byte "
                f"0x{head[e.start]:02x} at offset {e.start} (set "
                "data.source.csv.encoding)",
            ) from None
        return head[: e.start].decode(opts.encoding)


def _check_csv_file(path: Path, data: DataConfig, opts: CsvOptions) -> None:
    """Reject a CSV file before pandas reads it: not text, no header, a bad header, NUL
    bytes, rows with the wrong number of fields."""
    lines = _csv_head(path, opts).splitlines()
    if not lines or not lines[0].strip():
        raise FileRejected("empty_file", f"{path.name} has no header line")
    _check_header(lines[0], opts, data.limits.max_columns, data.columns(), path.name)
    _check_nul(path, path.name)
    _check_rows(path, path.name, opts)


def _read_csv(
    path: Path, data: DataConfig, opts: CsvOptions, progress: ProgressFn | None
) -> Iterator[pd.DataFrame]:
    limits = data.limits
    size = _check_size(path, limits.max_file_mb)
    _check_csv_file(path, data, opts)
    as_text = {c: "category" for c in data.features.categorical}
    rows = 0
    try:
        with (
            open(path, "rb") as raw,
            io.TextIOWrapper(raw, encoding=opts.encoding, newline="") as fh,
        ):
            reader = pd.read_csv(
                fh,
                sep=opts.delimiter,
                dtype=as_text,
                chunksize=limits.chunk_rows,
                on_bad_lines="error",
                engine="c",
                low_memory=False,
            )
            for chunk in reader:
                rows += len(chunk)
                if progress:
                    progress(str(path), raw.tell(), size, "bytes")
                yield _strings_to_object(chunk)
    except UnicodeDecodeError as e:
        raise FileRejected(
            "encoding",
            f"{path.name} is not {opts.encoding} text "
            f"({e.reason} at byte {e.start} of a read block); set "
            "data.source.csv.encoding",
        ) from None
    except pd.errors.EmptyDataError:
        raise FileRejected("empty_file", f"{path.name} has no columns") from None
    except pd.errors.ParserError as e:
        msg = str(e).replace("Error tokenizing data. C error: ", "")
        hint = " (an unclosed quote?)" if "EOF inside string" in msg else ""
        raise FileRejected(
            "corrupt_file", f"{path.name}: malformed CSV: {msg.strip()}{hint}"
        ) from None
    if rows == 0:
        raise FileRejected("empty_file", f"{path.name} has a header but no rows")


def _strings_to_object(df: pd.DataFrame) -> pd.DataFrame:
    """pandas' ``string`` dtype back to plain object columns (NaN for missing), our convention."""
    for c in df.columns:
        if isinstance(df[c].dtype, pd.StringDtype):
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _read_parquet(
    path: Path, data: DataConfig, progress: ProgressFn | None
) -> Iterator[pd.DataFrame]:
    limits = data.limits
    _check_size(path, limits.max_file_mb)
    try:
        # no pre_buffer: pyarrow keeps every pre-buffered row group until the reader closes,
        # so memory would grow with the file's size instead of staying at one chunk
        pf = pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowException, OSError) as e:
        raise FileRejected(
            "corrupt_file", f"{path.name}: not a readable Parquet file, truncated or corrupt ({e})"
        ) from None
    n_cols = len(pf.schema_arrow.names)
    if n_cols > limits.max_columns:
        raise FileRejected(
            "too_many_columns",
            f"{path.name} has {n_cols:,} columns, over the "
            f"cap of {limits.max_columns:,} (data.limits.max_columns)",
        )
    total = pf.metadata.num_rows
    if total == 0:
        raise FileRejected("empty_file", f"{path.name} has a schema but no rows")
    # categorical text straight to pandas categories: no Python string per value (4x faster
    # to read, and the batch store writes dictionaries back just as fast)
    declared = set(data.features.categorical) if data.features.all() else None
    roles = {data.id_column, data.time_column, data.target}
    as_category = [
        f.name
        for f in pf.schema_arrow
        if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
        and (f.name in declared if declared is not None else f.name not in roles)
    ]
    done = 0
    try:
        for rb in pf.iter_batches(batch_size=limits.chunk_rows):
            done += rb.num_rows
            if progress:
                progress(str(path), done, total, "rows")
            yield rb.to_pandas(categories=as_category)
    except (pa.ArrowException, OSError) as e:
        raise FileRejected(
            "corrupt_file",
            f"{path.name}: Parquet data is truncated or corrupt after {done:,} rows ({e})",
        ) from None


def records_to_frame(payload: Any, name: str) -> pd.DataFrame:
    """JSON records (a list, or ``{"records"|"data"|"rows": [...]}``) into a frame."""
    if isinstance(payload, dict):
        for key in ("records", "data", "rows", "items"):
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise FileRejected("corrupt_file", f"{name}: expected a JSON list of records")
    if not payload:
        raise FileRejected("empty_file", f"{name} holds no records")
    return pd.DataFrame.from_records(payload)


def _read_json_bytes(raw: bytes, name: str, encoding: str = "utf-8") -> pd.DataFrame:
    _sniff(raw[:64], name, encoding)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise FileRejected(
            "encoding", f"{name} is not {encoding} text: byte at offset {e.start}"
        ) from None
    if not text.strip():
        raise FileRejected("empty_file", f"{name} is empty")
    try:
        payload: Any = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSON lines
            payload = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise FileRejected("corrupt_file", f"{name}: malformed JSON ({e})") from None
    return records_to_frame(payload, name)


def _read_json(path: Path, data: DataConfig, progress: ProgressFn | None) -> Iterator[pd.DataFrame]:
    _check_size(path, data.limits.max_file_mb)
    df = _read_json_bytes(path.read_bytes(), path.name)
    if progress:
        progress(str(path), len(df), len(df), "rows")
    yield df


def _read_csv_bytes(raw: bytes, name: str, data: DataConfig, opts: CsvOptions) -> pd.DataFrame:
    _sniff(raw[:64], name, opts.encoding)
    try:
        text = raw.decode(opts.encoding)
    except UnicodeDecodeError as e:
        raise FileRejected(
            "encoding", f"{name} is not {opts.encoding} text: byte at offset {e.start}"
        ) from None
    if not text.strip():
        raise FileRejected("empty_file", f"{name} is empty")
    _check_header(text.splitlines()[0], opts, data.limits.max_columns, data.columns(), name)
    _check_nul(raw, name)
    _check_rows(raw, name, opts)
    try:
        df = pd.read_csv(
            io.StringIO(text),
            sep=opts.delimiter,
            on_bad_lines="error",
            dtype={c: "category" for c in data.features.categorical},
        )
    except pd.errors.ParserError as e:
        raise FileRejected("corrupt_file", f"{name}: malformed CSV: {e}") from None
    if df.empty:
        raise FileRejected("empty_file", f"{name} has a header but no rows")
    return _strings_to_object(df)


def file_unit(
    path: Path,
    data: DataConfig,
    source: SourceConfig | None = None,
    kind: str = "file",
    on_done: Callable[[], None] = lambda: None,
    *,
    defer_fresh: bool = False,
) -> SourceUnit:
    """A unit for one file; the format comes from its extension unless the source declares it.

    A file that changes while it is read is deferred (:class:`FileNotReady`), never partly
    kept. ``defer_fresh`` (a source read on a schedule): a file cut mid-row and modified in the
    last :data:`WRITE_SETTLE_S` seconds is deferred too; a file named on the command line is
    judged as it is."""
    declared = source.format if source else "auto"
    opts = source.csv if source else CsvOptions.model_validate({})

    def read(progress: ProgressFn | None) -> Iterator[pd.DataFrame]:
        fmt = detect_format(path, declared)
        if fmt == "csv":
            yield from _read_csv(path, data, opts, progress)
        elif fmt == "parquet":
            yield from _read_parquet(path, data, progress)
        else:
            yield from _read_json(path, data, progress)

    def chunks(progress: ProgressFn | None) -> Iterator[pd.DataFrame]:
        before = _stamp(path)
        try:
            yield from read(progress)
        except FileRejected as e:
            if _stamp(path) != before:  # cut mid-write rather than broken: read it again later
                raise _not_ready(path) from e
            if (
                defer_fresh
                and e.rule == "torn_row"
                and before is not None
                and time.time() - before[1] / 1e9 < WRITE_SETTLE_S
            ):
                raise FileNotReady(
                    f"{path.name} ends mid-row and was modified less than "
                    f"{WRITE_SETTLE_S} s ago: it looks still being written; "
                    "the next run reads it again"
                ) from e
            raise
        if _stamp(path) != before:
            raise _not_ready(path)

    return SourceUnit(
        kind=kind,
        origin=str(path),
        read_chunks=chunks,
        raw_file=path,
        raw_suffix=path.suffix or ".bin",
        on_done=on_done,
    )


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _not_ready(path: Path) -> FileNotReady:
    return FileNotReady(
        f"{path.name} changed while it was read (it is still being written): "
        "nothing of it was kept; the next run reads it again"
    )


def is_candidate(p: Path, folder: Path | None = None) -> bool:
    """A complete data file, not a hidden one or one still being written (.tmp, .part...).

    A symbolic link is never one, nor a file reached through a linked folder (outside
    ``folder``): a link dropped in a landing folder could point anywhere (a system file, another
    project's data), and its content would end up in batches or in findings."""
    name = p.name
    if (
        p.is_symlink()
        or not p.is_file()
        or name.startswith((".", "~"))
        or name.endswith((".tmp", ".part", ".crdownload", ".partial"))
    ):
        return False
    return folder is None or p.resolve().is_relative_to(folder.resolve())


def data_files(folder: Path, pattern: str = "*") -> list[Path]:
    """The candidate data files of ``folder`` matching ``pattern``; links are skipped, each
    said once in the log."""
    out = []
    for p in folder.glob(pattern):
        if is_candidate(p, folder):
            out.append(p)
        elif p.is_symlink():
            log.warning("%s is a symbolic link: skipped (copy or move the file into %s)", p, folder)
    return out


def folder_units(
    cfg: SourceConfig, data: DataConfig, folder: Path, meta: MetadataStore
) -> Iterator[SourceUnit]:
    """New files in ``folder`` (each picked up once), oldest first.

    A file counts as seen by its name, size and modification time, so a file replaced with new
    content is picked up again (and its batches, if identical, are no-ops by content hash).
    Writers should write to a hidden or ``.tmp`` name and rename when complete.
    """
    if not folder.is_dir():
        raise SourceError(f"{folder}: folder not found (data.source.path)")
    key = f"folder:{folder.resolve()}"
    files = sorted(data_files(folder, cfg.pattern), key=lambda p: (p.stat().st_mtime_ns, p.name))
    for p in files:
        st = p.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        name = str(p.relative_to(folder))
        if meta.get_state(key, {}).get(name) == stamp:
            continue

        def done(name: str = name, stamp: str = stamp) -> None:
            seen = meta.get_state(key, {})
            seen[name] = stamp
            meta.set_state(key, seen)

        yield file_unit(p, data, cfg, kind="folder", on_done=done, defer_fresh=True)


def _watermark_value(series: pd.Series) -> Any:
    v = series.max()
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return v.item() if hasattr(v, "item") else v


def sql_unit(cfg: SourceConfig, data: DataConfig, meta: MetadataStore) -> SourceUnit | None:
    """Rows of ``cfg.query`` whose watermark column is past the last value ingested."""
    assert cfg.url and cfg.query and cfg.watermark
    key = f"sql:{hashlib.sha256((cfg.url + cfg.query).encode()).hexdigest()[:16]}"
    last = meta.get_state(key)
    wm = cfg.watermark
    sql = f"SELECT * FROM ({cfg.query.strip().rstrip(';')}) AS src"
    params: dict[str, Any] = {}
    if last is not None:
        sql += f" WHERE src.{wm} > :wm"
        params["wm"] = last
    sql += f" ORDER BY src.{wm}"
    engine = sa.create_engine(cfg.url)
    seen: dict[str, Any] = {}

    def chunks(progress: ProgressFn | None) -> Iterator[pd.DataFrame]:
        rows = 0
        try:
            with engine.connect() as conn:
                for chunk in pd.read_sql(
                    sa.text(sql), conn, params=params, chunksize=data.limits.chunk_rows
                ):
                    if wm not in chunk.columns:
                        raise SourceError(f"the query returns no watermark column '{wm}'")
                    rows += len(chunk)
                    if len(chunk):
                        seen["wm"] = _watermark_value(chunk[wm])
                    if progress:
                        progress(cfg.query or "", rows, None, "rows")
                    yield chunk
        except sa.exc.SQLAlchemyError as e:
            raise SourceError(
                f"SQL source failed: {e.__class__.__name__}: {str(e).splitlines()[0]}"
            ) from e
        finally:
            engine.dispose()

    def done() -> None:
        if "wm" in seen:
            meta.set_state(key, seen["wm"])

    return SourceUnit(
        kind="sql", origin=f"{redact_url(cfg.url)} :: {cfg.query}", read_chunks=chunks, on_done=done
    )


def redact_secrets(text: str, cfg: SourceConfig) -> str:
    """``text`` (an error, a response) with the source's credentials (header values, the URL's
    password and token-like parameters) replaced by ``***``."""
    from urllib.parse import parse_qsl, urlsplit

    secrets = [v for v in cfg.headers.values() if v]
    secrets += [v.split(" ", 1)[-1] for v in cfg.headers.values() if " " in v]  # "Bearer X"
    if cfg.url:
        parts = urlsplit(cfg.url)
        secrets += [parts.password or ""] + [
            v for k, v in parse_qsl(parts.query) if is_secret_param(k)
        ]
        text = text.replace(cfg.url, redact_url(cfg.url))
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _http_watermark(cfg: SourceConfig, meta: MetadataStore, key: str) -> Any:
    """The last watermark value an HTTP source ingested (None: none, or no watermark), moving
    it from the key used before tokens were kept out of the metadata DB."""
    assert cfg.url
    legacy = f"http:{cfg.url}"  # the key before tokens were kept out of the metadata DB
    last = meta.get_state(key) if cfg.watermark else None
    if cfg.watermark and last is None and meta.get_state(legacy) is not None:
        last = meta.get_state(legacy)
        meta.set_state(key, last)
        meta.delete_state(legacy)
    return last


def _http_get(cfg: SourceConfig, params: dict[str, str], shown: str) -> tuple[bytes, str]:
    """(body, content type) of one GET of the source; unreachable or an error status raises."""
    import httpx

    assert cfg.url
    try:
        resp = httpx.get(
            cfg.url,
            params=params,
            headers=cfg.headers,
            timeout=cfg.timeout_s,
            follow_redirects=True,
        )
    except httpx.HTTPError as e:
        raise SourceError(
            f"HTTP source {shown} unreachable: {e.__class__.__name__}: "
            f"{excerpt(redact_secrets(str(e), cfg), 200)}"
        ) from None
    if resp.status_code >= 400:
        raise SourceError(
            f"HTTP source {shown} answered {resp.status_code}: "
            f"{excerpt(redact_secrets(resp.text, cfg), 200)}"
        )
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    return resp.content, ctype


def _http_format(cfg: SourceConfig, ctype: str, body: bytes) -> str:
    """csv or json: as configured, else by content type, else by the body's first character."""
    fmt = (
        cfg.format
        if cfg.format != "auto"
        else ("csv" if "csv" in ctype else "json" if "json" in ctype else None)
    )
    if fmt is None:
        fmt = "json" if body.lstrip()[:1] in (b"[", b"{") else "csv"
    return fmt


def http_unit(cfg: SourceConfig, data: DataConfig, meta: MetadataStore) -> SourceUnit:
    """One GET of ``cfg.url`` returning CSV or JSON records; with a watermark, the last value
    seen is sent as a query parameter of the same name so the server can send only newer rows."""
    assert cfg.url
    # the URL may carry a token: what is printed or stored is redacted, the state key hashed
    shown = redact_url(cfg.url)
    key = f"http:{hashlib.sha256(cfg.url.encode()).hexdigest()[:16]}"
    params = {}
    last = _http_watermark(cfg, meta, key)
    if cfg.watermark and last is not None:
        params[cfg.watermark] = str(last)
    body, ctype = _http_get(cfg, params, shown)
    fmt = _http_format(cfg, ctype, body)
    seen: dict[str, Any] = {}

    def chunks(progress: ProgressFn | None) -> Iterator[pd.DataFrame]:
        if not body.strip() or body.strip() in (b"[]", b"{}"):
            return  # nothing new: not an error for an incremental feed
        try:
            df = (
                _read_csv_bytes(body, shown, data, cfg.csv)
                if fmt == "csv"
                else _read_json_bytes(body, shown)
            )
        except FileRejected as e:
            if e.rule == "empty_file":  # a header-only CSV or {"records": []}: nothing new
                return
            raise
        if cfg.watermark and cfg.watermark in df.columns and len(df):
            seen["wm"] = _watermark_value(df[cfg.watermark])
        if progress:
            progress(shown, len(df), len(df), "rows")
        yield df

    def done() -> None:
        if "wm" in seen:
            meta.set_state(key, seen["wm"])

    return SourceUnit(
        kind="http",
        origin=shown,
        read_chunks=chunks,
        raw_bytes=body,
        raw_suffix=f".{fmt}",
        on_done=done,
    )


def source_units(
    cfg: SourceConfig, data: DataConfig, meta: MetadataStore, resolve: Callable[[Path], Path]
) -> Iterator[SourceUnit]:
    """The units the configured source has ready now."""
    if cfg.kind == "file":
        assert cfg.path
        yield file_unit(resolve(cfg.path), data, cfg, defer_fresh=True)
    elif cfg.kind == "folder":
        assert cfg.path
        yield from folder_units(cfg, data, resolve(cfg.path), meta)
    elif cfg.kind == "sql":
        unit = sql_unit(cfg, data, meta)
        if unit:
            yield unit
    else:
        yield http_unit(cfg, data, meta)
