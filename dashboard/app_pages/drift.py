"""Drift: per-column drift over monitoring runs as a heat map, one run in detail with its full
Evidently report, the data-quality findings and the quarantine (with release for approvers)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import common
from mlops_core.ops import actions

ctx = common.page_header(
    "Drift", "New data against the champion's reference sample, per column and per run."
)
key = ctx.key

# runs in a time range: the heat map ----------------------------------------------------------
lo, hi = common.monitoring_span(key)
picked_run = None
if lo is None or hi is None:
    st.info(
        "No monitoring runs yet: run `mlops monitor` after new batches arrive (the monitor "
        "deployment does it on its schedule). Each run compares the new batches with the "
        "champion's reference sample."
    )
else:
    first = max(lo, hi - timedelta(days=30)).date()
    rng = st.date_input(
        "Monitoring runs between",
        value=(first, hi.date()),
        min_value=lo.date(),
        max_value=hi.date(),
        key="drift_range",
    )
    start, end = common.day_range(rng)
    total = common.count_monitoring_runs(key, start, end)
    matrix = common.drift_matrix(key, start, end, 300)
    if matrix.empty:
        st.info("No monitoring run in this range: widen it.")
    else:
        shown = len(matrix.runs)
        st.subheader("Per-column drift over time")
        st.caption(
            f"{shown} run(s)"
            + (f" (the newest {shown} of {total})" if total > shown else "")
            + ". Severity: 1 is the column's threshold, "
            "above 1 drifted (a distance over its threshold, or the threshold over a "
            "p-value); grey: not tested (all missing or constant)."
        )
        # columns at the data time each run's rows reach (run time without a time column),
        # in that order; the run and its time in the hover
        runs_at = matrix.runs.assign(x=matrix.runs["data_end"].fillna(matrix.runs["at"]))
        runs_at = runs_at.sort_values("x", kind="stable")
        order = list(runs_at["run"])
        by_data = bool(matrix.runs["data_end"].notna().any())
        sev = matrix.severity.reindex(order)
        labels = [
            f"{pd.Timestamp(t):%Y-%m-%d %H:%M} · {r}"
            for r, t in zip(runs_at["run"], runs_at["x"], strict=True)
        ]
        about = [
            f"run {r} at {pd.Timestamp(a):%Y-%m-%d %H:%M}"
            + (
                f"<br>data {pd.Timestamp(d0):%Y-%m-%d %H:%M} → {pd.Timestamp(d1):%Y-%m-%d %H:%M}"
                if pd.notna(d1) and pd.notna(d0)
                else ""
            )
            + (f"<br>slices behind: {f}" if f else "")
            for r, a, d0, d1, f in zip(
                runs_at["run"],
                runs_at["at"],
                runs_at["data_start"],
                runs_at["data_end"],
                runs_at["flagged_slices"],
                strict=True,
            )
        ]
        cols = list(sev.columns)
        score = matrix.score.reindex(index=order, columns=cols)
        hover = [
            [
                f"{c}<br>{about[i]}<br>score {common.fmt(score.iat[i, j])} "
                f"({matrix.method.get(c, '')})<br>severity {common.fmt(sev.iat[i, j], 2)}"
                for i in range(len(labels))
            ]
            for j, c in enumerate(cols)
        ]
        fig = go.Figure(
            go.Heatmap(
                z=sev.T.to_numpy(dtype=float),
                x=labels,
                y=cols,
                zmin=0,
                zmax=3,
                colorscale=[
                    [0, "#e8f5e9"],
                    [1 / 3 - 0.001, "#a5d6a7"],
                    [1 / 3, "#ffcc80"],
                    [1, "#c62828"],
                ],
                colorbar=dict(
                    title="severity",
                    tickvals=[0, 1, 2, 3],
                    ticktext=["0", "1 threshold", "2", "≥3"],
                ),
                hovertext=hover,
                hoverinfo="text",
                xgap=1,
                ygap=1,
            )
        )
        fig.update_layout(
            height=max(260, 28 * len(cols) + 120),
            margin=dict(l=10, r=10, t=10, b=10),
            xaxis=dict(
                type="category",
                showticklabels=shown <= 40,
                title="data time (the newest row of each run) · run"
                if by_data
                else "run time · run",
            ),
            template="plotly_white",
        )
        st.plotly_chart(fig, key="drift_heatmap")

        st.subheader("Monitoring runs")
        offset = common.page_number(total, "drift_runs_page")
        runs = common.monitoring_runs(key, start, end, common.PAGE_SIZE, offset)
        common.table(
            runs.drop(columns=["report_path"]).assign(report=runs["report_path"].notna()),
            key="drift_runs",
            column_config={
                "drift_share": st.column_config.NumberColumn(format="%.2f"),
                "weighted_drift_share": st.column_config.NumberColumn(format="%.2f"),
            },
        )
        options = list(matrix.runs["run"])[::-1]  # newest first
        when = dict(zip(matrix.runs["run"], matrix.runs["at"], strict=True))
        status = dict(zip(matrix.runs["run"], matrix.runs["status"], strict=True))
        picked_run = st.selectbox(
            "Run",
            options,
            key="drift_run",
            format_func=lambda r: f"{r} · {common.when(when[r])} · {status[r]}",
        )

# one run in detail ----------------------------------------------------------------------------
if picked_run:
    detail = common.monitoring_run(key, picked_run)
    s = detail.summary
    d = s.get("drift") or {}
    st.subheader(f"Run {picked_run}")
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Status", s.get("status", ""))
    c2.metric("Drifted share", "-" if d.get("drift_share") is None else f"{d['drift_share']:.0%}")
    c3.metric(
        "Rows",
        f"{s.get('rows', 0):,}",
        f"{s.get('labelled_rows', 0):,} labelled",
        delta_color="off",
    )
    c4.metric("Champion", f"v{s.get('champion_version')}")
    st.caption(d.get("message", ""))
    metric = s.get("metric", "")
    perf = (s.get("performance") or {}).get(metric)
    est = (s.get("estimated") or {}).get(metric)
    line = []
    if perf is not None:
        line.append(f"realised {metric} **{common.fmt(perf)}**")
    if est:
        line.append(
            f"estimated without labels **{common.fmt(est.get('value'))}** "
            f"[{common.fmt(est.get('low'))}, {common.fmt(est.get('high'))}]"
        )
    base = (s.get("baseline") or {}).get(metric)
    if base is not None:
        line.append(f"champion at training {common.fmt(base)}")
    if line:
        st.markdown(" · ".join(line))
    if d.get("columns"):
        common.table(
            pd.DataFrame(d["columns"]),
            key="drift_columns",
            column_config={"score": st.column_config.NumberColumn(format="%.4f")},
        )
    checks = s.get("slices") or []
    if checks:
        st.markdown(
            f"**Slices** ({', '.join(s.get('slice_columns') or [])}): the champion's {metric} "
            "per slice, relative to the whole, against the same slice in its hold-out (else "
            "its first monitoring run); flagged when it fell behind by more than the noise "
            "(standard errors from the rows, at least 2, more when many slices are compared) "
            "and the gate's slice tolerance"
        )
        flagged = [c for c in checks if c.get("flagged")]
        if flagged:
            st.warning(
                f"{len(flagged)} slice(s) fell behind the rest: "
                + "; ".join(common.plain(c["text"]) for c in flagged[:5])
            )
        common.table(
            pd.DataFrame(checks)[
                ["name", "rows", "current", "baseline", "regression", "noise", "flagged", "source"]
            ],
            key="drift_slices",
            column_config={
                k: st.column_config.NumberColumn(format="%.4f")
                for k in ("current", "baseline", "regression", "noise")
            },
        )
    fired = [det for det in s.get("detectors") or [] if det.get("fired")]
    if fired:
        st.warning("Concept-drift detectors fired: " + ", ".join(det["name"] for det in fired))
    if detail.decision:
        dec = detail.decision
        common.decision_box(dec)
    if detail.report is not None:
        report = detail.report
        st.markdown("**Evidently report** (data drift and data summary)")
        # off by default: the report is megabytes, sent to the browser on every render
        show = st.toggle(
            f"Show the report here ({report.stat().st_size / 1e6:.1f} MB)", key="drift_show_report"
        )
        with st.container(horizontal=True, vertical_alignment="center"):
            st.download_button(
                "Download it to open in a browser tab",
                partial(Path.read_bytes, report),
                file_name=report.name,
                mime="text/html",
                key="drift_report_download",
                on_click="ignore",
                icon=":material/open_in_new:",
            )
            st.caption(f"`{report}`")
        if show:
            common.show_report(report, alt=f"Evidently drift report of run {picked_run}")
    else:
        st.info(
            "This run has no HTML report (written when any column drifts, per "
            "`monitoring.report`). "
            "To get one: `mlops monitor --batch BATCH --report`."
        )

# data quality --------------------------------------------------------------------------------
st.divider()
st.subheader("Data quality")
counts = common.batch_counts(key)
st.caption(" · ".join(f"{n:,} {k}" for k, n in sorted(counts.items())) or "No batches yet.")
warned = common.batches_with_findings(key)
if not warned.empty:
    with st.expander(f"Accepted batches with warnings ({len(warned)})"):
        common.table(warned, key="drift_warnings", column_config={"findings": common.wide()})

st.subheader("Quarantine")
show_released = st.toggle("Include released batches", key="quarantine_released")
held = common.quarantined(key, show_released)


def _release(batch_id: str) -> None:
    comment = st.session_state.get(f"release_comment_{batch_id}", "")
    force = bool(st.session_state.get(f"release_force_{batch_id}", False))
    parts = ("release", batch_id, comment, force)
    res = common.write(
        parts,
        lambda who, rid: actions.release(
            common.settings(),
            who,
            batch_id,
            comment=comment,
            request_id=rid,
            force=force,
            meta=common.meta(),
        ),
    )
    if res is None:
        return
    if res.released:
        common.flash("success", f"{batch_id}: {res.message}")
    else:
        common.forget_request(*parts)
        common.flash("error", f"{batch_id} was not released: {res.message}")


if not held:
    st.info("Nothing in quarantine." if not show_released else "Nothing was ever quarantined.")
else:
    can_release = ctx.can("release")
    for rec in common.paged_items(held, "quarantine_page", 10):
        title = f"{rec.id} · {rec.status} · {rec.rows:,} rows · {common.plain(rec.reason[:120])}"
        with st.expander(title, expanded=rec.status == "quarantined" and len(held) <= 3):
            st.caption(
                f"from {common.plain(rec.origin)} · received {common.when(rec.created_at)}"
                + (f" · released as {', '.join(rec.released_as)}" if rec.released_as else "")
            )
            if rec.findings:
                common.table(
                    pd.DataFrame(rec.findings),
                    key=f"findings_{rec.id}",
                    column_config={"message": common.wide()},
                )
            if rec.status != "quarantined":
                continue
            if can_release:
                st.caption(
                    "Fix the data in its quarantine folder or the contract first; "
                    "release replays it. Force accepts readable rows despite the "
                    "findings (recorded)."
                )
                st.text_input("Comment", key=f"release_comment_{rec.id}")
                st.checkbox("Force: accept despite the findings", key=f"release_force_{rec.id}")
                st.button("Release", key=f"release_{rec.id}", on_click=_release, args=(rec.id,))
            else:
                st.caption("Only approvers can release a batch.")
