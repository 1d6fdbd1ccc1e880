"""Overview: the champion, its live metric with retrains, promotions and rollbacks marked, the
drift status, pending approvals, service health and the last retraining decisions."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from dashboard import charts, common
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
        st.caption(
            f"since {common.when(champ.since)}"
            + (
                f" · {(champ.action or '').replace('_', ' ')} by **{common.plain(champ.by)}**"
                if champ.by
                else ""
            )
        )
        if champ.reason:
            st.caption(f"“{common.plain(champ.reason[:200])}”")
    else:
        st.metric("Champion", "none")
        st.caption(
            "No champion yet: approve a version on **Approvals** or run "
            "`mlops approve VERSION --by NAME`."
        )
with c2, st.container(border=True):
    if drift is None:
        st.metric("Data drift", "not monitored")
        st.caption("No monitoring run yet: run `mlops monitor` (or the monitor deployment).")
    else:
        label = {"ok": "no drift", "drift": "DRIFT", "not_enough_data": "not enough data"}.get(
            drift.status, drift.status
        )
        st.metric("Data drift", label)
        share = "" if drift.drift_share is None else f"{drift.drift_share:.0%} of columns · "
        cols = drift.drifted_columns
        st.caption(
            f"{share}run {drift.run} · {common.when(drift.at)}"
            + (f" · data to {common.when(drift.data_end)}" if drift.data_end else "")
            + (
                " · drifted: "
                + ", ".join(cols[:5])
                + (f" and {len(cols) - 5} more" if len(cols) > 5 else "")
                if cols
                else " · no column drifted"
            )
            + (" · report on **Drift**" if drift.report else "")
        )
with c3, st.container(border=True):
    st.metric("Pending approvals", len(pending))
    if pending:
        st.caption("awaiting a decision: " + ", ".join(f"v{v.version}" for v in pending[:8]))
        st.page_link("app_pages/approvals.py", label="Decide on Approvals", icon="✅")
    else:
        st.caption("Nothing awaits a decision.")
with c4, st.container(border=True):
    health = common.service_health(key)
    checked = [s for s in health if s.checked]  # a store MLflow opens directly has no health
    up = [s for s in checked if s.healthy]
    st.metric("Services healthy", f"{len(up)} / {len(checked)}")
    st.caption(
        " · ".join(
            f"{common.SERVICE_ICONS.get(s.state, '')} {s.name}"
            + ("" if s.checked else f" ({s.state})")
            for s in health
        )
    )

if drift is not None and drift.flagged_slices:
    flagged = drift.flagged_slices
    st.warning(
        f"**{len(flagged)} slice(s) fell behind the rest** in run {drift.run} (beyond noise, "
        "against the same slices at training): "
        + "; ".join(common.plain(c["text"]) for c in flagged[:3])
        + (f"; and {len(flagged) - 3} more" if len(flagged) > 3 else "")
    )
    st.page_link("app_pages/drift.py", label="Slices of the run on Drift", icon="🔍")

if champ.version and champ.metrics:
    st.caption(
        "Champion's hold-out metrics at training: "
        + "  ".join(f"**{k}** {common.fmt(v)}" for k, v in list(champ.metrics.items())[:6])
        + (f" · data window {champ.data_window}" if champ.data_window else "")
    )

# the live metric -------------------------------------------------------------------------------
st.subheader("Live metric")
RANGES = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365, "all": None}
span = (
    st.segmented_control(
        "Range", list(RANGES), default="all", key="overview_range", label_visibility="collapsed"
    )
    or "all"
)
days = RANGES[span]
start = utcnow() - timedelta(days=days) if days else None
series = common.metric_series(key, start, None)
events = common.model_events(key, start, None)
if series.empty:
    st.info(
        "No monitoring runs yet, so no live metric: run `mlops monitor` after new batches "
        "arrive (the monitor deployment does it on its schedule)."
    )
else:
    m = series["metric"].dropna().iloc[-1] if series["metric"].notna().any() else "metric"
    fig = charts.live_metric_figure(series, events, m)
    st.plotly_chart(fig, key="overview_metric")
    if not series["realised"].notna().any():
        st.caption(
            "No labelled rows in these runs yet: the realised metric appears when labels "
            "arrive; the estimate needs none."
        )

# decisions and history -------------------------------------------------------------------------
# one under the other, each across the page: their reasons are long
st.subheader("Last policy decisions")
decided = common.recent_decisions(key, 10)
if not decided:
    st.info("No retraining decisions yet: each monitoring run records one, with its reasons.")
else:
    common.table(
        pd.DataFrame(
            [
                {
                    "at": d["at"],
                    "run": d["monitoring_run"],
                    "retrain": "yes" if d["retrain"] else "no",
                    "reasons": "; ".join(d["reasons"])
                    or (
                        "nearest: " + "; ".join(d["nearest"])
                        if d.get("nearest")
                        else common.MISSING
                    ),
                    "held back": "; ".join(d["held_back"])
                    + (
                        f" (pending since {d['pending_since'][:16]})"
                        if d.get("pending_since")
                        else ""
                    )
                    or common.MISSING,
                    "acted": (
                        f"v{d['acted']['version']} {d['acted'].get('status', '')}".strip()
                        if (d.get("acted") or {}).get("version")
                        else common.MISSING
                    ),
                }
                for d in decided
            ]
        ),
        key="overview_decisions",
        # reasons wide; held back and acted as wide as what they hold
        column_config={"reasons": common.wide()},
    )
st.subheader("Champion history")
hist = common.champion_history(key)
if hist.empty:
    st.info("No version has been champion yet.")
else:
    hist = common.for_table(hist)
    common.table(
        hist.assign(until=hist["until"].fillna("now")),
        key="overview_history",
        column_order=["version", "since", "until", "by", "action", "reason"],
        column_config={"reason": common.wide()},
    )
