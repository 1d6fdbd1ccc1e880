"""Training without MLflow: input checks, leak detection (found where planted, silent on honest
data), every model kind for every task on seeded synthetic frames, saved artifacts read back by
the packaged-model class, the time-ordered split, the seeded search, and the training window read
from an ingested workspace."""

from __future__ import annotations

import functools
import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlops_core.train.fit as training
from mlops_core.config import Settings, parse_config
from mlops_core.data.ingest import ingest
from mlops_core.errors import MlopsError
from mlops_core.store import MetadataStore
from mlops_core.train.evaluation import HIGHER_IS_BETTER, PRIMARY, compute_metrics
from mlops_core.train.fit import (
    TrainedModel,
    TrainingInputError,
    check_training_input,
    detect_leaks,
    feature_spec,
    fit_model,
    load_training_data,
    search,
    time_split,
    to_plain,
)
from mlops_core.train.pyfunc.tabular_model import TabularModel, prepare_features

TASKS = ("binary", "multiclass", "regression")
KINDS = ("xgboost", "linear", "forest")
FEATURES = {"numeric": ["x1", "x2"], "categorical": ["color"], "boolean": ["flag"]}
MULTI_CLASSES = ["high", "low", "mid"]


def _settings(task: str, features: dict[str, list[str]] | None = None, **raw: Any) -> Settings:
    data = {"target": "y", "features": FEATURES if features is None else features}
    return parse_config({"task": task, "data": data, **raw}, environ={})


