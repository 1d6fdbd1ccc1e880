"""Backtests: retraining strategies replayed over history (``mlops backtest``), as the metric
over time by strategy and quality against cost. The charts show the policy against the two
baselines (never retrain, retrain on every batch) unless more strategies are picked; each
strategy keeps one colour of a colour-blind-safe palette in every chart."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import common
from mlops_core.backtest.engine import figures
from mlops_core.read import views

# the policy against its two baselines: what the charts show first
DEFAULT_SHOWN = ("policy", "static", "every-batch")
# Okabe & Ito's palette (distinct, colour-blind safe): the three above always in the same
# colours, the others in the order the result lists them
FIXED_COLOURS = {"policy": "#D55E00", "static": "#7F7F7F", "every-batch": "#0072B2"}
OTHER_COLOURS = (
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#000000",
    "#8C564B",
    "#F0E442",
    "#17BECF",
)


def strategy_colours(names: list[str]) -> dict[str, str]:
    """One colour per strategy of the result, whichever of them are shown."""
    others = [n for n in names if n not in FIXED_COLOURS]
    colours = {n: OTHER_COLOURS[i % len(OTHER_COLOURS)] for i, n in enumerate(others)}
    return colours | {n: c for n, c in FIXED_COLOURS.items() if n in names}


def shown_by_default(names: list[str]) -> list[str]:
    """The policy and the baselines where the result has them; a result without them shows
    everything."""
    picked = [n for n in names if n in DEFAULT_SHOWN]
    return picked or list(names)


def recolour(fig: Any, colours: dict[str, str]) -> Any:
    """Each strategy's traces (its line, its retrain marks, its point) in its colour; the
    policy's line drawn thicker."""

    def paint(trace: Any) -> None:
        name = trace.legendgroup or trace.name
        if name not in colours:
            return
        trace.update(marker_color=colours[name])
        if trace.mode and "lines" in trace.mode:
            trace.update(line_color=colours[name], line_width=3 if name == "policy" else 1.5)

    fig.for_each_trace(paint)
    return fig


ctx = common.page_header(
    "Backtests",
    "When to retrain, replayed over labelled history with the production code: "
    "quality against retraining cost.",
)
entries = common.backtests(ctx.key)
if not entries:
    st.info(
        "No backtest results yet. In the project's folder run e.g. `mlops backtest --data "
        "history.parquet --batch-period 7D`: its results are saved under "
        f"`{views.backtests_dir(ctx.settings)}` and shown here (see docs/backtest.md)."
    )
    st.stop()

by_path = {str(e.path): e for e in entries}
path = st.selectbox(
    "Result",
    list(by_path),
    key="backtest_pick",
    format_func=lambda p: (
        f"{by_path[p].name} · {by_path[p].dataset} · {by_path[p].modified:%Y-%m-%d %H:%M}"
    ),
)
entry = by_path[path]
raw = common.backtest_result(path, entry.path.stat().st_mtime)
st.caption(
    f"{raw.get('dataset')}: {raw.get('batches')} batches scored, task {raw.get('task')}, "
    f"compared on {raw.get('metric_name')}"
    + (f"; true drift at batches {raw['drift_batches']}" if raw.get("drift_batches") else "")
)
table = views.backtest_table(raw)
st.dataframe(
    table,
    hide_index=True,
    key="backtest_table",
    column_config={
        table.columns[1]: st.column_config.NumberColumn(format="%.4f"),
        "retrain rate": st.column_config.NumberColumn(format="percent"),
        "CPU s": st.column_config.NumberColumn(format="%.1f"),
    },
)
if not raw["strategies"]:
    st.info("This result holds no strategy.")
    st.stop()
names = [x["name"] for x in raw["strategies"]]
colours = strategy_colours(names)
default = shown_by_default(names)
show_all = len(default) < len(names) and st.toggle(
    f"Chart all {len(names)} strategies",
    key=f"backtest_all:{entry.name}",
    help="By default the charts compare the policy with never retraining (static) and "
    "retraining on every batch.",
)
if show_all:
    chosen = names
elif len(default) < len(names):
    chosen = st.multiselect(
        "Strategies on the charts",
        names,
        default=default,
        key=f"backtest_strategies:{entry.name}",
    )
else:
    chosen = names
if not chosen:
    st.info("Pick a strategy to chart.")
    st.stop()
figs = figures(dict(raw, strategies=[x for x in raw["strategies"] if x["name"] in chosen]))
st.plotly_chart(recolour(figs["over_time"], colours), key="backtest_over_time")
st.plotly_chart(recolour(figs["cost"], colours), key="backtest_cost")
notes = (raw.get("settings") or {}).get("notes") or []
for n in notes:
    st.caption(f"note: {n}")
