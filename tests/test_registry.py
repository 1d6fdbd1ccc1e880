"""The registry against a real MLflow server: approve, reject, rollback, the audit log, the
compare-and-set on the champion, idempotent requests, the artifact hash check, two processes at
once, a crash between the audit write and the alias move, and the MLflow service itself.

Most tests need versions but not new models: one module fixture trains a model once, and each
test registers versions of its own registered model from those files (``add_version``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from registry_helpers import (
    add_version,
    audit_for,
    demo_frame,
    demo_settings,
    ingest_frame,
    model_folder,
    scored_frame,
    write_config,
)

from mlops_core.errors import NotFoundError
from mlops_core.ops.services import (
    ServiceError,
    ServiceInfo,
    free_port,
    read_service,
    start_service,
    stop_service,
    tracking_uri,
)
from mlops_core.registry.mlflow_adapter import scoped_uris
from mlops_core.registry.registry import CHALLENGER, CHAMPION, Registry, RegistryError
from mlops_core.store import audit_log, champion_state
from mlops_core.train.pipeline import train_and_register

FAST_GATE = {"smoke_test": False}


@pytest.fixture(scope="module")
def source(
    mlflow_server: ServiceInfo, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Registry, str]:
    """One model trained on the demo stream, registered once: the files every test's versions
    are registered from. Read-only: no test changes these files."""
    tmp = tmp_path_factory.mktemp("reg-source")
    s = demo_settings(tmp, mlflow_server.url, "reg-source", gate=FAST_GATE)
    ingest_frame(s, demo_frame(6000, days=84), tmp / "landing")
    out = train_and_register(s)
    assert out.status == "pending_approval", out.gate.reasons
    return Registry(s), str(out.version)


MakeRegistry = Callable[..., tuple[Registry, list[str]]]


@pytest.fixture
def make_registry(
    source: tuple[Registry, str],
    mlflow_server: ServiceInfo,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> MakeRegistry:
    """A registered model of this test's own (named after it) with ``n`` pending versions."""

    def make(n: int = 2, **sections: Any) -> tuple[Registry, list[str]]:
        name = "reg-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:80]
        reg = Registry(demo_settings(tmp_path, mlflow_server.url, name, **sections))
        versions = [add_version(reg, *source) for _ in range(n)]
        return reg, versions

    return make


def _predict_ok(reg: Registry, version: str) -> None:
    preds = reg.predict(version, scored_frame(demo_frame(200, days=28, seed=7)))
    assert len(preds) == 20
    assert set(preds["prediction"]) <= {0, 1}
    assert preds[["proba_0", "proba_1"]].sum(axis=1).round(6).eq(1).all()


# approve, rollback, reject -----------------------------------------------------------------
@pytest.mark.slow
def test_approve_moves_the_champion_and_keeps_the_previous_one_loadable(
    make_registry: MakeRegistry,
) -> None:
    reg, (v1, v2) = make_registry(2)
    reg.set_challenger(v1)

    first = reg.approve(v1, by="alice", comment="looks good", expected_champion=None)

    assert (first.outcome, first.champion, first.previous_champion) == ("applied", v1, None)
    assert first.ok and "champion" in first.message
    assert reg.champion() == v1
    assert reg.aliases() == {CHAMPION: v1}  # the challenger alias went with the approval
    assert reg.version(v1).status == "approved"
    [rec] = audit_for(reg, first.request_id)
    assert (rec.actor, rec.action, rec.version, rec.previous_champion, rec.outcome) == (
        "alice",
        "approve",
        v1,
        None,
        "applied",
    )
    assert rec.reason == "looks good"
    assert rec.evidence and rec.evidence.startswith("runs:/")
    assert rec.alias_moved_at is not None and rec.alias_moved_at >= rec.at

    second = reg.approve(v2, by="bob", expected_champion=v1)

    assert (second.outcome, second.champion, second.previous_champion) == ("applied", v2, v1)
    assert reg.champion() == v2
    assert reg.aliases()[CHAMPION] == v2
    assert [v.status for v in reg.versions()] == ["retired", "approved"]
    # the champion resolves by alias, and the previous one stays loadable for a rollback
    with scoped_uris(reg.uri) as mlflow:  # the registry leaves no global URI set
        champ = mlflow.pyfunc.load_model(f"models:/{reg.name}@{CHAMPION}")
    assert champ.metadata.get_input_schema() is not None
    _predict_ok(reg, v2)
    _predict_ok(reg, v1)


