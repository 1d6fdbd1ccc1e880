"""Soak: 1,000 small batches through ingest and monitor while people approve, reject and roll back.

    .venv/bin/python bench/soak.py                          # 1,000 daily batches (~8 min, 2 cores)
    .venv/bin/python bench/soak.py --batches 100 --keep     # a quick look, workspace kept

Setup (not measured): a temporary project (``write_config`` creates its workspace and metadata
DB) on a real MLflow server (``start_mlflow``); the demo stream's first weeks ingested as one
file, one model trained (2 trials, no smoke test) and approved, so a champion exists. The rest
of the stream is cut into one file per day (CSV and Parquet alternating, 50 to 150 rows each at
the default ``--rows-per-batch 100``), written before the loop: the landing folder.

The loop (this process, measured): each file goes through ``mlops_core.data.ingest.ingest`` as
``mlops ingest FILE`` and the ingest flow call it (a fresh ``MetadataStore`` each call); every
``--monitor-every`` batches ``mlops_core.monitor.run.monitor`` runs as ``mlops monitor`` does
(drift, realised and estimated performance, detectors, the policy's decision, recorded; the
Evidently report on a drift). A share of the files (``--bad-share``, 5%) is bad on purpose and
must end quarantined: a CSV row with two fields missing, a numeric column with text in it, a
renamed column, a truncated Parquet file. About 1% are an earlier file sent again and must be
recognised as duplicates.

Meanwhile a second process (this script with ``--_actor``) plays the people, through
``mlops_core.ops.actions`` as the dashboard and the CLI do, one scenario per round, each released
at the same moment from two threads: two approvals of one version, a double click (the same
request id twice) on approve, reject and rollback, an approval racing a rejection, a viewer's
forced approval (refused and audited); every ``--cli-every`` rounds a double click through two
``mlops approve --request-id`` processes. Versions to decide on are registered from the trained
one (the same packaged files, so its hash checks pass) as a training would register them.

Measured: this process's RSS after every batch (``/proc``), after the warm-up (batch 100, or a
tenth of ``--batches``) and at the end; the wall time (and this process's CPU time) of each
ingest call, p50/p95 over the first and the last tenth of the batches; each monitoring run's
wall time, p50 over the first and the last tenth of the runs (reported, not judged).

Checked at the end: every file has exactly one outcome, the one its kind calls for; the
metadata DB holds exactly one record per distinct batch (none lost, none extra, none twice),
rows as sent, every accepted batch's Parquet file and every quarantined batch's folder exist;
one monitoring run and one decision recorded per run; one champion (the alias, the DB and the
``approved`` status tag agree on one version), made so by an applied approve or rollback, its
generation equal to the number of applied champion moves, each alias move marked done; every
answer ``applied`` or ``refused`` the actor got has its own audit record under its request id,
a ``noop`` answers a request id with exactly one record, and the records by the actor's people
number exactly those answers (none lost, none extra);
each race ended as it must (one applied; a double click: applied then noop); no MLflow run left
``RUNNING``.

The last line is ``key=value`` pairs. Exit status 1 when a target is missed: RSS growth from
the warm-up to the end above 1.25x, the late p50 of an ingest above 2x the early one, or any
check false.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars per download
sys.path[:0] = [str(REPO), str(REPO / "tests")]

PROJECT = "bench-soak"
MAX_RSS_GROWTH = 1.25
MAX_SLOWDOWN = 2.0
TRAIN_ROWS = 4000  # rows of the first file, the first model's training data
BAD_KINDS = ("short_row", "wrong_dtype", "missing_column", "truncated_parquet")
RESEND_SHARE = 0.01
ACTORS = {"alice", "bob", "carol", "vic"}  # names the actor decides under (vic: a viewer)
STOP, READY, RESULTS, SUMMARY = "stop", "ready", "actor.jsonl", "actor-summary.json"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size in MB, from /proc (no psutil)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def venv_bin() -> Path:
    here = REPO / ".venv" / "bin"
    return here if (here / "mlops").exists() else Path(sys.executable).parent


# the landing folder ------------------------------------------------------------------------
@dataclass
class Landed:
    index: int
    path: Path
    kind: str  # good | resent | one of BAD_KINDS
    rows: int  # rows of a good (or resent) file
    expect: str  # accepted | quarantined | duplicate
    original: int | None = None  # the file a resend repeats


def make_stream(batches: int, rows_per_batch: int, seed: int) -> tuple[Any, Any]:
    """(the training frame, the soak's frame): the demo stream, ending before today (a future
    time is fatal), days of ``rows_per_batch`` rows on average, 1/2x to 3/2x of it each."""
    import numpy as np
    import pandas as pd

    from mlops_core.demo.stream import TIME, generate_stream

    train_days = max(28, -(-TRAIN_ROWS // rows_per_batch))
    days = train_days + batches
    start = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize() - pd.Timedelta(days=days + 3)
    stream = generate_stream(2 * rows_per_batch * days, start=start, days=days, seed=seed)
    df = stream.frame
    day = df[TIME].dt.floor("1D")
    rng = np.random.default_rng(seed)
    lo, hi = max(1, rows_per_batch // 2), max(2, rows_per_batch * 3 // 2)
    keep = np.zeros(len(df), dtype=bool)
    starts = np.flatnonzero(np.r_[True, day.to_numpy()[1:] != day.to_numpy()[:-1]])
    ends = np.r_[starts[1:], len(df)]
    for s, e in zip(starts, ends, strict=True):
        k = min(e - s, int(rng.integers(lo, hi + 1)))
        keep[s + np.sort(rng.choice(e - s, size=k, replace=False))] = True
    df = df[keep].reset_index(drop=True)
    cut = start + pd.Timedelta(days=train_days)
    return df[df[TIME] < cut].reset_index(drop=True), df[df[TIME] >= cut].reset_index(drop=True)


def write_landing(
    frame: Any, folder: Path, batches: int, bad_share: float, seed: int
) -> list[Landed]:
    """One file per day; ``bad_share`` of them spoiled (cycling through BAD_KINDS), about 1%
    an earlier good file sent again under a new name."""
    from mlops_core.data.batching import period_start
    from mlops_core.demo.stream import TIME

    folder.mkdir(parents=True, exist_ok=True)
    groups = [
        g.reset_index(drop=True)
        for _, g in frame.groupby(period_start(frame[TIME], "1D"), sort=True)
    ][:batches]
    n = len(groups)
    rng = random.Random(seed)
    slots = list(range(2, n))
    rng.shuffle(slots)
    n_bad = round(n * bad_share)
    bad = sorted(slots[:n_bad])
    resend = set(slots[n_bad : n_bad + round(n * RESEND_SHARE)])
    kind_of = {i: BAD_KINDS[j % len(BAD_KINDS)] for j, i in enumerate(bad)}
    out: list[Landed] = []
    for i, g in enumerate(groups):
        stem = f"applications_{g[TIME].iloc[0]:%Y-%m-%d}"
        kind = kind_of.get(i, "good")
        good_before = [x for x in out if x.kind == "good"]
        if i in resend and good_before:
            orig = good_before[rng.randrange(len(good_before))]
            path = folder / f"{stem}_resent{orig.path.suffix}"
            path.write_bytes(orig.path.read_bytes())
            out.append(Landed(i, path, "resent", orig.rows, "duplicate", orig.index))
            continue
        if kind == "good":
            path = folder / f"{stem}.{'csv' if i % 2 == 0 else 'parquet'}"
            if path.suffix == ".csv":
                g.to_csv(path, index=False)
            else:
                g.to_parquet(path, index=False)
            out.append(Landed(i, path, "good", len(g), "accepted"))
            continue
        if kind == "short_row":  # a row with its last two fields missing: the file is refused
            path = folder / f"{stem}.csv"
            lines = g.to_csv(index=False).splitlines()
            mid = len(lines) // 2
            lines[mid] = ",".join(lines[mid].split(",")[:-2])
            path.write_text("\n".join(lines) + "\n")
        elif kind == "wrong_dtype":  # text in a numeric column
            path = folder / f"{stem}.csv"
            g = g.astype({"credit_score": object})
            g.loc[len(g) // 2, "credit_score"] = "unknown"
            g.to_csv(path, index=False)
        elif kind == "missing_column":
            path = folder / f"{stem}.parquet"
            g.rename(columns={"credit_score": "CreditScore"}).to_parquet(path, index=False)
        else:  # truncated_parquet: an upload cut off halfway
            path = folder / f"{stem}.parquet"
            g.to_parquet(path, index=False)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        out.append(Landed(i, path, kind, len(g), "quarantined"))
    return out


# setup ---------------------------------------------------------------------------------------
def make_project(
    tmp: Path, mlflow_url: str, rows_per_batch: int, batches: int, bad_share: float, seed: int
) -> tuple[Any, Path, list[Landed], int, str]:
    """(settings, mlops.yaml, the landing files, batches ingested at setup, the champion)."""
    from registry_helpers import demo_settings, write_config

    from mlops_core.data.ingest import ingest
    from mlops_core.ops.auth import Principal
    from mlops_core.train.pipeline import train_and_register

    settings = demo_settings(
        tmp,
        mlflow_url,
        PROJECT,
        data={"batch": {"period": "1D"}},
        gate={"smoke_test": False},
        model={"search": {"trials": 2, "timeout_s": 60}},
    )
    cfg = write_config(settings, tmp / "mlops.yaml")
    train, soak = make_stream(batches, rows_per_batch, seed)
    first = tmp / "history" / "history.parquet"
    first.parent.mkdir(parents=True)
    train.to_parquet(first, index=False)
    t0 = time.perf_counter()
    report = ingest(settings, [first])
    bad = [(o.id, o.reason) for o in report.outcomes if o.status != "accepted"]
    if bad:
        raise SystemExit(f"setup: the first file was not accepted whole: {bad[:3]}")
    files = write_landing(soak, tmp / "landing", batches, bad_share, seed)
    print(
        f"setup: {len(train):,} rows in {len(report.outcomes)} daily batches ingested; "
        f"{len(files)} files landed ({sum(f.kind == 'good' for f in files)} good, "
        f"{sum(f.expect == 'quarantined' for f in files)} bad, "
        f"{sum(f.kind == 'resent' for f in files)} sent again) in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    t0 = time.perf_counter()
    out = train_and_register(settings, trigger="bench")
    if out.version is None:
        raise SystemExit(f"setup: training registered nothing ({out.status}): {out.gate.reasons}")
    from mlops_core.ops.actions import approve

    res = approve(
        settings,
        Principal("setup", "approver", "cli"),
        out.version,
        comment="bench/soak.py: the first champion",
    )
    if res.outcome != "applied":
        raise SystemExit(f"setup: approving v{out.version} was refused: {res.message}")
    print(
        f"setup: v{out.version} trained and approved in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return settings, cfg, files, len(report.outcomes), out.version


# the actor: people deciding while data flows ------------------------------------------------
SCENARIOS = (
    "approve_race",
    "double_click_approve",
    "double_click_rollback",
    "approve_vs_reject",
    "double_click_reject",
    "viewer_refused",
)
# what each scenario must end as (outcomes sorted); the sequential resend of approve_race's
# first request is checked apart
EXPECT = {
    "approve_race": ["applied", "refused"],
    "double_click_approve": ["applied", "noop"],
    "double_click_rollback": ["applied", "noop"],
    "approve_vs_reject": ["applied", "refused"],
    "double_click_reject": ["applied", "noop"],
    "viewer_refused": ["applied", "refused"],
    "cli_double_click": ["applied", "noop"],
}


def _act(
    settings: Any, action: str, who: str, version: str | None, rid: str, role: str = "approver"
) -> dict[str, Any]:
    """One decision through mlops_core.ops.actions, as the dashboard makes it (a Registry of its
    own, as each request or CLI process has); its outcome as plain data."""
    from mlops_core.errors import AuthorizationError
    from mlops_core.ops import actions
    from mlops_core.ops.auth import Principal

    p = Principal(who, role, "none")
    comment = f"soak: {action} by {who}"
    t0 = time.perf_counter()
    try:
        if action == "approve":
            res = actions.approve(settings, p, version, comment=comment, request_id=rid)
        elif action == "reject":
            res = actions.reject(settings, p, version, comment=comment, request_id=rid)
        else:
            res = actions.rollback(settings, p, comment=comment, request_id=rid)
        out = {"outcome": res.outcome, "version": res.version, "message": res.message}
    except AuthorizationError as e:  # refused and audited
        out = {"outcome": "refused", "version": version, "message": str(e)}
    except Exception as e:  # not audited: counted as an error
        out = {"outcome": "error", "version": version, "message": f"{type(e).__name__}: {e}"}
    return out | {
        "action": action,
        "actor": who,
        "request_id": rid,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _at_once(*calls: Any) -> list[dict[str, Any]]:
    """Run each call in its own thread, released together by a barrier."""
    barrier = threading.Barrier(len(calls))
    results: list[dict[str, Any]] = [{} for _ in calls]

    def run(k: int) -> None:
        barrier.wait()
        results[k] = calls[k]()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _cli_at_once(cfg: Path, version: str, rid: str) -> list[dict[str, Any]]:
    """A double click through the CLI: two `mlops approve --request-id` processes at once."""
    argv = [
        str(venv_bin() / "mlops"),
        "approve",
        version,
        "--by",
        "carol",
        "--comment",
        "soak: a double click from the CLI",
        "--request-id",
        rid,
        "--config",
        str(cfg),
        "--json",
    ]
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        try:
            d = json.loads(stdout)
            out.append(
                {
                    "outcome": d["outcome"],
                    "version": d.get("version"),
                    "message": d.get("message", ""),
                }
            )
        except (ValueError, KeyError):
            out.append(
                {
                    "outcome": "error",
                    "version": version,
                    "message": f"exit {p.returncode}: {stderr.strip()[-300:]}",
                }
            )
        out[-1] |= {"action": "approve", "actor": "carol", "request_id": rid, "via": "cli"}
    return out


def actor_main(cfg: Path, state: Path, pause: float, cli_every: int) -> int:
    """Decide on versions round after round until ``state/stop`` appears; every result is
    appended to ``state/actor.jsonl`` as it comes."""
    from registry_helpers import add_version

    from mlops_core.config import load_config
    from mlops_core.registry.registry import Registry

    settings = load_config(cfg)
    reg = Registry(settings)
    source = reg.champion()
    assert source is not None
    results = (state / RESULTS).open("a")
    rss0 = rss_mb()
    (state / READY).touch()
    rounds = registered = 0
    t_start = time.perf_counter()

    def new_version() -> str:
        nonlocal registered
        registered += 1
        return add_version(reg, reg, source)

    def rid() -> str:
        return uuid.uuid4().hex

    while not (state / STOP).exists():
        if cli_every and rounds % cli_every == cli_every - 1:
            scenario = "cli_double_click"
        else:
            scenario = SCENARIOS[rounds % len(SCENARIOS)]
        extra: list[dict[str, Any]] = []
        act = functools.partial(_act, settings)
        if scenario == "approve_race":  # two approvers, one version, at the same moment
            v, ra = new_version(), rid()
            got = _at_once(
                functools.partial(act, "approve", "alice", v, ra),
                functools.partial(act, "approve", "bob", v, rid()),
            )
            extra = [act("approve", "alice", v, ra)]  # the first click again, later
        elif scenario == "double_click_approve":
            v, r = new_version(), rid()
            got = _at_once(*[functools.partial(act, "approve", "alice", v, r)] * 2)
        elif scenario == "double_click_reject":
            v, r = new_version(), rid()
            got = _at_once(*[functools.partial(act, "reject", "bob", v, r)] * 2)
        elif scenario == "double_click_rollback":  # no target: the champion before this one
            got = _at_once(*[functools.partial(act, "rollback", "alice", None, rid())] * 2)
        elif scenario == "approve_vs_reject":
            v = new_version()
            got = _at_once(
                functools.partial(act, "approve", "alice", v, rid()),
                functools.partial(act, "reject", "bob", v, rid()),
            )
        elif scenario == "viewer_refused":  # a viewer's forced approval; then a real decision
            v = new_version()
            got = [act("approve", "vic", v, rid(), role="viewer"), act("reject", "alice", v, rid())]
        else:  # cli_double_click
            v = new_version()
            got = _cli_at_once(cfg, v, rid())
        for k, res in enumerate(got + extra):
            res |= {"round": rounds, "scenario": scenario, "resend": k >= len(got)}
            results.write(json.dumps(res) + "\n")
        results.flush()
        rounds += 1
        time.sleep(pause)
    results.close()
    (state / SUMMARY).write_text(
        json.dumps(
            {
                "rounds": rounds,
                "registered": registered,
                "rss_start_mb": rss0,
                "rss_end_mb": rss_mb(),
                "seconds": time.perf_counter() - t_start,
            }
        )
    )
    return 0


# the checks at the end -------------------------------------------------------------------------
def check_batches(
    settings: Any, files: list[Landed], outcomes: dict[int, list[Any]], setup_batches: int
) -> tuple[bool, list[str]]:
    """Every file one outcome as its kind calls for; the DB one record per distinct batch."""
    import sqlalchemy as sa

    from mlops_core.store import MetadataStore, batches

    problems: list[str] = []
    ids: dict[str, str] = {}  # id -> status, from the outcomes
    first_id: dict[int, str] = {}
    for f in files:
        outs = outcomes.get(f.index, [])
        if len(outs) != 1:
            problems.append(f"{f.path.name} ({f.kind}): {len(outs)} outcomes")
            continue
        o = outs[0]
        if o.status != f.expect:
            problems.append(
                f"{f.path.name} ({f.kind}): {o.status}, expected {f.expect} ({o.reason[:120]})"
            )
        if o.status == "duplicate":
            if f.original is not None and first_id.get(f.original) != o.id:
                problems.append(
                    f"{f.path.name}: duplicate of {o.id}, not of file "
                    f"{f.original}'s batch {first_id.get(f.original)}"
                )
            continue
        if o.id in ids:
            problems.append(f"batch {o.id} came out of two files")
        ids[o.id] = o.status
        first_id[f.index] = o.id
    meta = MetadataStore(settings.db_url)
    try:
        with meta.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    batches.c.id, batches.c.status, batches.c.rows, batches.c.path, batches.c.origin
                )
            ).all()
    finally:
        meta.dispose()
    db = {r.id: r for r in rows}
    if len(db) != len(rows):
        problems.append("batch ids repeated in the DB")
    soak_db = {k: r for k, r in db.items() if "/landing/" in r.origin}
    if len(db) - len(soak_db) != setup_batches:
        problems.append(
            f"{len(db) - len(soak_db)} setup batches in the DB, {setup_batches} ingested"
        )
    lost = sorted(set(ids) - set(soak_db))
    extra = sorted(set(soak_db) - set(ids))
    if lost:
        problems.append(f"{len(lost)} batch(es) reported but not in the DB: {lost[:3]}")
    if extra:
        problems.append(f"{len(extra)} batch(es) in the DB that no ingest reported: {extra[:3]}")
    for bid, status in ids.items():
        r = soak_db.get(bid)
        if r is None:
            continue
        if r.status != status:
            problems.append(f"{bid}: DB says {r.status}, ingest said {status}")
        path = settings.workspace / r.path
        if status == "accepted" and not path.is_file():
            problems.append(f"{bid}: accepted but {r.path} is missing")
        if status == "quarantined" and not (path / "reason.txt").is_file():
            problems.append(f"{bid}: quarantined but {r.path}/reason.txt is missing")
    sent = sum(f.rows for f in files if f.kind == "good")
    stored = sum(r.rows for r in soak_db.values() if r.status == "accepted")
    if sent != stored:
        problems.append(f"{stored:,} accepted rows in the DB, {sent:,} sent in good files")
    return not problems, problems


def check_registry(settings: Any, actor: list[dict[str, Any]], monitor_runs: int) -> dict[str, Any]:
    """Champion, audit log, races, runs and monitoring records, read from MLflow and the DB
    directly (nothing here repairs anything first)."""
    import sqlalchemy as sa
    from mlflow import MlflowClient

    from mlops_core.registry.registry import CHAMPION
    from mlops_core.store import (
        MetadataStore,
        audit_log,
        champion_state,
        decisions,
        monitoring_runs,
    )

    problems: list[str] = []
    client = MlflowClient(settings.storage.mlflow_uri, registry_uri=settings.storage.mlflow_uri)
    meta = MetadataStore(settings.db_url)
    try:
        with meta.engine.connect() as conn:
            state = conn.execute(
                sa.select(champion_state).where(champion_state.c.model == PROJECT)
            ).first()
            audit = [
                r._asdict()
                for r in conn.execute(
                    sa.select(audit_log)
                    .where(audit_log.c.model == PROJECT)
                    .order_by(audit_log.c.id)
                )
            ]
            n_runs = conn.execute(
                sa.select(sa.func.count()).select_from(monitoring_runs)
            ).scalar_one()
            n_dec = conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar_one()
    finally:
        meta.dispose()
    champ = state.version if state else None
    aliases = {k: str(v) for k, v in (client.get_registered_model(PROJECT).aliases or {}).items()}
    mvs = client.search_model_versions(f"name='{PROJECT}'", max_results=10_000)
    approved = sorted(
        (str(m.version) for m in mvs if (m.tags or {}).get("status") == "approved"), key=int
    )
    if aliases.get(CHAMPION) != champ:
        problems.append(f"champion alias v{aliases.get(CHAMPION)}, DB v{champ}")
    if approved != [champ]:
        problems.append(f"versions with status approved: {approved}; champion v{champ}")
    moves = [
        r
        for r in audit
        if r["outcome"] == "applied"
        and r["action"] in ("approve", "rollback", "auto_promote", "adopt")
    ]
    if (
        not moves
        or moves[-1]["version"] != champ
        or moves[-1]["action"] not in ("approve", "rollback")
    ):
        problems.append(
            f"the last champion move is {moves[-1] if moves else None}, champion v{champ}"
        )
    if state is None or state.generation != len(moves):
        problems.append(
            f"generation {state.generation if state else None}, "
            f"{len(moves)} applied champion moves audited"
        )
    unmarked = [r["id"] for r in moves if r["action"] != "adopt" and r["alias_moved_at"] is None]
    if unmarked:
        problems.append(f"{len(unmarked)} applied moves without alias_moved_at: {unmarked[:5]}")
    one_champion = not problems

    # the audit log against what the actor was told
    audit_problems: list[str] = []
    by_rid: dict[str, list[dict[str, Any]]] = {}
    for r in audit:
        if r["request_id"]:
            by_rid.setdefault(r["request_id"], []).append(r)
    told = [a for a in actor if a["outcome"] in ("applied", "refused")]
    ours = [
        r
        for r in audit
        if r["actor"] in ACTORS and r["action"] in ("approve", "reject", "rollback")
    ]
    anonymous = [r for r in ours if not r["request_id"]]
    for a in told:  # each answer that says something was decided has its own record
        recs = [
            r
            for r in by_rid.get(a["request_id"], [])
            if (r["action"], r["outcome"]) == (a["action"], a["outcome"])
        ]
        if len(recs) == 1:
            continue
        bare = [
            r
            for r in anonymous
            if (r["actor"], r["action"], r["outcome"], r["reason"])
            == (a["actor"], a["action"], a["outcome"], a["message"])
        ]
        audit_problems.append(
            f"{a['scenario']} round {a['round']}: told {a['outcome']} for {a['action']} "
            f"v{a['version']} (request {a['request_id'][:8]}): "
            + (
                f"audited without its request id (record {bare[0]['id']})"
                if bare
                else f"{len(recs)} records under its request id"
            )
        )
    for a in actor:  # a no-op answers a request that has exactly one record
        if a["outcome"] == "noop" and len(by_rid.get(a["request_id"], [])) != 1:
            audit_problems.append(
                f"{a['scenario']} round {a['round']}: noop for request "
                f"{a['request_id'][:8]} with "
                f"{len(by_rid.get(a['request_id'], []))} records"
            )
    if len(ours) != len(told):
        audit_problems.append(
            f"{len(ours)} audit records by the actor's people, {len(told)} "
            "answers applied or refused"
        )
    errors = [a for a in actor if a["outcome"] == "error"]
    for a in errors[:5]:
        audit_problems.append(f"{a['scenario']} round {a['round']}: error {a['message'][:200]}")

    # each race as it must end
    race_problems: list[str] = []
    rounds: dict[int, list[dict[str, Any]]] = {}
    for a in actor:
        rounds.setdefault(a["round"], []).append(a)
    for n, acts in sorted(rounds.items()):
        scenario = acts[0]["scenario"]
        first = [a for a in acts if not a["resend"]]
        got = sorted(a["outcome"] for a in first)
        if got != EXPECT[scenario]:
            race_problems.append(
                f"round {n} {scenario}: {got} ({'; '.join(a['message'][:160] for a in first)})"
            )
        for a in acts:
            if a["resend"] and a["outcome"] != "noop":
                race_problems.append(
                    f"round {n} {scenario}: the same request again gave "
                    f"{a['outcome']}: {a['message'][:160]}"
                )

    exp = client.get_experiment_by_name(PROJECT)
    running = (
        client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'") if exp else []
    )
    if n_runs != monitor_runs or n_dec != monitor_runs:
        problems.append(
            f"{n_runs} monitoring runs and {n_dec} decisions recorded, {monitor_runs} runs made"
        )
    count = lambda action, outcome: sum(  # noqa: E731
        1 for a in actor if a["action"] == action and a["outcome"] == outcome
    )
    return {
        "one_champion": one_champion,
        "champion": champ,
        "versions": len(mvs),
        "audit_ok": not audit_problems and not errors,
        "race_ok": not race_problems,
        "runs_running": len(running),
        "monitor_records_ok": n_runs == n_dec == monitor_runs,
        "problems": problems + audit_problems + race_problems,
        "approvals": count("approve", "applied"),
        "rejections": count("reject", "applied"),
        "rollbacks": count("rollback", "applied"),
        "refused": sum(a["outcome"] == "refused" for a in actor),
        "noops": sum(a["outcome"] == "noop" for a in actor),
        "errors": len(errors),
        "races": len(rounds),
        "audit_records": len(audit),
    }


# the soak ------------------------------------------------------------------------------------
def start_actor(cfg: Path, state: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    log = (state / "actor.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_actor",
            str(cfg),
            str(state),
            str(args.actor_pause),
            str(args.cli_every),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not (state / READY).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(
                "the actor did not start:\n"
                + (state / "actor.log").read_text(errors="replace")[-3000:]
            )
        time.sleep(0.2)
    return proc


def stop_actor(proc: subprocess.Popen[bytes] | None, state: Path) -> None:
    if proc is None:
        return
    (state / STOP).touch()
    try:
        proc.wait(300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def read_actor(state: Path) -> list[dict[str, Any]]:
    path = state / RESULTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    head, rest = __doc__.split("\n\n", 1)
    ap = argparse.ArgumentParser(
        description=head, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--batches", type=int, default=1000, help="daily batches (files) to ingest (default 1000)"
    )
    ap.add_argument(
        "--rows-per-batch",
        type=int,
        default=100,
        help="mean rows of a batch; each has 1/2x to 3/2x of it (default 100)",
    )
    ap.add_argument(
        "--monitor-every",
        type=int,
        default=10,
        help="run monitoring after every N batches (default 10)",
    )
    ap.add_argument(
        "--bad-share",
        type=float,
        default=0.05,
        help="share of bad files that must be quarantined (default 0.05)",
    )
    ap.add_argument(
        "--actor-pause",
        type=float,
        default=1.0,
        help="seconds the actor waits between rounds (default 1)",
    )
    ap.add_argument(
        "--cli-every",
        type=int,
        default=25,
        help="every Nth round a double click through two `mlops approve` "
        "processes; 0: never (default 25)",
    )
    ap.add_argument("--seed", type=int, default=7, help="seed of the stream and the faults")
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (workspace, MLflow, landing files, logs)",
    )
    ap.add_argument("--_actor", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # XGBoost's OpenMP threads spin while they wait; passive waiting shares the cores
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args._actor:
        cfg, state, pause, cli_every = args._actor
        return actor_main(Path(cfg), Path(state), float(pause), int(cli_every))
    if args.batches < 10 or args.monitor_every < 1:
        ap.error("--batches must be at least 10 and --monitor-every at least 1")

    import logging

    logging.basicConfig(level=logging.ERROR)  # refusals are expected here; keep stderr quiet
    from mlops_core.data.ingest import ingest
    from mlops_core.monitor.run import monitor
    from mlops_core.ops.services import MLFLOW, start_mlflow, stop_service

    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    server_ws = tmp / "mlflow-server"
    state = tmp / "actor"
    state.mkdir()
    actor = None
    n = args.batches
    warm = min(100, max(1, n // 10))  # RSS is taken as the start after this many batches
    tenth = max(1, n // 10)
    ingest_s: list[float] = []
    ingest_cpu: list[float] = []  # CPU seconds of this process: the same, less waiting
    monitor_s: list[tuple[int, float]] = []
    monitor_errors: list[str] = []
    rss: list[float] = []
    outcomes: dict[int, list[Any]] = {}
    counts = {"accepted": 0, "quarantined": 0, "duplicate": 0, "deferred": 0}
    try:
        server = start_mlflow(server_ws)
        settings, cfg, files, setup_batches, first = make_project(
            tmp, server.url, args.rows_per_batch, n, args.bad_share, args.seed
        )
        actor = start_actor(cfg, state, args)
        print(
            f"actor started (pid {actor.pid}); soaking {len(files)} batches, monitoring "
            f"every {args.monitor_every}",
            flush=True,
        )
        t_loop = time.perf_counter()
        every = max(1, len(files) // 20)
        for f in files:
            t0, c0 = time.perf_counter(), time.process_time()
            report = ingest(settings, [f.path])
            ingest_s.append(time.perf_counter() - t0)
            ingest_cpu.append(time.process_time() - c0)
            outcomes[f.index] = report.outcomes
            for o in report.outcomes:
                counts[o.status] = counts.get(o.status, 0) + 1
            done = f.index + 1
            if done % args.monitor_every == 0:
                t0 = time.perf_counter()
                try:
                    monitor(settings)
                    monitor_s.append((done, time.perf_counter() - t0))
                except Exception as e:  # counted, shown, a missed target
                    monitor_errors.append(f"after batch {done}: {type(e).__name__}: {e}")
            rss.append(rss_mb())
            if done % every == 0 or done == len(files):
                recent = ingest_s[-every:]
                print(
                    f"batch {done:>5}/{len(files)}: {counts['accepted']} accepted, "
                    f"{counts['quarantined']} quarantined, {counts['duplicate']} duplicate; "
                    f"ingest p50 {pct(recent, 50) * 1000:.0f} ms; monitoring runs "
                    f"{len(monitor_s)}"
                    + (f" (last {monitor_s[-1][1]:.1f} s)" if monitor_s else "")
                    + (f", {len(monitor_errors)} failed" if monitor_errors else "")
                    + f"; RSS {rss[-1]:.0f} MB (actor {rss_mb(actor.pid):.0f} MB); "
                    f"actor decisions {len(read_actor(state))}; "
                    f"{time.perf_counter() - t_loop:.0f} s",
                    flush=True,
                )
        loop_s = time.perf_counter() - t_loop
        stop_actor(actor, state)
        acts = read_actor(state)
        summary = json.loads((state / SUMMARY).read_text()) if (state / SUMMARY).exists() else {}
        db_ok, db_problems = check_batches(settings, files, outcomes, setup_batches)
        reg = check_registry(settings, acts, len(monitor_s))
    finally:
        if actor is not None and actor.poll() is None:
            stop_actor(actor, state)
        stop_service(server_ws, MLFLOW)
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rss_start, rss_end = rss[warm - 1], rss[-1]
    growth = rss_end / rss_start
    early, late = ingest_s[:tenth], ingest_s[-tenth:]
    cpu_early, cpu_late = ingest_cpu[:tenth], ingest_cpu[-tenth:]
    slowdown = pct(late, 50) / pct(early, 50)
    m_all = [s for _, s in monitor_s]
    m_tenth = max(1, len(m_all) // 10)
    m_early, m_late = m_all[:m_tenth], m_all[-m_tenth:]
    for p in db_problems[:10] + reg["problems"][:10]:
        print(f"problem: {p}")
    for e in monitor_errors[:5]:
        print(f"monitoring failed {e}")
    print(
        f"\n{len(files)} batches in {loop_s:.0f} s ({loop_s / len(files) * 1000:.0f} ms a "
        f"batch, monitoring included); {len(monitor_s)} monitoring runs; the actor: "
        f"{summary.get('rounds', '?')} rounds, {summary.get('registered', '?')} versions "
        f"registered, {len(acts)} decisions ({reg['approvals']} approvals, "
        f"{reg['rejections']} rejections, {reg['rollbacks']} rollbacks applied; "
        f"{reg['refused']} refused, {reg['noops']} no-ops, {reg['errors']} errors); "
        f"champion v{reg['champion']} (first v{first})"
    )
    print(
        f"ingest ms   p50/p95: first {tenth} batches {pct(early, 50) * 1000:.0f}/"
        f"{pct(early, 95) * 1000:.0f}, last {tenth} {pct(late, 50) * 1000:.0f}/"
        f"{pct(late, 95) * 1000:.0f}; CPU ms p50: first {pct(cpu_early, 50) * 1000:.0f}, "
        f"last {pct(cpu_late, 50) * 1000:.0f}"
    )
    print(
        f"monitoring s p50: first {m_tenth} runs {pct(m_early, 50):.2f}, last {m_tenth} "
        f"{pct(m_late, 50):.2f}"
    )
    print(
        f"RSS MB: after batch {warm} {rss_start:.0f}, end {rss_end:.0f}, max {max(rss):.0f}; "
        f"actor {summary.get('rss_start_mb', float('nan')):.0f} -> "
        f"{summary.get('rss_end_mb', float('nan')):.0f}"
    )
    db_consistent = db_ok and reg["monitor_records_ok"] and not monitor_errors
    checks = (
        db_consistent
        and reg["one_champion"]
        and reg["audit_ok"]
        and reg["race_ok"]
        and reg["runs_running"] == 0
    )
    met = growth <= MAX_RSS_GROWTH and slowdown <= MAX_SLOWDOWN and checks
    b = lambda x: str(bool(x)).lower()  # noqa: E731
    print(
        f"batches={len(files)} accepted={counts['accepted']} "
        f"quarantined={counts['quarantined']} duplicate={counts['duplicate']} "
        f"monitor_runs={len(monitor_s)} monitor_errors={len(monitor_errors)} "
        f"rss_start_mb={rss_start:.0f} rss_end_mb={rss_end:.0f} rss_max_mb={max(rss):.0f} "
        f"rss_growth={growth:.2f} p50_early_ms={pct(early, 50) * 1000:.0f} "
        f"p95_early_ms={pct(early, 95) * 1000:.0f} p50_late_ms={pct(late, 50) * 1000:.0f} "
        f"p95_late_ms={pct(late, 95) * 1000:.0f} slowdown={slowdown:.2f} "
        f"cpu_p50_early_ms={pct(cpu_early, 50) * 1000:.0f} "
        f"cpu_p50_late_ms={pct(cpu_late, 50) * 1000:.0f} "
        f"monitor_p50_early_s={pct(m_early, 50):.2f} "
        f"monitor_p50_late_s={pct(m_late, 50):.2f} "
        f"monitor_slowdown={pct(m_late, 50) / pct(m_early, 50):.2f} "
        f"actor_rounds={summary.get('rounds', 0)} versions={reg['versions']} "
        f"approvals={reg['approvals']} rejections={reg['rejections']} "
        f"rollbacks={reg['rollbacks']} refused={reg['refused']} noops={reg['noops']} "
        f"actor_errors={reg['errors']} audit_records={reg['audit_records']} "
        f"audit_ok={b(reg['audit_ok'])} race_ok={b(reg['race_ok'])} "
        f"db_consistent={b(db_consistent)} one_champion={b(reg['one_champion'])} "
        f"runs_running={reg['runs_running']} wall_s={time.perf_counter() - t_all:.0f} "
        f"target_met={b(met)}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
