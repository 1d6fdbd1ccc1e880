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
    # where each change began: the most likely single rise of the mean error between the
    # previous detection and this one (see :func:`locate_change`)
    change_starts: list[int] = field(default_factory=list)

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
        self._starts: list[int] = []
        self._errors: list[float] = []

    def update(self, errors: Iterable[float]) -> ErrorStreamDetector:
        det = self._detector
        for e in errors:
            det.update(float(e))
            self._errors.append(float(e))
            if det.drift_detected:
                first = self._detections[-1] + 1 if self._detections else 0
                self._detections.append(self._rows)
                self._starts.append(first + locate_change(self._errors[first:]))
            self._rows += 1
        return self

    @property
    def result(self) -> DetectorResult:
        return DetectorResult(self.name, self._rows, list(self._detections), list(self._starts))


def locate_change(errors: Iterable[float]) -> int:
    """Where the mean of ``errors`` most likely rose: the split maximising the standardised
    difference of the means after and before it (the CUSUM estimate of one change point).
    Detectors say *that* the error changed, late and coarsely (ADWIN's window moves in
    buckets); this says *where*, so that a retrain can start its window there."""
    x = np.asarray(list(errors), dtype=float)
    n = len(x)
    if n < 2:
        return 0
    c = np.cumsum(x)
    k = np.arange(1, n)
    rise = (c[-1] - c[:-1]) / (n - k) - c[:-1] / k
    stat = np.sqrt(k * (n - k) / n) * rise
    best = int(np.argmax(stat))
    return best + 1 if stat[best] > 0 else n - 1


def locate_rise(errors: Iterable[float], min_z: float = 4.0) -> int | None:
    """Like :func:`locate_change`, but only a rise that is significant: the standardised
    difference at the split at least ``min_z`` (the maximum over all splits of a stationary
    stream stays below 4 in all but a few in ten thousand streams). ``None``: no such rise."""
    x = np.asarray(list(errors), dtype=float)
    n = len(x)
    sd = float(x.std())
    if n < 20 or sd == 0:
        return None
    at = locate_change(x)
    if not 0 < at < n:
        return None
    z = np.sqrt(at * (n - at) / n) * (x[at:].mean() - x[:at].mean()) / sd
    return at if z >= min_z else None


def where_error_rose(
    baseline: Iterable[float] | None, errors: Iterable[float], min_z: float = 6.0
) -> int | None:
    """Where in ``errors`` (a model's errors on new rows, in time order) the error rose
    clearly, judged against ``baseline``, the same model's errors on its own hold-out rows just
    before: a rise between the two means the model was poor from its first unseen row on (0);
    a noisy baseline does not, nor a one-batch dip (``min_z`` 6: a concept change that costs a
    few points of accuracy over a few hundred rows passes it). ``None``: no clear rise."""
    before = np.asarray(list(baseline) if baseline is not None else [], dtype=float)
    at = locate_rise(np.concatenate([before, np.asarray(list(errors), dtype=float)]), min_z)
    return None if at is None else max(0, at - len(before))


def error_stream(task: str, y_true: Any, prediction: Any) -> np.ndarray:
    """Per-row errors in the order given: 1/0 misclassification, or absolute error."""
    y = np.asarray(y_true)
    p = np.asarray(prediction)
    if task == "regression":
        return np.abs(y.astype(float) - p.astype(float))
    return (y.astype(str) != p.astype(str)).astype(float)


def run_detectors(
    names: Iterable[str], task: str, y_true: Any, prediction: Any
) -> list[DetectorResult]:
    errors = error_stream(task, y_true, prediction)
    out = []
    for name in names:
        if name == "ddm" and task == "regression":
            continue  # DDM models a binary error rate
        out.append(ErrorStreamDetector(name).update(errors).result)
    return out
