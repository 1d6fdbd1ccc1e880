"""Online learning: an XGBoost model that keeps learning as labelled rows arrive.

It starts from a trained booster (the champion's, or a first fit) and, for every batch of new
labels (``/feedback`` joined to the prediction log, or labelled batches), continues the
boosting: a few more trees fitted to the current model's errors on those rows
(``xgboost.train(..., xgb_model=booster)``), one per ``ROWS_PER_TREE`` rows, between 1 and
``MAX_TREES_PER_UPDATE``. The new trees follow the newest concept while the old ones keep what
still holds.

Why this and not River's adaptive random forest: measured in the backtest on the bench's data
sets (``bench/online.py``), continued boosting predicts better on the mean, and it is saved in
XGBoost's own format, so a snapshot is an ordinary model package that the gate, approval,
rollback and serving handle like any other, and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_core.train.pyfunc.tabular_model import output_frame, prepare_features

ROWS_PER_TREE = 100
MAX_TREES_PER_UPDATE = 20
# shallower and slower than a full training: each update sees one batch
UPDATE_PARAMS = {
    "max_depth": 4,
    "learning_rate": 0.1,
    "min_child_weight": 1.0,
    "subsample": 1.0,
    "reg_lambda": 1.0,
}


def _objective(task: str, classes: list[Any] | None) -> dict[str, Any]:
    if task == "regression":
        return {"objective": "reg:squarederror"}
    if task == "binary":
        return {"objective": "binary:logistic"}
    return {"objective": "multi:softprob", "num_class": len(classes or [])}


@dataclass
class OnlineBooster:
    """A booster plus the feature spec it reads, updated in place by :meth:`learn`."""

    spec: dict[str, Any]
    booster: Any  # xgboost.Booster
    rows_learnt: int = 0
    updates: int = 0
    params: dict[str, Any] = field(default_factory=lambda: dict(UPDATE_PARAMS))
    seed: int = 42

    @classmethod
    def from_trained(cls, model: Any, seed: int = 42) -> OnlineBooster:
        """From a :class:`mlops_core.train.fit.TrainedModel` of kind xgboost (its early-stopped
        trees)."""
        if model.kind != "xgboost":
            raise ValueError(f"online learning continues an XGBoost model, not '{model.kind}'")
        booster = model.estimator.get_booster()
        if model.best_iteration is not None:
            booster = booster[: model.best_iteration + 1]
        return cls(spec=dict(model.spec), booster=booster, seed=seed)

    @classmethod
    def from_package(cls, folder: Path, seed: int = 42) -> OnlineBooster:
        """From a downloaded model package (``artifacts/spec.json`` and ``model.ubj``)."""
        import xgboost as xgb

        art = folder / "artifacts"
        spec = json.loads((art / "spec.json").read_text(encoding="utf-8"))
        if spec.get("kind") != "xgboost":
            raise ValueError(
                f"online learning continues an XGBoost model, not '{spec.get('kind')}'"
            )
        booster = xgb.Booster()
        booster.load_model(str(art / "model.ubj"))
        online = spec.get("online", {})
        return cls(
            spec=spec,
            booster=booster,
            rows_learnt=int(online.get("rows_learnt", 0)),
            updates=int(online.get("updates", 0)),
            seed=seed,
        )

    @property
    def task(self) -> str:
        return str(self.spec["task"])

    @property
    def classes(self) -> list[Any] | None:
        return self.spec.get("classes")

    @property
    def trees(self) -> int:
        return int(self.booster.num_boosted_rounds())

    def _labels(self, y: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Encoded labels and the mask of rows that have a usable one."""
        if self.classes is None:
            v = pd.to_numeric(y, errors="coerce").to_numpy(dtype="float64")
            return v, np.isfinite(v)
        lookup = {str(c): i for i, c in enumerate(self.classes)}
        codes = y.map(lambda v: lookup.get(str(v), lookup.get(_int_text(v), -1)))
        arr = codes.to_numpy(dtype="int64")
        return arr, arr >= 0

    def learn(self, X: pd.DataFrame, y: pd.Series) -> int:
        """Continue boosting on labelled rows; returns the number of trees added (0 when no
        row had a usable label)."""
        import xgboost as xgb

        labels, ok = self._labels(y.reset_index(drop=True))
        if not ok.any():
            return 0
        Xp = prepare_features(X.reset_index(drop=True)[ok], self.spec, for_xgboost=True)
        dm = xgb.DMatrix(Xp, label=labels[ok], enable_categorical=True)
        rounds = min(MAX_TREES_PER_UPDATE, max(1, math.ceil(int(ok.sum()) / ROWS_PER_TREE)))
        params = {
            **self.params,
            **_objective(self.task, self.classes),
            "tree_method": "hist",
            "max_cat_to_onehot": 8,
            "seed": self.seed,
            "verbosity": 0,
        }
        self.booster = xgb.train(params, dm, num_boost_round=rounds, xgb_model=self.booster)
        self.rows_learnt += int(ok.sum())
        self.updates += 1
        return rounds

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        import xgboost as xgb

        Xp = prepare_features(X, self.spec, for_xgboost=True)
        raw = self.booster.predict(xgb.DMatrix(Xp, enable_categorical=True))
        return output_frame(self.task, self.classes, raw, X.index)

    def feature_importances(self) -> dict[str, float]:
        """Share of the total gain per feature, over every tree."""
        names = self.spec["feature_order"]
        gain = self.booster.get_score(importance_type="total_gain")
        total = sum(gain.values()) or 1.0
        return {c: float(gain.get(c, 0.0)) / total for c in names}

    def save(self, folder: Path) -> dict[str, Path]:
        """The artifacts of a model package, as :meth:`TrainedModel.save` writes them: the
        snapshot is served and loaded like any trained XGBoost model."""
        folder.mkdir(parents=True, exist_ok=True)
        spec = dict(self.spec) | {
            "online": {
                "rows_learnt": self.rows_learnt,
                "updates": self.updates,
                "trees": self.trees,
            }
        }
        spec_path = folder / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=2, default=str), encoding="utf-8")
        path = folder / "model.ubj"
        self.booster.save_model(str(path))
        return {"spec": spec_path, "model": path}


def _int_text(v: Any) -> str:
    """ "1" for 1.0 or True: labels that arrive as text or floats name integer classes."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(int(f)) if f.is_integer() else str(v)
