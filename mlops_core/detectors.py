"""Concept-drift detectors on the champion's error stream, from River, behind one small
interface: feed errors in time order, read where the detector fired."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

DETECTORS = ("adwin", "page_hinkley", "ddm")


def _river_detector(name: str) -> Any:
    from river import drift
    from river.drift import binary

    if name == "adwin":
        return drift.ADWIN()
    if name == "page_hinkley":
        # only rises of the error matter: a falling error is good news, not a reason to retrain
        return drift.PageHinkley(mode="up")
    if name == "ddm":
        return binary.DDM()
    raise ValueError(f"unknown detector '{name}'; known: {', '.join(DETECTORS)}")


@dataclass
class DetectorResult:
    name: str
    rows: int  # errors fed
    detections: list[int] = field(default_factory=list)  # row positions where it fired

    @property
    def fired(self) -> bool:
        return bool(self.detections)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"fired": self.fired}


class ErrorStreamDetector:
    """One River detector. ``update(errors)`` feeds errors (0/1 for classification, absolute
    errors for regression; DDM takes 0/1 only) and returns ``self``; ``result`` says where it
    fired, as row positions in the order fed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._detector = _river_detector(name)
        self._rows = 0
        self._detections: list[int] = []

    def update(self, errors: Iterable[float]) -> ErrorStreamDetector:
        det = self._detector
        for e in errors:
            det.update(float(e))
            if det.drift_detected:
                self._detections.append(self._rows)
            self._rows += 1
        return self

    @property
    def result(self) -> DetectorResult:
        return DetectorResult(self.name, self._rows, list(self._detections))


def error_stream(task: str, y_true: Any, prediction: Any) -> np.ndarray:
    """Per-row errors in the order given: 1/0 misclassification, or absolute error."""
    y = np.asarray(y_true)
    p = np.asarray(prediction)
    if task == "regression":
        return np.abs(y.astype(float) - p.astype(float))
    return (y.astype(str) != p.astype(str)).astype(float)


def run_detectors(names: Iterable[str], task: str, y_true: Any, prediction: Any
                  ) -> list[DetectorResult]:
    errors = error_stream(task, y_true, prediction)
    out = []
    for name in names:
        if name == "ddm" and task == "regression":
            continue  # DDM models a binary error rate
        out.append(ErrorStreamDetector(name).update(errors).result)
    return out
