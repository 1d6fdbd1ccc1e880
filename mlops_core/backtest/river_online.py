"""River's online models as a backtest strategy (``online``): the one backtest module that
imports River, so a change of River's API stays here.
:func:`mlops_core.backtest.engine.make_strategy` imports it when ``online`` is asked for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops_core.backtest.engine import History, OnlineStrategy


class RiverOnline(OnlineStrategy):
    """River's adaptive random forest (ARF), learning each batch's labels as they arrive."""

    name = "online"

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def start(self, replay: History, initial: pd.DataFrame) -> None:
        from river import forest

        self.replay = replay
        self.model = (
            forest.ARFRegressor(seed=self.seed)
            if replay.task == "regression"
            else forest.ARFClassifier(seed=self.seed)
        )
        self.fill = {
            c: float(pd.to_numeric(initial[c], errors="coerce").median())
            for c, k in replay.kinds.items()
            if k != "categorical"
        }
        self.learn(initial[list(replay.kinds)], initial[replay.target])

    def _rows(self, X: pd.DataFrame) -> list[dict[str, Any]]:
        cols = {}
        for c, k in self.replay.kinds.items():
            s = X[c]
            if k == "categorical":
                cols[c] = s.astype(object).where(s.notna(), "<missing>").astype(str).tolist()
            else:
                cols[c] = (
                    pd.to_numeric(s, errors="coerce").astype(float).fillna(self.fill[c]).tolist()
                )
        names = list(cols)
        return [dict(zip(names, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        for x, t in zip(self._rows(X), y.tolist(), strict=True):
            self.model.learn_one(x, t)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        from mlops_core.train.pyfunc.tabular_model import output_frame

        rows = self._rows(X)
        if self.replay.task == "regression":
            raw = np.array(
                [self.model.predict_one(x) or 0.0 for x in rows],  # type: ignore[arg-type]
                dtype="float64",
            )
            return output_frame("regression", None, raw, X.index)
        classes = self.replay.classes or []
        proba = np.zeros((len(rows), len(classes)))
        for i, x in enumerate(rows):
            p = self.model.predict_proba_one(x)  # type: ignore[union-attr]  # a classifier
            for j, c in enumerate(classes):
                proba[i, j] = p.get(c, 0.0)
        proba_sum = proba.sum(axis=1, keepdims=True)
        proba = np.where(
            proba_sum > 0, proba / np.where(proba_sum > 0, proba_sum, 1), 1 / max(len(classes), 1)
        )
        raw = proba[:, 1] if self.replay.task == "binary" else proba
        return output_frame(self.replay.task, classes, raw, X.index)
