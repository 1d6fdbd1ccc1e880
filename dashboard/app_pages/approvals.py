"""Approvals: each pending candidate with the gate's evidence, approve or reject with a comment,
roll back to an earlier approved version, and the audit log (filterable, as CSV)."""

from __future__ import annotations

import streamlit as st

from dashboard import common
from mlops_core.ops import actions
from mlops_core.read import views

ctx = common.page_header("Approvals")
key = ctx.key
versions = common.versions_or_error(key)
champ = common.champion(key)
shown = champ.version  # what the person sees now: an approval expects it to still hold
CSV_ROWS = 10_000
pending = sorted(
    (v for v in versions if v.status == "pending_approval"),
    key=lambda v: int(v.version),
    reverse=True,
)


def _approve(version: str, expected: str | None) -> None:
    comment = st.session_state.get(f"approve_comment_{version}", "")
    parts = ("approve", version, expected, comment)
    res = common.write(
        parts,
        lambda who, rid: actions.approve(
            common.settings(),
            who,
            version,
            comment=comment,
            request_id=rid,
            expected_champion=expected,
            registry=common.registry(),
        ),
    )
    common.decision_message(res, parts)


def _reject(version: str) -> None:
    comment = st.session_state.get(f"approve_comment_{version}", "")
    parts = ("reject", version, comment)
    res = common.write(
        parts,
        lambda who, rid: actions.reject(
            common.settings(),
            who,
            version,
            comment=comment,
            request_id=rid,
            registry=common.registry(),
        ),
    )
    common.decision_message(res, parts)


def _rollback(expected: str | None) -> None:
    target = st.session_state.get("rollback_to")
    comment = st.session_state.get("rollback_comment", "")
    parts = ("rollback", target, expected, comment)
    res = common.write(
        parts,
        lambda who, rid: actions.rollback(
            common.settings(),
            who,
            to=target,
            comment=comment,
            request_id=rid,
            expected_champion=expected,
            registry=common.registry(),
        ),
    )
    common.decision_message(res, parts)


st.caption(
    f"Champion now: **v{shown}**" if shown else "No champion yet: the first approval makes one."
)

# pending candidates ----------------------------------------------------------------------------
st.subheader(f"Awaiting a decision ({len(pending)})")
if not pending:
    st.info(
        "Nothing awaits approval. A version arrives here when `mlops train` (or the train "
        "deployment) registers one whose gate passed."
    )
can_decide = ctx.can("approve")
for info in common.paged_items(pending, "approvals_page", 5):
    v = info.version
    with st.container(border=True):
        st.markdown(f"#### v{v}")
        st.caption(
            f"trigger **{info.trigger or '-'}** · registered {common.when(info.created)}"
            f" · {info.tags.get('model_type', '')} · {info.tags.get('rows', '?')} rows · "
            f"data {info.tags.get('data_window', '-')}"
        )
        ev = common.gate_evidence(key, v)
        left, right = st.columns([2, 3])
        with left:
            verdict = {True: "passed", False: "failed", None: "unknown"}[ev.passed]
            st.markdown(
                f"**Gate {verdict}**"
                + (
                    f" (against champion v{ev.champion_version}"
                    + (
                        f" on the same {ev.holdout_rows:,} hold-out rows)"
                        if ev.holdout_rows
                        else ")"
                    )
                    if ev.champion_version
                    else " (no champion to compare with)"
                )
            )
            for r in ev.reasons:
                st.markdown(
                    ("✅ " if r.startswith("PASS") else "❌ ")
                    + r.removeprefix("PASS ").removeprefix("FAIL ")
                )
        with right:
            common.table(
                ev.metrics,
                key=f"gate_metrics_{v}",
                hide_index=None,
                column_config={
                    c: st.column_config.NumberColumn(format="%.4f") for c in ev.metrics.columns
                },
            )
            if not ev.slices.empty:
                with st.expander(f"Slices ({ev.metric})"):
                    common.table(ev.slices, key=f"gate_slices_{v}")
        a, b = st.columns(2)
        if a.toggle(
            "Show the performance report (hold-out, champion as reference)",
            key=f"show_performance_{v}",
        ):
            report = common.run_file(key, v, "evidence/performance.html")
            if report is None:
                st.caption("This version has no performance report.")
            else:
                common.show_report(report, alt=f"Performance report of v{v}")
        if ev.drift_report is not None:
            run, path = ev.drift_report
            if b.toggle(
                f"Show the drift report at training time (run {run})", key=f"show_drift_{v}"
            ):
                common.show_report(path, alt=f"Drift report of run {run}")
        else:
            b.caption("No drift report before this version was trained.")
        if can_decide:
            with st.form(f"decide_{v}", border=False):
                st.text_area(
                    "Comment (required; kept in the audit log)",
                    key=f"approve_comment_{v}",
                    height=68,
                )
                with st.container(horizontal=True):
                    st.form_submit_button(
                        f"Approve v{v} as champion",
                        key=f"approve_{v}",
                        type="primary",
                        on_click=_approve,
                        args=(v, shown),
                    )
                    st.form_submit_button(
                        f"Reject v{v}", key=f"reject_{v}", on_click=_reject, args=(v,)
                    )
        else:
            st.caption("Only approvers can approve or reject; you can read the evidence.")

# rollback --------------------------------------------------------------------------------------
st.subheader("Roll back")
targets = views.rollback_targets(versions, shown)
if not targets:
    st.info("No earlier approved version to go back to.")
elif ctx.can("rollback"):
    by_version = {v.version: v for v in versions}
    with st.form("rollback", border=True):
        st.selectbox(
            "Make champion again",
            targets,
            key="rollback_to",
            format_func=lambda v: (
                f"v{v} ({by_version[v].status}, registered {common.when(by_version[v].created)})"
            ),
        )
        st.text_area("Comment (required; kept in the audit log)", key="rollback_comment", height=68)
        st.form_submit_button("Roll back", key="rollback_submit", on_click=_rollback, args=(shown,))
else:
    st.caption(
        "Earlier approved versions: "
        + ", ".join(f"v{t}" for t in targets)
        + ". Only approvers can roll back."
    )

# the audit log ---------------------------------------------------------------------------------
st.subheader("Audit log")
facets = common.audit_facets(key)
f1, f2, f3, f4 = st.columns([1, 2, 1, 2])
actor = f1.selectbox("Who", ["(anyone)", *facets.get("actor", [])], key="audit_actor")
acts = f2.multiselect("Actions", facets.get("action", []), key="audit_action")
version = f3.text_input("Version", key="audit_version").strip().lstrip("v") or None
rng = f4.date_input("Between", value=(), key="audit_range")
start, end = common.day_range(rng)
filters = (None if actor == "(anyone)" else actor, tuple(acts), version, start, end)
total = common.count_audit(key, *filters)
offset = common.page_number(total, "audit_page")
page = common.audit(key, *filters, common.PAGE_SIZE, offset)
st.caption(f"{total:,} record(s), newest first.")
common.table(page, key="audit_table", column_config={"reason": common.wide()})
if total:
    everything = common.audit(key, *filters, CSV_ROWS, 0)
    if total > CSV_ROWS:
        st.caption(f"The CSV holds the newest {CSV_ROWS:,}; narrow the filters for older ones.")
    st.download_button(
        "Download as CSV",
        views.audit_csv(everything),
        file_name=f"{ctx.project}-audit.csv",
        mime="text/csv",
        key="audit_csv",
        on_click="ignore",
    )
