"""Figures the pages draw, built from the read models alone (no Streamlit here), so that they
can be tested without rendering a page."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

MARKERS_UP_TO = 50  # a line with more points than this is drawn without a marker on each
EVENT_LINES_UP_TO = 100  # more events than this: the markers at the top only, no lines
EVENTS = {
    "retrain": ("triangle-down", "#636efa"),
    "promotion": ("star", "#00a36c"),
    "rollback": ("x", "#ef553b"),
}
EVENT_Y = 0.97  # where the event markers sit, as a share of the plot's height


def _mode(points: int) -> str:
    return "lines+markers" if points <= MARKERS_UP_TO else "lines"


def _naive(times: pd.Series) -> pd.Series:
    t = pd.to_datetime(times, utc=True)
    return t.dt.tz_localize(None).astype("datetime64[ns]")


def on_data_time(series: pd.DataFrame, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames with ``x``: where a run sits on the chart, the data time its rows reach
    (``data_end``), else (no time column, or a run without it) its run time; an event (a
    retrain, a promotion) at the data time of the newest run at or before it (the first
    run's data start before any), so it stays where it happened between the runs. ``run_at``:
    the run time as text, for the hover."""
    series = series.copy()
    series["run_at"] = pd.to_datetime(series["at"]).dt.strftime("%Y-%m-%d %H:%M")
    known = series["data_end"].notna() if "data_end" in series.columns else None
    if known is None or not known.any():
        series["x"] = series["at"]
        events = events.assign(x=events["at"]) if len(events) else events.assign(x=[])
        return series, events
    series["x"] = series["data_end"].where(known, series["at"])
    if not len(events):
        return series, events.assign(x=[])
    runs = series[["at", "x"]].assign(at=_naive(series["at"])).sort_values("at")
    ev = events.assign(_at=_naive(events["at"]), _order=range(len(events)))
    placed = pd.merge_asof(
        ev.sort_values("_at"), runs.rename(columns={"at": "_at"}), on="_at", direction="backward"
    )
    first = series["data_start"].dropna().min() if "data_start" in series.columns else None
    placed["x"] = placed["x"].fillna(first if first is not None else runs["x"].iloc[0])
    placed = placed.sort_values("_order").drop(columns=["_at", "_order"])
    return series, placed.reset_index(drop=True)


def live_metric_figure(series: pd.DataFrame, events: pd.DataFrame, metric: str) -> go.Figure:
    """The champion's live metric over monitoring runs (``views.metric_series``): realised,
    estimated without labels with its 90% interval, and the champion's metric at training;
    retrains, promotions and rollbacks (``views.model_events``) as markers along the top of the
    plot with a dotted vertical line each.

    Runs sit at the data time their rows reach, with the run time in the hover
    (:func:`on_data_time`); run time without a time column. Only what has data becomes a trace
    (and a legend entry): a line of one point is drawn as a marker, an interval of one point as
    an error bar. Lines of more than :data:`MARKERS_UP_TO` points have no markers."""
    series, events = on_data_time(series, events)
    data_time = bool(series["x"].ne(series["at"]).any())
    fig = go.Figure()
    est = series[series["estimated"].notna()]
    band = est[est["estimated_low"].notna() & est["estimated_high"].notna()]
    if len(band) >= 2:
        fig.add_trace(
            go.Scatter(
                x=band["x"],
                y=band["estimated_high"],
                mode="lines",
                line_width=0,
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=band["x"],
                y=band["estimated_low"],
                mode="lines",
                line_width=0,
                fill="tonexty",
                fillcolor="rgba(99,110,250,0.15)",
                name="estimate 90% interval",
                hoverinfo="skip",
            )
        )
    if len(est):
        bars = {}
        if len(band) == 1:  # a band of one point draws nothing: an error bar instead
            bars = dict(
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=(est["estimated_high"] - est["estimated"]).tolist(),
                    arrayminus=(est["estimated"] - est["estimated_low"]).tolist(),
                    thickness=1.5,
                    width=6,
                )
            )
        fig.add_trace(
            go.Scatter(
                x=est["x"],
                y=est["estimated"],
                mode=_mode(len(est)),
                line_dash="dot",
                marker_size=7,
                customdata=est[["run", "run_at"]],
                hovertemplate="%{y:.4f} estimated<br>run %{customdata[0]} at "
                "%{customdata[1]}<extra></extra>",
                name=f"estimated {metric} (no labels)" + (", 90% interval" if bars else ""),
                **bars,
            )
        )
    real = series[series["realised"].notna()]
    if len(real):
        fig.add_trace(
            go.Scatter(
                x=real["x"],
                y=real["realised"],
                mode=_mode(len(real)),
                name=f"realised {metric}",
                line_width=2.5,
                marker_size=7,
                customdata=real[["run", "champion_version", "run_at"]],
                hovertemplate="%{y:.4f}<br>run %{customdata[0]} at %{customdata[2]} · "
                "champion v%{customdata[1]}<extra></extra>",
            )
        )
    base = series[series["baseline"].notna()]
    if len(base) >= 2:
        fig.add_trace(
            go.Scatter(
                x=base["x"],
                y=base["baseline"],
                mode="lines",
                line_shape="hv",
                line_dash="dash",
                line_color="grey",
                name="champion at training",
            )
        )
    elif len(base) == 1:  # a line of one point draws nothing: a short dash instead
        fig.add_trace(
            go.Scatter(
                x=base["x"],
                y=base["baseline"],
                mode="markers",
                marker=dict(
                    symbol="line-ew-open", size=28, color="grey", line=dict(width=2, color="grey")
                ),
                name="champion at training",
            )
        )
    marked = events[events["kind"].isin(list(EVENTS))] if len(events) else events
    for kind, (symbol, colour) in EVENTS.items():
        ev = marked[marked["kind"] == kind] if len(marked) else marked
        if ev.empty:
            continue
        # on an axis of their own spanning the plot's height: the top, whatever the metric
        fig.add_trace(
            go.Scatter(
                x=ev["x"],
                y=[EVENT_Y] * len(ev),
                yaxis="y2",
                mode="markers",
                name=kind + "s",
                marker_symbol=symbol,
                marker_size=12,
                marker_color=colour,
                cliponaxis=False,
                customdata=ev[["version", "actor", "reason"]].astype(str).map(lambda s: s[:120]),
                hovertemplate=f"{kind} v%{{customdata[0]}} by %{{customdata[1]}}<br>"
                "%{customdata[2]}<extra></extra>",
            )
        )
    if 0 < len(marked) <= EVENT_LINES_UP_TO:
        fig.update_layout(
            shapes=[
                dict(
                    type="line",
                    xref="x",
                    yref="paper",
                    x0=at,
                    x1=at,
                    y0=0,
                    y1=1,
                    layer="below",
                    line=dict(width=1, dash="dot", color=EVENTS[kind][1]),
                    opacity=0.6,
                )
                for at, kind in zip(marked["x"], marked["kind"], strict=True)
            ]
        )
    fig.update_layout(
        height=380,
        margin=dict(l=10, r=10, t=30, b=10),
        hovermode="closest",
        legend=dict(orientation="h", y=1.12),
        yaxis_title=metric,
        xaxis_title="data time (the newest row of each run)" if data_time else "run time",
        template="plotly_white",
        yaxis2=dict(overlaying="y", range=[0, 1], visible=False, fixedrange=True),
    )
    return fig


