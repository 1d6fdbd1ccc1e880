"""A fault harness: real services on loopback (MLflow, Prefect, the serving API), real
processes (`mlops train`, approvers, flow runs) whose pids are recorded and printed, and one
invariant checker, :func:`check_invariants`, run after every fault:

- exactly one champion (when there was one before), the MLflow alias and the metadata DB agree;
- never an unapproved champion: it is ``approved``, its gate passed, the latest champion decision
  in the audit log (approve, rollback or auto-promotion) names it, no rejection does;
- no lost audit record: every record seen before the fault is still there, unchanged; every
  version has its ``register`` record; no version is decided twice;
- no lost or duplicated batch: every batch seen before is still there, every accepted batch has
  its Parquet file, no content hash is accepted twice;
- no MLflow run left RUNNING in the project's experiment.

Faults: a training process killed (SIGKILL) during its search and while its MLflow run is open;
MLflow stopped just before registration, then started again on the same port and store; two
trainings at once; two approvals at once and a double click (same request id), through
``mlops_core.ops.actions`` as the dashboard calls it; the artifact store full (an MLflow server
whose artifact writes are capped by RLIMIT_FSIZE) and the training machine's disk full (the
cap on the training process); clock skew (ingest and decisions with the clock behind and
ahead); a promotion while the serving API is under load; the Prefect server restarted while a
training flow runs; a process killed between the audit record and the alias move, and a
tampered package, with the helpers of ``registry_helpers`` (the in-process versions of these
two, an exception instead of a dead process and the registry instead of ``actions``, are in
``tests/test_registry.py``: ``test_a_crash_between_audit_and_alias_move_is_repaired_by_the_
next_operation`` and ``test_a_tampered_model_package_cannot_become_champion``).

The whole file takes about four minutes on two cores (the Prefect part half a minute).

Where a fault once showed a product bug, the violation it caused is raised as
:class:`ProductBug` after every other check of the test has passed (a killed training's run
left RUNNING; a traceback instead of one line when MLflow or the disk fails mid-training; the
training slot lost by a Prefect restart: all fixed, the tests kept as their regression
tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from registry_helpers import (
    add_version,
    audit_for,
    client_records,
    demo_frame,
    demo_settings,
    ingest_frame,
    model_folder,
    write_config,
)

from mlops_core.config import Settings
from mlops_core.data.ingest import ingest, release_batch
from mlops_core.demo.stream import TIME
from mlops_core.ops import actions
from mlops_core.ops.auth import local_principal
from mlops_core.ops.services import (
    HOST,
    MLFLOW,
    PREFECT_SERVER,
    SERVING,
    ServiceInfo,
    _bin,
    free_port,
    mlflow_paths,
    prefect_env,
    prefect_request,
    start_mlflow,
    start_prefect_server,
    start_service,
    start_serving,
    stop_service,
    tracking_uri,
)
from mlops_core.registry.registry import CHAMPION, Registry
from mlops_core.store import BatchRecord, MetadataStore, audit_log, champion_state, utcnow
from mlops_core.train.pipeline import train_and_register

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MLOPS = str(Path(sys.executable).parent / "mlops")
# the smallest training that still goes through every step: one trial, no window choice, no
# smoke-test process, a small reference sample
TINY: dict[str, Any] = {
    "gate": {"smoke_test": False},
    "model": {
        "search": {"trials": 1, "timeout_s": 20},
        "reference_rows": 500,
        "window": {"choose": False},
    },
}
FRAME = demo_frame(1500, days=56, seed=11)  # eight weekly batches
EARLY = FRAME[FRAME[TIME] < FRAME[TIME].min() + pd.Timedelta(weeks=4)]
LATE = FRAME[FRAME[TIME] >= FRAME[TIME].min() + pd.Timedelta(weeks=4)]
CHAMPION_MOVES = ("approve", "rollback", "auto_promote")
ONCE = ("approve", "auto_promote", "reject", "gate_reject")  # a version is decided once
AUDIT_FIELDS = (
    "at",
    "actor",
    "action",
    "version",
    "previous_champion",
    "outcome",
    "reason",
    "evidence",
    "request_id",
)
ENV = dict(
    os.environ,
    MLFLOW_DISABLE_TELEMETRY="true",
    DO_NOT_TRACK="1",
    OMP_WAIT_POLICY="PASSIVE",
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    COLUMNS="200",
)  # Rich wraps what it prints at the terminal's width


class ProductBug(AssertionError):
    """The violation a product bug caused, once (see the module's docstring)."""


# the invariants ----------------------------------------------------------------------------
def audit_snapshot(settings: Settings) -> list[dict[str, Any]]:
    """The project's audit records, oldest first, as dicts."""
    meta = MetadataStore(settings.db_url)
    try:
        with meta.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    sa.select(audit_log)
                    .where(audit_log.c.model == settings.project)
                    .order_by(audit_log.c.id)
                )
            ]
    finally:
        meta.dispose()


def batch_snapshot(settings: Settings) -> list[BatchRecord]:
    meta = MetadataStore(settings.db_url)
    try:
        return meta.list_batches()
    finally:
        meta.dispose()


