"""Pipeline: the services (their addresses as links), Prefect deployments with their schedules
and next runs, the flow runs that ran (newest first) and, apart, those scheduled ahead, and a
request to retrain now."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import common
from mlops_core.ops import actions
from mlops_core.read import pipeline as pipeline_read

ctx = common.page_header("Pipeline")
key = ctx.key

STATE_ICON = {
    "COMPLETED": "🟢",
    "RUNNING": "🔵",
    "PENDING": "⚪",
    "SCHEDULED": "⚪",
    "FAILED": "🔴",
    "CRASHED": "🔴",
    "CANCELLED": "⚫",
    "CANCELLING": "⚫",
    "PAUSED": "🟡",
}
RUN_COLUMNS = {  # the flow runs' tables: a state icon, times, a link to the run in Prefect's UI
    "seconds": st.column_config.NumberColumn(format="%.1f"),
    "link": st.column_config.LinkColumn("Prefect", display_text="open"),
}


@st.cache_data(ttl=15, show_spinner=False)
def _pipeline(key: str) -> pipeline_read.PipelineRuns:
    return pipeline_read.pipeline_runs(common.settings(key))


def _runs_frame(rows: list[dict[str, object]], drop: tuple[str, ...] = ()) -> pd.DataFrame:
    runs = pd.DataFrame(rows)
    runs.insert(2, "", runs["state_type"].map(lambda s: STATE_ICON.get(str(s), "")))
    return runs.drop(columns=["state_type", *drop])


def _request_retrain() -> None:
    reason = st.session_state.get("retrain_reason", "")
    parts = ("request_retrain", reason)
    res = common.write(
        parts,
        lambda who, rid: actions.request_retrain(
            common.settings(), who, reason=reason, request_id=rid, meta=common.meta()
        ),
    )
    if res is None:
        return
    if res.outcome == "applied":
        common.flash("success", f"Retraining requested by {res.requested_by}: {res.message}")
    else:
        common.flash("info", f"Already requested, nothing repeated: {res.message}")


# services --------------------------------------------------------------------------------------
st.subheader("Services")
health = common.service_health(key)
services = pd.DataFrame(
    [
        {
            "service": s.name,
            "health": common.service_label(s),
            "url": pipeline_read.service_link(s.url),
            "pid": str(s.pid) if s.pid else common.MISSING,
        }
        for s in health
    ]
)
stores = {s.name: s.url for s in health if s.url and not pipeline_read.service_link(s.url)}
if stores:  # an address that is no web page (a store MLflow opens itself) is shown as text
    services.insert(3, "store", services["service"].map(stores))
common.table(
    services,
    key="pipeline_services",
    column_config={"url": st.column_config.LinkColumn(width="large")},
)
if not any(s.running for s in health):
    st.caption("Nothing runs: start the services with `mlops up`.")

# Prefect ---------------------------------------------------------------------------------------
st.subheader("Deployments")
ps = _pipeline(key)
if ps.api_url is None:
    st.warning(
        "The project's Prefect server is not running, so there are no schedules or flow "
        "runs to show: start it with `mlops up`."
    )
elif not ps.reachable:
    st.warning(
        f"Prefect at {ps.api_url} cannot be reached ({ps.error}); deployments and flow "
        "runs are not shown. The rest of the dashboard is unaffected."
    )
elif not ps.deployments:
    st.info("No deployments on the Prefect server yet: run `mlops deploy --apply`.")
else:
    common.table(
        pd.DataFrame(
            [
                {
                    "deployment": d["name"],
                    "schedules": ", ".join(d["schedules"]) or "-",
                    "triggers": ", ".join(d["triggers"]) or "-",
                    "next runs": ", ".join(d["next_runs"]) or "-",
                    "last run": d["last_run"] or "-",
                }
                for d in ps.deployments
            ]
        ),
        key="pipeline_deployments",
    )
    st.subheader("Recent flow runs")
    if not ps.runs:
        st.info("No flow run has started yet.")
    else:
        common.table(_runs_frame(ps.runs), key="pipeline_runs", column_config=RUN_COLUMNS)
    with st.expander(f"Scheduled flow runs ({len(ps.scheduled)} next)", expanded=False):
        if not ps.scheduled:
            st.caption("No flow run is scheduled.")
        else:
            common.table(
                _runs_frame(ps.scheduled, drop=("start", "end", "seconds")),
                key="pipeline_scheduled",
                column_config=RUN_COLUMNS,
            )
    st.caption(f"From [{ps.api_url}]({ps.api_url}); [open the Prefect UI]({ps.ui_url}).")

# request a retrain -------------------------------------------------------------------------------
st.subheader("Request retraining")
if ctx.can("request_retrain"):
    with st.form("retrain", border=True):
        st.text_input("Why (required; kept in the audit log)", key="retrain_reason")
        st.form_submit_button("Request retraining", key="retrain_submit", on_click=_request_retrain)
    st.caption(
        "The request is recorded and published as `mlops.retrain.requested`, which "
        "starts the train deployment; the new version then awaits approval."
    )
else:
    st.caption("Only approvers can request a retrain.")
requests = common.retrain_requests(key)
if not requests.empty:
    common.table(
        requests[["at", "actor", "outcome", "reason", "request_id"]],
        key="pipeline_requests",
        column_config={"reason": common.wide()},
    )
