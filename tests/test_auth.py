"""Safety of every write: password hashes and the users file, signing in (password, OIDC), roles
checked by mlops_core at the moment of the write (refusals audited, append-only), the four-eyes
rule, required comments, request ids (a double click is a no-op, a lost race says so), retrain
requests recorded and published by the events outbox, and the CLI commands over them.

The first part needs no MLflow (refusals, requests and releases touch the metadata DB only); the
tests marked slow use the session MLflow server and one trained model."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from registry_helpers import add_version, demo_frame, demo_settings, ingest_frame, write_config
from typer.testing import CliRunner

from flows import events
from mlops_cli.app import app
from mlops_core.config import Settings, parse_config
from mlops_core.data.ingest import ingest
from mlops_core.errors import AuthorizationError, ConfigError, InputError, NotFoundError
from mlops_core.ops import actions
from mlops_core.ops.auth import (
    ACTIONS,
    Principal,
    add_user,
    authorize,
    current_principal,
    hash_password,
    load_users,
    local_principal,
    login,
    oidc_principal,
    users_path,
    verify_password,
)
from mlops_core.ops.services import ServiceInfo
from mlops_core.registry.registry import CHAMPION, Registry
from mlops_core.store import MetadataStore, audit_log
from mlops_core.train.pipeline import train_and_register

NO_MLFLOW = "http://127.0.0.1:1"  # refusals and requests never reach MLflow
ANA = Principal("ana", "approver", "password")
BOB = Principal("bob", "approver", "password")
VIEWER = Principal("val", "viewer", "password")
PASSWORD = "correct horse battery"


def _settings(tmp_path: Path, **sections: Any) -> Settings:
    return demo_settings(tmp_path, NO_MLFLOW, "safety", **sections)


def _rows(settings: Settings) -> list[dict[str, Any]]:
    """The whole audit table, as stored."""
    meta = MetadataStore(settings.db_url)
    with meta.engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id))
        ]


# passwords and the users file --------------------------------------------------------------------
def test_password_hash_round_trip_and_wrong_password() -> None:
    stored = hash_password(PASSWORD)
    assert re.fullmatch(r"scrypt\$ln=\d+,r=\d+,p=\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", stored)
    assert PASSWORD not in stored
    assert hash_password(PASSWORD) != stored  # salted
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "!")
    assert not verify_password(stored, "")
    # malformed or unreasonable stored hashes match nothing (and do not raise)
    for bad in (
        "",
        "plain",
        "md5$x$y$z",
        stored.replace("ln=15", "ln=40"),
        stored.replace("ln=15", "ln=x"),
        stored[:-8],
    ):
        assert not verify_password(bad, PASSWORD)
    with pytest.raises(InputError):
        hash_password("")


def test_users_file_is_0600_replaced_atomically_and_holds_no_password(tmp_path: Path) -> None:
    path = tmp_path / "config" / "mlops" / "users.yaml"
    add_user(path, "ana", PASSWORD, "approver")
    add_user(path, "val", "viewer-password", "viewer")
    add_user(path, "ana", "a new password", "viewer")  # update: role and password

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir() if p.name != ".users.yaml.lock") == [
        "users.yaml"
    ]  # no temporary file left behind
    text = path.read_text()
    assert PASSWORD not in text and "a new password" not in text and "viewer-password" not in text
    users = load_users(path)
    assert {n: u.role for n, u in users.items()} == {"ana": "viewer", "val": "viewer"}
    assert verify_password(users["ana"].password_hash, "a new password")
    assert not verify_password(users["ana"].password_hash, PASSWORD)
    assert users["ana"].to_dict() == {"name": "ana", "role": "viewer"}  # never the hash
    assert load_users(tmp_path / "none.yaml") == {}


@pytest.mark.parametrize(
    ("name", "password", "role", "match"),
    [
        ("ana", "short", "approver", "at least 8"),
        ("ana", PASSWORD, "admin", "unknown role"),
        ("", PASSWORD, "viewer", "not a valid user name"),
        ("ana smith", PASSWORD, "viewer", "not a valid user name"),
    ],
)
def test_add_user_refuses_bad_input(
    tmp_path: Path, name: str, password: str, role: str, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        add_user(tmp_path / "users.yaml", name, password, role)
    assert not (tmp_path / "users.yaml").exists()


def test_a_broken_users_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  ana: {role: admin, password_hash: x}\n")
    with pytest.raises(ConfigError, match="role 'admin'"):
        load_users(path)
    path.write_text("- just a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_users(path)


def test_the_users_file_stays_outside_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    cfg = repo / "proj" / "mlops.yaml"
    cfg.parent.mkdir()
    cfg.write_text("project: safe\ndashboard: {auth: password, users_file: users.yaml}\n")
    from mlops_core.config import load_config

    with pytest.raises(ConfigError, match="inside the repository"):
        users_path(load_config(cfg, environ={}))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg.write_text("project: safe\ndashboard: {auth: password}\n")
    assert users_path(load_config(cfg, environ={})) == (
        tmp_path / "home" / ".config" / "mlops" / "safe" / "users.yaml"
    )


def test_dashboard_config_defaults_and_checks(tmp_path: Path) -> None:
    d = parse_config({}, environ={}).dashboard
    assert (d.auth, d.users_file, d.approvers, d.four_eyes, d.port) == (
        "none",
        None,
        [],
        False,
        8501,
    )
    s = parse_config(
        {}, environ={"MLOPS_DASHBOARD__AUTH": "oidc", "MLOPS_DASHBOARD__APPROVERS": "[ana@corp.io]"}
    )
    assert (s.dashboard.auth, s.dashboard.approvers) == ("oidc", ["ana@corp.io"])
    with pytest.raises(ConfigError, match=r"dashboard\.auth"):
        parse_config({"dashboard": {"auth": "ldap"}}, environ={})
    with pytest.raises(ConfigError, match=r"dashboard\.port"):
        parse_config({"dashboard": {"port": 0}}, environ={})


# signing in ---------------------------------------------------------------------------------------
def test_password_login(tmp_path: Path) -> None:
    users = tmp_path / "secrets" / "users.yaml"
    s = _settings(tmp_path, dashboard={"auth": "password", "users_file": str(users)})
    with pytest.raises(ConfigError, match="mlops users add"):
        login(s, "ana", PASSWORD)  # no users yet
    add_user(users, "ana", PASSWORD, "approver")
    add_user(users, "val", "viewer-password", "viewer")

    assert login(s, "ana", PASSWORD) == Principal("ana", "approver", "password")
    assert login(s, "val", "viewer-password") == Principal("val", "viewer", "password")
    assert login(s, "ana", "wrong password") is None
    assert login(s, "nobody", PASSWORD) is None
    assert login(s, "ANA", PASSWORD) is None  # names are exact
    with pytest.raises(ConfigError, match="not 'password'"):
        login(_settings(tmp_path), "ana", PASSWORD)


def test_oidc_principal_from_st_user(tmp_path: Path) -> None:
    s = _settings(tmp_path, dashboard={"auth": "oidc", "approvers": ["Ana@Corp.io"]})
    assert oidc_principal(s, {"is_logged_in": False}) is None
    assert oidc_principal(s, {}) is None
    assert oidc_principal(s, {"is_logged_in": True, "email": "ana@corp.io"}) == Principal(
        "ana@corp.io", "approver", "oidc"
    )
    assert oidc_principal(s, {"is_logged_in": True, "email": "eve@corp.io"}) == Principal(
        "eve@corp.io", "viewer", "oidc"
    )
    # a provider that says the email is not verified gets no approver role from it
    assert (
        oidc_principal(
            s, {"is_logged_in": True, "email": "ana@corp.io", "email_verified": False}
        ).role
        == "viewer"
    )  # type: ignore[union-attr]
    with pytest.raises(ConfigError):
        oidc_principal(_settings(tmp_path), {"is_logged_in": True, "email": "ana@corp.io"})


def test_a_role_is_read_again_at_each_write(tmp_path: Path) -> None:
    users = tmp_path / "secrets" / "users.yaml"
    s = _settings(tmp_path, dashboard={"auth": "password", "users_file": str(users)})
    add_user(users, "ana", PASSWORD, "approver")
    signed_in = login(s, "ana", PASSWORD)
    assert signed_in is not None and current_principal(s, signed_in).role == "approver"
    add_user(users, "ana", PASSWORD, "viewer")  # demoted after signing in
    assert current_principal(s, signed_in) == Principal("ana", "viewer", "password")
    with pytest.raises(AuthorizationError, match=r"ana \(viewer\)"):
        actions.request_retrain(s, signed_in, reason="still an approver?", request_id="d-1")
    assert [(r["actor"], r["outcome"]) for r in _rows(s)] == [("ana", "refused")]
    # not in the users file (or no file at all): a viewer
    assert current_principal(s, Principal("gone", "approver", "password")).role == "viewer"
    users.unlink()
    assert current_principal(s, Principal("ana", "approver", "password")).role == "viewer"
    # oidc: taken off dashboard.approvers, a viewer at the next write
    o = _settings(tmp_path, dashboard={"auth": "oidc", "approvers": ["eve@corp.io"]})
    ana = Principal("ana@corp.io", "approver", "oidc")
    assert current_principal(o, ana).role == "viewer"
    assert current_principal(o, Principal("EVE@corp.io", "approver", "oidc")).role == "approver"
    # none and cli: as they are
    for p in (Principal("me", "approver", "none"), Principal("me", "approver", "cli")):
        assert current_principal(s, p) == p and current_principal(o, p) == p


def test_roles_and_principals() -> None:
    assert local_principal("me") == Principal("me", "approver", "none")
    for action in ACTIONS:
        assert ANA.can(action)
        assert not VIEWER.can(action)
        authorize(ANA, action)
        with pytest.raises(AuthorizationError, match="approver") as e:
            authorize(VIEWER, action)
        assert isinstance(e.value, PermissionError)
    with pytest.raises(InputError, match="unknown action"):
        ANA.can("delete")
    with pytest.raises(InputError, match="unknown role"):
        Principal("x", "admin", "cli")
    with pytest.raises(InputError):
        Principal(" ", "viewer", "cli")


# authorisation at the moment of the write ---------------------------------------------------------
WRITES: dict[str, Callable[[Settings, Principal, str], Any]] = {
    "approve": lambda s, p, rid: actions.approve(s, p, "1", comment="ship it", request_id=rid),
    "reject": lambda s, p, rid: actions.reject(s, p, "1", comment="worse", request_id=rid),
    "rollback": lambda s, p, rid: actions.rollback(s, p, comment="broken", request_id=rid),
    "release": lambda s, p, rid: actions.release(s, p, "q-123", comment="fixed", request_id=rid),
    "withdraw": lambda s, p, rid: actions.withdraw(
        s, p, "b-123", comment="wrong labels", request_id=rid
    ),
    "request_retrain": lambda s, p, rid: actions.request_retrain(
        s, p, reason="drift", request_id=rid
    ),
}


def test_a_viewer_is_refused_every_write_and_each_attempt_is_audited(
    tmp_path: Path, emitted: list[tuple[str, str, dict[str, Any]]]
) -> None:
    s = _settings(tmp_path)
    assert set(WRITES) == set(ACTIONS)
    earlier = actions.request_retrain(s, ANA, reason="a record that must not change")
    before = _rows(s)

    for action, write in WRITES.items():
        with pytest.raises(AuthorizationError, match="needs the approver role"):
            write(s, VIEWER, f"rid-{action}")
        with pytest.raises(AuthorizationError):  # a double click: refused, recorded once
            write(s, VIEWER, f"rid-{action}")

    rows = _rows(s)
    assert rows[: len(before)] == before  # append-only: nothing earlier changed or went
    refused = rows[len(before) :]
    assert [(r["actor"], r["action"], r["outcome"], r["request_id"]) for r in refused] == [
        ("val", a, "refused", f"rid-{a}") for a in WRITES
    ]
    assert all(
        "needs the approver role" in r["reason"] and "via password" in r["reason"] for r in refused
    )
    by_action = {r["action"]: r for r in refused}
    assert by_action["approve"]["version"] == "1" and "ship it" in by_action["approve"]["reason"]
    assert by_action["release"]["evidence"] == "batch:q-123"
    assert by_action["withdraw"]["evidence"] == "batch:b-123"
    assert earlier.audit_id == before[-1]["id"]
    # refused attempts are not published
    assert [p["action"] for p in events.publish_decisions(s)] == ["request_retrain"]
    assert [e for e, _p, _d in emitted] == [events.RETRAIN_REQUESTED]


@pytest.mark.parametrize("comment", ["", "   ", None])
def test_decisions_need_a_comment(tmp_path: Path, comment: Any) -> None:
    s = _settings(tmp_path)
    for write in (
        lambda: actions.approve(s, ANA, "1", comment=comment),
        lambda: actions.reject(s, ANA, "1", comment=comment),
        lambda: actions.rollback(s, ANA, comment=comment),
        lambda: actions.request_retrain(s, ANA, reason=comment),
    ):
        with pytest.raises(InputError, match="required") as e:
            write()
        assert isinstance(e.value, ValueError)
    # nothing was done, and each refusal is in the audit log
    assert [(r["action"], r["outcome"], r["actor"]) for r in _rows(s)] == [
        (a, "refused", ANA.name) for a in ("approve", "reject", "rollback", "request_retrain")
    ]
    assert all(" is required" in r["reason"] for r in _rows(s))


def test_every_refused_attempt_is_audited(tmp_path: Path) -> None:
    """A wrong sign-in, a release of a batch that is not quarantined or does not exist, and a
    request id reused for another action: each refused, each in the audit log."""
    s = _settings(tmp_path)
    actions.record_failed_sign_in(s, "mallory", meta=MetadataStore(s.db_url))
    with pytest.raises(NotFoundError):
        actions.release(s, ANA, "q-nope", comment="try")
    actions.request_retrain(s, ANA, reason="fresh labels", request_id="rid-1")
    with pytest.raises(InputError, match="used for another action"):
        actions.release(s, ANA, "q-nope", comment="again", request_id="rid-1")
    with pytest.raises(InputError, match="used for another action"):
        actions.withdraw(s, ANA, "b-1", comment="bad labels", request_id="rid-1")

    rows = [(r["actor"], r["action"], r["outcome"]) for r in _rows(s)]
    assert rows == [
        ("mallory", "sign_in", "refused"),
        (ANA.name, "release", "refused"),
        (ANA.name, "request_retrain", "applied"),
        (ANA.name, "release", "refused"),
        (ANA.name, "withdraw", "refused"),
    ]
    assert "password" in _rows(s)[0]["reason"] and "q-nope" in _rows(s)[1]["reason"]


# retrain requests and the outbox ------------------------------------------------------------------
@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    """Events the outbox sends, caught instead of sent (no Prefect server)."""
    sent: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(
        events,
        "emit",
        lambda event, project, payload=None, related=None: sent.append(
            (event, project, payload or {})
        ),
    )
    return sent


def test_a_retrain_request_is_recorded_once_and_published_as_an_event(
    tmp_path: Path, emitted: list[tuple[str, str, dict[str, Any]]]
) -> None:
    s = _settings(tmp_path)
    req = actions.request_retrain(s, ANA, reason="the north region looks off", request_id="r-1")
    again = actions.request_retrain(s, ANA, reason="clicked twice", request_id="r-1")

    assert (req.outcome, req.requested_by, req.request_id) == ("applied", "ana", "r-1")
    assert (again.outcome, again.reason, again.audit_id) == (
        "noop",
        "the north region looks off",
        req.audit_id,
    )
    assert "already handled" in again.message
    assert json.loads(json.dumps(req.to_dict()))["request_id"] == "r-1"
    [rec] = Registry(s).audit(action="request_retrain")
    assert (rec.actor, rec.outcome, rec.reason, rec.request_id, rec.version) == (
        "ana",
        "applied",
        "the north region looks off",
        "r-1",
        None,
    )

    sent = events.publish_decisions(s)

    assert sent == [
        {
            "event": events.RETRAIN_REQUESTED,
            "action": "request_retrain",
            "version": None,
            "actor": "ana",
            "audit_id": rec.id,
        }
    ]
    [(event, project, payload)] = emitted
    assert (event, project) == ("mlops.retrain.requested", "safety")
    assert {
        k: payload[k]
        for k in ("trigger", "reasons", "since", "monitoring_run", "requested_by", "request_id")
    } == {
        "trigger": "manual",
        "reasons": ["the north region looks off"],
        "since": "",
        "monitoring_run": "",
        "requested_by": "ana",
        "request_id": "r-1",
    }
    assert events.publish_decisions(s) == []  # the watermark moved: sent once


def test_the_outbox_reads_oldest_first_and_skips_nothing(
    tmp_path: Path, emitted: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """More records than one call publishes (here refused clicks): the request still goes out,
    on the next call."""
    s = _settings(tmp_path)
    actions.request_retrain(s, ANA, reason="first")
    for i in range(5):
        with pytest.raises(AuthorizationError):
            actions.request_retrain(s, VIEWER, reason=f"spam {i}")
    actions.request_retrain(s, BOB, reason="second")

    first = events.publish_decisions(s, limit=3)
    second = events.publish_decisions(s, limit=3)
    third = events.publish_decisions(s, limit=3)

    assert [p["actor"] for p in first + second + third] == ["ana", "bob"]
    assert [p["reasons"] for _e, _p, p in emitted] == [["first"], ["second"]]


# release from quarantine --------------------------------------------------------------------------
def test_release_is_authorised_audited_and_done_once(tmp_path: Path) -> None:
    s = parse_config(
        {
            "project": "safety",
            "storage": {"workspace": str(tmp_path / "ws")},
            "data": {
                "id_column": "id",
                "time_column": "ts",
                "target": "y",
                "features": {"numeric": ["x"]},
                "batch": {"period": "1D"},
            },
        },
        environ={},
    )
    n = 48
    df = pd.DataFrame(
        {
            "id": np.arange(n),
            "ts": pd.date_range("2025-01-01", periods=n, freq="h").astype(str),
            "x": np.linspace(0, 1, n),
            "y": np.resize([0, 1], n),
        }
    )
    df.loc[30, "x"] = np.inf  # the second day is quarantined
    df.to_csv(tmp_path / "d.csv", index=False)
    qid = next(o.id for o in ingest(s, [tmp_path / "d.csv"]).outcomes if o.status == "quarantined")

    with pytest.raises(AuthorizationError):
        actions.release(s, VIEWER, qid, comment="let it in", force=True)
    assert MetadataStore(s.db_url).get_batch(qid).status == "quarantined"
    still = actions.release(s, ANA, qid, comment="checked", request_id="rel-1")
    assert not still.released and "still refused" in still.message
    done = actions.release(
        s, ANA, qid, comment="the inf is a sensor glitch", force=True, request_id="rel-2"
    )
    twice = actions.release(s, ANA, qid, comment="double click", force=True, request_id="rel-2")

    assert done.released and twice.released and "already handled" in twice.message
    assert MetadataStore(s.db_url).get_batch(qid).status == "released"
    recs = [(r.actor, r.outcome, r.request_id) for r in Registry(s).audit(action="release")]
    assert recs == [
        ("ana", "applied", "rel-2"),
        ("ana", "refused", "rel-1"),
        ("val", "refused", None),
    ]
    [applied] = Registry(s).audit(action="release", actor="ana", limit=1)
    assert applied.reason.startswith("the inf is a sensor glitch (forced; released as")
    assert applied.evidence.startswith(f"batch:{qid} -> ")  # type: ignore[union-attr]


# the CLI ------------------------------------------------------------------------------------------
def test_cli_users_add_list_and_login(tmp_path: Path) -> None:
    users = tmp_path / "secrets" / "users.yaml"
    s = _settings(tmp_path, dashboard={"auth": "password", "users_file": str(users)})
    cfg = str(write_config(s, tmp_path / "mlops.yaml"))
    runner = CliRunner()

    res = runner.invoke(
        app,
        ["users", "add", "ana", "--role", "approver", "--password-stdin", "-c", cfg],
        input=PASSWORD + "\n",
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        ["users", "add", "val", "--role", "viewer", "-c", cfg],
        input="viewer-password\nviewer-password\n",
    )  # prompted twice
    assert res.exit_code == 0, res.output
    assert "viewer-password" not in res.output
    bad = runner.invoke(
        app,
        ["users", "add", "eve", "--role", "root", "--password-stdin", "-c", cfg],
        input=PASSWORD + "\n",
    )
    assert bad.exit_code == 1 and "unknown role" in bad.stderr

    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    listed = json.loads(runner.invoke(app, ["users", "list", "-c", cfg, "--json"]).stdout)
    assert listed == {
        "file": str(users),
        "users": [{"name": "ana", "role": "approver"}, {"name": "val", "role": "viewer"}],
    }
    assert login(s, "ana", PASSWORD) == ANA
    assert login(s, "val", "viewer-password") == VIEWER

    # an explicit --file inside the project's repository is refused
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    inside = write_config(s, repo / "mlops.yaml")
    res = runner.invoke(
        app,
        [
            "users",
            "add",
            "ana",
            "--role",
            "viewer",
            "--password-stdin",
            "--file",
            str(repo / "users.yaml"),
            "-c",
            str(inside),
        ],
        input=PASSWORD + "\n",
    )
    assert res.exit_code == 1 and "inside the repository" in res.stderr
    assert not (repo / "users.yaml").exists()


def test_cli_retrain_records_a_request_and_decisions_need_a_comment(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    cfg = str(write_config(s, tmp_path / "mlops.yaml"))
    runner = CliRunner()

    res = runner.invoke(
        app,
        [
            "retrain",
            "--by",
            "ana",
            "--reason",
            "new season",
            "--json",
            "--request-id",
            "cli-1",
            "-c",
            cfg,
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["outcome"] == "applied"
    again = runner.invoke(
        app,
        ["retrain", "--by", "ana", "--reason", "new season", "--request-id", "cli-1", "-c", cfg],
    )
    assert again.exit_code == 0 and "noop" in again.stdout
    [rec] = Registry(s).audit(action="request_retrain")
    assert (rec.actor, rec.reason) == ("ana", "new season")
    for args in (
        ["approve", "1", "--by", "ana"],
        ["reject", "1", "--by", "ana"],
        ["rollback", "--by", "ana"],
        ["retrain", "--by", "ana"],
    ):
        res = runner.invoke(app, [*args, "-c", cfg])
        assert res.exit_code == 2 and "Missing option" in res.output, args
    res = runner.invoke(app, ["approve", "1", "--by", "ana", "--comment", " ", "-c", cfg])
    assert res.exit_code == 1 and "a comment is required" in res.stderr
    for args in (["users"], ["users", "add"], ["users", "list"], ["retrain"]):
        assert runner.invoke(app, [*args, "--help"]).exit_code == 0


# against MLflow: four eyes, request ids, the race, rollback targets -------------------------------
FAST_GATE = {"smoke_test": False}


@pytest.fixture(scope="module")
def source(
    mlflow_server: ServiceInfo, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Registry, str]:
    """One model trained at ana's request: the files the tests' versions are registered from."""
    tmp = tmp_path_factory.mktemp("auth-source")
    s = demo_settings(tmp, mlflow_server.url, "auth-source", gate=FAST_GATE)
    ingest_frame(s, demo_frame(6000, days=84), tmp / "landing")
    out = train_and_register(s, trigger="manual", requested_by="ana")
    assert out.status == "pending_approval", out.gate.reasons
    return Registry(s), str(out.version)


@pytest.fixture
def project(
    source: tuple[Registry, str],
    mlflow_server: ServiceInfo,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Callable[..., tuple[Settings, Registry, list[str]]]:
    """Settings and a registered model of this test's own with ``n`` pending versions."""

    def make(n: int = 2, **sections: Any) -> tuple[Settings, Registry, list[str]]:
        name = "auth-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:80]
        s = demo_settings(tmp_path, mlflow_server.url, name, gate=FAST_GATE, **sections)
        reg = Registry(s)
        return s, reg, [add_version(reg, *source) for _ in range(n)]

    return make


