"""What the CLI prints: the Rich consoles (``out`` for results, ``err`` for progress, notes and
errors), JSON documents on stdout, and the tables and reports of the commands' results."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


def _console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=140)  # logs, CI: no wrapping


out = _console()
err = _console(stderr=True)


@contextmanager
def steps(first: str) -> Iterator[Callable[[str], None]]:
    """Progress of a long command on stderr (stdout stays the result's, ``--json`` clean);
    yields the function to tell it each step's phrase.

    On a terminal: a spinner whose text follows the steps (and their details, such as the
    search's trials), with the elapsed time, gone when the command ends. Otherwise (a log, CI,
    a pipe): one line per step with the seconds since the start, so a log shows where the time
    went without a line per trial: a phrase whose step (the words before " (" or ": ") is the
    last one's only details it."""
    if err.is_terminal:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(escape(first), total=None)
            yield lambda phrase: bar.update(task, description=escape(phrase))
        return
    t0, last = time.perf_counter(), [""]

    def line(phrase: str) -> None:
        step = re.split(r": | \(", phrase, maxsplit=1)[0]
        if step != last[0]:
            last[0] = step
            err.print(f"{time.perf_counter() - t0:6.1f}s  {phrase}", markup=False, highlight=False)

    yield line


STATUS_STYLE = {
    "accepted": "green",
    "quarantined": "red",
    "duplicate": "dim",
    "released": "cyan",
    "deferred": "yellow",
    "withdrawn": "magenta",
}


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def when(ts: Any) -> str:
    return f"{ts:%Y-%m-%d %H:%M}" if ts is not None else "-"


def print_applied(outcome: str, message: str) -> None:
    """``res.message`` of a write, green when it was applied."""
    out.print(f"[green]{escape(message)}[/]" if outcome == "applied" else escape(message))


# batches ----------------------------------------------------------------------------------------
def outcome_row(table: Table, o: Any) -> None:
    style = STATUS_STYLE.get(o.status, "")
    table.add_row(
        o.id,
        f"[{style}]{o.status}[/]",
        f"{o.rows:,}",
        f"{when(o.start_time)} → {when(o.end_time)}" if o.start_time else "-",
        escape(Path(o.origin).name if "://" not in o.origin else o.origin),
        escape(o.reason if o.status != "accepted" or o.findings else ""),
    )


def batch_table(title: str) -> Table:
    t = Table(title=title, title_justify="left", expand=False)
    columns: list[tuple[str, dict[str, Any]]] = [
        ("batch", {"no_wrap": True}),
        ("status", {}),
        ("rows", {"justify": "right"}),
        ("time range", {"no_wrap": True}),
        ("from", {}),
        ("findings", {"overflow": "fold", "max_width": 70}),
    ]
    for col, kw in columns:
        t.add_column(col, **kw)
    return t


def print_batches(title: str, recs: list[Any]) -> None:
    t = batch_table(title)
    for r in recs:
        outcome_row(t, r)
    out.print(t)


def print_quarantined(rec: Any, folder: Path) -> None:
    """One quarantined batch: every finding, where its data is kept, what it was released as."""
    out.print(
        f"[bold]{rec.id}[/]  [{STATUS_STYLE.get(rec.status, '')}]{rec.status}[/]  "
        f"{rec.rows:,} rows  from {escape(rec.origin)}"
    )
    for f in rec.findings:
        color = "red" if f["severity"] == "fatal" else "yellow"
        out.print(f"  [{color}]{f['severity']:>7}[/] {f['rule']}: {escape(f['message'])}")
    out.print(f"Kept at {folder}")
    if rec.released_as:
        out.print(f"Released as {', '.join(rec.released_as)}")


# ingestion -------------------------------------------------------------------------------------
def ingest_progress() -> Progress:
    """A progress bar per file read, on stderr, gone when done."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def outcome_line(o: Any) -> str:
    """One batch's outcome as ingestion reports it."""
    note = (
        o.reason
        if o.status != "accepted"
        else ("warnings: " + ", ".join(sorted({f.rule for f in o.findings})) if o.findings else "")
    )
    return (
        f"[{STATUS_STYLE.get(o.status, '')}]{o.status:>11}[/] {o.id}  "
        f"{o.rows:>9,} rows  {escape(Path(o.origin).name)}"
        + (f"  [dim]{escape(note[:160])}[/]" if note else "")
    )


def print_ingested(summary: dict[str, Any]) -> None:
    out.print(
        f"[green]{summary['accepted']} accepted[/] ({summary['rows_accepted']:,} rows), "
        f"[red]{summary['quarantined']} quarantined[/], "
        f"{summary['duplicate']} already ingested"
        + (
            f", [yellow]{summary['deferred']} still being written[/] (read at the next run)"
            if summary["deferred"]
            else ""
        )
        + "."
    )
    if summary["quarantined"]:
        out.print(
            "See why with [bold]mlops quarantine show ID[/]; fix the data or the "
            "contract, then [bold]mlops quarantine release ID[/]."
        )


# models ----------------------------------------------------------------------------------------
def print_decision(res: Any, as_json: bool) -> None:
    """An approval, rejection or rollback; exit code 1 when it was refused."""
    if as_json:
        print_json(res.to_dict())
    else:
        color = {"applied": "green", "noop": "yellow"}.get(res.outcome, "red")
        out.print(
            f"[{color}]{res.outcome}[/]: {escape(res.message)}  [dim](request {res.request_id})[/]"
        )
    if res.outcome == "refused":
        raise typer.Exit(1)


def print_training(res: Any, settings: Any) -> None:
    color = {"pending_approval": "yellow", "approved": "green"}.get(res.status, "red")
    if "online_base" in res.best_params:
        what = (
            f"online, v{res.best_params['online_base']} continued on "
            f"{res.best_params['rows_learnt']:,} new labelled rows"
        )
    else:
        what = (
            f"{settings.model.type}, {res.rows:,} rows, {res.batches} batches, {res.trials} trials"
        )
    out.print(f"Version [bold]{res.version}[/] ({what}): [{color}]{res.status}[/]")
    for k, v in res.metrics.items():
        champ = res.champion_metrics.get(k) if res.champion_metrics else None
        out.print(
            f"  {k:>18} {v:8.4f}"
            + (f"   champion v{res.champion_version}: {champ:.4f}" if champ is not None else "")
        )
    for r in res.gate.reasons:
        out.print(f"  [{'green' if r.startswith('PASS') else 'red'}]{escape(r)}[/]")
    if res.status == "pending_approval":
        out.print(f"Approve with: [bold]mlops approve {res.version} --by NAME --comment WHY[/]")


def print_models(name: str, versions: list[Any]) -> None:
    t = Table(title=f"{name}: {len(versions)} version(s)", title_justify="left")
    for c in ("version", "status", "aliases", "trigger", "created", "metrics"):
        t.add_column(c)
    for v in versions:
        t.add_row(
            v.version,
            v.status,
            ", ".join(v.aliases),
            v.trigger,
            f"{v.created:%Y-%m-%d %H:%M}",
            "  ".join(f"{k}={x:.3f}" for k, x in list(v.metrics.items())[:4]),
        )
    out.print(t)


def print_audit(recs: list[Any]) -> None:
    t = Table(title="Audit log", title_justify="left")
    for c in ("at", "actor", "action", "version", "previous", "outcome", "reason"):
        t.add_column(c, overflow="fold")
    for r in recs:
        t.add_row(
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            r.actor,
            r.action,
            r.version or "",
            r.previous_champion or "",
            r.outcome,
            escape(r.reason),
        )
    out.print(t)


def print_users(path: Path, users: dict[str, Any]) -> None:
    if not users:
        out.print(
            f"No users in {path}: add one with [bold]mlops users add NAME --role approver[/]."
        )
        return
    t = Table(title=f"{len(users)} user(s) in {path}", title_justify="left")
    for c in ("user", "role"):
        t.add_column(c)
    for u in users.values():
        t.add_row(escape(u.name), u.role)
    out.print(t)


# monitoring ------------------------------------------------------------------------------------
def print_monitoring(res: Any, settings: Any) -> None:
    """A monitoring run: data drift, performance, detectors and the policy's decision."""
    d = res.drift
    color = {"ok": "green", "drift": "red"}.get(d.status, "yellow")
    out.print(
        f"Monitoring run [bold]{res.id}[/]: champion v{res.champion_version}, "
        f"{len(res.batch_ids)} batch(es), {res.rows:,} rows ({res.labelled_rows:,} "
        f"labelled)"
    )
    out.print(f"  data drift: [{color}]{d.status}[/] {escape(d.message)}")
    for c in d.columns:
        if c.drifted or c.status in ("all_missing", "constant"):
            detail = (
                f"{c.method} {c.score:.3f} (threshold {c.threshold:g})"
                if c.score is not None
                else c.status
            )
            out.print(
                f"    {'[red]drift[/]' if c.drifted else '[yellow]skipped[/]'} "
                f"{escape(c.column)}: {detail}"
            )
    _print_performance(res)
    if res.decision:
        _print_policy(res.decision)
    if res.report:
        out.print(f"  report: {settings.workspace / res.report}")


def _print_performance(res: Any) -> None:
    m = res.metric
    if res.performance:
        out.print(
            f"  realised {m}: {res.performance.get(m, float('nan')):.4f} "
            f"(champion at training {res.baseline.get(m, float('nan')):.4f})"
        )
    if m in res.estimated:
        est = res.estimated[m]
        out.print(
            f"  estimated {m} without labels: {est['value']:.4f} "
            f"[{est['low']:.4f}, {est['high']:.4f}]"
        )
    for rec in res.reconciled:
        out.print(
            f"  labels arrived for run {rec['run']}: realised {rec['metric']} "
            f"{rec['realised']:.4f} vs estimated {rec['estimated']:.4f} "
            f"[{rec['low']:.4f}, {rec['high']:.4f}] on {rec['rows']:,} rows"
        )
    for det in res.detectors:
        out.print(
            f"  detector {det.name}: {'[red]fired[/]' if det.fired else 'quiet'} "
            f"on {det.rows:,} rows"
        )


def _print_policy(dec: Any) -> None:
    verdict = "[red]retrain[/]" if dec.retrain else "no retrain"
    out.print(f"  decision: {verdict}")
    for r in dec.reasons:
        out.print(
            f"    signal: {escape(r.text)}"
            + (f" [dim](pending since {when(r.since)})[/]" if r.since and r.since != dec.at else "")
        )
    for h in dec.held_back:
        out.print(f"    held back: {escape(h.text)} [dim](stays pending)[/]")
    if not dec.reasons:
        for f in dec.nearest:
            out.print(f"    nearest: {escape(f.text)}")
        if not dec.nearest:
            out.print("    nearest: no signal was measured (no labels, too few rows)")
    if dec.retrain and dec.since is not None:
        out.print(f"    window: from the change at {when(dec.since)} on")


def print_decisions(decided: list[dict[str, Any]], runs: dict[str, Any]) -> None:
    """The retraining decisions, newest first, with their monitoring runs' drift status."""
    t = Table(title="Retraining decisions", title_justify="left")
    for c in ("at", "run", "drift", "retrain", "signals (or the nearest)", "held back", "acted"):
        t.add_column(c, overflow="fold")
    for d in decided:
        run = runs.get(d["monitoring_run"] or "", {})
        acted = d.get("acted") or {}
        why = (
            "\n".join(d["reasons"])
            or "\n".join(f"[dim]{escape(n)}[/]" for n in d.get("nearest") or [])
            or "-"
        )
        held = "\n".join(d["held_back"]) + (
            f"\npending since {d['pending_since']}" if d.get("pending_since") else ""
        )
        t.add_row(
            f"{d['at']:%Y-%m-%d %H:%M}",
            d["monitoring_run"] or "",
            str(run.get("status", "")),
            "[red]yes[/]" if d["retrain"] else "no",
            why if not d["reasons"] else escape(why),
            escape(held),
            f"v{acted['version']} {acted.get('status', '')}" if acted.get("version") else "",
        )
    out.print(t)


# backtests -------------------------------------------------------------------------------------
def backtest_progress() -> Progress:
    """A progress bar per strategy, on stderr, kept when done."""
    return Progress(
        TextColumn("[bold]{task.description:<22}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} batches"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def print_backtest(result: Any, history: Any) -> None:
    m = result.metric_name
    table = Table(
        title=f"Backtest of {result.dataset}: {result.batches} batches scored "
        f"({history.n_batches} in all, {history.initial_batches} to start)",
        title_justify="left",
    )
    for col in (
        "strategy",
        f"mean {m}",
        "retrains",
        "train CPU s",
        "monitor CPU s",
        "detection delay",
        "false triggers",
    ):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for s in result.strategies:
        delays = ", ".join("-" if d is None else str(d) for d in s.detection_delays) or "n/a"
        table.add_row(
            s.name,
            "n/a" if s.mean_metric is None else f"{s.mean_metric:.4f}",
            f"{s.retrains} ({s.retrains / max(result.batches, 1):.0%})",
            f"{s.train_cpu_s:.1f}",
            f"{s.monitor_cpu_s:.1f}",
            delays,
            "n/a" if s.false_triggers is None else str(s.false_triggers),
        )
    out.print(table)


# services --------------------------------------------------------------------------------------
def print_up(urls: dict[str, Any]) -> None:
    out.print(f"Up in {urls['seconds']:.0f} s:")
    out.print(f"  Prefect UI and API  {urls['prefect']}  (api {urls['prefect_api']})")
    if urls["worker_health"]:
        out.print(
            f"  Prefect worker      pool '{urls['work_pool']}', health {urls['worker_health']}"
        )
    else:
        out.print(
            f"  work pool           '{urls['work_pool']}' is not a process pool: no worker "
            "here; run one where Docker or Kubernetes is: [bold]prefect worker start "
            f"--pool {urls['work_pool']}[/] (with PREFECT_API_URL set)"
        )
    out.print(f"  MLflow              {urls['mlflow']}")
    if urls["dashboard"]:
        out.print(f"  dashboard           [bold]{urls['dashboard']}[/]")
    out.print(
        f"  serving API         [bold]{urls['serving']}[/]  (POST /predict, /feedback; "
        "GET /model, /metrics, /docs)"
    )
    if urls["prefect_yaml"]:
        out.print(f"  deployments         {urls['prefect_yaml']}")
    out.print(
        f"Point Prefect's CLI at it: [bold]export PREFECT_API_URL={urls['prefect_api']}[/]. "
        "See [bold]mlops status[/]; stop with [bold]mlops down[/]."
    )


def print_status(doc: dict[str, Any], api: str | None) -> None:
    """`mlops status`: services, deployments, the champion, pending versions, decisions."""
    _print_services(doc["services"])
    deps = doc["deployments"]
    if deps:
        _print_deployments(deps)
    elif api:
        out.print("No deployments: run [bold]mlops deploy --apply[/].")
    champion = doc["champion"]
    out.print(f"Champion: {'v' + champion if champion else 'none'}")
    for p in doc["pending"]:
        out.print(
            f"  awaiting approval: v{p['version']} (trigger {p['trigger']}): "
            f"[bold]mlops approve {p['version']} --by NAME --comment WHY[/]"
        )
    for d in doc["decisions"]:
        verdict = "[red]retrain[/]" if d["retrain"] else "no retrain"
        out.print(f"  {d['at']:%Y-%m-%d %H:%M} {verdict} {escape('; '.join(d['reasons']) or '-')}")


def _print_services(services: list[dict[str, Any]]) -> None:
    t = Table(title="Services", title_justify="left")
    for c in ("service", "health", "url", "pid"):
        t.add_column(c)
    for s in services:
        health = (
            "[dim]direct store[/]"
            if s["where"] == "direct"
            else (
                "[green]healthy[/]"
                if s["healthy"]
                else ("[red]unhealthy[/]" if s["running"] else "[dim]stopped[/]")
            )
        )
        if s["where"] == "external":
            health += " (external)"
        t.add_row(str(s["name"]), health, str(s["url"] or ""), str(s["pid"] or ""))
    out.print(t)


def _print_deployments(deps: list[dict[str, Any]]) -> None:
    t = Table(title="Deployments", title_justify="left")
    for c in ("deployment", "schedules", "triggers", "next runs", "last run"):
        t.add_column(c, overflow="fold")
    for d in deps:
        t.add_row(
            d["name"],
            "\n".join(d["schedules"]) or "-",
            "\n".join(d["triggers"]) or "-",
            "\n".join(d["next_runs"][:3]) or "-",
            d["last_run"] or "-",
        )
    out.print(t)


# the demo --------------------------------------------------------------------------------------
def print_generated(project: Any, rows: int, days: int) -> None:
    """The demo's weekly files, the ones spoiled on purpose, and the true drift points."""
    files = project.files
    faults = [f for f in files if f.fault]
    out.print(
        f"Generated {rows:,} loan applications over {days} days into "
        f"{len(files)} weekly files in [bold]{project.drop}[/] "
        f"({len(faults)} spoiled on purpose: "
        f"{', '.join(sorted({f.fault or '' for f in faults}))})."
    )
    for p in project.stream.drift_points:
        out.print(
            f"  true drift: [bold]{p.kind}[/] {p.start:%Y-%m-%d}"
            + (f" → {p.end:%Y-%m-%d}" if p.end != p.start else "")
            + f": {p.description}"
        )


def print_tick(t: Any) -> None:
    """One step of the demo's replay: what landed, what serving answered, what monitoring
    decided, what the online model learnt."""
    out.print(
        f"[bold]step {t.number}[/]: {len(t.files)} files landed → "
        f"{t.accepted} batches accepted ({t.rows:,} rows)"
        + (f", {t.nothing_new} held nothing new" if t.nothing_new else "")
    )
    for q in t.quarantined:
        out.print(f"  [red]quarantined[/] {escape(q['origin'])}: {escape(q['reason'])}")
    if t.serving:
        _print_served(t.serving)
    if t.monitoring:
        _print_tick_monitoring(t.monitoring, t.training_run)
    if t.online:
        o = t.online
        out.print(
            f"  online: v{o['version']} (v{o['base']} continued on "
            f"{o['rows_learnt']} new labelled rows): {o['status']}; in shadow "
            "until approved or replaced"
            if o["status"] == "pending_approval"
            else f"  online: v{o['version']} (v{o['base']} continued on "
            f"{o['rows_learnt']} new labelled rows): {o['status']} by the gate"
        )


def _print_served(sv: dict[str, Any]) -> None:
    out.print(
        f"  serving: {sv['rows']:,} applications answered by "
        + ", ".join(f"v{v}" for v in sv["versions"])
        + f", {sv['labels']:,} labels sent to /feedback"
        + (f", [red]{sv['refused']} request(s) refused[/]" if sv["refused"] else "")
        + (f", {sv['unreadable']} file(s) unreadable" if sv["unreadable"] else "")
    )
    for e in sv["errors"][:2]:
        out.print(f"    [dim]{escape(e)}[/]")


def _print_tick_monitoring(m: dict[str, Any], training_run: str | None) -> None:
    drift = m.get("weighted_drift_share") or m.get("drift_share") or 0.0
    out.print(
        f"  monitor: {m['status']}, drift share {drift:.0%}"
        + (f" ({', '.join(m['drifted'][:5])})" if m["drifted"] else "")
        + (f", detectors fired: {', '.join(m['detectors'])}" if m["detectors"] else "")
    )
    if m["retrain"]:
        out.print("  decision: [red]retrain[/] — " + escape("; ".join(m["reasons"])))
        out.print(
            f"  mlops.retrain.requested → train run [bold]{training_run or '(not seen yet)'}[/]"
        )
    elif m["held_back"]:
        out.print(
            "  decision: held back — "
            + escape("; ".join(m["held_back"]))
            + " — pending: "
            + escape("; ".join(m["reasons"]))
            + (f" (since {m['pending_since']})" if m.get("pending_since") else "")
        )
    else:
        out.print(
            "  decision: no retrain"
            + (f" (nearest: {escape('; '.join(m['nearest']))})" if m.get("nearest") else "")
        )


def print_replayed(
    res: Any, swap: dict[str, Any] | None, champion: str | None, urls: dict[str, Any], cfg: Path
) -> None:
    """The end of the demo's replay: the champion, what serving did, the event-started
    trainings, the hot swap, the versions awaiting approval."""
    served = [t.serving for t in res.ticks if t.serving]
    out.print(
        f"\nReplayed in {res.seconds:.0f} s. Champion: v{champion}."
        + (
            f" Serving answered {sum(x['rows'] for x in served):,} applications and "
            f"took {sum(x['labels'] for x in served):,} labels ({urls['serving']})."
            if served
            else ""
        )
    )
    for r in res.training_runs:
        out.print(
            f"  train run {r['name']} (trigger {r['trigger']}, started by "
            f"mlops.retrain.requested): {r['state']}"
        )
    if swap:
        out.print(
            f"  the demo approved v{swap['to']} (the retrain its policy asked for) to "
            f"show the hot swap: serving answered with "
            f"{' → '.join('v' + v for v in swap['versions'])} after {swap['seconds']} s, "
            f"{swap['answered']} requests answered meanwhile, {swap['failed']} failed"
        )
    for p in res.pending:
        if swap and p["version"] == swap["to"]:
            continue
        out.print(
            f"  [bold]v{p['version']}[/] awaits approval (trigger {p['trigger']}): "
            f"[bold]mlops approve {p['version']} --by NAME --comment WHY -c {cfg}[/]"
            + (f" or on the dashboard, {urls['dashboard']}/approvals" if urls["dashboard"] else "")
        )
    out.print(f"Stop everything with [bold]mlops down -c {cfg}[/].")
