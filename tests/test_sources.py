"""Every source kind, read for real: single files (CSV, Parquet, JSON), a landing folder that
receives new files, a SQL table read incrementally through SQLAlchemy, and an HTTP feed served by
a real server on a loopback port."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlops_core.config import Settings, parse_config
from mlops_core.data.ingest import IngestReport, ingest
from mlops_core.data.sources import detect_format, file_unit
from mlops_core.errors import FileRejected, SourceError
from mlops_core.store import BatchStore, MetadataStore

DATA: dict[str, Any] = {
    "id_column": "id",
    "time_column": "ts",
    "target": "y",
    "features": {"numeric": ["x"], "categorical": ["color"]},
    "batch": {"period": "1D"},
}


def _settings(tmp_path: Path, source: dict[str, Any] | None = None, **data: Any) -> Settings:
    d = {**DATA, **data}
    if source is not None:
        d["source"] = source
    return parse_config({"data": d, "storage": {"workspace": str(tmp_path / "ws")}}, environ={})


def _frame(n: int = 48, start: str = "2025-01-01", id0: int = 0, seed: int = 0) -> pd.DataFrame:
    """Hourly rows (so 24 a day) with ISO time strings, as a CSV or a JSON feed carries them."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(id0, id0 + n, dtype=np.int64),
            "ts": pd.date_range(start, periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%S"),
            "x": rng.normal(size=n).round(6),
            "color": rng.choice(["red", "blue", "green"], n),
            "y": np.r_[0, 1, rng.integers(0, 2, n - 2)],
        }
    )


def _stored(settings: Settings) -> pd.DataFrame:
    meta = MetadataStore(settings.db_url)
    try:
        return BatchStore(settings.workspace).read_accepted(meta)
    finally:
        meta.dispose()


def _statuses(report: IngestReport) -> list[tuple[str, int]]:
    return [(o.status, o.rows) for o in report.outcomes]


def _state_rows(settings: Settings, prefix: str) -> list[Any]:
    meta = MetadataStore(settings.db_url)
    try:
        with meta.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT key, value FROM source_state").all()
    finally:
        meta.dispose()
    return [json.loads(v) for k, v in rows if k.startswith(prefix)]


