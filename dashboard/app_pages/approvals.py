"""Approvals: each pending candidate with the gate's evidence, approve or reject with a comment,
roll back to an earlier approved version, and the audit log (filterable, as CSV)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import approval_charts as charts
from dashboard import common
from mlops_core.ops import actions
from mlops_core.read import approval, views
from mlops_core.train.evaluation import HIGHER_IS_BETTER

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


@st.cache_data(ttl=common.SLOW_TTL, show_spinner=False, max_entries=20)
def _approval_card(
    key: str, version: str, champion: str | None, rows: int
) -> approval.ApprovalCard:
    infos = common.versions(key)
    info = next(i for i in infos if i.version == version)
    return approval.approval_card(
        common.settings(key),
        common.registry(key),
        common.meta(key),
        info,
        champion,
        rows=rows,
        infos=infos,
    )


def _deltas(frame: Any, table_key: str, champion: str | None, challenger: str) -> None:
    """Metrics as rows, champion / challenger / signed delta / verdict as columns: nothing
    to scroll sideways, the delta green where the challenger is better, red where worse."""
    st.dataframe(
        charts.style_deltas(frame),
        key=table_key,
        placeholder=common.MISSING,
        column_config={
            "champion": st.column_config.Column(
                f"champion v{champion}" if champion else "champion"
            ),
            "challenger": st.column_config.Column(f"challenger v{challenger}"),
        },
    )


def _slices(frame: Any, metric: str, table_key: str) -> None:
    if frame.empty:
        st.caption("No slices: set `gate.slice_columns` (categorical columns) in mlops.yaml.")
        return
    bad = frame[frame["regressed"]]
    if len(bad):
        st.warning(
            f"⚠ {len(bad)} slice(s) regressed beyond noise on {metric}: "
            + ", ".join(
                f"{r.column}={r.value} ({r.delta:+.4f}, {int(r.rows):,} rows)"
                for r in bad.head(5).itertuples()
            )
        )
    st.dataframe(
        charts.style_slices(frame, HIGHER_IS_BETTER.get(metric, True)),
        key=table_key,
        hide_index=True,
        placeholder=common.MISSING,
    )
    st.caption(
        "noise: two standard errors of the difference for the slice's rows; a slice is "
        "flagged only when the challenger is worse by more than that."
    )


def _binary(v: str, rc: approval.RecentComparison, labels: dict[str, str]) -> None:
    shown_versions = [x for x in labels if x in rc.confusion]
    cols = st.columns(max(len(shown_versions), 1))
    for col, x in zip(cols, shown_versions, strict=False):
        col.plotly_chart(
            charts.confusion_figure(rc.confusion[x], f"{labels[x]}: at its own threshold"),
            key=f"approval_confusion_{v}_{x}",
        )
    if not rc.thresholds:
        return
    t = st.slider(
        f"Threshold on P({rc.positive})",
        0.05,
        0.95,
        0.5,
        0.05,
        key=f"approval_threshold_{v}",
    )
    tables = {labels[x]: rc.thresholds[x] for x in labels if x in rc.thresholds}
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.threshold_figure(tables, t), key=f"approval_thresholds_{v}")
    at_t = {
        name: tab.iloc[(tab["threshold"] - t).abs().argmin()].drop("threshold")
        for name, tab in tables.items()
    }
    with right:
        st.caption(f"At threshold {t:.2f} (predicted {rc.positive} when P ≥ {t:.2f})")
        common.table(
            pd.DataFrame(at_t),
            key=f"approval_threshold_table_{v}",
            hide_index=False,
            column_config={n: st.column_config.NumberColumn(format="%.3f") for n in at_t},
        )


def _multiclass(v: str, rc: approval.RecentComparison, labels: dict[str, str]) -> None:
    tables = {labels[x]: rc.per_class[x] for x in labels if x in rc.per_class}
    if not tables:
        return
    st.plotly_chart(charts.per_class_figure(tables, "f1"), key=f"approval_per_class_{v}")
    both = pd.concat(tables, axis=1)
    both.columns = [f"{a} {b}" for a, b in both.columns]
    common.table(
        both,
        key=f"approval_per_class_table_{v}",
        hide_index=False,
        column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in both.columns if "rows" not in c
        },
    )


def _recent(v: str, card: approval.ApprovalCard) -> None:
    rc = card.recent
    if rc is None:
        st.info("No labelled batch to score yet (`mlops ingest` batches with labels).")
        return
    for x, why in rc.errors.items():
        st.warning(f"v{x} could not score these rows: {why}")
    w = rc.window
    st.caption(
        f"{rc.rows:,} labelled rows from {len(w.batch_ids)} batch(es), "
        f"{common.when(w.start)} → {common.when(w.end)}; the same rows for both."
    )
    seen = {x: n for x, n in rc.trained_on.items() if n}
    if seen:
        st.caption(
            "⚠ "
            + "; ".join(
                f"v{x} was trained on {n} of these {len(w.batch_ids)} batches"
                for x, n in seen.items()
            )
            + ": its numbers here are optimistic (the hold-out above is the fair comparison)."
        )
    labels = {x: f"{r} v{x}" for r, x in (("champion", card.champion), ("challenger", v)) if x}
    left, right = st.columns([3, 2])
    with left:
        _deltas(rc.metrics, f"approval_recent_metrics_{v}", card.champion, v)
    if card.metric in rc.metrics.index:
        row = rc.metrics.loc[card.metric]
        values = {
            labels[x]: row[s] for s, x in (("champion", card.champion), ("challenger", v)) if x
        }
        right.plotly_chart(charts.metric_bars(values, card.metric), key=f"approval_metric_bar_{v}")
    if card.task == "binary":
        _binary(v, rc, labels)
    elif card.task == "multiclass":
        _multiclass(v, rc, labels)
    st.markdown(f"**Slices on these rows** ({card.metric})")
    _slices(rc.slices, card.metric, f"approval_recent_slices_{v}")


def _card_view(v: str, card: approval.ApprovalCard, *, newest: bool) -> None:
    """The evidence of pending version ``v``: the gate's verdict and checks, links to both
    MLflow runs, champion against challenger on the hold-out (signed deltas, slices flagged),
    and on the newest labelled rows (confusion matrix and thresholds, or per-class metrics)."""
    ev = card.evidence
    left, right = st.columns([2, 3])
    with left:
        verdict = {True: "passed", False: "failed", None: "unknown"}[ev.passed]
        st.markdown(
            f"**Gate {verdict}**"
            + (
                f" (against champion v{ev.champion_version}"
                + (f" on the same {ev.holdout_rows:,} hold-out rows)" if ev.holdout_rows else ")")
                if ev.champion_version
                else " (no champion to compare with)"
            )
        )
        for r in ev.reasons:
            st.markdown(
                ("✅ " if r.startswith("PASS") else "❌ ")
                + r.removeprefix("PASS ").removeprefix("FAIL ")
            )
        if card.links:
            st.markdown(
                "MLflow runs: "
                + " · ".join(
                    f"[{'challenger' if x == v else 'champion'} v{x} ↗]({url})"
                    for x, url in card.links.items()
                )
            )
    with right:
        st.markdown("**On the hold-out at training**")
        _deltas(card.holdout, f"gate_metrics_{v}", card.gate_champion, v)
    if not card.holdout_slices.empty:
        flagged = int(card.holdout_slices["regressed"].sum())
        with st.expander(
            f"Slices on the hold-out ({ev.metric})"
            + (f" — ⚠ {flagged} regressed" if flagged else ""),
            expanded=bool(flagged),
        ):
            _slices(card.holdout_slices, ev.metric, f"gate_slices_{v}")
    if st.toggle(
        f"Champion v{card.champion} against v{v} on the newest labelled rows"
        if card.champion
        else f"v{v} on the newest labelled rows",
        value=newest,
        key=f"show_recent_{v}",
    ):
        _recent(v, card)


RECENT_ROWS = 5000
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
    newest = v == pending[0].version
    with st.container(border=True, key=f"approval_card_{v}"):
        st.markdown(
            f"#### v{v}" + (" · the newest candidate" if newest and len(pending) > 1 else "")
        )
        st.caption(
            f"trigger **{info.trigger or '-'}** · registered {common.when(info.created)}"
            f" · {info.tags.get('model_type', '')} · {info.tags.get('rows', '?')} rows · "
            f"data {info.tags.get('data_window', '-')}"
        )
        card = _approval_card(key, v, shown, RECENT_ROWS)  # read once: the gate's evidence too
        ev = card.evidence
        _card_view(v, card, newest=newest)
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
rng = f4.date_input("Between", value=[], key="audit_range")  # [] a range, none picked
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