@pytest.mark.slow
def test_a_version_is_tagged_with_who_requested_its_training(source: tuple[Registry, str]) -> None:
    reg, version = source
    info = reg.version(version)
    assert info.tags["requested_by"] == "ana"
    assert info.tags["trigger"] == "manual"
    run = reg.client.get_run(info.run_id)
    assert run.data.tags["requested_by"] == "ana"


@pytest.mark.slow
def test_four_eyes_refuses_the_requester_and_lets_another_approver_approve(
    project: Callable[..., tuple[Settings, Registry, list[str]]],
) -> None:
    s, reg, (v1, v2, v3) = project(3, dashboard={"four_eyes": True})
    for v in (v1, v3):
        reg.set_tags(v, {"requested_by": "ana"})

    for who in (ANA, Principal("ANA", "approver", "oidc")):
        with pytest.raises(AuthorizationError, match="four-eyes"):
            actions.approve(
                s,
                who,
                v1,
                comment="my own model",
                expected_champion=None,
                request_id=f"fe-{who.name}",
            )
    assert reg.champion() is None and reg.version(v1).status == "pending_approval"
    refused = [r for r in reg.audit(action="approve") if r.outcome == "refused"]
    assert {(r.actor, r.version) for r in refused} == {("ana", v1), ("ANA", v1)}
    assert all("four-eyes" in r.reason for r in refused)

    res = actions.approve(s, BOB, v1, comment="reviewed ana's model", expected_champion=None)
    assert (res.outcome, res.champion) == ("applied", v1)
    # a version nobody asked for (the schedule): ana may approve it
    assert (
        actions.approve(s, ANA, v2, comment="scheduled model", expected_champion=v1).outcome
        == "applied"
    )
    # with the rule off, the requester may approve her own
    s_off = s.model_copy(update={"dashboard": s.dashboard.model_copy(update={"four_eyes": False})})
    assert (
        actions.approve(s_off, ANA, v3, comment="mine, no rule", expected_champion=v2).outcome
        == "applied"
    )