@pytest.mark.slow
def test_rollback_restores_the_champion_before(make_registry: MakeRegistry) -> None:
    reg, (v1, v2, v3) = make_registry(3)
    with pytest.raises(RegistryError, match="no earlier champion"):
        reg.rollback(by="ops", comment="nothing to roll back to")
    reg.approve(v1, by="alice")
    reg.approve(v2, by="alice")

    res = reg.rollback(by="ops", comment="v2 misbehaves in production")

    assert (res.outcome, res.action, res.version, res.previous_champion) == (
        "applied",
        "rollback",
        v1,
        v2,
    )
    assert reg.champion() == v1 and reg.aliases()[CHAMPION] == v1
    assert [v.status for v in reg.versions()] == ["approved", "retired", "pending_approval"]
    [rec] = audit_for(reg, res.request_id)
    assert (rec.actor, rec.action, rec.reason) == ("ops", "rollback", "v2 misbehaves in production")
    # an explicit target; a pending version is not a rollback target
    assert reg.rollback(by="ops", comment="back again", to=v2).champion == v2
    refused = reg.rollback(by="ops", comment="not approved yet", to=v3)
    assert refused.outcome == "refused" and "pending_approval" in refused.message
    assert reg.champion() == v2


@pytest.mark.slow
def test_reject_needs_a_comment_and_clears_the_challenger(make_registry: MakeRegistry) -> None:
    reg, (v1,) = make_registry(1)
    reg.set_challenger(v1)

    with pytest.raises(RegistryError, match="needs a comment"):
        reg.reject(v1, by="carol", comment="  ")
    assert reg.audit(action="reject") == []

    res = reg.reject(v1, by="carol", comment="worse on the north region")

    assert res.outcome == "applied"
    assert reg.version(v1).status == "rejected"
    assert CHALLENGER not in reg.aliases()
    [rec] = reg.audit(action="reject")
    assert (rec.actor, rec.version, rec.outcome, rec.reason) == (
        "carol",
        v1,
        "applied",
        "worse on the north region",
    )
    # a rejected version can be neither approved nor rejected again
    approve = reg.approve(v1, by="dave")
    assert approve.outcome == "refused" and "rejected" in approve.message
    again = reg.reject(v1, by="carol", comment="twice")
    assert again.outcome == "refused"
    assert reg.champion() is None
    assert [r.outcome for r in reg.audit(version=v1) if r.action != "register"] == [
        "refused",
        "refused",
        "applied",
    ]


@pytest.mark.slow
def test_unknown_version_is_a_clear_error(make_registry: MakeRegistry) -> None:
    reg, _ = make_registry(1)
    with pytest.raises(NotFoundError, match="no version 99"):
        reg.approve("99", by="alice")


# safety --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_approve_with_a_stale_expected_champion_is_refused_and_audited(
    make_registry: MakeRegistry,
) -> None:
    reg, (v1, v2) = make_registry(2)
    reg.approve(v1, by="alice", expected_champion=None)

    # bob looked when there was no champion yet
    res = reg.approve(v2, by="bob", comment="ship it", expected_champion=None)

    assert res.outcome == "refused" and not res.ok
    assert "champion changed" in res.message and f"v{v1}" in res.message
    assert "nothing was changed" in res.message
    assert reg.champion() == v1 and reg.aliases()[CHAMPION] == v1
    assert reg.version(v2).status == "pending_approval"
    [rec] = audit_for(reg, res.request_id)
    assert (rec.actor, rec.action, rec.version, rec.outcome) == ("bob", "approve", v2, "refused")
    assert "champion changed" in rec.reason and "ship it" in rec.reason
    assert rec.previous_champion == v1
    # a champion that never was is refused the same way
    assert reg.approve(v2, by="bob", expected_champion="7").outcome == "refused"
    # with the champion he sees now it goes through
    assert reg.approve(v2, by="bob", expected_champion=v1).outcome == "applied"


