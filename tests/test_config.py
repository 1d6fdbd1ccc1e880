"""Loading ``mlops.yaml``: defaults, errors that name the key and the file, environment
overrides, paths relative to the file, and the checks each section makes."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_core.config import RULES, Settings, load_config, parse_config
from mlops_core.errors import ConfigError

GOOD = """\
project: loans
task: binary
data:
  source:
    kind: file
    path: data/applications.csv
  id_column: application_id
  time_column: applied_at
  target: defaulted
  features:
    numeric: [income, age]
    categorical: [region]
    boolean: [has_cosigner]
  batch:
    period: 7D
validation:
  rules:
    unseen_categories: fatal
    constant_feature: off
storage:
  workspace: state
"""


def _write(folder: Path, text: str, name: str = "mlops.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=environ or {})
    return str(err.value)


def test_loads_a_full_file(tmp_path: Path) -> None:
    s = load_config(_write(tmp_path, GOOD), environ={})
    assert isinstance(s, Settings)
    assert s.project == "loans" and s.task == "binary"
    d = s.data
    assert d.source is not None and d.source.kind == "file"
    assert (d.id_column, d.time_column, d.target) == ("application_id", "applied_at", "defaulted")
    assert d.features.numeric == ["income", "age"]
    assert d.features.kind_of("region") == "categorical"
    assert d.features.kind_of("has_cosigner") == "boolean"
    assert d.features.kind_of("defaulted") is None
    assert d.columns() == [
        "application_id",
        "applied_at",
        "income",
        "age",
        "region",
        "has_cosigner",
        "defaulted",
    ]
    assert d.batch.period == "7D" and d.batch.size is None
    assert s.validation.severity("unseen_categories") == "fatal"
    assert s.validation.severity("constant_feature") == "off"  # a bare YAML `off`
    assert s.validation.severity("duplicate_ids") == RULES["duplicate_ids"]
    assert s.config_path == (tmp_path / "mlops.yaml").resolve()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_defaults_for_an_empty_file(text: str, tmp_path: Path) -> None:
    s = load_config(_write(tmp_path, text), environ={})
    assert s.project == "project" and s.task == "binary"
    assert s.data.source is None and s.data.target is None
    assert s.data.features.all() == [] and s.data.columns() == []
    assert s.data.batch.period is None and s.data.batch.size is None
    assert s.data.limits.chunk_rows > 0 and s.data.limits.max_columns > 0
    assert s.validation.rules == {}
    assert all(s.validation.severity(r) == sev for r, sev in RULES.items())
    assert s.storage.db_url is None and s.storage.mlflow_uri is None
    assert s.workspace == (tmp_path / ".mlops").resolve()
    assert s.db_url == f"sqlite:///{s.workspace / 'metadata.db'}"
    assert s.promotion.mode == "manual"


def test_rule_severities_cover_every_rule() -> None:
    assert set(RULES.values()) <= {"fatal", "warning"}
    assert len(RULES) == len(set(RULES))


# errors name the dotted key and the file -----------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("projekt: x\n", "projekt"),
        ("data:\n  target: y\n  tagret: y\n", "data.tagret"),
        (
            "data:\n  source:\n    kind: file\n    path: a.csv\n    delimiter: ';'\n",
            "data.source.delimiter",
        ),
        ("storage:\n  workspace: ws\n  db: sqlite://\n", "storage.db"),
        ("validation:\n  null_rate_increse: 0.2\n", "validation.null_rate_increse"),
    ],
)
def test_unknown_key_names_the_key_and_the_file(text: str, key: str, tmp_path: Path) -> None:
    path = _write(tmp_path, text)
    msg = _error(path)
    assert f"{key}: unknown key" in msg
    assert str(path.resolve()) in msg


@pytest.mark.parametrize(
    ("text", "key", "shown"),
    [
        ("task: classification\n", "task", "classification"),
        ("data:\n  limits:\n    max_columns: lots\n", "data.limits.max_columns", "lots"),
        ("data:\n  limits:\n    chunk_rows: 0\n", "data.limits.chunk_rows", "0"),
        ("validation:\n  null_rate_increase: 2\n", "validation.null_rate_increase", "2"),
        (
            "validation:\n  rules:\n    duplicate_ids: loud\n",
            "validation.rules.duplicate_ids",
            "loud",
        ),
        ("promotion:\n  mode: sometimes\n", "promotion.mode", "sometimes"),
        ("project: 'has spaces'\n", "project", "has spaces"),
        ("data:\n  features:\n    numeric: income\n", "data.features.numeric", "income"),
        (
            "data:\n  source:\n    kind: file\n    path: a.csv\n    csv:\n      delimiter: ';;'\n",
            "data.source.csv.delimiter",
            ";;",
        ),
    ],
)
def test_wrong_type_names_the_key_and_the_file(
    text: str, key: str, shown: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, text)
    msg = _error(path)
    assert f"  {key}: " in msg
    assert shown in msg
    assert str(path.resolve()) in msg


def test_every_error_is_listed_at_once(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "task: sometimes\nstorage:\n  nope: 1\npromotion:\n  mode: x\n"))
    assert "task:" in msg and "storage.nope: unknown key" in msg and "promotion.mode:" in msg


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_config(_write(tmp_path, "projekt: x\n"), environ={})


# environment overrides -----------------------------------------------------------------------
def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "  db_url: sqlite:///file.db\n  mlflow_uri: http://file:5000\n")
    env = {
        "MLOPS_STORAGE__DB_URL": "postgresql+psycopg://u:p@db:5432/mlops",
        "MLOPS_STORAGE__MLFLOW_URI": "http://mlflow:5000",
    }
    s = load_config(path, environ=env)
    assert s.storage.db_url == "postgresql+psycopg://u:p@db:5432/mlops"
    assert s.db_url == "postgresql+psycopg://u:p@db:5432/mlops"
    assert s.storage.mlflow_uri == "http://mlflow:5000"
    plain = load_config(path, environ={})
    assert plain.storage.db_url == "sqlite:///file.db"
    assert plain.storage.mlflow_uri == "http://file:5000"


def test_environment_reaches_any_key_and_is_typed(tmp_path: Path) -> None:
    env = {
        "MLOPS_PROJECT": "other",
        "MLOPS_TASK": "regression",
        "MLOPS_DATA__LIMITS__MAX_COLUMNS": "12",
        "MLOPS_VALIDATION__NULL_RATE_INCREASE": "0.05",
        "MLOPS_VALIDATION__RULES__EXTRA_COLUMNS": "fatal",
        "MLOPS_DATA__FEATURES__NUMERIC": "[income, age, debt]",
        "MLOPS_STORAGE__WORKSPACE": str(tmp_path / "elsewhere"),
    }
    s = load_config(_write(tmp_path, GOOD), environ=env)
    assert (s.project, s.task) == ("other", "regression")
    assert s.data.limits.max_columns == 12
    assert s.validation.null_rate_increase == 0.05
    assert s.validation.severity("extra_columns") == "fatal"
    assert s.validation.severity("unseen_categories") == "fatal"  # the file's rules stay
    assert s.data.features.numeric == ["income", "age", "debt"]
    assert s.data.features.categorical == ["region"]  # siblings from the file stay
    assert s.workspace == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    "secret", ["p#ss word", "pa ss: word", "%weird", "*star", "@at", "[not a list", "0123", "12345"]
)
def test_environment_keeps_secrets_as_written(secret: str, tmp_path: Path) -> None:
    env = {
        "MLOPS_STORAGE__DB_URL": f"postgresql://u:{secret}@h/db" if secret[0] != "0" else secret,
        "MLOPS_DATA__SOURCE__HEADERS__AUTHORIZATION": secret,
    }
    s = load_config(_write(tmp_path, GOOD), environ=env)
    assert s.storage.db_url == env["MLOPS_STORAGE__DB_URL"]
    assert s.data.source is not None
    assert s.data.source.headers == {"authorization": secret}


@pytest.mark.parametrize("value", ["", "null", "~"])
def test_environment_can_unset_a_key(value: str, tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "  db_url: sqlite:///file.db\n")
    s = load_config(path, environ={"MLOPS_STORAGE__DB_URL": value})
    assert s.storage.db_url is None


def test_unrelated_variables_are_ignored(tmp_path: Path) -> None:
    env = {
        "MLOPS_CONFIG": "other.yaml",
        "MLOPS_BENCH_DATA": "[",
        "HOME": "/root",
        "XMLOPS_STORAGE__DB_URL": "x",
        "mlops_storage__db_url": "x",
    }
    s = load_config(_write(tmp_path, GOOD), environ=env)
    assert s.storage.db_url is None


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("MLOPS_DATA__LIMITS__MAX_COLUMNS", "lots", "data.limits.max_columns"),
        ("MLOPS_TASK", "sometimes", "task"),
        ("MLOPS_STORAGE__NOPE", "1", "storage.nope"),
        ("MLOPS_PROMOTION__MODE", "eventually", "promotion.mode"),
    ],
)
def test_invalid_environment_value_names_the_variable(
    name: str, value: str, key: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, GOOD)
    msg = _error(path, {name: value})
    assert f"{key} (from ${name})" in msg
    assert str(path.resolve()) in msg


def test_environment_does_not_change_the_callers_mapping() -> None:
    raw: dict[str, Any] = {"storage": {"workspace": "ws"}}
    s = parse_config(raw, environ={"MLOPS_STORAGE__DB_URL": "sqlite:///x.db"})
    assert s.storage.db_url == "sqlite:///x.db"
    assert raw == {"storage": {"workspace": "ws"}}


def test_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_STORAGE__MLFLOW_URI", "http://from-env:5000")
    assert load_config(_write(tmp_path, GOOD)).storage.mlflow_uri == "http://from-env:5000"
    assert load_config(_write(tmp_path, GOOD), environ={}).storage.mlflow_uri is None


# paths are relative to the file ----------------------------------------------------------------
def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    path = _write(project, GOOD)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_config(path, environ={})
    assert s.base_dir == project.resolve()
    assert s.workspace == (project / "state").resolve()
    assert s.db_url == f"sqlite:///{(project / 'state' / 'metadata.db').resolve()}"
    assert s.data.source is not None and s.data.source.path is not None
    assert s.resolve(s.data.source.path) == (project / "data" / "applications.csv").resolve()
    assert s.resolve("/abs/file.csv") == Path("/abs/file.csv")
    assert s.resolve("~/x.csv") == Path("~/x.csv").expanduser()


def test_relative_config_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "p", GOOD)
    monkeypatch.chdir(tmp_path)
    s = load_config("p/mlops.yaml", environ={})
    assert s.config_path == (tmp_path / "p" / "mlops.yaml").resolve()
    assert s.workspace == (tmp_path / "p" / "state").resolve()


def test_without_a_file_paths_are_relative_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = parse_config({"storage": {"workspace": "ws"}}, environ={})
    assert s.config_path is None
    assert s.workspace == (tmp_path / "ws").resolve()


# source kinds, batch, roles ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "needs"),
    [
        ({"kind": "file"}, ["path"]),
        ({"kind": "folder"}, ["path"]),
        ({"kind": "sql", "url": "sqlite:///x.db", "watermark": "updated_at"}, ["query"]),
        ({"kind": "sql", "url": "sqlite:///x.db"}, ["query", "watermark"]),
        ({"kind": "sql"}, ["url", "query", "watermark"]),
        ({"kind": "http"}, ["url"]),
        ({"kind": "http", "url": ""}, ["url"]),
    ],
)
def test_source_kinds_need_their_keys(
    source: dict[str, str], needs: list[str], tmp_path: Path
) -> None:
    path = _write(tmp_path, yaml.safe_dump({"data": {"source": source}}))
    msg = _error(path)
    assert "data.source" in msg
    assert f"source kind '{source['kind']}' needs {', '.join(needs)}" in msg


@pytest.mark.parametrize(
    "source",
    [
        {"kind": "file", "path": "a.csv"},
        {"kind": "folder", "path": "landing", "pattern": "*.parquet"},
        {"kind": "sql", "url": "sqlite:///x.db", "query": "SELECT * FROM t", "watermark": "ts"},
        {"kind": "http", "url": "https://feed.example/records", "headers": {"X-Key": "k"}},
    ],
)
def test_source_kinds_with_their_keys_load(source: dict[str, Any], tmp_path: Path) -> None:
    s = load_config(_write(tmp_path, yaml.safe_dump({"data": {"source": source}})), environ={})
    assert s.data.source is not None and s.data.source.kind == source["kind"]


def test_unknown_source_kind(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "data:\n  source:\n    kind: ftp\n    url: ftp://x\n"))
    assert "data.source.kind" in msg and "ftp" in msg


@pytest.mark.parametrize("period", ["1D", "7D", "6h", "14D", "W", "MS", "QS", "YS"])
def test_good_batch_periods(period: str, tmp_path: Path) -> None:
    s = load_config(_write(tmp_path, f"data:\n  batch:\n    period: '{period}'\n"), environ={})
    assert s.data.batch.period == period


@pytest.mark.parametrize("period", ["fortnight", "2W", "3MS", "7X", "0.5.D"])
def test_bad_batch_period_is_an_error(period: str, tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, f"data:\n  batch:\n    period: '{period}'\n"))
    assert "data.batch" in msg and period in msg


def test_batch_period_and_size_together_is_an_error(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "data:\n  batch:\n    period: 7D\n    size: 1000\n"))
    assert "data.batch" in msg and "not both" in msg


def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "data:\n  batch:\n    size: 0\n"))
    assert "data.batch.size" in msg


@pytest.mark.parametrize(
    "data",
    [
        {"id_column": "a", "target": "a"},
        {"time_column": "ts", "features": {"numeric": ["ts"]}},
        {"target": "y", "features": {"categorical": ["y"]}},
        {"features": {"numeric": ["x"], "boolean": ["x"]}},
        {"features": {"numeric": ["x", "x"]}},
    ],
)
def test_a_column_has_one_role(data: dict[str, Any], tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, yaml.safe_dump({"data": data})))
    assert "data:" in msg and "two roles" in msg


@pytest.mark.parametrize("value", ["soon", "1 fortnight"])
def test_future_tolerance_must_be_a_duration(value: str, tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, f"validation:\n  future_tolerance: '{value}'\n"))
    assert "validation.future_tolerance" in msg and value in msg


def test_unknown_rule_is_an_error(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path, "validation:\n  rules:\n    no_such_rule: warning\n"))
    assert "validation.rules" in msg and "no_such_rule" in msg and "duplicate_ids" in msg


# the file itself -------------------------------------------------------------------------------
def test_missing_file_is_an_error_with_a_hint(tmp_path: Path) -> None:
    msg = _error(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in msg
    assert "mlops init" in msg


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    assert "mlops init" in _error(tmp_path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str, tmp_path: Path) -> None:
    path = _write(tmp_path, text)
    msg = _error(path)
    assert "mapping" in msg and str(path.resolve()) in msg


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  target: [unclosed\n")
    msg = _error(path)
    assert "not valid YAML" in msg and str(path.resolve()) in msg


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mlops.yaml"
    path.write_bytes("project: caf\u00e9\n".encode("latin-1"))
    assert "not valid YAML" in _error(path)