def check_invariants(
    settings: Settings,
    *,
    audit_before: list[dict[str, Any]] | None = None,
    batches_before: list[BatchRecord] | None = None,
    had_champion: bool = False,
) -> list[str]:
    """Every violated invariant, one line each (prefixed ``champion:``, ``audit:``, ``batch:``
    or ``run:``); empty when all hold. Reads only: it repairs nothing (no registry operation,
    so no reconcile), and sees MLflow as serving does (the alias)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    out: list[str] = []
    name = settings.project
    uri = tracking_uri(settings)
    client = MlflowClient(uri, registry_uri=uri)
    audit = audit_snapshot(settings)
    batches = batch_snapshot(settings)
    meta = MetadataStore(settings.db_url)
    try:
        with meta.engine.connect() as conn:
            recorded = conn.execute(
                sa.select(champion_state.c.version).where(champion_state.c.model == name)
            ).scalar_one_or_none()
    finally:
        meta.dispose()
    try:
        aliases = {k: str(v) for k, v in (client.get_registered_model(name).aliases or {}).items()}
    except MlflowException:
        aliases = {}
    versions = {str(mv.version): mv for mv in client.search_model_versions(f"name='{name}'")}

    # exactly one champion, and never an unapproved one
    champion = aliases.get(CHAMPION)
    if had_champion and champion is None:
        out.append("champion: no champion alias, though there was a champion before the fault")
    if champion != recorded:
        out.append(f"champion: the alias names v{champion}, the metadata DB v{recorded}")
    if champion is not None:
        mv = versions.get(champion)
        tags = dict(mv.tags or {}) if mv is not None else {}
        if mv is None:
            out.append(f"champion: the alias names v{champion}, which does not exist")
        elif tags.get("status") != "approved":
            out.append(f"champion: v{champion} has status {tags.get('status')!r}, not approved")
        if mv is not None and tags.get("gate_passed") != "true":
            out.append(
                f"champion: v{champion} did not pass the gate "
                f"(gate_passed={tags.get('gate_passed')!r})"
            )
        moves = [a for a in audit if a["outcome"] == "applied" and a["action"] in CHAMPION_MOVES]
        if not moves or moves[-1]["version"] != champion:
            last = f"{moves[-1]['action']} v{moves[-1]['version']}" if moves else "none"
            out.append(
                f"champion: v{champion} is not what the latest approve / rollback / "
                f"auto-promotion record names (latest: {last})"
            )
        if any(
            a["outcome"] == "applied"
            and a["action"] in ("reject", "gate_reject")
            and a["version"] == champion
            for a in audit
        ):
            out.append(f"champion: v{champion} was rejected")

    # no lost audit record, no version decided twice, every version registered with a record
    if audit_before is not None:
        now = {a["id"]: a for a in audit}
        for a in audit_before:
            b = now.get(a["id"])
            what = f"record {a['id']} ({a['action']} v{a['version']} by {a['actor']})"
            if b is None:
                out.append(f"audit: {what} was lost")
            elif any(a[k] != b[k] for k in AUDIT_FIELDS) or (
                a["alias_moved_at"] is not None and b["alias_moved_at"] is None
            ):
                out.append(f"audit: {what} changed: {a} -> {b}")
    decided = Counter(
        a["version"] for a in audit if a["outcome"] == "applied" and a["action"] in ONCE
    )
    out += [f"audit: v{v} was decided {n} times" for v, n in decided.items() if n > 1]
    registered = {a["version"] for a in audit if a["action"] == "register"}
    out += [
        f"audit: v{v} exists in MLflow without its register record"
        for v in sorted(set(versions) - registered, key=int)
    ]

    # no lost or duplicated batch
    ws = settings.workspace
    for b in batches:
        if b.status in ("accepted", "withdrawn") and not (ws / b.path).is_file():
            out.append(f"batch: {b.id} ({b.status}) has no Parquet file at {b.path}")
    hashes = Counter(b.content_sha256 for b in batches if b.status == "accepted")
    out += [f"batch: content {h[:12]} accepted {n} times" for h, n in hashes.items() if n > 1]
    if batches_before is not None:
        now_b = {b.id: b for b in batches}
        for b in batches_before:
            if b.id not in now_b:
                out.append(f"batch: {b.id} ({b.status}) was lost")
            elif now_b[b.id].content_sha256 != b.content_sha256:
                out.append(f"batch: {b.id} changed its content hash")

    # no run left RUNNING
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        for r in client.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'RUNNING'"
        ):
            out.append(f"run: MLflow run {r.info.run_id} ({r.info.run_name}) is still RUNNING")
    return out


def split(violations: list[str], *prefixes: str) -> tuple[list[str], list[str]]:
    """(violations with one of ``prefixes``, the others)."""
    known = [v for v in violations if v.startswith(prefixes)]
    return known, [v for v in violations if not v.startswith(prefixes)]


# processes -----------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


class Procs:
    """The processes and services a test started, by pid: printed when started, named in every
    failure message (``str(procs)``), and the processes still running killed at the end (their
    own process group: each starts a session of its own)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[str, int, Proc | None]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Proc:
        n = len(self.started)
        out, err = self.folder / f"{n}-{name}.out", self.folder / f"{n}-{name}.err"
        with open(out, "wb") as o, open(err, "wb") as e:
            p = subprocess.Popen(
                argv,
                stdout=o,
                stderr=e,
                stdin=subprocess.DEVNULL,
                env=env or ENV,
                cwd=REPO,
                start_new_session=True,
                preexec_fn=preexec_fn,
            )
        proc = Proc(name, p, out, err)
        self.started.append((name, p.pid, proc))
        print(f"[pid {p.pid}] started {name}: {' '.join(argv)[:200]}")
        return proc

    def service(self, info: ServiceInfo) -> ServiceInfo:
        self.started.append((info.name, info.pid, None))
        print(f"[pid {info.pid}] service {info.name} at {info.url}")
        return info

    def wait(self, proc: Proc, timeout_s: float) -> int:
        try:
            return proc.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            raise AssertionError(
                f"{proc.name} (pid {proc.pid}) did not end within "
                f"{timeout_s:.0f} s; {self}\n{proc.stderr()[-3000:]}"
            ) from None

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        if proc.popen.poll() is None:  # its group is ours while its leader lives
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            if sig == signal.SIGKILL:
                proc.popen.wait(30)

    def close(self) -> None:
        for _, _, proc in self.started:
            if proc is not None:
                self.kill(proc)

    def __str__(self) -> str:
        parts = []
        for name, pid, proc in self.started:
            rc = proc.popen.poll() if proc is not None else "service"
            parts.append(f"{name}={pid} ({'running' if rc is None else rc})")
        return "pids: " + ", ".join(parts)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    folder = tmp_path / "procs"
    folder.mkdir()
    p = Procs(folder)
    try:
        yield p
    finally:
        p.close()
        print(p)


