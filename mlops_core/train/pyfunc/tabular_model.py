"""The served form of every model this project trains, as an MLflow "model from code".

This file is copied into each logged model, so it is self-contained: it needs only numpy, pandas,
xgboost or scikit-learn. Artifacts: ``spec`` (JSON: task, features by kind, categories, classes)
and ``model`` (an XGBoost booster in its native UBJSON format, never a pickle; or a fitted
scikit-learn pipeline in skops' format, loaded without unpickling). ``predict`` returns a frame
with ``prediction`` and, for classification, one ``proba_<class>`` column per class.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

try:  # the file is also imported by training code; mlflow is there too
    import mlflow
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    mlflow = None  # type: ignore[assignment]
    PythonModel = object  # type: ignore[misc,assignment]


# The types skops does not trust by default that our scikit-learn models hold: the node arrays
# of the forest's trees and the encoders' output dtype. Serving loads only packages whose
# recorded hash matched.
TRUSTED_SKOPS_TYPES = ["sklearn.tree._tree.Tree", "numpy.dtype"]


def load_sklearn(path: str) -> Any:
    """A scikit-learn model saved with ``skops.io.dump``, loaded without unpickling: any type
    outside skops' trusted set and :data:`TRUSTED_SKOPS_TYPES` is refused."""
    import skops.io

    return skops.io.load(path, trusted=TRUSTED_SKOPS_TYPES)


def prepare_features(df: pd.DataFrame, spec: dict[str, Any], *, for_xgboost: bool) -> pd.DataFrame:
    """Columns in training order and types: numbers as float, booleans as 0/1, categories as
    strings (for XGBoost a pandas Categorical over the training categories; unseen → missing)."""
    out: dict[str, Any] = {}
    for col in spec["feature_order"]:
        s = df[col] if col in df.columns else pd.Series(np.nan, index=df.index)
        kind = spec["kinds"][col]
        if kind == "numeric":
            out[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif kind == "boolean":
            text = s.astype(str).str.strip().str.lower()
            out[col] = np.where(
                s.isna(), np.nan, np.where(text.isin(["true", "t", "yes", "1", "1.0"]), 1.0, 0.0)
            ).astype("float64")
        else:
            out[col] = _categories(s, spec["categories"][col], for_xgboost)
    return pd.DataFrame(out, index=df.index)


def _as_text(s: pd.Series) -> pd.Series:
    """Values as str, missing as None."""
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return s.where(s.notna(), None)
    return s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))


def _categories(s: pd.Series, known: list[str], for_xgboost: bool) -> Any:
    if isinstance(s.dtype, pd.CategoricalDtype):  # fast: work on the categories, not values
        names = [str(c) for c in s.cat.categories]
        if len(set(names)) == len(names):
            s = s.cat.rename_categories(names)
            return s.cat.set_categories(known) if for_xgboost else _as_text(s.astype(object))
        s = s.astype(object)
    text = _as_text(s)
    return pd.Categorical(text, categories=known) if for_xgboost else text


def output_frame(
    task: str, classes: list[Any] | None, raw: np.ndarray, index: pd.Index
) -> pd.DataFrame:
    """Our prediction frame from raw model output (probabilities, or values)."""
    if task == "regression":
        return pd.DataFrame({"prediction": np.asarray(raw, dtype="float64")}, index=index)
    assert classes is not None
    proba = np.asarray(raw, dtype="float64")
    if proba.ndim == 1:  # binary: probability of the second class
        proba = np.column_stack([1.0 - proba, proba])
    labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    frame = pd.DataFrame({"prediction": labels}, index=index)
    for i, c in enumerate(classes):
        frame[f"proba_{c}"] = proba[:, i]
    return frame


class TabularModel(PythonModel):  # type: ignore[misc,valid-type]
    def load_context(self, context: Any) -> None:
        with open(context.artifacts["spec"], encoding="utf-8") as f:
            self.spec = json.load(f)
        if self.spec["kind"] == "xgboost":
            import xgboost as xgb

            self.model = xgb.Booster()
            self.model.load_model(context.artifacts["model"])
        else:
            self.model = load_sklearn(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        spec = self.spec
        if spec["kind"] == "xgboost":
            import xgboost as xgb

            X = prepare_features(model_input, spec, for_xgboost=True)
            raw = self.model.predict(xgb.DMatrix(X, enable_categorical=True))
        else:
            X = prepare_features(model_input, spec, for_xgboost=False)
            raw = (
                self.model.predict(X)
                if spec["task"] == "regression"
                else self.model.predict_proba(X)  # type: ignore[attr-defined]  # sklearn
            )
        return output_frame(spec["task"], spec.get("classes"), raw, model_input.index)


if mlflow is not None:
    mlflow.models.set_model(TabularModel())
