"""Models: every version with its status, trigger, data window and metrics; two or more
compared side by side on the same recent rows."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import streamlit as st

from dashboard import approval_charts as charts
from dashboard import common
from mlops_core.read import views

ctx = common.page_header("Models")
key = ctx.key
versions = common.versions_or_error(key)

if not versions:
    st.info(
        "No versions yet: train one with `mlops train` (or let the train deployment do it "
        "on its schedule); it then awaits approval on **Approvals**."
    )
    st.stop()

metric = views.primary_metric(ctx.settings)
table = views.version_table(versions, [metric])
statuses = sorted(table["status"].unique())
picked_status = st.multiselect("Status", statuses, default=statuses, key="models_status")
shown = table[table["status"].isin(picked_status)]
st.caption(
    f"{len(shown)} of {len(table)} version(s), newest first; metrics on each version's "
    "own hold-out rows at training."
)
st.dataframe(
    common.paged(shown, "models_page"),
    hide_index=True,
    key="models_table",
    column_config={
        "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        **{m: st.column_config.NumberColumn(format="%.4f") for m in table.columns[9:]},
    },
)

# live: what serving answered, champion beside the online shadow ------------------------------
live = common.serving_view(key).live
if not live.empty:
    st.subheader("Live, on served rows whose labels came back")
    st.caption(
        "From the prediction log (last 7 days): the served champion and the online "
        "model in shadow measured on the same rows (see **Serving**)."
    )
    common.table(live, key="models_live")


# comparison on the same recent rows ----------------------------------------------------------
def _preselected(infos: list[Any], champion: str | None) -> list[str]:
    """The champion and the newest version awaiting approval, else the two newest."""
    newest = sorted(infos, key=lambda i: int(i.version), reverse=True)
    pending = [i.version for i in newest if i.status == "pending_approval"]
    if champion and pending:
        return [champion, pending[0]]
    return [i.version for i in newest[:2]] if len(newest) > 1 else []


def _baseline(compared: list[str], champion: str | None) -> str:
    """What the deltas are against: the champion if compared, else the oldest version."""
    return champion if champion in compared else min(compared, key=int)


with st.container(key="compare_view"):  # one block: the browser test screenshots it
    st.subheader("Compare versions on the same recent data")
    options = list(table["version"])
    c1, c2 = st.columns([3, 1])
    picked = c1.multiselect(
        "Versions (two or more)",
        options,
        default=_preselected(versions, common.champion(key).version),
        key="compare_versions",
        max_selections=6,
        format_func=lambda v: f"v{v}",
    )
    rows = int(
        c2.number_input(
            "Newest labelled rows",
            min_value=500,
            max_value=100_000,
            value=5000,
            step=500,
            key="compare_rows",
        )
    )
    if len(picked) < 2:
        st.caption(
            "Pick two or more versions: each scores the same newest labelled rows (its "
            "predictions are kept on disk, so looking again is quick)."
        )
        st.stop()

    with st.spinner(f"Scoring {len(picked)} versions on the newest {rows:,} labelled rows..."):
        comp = common.compare(key, tuple(sorted(picked, key=int)), rows)
    if comp is None:
        st.info(
            "No labelled batch to score yet: the comparison needs accepted batches with "
            "labels (`mlops ingest`)."
        )
        st.stop()
    for v, why in comp.errors.items():
        st.warning(f"v{v} could not score these rows: {why}")
    w = comp.window
    st.caption(
        f"{comp.rows:,} labelled rows from {len(w.batch_ids)} batch(es), "
        f"{common.when(w.start)} → {common.when(w.end)}."
    )

    tabs = st.tabs(
        [
            "Metrics",
            "Slices",
            "ROC / PR" if comp.task == "binary" else "Residuals",
            "Feature importance",
            "Parameters",
            "Lineage",
        ]
    )
    with tabs[0]:
        if comp.metrics.empty:
            st.info("No version could be scored.")
        else:
            st.dataframe(
                comp.metrics.rename(index=lambda v: f"v{v}").rename_axis("compared").reset_index(),
                hide_index=True,
                key="compare_metrics",
                column_config={
                    c: st.column_config.NumberColumn(format="%.4f") for c in comp.metrics.columns
                },
            )
            base = _baseline(list(comp.metrics.index), common.champion(key).version)
            if len(comp.metrics) > 1:
                st.caption(
                    f"Signed change against v{base} (green: better, red: worse, by whether the "
                    "metric is better higher or lower)."
                )
                st.dataframe(
                    charts.style_signed_deltas(
                        charts.signed_deltas(comp.metrics, base)
                        .rename(index=lambda v: f"v{v} − v{base}")
                        .rename_axis("change")
                    ),
                    key="compare_deltas",
                )
            if comp.metric in comp.metrics.columns:
                fig = charts.metric_bars(
                    {f"v{v}": x for v, x in comp.metrics[comp.metric].items()}, comp.metric, 280
                )
                st.plotly_chart(fig, key="compare_metric_bar")
    with tabs[1]:
        if comp.slices.empty:
            st.info(
                "No slice columns: set `gate.slice_columns` (categorical columns) in mlops.yaml."
            )
        else:
            sl = comp.slices
            col = st.selectbox("Slice by", sorted(sl["column"].unique()), key="compare_slice_col")
            sub = sl[sl["column"] == col]
            value_col = comp.metric if comp.metric in sub.columns else sub.columns[-1]
            pivot = sub.pivot_table(index=["value"], columns="version", values=value_col)
            pivot.columns = [f"v{c}" for c in pivot.columns]
            rows_by_value = sub.groupby("value")["rows"].first()
            st.dataframe(
                pivot.assign(rows=rows_by_value),
                key="compare_slices",
                column_config={
                    c: st.column_config.NumberColumn(format="%.4f") for c in pivot.columns
                },
            )
            st.caption(f"{value_col} per value of {col}; slices under 200 rows are noisy.")
    with tabs[2]:
        if comp.task == "binary":
            if not comp.curves:
                st.info("No curve: the rows hold one class only.")
            else:
                roc, pr = go.Figure(), go.Figure()
                for v, c in comp.curves.items():
                    roc.add_trace(go.Scatter(x=c["roc"][0], y=c["roc"][1], name=f"v{v}"))
                    pr.add_trace(go.Scatter(x=c["pr"][0], y=c["pr"][1], name=f"v{v}"))
                roc.add_trace(
                    go.Scatter(
                        x=[0, 1],
                        y=[0, 1],
                        mode="lines",
                        line_dash="dot",
                        line_color="grey",
                        showlegend=False,
                    )
                )
                roc.update_layout(
                    title="ROC",
                    xaxis_title="false positive rate",
                    yaxis_title="true positive rate",
                    height=380,
                    template="plotly_white",
                )
                pr.update_layout(
                    title="Precision-recall",
                    xaxis_title="recall",
                    yaxis_title="precision",
                    height=380,
                    template="plotly_white",
                )
                a, b = st.columns(2)
                a.plotly_chart(roc, key="compare_roc")
                b.plotly_chart(pr, key="compare_pr")
        elif comp.task == "regression":
            fig = go.Figure()
            for v, r in comp.residuals.items():
                fig.add_trace(
                    go.Scatter(
                        x=r["prediction"],
                        y=r["residual"],
                        mode="markers",
                        marker_size=4,
                        opacity=0.5,
                        name=f"v{v}",
                    )
                )
            fig.add_hline(y=0, line_dash="dot", line_color="grey")
            fig.update_layout(
                title="Residuals (label − prediction)",
                xaxis_title="prediction",
                yaxis_title="residual",
                height=420,
                template="plotly_white",
            )
            st.plotly_chart(fig, key="compare_residuals")
        else:
            st.info("Curves are drawn for binary classification and regression.")
    with tabs[3]:
        imp = comp.importances
        if imp.empty:
            st.info("No feature importances were recorded with these versions.")
        else:
            top = imp.head(20)
            fig = go.Figure(
                [go.Bar(y=top.index, x=top[v], name=f"v{v}", orientation="h") for v in top.columns]
            )
            fig.update_layout(
                barmode="group",
                height=max(300, 24 * len(top) * len(top.columns)),
                yaxis=dict(autorange="reversed"),
                template="plotly_white",
                xaxis_title="share of importance",
                margin=dict(l=10, r=10, t=10, b=10),
            )
            st.plotly_chart(fig, key="compare_importance")
    with tabs[4]:
        par = comp.params
        if par.empty:
            st.info("No parameters recorded.")
        else:
            only = st.toggle("Only what differs", value=True, key="compare_params_diff")
            view = par[par["differs"]] if only else par
            st.dataframe(
                view.drop(columns=["differs"]).rename(columns=lambda v: f"v{v}").astype(str),
                key="compare_params",
            )
    with tabs[5]:
        if comp.lineage.empty:
            st.info("No lineage recorded.")
        else:
            lin = comp.lineage.assign(version=lambda d: "v" + d["version"])
            st.dataframe(
                lin,
                hide_index=True,
                key="compare_lineage",
                column_config={"batch_ids": st.column_config.TextColumn(width="large")},
            )
            st.caption("shared_with_first: batches in common with the first version picked.")