def run_mlops(
    procs: Procs, name: str, *args: str, timeout_s: float = 300, **kw: Any
) -> tuple[int, Proc]:
    proc = procs.start(name, [MLOPS, *args], **kw)
    return procs.wait(proc, timeout_s), proc


def wait_for(
    check: Callable[[], Any],
    timeout_s: float,
    what: str,
    every: float = 0.05,
    alive: Proc | None = None,
) -> Any:
    """``check()``'s first truthy answer; fails after ``timeout_s`` or when ``alive`` ended."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if alive is not None and alive.popen.poll() is not None:
            raise AssertionError(
                f"{alive.name} (pid {alive.pid}) ended (code "
                f"{alive.popen.returncode}) before {what}:\n"
                f"{alive.stderr()[-2000:]}"
            )
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def clear_error(stderr: str, *words: str) -> str | None:
    """None when ``stderr`` is a clear failure: an ``error:`` line naming one of ``words``,
    and no traceback; else what is wrong with it."""
    if "Traceback" in stderr or "╭─" in stderr:
        text = " ".join(ln.strip(" │╭╮╰╯─") for ln in stderr.splitlines())
        raised = list(re.finditer(r"\b\w+(?:Error|Exception): ", text))
        last = " ".join(text[raised[-1].start() :].split())[:300] if raised else text[-300:]
        ours = re.findall(r"mlops_c\w+/([\w/]+\.py):(\d+) in (\w+)", stderr)
        where = " → ".join(f"{f}:{n} {fn}" for f, n, fn in ours)
        return (
            f"a traceback of {len(stderr.splitlines())} lines instead of a one-line "
            f"error (through {where or '?'}): {last}"
        )
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    if not lines:
        return f"no 'error:' line: {stderr.strip()[-300:]}"
    if words and not any(w.lower() in " ".join(lines).lower() for w in words):
        return f"the error does not say what failed ({' / '.join(words)}): {lines[-1]}"
    return None


# projects ------------------------------------------------------------------------------------
def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_settings(tmp_path: Path, url: str, project: str, **sections: Any) -> Settings:
    return demo_settings(tmp_path, url, project, **merge(TINY, sections))


def make_project(
    tmp_path: Path, url: str, project: str, frame: pd.DataFrame = FRAME, **sections: Any
) -> tuple[Settings, Path]:
    """A project with ``frame`` ingested (weekly batches) and its mlops.yaml written."""
    s = tiny_settings(tmp_path, url, project, **sections)
    ingest_frame(s, frame, tmp_path / "landing")
    return s, write_config(s, tmp_path / "mlops.yaml")


def with_champion(settings: Settings, source: tuple[Registry, str]) -> str:
    """A first champion, registered from the module's trained model (no training here)."""
    reg = Registry(settings)
    v = add_version(reg, *source)
    res = reg.approve(v, by="ops", comment="the first champion", expected_champion=None)
    assert res.outcome == "applied", res
    return v


def mlflow_client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    uri = tracking_uri(settings)
    return MlflowClient(uri, registry_uri=uri)


def runs(client: Any, project: str, status: str | None = None) -> list[Any]:
    exp = client.get_experiment_by_name(project)
    if exp is None:
        return []
    return list(
        client.search_runs(
            [exp.experiment_id], filter_string=(f"attributes.status = '{status}'" if status else "")
        )
    )


def version_numbers(settings: Settings) -> list[str]:
    return sorted(
        (
            str(mv.version)
            for mv in mlflow_client(settings).search_model_versions(f"name='{settings.project}'")
        ),
        key=int,
    )


@pytest.fixture(scope="module")
def source(
    mlflow_server: ServiceInfo, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Registry, str]:
    """One model trained on the first four weeks: the package that champions and extra versions
    are registered from (``add_version``). Read-only, except the tamper test, which restores
    what it changes."""
    tmp = tmp_path_factory.mktemp("faults-source")
    s = tiny_settings(tmp, mlflow_server.url, "faults-source")
    ingest_frame(s, EARLY, tmp / "landing")
    out = train_and_register(s)
    assert out.status == "pending_approval", out.gate.reasons
    return Registry(s), str(out.version)


# 1. a training process killed ----------