@pytest.mark.slow
def test_a_repeated_request_id_is_done_once(make_registry: MakeRegistry) -> None:
    reg, (v1, v2) = make_registry(2)

    first = reg.approve(v1, by="alice", request_id="req-42")
    again = reg.approve(v1, by="alice", request_id="req-42")
    other = reg.approve(v2, by="alice", request_id="req-42")  # a client reusing a key
    reject = reg.reject(v2, by="alice", comment="x", request_id="req-42")

    assert first.outcome == "applied"
    assert again.outcome == "noop" and again.ok
    assert "already handled" in again.message and "nothing was changed" in again.message
    assert (again.version, again.champion) == (v1, v1)
    # the same key for another version or action: refused, not a silent no-op; audited
    for r, action in ((other, "approve"), (reject, "reject")):
        assert r.outcome == "refused" and not r.ok, r
        assert "request id req-42 was already used for approve v1" in r.message
        assert (r.action, r.version, r.champion) == (action, v2, v1)
    assert len(audit_for(reg, "req-42")) == 1
    refused = [a for a in reg.audit(version=v2) if a.outcome == "refused"]
    assert sorted(a.action for a in refused) == ["approve", "reject"]
    assert all("already used for approve v1" in a.reason for a in refused)
    assert reg.version(v2).status == "pending_approval"
    # the key belongs to this model: another model may use it
    reg_b = Registry(reg.settings.model_copy(update={"project": reg.name + "-b"}))
    assert reg_b._find_request("req-42") is None


