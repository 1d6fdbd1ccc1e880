"""Figures and table styles of the approval card and the Models comparison, built from the read
models alone (no Streamlit here), so that they can be tested without rendering a page.

Close values are compared on a zoomed axis (:func:`zoomed_range`): an axis from 0 draws .758
and .761 as two equal bars."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go

BETTER, WORSE = "#1a7f37", "#cf222e"  # green, red (GitHub's, readable on white)
VERDICT_MARK = {"better": "▲ better", "worse": "▼ worse", "same": "= same", "": ""}
LAYOUT: dict[str, Any] = dict(template="plotly_white", margin=dict(l=10, r=10, t=36, b=10))


def zoomed_range(values: Iterable[Any], pad: float = 0.35) -> list[float] | None:
    """An axis range around ``values`` (not from 0): their span widened by ``pad`` of itself
    on each side, at least 1% of their magnitude wide; None if there is no finite value."""
    vals = [float(v) for v in values if v is not None and not pd.isna(v) and math.isfinite(v)]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, 0.01 * max(abs(lo), abs(hi)), 1e-6)
    return [lo - pad * span, hi + pad * span]


def verdict_color(verdict: str) -> str:
    return {"better": BETTER, "worse": WORSE}.get(verdict, "")


def delta_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A ``metric_deltas`` frame as the card shows it: the verdict with an arrow."""
    return frame.assign(verdict=frame["verdict"].map(lambda v: VERDICT_MARK.get(v, v)))


def style_deltas(frame: pd.DataFrame, digits: int = 4) -> Any:
    """A Styler of ``delta_table(frame)``: numbers to ``digits``, the delta signed, the delta
    and the verdict green where the challenger is better and red where worse."""
    shown = delta_table(frame)
    colors = frame["verdict"].map(verdict_color)

    def paint(col: pd.Series) -> list[str]:
        if col.name not in ("delta", "verdict"):
            return [""] * len(col)
        return [f"color: {c}; font-weight: 600" if c else "" for c in colors]

    return (
        shown.style.apply(paint)
        .format(f"{{:.{digits}f}}", subset=["champion", "challenger"], na_rep="-")
        .format(f"{{:+.{digits}f}}", subset=["delta"], na_rep="-")
    )


def style_slices(frame: pd.DataFrame, higher_is_better: bool, digits: int = 4) -> Any:
    """A Styler of ``slice_deltas``: regressed rows shaded red, deltas coloured by direction."""
    shown = frame.assign(regressed=frame["regressed"].map({True: "⚠ regressed", False: ""}))

    def paint_row(row: pd.Series) -> list[str]:
        flagged = bool(frame.loc[row.name, "regressed"])
        return ["background-color: #ffebe9" if flagged else ""] * len(row)

    def paint_delta(col: pd.Series) -> list[str]:
        sign = 1 if higher_is_better else -1
        return [
            "" if pd.isna(d) or d == 0 else f"color: {BETTER if sign * d > 0 else WORSE}"
            for d in col
        ]

    return (
        shown.style.apply(paint_row, axis=1)
        .apply(paint_delta, subset=["delta"])
        .format(f"{{:.{digits}f}}", subset=["champion", "challenger", "noise"], na_rep="-")
        .format(f"{{:+.{digits}f}}", subset=["delta"], na_rep="-")
    )


def metric_bars(values: Mapping[str, float], metric: str, height: int = 260) -> go.Figure:
    """One bar per version (label -> value) on an axis zoomed to the values, each labelled."""
    labels = list(values)
    ys = [values[k] for k in labels]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=ys,
            text=[f"{y:.4f}" if y is not None and not pd.isna(y) else "" for y in ys],
            textposition="outside",
            cliponaxis=False,
            marker_color="#636efa",
        )
    )
    fig.update_layout(height=height, yaxis_title=metric, **LAYOUT)
    fig.update_yaxes(range=zoomed_range(ys), zeroline=False)
    return fig


def confusion_figure(counts: pd.DataFrame, title: str, height: int = 260) -> go.Figure:
    """A confusion matrix (``approval.confusion``) as an annotated heat map."""
    fig = go.Figure(
        go.Heatmap(
            z=counts.to_numpy(),
            x=list(counts.columns),
            y=list(counts.index),
            text=counts.to_numpy(),
            texttemplate="%{text:,}",
            colorscale="Blues",
            showscale=False,
        )
    )
    fig.update_layout(title=title, height=height, **LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig


def threshold_figure(
    tables: Mapping[str, pd.DataFrame], threshold: float | None = None, height: int = 320
) -> go.Figure:
    """Precision (solid) and recall (dotted) against the threshold, one colour per version
    (label -> ``approval.threshold_table``), the picked threshold as a vertical line."""
    fig = go.Figure()
    palette = ["#636efa", "#ef553b", "#00cc96", "#ab63fa"]
    for i, (label, t) in enumerate(tables.items()):
        color = palette[i % len(palette)]
        for stat, dash in (("precision", "solid"), ("recall", "dot")):
            fig.add_trace(
                go.Scatter(
                    x=t["threshold"],
                    y=t[stat],
                    name=f"{label} {stat}",
                    mode="lines",
                    line=dict(color=color, dash=dash),
                )
            )
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="grey")
    fig.update_layout(height=height, xaxis_title="threshold", yaxis_title="share", **LAYOUT)
    return fig


def per_class_figure(
    tables: Mapping[str, pd.DataFrame], stat: str = "f1", height: int = 300
) -> go.Figure:
    """``stat`` per class, one bar per version (label -> ``approval.per_class``), zoomed."""
    fig = go.Figure([go.Bar(x=list(t.index), y=t[stat], name=label) for label, t in tables.items()])
    fig.update_layout(barmode="group", height=height, yaxis_title=stat, **LAYOUT)
    fig.update_yaxes(range=zoomed_range(v for t in tables.values() for v in t[stat]))
    return fig


def signed_deltas(metrics: pd.DataFrame, base: str) -> pd.DataFrame:
    """The Models comparison's metrics (index: version) as signed deltas against version
    ``base`` (one row per other version), with a verdict per metric for colouring."""
    from mlops_core.read.approval import verdict

    rows = metrics.drop(index=base).sub(metrics.loc[base], axis=1)
    verdicts = rows.apply(lambda col: col.map(lambda d: verdict(str(col.name), float(d))))
    return pd.concat({"delta": rows, "verdict": verdicts}, axis=1)


def style_signed_deltas(deltas: pd.DataFrame, digits: int = 4) -> Any:
    """A Styler of ``signed_deltas``: the deltas only, signed, coloured by their verdicts."""
    values = deltas["delta"]
    verdicts = deltas["verdict"]

    def paint(col: pd.Series) -> list[str]:
        return [
            f"color: {verdict_color(v)}; font-weight: 600" if verdict_color(v) else ""
            for v in verdicts[col.name]
        ]

    return values.style.apply(paint).format(f"{{:+.{digits}f}}", na_rep="-")
