"""Backtests: retraining strategies replayed over history (``mlops backtest``), as the metric
over time by strategy and quality against cost."""

from __future__ import annotations

import streamlit as st

from dashboard import common
from mlops_core.backtest.engine import figures
from mlops_core.read import views

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
figs = figures(raw)
st.plotly_chart(figs["over_time"], key="backtest_over_time")
st.plotly_chart(figs["cost"], key="backtest_cost")
notes = (raw.get("settings") or {}).get("notes") or []
for n in notes:
    st.caption(f"note: {n}")