@pytest.mark.parametrize(
    "phase",
    [
        "search",
        "mlflow-run",
    ],
)
def test_a_training_killed_with_sigkill_leaves_the_invariants_and_the_next_one_trains(
    source: tuple[Registry, str],
    mlflow_server: ServiceInfo,
    tmp_path: Path,
    procs: Procs,
    phase: str,
) -> None:
    """`mlops train` killed (SIGKILL, its whole process group: a worker that dies) during its
    search (before any MLflow run) or while its MLflow run is open (logging the model)."""
    name = f"faults-kill-{phase}"
    s, config = make_project(tmp_path, mlflow_server.url, name)
    champion = with_champion(s, source)
    audit0, batches0 = audit_snapshot(s), batch_snapshot(s)
    versions0 = version_numbers(s)
    client = mlflow_client(s)
    runs0 = {r.info.run_id for r in runs(client, name)}

    server_log = Path(mlflow_server.log_file)
    offset = server_log.stat().st_size
    train = procs.start("train", [MLOPS, "train", "--config", str(config)])
    if phase == "search":
        # the last call to MLflow before the search lists the versions (a copy of the newest
        # is refused); the next comes after the search and refit: kill when the server has
        # answered that listing, and no run exists yet
        listed = f"model-versions/search?filter=name%3D%27{name}%27"
        wait_for(
            lambda: listed in _read_from(server_log, offset),
            120,
            "the training to list the versions and start its search",
            alive=train,
        )
    else:
        wait_for(
            lambda: runs(client, name, "RUNNING"), 120, "the training's MLflow run", alive=train
        )
    procs.kill(train)
    assert train.popen.returncode == -signal.SIGKILL, procs
    print(f"killed {train.name} (pid {train.pid}) during the {phase}")
    if phase == "search":
        assert [r for r in runs(client, name) if r.info.run_id not in runs0] == [], (
            f"a run had started: not a kill during the search; {procs}"
        )

    assert version_numbers(s) == versions0, f"the killed training registered a version; {procs}"
    _, other = split(
        check_invariants(s, audit_before=audit0, batches_before=batches0, had_champion=True), "run:"
    )
    assert other == [], f"{other}; {procs}"
    assert Registry(s).champion() == champion

    rc, again = run_mlops(procs, "train-again", "train", "--config", str(config))
    assert rc == 0, f"the next training failed; {procs}\n{again.stderr()[-3000:]}"
    after = version_numbers(s)
    assert len(after) == len(versions0) + 1, (after, versions0)
    bugs, other = split(
        check_invariants(s, audit_before=audit0, batches_before=batches0, had_champion=True), "run:"
    )
    assert other == [], f"{other}; {procs}"
    assert Registry(s).champion() == champion
    if bugs:
        raise ProductBug(f"{bugs}; {procs}")


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


# 2. MLflow down during registration, then back ----------


def test_mlflow_down_during_registration_fails_clearly_and_the_next_training_registers(
    tmp_path: Path, procs: Procs
) -> None:
    mws = tmp_path / "mlflow-ws"
    info = procs.service(start_mlflow(mws))
    try:
        s = tiny_settings(tmp_path, info.url, "faults-mlflow-down")
        ingest_frame(s, EARLY, tmp_path / "landing")
        first = train_and_register(s)
        assert Registry(s).approve(str(first.version), by="ops", comment="first").ok
        ingest_frame(s, LATE, tmp_path / "landing", name="late.parquet")
        config = write_config(s, tmp_path / "mlops.yaml")
        audit0, batches0, versions0 = audit_snapshot(s), batch_snapshot(s), version_numbers(s)
        client = mlflow_client(s)
        runs0 = {r.info.run_id for r in runs(client, s.project)}

        train = procs.start("train", [MLOPS, "train", "--config", str(config)])
        # its run has ended: what is left is the evidence upload, the package hash and the
        # registration. Freeze it there, take MLflow away, let it go on.
        wait_for(
            lambda: [r for r in runs(client, s.project, "FINISHED") if r.info.run_id not in runs0],
            120,
            "the training's run to end",
            alive=train,
        )
        procs.kill(train, signal.SIGSTOP)
        assert version_numbers(s) == versions0, f"registered before the fault; {procs}"
        assert stop_service(mws, MLFLOW)
        print(
            f"MLflow (pid {info.pid}) stopped while {train.name} (pid {train.pid}) waits "
            "to register"
        )
        t0 = time.monotonic()
        procs.kill(train, signal.SIGCONT)
        rc = procs.wait(train, 180)
        failed_in = time.monotonic() - t0
        assert rc != 0, f"the training succeeded without MLflow; {procs}"
        assert failed_in < 90, f"the training took {failed_in:.0f} s to fail; {procs}"
        problem = clear_error(train.stderr(), "MLflow", "does not answer", "connection")
        print(f"the training failed in {failed_in:.1f} s (code {rc}); {problem or 'clearly'}")

        info = procs.service(start_mlflow(mws, port=info.port))  # the same port and store
        assert info.url == s.storage.mlflow_uri
        assert version_numbers(s) == versions0, f"a version appeared; {procs}"
        violations = check_invariants(
            s, audit_before=audit0, batches_before=batches0, had_champion=True
        )
        assert violations == [], f"{violations}; {procs}"

        rc, again = run_mlops(procs, "train-again", "train", "--config", str(config), "--json")
        assert rc == 0, f"{procs}\n{again.stderr()[-3000:]}"
        outcome = json.loads(again.stdout())
        assert version_numbers(s) == [*versions0, str(outcome["version"])]
        violations = check_invariants(
            s, audit_before=audit0, batches_before=batches0, had_champion=True
        )
        assert violations == [], f"{violations}; {procs}"
        assert Registry(s).champion() == str(first.version)
        if problem:
            raise ProductBug(f"MLflow down: {problem}; {procs}")
    finally:
        stop_service(mws, MLFLOW)


# 3. two trainings at once ----------
def test_two_trainings_at_once_register_distinct_versions_or_one_refuses(
    source: tuple[Registry, str], mlflow_server: ServiceInfo, tmp_path: Path, procs: Procs
) -> None:
    s, config = make_project(tmp_path, mlflow_server.url, "faults-two-trainings")
    champion = with_champion(s, source)
    audit0, batches0, versions0 = audit_snapshot(s), batch_snapshot(s), version_numbers(s)

    both = [
        procs.start(f"train-{i}", [MLOPS, "train", "--config", str(config), "--json"])
        for i in (1, 2)
    ]
    codes = [procs.wait(p, 300) for p in both]

    done = [json.loads(p.stdout()) for p, rc in zip(both, codes, strict=True) if rc == 0]
    refused = [p for p, rc in zip(both, codes, strict=True) if rc != 0]
    assert done, f"neither training finished; {procs}\n" + "\n".join(
        p.stderr()[-2000:] for p in both
    )
    for p in refused:  # only the clear refusal of a copy of the other's version
        assert clear_error(p.stderr(), "no new data") is None, f"{procs}\n{p.stderr()[-3000:]}"
    new = [str(o["version"]) for o in done]
    assert len(set(new)) == len(new), f"one version number twice: {new}; {procs}"
    assert version_numbers(s) == [*versions0, *sorted(new, key=int)]
    reg = Registry(s)
    challenger = reg.aliases().get("challenger")
    assert challenger is None or challenger in new
    violations = check_invariants(
        s, audit_before=audit0, batches_before=batches0, had_champion=True
    )
    assert violations == [], f"{violations}; {procs}"
    assert reg.champion() == champion
    copies = {reg.version(v).tags.get("data_fingerprint") for v in new}
    print(
        f"two trainings at once: {len(done)} finished ({new}), {len(refused)} refused; "
        f"{'the same data fingerprint: a copy was registered' if len(new) > len(copies) else ''}"
        f"; {procs}"
    )


