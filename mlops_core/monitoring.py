"""Evidently reports turned into our own results. The only module that talks to Evidently.

Issue "monitoring" builds drift monitoring here; this part makes the performance evidence of a
training run (an Evidently classification or regression report, as HTML and JSON).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class ReportFiles:
    html: Path
    json: Path
    metrics: dict[str, Any]  # metric name -> value, as Evidently computed it


def _definition(task: str, classes: list[Any] | None, proba_cols: list[str]) -> Any:
    from evidently import BinaryClassification, DataDefinition, MulticlassClassification, Regression

    if task == "regression":
        return DataDefinition(regression=[Regression(target="target", prediction="prediction")])
    if task == "binary":
        assert classes is not None
        return DataDefinition(classification=[BinaryClassification(
            target="target", prediction_labels="prediction", prediction_probas=proba_cols[-1],
            pos_label=classes[-1])])
    return DataDefinition(classification=[MulticlassClassification(
        target="target", prediction_labels="prediction")])


def _frame(y: pd.Series, pred: pd.DataFrame, task: str, proba_cols: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({"target": y.to_numpy(), "prediction": pred["prediction"].to_numpy()})
    if task == "binary":
        df[proba_cols[-1]] = pred[proba_cols[-1]].to_numpy()
    if task != "regression" and df["target"].dtype != df["prediction"].dtype:
        df["prediction"] = df["prediction"].astype(df["target"].dtype)
    return df


def performance_report(task: str, y_current: pd.Series, pred_current: pd.DataFrame,
                       out_dir: Path, *, classes: list[Any] | None = None,
                       y_reference: pd.Series | None = None,
                       pred_reference: pd.DataFrame | None = None,
                       name: str = "performance") -> ReportFiles:
    """Evidently ``ClassificationPreset`` / ``RegressionPreset`` of predictions against labels,
    optionally against a reference (e.g. the champion on the same rows), saved as HTML + JSON."""
    from evidently import Dataset, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    proba_cols = [f"proba_{c}" for c in classes] if classes else []
    dd = _definition(task, classes, proba_cols)
    cur = Dataset.from_pandas(_frame(y_current, pred_current, task, proba_cols),
                              data_definition=dd)
    ref = None
    if y_reference is not None and pred_reference is not None:
        ref = Dataset.from_pandas(_frame(y_reference, pred_reference, task, proba_cols),
                                  data_definition=dd)
    preset = RegressionPreset() if task == "regression" else ClassificationPreset()
    snap = Report([preset]).run(cur, ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, js = out_dir / f"{name}.html", out_dir / f"{name}.json"
    snap.save_html(str(html))
    payload = json.loads(snap.json())
    js.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    values = {m["metric_name"]: m["value"] for m in payload.get("metrics", [])}
    return ReportFiles(html, js, values)
