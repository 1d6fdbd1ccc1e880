"""The `mlops` command line through Typer's test runner: init, ingest, batches, quarantine,
demo, every --help, and clear errors for a bad configuration."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner, Result

from mlops_cli.app import app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _frame(n: int = 240, start: str = "2025-01-06", id0: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(id0, id0 + n, dtype=np.int64),
            "ts": pd.date_range(start, periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
            "income": rng.normal(50_000, 8_000, n).round(2),
            "region": rng.choice(["north", "south", "east"], n),
            "y": np.r_[0, 1, rng.integers(0, 2, n - 2)],
        }
    )


def _run(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def project(tmp_path: Path, runner: CliRunner) -> Path:
    """`mlops init` over a 10-day CSV (two calendar weeks); returns the config path."""
    data = tmp_path / "data.csv"
    _frame().to_csv(data, index=False)
    cfg = tmp_path / "mlops.yaml"
    res = _run(
        runner,
        "init",
        "--data",
        str(data),
        "--target",
        "y",
        "--time",
        "ts",
        "--id",
        "id",
        "--config",
        str(cfg),
    )
    assert res.exit_code == 0, res.output
    return cfg


def test_init_writes_a_config_inferred_from_the_sample(project: Path) -> None:
    raw = yaml.safe_load(project.read_text())
    assert raw["task"] == "binary"
    assert raw["data"]["source"] == {"kind": "file", "path": "data.csv"}
    assert raw["data"]["features"]["numeric"] == ["income"]
    assert raw["data"]["features"]["categorical"] == ["region"]
    assert (raw["data"]["id_column"], raw["data"]["time_column"]) == ("id", "ts")


def test_init_refuses_to_overwrite_and_names_missing_columns(
    tmp_path: Path, project: Path, runner: CliRunner
) -> None:
    data = str(tmp_path / "data.csv")
    again = _run(runner, "init", "--data", data, "--target", "y", "--config", str(project))
    assert again.exit_code != 0 and "--force" in again.stderr

    other = tmp_path / "other.yaml"
    res = _run(runner, "init", "--data", data, "--target", "label", "--config", str(other))
    assert res.exit_code != 0
    assert "label" in res.stderr and not other.exists()


def test_ingest_json_reports_every_batch(project: Path, runner: CliRunner) -> None:
    report = _json(_run(runner, "ingest", "--config", str(project), "--json"))

    assert (report["accepted"], report["quarantined"], report["duplicate"]) == (2, 0, 0)
    assert report["rows_accepted"] == 240
    batches = report["batches"]
    assert [b["rows"] for b in batches] == [168, 72]  # weekly batches: Mon 6 Jan, Mon 13 Jan
    for b in batches:
        assert b["id"].startswith("b-") and b["status"] == "accepted"
        assert b["origin"].endswith("data.csv")
    assert [b["start_time"] for b in batches] == ["2025-01-06T00:00:00", "2025-01-13T00:00:00"]
    assert batches[1]["end_time"] == "2025-01-15T23:00:00"

    again = _json(_run(runner, "ingest", "--config", str(project), "--json"))
    assert (again["accepted"], again["duplicate"]) == (0, 2)
    assert [b["id"] for b in again["batches"]] == [b["id"] for b in batches]


def test_ingest_without_json_prints_a_summary(project: Path, runner: CliRunner) -> None:
    res = _run(runner, "ingest", "--config", str(project))
    assert res.exit_code == 0
    assert "2 accepted" in res.stdout and "240 rows" in res.stdout


def test_batches_json_lists_what_was_ingested(project: Path, runner: CliRunner) -> None:
    ingested = _json(_run(runner, "ingest", "--config", str(project), "--json"))

    listed = _json(_run(runner, "batches", "--config", str(project), "--json"))["batches"]

    assert [b["id"] for b in listed] == [b["id"] for b in ingested["batches"]]
    assert all(b["status"] == "accepted" and b["has_labels"] for b in listed)
    assert {b["rows"] for b in listed} == {168, 72}
    none = _json(
        _run(runner, "batches", "--config", str(project), "--status", "quarantined", "--json")
    )
    assert none == {"batches": []}
    table = _run(runner, "batches", "--config", str(project))
    assert table.exit_code == 0 and listed[0]["id"] in table.stdout


def test_quarantine_list_show_release(tmp_path: Path, project: Path, runner: CliRunner) -> None:
    cfg = str(project)
    _run(runner, "ingest", "--config", cfg)
    good = _frame(48, "2025-01-20", id0=5000, seed=1)
    lines = good.to_csv(index=False).splitlines()
    bad = tmp_path / "late.csv"
    bad.write_text("\n".join([*lines[:20], lines[20] + ",surplus", *lines[21:]]) + "\n")

    res = _run(runner, "ingest", str(bad), "--config", cfg, "--json")
    assert res.exit_code == 0  # a quarantined file is an outcome, not a failure
    (q,) = json.loads(res.stdout)["batches"]
    assert q["status"] == "quarantined"
    qid = q["id"]

    listed = _json(_run(runner, "quarantine", "list", "--config", cfg, "--json"))
    assert [r["id"] for r in listed["quarantined"]] == [qid]
    assert "Nothing in quarantine" not in _run(runner, "quarantine", "list", "-c", cfg).stdout

    shown = _json(_run(runner, "quarantine", "show", qid[:10], "--config", cfg, "--json"))
    assert shown["id"] == qid and shown["status"] == "quarantined"
    assert [f["rule"] for f in shown["findings"]] == ["extra_fields"]
    text = _run(runner, "quarantine", "show", qid, "--config", cfg)
    assert text.exit_code == 0
    assert "extra_fields" in text.stdout and "Kept at" in text.stdout

    # still unreadable: exit 1, nothing moves
    still = _run(runner, "quarantine", "release", qid, "--config", cfg, "--json")
    assert still.exit_code == 1
    assert json.loads(still.stdout)["released"] is False

    kept = project.parent / ".mlops" / "quarantine" / qid / "data.csv"
    kept.write_text("\n".join(lines) + "\n")  # fix the kept file
    released = json.loads(_run(runner, "quarantine", "release", qid, "-c", cfg, "--json").stdout)
    assert released["released"] is True and released["id"] == qid
    assert [(b["status"], b["rows"]) for b in released["batches"]] == [("accepted", 48)]

    assert _json(_run(runner, "quarantine", "list", "-c", cfg, "--json")) == {"quarantined": []}
    everything = _json(_run(runner, "quarantine", "list", "-c", cfg, "--all", "--json"))
    (rec,) = everything["quarantined"]
    assert rec["status"] == "released"
    assert rec["released_as"] == [b["id"] for b in released["batches"]]
    assert "Nothing in quarantine" in _run(runner, "quarantine", "list", "-c", cfg).stdout


def test_quarantine_release_force(tmp_path: Path, project: Path, runner: CliRunner) -> None:
    cfg = str(project)
    _run(runner, "ingest", "--config", cfg)
    spoiled = _frame(48, "2025-01-20", id0=5000, seed=1)
    spoiled.loc[3, "income"] = np.inf
    path = tmp_path / "inf.csv"
    spoiled.to_csv(path, index=False)
    (q,) = _json(_run(runner, "ingest", str(path), "-c", cfg, "--json"))["batches"]
    assert q["status"] == "quarantined"

    refused = _run(runner, "quarantine", "release", q["id"], "-c", cfg)
    assert refused.exit_code == 1 and "--force" in refused.stdout

    forced = _json(_run(runner, "quarantine", "release", q["id"], "-c", cfg, "--force", "--json"))
    assert forced["released"] is True
    assert forced["batches"][0]["reason"].startswith("released by force")


def test_quarantine_show_unknown_id_fails_cleanly(project: Path, runner: CliRunner) -> None:
    res = _run(runner, "quarantine", "show", "q-doesnotexist", "--config", str(project))
    assert res.exit_code == 1
    assert "no batch with id 'q-doesnotexist'" in res.stderr


def test_demo_generates_and_ingests_a_faulty_stream(tmp_path: Path, runner: CliRunner) -> None:
    demo = tmp_path / "demo"

    report = _json(
        _run(runner, "demo", "--dir", str(demo), "--rows", "20000", "--days", "70", "--json")
    )

    assert report["accepted"] > 0 and report["quarantined"] > 0 and report["duplicate"] >= 1
    assert Path(report["project"]) == (demo / "mlops.yaml").resolve()
    rules = {
        f["rule"]
        for b in report["batches"]
        if b["status"] == "quarantined"
        for f in b["findings"]
        if f["severity"] == "fatal"
    }
    assert {"renamed_columns", "corrupt_file", "encoding", "all_null_feature"} <= rules
    dup = next(b for b in report["batches"] if b["status"] == "duplicate")
    assert dup["origin"].endswith("_resent.parquet")
    assert any(b["id"] == dup["id"] and b["status"] == "accepted" for b in report["batches"])
    assert (demo / "drift_points.json").exists()
    # and a first model awaits approval
    assert report["training"]["version"] == "1"
    assert report["training"]["status"] == "pending_approval"

    # the landing folder is a folder source: a second run finds nothing new
    again = _json(
        _run(
            runner,
            "demo",
            "--dir",
            str(demo),
            "--rows",
            "20000",
            "--days",
            "70",
            "--no-train",
            "--json",
        )
    )
    assert again["batches"] == [] and again["training"] is None


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["init"],
        ["ingest"],
        ["batches"],
        ["demo"],
        ["quarantine"],
        ["quarantine", "list"],
        ["quarantine", "show"],
        ["quarantine", "release"],
        ["train"],
        ["models"],
        ["approve"],
        ["reject"],
        ["rollback"],
        ["audit"],
        ["package"],
        ["monitor"],
        ["decisions"],
    ],
    ids=lambda a: " ".join(a) or "mlops",
)
def test_help_of_every_command(runner: CliRunner, args: list[str]) -> None:
    res = _run(runner, *args, "--help")
    assert res.exit_code == 0
    assert "Usage" in res.stdout


def test_bad_config_names_the_key(tmp_path: Path, project: Path, runner: CliRunner) -> None:
    raw = yaml.safe_load(project.read_text())
    raw["data"]["limits"]["chunk_rows"] = "lots"
    raw["data"]["batch"]["perod"] = "W"
    project.write_text(yaml.safe_dump(raw))

    res = _run(runner, "ingest", "--config", str(project))

    assert res.exit_code != 0
    assert str(project) in res.stderr
    assert "data.limits.chunk_rows" in res.stderr and "'lots'" in res.stderr
    assert "data.batch.perod: unknown key" in res.stderr
    assert "Traceback" not in res.output


def test_bad_environment_override_names_the_variable(project: Path, runner: CliRunner) -> None:
    res = _run(
        runner, "batches", "--config", str(project), env={"MLOPS_DATA__LIMITS__CHUNK_ROWS": "-5"}
    )
    assert res.exit_code != 0
    assert "data.limits.chunk_rows" in res.stderr
    assert "MLOPS_DATA__LIMITS__CHUNK_ROWS" in res.stderr


@pytest.mark.parametrize("command", [["ingest"], ["batches"], ["quarantine", "list"]])
def test_missing_config_points_to_init(
    tmp_path: Path, runner: CliRunner, command: list[str]
) -> None:
    res = _run(runner, *command, "--config", str(tmp_path / "nope.yaml"))
    assert res.exit_code != 0
    assert "nope.yaml" in res.stderr and "mlops init" in res.stderr


def test_ingest_without_source_or_files_says_what_to_do(tmp_path: Path, runner: CliRunner) -> None:
    cfg = tmp_path / "mlops.yaml"
    cfg.write_text("project: bare\n")
    res = _run(runner, "ingest", "--config", str(cfg))
    assert res.exit_code != 0  # a config written by hand: its project is not created yet
    said = " ".join(res.stderr.split())
    assert "no project here" in said and f"mlops init --config {cfg}" in said
    assert not (tmp_path / ".mlops").exists()
    res = _run(runner, "init", "--config", str(cfg))
    assert res.exit_code == 0, res.output
    assert (tmp_path / ".mlops").is_dir()
    res = _run(runner, "ingest", "--config", str(cfg))
    assert res.exit_code != 0
    assert "no data.source" in res.stderr


# a project that is not there, a server that does not answer ----------------------------------
@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.mark.parametrize(
    "args",
    [
        ["models"],
        ["approve", "1", "--by", "ana", "--comment", "ok"],
        ["rollback", "--by", "ana", "--comment", "back"],
    ],
)
@pytest.mark.parametrize("server", ["closed", "silent"])
def test_an_mlflow_that_does_not_answer_is_one_line_not_a_hang(
    project: Path, runner: CliRunner, silent_port: int, args: list[str], server: str
) -> None:
    raw = yaml.safe_load(project.read_text())
    port = silent_port if server == "silent" else 1
    raw["storage"]["mlflow_uri"] = f"http://127.0.0.1:{port}"
    project.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, [*args, "--config", str(project)])
    assert res.exit_code == 1, res.output
    said = " ".join(res.stderr.split())
    assert said.startswith("error: MLflow at http://127.0.0.1:") and "does not answer" in said
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) <= 2


def test_a_missing_workspace_or_db_is_refused_and_never_recreated(
    project: Path, runner: CliRunner
) -> None:
    import shutil

    assert _run(runner, "ingest", "--config", str(project)).exit_code == 0
    raw = yaml.safe_load(project.read_text())
    ws = project.parent / raw["storage"]["workspace"]
    moved = project.parent / "moved"
    shutil.move(ws, moved)
    for args in (
        ["batches"],
        ["ingest"],
        ["quarantine", "list"],
        ["decisions"],
        ["status"],
        ["retrain", "--by", "ana", "--reason", "r"],
        ["models"],
    ):
        res = runner.invoke(app, [*args, "--config", str(project)])
        assert res.exit_code == 1, (args, res.output)
        said = " ".join(res.stderr.split())
        assert "no project here: missing the workspace" in said and "Nothing was created" in said
        assert not ws.exists(), args
    # the workspace is back but its DB is gone: refused too, no new empty DB
    shutil.move(moved, ws)
    db = ws / "metadata.db"
    db.rename(ws / "kept.db")
    res = runner.invoke(app, ["batches", "--config", str(project)])
    assert res.exit_code == 1 and "the metadata DB" in " ".join(res.stderr.split())
    assert not db.exists()
    (ws / "kept.db").rename(db)
    assert _json(_run(runner, "batches", "--json", "--config", str(project)))


def test_a_db_url_in_a_missing_folder_is_not_created_by_a_read(
    project: Path, runner: CliRunner
) -> None:
    raw = yaml.safe_load(project.read_text())
    folder = project.parent / "elsewhere"
    raw["storage"]["db_url"] = f"sqlite:///{folder}/meta.db"
    project.write_text(yaml.safe_dump(raw))
    for args in (["batches"], ["decisions"], ["quarantine", "list"]):
        res = runner.invoke(app, [*args, "--config", str(project)])
        assert res.exit_code == 1 and "the metadata DB" in " ".join(res.stderr.split()), args
        assert not folder.exists(), args
    res = _run(runner, "init", "--config", str(project))
    assert res.exit_code == 0, res.output
    assert (folder / "meta.db").is_file()
    assert _run(runner, "batches", "--config", str(project)).exit_code == 0


def test_ingest_of_nanosecond_times_warns_nothing(project: Path, runner: CliRunner) -> None:
    """Issue 16: two "Discarding nonzero nanoseconds" warnings per batch (its first and last
    time, converted to datetimes). They are floored to the microsecond a datetime holds."""
    import warnings

    from mlops_core.config import load_config
    from mlops_core.store import MetadataStore

    frame = _frame(id0=1000, start="2025-02-03")
    stamps = pd.to_datetime(frame["ts"]) + pd.to_timedelta(123_456_789, unit="ns")
    frame["ts"] = stamps.dt.strftime("%Y-%m-%d %H:%M:%S.%f") + "789"  # nanoseconds
    data = project.parent / "ns.csv"
    frame.to_csv(data, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        doc = _json(_run(runner, "ingest", str(data), "--json", "--config", str(project)))
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "nanoseconds" in m], said
    assert doc["accepted"] >= 2 and not doc["quarantined"]
    batches = MetadataStore(load_config(project).db_url).list_batches()
    first = min(b.start_time for b in batches if b.start_time is not None)
    assert first == pd.Timestamp("2025-02-03 00:00:00.123456").to_pydatetime()


def test_retrain_without_the_services_says_it_is_queued(project: Path, runner: CliRunner) -> None:
    """Issue 16: `mlops retrain` answered "applied" while nothing would happen (no Prefect)."""
    from mlops_core.config import load_config
    from mlops_core.registry.registry import Registry

    assert _run(runner, "ingest", "--config", str(project)).exit_code == 0
    env = {"PREFECT_API_URL": ""}
    res = _run(
        runner,
        "retrain",
        "--by",
        "ana",
        "--reason",
        "fresh labels",
        "--config",
        str(project),
        env=env,
    )
    assert res.exit_code == 0, res.output
    said = " ".join(res.stdout.split())
    assert said.startswith("queued until the services run") and "mlops up" in said
    assert "mlops retrain --now" in said
    doc = _json(
        _run(
            runner,
            "retrain",
            *("--by", "ana", "--reason", "again", "--request-id", "r-2", "--json"),
            *("--config", str(project)),
            env=env,
        )
    )
    # today's keys, and what is new
    assert set(doc) >= {"outcome", "request_id", "requested_by", "reason", "at", "audit_id"}
    assert (doc["outcome"], doc["queued"], doc["services_running"]) == ("applied", True, False)
    assert doc["requested_by"] == "ana" and "training" not in doc
    recs = Registry(load_config(project)).audit(action="request_retrain")
    assert [r.outcome for r in recs] == ["applied", "applied"]  # published when Prefect runs


def test_retrain_with_the_services_running_says_when_it_is_published(
    project: Path, runner: CliRunner
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"PREFECT_API_URL": f"http://127.0.0.1:{server.server_port}/api"}
        args = ("retrain", "--by", "ana", "--reason", "r", "--json", "--config", str(project))
        doc = _json(_run(runner, *args, env=env))
    finally:
        server.shutdown()
    assert (doc["queued"], doc["services_running"]) == (True, True)
    assert doc["message"].startswith("queued: the publish-events deployment publishes it")
