"""The catalogue of bad inputs: every one the foundation issue listed and every one the hostile
test of issue 14 found, each run through `mlops ingest` (the CLI, in process) on its own copy of
a project whose contract is frozen, each with the outcome expected and the one observed.

The table (input, expected, observed, what was printed) is written at the end of the module to
the terminal and to ``$MLOPS_RELIABILITY_OUT/bad_inputs.md`` (default ``build/reliability``),
which RELIABILITY.md quotes.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mlops_cli.app import app

REPO = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("MLOPS_RELIABILITY_OUT", REPO / "build" / "reliability"))
ROWS = 48  # a day of half-hourly rows: one batch (period 1D), over the 30 rows constant checks need

CONFIG: dict[str, Any] = {
    "project": "catalogue",
    "task": "binary",
    "data": {
        "id_column": "id",
        "time_column": "ts",
        "target": "y",
        "features": {"numeric": ["income", "age"], "categorical": ["region"]},
        "batch": {"period": "1D"},
        "limits": {"max_file_mb": 1, "max_columns": 200},
    },
    "storage": {"workspace": ".mlops"},
}


def day(n: int = 0, rows: int = ROWS, seed: int | None = None) -> pd.DataFrame:
    """Day ``n`` after the contract's day: clean rows like the ones that froze it."""
    rng = np.random.default_rng(n if seed is None else seed)
    start = pd.Timestamp("2025-03-01") + pd.Timedelta(days=n)
    return pd.DataFrame(
        {
            "id": np.arange(n * 1000, n * 1000 + rows, dtype=np.int64),
            "ts": pd.date_range(start, periods=rows, freq="30min").strftime("%Y-%m-%d %H:%M:%S"),
            "income": rng.normal(50_000, 8_000, rows).round(2),
            "age": rng.integers(18, 80, rows),
            "region": np.resize(np.array(["north", "south", "east"]), rows),
            "y": np.r_[0, 1, rng.integers(0, 2, max(rows - 2, 0))][:rows],
        }
    )


def csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