# single files ------------------------------------------------------------------------------
def _write(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        path.write_text(json.dumps({"records": df.to_dict(orient="records")}))


@pytest.mark.parametrize("name", ["data.csv", "data.parquet", "data.json", "data.jsonl"])
def test_file_source_reads_every_format(tmp_path: Path, name: str) -> None:
    df = _frame(72)
    _write(df, tmp_path / name)
    s = _settings(tmp_path, {"kind": "file", "path": str(tmp_path / name)})

    report = ingest(s)

    assert _statuses(report) == [("accepted", 24)] * 3
    assert all(o.origin == str(tmp_path / name) for o in report.outcomes)
    got = _stored(s)
    assert got["id"].tolist() == df["id"].tolist()
    assert got["x"].tolist() == pytest.approx(df["x"].tolist())
    assert got["color"].tolist() == df["color"].tolist()
    assert got["y"].tolist() == df["y"].tolist()
    assert got["ts"].tolist() == pd.to_datetime(df["ts"]).tolist()


def test_declared_format_overrides_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "export.dat"
    _frame(24).to_csv(path, index=False, sep="|")
    s = _settings(
        tmp_path, {"kind": "file", "path": str(path), "format": "csv", "csv": {"delimiter": "|"}}
    )

    assert _statuses(ingest(s)) == [("accepted", 24)]


def test_unknown_extension_is_rejected_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(FileRejected) as e:
        detect_format(path)
    assert e.value.rule == "corrupt_file"
    assert "data.source.format" in e.value.message


def _gzip(text: bytes) -> bytes:
    import gzip

    return gzip.compress(text)


@pytest.mark.parametrize(
    ("name", "content", "rule", "says"),
    [
        ("gz.csv", lambda t: _gzip(t), "wrong_format", "gzip-compressed"),
        ("zip.csv", lambda t: b"PK\x03\x04" + t, "wrong_format", "ZIP archive"),
        ("pq.csv", lambda t: b"PAR1" + t, "wrong_format", "name it .parquet"),
        ("utf16.csv", lambda t: t.decode().encode("utf-16"), "encoding", "UTF-16"),
        ("utf16le.csv", lambda t: t.decode().encode("utf-16-le"), "encoding", "UTF-16"),
        ("nul.csv", lambda t: t.replace(b",", b",\0", 3), "nul_bytes", "3 NUL byte(s)"),
        (
            "dup.csv",
            lambda t: t.replace(b"id,ts,x", b"id,ts,id", 1),
            "duplicate_columns",
            "'id' (columns 1, 3)",
        ),
        ("gz.json", lambda t: _gzip(t), "wrong_format", "gzip-compressed"),
    ],
)
def test_files_that_are_not_csv_text_say_what_they_are(
    tmp_path: Path, name: str, content: Any, rule: str, says: str
) -> None:
    """A compressed file, a workbook, UTF-16 text, NUL bytes or a column named twice: the file
    is quarantined whole with a message that names the problem."""
    frame = _frame(24)
    text = (
        frame.to_json(orient="records") if name.endswith(".json") else frame.to_csv(index=False)
    ).encode()
    path = tmp_path / name
    path.write_bytes(content(text))
    s = _settings(tmp_path)

    report = ingest(s, [path])

    assert [(o.status, o.findings[0].rule) for o in report.outcomes] == [("quarantined", rule)]
    assert says in report.outcomes[0].reason
    assert _stored(s).empty


def test_file_unit_reads_in_chunks_of_chunk_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    _frame(50).to_parquet(path, index=False)
    data = _settings(tmp_path, limits={"chunk_rows": 20}).data
    seen: list[tuple[int, int | None]] = []

    chunks = list(file_unit(path, data).read_chunks(lambda o, d, t, u: seen.append((d, t))))

    assert [len(c) for c in chunks] == [20, 20, 10]
    assert seen == [(20, 50), (40, 50), (50, 50)]


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    s = _settings(tmp_path, {"kind": "file", "path": str(tmp_path / "nope.csv")})
    with pytest.raises(SourceError, match="not found"):
        ingest(s)


# folder --------------------------------------------------------------------------------------
@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def _folder_settings(tmp_path: Path, landing: Path, **source: Any) -> Settings:
    return _settings(tmp_path, {"kind": "folder", "path": str(landing), **source})


def _origins(report: IngestReport) -> set[str]:
    return {Path(o.origin).name for o in report.outcomes}


def test_folder_picks_up_each_new_file_once(tmp_path: Path, landing: Path) -> None:
    s = _folder_settings(tmp_path, landing)
    _frame(24, "2025-01-01", id0=0).to_csv(landing / "a.csv", index=False)
    _frame(24, "2025-01-02", id0=100).to_parquet(landing / "b.parquet", index=False)

    first = ingest(s)
    assert _origins(first) == {"a.csv", "b.parquet"}
    assert first.count("accepted") == 2

    assert ingest(s).outcomes == []  # nothing new: nothing read

    _frame(24, "2025-01-03", id0=200).to_csv(landing / "c.csv", index=False)
    third = ingest(s)
    assert _origins(third) == {"c.csv"}
    assert _statuses(third) == [("accepted", 24)]
    assert len(_stored(s)) == 72


def test_folder_ignores_hidden_and_partial_files(tmp_path: Path, landing: Path) -> None:
    s = _folder_settings(tmp_path, landing)
    df = _frame(24, "2025-01-05", id0=500)
    for name in (".hidden.csv", "d.csv.tmp", "e.csv.part", "~lock.csv", "f.csv.crdownload"):
        (landing / name).write_text('half a file,"with an open quote\n')

    assert ingest(s).outcomes == []

    # the writer finishes: renames its temporary file into place
    df.to_csv(landing / "d.csv.tmp", index=False)
    os.replace(landing / "d.csv.tmp", landing / "d.csv")
    report = ingest(s)
    assert _origins(report) == {"d.csv"}
    assert _statuses(report) == [("accepted", 24)]
    assert not (s.workspace / "quarantine").exists()


@pytest.mark.parametrize("change", ["truncated", "grown"])
def test_a_file_that_changes_while_it_is_read_is_left_for_the_next_run(
    tmp_path: Path, landing: Path, change: str
) -> None:
    s = _folder_settings(tmp_path, landing)
    s = s.model_copy(
        update={
            "data": s.data.model_copy(
                update={"limits": s.data.limits.model_copy(update={"chunk_rows": 10})}
            )
        }
    )
    path = landing / "a.csv"
    whole = _frame(120, "2025-01-01").to_csv(index=False).encode()
    half = whole[: whole.index(b"\n", len(whole) // 2) + 1]  # ends at a line break
    path.write_bytes(whole if change == "truncated" else half)
    calls: list[int] = []

    def writer_at_work(origin: str, done: int, total: int | None, unit: str) -> None:
        if not calls:  # after the first chunk: the writer truncates or appends
            with open(path, "r+b") as f:
                f.truncate(len(whole) // 3) if change == "truncated" else f.write(whole)
        calls.append(done)

    first = ingest(s, progress=writer_at_work)
    assert [(o.status, o.rows) for o in first.outcomes] == [("deferred", 0)]
    assert "still being written" in first.outcomes[0].reason
    assert _stored(s).empty and not (s.workspace / "quarantine").exists()
    assert MetadataStore(s.db_url).list_batches() == []

    path.write_bytes(whole)  # the writer is done
    second = ingest(s)
    assert [(o.status, o.rows) for o in second.outcomes] == [("accepted", 24)] * 5
    assert len(_stored(s)) == 120


def test_a_file_cut_mid_row_is_deferred_while_fresh_and_quarantined_when_it_stays_cut(
    tmp_path: Path, landing: Path
) -> None:
    s = _folder_settings(tmp_path, landing)
    whole = _frame(48, "2025-01-01").to_csv(index=False).encode()
    path = landing / "a.csv"
    path.write_bytes(whole[:-4])  # the writer has written all but the end of the last value

    first = ingest(s)
    assert [o.status for o in first.outcomes] == ["deferred"]
    assert "still being written" in first.outcomes[0].reason
    # a minute later it is still cut: torn, quarantined whole with the reason
    old = path.stat().st_mtime - 120
    os.utime(path, (old, old))
    second = ingest(s)
    assert [(o.status, o.findings[0].rule) for o in second.outcomes] == [
        ("quarantined", "torn_row")
    ]
    assert "does not end with a line break" in second.outcomes[0].reason
    assert _stored(s).empty


def test_ingesting_a_folder_path_skips_partial_files(tmp_path: Path, landing: Path) -> None:
    s = _settings(tmp_path)
    _frame(24).to_csv(landing / "a.csv", index=False)
    (landing / "b.csv.part").write_text("id,ts\n1,")

    report = ingest(s, [landing])

    assert _origins(report) == {"a.csv"}
    assert report.count("quarantined") == 0


def test_links_in_a_landing_folder_are_never_read(tmp_path: Path, landing: Path) -> None:
    """A link to a file outside the folder (a system file) or to a folder outside it is
    skipped: its content reaches neither a batch nor a finding."""
    outside = tmp_path / "private"
    outside.mkdir()
    secret = "root:x:0:0:SECRET-FIRST-LINE"
    (outside / "passwd.csv").write_text(f"{secret}\n{secret}\n")
    _frame(24).to_csv(outside / "data.csv", index=False)
    _frame(24, "2025-01-02", id0=100).to_csv(landing / "a.csv", index=False)
    os.symlink(outside / "passwd.csv", landing / "b.csv")
    os.symlink(outside, landing / "sub")
    s = _folder_settings(tmp_path, landing, pattern="**/*.csv")

    second = tmp_path / "second"
    second.mkdir()
    for report in (ingest(s), ingest(_settings(second), [landing])):
        assert _origins(report) == {"a.csv"}
        assert _statuses(report) == [("accepted", 24)]
        assert not any(secret in (o.reason + str(o.findings)) for o in report.outcomes)


def test_a_named_folder_without_data_files_is_an_error(tmp_path: Path) -> None:
    """`mlops ingest x.csv` where x.csv is a folder, or an empty folder: an error naming it,
    not a silent success with nothing read."""
    (tmp_path / "x.csv").mkdir()
    (tmp_path / "x.csv" / ".hidden.csv").write_text("id\n1\n")
    s = _settings(tmp_path)
    with pytest.raises(SourceError, match=r"x\.csv is a folder with no data file"):
        ingest(s, [tmp_path / "x.csv"])
    good = tmp_path / "good.csv"
    _frame(24).to_csv(good, index=False)
    with pytest.raises(SourceError, match="no such file"):  # checked before anything is read
        ingest(s, [good, tmp_path / "missing.csv"])
    assert _stored(s).empty


def test_folder_pattern_limits_which_files_count(tmp_path: Path, landing: Path) -> None:
    s = _folder_settings(tmp_path, landing, pattern="*.csv")
    _frame(24, "2025-01-01").to_csv(landing / "a.csv", index=False)
    _frame(24, "2025-01-02", id0=100).to_parquet(landing / "b.parquet", index=False)

    assert _origins(ingest(s)) == {"a.csv"}


def test_folder_file_replaced_with_same_content_is_a_duplicate(
    tmp_path: Path, landing: Path
) -> None:
    s = _folder_settings(tmp_path, landing)
    path = landing / "a.csv"
    _frame(48).to_csv(path, index=False)
    first = ingest(s)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # re-delivered, same bytes

    again = ingest(s)

    assert [o.status for o in again.outcomes] == ["duplicate", "duplicate"]
    assert [o.id for o in again.outcomes] == [o.id for o in first.outcomes]
    assert len(_stored(s)) == 48


def test_folder_bad_file_is_quarantined_once_not_every_run(tmp_path: Path, landing: Path) -> None:
    s = _folder_settings(tmp_path, landing)
    (landing / "bad.csv").write_bytes(b"")
    _frame(24).to_csv(landing / "good.csv", index=False)

    first = ingest(s)
    assert sorted(o.status for o in first.outcomes) == ["accepted", "quarantined"]
    assert ingest(s).outcomes == []


def test_missing_folder_is_a_source_error(tmp_path: Path) -> None:
    s = _folder_settings(tmp_path, tmp_path / "nowhere")
    with pytest.raises(SourceError, match="folder not found"):
        ingest(s)


# SQL ---------------------------------------------------------------------------------------
@pytest.fixture
def sql_db(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'source.db'}")
    _frame(48).to_sql("events", engine, index=False)
    yield engine
    engine.dispose()


def _sql_settings(
    tmp_path: Path, engine: sa.Engine, watermark: str, query: str = "SELECT * FROM events"
) -> Settings:
    return _settings(
        tmp_path, {"kind": "sql", "url": str(engine.url), "query": query, "watermark": watermark}
    )


@pytest.mark.parametrize(
    ("watermark", "last_after_first", "last_after_second"),
    [
        ("id", 47, 71),
        ("ts", "2025-01-02T23:00:00", "2025-01-03T23:00:00"),
    ],
)
def test_sql_source_reads_only_rows_past_the_watermark(
    tmp_path: Path, sql_db: sa.Engine, watermark: str, last_after_first: Any, last_after_second: Any
) -> None:
    s = _sql_settings(tmp_path, sql_db, watermark)

    first = ingest(s)
    assert _statuses(first) == [("accepted", 24), ("accepted", 24)]
    assert _state_rows(s, "sql:") == [last_after_first]

    assert ingest(s).outcomes == []  # nothing new

    _frame(24, "2025-01-03", id0=48, seed=1).to_sql(
        "events", sql_db, index=False, if_exists="append"
    )
    third = ingest(s)
    assert _statuses(third) == [("accepted", 24)]
    assert third.outcomes[0].start_time == pd.Timestamp("2025-01-03")
    assert _state_rows(s, "sql:") == [last_after_second]
    assert _stored(s)["id"].tolist() == list(range(72))


def test_sql_watermark_survives_a_new_metadata_connection(
    tmp_path: Path, sql_db: sa.Engine
) -> None:
    s = _sql_settings(tmp_path, sql_db, "id")
    ingest(s)
    meta = MetadataStore(s.db_url)  # a later run: a fresh process would see the same state
    try:
        assert ingest(s, meta=meta).outcomes == []
    finally:
        meta.dispose()


def test_sql_query_without_the_watermark_column_is_a_source_error(
    tmp_path: Path, sql_db: sa.Engine
) -> None:
    s = _sql_settings(tmp_path, sql_db, "updated_at")
    with pytest.raises(SourceError, match="SQL source failed"):
        ingest(s)
    assert _state_rows(s, "sql:") == []


def test_sql_bad_query_is_a_source_error(tmp_path: Path, sql_db: sa.Engine) -> None:
    s = _sql_settings(tmp_path, sql_db, "id", query="SELECT * FROM no_such_table")
    with pytest.raises(SourceError, match="no_such_table"):
        ingest(s)


# HTTP --------------------------------------------------------------------------------------
@dataclass
class Feed:
    """What the test server serves; tests change it between requests."""

    rows: pd.DataFrame
    fmt: str = "csv"  # csv | json | raw
    status: int = 200
    raw: bytes = b""
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def feed() -> Iterator[Feed]:
    state = Feed(rows=_frame(48))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            state.requests.append({"query": query, "auth": self.headers.get("Authorization")})
            if state.status != 200:
                body, ctype = b"internal error", "text/plain"
            elif state.fmt == "raw":
                body, ctype = state.raw, "application/json"
            else:
                df = state.rows
                if "id" in query:
                    df = df[df["id"] > int(query["id"][0])]
                if state.fmt == "csv":
                    body, ctype = df.to_csv(index=False).encode(), "text/csv; charset=utf-8"
                else:
                    body = json.dumps({"records": df.to_dict(orient="records")}).encode()
                    ctype = "application/json"
            self.send_response(state.status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/records"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _http_settings(tmp_path: Path, url: str, **source: Any) -> Settings:
    return _settings(tmp_path, {"kind": "http", "url": url, "timeout_s": 5, **source})


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_http_source_sends_the_watermark_and_reads_only_new_rows(
    tmp_path: Path, feed: Feed, fmt: str
) -> None:
    feed.fmt = fmt
    s = _http_settings(tmp_path, feed.url, watermark="id")

    first = ingest(s)
    assert _statuses(first) == [("accepted", 24), ("accepted", 24)]
    assert feed.requests[-1]["query"] == {}
    assert _state_rows(s, "http:") == [47]

    # nothing new: the server answers an empty list (or a header-only CSV); not an error
    assert ingest(s).outcomes == []
    assert feed.requests[-1]["query"] == {"id": ["47"]}
    assert not (s.workspace / "quarantine").exists()

    feed.rows = pd.concat([feed.rows, _frame(24, "2025-01-03", id0=48, seed=1)], ignore_index=True)
    third = ingest(s)
    assert _statuses(third) == [("accepted", 24)]
    assert _state_rows(s, "http:") == [71]
    assert _stored(s)["id"].tolist() == list(range(72))


def test_http_source_sends_configured_headers(tmp_path: Path, feed: Feed) -> None:
    s = _http_settings(tmp_path, feed.url, headers={"Authorization": "Bearer t0ken"})
    ingest(s)
    assert feed.requests[-1]["auth"] == "Bearer t0ken"


def test_http_tokens_are_never_printed_or_stored(tmp_path: Path, feed: Feed) -> None:
    """A token in the URL or a header reaches the server and nothing else: not the batch
    records, the source state, the quarantine notes or an error."""
    token, bearer = "tok-URL-5ecret", "hdr-5ecret-value"
    url = f"{feed.url}?api_key={token}&region=eu"
    s = _http_settings(tmp_path, url, watermark="id", headers={"Authorization": f"Bearer {bearer}"})

    report = ingest(s)
    assert report.count("accepted") == 2
    assert feed.requests[-1]["auth"] == f"Bearer {bearer}"
    assert {o.origin for o in report.outcomes} == {f"{feed.url}?api_key=***&region=eu"}
    feed.fmt, feed.raw = "raw", b"not json"
    assert ingest(s).count("quarantined") == 1
    feed.status = 500
    with pytest.raises(SourceError) as err:
        ingest(s)
    assert "api_key=***" in str(err.value)

    stored = b"".join(p.read_bytes() for p in s.workspace.rglob("*") if p.is_file())
    for secret in (token, bearer):
        assert secret.encode() not in stored
        assert secret not in str(err.value)
    assert _state_rows(s, "http:") == [47]


def test_an_http_watermark_kept_under_the_old_key_carries_on(tmp_path: Path, feed: Feed) -> None:
    s = _http_settings(tmp_path, feed.url, watermark="id")
    meta = MetadataStore(s.db_url)
    meta.set_state(f"http:{feed.url}", 40)  # as an earlier release kept it
    meta.dispose()

    ingest(s)

    assert feed.requests[-1]["query"] == {"id": ["40"]}
    meta = MetadataStore(s.db_url)
    assert meta.get_state(f"http:{feed.url}") is None
    meta.dispose()
    assert _state_rows(s, "http:") == [47]


def test_http_server_error_is_a_source_error_and_nothing_moves(tmp_path: Path, feed: Feed) -> None:
    s = _http_settings(tmp_path, feed.url, watermark="id")
    ingest(s)
    feed.status = 500

    with pytest.raises(SourceError, match="500"):
        ingest(s)

    assert _state_rows(s, "http:") == [47]
    meta = MetadataStore(s.db_url)
    assert len(meta.list_batches()) == 2
    meta.dispose()


def test_http_unreachable_is_a_source_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = _http_settings(tmp_path, f"http://127.0.0.1:{port}/records", timeout_s=2)
    with pytest.raises(SourceError, match="unreachable"):
        ingest(s)


def test_http_malformed_body_is_quarantined_whole(tmp_path: Path, feed: Feed) -> None:
    feed.fmt = "raw"
    feed.raw = b'[{"id": 1, "ts": "2025-01-01", '  # cut off mid-record
    s = _http_settings(tmp_path, feed.url)

    report = ingest(s)

    assert [o.status for o in report.outcomes] == ["quarantined"]
    assert report.outcomes[0].findings[0].rule == "corrupt_file"
    kept = s.workspace / "quarantine" / report.outcomes[0].id / "data.json"
    assert kept.read_bytes() == feed.raw


def test_http_csv_with_a_short_row_is_quarantined_whole(tmp_path: Path, feed: Feed) -> None:
    feed.fmt = "raw"
    lines = _frame(48).to_csv(index=False).splitlines()
    feed.raw = "\n".join([*lines[:5], lines[5].rsplit(",", 1)[0], *lines[6:]]).encode()
    s = _http_settings(tmp_path, feed.url, format="csv")

    report = ingest(s)

    assert [(o.status, o.findings[0].rule) for o in report.outcomes] == [
        ("quarantined", "short_row")
    ]
    assert "4 of 5 fields" in report.outcomes[0].reason
    assert _stored(s).empty