def serving_traffic_figure(
    timeline: pd.DataFrame, period: str, axis: str = "served at"
) -> go.Figure:
    """Rows served per period (bars) and their mean latency (line, right axis); ``axis``
    names the time the rows are placed by (the data's time column, or when served)."""
    fig = go.Figure()
    unit = {"h": "hour", "D": "day", "W": "week"}.get(period, period)
    fig.add_trace(
        go.Bar(
            x=timeline["at"],
            y=timeline["rows"],
            name=f"rows per {unit}",
            marker_color="#636efa",
            opacity=0.6,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=timeline["at"],
            y=timeline["latency_ms"],
            yaxis="y2",
            mode=_mode(len(timeline)),
            name="mean latency (ms)",
            line_color="#ef553b",
        )
    )
    fig.update_layout(
        yaxis=dict(title="rows"),
        height=300,
        margin=dict(t=30, b=10),
        xaxis=dict(title=axis),
        yaxis2=dict(title="ms", overlaying="y", side="right", rangemode="tozero"),
        legend=dict(orientation="h", y=1.12),
    )
    return fig


def serving_outcomes_figure(
    timeline: pd.DataFrame, task: str, axis: str = "served at"
) -> go.Figure:
    """What was predicted against what happened, per period, on the rows whose labels came
    back; and the accuracy of the champion (and of the shadow, when one ran)."""
    fig = go.Figure()
    what = "mean prediction" if task == "regression" else "predicted positive share"
    fig.add_trace(
        go.Scatter(
            x=timeline["at"],
            y=timeline["predicted"],
            name=what,
            mode=_mode(len(timeline)),
            line_color="#636efa",
        )
    )
    seen = timeline[timeline["observed"].notna()]
    if len(seen):
        fig.add_trace(
            go.Scatter(
                x=seen["at"],
                y=seen["observed"],
                mode=_mode(len(seen)),
                name="observed" + (" mean" if task == "regression" else " positive share"),
                line_color="#00a36c",
            )
        )
    if task != "regression":
        acc = timeline[timeline["accuracy"].notna()]
        if len(acc):
            fig.add_trace(
                go.Scatter(
                    x=acc["at"],
                    y=acc["accuracy"],
                    mode=_mode(len(acc)),
                    name="accuracy (served)",
                    line_dash="dot",
                    line_color="#ab63fa",
                )
            )
        sh = timeline[timeline["shadow_accuracy"].notna()]
        if len(sh):
            fig.add_trace(
                go.Scatter(
                    x=sh["at"],
                    y=sh["shadow_accuracy"],
                    mode=_mode(len(sh)),
                    name="accuracy (online shadow)",
                    line_dash="dash",
                    line_color="#ffa15a",
                )
            )
    fig.update_layout(
        height=320,
        margin=dict(t=30, b=10),
        legend=dict(orientation="h", y=1.15),
        xaxis=dict(title=axis),
    )
    return fig