def _frame(task: str, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """``x1`` drives the label, ``color`` a little; ``x2`` (with missing values) and ``flag`` are
    noise. Categories are pandas categoricals, as the batch store gives them back."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    x2[rng.uniform(size=n) < 0.1] = np.nan
    color = rng.choice(["red", "green", "blue"], n)
    signal = 2.0 * x1 + 0.5 * (color == "red")
    noisy = signal + rng.logistic(scale=0.5, size=n)
    if task == "binary":
        y: Any = (noisy > 0).astype(np.int64)
    elif task == "multiclass":
        y = pd.Categorical(np.select([noisy < -1.0, noisy > 1.0], ["low", "high"], "mid"))
    else:
        y = 3.0 * x1 + 0.8 * (color == "red") + rng.normal(scale=1.0, size=n)
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "color": pd.Categorical(color),
            "flag": rng.uniform(size=n) < 0.3,
            "y": y,
        }
    )


def _classes(task: str, y: pd.Series) -> list[Any] | None:
    return None if task == "regression" else sorted(pd.unique(y).tolist())


def _spec(
    task: str, df: pd.DataFrame, kind: str = "xgboost", features: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return feature_spec(_settings(task, features), df, kind, _classes(task, df["y"]))


@functools.cache
def _fitted(kind: str, task: str) -> tuple[TrainedModel, pd.DataFrame, pd.DataFrame]:
    """One model per kind and task, fitted once per session: (model, training rows, hold-out)."""
    df = _frame(task)
    spec = _spec(task, df, kind)
    X, y = df[spec["feature_order"]], df["y"]
    tr, va, ho = time_split(len(df), 0.2, 0.2)
    model = fit_model(kind, task, spec, {}, X.iloc[tr], y.iloc[tr], X.iloc[va], y.iloc[va])
    return model, df.iloc[tr], df.iloc[ho]


# input checks ------------------------------------------------------------------------------
def _good(n: int = 300) -> tuple[pd.DataFrame, pd.Series]:
    df = _frame("binary", n)
    return df[["x1", "x2", "color", "flag"]], df["y"]


def test_good_input_passes() -> None:
    X, y = _good()
    for task, target in (
        ("binary", y),
        ("multiclass", y.map({0: "a", 1: "b"})),
        ("regression", X["x1"] * 2),
    ):
        assert check_training_input(X, target, task, min_rows=200) is None


def _problem(X: pd.DataFrame, y: pd.Series, task: str, min_rows: int = 10) -> str:
    with pytest.raises(TrainingInputError) as err:
        check_training_input(X, y, task, min_rows)
    assert isinstance(err.value, ValueError) and isinstance(err.value, MlopsError)
    assert str(err.value).startswith("cannot train: ")
    return str(err.value)


def test_too_few_rows() -> None:
    X, y = _good(150)
    msg = _problem(X, y, "binary", min_rows=1000)
    assert "too few rows: 150 labelled rows, need at least 1,000 (model.min_rows)" in msg


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_single_class(task: str) -> None:
    X, _ = _good(50)
    msg = _problem(X, pd.Series(["yes"] * 50), task)
    assert "a single class in the target (['yes'])" in msg and "nothing to learn" in msg


@pytest.mark.parametrize("task", TASKS)
def test_target_with_missing_values(task: str) -> None:
    X, y = _good(50)
    y = y.astype(float)
    y.iloc[[3, 7, 11]] = np.nan
    msg = _problem(X, y, task)
    assert "the target has 3 missing value(s)" in msg


def test_regression_needs_a_numeric_target() -> None:
    X, _ = _good(50)
    msg = _problem(X, pd.Series(np.resize(["low", "high"], 50)), "regression")
    assert "task is regression but the target is not numeric" in msg


def test_regression_with_a_constant_target() -> None:
    X, _ = _good(50)
    msg = _problem(X, pd.Series(np.full(50, 3.5)), "regression")
    assert "the target is constant ([3.5])" in msg


def test_no_features() -> None:
    _, y = _good(50)
    assert "no features" in _problem(pd.DataFrame(index=y.index), y, "binary")


def test_every_problem_in_one_message() -> None:
    X, _ = _good(5)
    y = pd.Series([1.0, 1.0, np.nan, 1.0, np.nan])
    msg = _problem(X, y, "binary", min_rows=10)
    parts = msg.removeprefix("cannot train: ").split("; ")
    assert len(parts) == 3
    assert parts[0].startswith("too few rows: 5 labelled rows")
    assert parts[1] == "the target has 2 missing value(s)"
    assert parts[2].startswith("a single class in the target ([1.0])")


# leak detection ----------------------------------------------------------------------------
def _with_leak(task: str, how: str, n: int = 800, seed: int = 1) -> tuple[pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    df = _frame(task, n, seed)
    y = df["y"]
    if how == "copy":  # the target itself (its class code), plus a little noise
        codes = y.astype(float) if task == "regression" else pd.Categorical(y).codes.astype(float)
        df["leak"] = codes + rng.normal(scale=0.01, size=n)
        kinds = {**FEATURES, "numeric": [*FEATURES["numeric"], "leak"]}
    else:  # a text column that spells the label out
        df["leak"] = pd.Categorical("status_" + y.astype(str))
        kinds = {**FEATURES, "categorical": [*FEATURES["categorical"], "leak"]}
    return df, kinds


@pytest.mark.parametrize(
    ("task", "how"),
    [
        ("binary", "copy"),
        ("binary", "label"),
        ("multiclass", "copy"),
        ("multiclass", "label"),
        ("regression", "copy"),
    ],
)
def test_leaking_feature_is_found(task: str, how: str) -> None:
    df, kinds = _with_leak(task, how)
    spec = _spec(task, df, features=kinds)

    leaks = detect_leaks(df[spec["feature_order"]], df["y"], spec, task)

    assert [c for c, _ in leaks] == ["leak"]
    assert leaks[0][1] >= 0.99


def test_leak_threshold_is_configurable() -> None:
    df = _frame("regression", 800)
    spec = _spec("regression", df)
    X = df[spec["feature_order"]]
    # x1 explains most of the target honestly: a leak only under an absurdly low threshold
    assert detect_leaks(X, df["y"], spec, "regression") == []
    assert [c for c, _ in detect_leaks(X, df["y"], spec, "regression", threshold=0.6)] == ["x1"]


def _honest(task: str, n: int = 3000, seed: int = 2) -> tuple[pd.DataFrame, dict]:
    """A realistic noisy frame: one strong honest feature, weak ones, a running id, a trend,
    a high-cardinality code, missing values, booleans."""
    rng = np.random.default_rng(seed)
    df = _frame(task, n, seed)
    df["row_number"] = np.arange(n, dtype=float)
    df["trend"] = np.linspace(0, 5, n) + rng.normal(scale=0.5, size=n)
    df["zip"] = pd.Categorical(rng.integers(10_000, 10_500, n).astype(str))
    df["income"] = np.where(
        rng.uniform(size=n) < 0.2,
        np.nan,
        rng.lognormal(10, 0.5, n) * (1 + 0.1 * df["x1"].to_numpy()),
    )
    kinds = {
        "numeric": ["x1", "x2", "row_number", "trend", "income"],
        "categorical": ["color", "zip"],
        "boolean": ["flag"],
    }
    return df, kinds


@pytest.mark.parametrize("task", TASKS)
def test_honest_features_are_not_leaks(task: str) -> None:
    df, kinds = _honest(task)
    spec = _spec(task, df, features=kinds)
    assert detect_leaks(df[spec["feature_order"]], df["y"], spec, task) == []


def test_rare_positives_are_not_leaks() -> None:
    # fraud-like: 0.15% positives, none of them in the later rows. A score on one class says
    # nothing; it must not flag every feature.
    df, kinds = _honest("binary", 2000)
    y = pd.Series(np.zeros(2000, dtype=np.int64))
    y.iloc[[10, 500, 900]] = 1
    spec = feature_spec(_settings("binary", kinds), df, "xgboost", [0, 1])
    assert detect_leaks(df[spec["feature_order"]], y, spec, "binary") == []


def test_dominant_class_is_not_a_leak() -> None:
    # 99.7% of one class: plain accuracy of any guess is above the threshold
    df, kinds = _honest("multiclass", 2000)
    y = pd.Series(np.where(np.arange(2000) % 400 == 0, "warn", "ok"))
    y.iloc[7] = "fail"
    spec = feature_spec(_settings("multiclass", kinds), df, "xgboost", sorted(y.unique()))
    assert detect_leaks(df[spec["feature_order"]], y, spec, "multiclass") == []


def test_too_few_rows_to_judge_a_leak() -> None:
    df, kinds = _with_leak("binary", "label", n=40)
    spec = _spec("binary", df, features=kinds)
    assert detect_leaks(df[spec["feature_order"]], df["y"], spec, "binary") == []


def test_no_false_leak_on_car_loan(shared_data: Path) -> None:
    df = pd.read_parquet(shared_data / "car_loan.parquet").head(20_000)
    s = parse_config(
        {
            "task": "binary",
            "data": {"id_column": "id", "time_column": "timestamp", "target": "repaid"},
        },
        environ={},
    )
    spec = feature_spec(s, df, "xgboost", [0, 1])
    X = df[spec["feature_order"]]
    assert "id" not in spec["feature_order"] and len(spec["feature_order"]) == 7

    assert detect_leaks(X, df["repaid"], spec, "binary") == []

    X = X.assign(repaid_copy=df["repaid"].map({0: "no", 1: "yes"}))
    spec = feature_spec(s, X.assign(repaid=df["repaid"]), "xgboost", [0, 1])
    assert [c for c, _ in detect_leaks(X, df["repaid"], spec, "binary")] == ["repaid_copy"]


# feature spec and plain frames -------------------------------------------------------------
def test_feature_spec_declared_and_inferred() -> None:
    df = _frame("multiclass", 50)
    spec = _spec("multiclass", df, "forest")
    assert spec["feature_order"] == ["x1", "x2", "color", "flag"]
    assert spec["kinds"] == {
        "x1": "numeric",
        "x2": "numeric",
        "color": "categorical",
        "flag": "boolean",
    }
    assert spec["categories"] == {"color": ["blue", "green", "red"]}
    assert spec["classes"] == MULTI_CLASSES
    assert spec["kind"] == "forest" and spec["task"] == "multiclass"
    json.dumps(spec)

    inferred = feature_spec(_settings("binary", {}), _frame("binary", 50), "xgboost", [0, 1])
    assert inferred["kinds"] == spec["kinds"]
    assert inferred["classes"] == [0, 1] and all(type(c) is int for c in inferred["classes"])

    with pytest.raises(TrainingInputError, match=r"not in the training data: \['x1'\]"):
        feature_spec(_settings("binary"), df.drop(columns="x1"), "xgboost", [0, 1])


def test_to_plain_turns_categories_into_text() -> None:
    df = pd.DataFrame(
        {
            "c": pd.Categorical(["a", None, "b"]),
            "n": [1.0, 2.0, np.nan],
            "k": pd.Categorical([1, 2, 1]),
        }
    )

    out = to_plain(df)

    assert out["c"].dtype == object and out["c"].tolist() == ["a", None, "b"]
    assert out["k"].dtype == object and out["k"].tolist() == [1, 2, 1]
    pd.testing.assert_series_equal(out["n"], df["n"])
    assert isinstance(df["c"].dtype, pd.CategoricalDtype)  # the input is untouched
    plain = pd.DataFrame({"n": [1.0]})
    assert to_plain(plain) is plain


# models: every kind for every task ---------------------------------------------------------
MATRIX = [(k, t) for t in TASKS for k in KINDS]


@pytest.mark.parametrize(("kind", "task"), MATRIX)
def test_prediction_frame_shape(kind: str, task: str) -> None:
    model, _, ho = _fitted(kind, task)

    pred = model.predict_frame(ho)

    assert pred.index.equals(ho.index)
    if task == "regression":
        assert list(pred.columns) == ["prediction"]
        assert pred["prediction"].dtype == "float64" and pred["prediction"].notna().all()
        return
    classes = model.classes
    assert classes == ([0, 1] if task == "binary" else MULTI_CLASSES)
    assert list(pred.columns) == ["prediction", *(f"proba_{c}" for c in classes)]
    proba = pred[[f"proba_{c}" for c in classes]].to_numpy()
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(pred["prediction"]) <= set(classes)
    best = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    assert (pred["prediction"].to_numpy() == best).all()


@pytest.mark.parametrize(("kind", "task"), MATRIX)
def test_model_beats_a_trivial_baseline(kind: str, task: str) -> None:
    model, tr, ho = _fitted(kind, task)
    y = ho["y"]

    m = compute_metrics(task, y, model.predict_frame(ho), model.classes)

    if task == "binary":
        assert m["roc_auc"] > 0.8  # a constant scores 0.5
        prior = tr["y"].mean()
        assert m["log_loss"] < -(y * np.log(prior) + (1 - y) * np.log(1 - prior)).mean()
    elif task == "multiclass":
        majority = (y == tr["y"].mode()[0]).mean()
        assert m["accuracy"] > majority + 0.15
        assert m["f1_macro"] > 0.6
    else:
        assert m["rmse"] < 0.6 * float(np.sqrt(((y - tr["y"].mean()) ** 2).mean()))
        assert m["r2"] > 0.6


@pytest.mark.parametrize(("kind", "task"), MATRIX)
def test_awkward_input_at_predict_time(kind: str, task: str) -> None:
    model, _, _ = _fitted(kind, task)
    awkward = pd.DataFrame(
        {
            "x1": [np.nan, 0.5, None, 1.0, 2.0],
            "x2": [0.1, np.nan, 0.2, np.nan, 0.0],
            "color": ["purple", None, np.nan, "red", "RED"],  # unseen, missing, missing, known
            "flag": [True, None, False, "true", 0],
            "extra": ["ignored"] * 5,
        },
        index=[10, 11, 12, 13, 14],
    )

    pred = model.predict_frame(awkward)

    assert len(pred) == 5 and pred.index.tolist() == [10, 11, 12, 13, 14]
    assert pred.notna().all().all()
    if task != "regression":
        proba = pred.drop(columns="prediction").to_numpy()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    # a column the model needs and does not get counts as missing everywhere
    assert model.predict_frame(awkward.drop(columns="x2")).notna().all().all()


@pytest.mark.parametrize(("kind", "task"), MATRIX)
def test_feature_importances(kind: str, task: str) -> None:
    model, _, _ = _fitted(kind, task)

    imp = model.feature_importances()

    assert list(imp) == model.spec["feature_order"]
    assert sum(imp.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in imp.values())
    assert max(imp, key=imp.get) == "x1"
    assert imp["x1"] > 0.4


def test_missing_value_indicator_counts_for_its_column() -> None:
    # whether `x2` is recorded is what predicts the label: the linear model's missing-value
    # indicator carries the signal, and the importance belongs to x2
    df = _frame("binary", 400, seed=3)
    df["x2"] = np.where(df["y"] == 1, np.nan, df["x2"].fillna(0.0))
    spec = _spec("binary", df, "linear")
    X = df[spec["feature_order"]]
    model = fit_model(
        "linear",
        "binary",
        spec,
        {},
        X.iloc[:300],
        df["y"].iloc[:300],
        X.iloc[300:],
        df["y"].iloc[300:],
    )
    imp = model.feature_importances()
    assert max(imp, key=imp.get) == "x2"


def test_classifier_with_boolean_labels() -> None:
    df = _frame("binary", 300)
    df["y"] = df["y"].astype(bool)
    spec = _spec("binary", df, "xgboost")
    X, y = df[spec["feature_order"]], df["y"]
    model = fit_model(
        "xgboost",
        "binary",
        spec,
        {"n_estimators": 30},
        X.iloc[:200],
        y.iloc[:200],
        X.iloc[200:250],
        y.iloc[200:250],
    )
    pred = model.predict_frame(X.iloc[250:])
    assert list(pred.columns) == ["prediction", "proba_False", "proba_True"]
    assert compute_metrics("binary", y.iloc[250:], pred, model.classes)["roc_auc"] > 0.8


@pytest.mark.parametrize("kind", KINDS)
def test_class_only_in_the_latest_rows_is_a_clear_error(kind: str) -> None:
    df = _frame("multiclass", 300)
    df["y"] = df["y"].astype(object)
    df.loc[250:, "y"] = "new"
    spec = _spec("multiclass", df, kind)
    assert spec["classes"] == ["high", "low", "mid", "new"]
    X, y = df[spec["feature_order"]], df["y"]
    with pytest.raises(TrainingInputError, match=r"class\(es\) \['new'\] .* only in the latest"):
        fit_model(
            kind, "multiclass", spec, {}, X.iloc[:200], y.iloc[:200], X.iloc[200:], y.iloc[200:]
        )


def test_prepared_features_do_not_depend_on_the_column_type() -> None:
    spec = {
        "feature_order": ["n", "b", "c", "k"],
        "kinds": {"n": "numeric", "b": "boolean", "c": "categorical", "k": "categorical"},
        "categories": {"c": ["blue", "red"], "k": ["1", "2"]},
    }
    plain = pd.DataFrame(
        {
            "n": ["1.5", None, "x"],
            "b": ["yes", None, "False"],
            "c": ["red", None, "purple"],
            "k": pd.Series([1, 2, None], dtype=object, index=[7, 8, 9]),
        },
        index=[7, 8, 9],
    )
    typed = plain.assign(
        c=pd.Categorical(plain["c"]), k=pd.Categorical([1, 2, None], categories=[1, 2, 3])
    )

    for frame in (plain, typed):
        for for_xgboost in (True, False):
            out = prepare_features(frame, spec, for_xgboost=for_xgboost)
            assert list(out.columns) == ["n", "b", "c", "k"]
            assert out.index.tolist() == [7, 8, 9]
            np.testing.assert_array_equal(out["n"], [1.5, np.nan, np.nan])
            np.testing.assert_array_equal(out["b"], [1.0, np.nan, 0.0])
            if for_xgboost:
                assert out["c"].cat.categories.tolist() == ["blue", "red"]
                assert out["c"].tolist()[0] == "red" and out["c"].isna().tolist() == [
                    False,
                    True,
                    True,
                ]  # unseen → missing
                assert out["k"].cat.categories.tolist() == ["1", "2"]
                assert out["k"].tolist()[:2] == ["1", "2"] and pd.isna(out["k"].iloc[2])
            else:
                assert out["c"].tolist() == ["red", None, "purple"]
                assert out["k"].tolist() == ["1", "2", None]
    # a feature the input lacks is missing everywhere
    out = prepare_features(plain.drop(columns="c"), spec, for_xgboost=True)
    assert out["c"].isna().all()


# saved artifacts and the packaged-model class ----------------------------------------------
def _load_packaged(artifacts: dict[str, Path]) -> TabularModel:
    context = SimpleNamespace(artifacts={k: str(v) for k, v in artifacts.items()})
    packaged = TabularModel()
    packaged.load_context(context)
    return packaged


@pytest.mark.parametrize(("kind", "task"), MATRIX)
def test_saved_model_predicts_like_the_trained_one(kind: str, task: str, tmp_path: Path) -> None:
    model, _, ho = _fitted(kind, task)

    artifacts = model.save(tmp_path / "model")

    model_file = "model.ubj" if kind == "xgboost" else "model.skops"
    assert artifacts == {
        "spec": tmp_path / "model" / "spec.json",
        "model": tmp_path / "model" / model_file,
    }
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        ["spec.json", model_file]
    )
    assert json.loads(artifacts["spec"].read_text()) == model.spec
    packaged = _load_packaged(artifacts)
    # what a served model receives: plain values
    served = to_plain(ho.drop(columns="y"))
    pd.testing.assert_frame_equal(
        packaged.predict(None, served),
        model.predict_frame(ho),
        check_exact=False,
        rtol=1e-5,
        atol=1e-6,
    )
    # missing numbers, unseen and missing categories
    served.iloc[0, served.columns.get_loc("x1")] = np.nan
    served.iloc[1, served.columns.get_loc("color")] = "never-seen"
    served.iloc[2, served.columns.get_loc("color")] = None
    pd.testing.assert_frame_equal(
        packaged.predict(None, served),
        model.predict_frame(served),
        check_exact=False,
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("task", TASKS)
def test_xgboost_is_saved_natively_not_pickled(task: str, tmp_path: Path) -> None:
    import xgboost as xgb

    model, _, _ = _fitted("xgboost", task)

    path = model.save(tmp_path)["model"]

    raw = path.read_bytes()
    assert raw[:1] == b"{"  # UBJSON opens an object
    assert not raw.startswith(b"\x80")  # a pickle's protocol marker
    with pytest.raises(pickle.UnpicklingError):
        pickle.loads(raw)
    booster = xgb.Booster()
    booster.load_model(str(path))
    # early stopping kept only the rounds up to the best one
    assert model.best_iteration is not None
    assert booster.num_boosted_rounds() == model.best_iteration + 1
    assert model.best_iteration + 1 < model.estimator.get_booster().num_boosted_rounds()
    assert booster.feature_names == model.spec["feature_order"]


# time split --------------------------------------------------------------------------------
def test_time_split_example() -> None:
    tr, va, ho = time_split(100, 0.2, 0.2)
    assert (tr, va, ho) == (slice(0, 64), slice(64, 80), slice(80, 100))


@given(
    n=st.integers(10, 1_000_000), holdout=st.floats(0.01, 0.49), validation=st.floats(0.01, 0.49)
)
def test_time_split_properties(n: int, holdout: float, validation: float) -> None:
    tr, va, ho = time_split(n, holdout, validation)
    # in time order, no overlap, nothing lost: train, then validation, then the latest rows
    assert tr.start == 0 and tr.stop == va.start and va.stop == ho.start and ho.stop == n
    sizes = [s.stop - s.start for s in (tr, va, ho)]
    assert sum(sizes) == n and all(s >= 1 for s in sizes)
    assert abs(sizes[2] - n * holdout) <= 1
    assert abs(sizes[1] - (n - sizes[2]) * validation) <= 1


# search ------------------------------------------------------------------------------------
def _search_data(task: str, n: int = 400) -> tuple[dict[str, Any], pd.DataFrame, tuple]:
    df = _frame(task, n, seed=5)
    spec = _spec(task, df)
    return spec, df, time_split(n, 0.2, 0.2)


def _run_search(kind: str, task: str, trials: int, seed: int = 7, **kw: Any) -> Any:
    spec, df, (tr, va, _) = _search_data(task)
    X, y = df[spec["feature_order"]], df["y"]
    kw.setdefault("timeout_s", None)
    return search(
        kind,
        task,
        spec | {"kind": kind},
        X.iloc[tr],
        y.iloc[tr],
        X.iloc[va],
        y.iloc[va],
        trials=trials,
        seed=seed,
        **kw,
    )


def test_search_is_seeded() -> None:
    fixed = {"n_estimators": 20}
    a = _run_search("xgboost", "binary", 3, fixed=fixed)
    b = _run_search("xgboost", "binary", 3, fixed=fixed)
    c = _run_search("xgboost", "binary", 3, seed=8, fixed=fixed)

    assert a.best_params == b.best_params and a.best_score == b.best_score
    assert a.history == b.history
    assert [h["learning_rate"] for h in a.history[1:]] != [
        h["learning_rate"] for h in c.history[1:]
    ]


@pytest.mark.parametrize(
    ("kind", "task", "trials"),
    [
        ("linear", "binary", 4),
        ("linear", "multiclass", 3),
        ("linear", "regression", 5),
        ("xgboost", "regression", 3),
        ("forest", "multiclass", 2),
    ],
)
def test_search_budget_default_first_and_best(kind: str, task: str, trials: int) -> None:
    fixed = {"n_estimators": 20} if kind != "linear" else {}
    res = _run_search(kind, task, trials, fixed=fixed)

    assert res.trials == trials == len(res.history)
    assert [h["trial"] for h in res.history] == list(range(trials))
    first = {k: v for k, v in res.history[0].items() if k not in ("trial", "score")}
    assert first == training.default_params(kind, task) | fixed
    scores = [h["score"] for h in res.history]
    metric = PRIMARY[task]
    assert res.best_score == (max(scores) if HIGHER_IS_BETTER[metric] else min(scores))
    best = next(h for h in res.history if h["score"] == res.best_score)
    assert res.best_params == {k: v for k, v in best.items() if k not in ("trial", "score")}
    assert all(res.best_params[k] == v for k, v in fixed.items())
    assert res.model.params == res.best_params and res.seconds > 0


def test_search_stops_at_the_time_budget() -> None:
    res = _run_search("linear", "binary", 50, timeout_s=1e-6)
    assert res.trials == 1 and len(res.history) == 1
    assert res.best_params == training.default_params("linear", "binary")


def test_search_fits_on_training_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    spec, df, (tr, va, ho) = _search_data("regression")
    X, y = df[spec["feature_order"]], df["y"]
    seen: list[tuple[pd.Index, pd.Index, pd.Index]] = []
    real_fit = training.fit_model

    def spy(
        kind: str,
        task: str,
        spec: dict,
        params: dict,
        X_tr: pd.DataFrame,
        y_tr: pd.Series,
        X_val: pd.DataFrame,
        y_val: pd.Series,
        seed: int = 42,
        n_jobs: int | None = None,
    ) -> Any:
        seen.append((X_tr.index, y_tr.index, X_val.index))
        return real_fit(kind, task, spec, params, X_tr, y_tr, X_val, y_val, seed, n_jobs)

    monkeypatch.setattr(training, "fit_model", spy)
    res = search(
        "xgboost",
        "regression",
        spec,
        X.iloc[tr],
        y.iloc[tr],
        X.iloc[va],
        y.iloc[va],
        trials=3,
        timeout_s=None,
        seed=1,
        fixed={"n_estimators": 30},
    )

    assert len(seen) == res.trials == 3
    train_idx, val_idx = df.index[tr], df.index[va]
    for x_idx, y_idx, v_idx in seen:
        assert x_idx.equals(train_idx) and y_idx.equals(train_idx)
        assert v_idx.equals(val_idx)  # early stopping looks at the later rows only
        assert x_idx.max() < v_idx.min()
        assert not x_idx.isin(df.index[ho]).any() and not v_idx.isin(df.index[ho]).any()
    # the returned model is the best trial's, fitted on the training rows
    monkeypatch.undo()
    again = fit_model(
        "xgboost",
        "regression",
        spec,
        res.best_params,
        X.iloc[tr],
        y.iloc[tr],
        X.iloc[va],
        y.iloc[va],
        seed=1,
    )
    pd.testing.assert_frame_equal(
        again.predict_frame(X.iloc[ho]), res.model.predict_frame(X.iloc[ho])
    )


# the training window from an ingested workspace --------------------------------------------
DATA: dict[str, Any] = {
    "id_column": "id",
    "time_column": "ts",
    "target": "y",
    "features": {"numeric": ["x"], "categorical": ["color"]},
    "batch": {"period": "1D"},
}


def _ws_settings(tmp_path: Path, window: dict[str, Any] | None = None) -> Settings:
    return parse_config(
        {
            "data": DATA,
            "storage": {"workspace": str(tmp_path / "ws")},
            "model": {"window": window or {}},
        },
        environ={},
    )


def _day_rows(n: int, start: str, id0: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(id0, id0 + n, dtype=np.int64),
            "ts": pd.date_range(start, periods=n, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
            "x": rng.normal(size=n).round(6),
            "color": np.resize(np.array(["red", "blue"]), n),
            "y": np.r_[0, 1, rng.integers(0, 2, n - 2)].astype(float),
        }
    )


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Any]:
    """Four labelled days (24 rows each, ids 0-95; ids 30, 31 and 80 without a label) and a
    fifth, newest day without the target column. Files are given newest first on purpose."""
    labelled = _day_rows(96, "2025-01-01", 0)
    labelled.loc[[30, 31, 80], "y"] = np.nan
    labelled.iloc[48:].to_csv(tmp_path / "late.csv", index=False)
    labelled.iloc[:48].to_csv(tmp_path / "early.csv", index=False)
    _day_rows(24, "2025-01-05", 1000).drop(columns="y").to_csv(
        tmp_path / "unlabelled.csv", index=False
    )
    s = _ws_settings(tmp_path)
    report = ingest(s, [tmp_path / "unlabelled.csv", tmp_path / "late.csv", tmp_path / "early.csv"])
    out = list(report.outcomes)
    assert [o.status for o in out] == ["accepted"] * 5
    by_day = {o.start_time.day: o for o in out}
    assert by_day[5].has_labels is False
    meta = MetadataStore(s.db_url)
    sha = {r.id: r.content_sha256 for r in meta.list_batches()}
    meta.dispose()
    return {"tmp": tmp_path, "days": {d: o.id for d, o in by_day.items()}, "sha": sha}


def _load(ws: dict[str, Any], window: dict[str, Any] | None = None) -> Any:
    s = _ws_settings(ws["tmp"], window)
    meta = MetadataStore(s.db_url)
    try:
        return load_training_data(s, meta)
    finally:
        meta.dispose()


def test_window_everything(workspace: dict[str, Any]) -> None:
    data = _load(workspace)
    df = data.frame
    assert len(df) == 93 and data.dropped_unlabelled == 3
    assert df["y"].notna().all()
    assert df["id"].tolist() == [i for i in range(96) if i not in (30, 31, 80)]
    assert df["ts"].is_monotonic_increasing
    assert df.index.equals(pd.RangeIndex(93))
    days = workspace["days"]
    assert [b["id"] for b in data.lineage] == [days[1], days[2], days[3], days[4]]
    assert all(
        b["sha256"] == workspace["sha"][b["id"]] and len(b["sha256"]) == 64 for b in data.lineage
    )
    assert [b["rows"] for b in data.lineage] == [24] * 4
    assert data.lineage[0]["start"] == "2025-01-01T00:00:00"
    assert data.start == pd.Timestamp("2025-01-01 00:00") and data.end == pd.Timestamp(
        "2025-01-04 23:00"
    )


def test_window_by_rows_counts_labelled_rows(workspace: dict[str, Any]) -> None:
    # the newest day has 23 labels (id 80 has none): 24 labelled rows reach into day 3
    data = _load(workspace, {"rows": 24})
    assert len(data.frame) == 24
    assert data.frame["id"].tolist() == [71] + [i for i in range(72, 96) if i != 80]
    assert data.dropped_unlabelled == 1
    days = workspace["days"]
    assert [b["id"] for b in data.lineage] == [days[3], days[4]]
    assert data.start == pd.Timestamp("2025-01-03 23:00")

    data = _load(workspace, {"rows": 20})
    assert data.frame["id"].tolist() == [i for i in range(75, 96) if i != 80]
    assert [b["id"] for b in data.lineage] == [days[4]]

    data = _load(workspace, {"rows": 66})  # ids 30 and 31 inside: 69 rows, 3 unlabelled
    assert len(data.frame) == 66 and data.frame["id"].iloc[0] == 27
    assert data.dropped_unlabelled == 3
    assert len(data.lineage) == 3


def test_window_by_period(workspace: dict[str, Any]) -> None:
    data = _load(workspace, {"period": "36h"})
    df = data.frame
    # the latest labelled time is 2025-01-04 23:00: rows from 2025-01-03 11:00 on
    assert df["ts"].min() == pd.Timestamp("2025-01-03 11:00")
    assert df["id"].tolist() == [i for i in range(59, 96) if i != 80]
    assert data.dropped_unlabelled == 1
    days = workspace["days"]
    assert [b["id"] for b in data.lineage] == [days[3], days[4]]

    data = _load(workspace, {"period": "12h"})
    assert [b["id"] for b in data.lineage] == [days[4]]
    assert data.frame["id"].tolist() == [i for i in range(83, 96)]


def test_window_by_rows_and_period(workspace: dict[str, Any]) -> None:
    assert len(_load(workspace, {"rows": 10, "period": "90D"}).frame) == 10
    assert len(_load(workspace, {"rows": 500, "period": "12h"}).frame) == 13


def test_no_labelled_batches(tmp_path: Path) -> None:
    s = _ws_settings(tmp_path)
    _day_rows(24, "2025-01-05", 0).drop(columns="y").to_csv(tmp_path / "u.csv", index=False)
    ingest(s, [tmp_path / "u.csv"])
    with pytest.raises(TrainingInputError, match="no accepted batches with labels"):
        _load({"tmp": tmp_path})


def test_no_target_configured(tmp_path: Path) -> None:
    s = parse_config({"storage": {"workspace": str(tmp_path / "ws")}}, environ={})
    with pytest.raises(TrainingInputError, match=r"data\.target is not set"):
        load_training_data(s)


def test_window_feeds_training(workspace: dict[str, Any]) -> None:
    """The window, the spec and the checks fit together as the pipeline uses them."""
    s = _ws_settings(workspace["tmp"], {"rows": 60})
    meta = MetadataStore(s.db_url)
    try:
        data = load_training_data(s, meta)
    finally:
        meta.dispose()
    y = data.frame["y"]
    spec = feature_spec(s, data.frame, "linear", sorted(pd.unique(y).tolist()))
    assert spec["feature_order"] == ["x", "color"] and spec["classes"] == [0.0, 1.0]
    X = data.frame[spec["feature_order"]]
    check_training_input(X, y, "binary", min_rows=10)
    tr, va, ho = time_split(len(X), 0.2, 0.2)
    model = fit_model("linear", "binary", spec, {}, X.iloc[tr], y.iloc[tr], X.iloc[va], y.iloc[va])
    m = compute_metrics(
        "binary", y.iloc[ho], model.predict_frame(to_plain(X.iloc[ho])), spec["classes"]
    )
    assert math.isfinite(m["log_loss"])