# the cases ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input. ``make`` writes it under the folder given and returns what to pass to
    `mlops ingest`. ``expected``: ``quarantined:RULE``, ``accepted`` (clean),
    ``accepted:RULE`` (with that warning), ``duplicate``, ``error:TEXT`` (exit 1, TEXT in the
    message), or ``batches:N`` (N accepted batches)."""

    name: str
    origin: str  # foundation (issue 2) or issue 14
    make: Callable[[Path], list[Path]]
    expected: str


def write(path: Path, content: str | bytes) -> list[Path]:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return [path]


def frame_file(df: pd.DataFrame, name: str = "batch.csv") -> Callable[[Path], list[Path]]:
    def make(d: Path) -> list[Path]:
        path = d / name
        if name.endswith(".parquet"):
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, index=False)
        return [path]

    return make


def edited(
    edit: Callable[[pd.DataFrame], pd.DataFrame], n: int = 1
) -> Callable[[Path], list[Path]]:
    return frame_file(edit(day(n)))


def text_file(
    edit: Callable[[str], str | bytes], name: str = "batch.csv"
) -> Callable[[Path], list[Path]]:
    return lambda d: write(d / name, edit(csv_text(day(1))))


def _set(df: pd.DataFrame, col: str, rows: slice | list[int], value: Any) -> pd.DataFrame:
    df = df.copy()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        df[col] = df[col].astype(object)
    else:
        df[col] = df[col].astype("float64")
    df.loc[rows, col] = value
    return df


def _short_row(text: str) -> str:
    lines = text.splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0]
    return "\n".join(lines) + "\n"


def _extra_field(text: str) -> str:
    lines = text.splitlines()
    lines[5] += ",surprise"
    return "\n".join(lines) + "\n"


def _open_quote(text: str) -> str:
    lines = text.splitlines()
    lines[5] = (
        lines[5].replace("north", '"north').replace("south", '"south').replace("east", '"east')
    )
    return "\n".join(lines) + "\n"


def _truncated_parquet(d: Path) -> list[Path]:
    path = d / "batch.parquet"
    day(1).to_parquet(path, index=False)
    raw = path.read_bytes()
    return write(path, raw[: len(raw) // 2])


def _too_large(d: Path) -> list[Path]:
    df = day(1, rows=30_000)  # about 1.5 MB of CSV: over the 1 MB cap of this project
    return frame_file(df)(d)


def _too_wide(d: Path) -> list[Path]:
    df = day(1)
    wide = pd.concat(
        [df, pd.DataFrame(np.zeros((len(df), 250)), columns=[f"c{i}" for i in range(250)])], axis=1
    )
    return frame_file(wide)(d)


def _resent(d: Path) -> list[Path]:
    return frame_file(day(0))(d)  # the very day that froze the contract


def _symlink(d: Path) -> list[Path]:
    landing = d / "landing"
    landing.mkdir()
    secret = d / "secret.csv"
    secret.write_text("root:x:0:0:SECRET-LINE\n")
    day(1).to_csv(landing / "a.csv", index=False)
    (landing / "b.csv").symlink_to(secret)
    return [landing]


def _dir_named_csv(d: Path) -> list[Path]:
    (d / "x.csv").mkdir()
    return [d / "x.csv"]


def _mixed_time_zones(d: Path) -> list[Path]:
    df = day(1, rows=60)
    local = pd.date_range("2025-03-02", periods=60, freq="h")
    df["ts"] = [
        t.strftime("%Y-%m-%dT%H:%M:%S") + ("+05:00" if i % 2 else "+00:00")
        for i, t in enumerate(local)
    ]
    return frame_file(df)(d)


def _huge_value(df: pd.DataFrame) -> pd.DataFrame:
    return _set(df, "region", [3], "Z" * 100_000)


CASES: list[Case] = [
    # the foundation issue's list ------------------------------------------------------------
    Case(
        "missing column",
        "foundation",
        edited(lambda df: df.drop(columns="age")),
        "quarantined:missing_columns",
    ),
    Case(
        "extra column",
        "foundation",
        edited(lambda df: df.assign(note="x")),
        "accepted:extra_columns",
    ),
    Case(
        "renamed column",
        "foundation",
        edited(lambda df: df.rename(columns={"income": "Income"})),
        "quarantined:renamed_columns",
    ),
    Case(
        "reordered columns",
        "foundation",
        edited(lambda df: df[df.columns[::-1]]),
        "accepted:column_order",
    ),
    Case(
        "wrong dtype",
        "foundation",
        edited(lambda df: _set(df, "income", slice(None), "unknown")),
        "quarantined:dtype_mismatch",
    ),
    Case(
        "mixed types",
        "foundation",
        edited(lambda df: _set(df, "income", [1, 2], "lots")),
        "quarantined:mixed_types",
    ),
    Case(
        "all-NaN feature",
        "foundation",
        edited(lambda df: df.assign(age=np.nan)),
        "quarantined:all_null_feature",
    ),
    Case(
        "constant feature",
        "foundation",
        edited(lambda df: df.assign(age=42)),
        "accepted:constant_feature",
    ),
    Case(
        "null-rate spike",
        "foundation",
        edited(lambda df: _set(df, "income", slice(0, 30), np.nan)),
        "accepted:null_rate_spike",
    ),
    Case(
        "+inf",
        "foundation",
        edited(lambda df: _set(df, "income", [4], np.inf)),
        "quarantined:infinite_values",
    ),
    Case(
        "-inf",
        "foundation",
        edited(lambda df: _set(df, "income", [4], -np.inf)),
        "quarantined:infinite_values",
    ),
    Case(
        "out-of-range number",
        "foundation",
        edited(lambda df: _set(df, "age", [4], 240)),
        "accepted:out_of_range",
    ),
    Case(
        "unseen category",
        "foundation",
        edited(lambda df: _set(df, "region", [4], "mars")),
        "accepted:unseen_categories",
    ),
    Case(
        "missing target column",
        "foundation",
        edited(lambda df: df.drop(columns="y")),
        "accepted:missing_target",
    ),
    Case(
        "single-class labels",
        "foundation",
        edited(lambda df: df.assign(y=1)),
        "accepted:single_class_labels",
    ),
    Case(
        "NaN labels",
        "foundation",
        edited(lambda df: _set(df, "y", [3, 4], np.nan)),
        "accepted:null_labels",
    ),
    Case(
        "duplicate ids",
        "foundation",
        edited(lambda df: df.assign(id=df["id"] // 2)),
        "quarantined:duplicate_ids",
    ),
    Case(
        "unparseable timestamp",
        "foundation",
        edited(lambda df: _set(df, "ts", [4], "soon")),
        "quarantined:timestamp_unparseable",
    ),
    Case(
        "timestamps out of order",
        "foundation",
        edited(lambda df: df.iloc[[1, 0, *range(2, len(df))]]),
        "accepted:timestamp_out_of_order",
    ),
    Case(
        "timestamp in the future",
        "foundation",  # its own day: the rest is accepted
        edited(lambda df: _set(df, "ts", [len(df) - 1], "2099-03-01 00:00:00")),
        "accepted + quarantined:timestamp_in_future",
    ),
    Case(
        "empty file", "foundation", lambda d: write(d / "batch.csv", b""), "quarantined:empty_file"
    ),
    Case(
        "header-only file",
        "foundation",
        text_file(lambda t: t.splitlines()[0] + "\n"),
        "quarantined:empty_file",
    ),
    Case("file over the size cap", "foundation", _too_large, "quarantined:file_too_large"),
    Case("very wide file", "foundation", _too_wide, "quarantined:too_many_columns"),
    Case(
        "ragged row (too few fields)", "foundation", text_file(_short_row), "quarantined:short_row"
    ),
    Case(
        "ragged row (too many fields)",
        "foundation",
        text_file(_extra_field),
        "quarantined:extra_fields",
    ),
    Case("open quote", "foundation", text_file(_open_quote), "quarantined:corrupt_file"),
    Case("truncated Parquet", "foundation", _truncated_parquet, "quarantined:corrupt_file"),
    Case(
        "non-UTF-8 text",
        "foundation",
        text_file(lambda t: t.replace("north", "nörth").encode("latin-1")),
        "quarantined:encoding",
    ),
    Case(
        "wrong delimiter",
        "foundation",
        text_file(lambda t: t.replace(",", ";")),
        "quarantined:wrong_delimiter",
    ),
    Case("re-sent batch", "foundation", _resent, "duplicate"),
    Case(
        "malformed JSON",
        "foundation",
        lambda d: write(d / "batch.json", '[{"id": 1, '),
        "quarantined:corrupt_file",
    ),
    Case(
        "JSON that is not records",
        "foundation",
        lambda d: write(d / "batch.json", "42"),
        "quarantined:corrupt_file",
    ),
    Case(
        "unknown file type",
        "foundation",
        lambda d: write(d / "batch.xml", "<rows/>"),
        "quarantined:corrupt_file",
    ),
    Case("missing file", "foundation", lambda d: [d / "nowhere.csv"], "error:no such file"),
    # what the hostile test of issue 14 found ----------------------------------------------------
    Case(
        "last row cut mid-value (torn)",
        "issue 14",
        text_file(lambda t: t.rstrip("\n")[:-3]),
        "quarantined:torn_row",
    ),
    Case(
        "value beyond float32 (1e308)",
        "issue 14",
        edited(lambda df: _set(df, "income", [4], 1e308)),
        "quarantined:unrepresentable_values",
    ),
    Case("symlink in a landing folder", "issue 14", _symlink, "batches:1"),
    Case(
        "class unseen in a binary target",
        "issue 14",
        edited(lambda df: _set(df, "y", [4], 2)),
        "quarantined:unseen_classes",
    ),
    Case("mixed time zones (60 hourly rows)", "issue 14", _mixed_time_zones, "batches:4"),
    Case(
        "duplicate column names",
        "issue 14",
        text_file(lambda t: t.replace("income,age", "income,income", 1)),
        "quarantined:duplicate_columns",
    ),
    Case(
        "gzip named .csv",
        "issue 14",
        text_file(lambda t: gzip.compress(t.encode())),
        "quarantined:wrong_format",
    ),
    Case(
        "Excel workbook named .csv",
        "issue 14",
        text_file(lambda t: b"PK\x03\x04" + t.encode()),
        "quarantined:wrong_format",
    ),
    Case(
        "UTF-16 text", "issue 14", text_file(lambda t: t.encode("utf-16")), "quarantined:encoding"
    ),
    Case("directory named x.csv", "issue 14", _dir_named_csv, "error:folder with no data file"),
    Case(
        "one-class target, whole file",
        "issue 14",
        edited(lambda df: df.assign(y=0)),
        "accepted:single_class_labels",
    ),
    Case(
        "NUL bytes",
        "issue 14",
        text_file(lambda t: t.replace("east", "ea\0st")),
        "quarantined:nul_bytes",
    ),
    Case("100,000-character value", "issue 14", edited(_huge_value), "accepted:unseen_categories"),
    # ordinary files that must stay accepted -------------------------------------------------------
    Case(
        "UTF-8 with a byte-order mark (Excel)",
        "control",
        text_file(lambda t: "\ufeff" + t),
        "accepted",
    ),
    Case("CRLF line ends", "control", text_file(lambda t: t.replace("\n", "\r\n")), "accepted"),
    Case("Parquet", "control", frame_file(day(1), "batch.parquet"), "accepted"),
]


# running one -----------------------------------------------------------------------------------
@dataclass
class Observed:
    summary: str  # in the same words as Case.expected
    printed: str  # the message a user reads (first finding, or the error)
    outcomes: list[dict[str, Any]]
    exit_code: int


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project created by `mlops init --config`, its contract frozen by day 0."""
    root = tmp_path_factory.mktemp("catalogue")
    cfg = root / "mlops.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    runner = CliRunner()
    res = runner.invoke(app, ["init", "--config", str(cfg)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    first = root / "day0.csv"
    day(0).to_csv(first, index=False)
    res = runner.invoke(
        app, ["ingest", str(first), "--config", str(cfg), "--json"], catch_exceptions=False
    )
    assert res.exit_code == 0 and json.loads(res.stdout)["accepted"] == 1, res.output
    first.unlink()
    return root


def observe(project: Path, inputs: list[Path]) -> Observed:
    res = CliRunner().invoke(
        app, ["ingest", *map(str, inputs), "--config", str(project / "mlops.yaml"), "--json"]
    )
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # an unhandled exception is a failure of its own
    if res.exit_code != 0:
        line = " ".join(res.stderr.split())
        return Observed(f"error:{line}", line, [], res.exit_code)
    outcomes = json.loads(res.stdout)["batches"]
    printed = next(
        (o["findings"][0]["message"] for o in outcomes if o.get("findings")),
        next((o.get("reason") or "" for o in outcomes), ""),
    )

    def one(o: dict[str, Any]) -> str:
        if o["status"] == "quarantined":
            return "quarantined:" + ",".join(
                f["rule"] for f in o["findings"] if f["severity"] == "fatal"
            )
        rules = [f["rule"] for f in o.get("findings", [])]
        return o["status"] + (f":{','.join(rules)}" if rules and o["status"] == "accepted" else "")

    if len(outcomes) > 1 and all(o["status"] == "accepted" for o in outcomes):
        summary = f"batches:{len(outcomes)}"
    else:
        summary = " + ".join(sorted(map(one, outcomes))) or "nothing"
    return Observed(summary, printed, outcomes, res.exit_code)


def matches(expected: str, observed: Observed) -> bool:
    kind, _, what = expected.partition(":")
    seen_kind, _, seen = observed.summary.partition(":")
    if kind == "error":
        return observed.exit_code == 1 and what in observed.printed
    if kind == "batches":
        one = what == "1" and seen_kind == "accepted"
        return (seen_kind == "batches" and seen == what) or one
    if kind in ("quarantined", "accepted"):
        return seen_kind == kind and (what in seen.split(",") if what else not seen)
    return observed.summary == expected


ROWS_SEEN: list[tuple[Case, Observed, bool]] = []


@pytest.fixture(scope="module", autouse=True)
def table(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the module: the whole table, on the terminal and as Markdown."""
    yield
    if not ROWS_SEEN:
        return
    lines = ["| input | from | expected | observed | ok | printed |", "|---|---|---|---|---|---|"]
    for case, obs, ok in ROWS_SEEN:
        printed = obs.printed.replace("|", "\\|").replace("\n", " ")
        printed = printed if len(printed) <= 110 else printed[:110] + "…"
        lines.append(
            f"| {case.name} | {case.origin} | `{case.expected}` | `{obs.summary[:60]}` "
            f"| {'yes' if ok else '**NO**'} | {printed} |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bad_inputs.md").write_text("\n".join(lines) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        good = sum(ok for _c, _o, ok in ROWS_SEEN)
        reporter.write_line(
            f"\nbad inputs: {good} of {len(ROWS_SEEN)} as expected "
            f"(table in {OUT / 'bad_inputs.md'})"
        )
        for case, obs, ok in ROWS_SEEN:
            reporter.write_line(
                f"  {'ok ' if ok else 'BAD'} {case.name:<40} {case.expected:<36} {obs.summary[:50]}"
            )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, template: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(template, project)
    inputs = case.make(tmp_path)

    obs = observe(project, inputs)
    obs.printed = obs.printed.replace(str(tmp_path), "TMP")
    obs.summary = obs.summary.replace(str(tmp_path), "TMP")

    ok = matches(case.expected, obs)
    ROWS_SEEN.append((case, obs, ok))
    assert ok, f"{case.name}: expected {case.expected}, observed {obs.summary}: {obs.printed}"
    # whatever happened was said in a short message, quoting no more than an excerpt
    assert len(obs.printed) <= 400, obs.printed[:500]
    for o in obs.outcomes:
        assert o["status"] in ("accepted", "quarantined", "duplicate"), o
        assert "SECRET-LINE" not in json.dumps(o)
        if o["status"] == "quarantined":  # kept whole beside its reason
            folder = project / ".mlops" / "quarantine" / o["id"]
            assert (folder / "reason.txt").is_file(), o
            assert any(folder.glob("data.*")), o
