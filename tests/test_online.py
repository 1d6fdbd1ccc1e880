"""The online learner: continued boosting follows a changed concept, saves as an ordinary model
package, and reads labels as they arrive (text from /feedback, or the target's own values)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_core.config import Settings
from mlops_core.train.evaluation import compute_metrics
from mlops_core.train.fit import default_params, feature_spec, fit_model
from mlops_core.train.online import MAX_TREES_PER_UPDATE, OnlineBooster
from mlops_core.train.pyfunc.tabular_model import TabularModel

FEATURES = {"numeric": ["a", "b"], "categorical": ["c"]}


def _frame(n: int, seed: int, flipped: bool) -> pd.DataFrame:
    """y depends on a and c; after the change (``flipped``) the rule on ``a`` is reversed."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    c = rng.choice(["x", "y", "z"], size=n)
    score = (-a if flipped else a) + 0.8 * (c == "x") + 0.3 * rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": b, "c": c, "y": (score > 0.4).astype(int)})


@pytest.fixture
def first() -> OnlineBooster:
    s = Settings(data={"target": "y", "features": FEATURES})
    df = _frame(2000, 1, flipped=False)
    spec = feature_spec(s, df, "xgboost", [0, 1])
    params = default_params("xgboost", "binary") | {"n_estimators": 60}
    model = fit_model("xgboost", "binary", spec, params, df[["a", "b", "c"]], df["y"], None, None)
    return OnlineBooster.from_trained(model)


def _accuracy(model: OnlineBooster, df: pd.DataFrame) -> float:
    return compute_metrics("binary", df["y"], model.predict_frame(df[["a", "b", "c"]]), [0, 1])[
        "accuracy"
    ]


def test_continued_boosting_follows_a_changed_concept(first: OnlineBooster) -> None:
    after = _frame(6000, 2, flipped=True)
    test = _frame(2000, 3, flipped=True)
    before = _accuracy(first, test)
    trees = first.trees

    for start in range(0, len(after), 1000):  # labels arrive batch by batch
        batch = after.iloc[start : start + 1000]
        added = first.learn(batch[["a", "b", "c"]], batch["y"])
        assert 1 <= added <= MAX_TREES_PER_UPDATE

    assert first.trees > trees and first.updates == 6 and first.rows_learnt == 6000
    assert before < 0.6 < _accuracy(first, test) - 0.1  # it learnt the new rule


def test_labels_as_text_or_floats_name_the_same_classes(first: OnlineBooster) -> None:
    batch = _frame(300, 4, flipped=True)
    as_text = OnlineBooster(spec=first.spec, booster=first.booster.copy())
    as_float = OnlineBooster(spec=first.spec, booster=first.booster.copy())

    as_text.learn(batch[["a", "b", "c"]], batch["y"].astype(str))
    as_float.learn(batch[["a", "b", "c"]], batch["y"].astype(float))

    probe = batch[["a", "b", "c"]]
    np.testing.assert_allclose(
        as_text.predict_frame(probe)["proba_1"], as_float.predict_frame(probe)["proba_1"]
    )
    assert as_text.learn(probe, pd.Series(["maybe"] * len(probe))) == 0  # no usable label
    assert as_text.updates == 1


def test_a_snapshot_is_an_ordinary_model_package(first: OnlineBooster, tmp_path: Path) -> None:
    first.learn(*(lambda d: (d[["a", "b", "c"]], d["y"]))(_frame(500, 5, flipped=True)))
    artifacts = first.save(tmp_path / "artifacts")
    probe = _frame(50, 6, flipped=True)[["a", "b", "c"]]

    again = OnlineBooster.from_package(tmp_path)
    packaged = TabularModel()
    packaged.load_context(
        type("Ctx", (), {"artifacts": {k: str(v) for k, v in artifacts.items()}})()
    )

    spec = json.loads(artifacts["spec"].read_text())
    assert spec["kind"] == "xgboost" and spec["online"] == {
        "rows_learnt": 500,
        "updates": 1,
        "trees": first.trees,
    }
    assert (again.rows_learnt, again.updates) == (500, 1)
    pd.testing.assert_frame_equal(again.predict_frame(probe), first.predict_frame(probe))
    pd.testing.assert_frame_equal(packaged.predict(None, probe), first.predict_frame(probe))


def test_only_xgboost_models_continue(tmp_path: Path) -> None:
    s = Settings(data={"target": "y", "features": FEATURES})
    df = _frame(300, 7, flipped=False)
    spec = feature_spec(s, df, "linear", [0, 1])
    model = fit_model(
        "linear", "binary", spec, {"C": 1.0}, df[["a", "b", "c"]], df["y"], None, None
    )
    with pytest.raises(ValueError, match="continues an XGBoost model, not 'linear'"):
        OnlineBooster.from_trained(model)