# 4. two approvals at once, and a double click ----------
APPROVER = """
import json, sys, time
from pathlib import Path
from mlops_core.ops import actions
from mlops_core.ops.auth import local_principal
from mlops_core.config import load_config
from mlops_core.registry.registry import Registry

config, version, by, request_id, ready, go = sys.argv[1:7]
settings = load_config(config)
reg = Registry(settings)
reg.aliases(), reg.audit(limit=1)  # connected before the start signal
Path(ready).touch()
deadline = time.monotonic() + 120
while not Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.002)
res = actions.approve(settings, local_principal(by), version, comment=by + " clicked approve",
                      request_id=request_id or None, registry=reg)
print(json.dumps(res.to_dict()))
"""


def _approve_at_once(
    procs: Procs, config: Path, folder: Path, jobs: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """``actions.approve`` in one process per (version, by, request id), released together."""
    script = folder / "approver.py"
    script.write_text(APPROVER)
    go = folder / f"go-{len(procs.started)}"
    started, ready = [], []
    for i, (version, by, rid) in enumerate(jobs):
        ready.append(folder / f"ready-{len(procs.started)}-{i}")
        started.append(
            procs.start(
                f"approve-{by}",
                [
                    sys.executable,
                    str(script),
                    str(config),
                    version,
                    by,
                    rid,
                    str(ready[-1]),
                    str(go),
                ],
            )
        )
    wait_for(lambda: all(p.exists() for p in ready), 120, "the approvers to be ready", every=0.05)
    go.touch()
    results = []
    for p in started:
        assert procs.wait(p, 120) == 0, f"{procs}\n{p.stderr()[-3000:]}"
        results.append(json.loads(p.stdout().strip().splitlines()[-1]))
    return results


def test_two_approvals_at_once_and_a_double_click_apply_once(
    source: tuple[Registry, str], mlflow_server: ServiceInfo, tmp_path: Path, procs: Procs
) -> None:
    s = tiny_settings(tmp_path, mlflow_server.url, "faults-approvals")
    config = write_config(s, tmp_path / "mlops.yaml")
    reg = Registry(s)
    v1 = with_champion(s, source)
    v2, v3 = add_version(reg, *source), add_version(reg, *source)
    audit0 = audit_snapshot(s)

    # two people approve v2 at the same moment (their own request ids)
    results = _approve_at_once(
        procs, config, tmp_path, [(v2, "alice", "click-alice"), (v2, "bob", "click-bob")]
    )
    assert sorted(r["outcome"] for r in results) == ["applied", "refused"], (results, procs)
    lost = next(r for r in results if r["outcome"] == "refused")
    assert "nothing was changed" in lost["message"], lost
    assert reg.champion() == v2
    records = reg.audit(action="approve", version=v2)
    assert sorted(r.outcome for r in records) == ["applied", "refused"]  # both audited, once
    violations = check_invariants(s, audit_before=audit0, had_champion=True)
    assert violations == [], f"{violations}; {procs}"

    # a double click: the same request (its id) sent twice at once, then once more
    audit1 = audit_snapshot(s)
    results = _approve_at_once(
        procs, config, tmp_path, [(v3, "carol", "click-carol"), (v3, "carol", "click-carol")]
    )
    assert sorted(r["outcome"] for r in results) == ["applied", "noop"], (results, procs)
    noop = next(r for r in results if r["outcome"] == "noop")
    assert "already handled" in noop["message"], noop
    third = actions.approve(
        s,
        local_principal("carol"),
        v3,
        comment="clicked again",
        request_id="click-carol",
        registry=reg,
    )
    assert third.outcome == "noop", third
    [rec] = audit_for(reg, "click-carol")
    assert (rec.outcome, rec.version, rec.previous_champion) == ("applied", v3, v2)
    assert reg.champion() == v3
    assert [r.outcome for r in reg.audit(action="approve", version=v3)] == ["applied"]
    violations = check_invariants(s, audit_before=audit1, had_champion=True)
    assert violations == [], f"{violations}; {procs}"
    assert [reg.version(v).status for v in (v1, v2, v3)] == ["retired", "retired", "approved"]


# 5. the artifact store full, the training machine's disk full ----------
_CAPPED = (
    "import os, resource, sys\n"
    "cap = int(sys.argv[1])\n"
    "if cap: resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def _start_artifact_server(workspace: Path, port: int, cap: int) -> ServiceInfo:
    """An MLflow server that stores the artifacts itself (proxied: ``mlflow-artifacts:/``), its
    file writes capped at ``cap`` bytes a file (0: none) as a full disk refuses them: the
    process execs into ``mlflow server``, so the recorded pid is the server's."""
    db, _ = mlflow_paths(workspace)
    db.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-c",
        _CAPPED,
        str(cap),
        _bin("mlflow"),
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--artifacts-destination",
        str(db.parent / "proxied"),
        "--workers",
        "1",
    ]
    return start_service(workspace, MLFLOW, argv, port=port, health_path="/health", timeout_s=120)


@pytest.mark.parametrize("full", ["artifact-store", "training-disk"])
def test_a_full_store_fails_the_training_clearly_and_nothing_half_registered_is_champion(
    source: tuple[Registry, str],
    mlflow_server: ServiceInfo,
    tmp_path: Path,
    procs: Procs,
    full: str,
) -> None:
    """In auto-promotion mode (a version that passes the gate becomes champion at once):

    - ``artifact-store``: the project's MLflow server stores the artifacts and its disk is full
      for files over ~1.8 MB (RLIMIT_FSIZE on the server: the model package fits, the evidence
      report does not), then has space again (restarted on the same port and store);
    - ``training-disk``: the training process cannot write a file over 1 MB (RLIMIT_FSIZE in its
      preexec_fn): its temporary files and the artifacts it writes itself (artifacts are not
      proxied by ``start_mlflow``) hit the same full disk."""
    auto = {"promotion": {"mode": "auto"}}
    mws = tmp_path / "mlflow-ws"
    try:
        if full == "artifact-store":
            port = free_port()
            info = procs.service(_start_artifact_server(mws, port, 0))
            s = tiny_settings(tmp_path, info.url, "faults-full-store", **auto)
            ingest_frame(s, EARLY, tmp_path / "landing")
            first = train_and_register(s)  # auto: the first champion
            champion = str(first.version)
            assert first.status == "approved", first.gate.reasons
            report = max(
                ((mws / "mlflow" / "proxied").rglob("performance.html")),
                key=lambda p: p.stat().st_size,
            )
            cap = report.stat().st_size // 2
            assert mlflow_paths(mws)[0].stat().st_size < cap - 500_000  # the DB still fits
            assert stop_service(mws, MLFLOW)
            info = procs.service(_start_artifact_server(mws, port, cap))
            print(f"artifact store capped at {cap:,} bytes a file")
            preexec = None
        else:
            s = tiny_settings(tmp_path, mlflow_server.url, "faults-full-disk", **auto)
            ingest_frame(s, EARLY, tmp_path / "landing")
            champion = with_champion(s, source)

            def preexec() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

        ingest_frame(s, LATE, tmp_path / "landing", name="late.parquet")
        config = write_config(s, tmp_path / "mlops.yaml")
        audit0, batches0, versions0 = audit_snapshot(s), batch_snapshot(s), version_numbers(s)

        t0 = time.monotonic()
        train = procs.start(
            "train-full", [MLOPS, "train", "--config", str(config)], preexec_fn=preexec
        )
        rc = procs.wait(train, 240)
        took = time.monotonic() - t0
        assert rc != 0, f"the training succeeded on a full disk; {procs}"
        assert took < 120, f"it took {took:.0f} s to fail; {procs}"
        problem = clear_error(train.stderr(), "space", "full", "too large", "artifact")
        print(f"{full}: the training failed in {took:.1f} s (code {rc}); {problem or 'clearly'}")
        assert version_numbers(s) == versions0, f"a version was registered; {procs}"
        violations = check_invariants(
            s, audit_before=audit0, batches_before=batches0, had_champion=True
        )
        assert violations == [], f"{violations}; {procs}"
        assert Registry(s).champion() == champion

        if full == "artifact-store":  # space again
            assert stop_service(mws, MLFLOW)
            info = procs.service(_start_artifact_server(mws, port, 0))
        rc, again = run_mlops(procs, "train-again", "train", "--config", str(config), "--json")
        assert rc == 0, f"{procs}\n{again.stderr()[-3000:]}"
        outcome = json.loads(again.stdout())
        assert version_numbers(s) == [*versions0, str(outcome["version"])]
        violations = check_invariants(
            s, audit_before=audit0, batches_before=batches0, had_champion=True
        )
        assert violations == [], f"{violations}; {procs}"
        assert Registry(s).champion() == (
            str(outcome["version"]) if outcome["status"] == "approved" else champion
        )
        if problem:
            raise ProductBug(f"{full}: {problem}; {procs}")
    finally:
        stop_service(mws, MLFLOW)


# 6. clock skew ----------
def test_clock_skew_changes_no_batch_id_judges_the_future_by_the_tolerance_and_keeps_audit_order(
    source: tuple[Registry, str],
    mlflow_server: ServiceInfo,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "weeks.parquet"
    FRAME.to_parquet(path, index=False)
    last = FRAME[TIME].max().to_pydatetime()

    def project(name: str) -> Settings:
        return tiny_settings(tmp_path / name, mlflow_server.url, f"faults-skew-{name}")

    right, within, behind = project("right"), project("within"), project("behind")
    ok = ingest(right, [path], now=last + timedelta(days=1))
    assert ok.count("accepted") == 8
    ids = sorted(o.id for o in ok.outcomes)

    # the clock 30 minutes behind: the newest rows are "in the future" by less than the
    # tolerance (validation.future_tolerance, 1h): accepted, the same ids
    near = ingest(within, [path], now=last - timedelta(minutes=30))
    assert sorted(o.id for o in near.outcomes) == ids and near.count("accepted") == 8

    # three days behind: the last week is in the future beyond the tolerance: quarantined,
    # with the rule that says so, under the same content hash
    far = ingest(behind, [path], now=last - timedelta(days=3))
    quarantined = [o for o in far.outcomes if o.status == "quarantined"]
    assert len(quarantined) == 1 and far.count("accepted") == 7, far.outcomes
    [q] = quarantined
    assert "timestamp_in_future" in {f.rule for f in q.findings} and "future" in q.reason
    assert q.id.removeprefix("q-") in {i.removeprefix("b-") for i in ids}
    # the clock fixed, the same file again: nothing new (the batch is known, as quarantined)
    again = ingest(behind, [path], now=last + timedelta(days=1))
    assert {o.status for o in again.outcomes} == {"duplicate"}
    released = release_batch(behind, q.id, now=last + timedelta(days=1))
    assert released.released, released.message
    assert sorted(b.id for b in batch_snapshot(behind) if b.status == "accepted") == ids

    # the clock far ahead, then far behind: every batch is a duplicate, none recorded twice
    before = batch_snapshot(right)
    for skew in (timedelta(days=400), -timedelta(days=400)):
        rep = ingest(right, [path], now=last + skew)
        assert {o.status for o in rep.outcomes} == {"duplicate"}, (skew, rep.outcomes)
    for settings in (right, within, behind):
        assert (
            check_invariants(settings, batches_before=before if settings is right else None) == []
        ), settings.project

    # decisions while the clock jumps back and forth: the audit log keeps the order in which
    # they were made (ids), and the rollback finds the champion before by that order
    s = right
    reg = Registry(s)
    v1, v2 = add_version(reg, *source), add_version(reg, *source)
    real = utcnow()
    assert (
        actions.approve(s, local_principal("ann"), v1, comment="first", registry=reg).outcome
        == "applied"
    )
    for module in ("mlops_core.registry.audit", "mlops_core.ops.actions", "mlops_core.store"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: real - timedelta(days=2))
    assert (
        actions.approve(s, local_principal("bob"), v2, comment="clock behind", registry=reg).outcome
        == "applied"
    )
    for module in ("mlops_core.registry.audit", "mlops_core.ops.actions", "mlops_core.store"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: real + timedelta(days=3))
    back = actions.rollback(s, local_principal("cid"), comment="clock ahead", registry=reg)
    assert (back.outcome, back.version) == ("applied", v1), back
    monkeypatch.undo()

    moves = [r for r in reversed(reg.audit()) if r.action in CHAMPION_MOVES]
    assert [(r.action, r.version, r.actor) for r in moves] == [
        ("approve", v1, "ann"),
        ("approve", v2, "bob"),
        ("rollback", v1, "cid"),
    ]
    assert moves[1].at < moves[0].at < moves[2].at  # the clock went back, then ahead
    assert [r.id for r in moves] == sorted(r.id for r in moves)
    assert reg.champion() == v1 and reg.aliases()[CHAMPION] == v1
    assert all(r.alias_moved_at is not None for r in moves)
    assert check_invariants(s, had_champion=True) == []


# 7. a promotion while serving is under load ----------
def test_a_promotion_while_serving_is_under_load_fails_no_request(
    source: tuple[Registry, str], mlflow_server: ServiceInfo, tmp_path: Path, procs: Procs
) -> None:
    s = tiny_settings(tmp_path, mlflow_server.url, "faults-serving", serving={"poll_seconds": 0.5})
    config = write_config(s, tmp_path / "mlops.yaml")
    reg = Registry(s)
    old = with_champion(s, source)
    new = add_version(reg, *source)
    audit0 = audit_snapshot(s)
    rows = client_records(FRAME.head(20))
    seen: list[list[tuple[float, int, str | None, str | None]]] = [[], [], []]
    errors: list[str] = []
    stop = threading.Event()

    def load(mine: list[tuple[float, int, str | None, str | None]], url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/predict", json=rows)
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                body = r.json() if r.status_code == 200 else {}
                mine.append(
                    (
                        time.monotonic(),
                        r.status_code,
                        r.headers.get("X-Model-Version"),
                        body.get("version"),
                    )
                )

    info = procs.service(start_serving(s.workspace, config))
    try:
        wait_for(
            lambda: httpx.get(info.url + "/health", timeout=5).json()["version"] == old,
            120,
            f"serving to load v{old}",
            every=0.2,
        )
        clients = [threading.Thread(target=load, args=(mine, info.url)) for mine in seen]
        for t in clients:
            t.start()
        time.sleep(2)
        t_approve = time.monotonic()
        res = actions.approve(
            s, local_principal("ann"), new, comment="promoted under load", registry=reg
        )
        assert res.outcome == "applied", res
        wait_for(
            lambda: all(mine and mine[-1][3] == new for mine in seen),
            60,
            f"every client to be answered by v{new}",
            every=0.1,
        )
        swapped_in = max(next(t for t, _, _, v in mine if v == new) for mine in seen) - t_approve
        time.sleep(1)
        stop.set()
        for t in clients:
            t.join(30)
    finally:
        stop.set()
        stop_service(s.workspace, SERVING)

    answers = [a for mine in seen for a in mine]
    failed = [a for a in answers if a[1] != 200]
    assert errors == [] and failed == [], (errors[:5], failed[:5], procs)
    assert all(header == body for _, _, header, body in answers)
    for mine in seen:  # each client: the old version, then the new one, never back
        order = [v for i, (_, _, _, v) in enumerate(mine) if i == 0 or mine[i - 1][3] != v]
        assert order == [old, new], order
    violations = check_invariants(s, audit_before=audit0, had_champion=True)
    assert violations == [], f"{violations}; {procs}"
    print(
        f"{len(answers)} requests, none failed; every client answered by v{new} "
        f"{swapped_in:.1f} s after the approval; {procs}"
    )


# 8. the Prefect server restarted during a flow ----------
FLOW = """
import json, sys
from flows.lifecycle import train
print(json.dumps(train(config=sys.argv[1], trigger="manual")))
"""


def test_the_prefect_server_restarted_during_a_training_flow(
    source: tuple[Registry, str], mlflow_server: ServiceInfo, tmp_path: Path, procs: Procs
) -> None:
    """The train flow runs in its own process against the project's Prefect server (as a
    worker's flow run does), and the server is stopped and started again on the same port and
    database while the training task runs. Kept to one flow run: about half a minute."""
    s, config = make_project(tmp_path, mlflow_server.url, "faults-prefect")
    champion = with_champion(s, source)
    audit0, batches0, versions0 = audit_snapshot(s), batch_snapshot(s), version_numbers(s)
    ws = s.workspace
    server = procs.service(start_prefect_server(ws))
    api = f"{server.url}/api"
    try:
        env = {k: v for k, v in ENV.items() if not k.startswith("PREFECT_")} | prefect_env(ws, api)
        flow = procs.start("train-flow", [sys.executable, "-c", FLOW, str(config)], env=env)

        def training() -> bool:
            res = prefect_request("POST", f"{api}/task_runs/filter", json={})
            return res.status_code == 200 and any(
                t["name"].startswith("train-") and t["state_type"] == "RUNNING" for t in res.json()
            )

        wait_for(training, 180, "the training task to run", every=0.2, alive=flow)
        assert stop_service(ws, PREFECT_SERVER)
        print(f"Prefect server (pid {server.pid}) stopped while the training task runs")
        time.sleep(2)
        server = procs.service(start_prefect_server(ws, port=server.port))
        rc = procs.wait(flow, 300)

        [run] = prefect_request("POST", f"{api}/flow_runs/filter", json={}).json()
        state = (run["state_type"], run["state"]["message"])
        assert run["state_type"] in ("COMPLETED", "FAILED", "CRASHED"), (state, procs)
        assert (rc == 0) == (run["state_type"] == "COMPLETED"), (rc, state, procs)
        tasks = prefect_request("POST", f"{api}/task_runs/filter", json={}).json()
        assert not [t["name"] for t in tasks if t["state_type"] in ("RUNNING", "PENDING")], tasks
        registered = [v for v in version_numbers(s) if v not in versions0]
        assert len(registered) == 1 if rc == 0 else len(registered) <= 1, registered
        violations = check_invariants(
            s, audit_before=audit0, batches_before=batches0, had_champion=True
        )
        assert violations == [], f"{violations}; {procs}"
        assert Registry(s).champion() == champion
        print(f"flow run {run['name']}: {state}; registered {registered}; {procs}")
        assert rc == 0, f"the flow failed across the restart: {state}\n{flow.stderr()[-3000:]}"
        # the flow has ended: its slot of the project's training limit (one at a time) is free,
        # or every later training waits for it
        limit = prefect_request("GET", f"{api}/v2/concurrency_limits/mlops-train-{s.project}")
        assert limit.status_code == 200, limit.text
        if limit.json()["active_slots"] != 0:
            raise ProductBug(
                f"the training slot is still taken after the flow ended: {limit.json()}; {procs}"
            )
    finally:
        stop_service(ws, PREFECT_SERVER)


# 9. killed between the audit record and the alias move; a tampered package ----------
KILLER = """
import os, signal, sys
from mlops_core.config import load_config
from mlops_core.registry.registry import Registry

config, version = sys.argv[1:3]
def die(self, version, previous):  # the process dies once the decision is committed
    os.kill(os.getpid(), signal.SIGKILL)
Registry._move_alias = die
Registry(load_config(config)).approve(version, by="bob", comment="killed mid-way",
                                      request_id="killed-mid-way")
"""


def test_killed_between_audit_and_alias_move_then_a_tampered_package(
    source: tuple[Registry, str], mlflow_server: ServiceInfo, tmp_path: Path, procs: Procs
) -> None:
    """The process approving v2 is SIGKILLed after its audit record is committed and before
    the alias moves (the in-process version raises instead: test_registry.py,
    test_a_crash_between_audit_and_alias_move_is_repaired_by_the_next_operation); then the
    package of a pending version is changed on disk (as in test_registry.py,
    test_a_tampered_model_package_cannot_become_champion) and its approval through
    ``mlops_core.ops.actions`` is refused."""
    s = tiny_settings(tmp_path, mlflow_server.url, "faults-crash-tamper")
    config = write_config(s, tmp_path / "mlops.yaml")
    reg = Registry(s)
    v1 = with_champion(s, source)
    v2, v3 = add_version(reg, *source), add_version(reg, *source)
    audit0 = audit_snapshot(s)

    killer = procs.start("approve-killed", [sys.executable, "-c", KILLER, str(config), v2])
    assert procs.wait(killer, 120) == -signal.SIGKILL, f"{procs}\n{killer.stderr()[-2000:]}"
    # until the next registry operation, serving still sees v1 (approved, audited)
    assert sorted(check_invariants(s, audit_before=audit0, had_champion=True)) == [
        f"champion: the alias names v{v1}, the metadata DB v{v2}",
        f"champion: v{v1} is not what the latest approve / rollback / auto-promotion record "
        f"names (latest: approve v{v2})",
    ]
    rc, models = run_mlops(procs, "models", "models", "--config", str(config))  # the next one
    assert rc == 0, models.stderr()
    assert check_invariants(s, audit_before=audit0, had_champion=True) == []
    [rec] = audit_for(reg, "killed-mid-way")
    assert rec.outcome == "applied" and rec.alias_moved_at is not None
    assert reg.aliases()[CHAMPION] == v2

    audit1 = audit_snapshot(s)
    spec = model_folder(reg, v3) / "artifacts" / "spec.json"  # shared with the module's model
    original = spec.read_bytes()
    try:
        spec.write_bytes(original + b"\n")
        res = actions.approve(s, local_principal("mallory"), v3, comment="trust me", registry=reg)
    finally:
        spec.write_bytes(original)
    assert res.outcome == "refused" and "sha256 no longer matches" in res.message, res
    assert reg.version(v3).status == "pending_approval"
    assert check_invariants(s, audit_before=audit1, had_champion=True) == []
    assert reg.champion() == v2
