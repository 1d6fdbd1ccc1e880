"""Overview: the champion, its live metric with retrains, promotions and rollbacks marked, the
drift status, pending approvals, service health and the last retraining decisions."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common
from mlops_core.store import utcnow

ctx = common.page_header("Overview")
key = ctx.key

champ = common.champion(key)
versions = common.versions_or_error(key)
pending = [v for v in versions if v.status == "pending_approval"]
drift = common.latest_drift(key)

# the champion, drift, approvals, services ----------------------------------------------------
c1, c2, c3, c4 = st.columns(4)
with c1, st.container(border=True):
    if champ.version:
        st.metric("Champion", f"v{champ.version}")
        st.caption(f"since {common.when(champ.since)}"
                   + (f" · {champ.action.replace('_', ' ')} by **{champ.by}**" if champ.by
                      else ""))
        if champ.reason:
            st.caption(f"“{champ.reason[:200]}”")
    else:
        st.metric("Champion", "none")
        st.caption("No champion yet: approve a version on **Approvals** or run "
                   "`mlops approve VERSION --by NAME`.")
with c2, st.container(border=True):
    if drift is None:
        st.metric("Data drift", "not monitored")
        st.caption("No monitoring run yet: run `mlops monitor` (or the monitor deployment).")
    else:
        label = {"ok": "no drift", "drift": "DRIFT", "not_enough_data": "not enough data"}.get(
            drift.status, drift.status)
        st.metric("Data drift", label)
        share = "" if drift.drift_share is None else f"{drift.drift_share:.0%} of columns · "
        st.caption(f"{share}run {drift.run} · {common.when(drift.at)}"
                   + (f" · {', '.join(drift.drifted_columns[:5])}" if drift.drifted_columns
                      else ""))
with c3, st.container(border=True):
    st.metric("Pending approvals", len(pending))
    if pending:
        st.caption("awaiting a decision: " + ", ".join(f"v{v.version}" for v in pending[:8]))
        st.page_link("app_pages/approvals.py", label="Decide on Approvals", icon="✅")
    else:
        st.caption("Nothing awaits a decision.")
with c4, st.container(border=True):
    health = common.service_health(key)
    up = [s for s in health if s.healthy]
    st.metric("Services healthy", f"{len(up)} / {len(health)}")
    st.caption(" · ".join(f"{'🟢' if s.healthy else ('🔴' if s.running else '⚪')} {s.name}"
                          for s in health))

if champ.version and champ.metrics:
    st.caption("Champion's hold-out metrics at training: " + "  ".join(
        f"**{k}** {common.fmt(v)}" for k, v in list(champ.metrics.items())[:6])
        + (f" · data window {champ.data_window}" if champ.data_window else ""))

# the live metric -------------------------------------------------------------------------------
st.subheader("Live metric")
RANGES = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365, "all": None}
span = st.segmented_control("Range", list(RANGES), default="all", key="overview_range",
                            label_visibility="collapsed") or "all"
days = RANGES[span]
start = utcnow() - timedelta(days=days) if days else None
series = common.metric_series(key, start, None)
events = common.model_events(key, start, None)
if series.empty:
    st.info("No monitoring runs yet, so no live metric: run `mlops monitor` after new batches "
            "arrive (the monitor deployment does it on its schedule).")
else:
    m = series["metric"].dropna().iloc[-1] if series["metric"].notna().any() else "metric"
    fig = go.Figure()
    if series["estimated"].notna().any():
        fig.add_trace(go.Scatter(x=series["at"], y=series["estimated_high"], mode="lines",
                                 line_width=0, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=series["at"], y=series["estimated_low"], mode="lines",
                                 line_width=0, fill="tonexty", fillcolor="rgba(99,110,250,0.15)",
                                 name="estimate 90% interval", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=series["at"], y=series["estimated"], mode="lines+markers",
                                 line_dash="dot", name=f"estimated {m} (no labels)"))
    if series["realised"].notna().any():
        fig.add_trace(go.Scatter(x=series["at"], y=series["realised"], mode="lines+markers",
                                 name=f"realised {m}", line_width=2.5,
                                 customdata=series[["run", "champion_version"]],
                                 hovertemplate="%{y:.4f}<br>run %{customdata[0]} · "
                                               "champion v%{customdata[1]}<extra></extra>"))
    if series["baseline"].notna().any():
        fig.add_trace(go.Scatter(x=series["at"], y=series["baseline"], mode="lines",
                                 line_shape="hv", line_dash="dash", line_color="grey",
                                 name="champion at training"))
    values = pd.concat([series[c] for c in ("realised", "estimated", "baseline")]).dropna()
    low = float(values.min()) if len(values) else 0.0
    marks = {"retrain": ("triangle-up", "#636efa"), "promotion": ("star", "#00a36c"),
             "rollback": ("x", "#ef553b")}
    for kind, (symbol, colour) in marks.items():
        ev = events[events["kind"] == kind]
        if ev.empty:
            continue
        fig.add_trace(go.Scatter(
            x=ev["at"], y=[low] * len(ev), mode="markers", name=kind + "s",
            marker_symbol=symbol, marker_size=12, marker_color=colour,
            customdata=ev[["version", "actor", "reason"]].astype(str).map(lambda s: s[:120]),
            hovertemplate=f"{kind} v%{{customdata[0]}} by %{{customdata[1]}}<br>"
                          "%{customdata[2]}<extra></extra>"))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), hovermode="closest",
                      legend=dict(orientation="h", y=1.12), yaxis_title=m,
                      template="plotly_white")
    st.plotly_chart(fig, key="overview_metric")
    if not series["realised"].notna().any():
        st.caption("No labelled rows in these runs yet: the realised metric appears when labels "
                   "arrive; the estimate needs none.")

# decisions and history -------------------------------------------------------------------------
left, right = st.columns([3, 2])
with left:
    st.subheader("Last policy decisions")
    decided = common.recent_decisions(key, 10)
    if not decided:
        st.info("No retraining decisions yet: each monitoring run records one, with its "
                "reasons.")
    else:
        st.dataframe(pd.DataFrame([{
            "at": d["at"], "run": d["monitoring_run"],
            "retrain": "yes" if d["retrain"] else "no",
            "reasons": "; ".join(d["reasons"]) or "-",
            "held back": "; ".join(d["held_back"]),
            "acted": (f"v{d['acted']['version']} {d['acted'].get('status', '')}"
                      if (d.get("acted") or {}).get("version") else "")} for d in decided]),
            hide_index=True, key="overview_decisions")
with right:
    st.subheader("Champion history")
    hist = common.champion_history(key)
    if hist.empty:
        st.info("No version has been champion yet.")
    else:
        st.dataframe(hist.astype({"until": object}).fillna({"until": "now"}), hide_index=True,
                     key="overview_history")