@pytest.mark.slow
def test_a_double_click_is_a_noop_and_a_lost_race_says_so(
    project: Callable[..., tuple[Settings, Registry, list[str]]],
) -> None:
    s, reg, (v1, v2) = project(2)
    # two people look at the page while there is no champion
    first = actions.approve(
        s, ANA, v1, comment="good", expected_champion=None, request_id="click-1"
    )
    double = actions.approve(
        s, ANA, v1, comment="good", expected_champion=None, request_id="click-1"
    )
    race = actions.approve(
        s, BOB, v2, comment="better", expected_champion=None, request_id="click-2"
    )

    assert first.outcome == "applied" and reg.champion() == v1
    assert double.outcome == "noop" and double.ok and "already handled" in double.message
    assert race.outcome == "refused" and not race.ok
    assert "the champion changed while you decided" in race.message
    assert "nothing was changed" in race.message
    assert reg.champion() == v1 and reg.aliases()[CHAMPION] == v1
    assert reg.version(v2).status == "pending_approval"
    recs = [(r.actor, r.version, r.outcome, r.request_id) for r in reg.audit(action="approve")]
    assert recs == [("bob", v2, "refused", "click-2"), ("ana", v1, "applied", "click-1")]


@pytest.mark.slow
def test_rollback_targets_and_a_repeated_rollback(
    project: Callable[..., tuple[Settings, Registry, list[str]]],
) -> None:
    s, reg, (v1, v2, v3) = project(3)
    assert [v.version for v in actions.approvable_versions(s, reg)] == [v3, v2, v1]
    assert actions.rollback_targets(s, reg) == []
    actions.approve(s, ANA, v1, comment="first")
    actions.approve(s, ANA, v2, comment="second")
    assert [v.version for v in actions.approvable_versions(s, reg)] == [v3]
    assert [v.version for v in actions.rollback_targets(s, reg)] == [v1]
    with pytest.raises(AuthorizationError):
        actions.rollback(s, VIEWER, comment="v2 misbehaves", request_id="rb-1")

    back = actions.rollback(s, ANA, comment="v2 misbehaves", request_id="rb-2")
    again = actions.rollback(s, ANA, comment="v2 misbehaves", request_id="rb-2")

    assert (back.outcome, back.version, back.previous_champion) == ("applied", v1, v2)
    assert again.outcome == "noop" and reg.champion() == v1
    assert [v.version for v in actions.rollback_targets(s, reg)] == [v2]
    with pytest.raises(InputError):
        actions.reject(s, ANA, v3, comment="")
    assert actions.reject(s, ANA, v3, comment="not better").outcome == "applied"
