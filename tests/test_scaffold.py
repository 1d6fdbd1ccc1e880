"""`mlops init`: a commented ``mlops.yaml`` inferred from a sample, that ``load_config`` accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_core.config import load_config
from mlops_core.errors import ConfigError
from mlops_core.ops.scaffold import infer_schema, infer_task, init_project, read_sample

N = 200


def _frame(n: int = N, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "amount": rng.normal(100, 20, n).round(2),
            "count": rng.integers(0, 10, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "member": rng.uniform(size=n) < 0.5,
            "note": [f"free text number {i}" for i in range(n)],  # one value per row
            "empty": np.full(n, np.nan),
            "label": rng.integers(0, 2, n),
            "grade": rng.choice(["a", "b", "c", "d"], n),
            "price": rng.normal(10, 3, n),
        }
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return _frame()


@pytest.fixture(params=["csv", "parquet"])
def data_file(request: pytest.FixtureRequest, tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "data" / f"sales.{request.param}"
    path.parent.mkdir()
    if request.param == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def test_writes_a_config_that_loads(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "project" / "mlops.yaml"
    written, schema = init_project(data_file, "label", time="ts", id_col="id", out=out)
    assert written == out and out.is_file()
    s = load_config(out, environ={})
    assert s.project == "sales"
    assert s.task == "binary" == schema.task
    d = s.data
    assert (d.id_column, d.time_column, d.target) == ("id", "ts", "label")
    assert d.features.numeric == ["amount", "count", "price"]
    assert d.features.categorical == ["colour", "grade"]
    assert d.features.boolean == ["member"]
    assert d.batch.period == "W" and d.batch.size is None
    assert d.source is not None and d.source.kind == "file" and d.source.path is not None
    assert not d.source.path.is_absolute()  # the project folder can move with its data
    assert s.resolve(d.source.path) == data_file.resolve()
    assert s.workspace == (out.parent / ".mlops").resolve()


def test_the_file_is_commented(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlops.yaml"
    init_project(data_file, "label", time="ts", id_col="id", out=out)
    text = out.read_text(encoding="utf-8")
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) >= 5
    assert "MLOPS_STORAGE__DB_URL" in text  # says how secrets stay out of the file
    assert "binary | multiclass | regression" in text


def test_left_out_columns_carry_a_reason(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlops.yaml"
    _, schema = init_project(data_file, "label", time="ts", id_col="id", out=out)
    assert set(schema.left_out) == {"note", "empty"}
    assert f"{N:,} distinct values" in schema.left_out["note"]
    assert "missing" in schema.left_out["empty"]
    text = out.read_text(encoding="utf-8")
    for col, why in schema.left_out.items():
        [line] = [ln for ln in text.splitlines() if f"{col}: {why}" in ln]
        assert line.lstrip().startswith("#")
    features = load_config(out, environ={}).data.features.all()
    assert "note" not in features and "empty" not in features


def test_without_time_batches_by_size(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlops.yaml"
    _, schema = init_project(data_file, "label", out=out)
    s = load_config(out, environ={})
    assert s.data.time_column is None and s.data.id_column is None
    assert s.data.batch.size and s.data.batch.period is None
    # without roles, id and the time text are columns like the others
    assert "id" in s.data.features.numeric
    assert "ts" in schema.left_out or "ts" in s.data.features.categorical


@pytest.mark.parametrize(
    ("target", "task"),
    [
        ("label", "binary"),
        ("grade", "multiclass"),
        ("price", "regression"),
        ("count", "multiclass"),
        ("colour", "multiclass"),
        ("member", "binary"),
    ],
)
def test_infers_the_task_from_the_target(
    target: str, task: str, data_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mlops.yaml"
    _, schema = init_project(data_file, target, time="ts", id_col="id", out=out)
    assert schema.task == task
    s = load_config(out, environ={})
    assert s.task == task
    assert target not in s.data.features.all()


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        (["yes", "no", None, "yes"], "binary"),
        ([1.0, 2.0, 3.0, 1.0], "multiclass"),
        ([0.5, 1.25, 3.0, 7.5], "regression"),
        (list(range(30)), "regression"),
        ([f"c{i % 25}" for i in range(50)], "multiclass"),
    ],
)
def test_infer_task(values: list[object], task: str) -> None:
    assert infer_task(pd.Series(values)) == task


def test_infer_schema_kinds() -> None:
    df = pd.DataFrame(
        {
            "y": [0, 1] * 30,
            "n": np.arange(60, dtype=float),
            "i": np.arange(60),
            "b": [True, False] * 30,
            "c": ["x", "y", "z"] * 20,
            "t": pd.date_range("2024-01-01", periods=60),
            "free": [f"v{i}" for i in range(60)],
            "gone": [None] * 60,
        }
    )
    schema = infer_schema(df, "y", None, None)
    assert schema.numeric == ["n", "i"]
    assert schema.boolean == ["b"]
    assert schema.categorical == ["c"]
    assert set(schema.left_out) == {"t", "free", "gone"}
    assert "timestamp" in schema.left_out["t"]


def test_few_rows_keep_text_columns() -> None:
    # under 50 rows a text column with distinct values is not taken for free text
    df = pd.DataFrame({"y": [0, 1] * 5, "name": [f"n{i}" for i in range(10)]})
    assert infer_schema(df, "y", None, None).categorical == ["name"]


def test_refuses_to_overwrite_without_force(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlops.yaml"
    out.write_text("# mine\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--force"):
        init_project(data_file, "label", out=out)
    assert out.read_text(encoding="utf-8") == "# mine\n"
    init_project(data_file, "label", out=out, force=True)
    assert load_config(out, environ={}).data.target == "label"


@pytest.mark.parametrize("role", ["target", "time", "id_col"])
def test_column_not_in_the_data_lists_the_columns(
    role: str, data_file: Path, tmp_path: Path
) -> None:
    kwargs = {"target": "label", "time": "ts", "id_col": "id"} | {role: "nope"}
    out = tmp_path / "mlops.yaml"
    with pytest.raises(ConfigError) as err:
        init_project(data_file, out=out, **kwargs)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "nope" in msg
    for col in ("amount", "colour", "label", "ts"):
        assert col in msg
    assert not out.exists()


def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        init_project(tmp_path / "absent.csv", "y", out=tmp_path / "mlops.yaml")


def test_project_name_comes_from_the_file_or_the_caller(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "my sales (2024).csv"
    frame.to_csv(data, index=False)
    init_project(data, "label", out=tmp_path / "a.yaml")
    name = load_config(tmp_path / "a.yaml", environ={}).project
    assert name.startswith("my") and " " not in name and "(" not in name
    init_project(data, "label", out=tmp_path / "b.yaml", project="shop")
    s = load_config(tmp_path / "b.yaml", environ={})
    assert s.project == "shop"
    assert s.data.source is not None and s.data.source.path is not None
    assert s.resolve(s.data.source.path) == data.resolve()


@pytest.mark.parametrize("name", ["yes", "null", "on", "1", "a: b", "#tag", "[x]"])
def test_awkward_column_names_survive(name: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            name: rng.integers(0, 2, 60),
            "x": rng.normal(size=60),
            f"when {name}": pd.date_range("2024-01-01", periods=60).astype(str),
            f"key {name}": np.arange(60),
        }
    )
    data = tmp_path / "d.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "mlops.yaml"
    init_project(data, name, time=f"when {name}", id_col=f"key {name}", out=out)
    d = load_config(out, environ={}).data
    assert (d.target, d.time_column, d.id_column) == (name, f"when {name}", f"key {name}")
    assert d.features.numeric == ["x"]


def test_awkward_data_path_survives(frame: pd.DataFrame, tmp_path: Path) -> None:
    folder = tmp_path / "data #1: raw"
    folder.mkdir()
    data = folder / "sales.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "mlops.yaml"
    init_project(data, "label", out=out)
    s = load_config(out, environ={})
    assert s.data.source is not None and s.data.source.path is not None
    assert s.resolve(s.data.source.path) == data.resolve()


def test_read_sample_takes_the_first_rows(data_file: Path) -> None:
    sample = read_sample(data_file, rows=25)
    assert len(sample) == 25
    assert sample["id"].tolist() == list(range(25))


def test_read_sample_json(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    frame.to_json(path, orient="records", lines=True)
    sample = read_sample(path, rows=10)
    assert len(sample) == 10 and "colour" in sample.columns


def test_with_the_shared_car_loan_data(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mlops.yaml"
    data = shared_data / "car_loan.parquet"
    _, schema = init_project(data, "repaid", time="timestamp", id_col="id", out=out)
    s = load_config(out, environ={})
    assert s.task == "binary" and s.project == "car_loan"
    f = s.data.features
    assert set(f.numeric) == {"car_value", "debt_to_income_ratio", "loan_length", "driver_tenure"}
    assert set(f.categorical) == {"salary_range", "size_of_downpayment"}
    assert f.boolean == ["repaid_loan_on_prev_car"]
    assert schema.left_out == {}
    assert s.resolve(s.data.source.path) == data.resolve()  # type: ignore[union-attr]
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["data"]["target"] == "repaid"


def test_init_writes_the_default_policy_the_backtests_measured(tmp_path: Path) -> None:
    from mlops_core.config import RetrainingConfig

    data = tmp_path / "d.csv"
    pd.DataFrame({"a": range(100), "y": [0, 1] * 50}).to_csv(data, index=False)
    out, _ = init_project(data, "y", out=tmp_path / "mlops.yaml")
    assert load_config(out).retraining == RetrainingConfig()