@pytest.mark.slow
def test_a_request_racing_itself_past_the_lookup_is_still_recorded_once(
    make_registry: MakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, (v1, v2) = make_registry(2)
    # both copies of the request looked before either wrote: the unique key decides
    monkeypatch.setattr(Registry, "_find_request", lambda self, rid: None)

    first = reg.approve(v1, by="alice", request_id="dup")
    second = reg.approve(v2, by="alice", request_id="dup")

    assert (first.outcome, second.outcome) == ("applied", "noop")
    assert "already handled" in second.message
    assert len(audit_for(reg, "dup")) == 1
    assert reg.champion() == v1 and reg.aliases()[CHAMPION] == v1
    assert reg.version(v2).status == "pending_approval"


@pytest.mark.slow
def test_a_refused_request_is_not_retried_by_its_key(make_registry: MakeRegistry) -> None:
    reg, (v1, v2) = make_registry(2)
    reg.approve(v1, by="alice")
    refused = reg.approve(v2, by="bob", expected_champion=None, request_id="r-1")
    assert refused.outcome == "refused"
    retry = reg.approve(v2, by="bob", expected_champion=v1, request_id="r-1")
    assert retry.outcome == "noop" and "refused" in retry.message
    assert reg.champion() == v1
    assert len(audit_for(reg, "r-1")) == 1


@pytest.mark.slow
def test_only_a_version_whose_gate_passed_can_be_approved(make_registry: MakeRegistry) -> None:
    reg, (v1, v2) = make_registry(2)
    reg.set_tags(v1, {"gate_passed": "false"})
    reg.set_status(v2, "candidate")

    gate = reg.approve(v1, by="alice")
    status = reg.approve(v2, by="alice")

    assert gate.outcome == "refused" and "did not pass the promotion gate" in gate.message
    assert status.outcome == "refused" and "needs pending_approval" in status.message
    assert reg.champion() is None and CHAMPION not in reg.aliases()
    assert [r.outcome for r in reg.audit(action="approve")] == ["refused", "refused"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "changed", ["artifacts/model.ubj", "artifacts/spec.json", "tabular_model.py"]
)
def test_a_tampered_model_package_cannot_become_champion(
    mlflow_server: ServiceInfo, tmp_path: Path, changed: str
) -> None:
    s = demo_settings(
        tmp_path, mlflow_server.url, f"reg-tampered-{Path(changed).stem}", gate=FAST_GATE
    )
    ingest_frame(s, demo_frame(5000, days=70, seed=3), tmp_path / "landing")
    out = train_and_register(s)
    assert out.status == "pending_approval", out.gate.reasons
    reg = Registry(s)
    v = str(out.version)
    [target] = [p for p in model_folder(reg, v).rglob(Path(changed).name)]
    assert reg.artifact_hash(v) == reg.version(v).tags["model_sha256"]
    assert len(reg.version(v).tags["package_sha256"]) == 64
    target.write_bytes(target.read_bytes() + b"\n")  # code, spec or model changed after training

    res = reg.approve(v, by="mallory", comment="trust me")

    assert res.outcome == "refused"
    assert "package's sha256 no longer matches" in res.message
    assert reg.champion() is None and CHAMPION not in reg.aliases()
    assert reg.version(v).status == "pending_approval"
    [rec] = audit_for(reg, res.request_id)
    assert rec.outcome == "refused" and "sha256" in rec.reason and rec.actor == "mallory"


# two processes at once -------------------------------------------------------------------------
APPROVER = """
import json, sys, time
from pathlib import Path
from mlops_core.config import load_config
from mlops_core.registry.registry import Registry

config, action, version, by, request_id, expect, ready, go = sys.argv[1:9]
reg = Registry(load_config(config))
reg.aliases(), reg.audit(limit=1)  # connected to MLflow and the DB before the start signal
Path(ready).touch()
deadline = time.monotonic() + 120
while not Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("no start signal")
    time.sleep(0.002)
if action == "reject":
    res = reg.reject(version, by=by, comment="no", request_id=request_id or None)
else:  # expect "none": there was no champion; "now": a plain approve, whatever it is
    res = reg.approve(version, by=by, request_id=request_id or None,
                      **({"expected_champion": None} if expect == "none" else {}))
print(json.dumps(res.to_dict()))
"""


def _approve_at_once(
    reg: Registry, tmp_path: Path, jobs: list[tuple[str, ...]]
) -> list[dict[str, Any]]:
    """Run ``reg.approve`` in one process per (version, by, request id[, action, expect]),
    released together. ``action``: approve (default) or reject; ``expect``: none (default, no
    champion was seen) or now (a plain approve)."""
    config = write_config(reg.settings, tmp_path / "mlops.yaml")
    script = tmp_path / "approver.py"
    script.write_text(APPROVER)
    go = tmp_path / "go"
    procs, ready = [], []
    if go.exists():
        go.unlink()
    for i, (version, by, rid, *more) in enumerate(jobs):
        action, expect = (*more, "approve", "none")[:2] if more else ("approve", "none")
        ready.append(tmp_path / f"ready-{i}")
        ready[-1].unlink(missing_ok=True)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(config),
                    action,
                    version,
                    by,
                    rid,
                    expect,
                    str(ready[-1]),
                    str(go),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all(p.exists() for p in ready):
            assert time.monotonic() < deadline, "approvers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        go.touch()
        results = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=120)
            assert p.returncode == 0, stderr[-3000:]
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_two_processes_approving_different_versions_leave_one_champion(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    reg, (v1, v2) = make_registry(2)

    results = _approve_at_once(reg, tmp_path, [(v1, "alice", "req-a"), (v2, "bob", "req-b")])

    assert sorted(r["outcome"] for r in results) == ["applied", "refused"]
    won = next(r for r in results if r["outcome"] == "applied")
    lost = next(r for r in results if r["outcome"] == "refused")
    assert "champion changed" in lost["message"] and f"v{won['version']}" in lost["message"]
    assert reg.champion() == won["version"]
    assert reg.aliases()[CHAMPION] == won["version"]
    assert [v.version for v in reg.versions() if CHAMPION in v.aliases] == [won["version"]]
    records = [r for r in reg.audit(action="approve")]
    assert len(records) == 2
    assert {(r.request_id, r.outcome) for r in records} == {
        ("req-a" if won["version"] == v1 else "req-b", "applied"),
        ("req-b" if won["version"] == v1 else "req-a", "refused"),
    }
    with reg.meta.engine.connect() as conn:
        [row] = conn.execute(
            sa.select(champion_state).where(champion_state.c.model == reg.name)
        ).all()
    assert (row.version, row.generation) == (won["version"], 1)


@pytest.mark.slow
def test_the_same_request_from_two_processes_is_recorded_once(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    reg, (v1,) = make_registry(1)

    results = _approve_at_once(
        reg, tmp_path, [(v1, "alice", "req-same"), (v1, "alice", "req-same")]
    )

    assert sorted(r["outcome"] for r in results) == ["applied", "noop"]
    assert reg.champion() == v1
    [rec] = audit_for(reg, "req-same")
    assert rec.outcome == "applied"


@pytest.mark.slow
def test_reject_racing_approve_never_leaves_a_rejected_champion(
    make_registry: MakeRegistry, tmp_path: Path
) -> None:
    reg, versions = make_registry(3)
    for v in versions:  # one race per version, each released at the same moment
        results = _approve_at_once(
            reg, tmp_path, [(v, "alice", "", "approve", "now"), (v, "bob", "", "reject", "")]
        )
        by_action = {r["action"]: r for r in results}
        assert sorted(r["outcome"] for r in results) == ["applied", "refused"], results
        info = reg.version(v)
        if by_action["approve"]["outcome"] == "applied":
            assert reg.champion() == v and info.status == "approved"
            assert (
                "already approved" in by_action["reject"]["message"]
                or "is the champion" in by_action["reject"]["message"]
            )
        else:
            assert reg.champion() != v and info.status == "rejected"
            assert (
                "already rejected" in by_action["approve"]["message"]
                or "is rejected" in by_action["approve"]["message"]
            )
        champ = reg.champion()
        assert champ is None or reg.version(champ).status == "approved"
        applied = [a.action for a in reg.audit(version=v) if a.outcome == "applied"]
        assert len(applied) == 1


@pytest.mark.slow
def test_two_plain_approves_at_once_apply_once(make_registry: MakeRegistry, tmp_path: Path) -> None:
    """No --expect-champion: the champion when the command started is the expectation, so of
    two approvals at once (of one version, or of two) one applies and the other is refused."""
    reg, (v1, v2, v3, v4) = make_registry(4)
    for v in (v1, v2):
        results = _approve_at_once(
            reg, tmp_path, [(v, "alice", "", "approve", "now"), (v, "bob", "", "approve", "now")]
        )
        assert sorted(r["outcome"] for r in results) == ["applied", "refused"], results
        lost = next(r for r in results if r["outcome"] == "refused")
        assert "nothing was changed" in lost["message"]
        assert reg.champion() == v
        assert [a.outcome for a in reg.audit(action="approve", version=v)].count("applied") == 1
    results = _approve_at_once(
        reg, tmp_path, [(v3, "alice", "", "approve", "now"), (v4, "bob", "", "approve", "now")]
    )
    assert sorted(r["outcome"] for r in results) == ["applied", "refused"], results
    won = next(r for r in results if r["outcome"] == "applied")
    lost = next(r for r in results if r["outcome"] == "refused")
    assert "champion changed while you decided" in lost["message"]
    assert f"expected v{v2}" in lost["message"] and reg.champion() == won["version"]


# a crash between the audit record and the alias move -------------------------------------------
class Crash(Exception):
    """Stands for the process dying after the audit record was committed."""


@pytest.mark.slow
@pytest.mark.parametrize("operation", ["champion", "versions", "approve"])
def test_a_crash_between_audit_and_alias_move_is_repaired_by_the_next_operation(
    make_registry: MakeRegistry, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    reg, (v1, v2, v3) = make_registry(3)
    reg.approve(v1, by="alice")
    reg.set_challenger(v2)

    def crash(self: Registry, version: str | None, previous: str | None) -> None:
        raise Crash("killed")

    with monkeypatch.context() as m:
        m.setattr(Registry, "_move_alias", crash)
        with pytest.raises(Crash):
            reg.approve(v2, by="bob", request_id="crashing")

    # the decision is recorded; MLflow does not reflect it yet
    [rec] = audit_for(reg, "crashing")
    assert rec.outcome == "applied" and rec.alias_moved_at is None
    assert reg._db_champion()[0] == v2
    assert reg.aliases() == {CHAMPION: v1, CHALLENGER: v2}

    fresh = Registry(reg.settings)  # the next command, in a new process
    if operation == "champion":
        assert fresh.champion() == v2
    elif operation == "versions":
        assert [v.aliases for v in fresh.versions()] == [[], [CHAMPION], []]
    else:
        assert fresh.approve(v3, by="carol", expected_champion=v2).outcome == "applied"

    want = v3 if operation == "approve" else v2
    assert fresh.aliases() == {CHAMPION: want}
    statuses = {v.version: v.status for v in fresh.versions()}
    assert statuses[v1] == "retired" and statuses[want] == "approved"
    [rec] = audit_for(fresh, "crashing")
    assert rec.alias_moved_at is not None
    with fresh.meta.engine.connect() as conn:
        pending = conn.execute(
            sa.select(sa.func.count())
            .select_from(audit_log)
            .where(
                audit_log.c.model == fresh.name,
                audit_log.c.outcome == "applied",
                audit_log.c.action == "approve",
                audit_log.c.alias_moved_at.is_(None),
            )
        ).scalar()
    assert pending == 0


@pytest.mark.slow
def test_a_champion_alias_set_outside_the_tool_is_adopted(make_registry: MakeRegistry) -> None:
    reg, (v1, v2) = make_registry(2)
    reg.client.set_registered_model_alias(reg.name, CHAMPION, v1)  # e.g. in the MLflow UI

    assert reg.champion() == v1
    [rec] = reg.audit(action="adopt")
    assert (rec.actor, rec.version, rec.outcome) == ("system", v1, "applied")
    assert reg.approve(v2, by="alice", expected_champion=v1).outcome == "applied"
    assert reg.aliases()[CHAMPION] == v2


# the MLflow service -----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_session_mlflow_server_answers_health(mlflow_server: ServiceInfo) -> None:
    assert mlflow_server.url.startswith("http://127.0.0.1:")
    r = httpx.get(mlflow_server.health_url, timeout=5)
    assert r.status_code == 200
    assert Path(mlflow_server.log_file).is_file()


def test_tracking_uri_uses_a_configured_uri_as_is(tmp_path: Path) -> None:
    remote = "postgresql://mlflow@db.example:5432/mlflow"
    s = demo_settings(tmp_path, remote, "uri")
    assert tracking_uri(s) == remote
    local = demo_settings(tmp_path, "x", "uri", storage={"mlflow_uri": None})
    # nothing running over this workspace: the local store, addressed directly
    uri = tracking_uri(local)
    assert uri.startswith("sqlite:///") and str(tmp_path / "ws") in uri


def test_start_service_fails_clearly_when_the_command_exits_at_once(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('cannot bind: address in use'); sys.exit(3)"]
    with pytest.raises(ServiceError) as err:
        start_service(
            tmp_path, "broken", argv, port=free_port(), health_path="/health", timeout_s=30
        )
    msg = str(err.value)
    assert "broken exited with code 3" in msg
    assert "cannot bind: address in use" in msg  # the log tail
    assert read_service(tmp_path, "broken") is None


def test_start_and_stop_a_service(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    info = start_service(tmp_path, "web", argv, port=port, health_path="/", timeout_s=60)
    try:
        assert read_service(tmp_path, "web") == info
        assert httpx.get(info.health_url, timeout=5).status_code == 200
        # starting it again finds the running one
        assert start_service(tmp_path, "web", argv, port=port, health_path="/") == info
    finally:
        assert stop_service(tmp_path, "web")
    assert read_service(tmp_path, "web") is None
    with pytest.raises(httpx.HTTPError):
        httpx.get(info.health_url, timeout=2)


def test_a_reconcile_that_read_before_an_approval_never_undoes_it(
    make_registry: MakeRegistry,
) -> None:
    """Another process's reconcile read the alias, then the DB, across an approval (the soak
    found one moving the alias back to the old champion and re-tagging both): the repair reads
    both again under the decision lock, so the approval stands."""
    import threading

    reg, (v1, v2) = make_registry(2)
    reg.approve(v1, by="alice")
    other = Registry(reg.settings)
    real_db_champion = other._db_champion
    read_alias, approved = threading.Event(), threading.Event()

    def db_after_the_approval(conn: Any = None) -> tuple[str | None, int]:
        if conn is None and not read_alias.is_set():  # the unlocked read: hold it
            read_alias.set()
            approved.wait(120)
            return (v1, 1)  # what it read before the approval committed
        return real_db_champion(conn)

    other._db_champion = db_after_the_approval  # type: ignore[method-assign]
    racing = threading.Thread(target=other.reconcile)
    racing.start()
    assert read_alias.wait(120)
    assert reg.approve(v2, by="bob").outcome == "applied"
    approved.set()
    racing.join(120)

    assert reg._db_champion()[0] == v2 and reg.aliases().get(CHAMPION) == v2
    statuses = {v.version: v.status for v in reg.versions()}
    assert (statuses[v1], statuses[v2]) == ("retired", "approved")


def test_a_rollback_without_a_target_clicked_twice_is_done_once(
    make_registry: MakeRegistry,
) -> None:
    """The second click's default target ("the champion before") has moved with the first
    click: it is the same request all the same, a no-op, not a refusal."""
    reg, (v1, v2) = make_registry(2)
    reg.approve(v1, by="alice")
    reg.approve(v2, by="alice")

    first = reg.rollback(by="bob", comment="v2 misbehaves", request_id="rb-twice")
    again = reg.rollback(by="bob", comment="v2 misbehaves", request_id="rb-twice")

    assert (first.outcome, first.version) == ("applied", v1)
    assert again.outcome == "noop" and "already handled" in again.message
    assert reg.champion() == v1
    assert [r.outcome for r in reg.audit(action="rollback")] == ["applied"]


def test_runs_of_dead_trainings_are_ended_and_live_ones_left(make_registry: MakeRegistry) -> None:
    """A training killed mid-run leaves its MLflow run RUNNING (MLflow cannot know): the next
    training marks KILLED the runs of this machine whose process is gone, and only those."""
    import socket

    from mlops_core.registry.registry import RUN_HOST, RUN_PID

    reg, _ = make_registry(1)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    exp = reg.experiment_id()
    here = socket.gethostname()
    runs = {
        name: reg.client.create_run(exp, tags=tags, run_name=name).info.run_id
        for name, tags in [
            ("dead", {RUN_HOST: here, RUN_PID: dead}),
            ("alive", {RUN_HOST: here, RUN_PID: str(os.getpid())}),
            ("elsewhere", {RUN_HOST: "another-host", RUN_PID: dead}),
            ("untagged", {}),
        ]
    }

    assert reg.end_dead_runs() == [runs["dead"]]

    status = {n: reg.client.get_run(r).info.status for n, r in runs.items()}
    assert status == {
        "dead": "KILLED",
        "alive": "RUNNING",
        "elsewhere": "RUNNING",
        "untagged": "RUNNING",
    }
    for r in runs.values():
        reg.client.set_terminated(r, "FINISHED")


# the MLflow boundary ----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_registry_leaves_mlflow_global_uris_as_they_were(make_registry: MakeRegistry) -> None:
    """Making a registry, listing, loading and logging set no process-global MLflow URI and no
    MLFLOW_* environment variable (a subprocess would inherit them)."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    before = (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        os.environ.get("MLFLOW_TRACKING_URI"),
        os.environ.get("MLFLOW_REGISTRY_URI"),
    )
    reg, (v1,) = make_registry(1)  # logs a run and registers a version
    reg.approve(v1, by="alice")
    assert [v.version for v in reg.versions()] == [v1]
    assert reg.load(v1).metadata.get_input_schema() is not None
    after = (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        os.environ.get("MLFLOW_TRACKING_URI"),
        os.environ.get("MLFLOW_REGISTRY_URI"),
    )
    assert after == before


def test_mlflow_errors_become_registry_errors() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import (
        INTERNAL_ERROR,
        INVALID_PARAMETER_VALUE,
        RESOURCE_DOES_NOT_EXIST,
    )

    from mlops_core.errors import RegistryUnavailable, ServiceUnavailable
    from mlops_core.registry.mlflow_adapter import translate_error

    uri = "http://user:secret@mlflow.example:5000"
    down = translate_error(
        MlflowException("API request to http://x failed with exception Max retries exceeded"), uri
    )
    assert isinstance(down, RegistryUnavailable) and isinstance(down, ServiceUnavailable)
    assert "does not answer" in str(down) and "secret" not in str(down)
    busy = translate_error(MlflowException("boom", error_code=INTERNAL_ERROR), uri)
    assert isinstance(busy, RegistryUnavailable)
    refused = translate_error(MlflowException("bad tag", error_code=INVALID_PARAMETER_VALUE), uri)
    assert type(refused) is RegistryError and "bad tag" in str(refused)
    missing = translate_error(MlflowException("no", error_code=RESOURCE_DOES_NOT_EXIST), uri)
    assert isinstance(missing, NotFoundError)
    assert isinstance(translate_error(ConnectionError("reset"), uri), RegistryUnavailable)


def test_an_unreachable_registry_is_registry_unavailable(tmp_path: Path) -> None:
    from mlops_core.errors import RegistryUnavailable

    s = demo_settings(tmp_path, f"http://127.0.0.1:{free_port()}", "down")
    reg = Registry(s)  # talks to nothing yet
    with pytest.raises(RegistryUnavailable, match="MLflow"):
        reg.versions()
