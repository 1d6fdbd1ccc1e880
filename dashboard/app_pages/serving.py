"""Serving: the version the API serves (and the online model in shadow), its traffic and
latency, load failures, and its predictions against the outcomes that came back."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, common

ctx = common.page_header(
    "Serving",
    "The champion as `mlops serve` answers it, from its own counters and the "
    "prediction log (the last 7 days) with the labels that came back through /feedback.",
)
view = common.serving_view(ctx.key)
if view.url is None:
    st.info(
        "The serving API is not running: `mlops up` starts it (or `mlops serve` in the "
        "foreground). The prediction log below is what it served before."
    )
elif view.error:
    st.warning(f"The serving API does not answer: {view.error}")

model = view.model or {}
if model.get("last_error"):
    err = model["last_error"]
    st.error(
        f"Loading failed at {err.get('at', '?')[:19]}: {err.get('error')} "
        "The version above keeps serving."
    )
c = view.counters
cols = st.columns(6)
cols[0].metric(
    "Serving",
    f"v{model['version']}" if model.get("version") else common.MISSING,
    help=f"since {model.get('since', '')[:19]}; package sha256 "
    f"{(model.get('package_sha256') or '')[:12]}…"
    if model.get("version")
    else "no version loaded yet",
)
shadow = model.get("shadow")
cols[1].metric(
    "Online shadow",
    f"v{shadow['version']}" if shadow else "none",
    help="the newest online version predicts beside the champion (logged only)",
)
cols[2].metric(
    "Predict requests", f"{c.get('requests_ok', 0):,.0f}", help="answered since serving started"
)
cols[3].metric(
    "Refused / failed",
    f"{c.get('requests_rejected', 0):,.0f} / {c.get('requests_failed', 0):,.0f}",
    help="422/413 (bad requests) / 5xx",
)
cols[4].metric(
    "p50 / p99 ms",
    f"{c['p50_ms']:.0f} / {c['p99_ms']:.0f}" if "p50_ms" in c else common.MISSING,
    help="latency of /predict since serving started, from its histogram",
)
cols[5].metric(
    "Swaps / load failures", f"{c.get('swaps', 0):.0f} / {c.get('load_failures', 0):.0f}"
)
if c.get("log_dropped"):
    st.warning(
        f"{c['log_dropped']:,.0f} rows could not be written to the prediction log "
        "(its queue was full)."
    )

tl = view.timeline
if tl.empty:
    st.info("Nothing in the prediction log of the last 7 days.")
    st.stop()
st.subheader("Traffic")
st.caption(
    "Rows placed by "
    + (
        f"their {view.time_axis} (data time)."
        if view.time_axis != "served at"
        else "when they were served."
    )
)
st.plotly_chart(
    charts.serving_traffic_figure(tl, view.period, view.time_axis), key="serving_traffic"
)
st.subheader("Predictions against outcomes")
st.plotly_chart(
    charts.serving_outcomes_figure(tl, ctx.settings.task, view.time_axis), key="serving_outcomes"
)
st.subheader("Live metrics by version")
if view.live.empty:
    st.caption("No label has come back for the logged rows yet (POST /feedback).")
else:
    st.caption(
        "On the logged rows whose labels came back; a champion and its shadow are "
        "measured on the same rows."
    )
    common.table(view.live, key="serving_live")
