"""The Streamlit dashboard through Streamlit's AppTest, against a real project: a real MLflow
server, a trained champion, pending versions, a monitoring run with its Evidently report, a
quarantined batch and a backtest result. Every page renders and shows its key content; every
action goes through mlops_core.ops.actions (approve, reject, rollback, release, request a retrain),
including the refusals: an empty comment, a viewer who forces an action, a lost race, a double
submit. Sign-in per ``dashboard.auth``: none (a warning), password (a users file), oidc
(``at.user``).

One project is built for the module; tests that decide register their own pending version
(a copy of the trained one, no training) and read the champion when they start.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
import yaml
from registry_helpers import add_version, demo_settings, with_changes, write_config
from streamlit.testing.v1 import AppTest

from dashboard import charts, common
from mlops_core.backtest.engine import load_history, run_backtest, write_json
from mlops_core.config import Settings
from mlops_core.data.ingest import ingest
from mlops_core.demo.stream import TARGET, TIME, generate_stream
from mlops_core.errors import AuthorizationError
from mlops_core.monitor.run import monitor
from mlops_core.ops import actions
from mlops_core.ops.auth import Principal, add_user
from mlops_core.ops.services import ServiceInfo, free_port
from mlops_core.read import views
from mlops_core.registry.registry import Registry
from mlops_core.store import MetadataStore
from mlops_core.train.pipeline import train_and_register

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES = ("overview", "drift", "models", "approvals", "pipeline", "backtests", "serving")
WEEK = pd.Timedelta(weeks=1)
PASSWORDS = {"ana": ("ana-password-1", "approver"), "vic": ("vic-password-1", "viewer")}


@dataclass
class Project:
    settings: Settings
    configs: dict[str, Path]  # auth mode -> mlops.yaml (the same workspace and model)
    first: str  # the first champion
    run: str  # a monitoring run with an HTML report
    quarantined: str  # a quarantined batch id


def _weeks(frame: pd.DataFrame, first: int, stop: int) -> pd.DataFrame:
    t0 = frame[TIME].min().normalize()
    return frame[(frame[TIME] >= t0 + first * WEEK) & (frame[TIME] < t0 + stop * WEEK)]


def _ingest(settings: Settings, frame: pd.DataFrame, folder: Path, name: str) -> list[Any]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return ingest(settings, [path]).outcomes


@pytest.fixture(scope="module")
def project(mlflow_server: ServiceInfo, tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("dashboard")
    frame = generate_stream(10_000, days=70, seed=5, label_delay_days=0).frame
    s = demo_settings(
        root, mlflow_server.url, "dash", gate={"smoke_test": False}, monitoring={"report": "always"}
    )
    # weeks 0-6 train the champion; weeks 6-8 are monitored; week 8 arrives spoiled
    assert {o.status for o in _ingest(s, _weeks(frame, 0, 6), root / "in", "train")} == {"accepted"}
    out = train_and_register(s, trigger="manual")
    assert out.status == "pending_approval", out.gate.reasons
    reg = Registry(s)
    assert reg.approve(str(out.version), by="tests", comment="the first model").ok
    assert {o.status for o in _ingest(s, _weeks(frame, 6, 8), root / "in", "new")} == {"accepted"}
    run = monitor(s, report=True)
    assert run.report
    spoiled = _weeks(frame, 8, 9).copy()
    spoiled.loc[spoiled.index[:5], "application_id"] = spoiled["application_id"].iloc[0]
    bad = _ingest(s, spoiled, root / "in", "spoiled")
    assert [o.status for o in bad] == ["quarantined"], [(o.status, o.reason) for o in bad]
    # a backtest result where the Backtests page finds it
    history = root / "history.parquet"
    _weeks(frame, 0, 9).to_parquet(history, index=False)
    replay = load_history(
        history, target=TARGET, time_column=TIME, batch_period="7D", initial_batches=3, settings=s
    )
    write_json(
        run_backtest(replay, ["static", "periodic:2"]), views.backtests_dir(s) / "history.json"
    )
    users = root / "users.yaml"
    for name, (password, role) in PASSWORDS.items():
        add_user(users, name, password, role)
    configs = {
        "none": write_config(s, root / "none.yaml"),
        "password": write_config(
            with_changes(s, dashboard={"auth": "password", "users_file": str(users)}),
            root / "password.yaml",
        ),
        "oidc": write_config(
            with_changes(s, dashboard={"auth": "oidc", "approvers": ["ana@corp.io"]}),
            root / "oidc.yaml",
        ),
    }
    return Project(s, configs, str(out.version), run.id, bad[0].id)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A factory of AppTests of the dashboard on a given mlops.yaml."""

    # the app sets these when they are unset; set here, they are restored after the test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

    def make(config: Path, **session: Any) -> AppTest:
        monkeypatch.setenv("MLOPS_CONFIG", str(config))
        st.cache_data.clear()  # readers are process-wide: start from the project as it is
        at = AppTest.from_file(str(APP), default_timeout=60)
        for k, v in session.items():
            at.session_state[k] = v
        return at

    yield make
    st.cache_data.clear()


def _open(at: AppTest, page: str) -> AppTest:
    if not at.get("title"):  # a first run registers the pages
        at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in (
            "title",
            "markdown",
            "caption",
            "info",
            "warning",
            "error",
            "success",
            "subheader",
        )
        for e in at.get(kind)
        if isinstance(getattr(e, "value", None), str)
    ]
    parts += [str(m.value) + " " + str(m.label) for m in at.get("metric")]
    parts += [e.label for e in at.get("expander")]
    return "\n".join(parts)


def _messages(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in at.get(kind)]


def _keys(at: AppTest) -> set[str]:
    return {
        w.key
        for kind in ("button", "text_input", "text_area", "selectbox")
        for w in at.get(kind)
        if getattr(w, "key", None)
    }


def _table(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first table on the page with these columns (AppTest keeps no key for tables)."""
    for d in at.dataframe:
        if set(columns) <= set(d.value.columns):
            return d.value
    found = [list(d.value.columns) for d in at.dataframe]
    raise AssertionError(f"no table with columns {columns}: {found}")


def _charts(at: AppTest) -> set[str]:
    return {c.key for c in at.get("plotly_chart")}


def _table_element(at: AppTest, *columns: str) -> Any:
    """The first table element with these columns (its proto: placeholder, column config)."""
    return next(d for d in at.dataframe if set(columns) <= set(d.value.columns))


def _figure(at: AppTest, key: str) -> Any:
    """The plotly figure of the chart with this key."""
    import plotly.io as pio

    [chart] = [c for c in at.get("plotly_chart") if c.key == key]
    return pio.from_json(chart.proto.spec)


STAMP = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$"  # YYYY-MM-DD HH:MM, as every table shows times


def _pending(project: Project) -> str:
    """A new version awaiting approval (the trained one registered again, no training)."""
    reg = Registry(project.settings)
    return add_version(reg, reg, project.first, challenger=True)


def _champion(project: Project) -> str | None:
    return Registry(project.settings).champion()


def _audit(project: Project, **kw: Any) -> pd.DataFrame:
    return views.audit_frame(
        project.settings, MetadataStore(project.settings.db_url), limit=None, **kw
    )


# every page ----------------------------------------------------------------------------------
def test_no_folder_named_pages_beside_the_app() -> None:
    # Streamlit serves a "pages/" folder beside the main script as pages of their own: a
    # direct link to /overview would then run that file alone, without sign-in or the project
    assert not (APP.parent / "pages").exists()
    assert {p.stem for p in (APP.parent / "app_pages").glob("*.py")} == set(PAGES)


def test_every_page_renders_its_key_content(project: Project, app: Any) -> None:
    at = app(project.configs["none"], display_name="ana")
    t0 = time.perf_counter()
    at.run()
    assert not at.exception, at.exception
    text = _texts(at)
    assert "Overview" in text and f"v{_champion(project)}" in text
    assert "Sign-in is off" in "\n".join(_messages(at, "warning"))
    assert "overview_metric" in _charts(at)
    pages = {}
    for name in PAGES[1:]:
        pages[name] = _texts(_open(at, name))
        assert name.capitalize() in pages[name], name
    assert project.run in pages["drift"] and project.quarantined in pages["drift"]
    assert "Evidently report" in pages["drift"]
    assert f"release_{project.quarantined}" in _keys(_open(at, "drift"))
    assert "Prefect server is not running" in pages["pipeline"]
    assert "serving API is not running" in pages["serving"]
    assert "history" in pages["backtests"]
    models = _open(at, "models")
    assert project.first in set(_table(models, "version", "status", "trigger")["version"])
    # every render after the first reads from the cache
    assert time.perf_counter() - t0 < 120


def test_overview_shows_the_champion_decisions_and_services(project: Project, app: Any) -> None:
    at = app(project.configs["none"])
    at.run()
    assert not at.exception
    text = _texts(at)
    assert "Champion" in text and "Data drift" in text and "Pending approvals" in text
    assert "Services healthy" in text
    decided = _table(at, "retrain", "reasons", "held back")
    assert len(decided) >= 1
    # no "None" in the table, times as YYYY-MM-DD HH:MM, free text in wide columns
    assert decided[["reasons", "held back", "acted"]].notna().all().all()
    # every decision explains itself: its reasons, or for a no the signals nearest their
    # thresholds (never an empty "no signal asked for it")
    stored = views.recent_decisions(project.settings, MetadataStore(project.settings.db_url))
    for d, shown in zip(stored, decided["reasons"], strict=True):
        assert d["reasons"] or d["nearest"], d
        assert shown == ("; ".join(d["reasons"]) or "nearest: " + "; ".join(d["nearest"]))
    assert decided["at"].str.match(STAMP).all(), list(decided["at"])
    table = _table_element(at, "retrain", "reasons", "held back")
    assert table.proto.placeholder == "-"
    # reasons wide; held back and acted as wide as their text (no width set: never cut)
    widths = {
        c: json.loads(table.proto.columns).get(c, {}).get("width")
        for c in ("reasons", "held back", "acted")
    }
    assert widths == {"reasons": "large", "held back": None, "acted": None}
    hist = _table(at, "since", "until", "version", "by")
    assert project.first in set(hist["version"])
    assert hist["since"].str.match(STAMP).all(), list(hist["since"])
    assert hist["until"].iloc[0] == "now" and hist["until"].iloc[1:].str.match(STAMP).all(), list(
        hist["until"]
    )
    # the project's MLflow is storage.mlflow_uri (the tests' server): checked there, healthy
    [card] = [m for m in at.get("metric") if m.label == "Services healthy"]
    assert card.value == "1 / 5" and "🟢 mlflow" in _texts(at)  # of five, serving too


def test_an_external_mlflow_is_checked_where_it_is(
    project: Project, app: Any, tmp_path: Path
) -> None:
    health = {h.name: h for h in views.service_health(project.settings)}
    assert (health["mlflow"].where, health["mlflow"].state) == ("external", "healthy")
    assert health["mlflow"].url == project.settings.storage.mlflow_uri
    assert health["prefect-server"].state == "stopped"
    assert views.mlflow_health(f"http://127.0.0.1:{free_port()}").state == "not answering"
    direct = views.mlflow_health(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert direct.state == "direct store" and not direct.checked
    assert views.mlflow_health("http://u:secret@127.0.0.1:1").url == "http://u:***@127.0.0.1:1"
    at = _open(app(project.configs["none"]), "pipeline")
    services = _table(at, "service", "health", "url", "pid").set_index("service")
    assert services.loc["mlflow", "health"] == "🟢 healthy (external)"
    assert services.loc["prefect-server", "health"] == "⚪ stopped"
    assert set(services["pid"]) == {"-"}  # nothing `mlops up` started: no pid, never "None"


def test_overview_chart_draws_only_what_has_data(project: Project, app: Any) -> None:
    # the module's project has one monitoring run: one point per line
    at = app(project.configs["none"])
    at.run()
    fig = _figure(at, "overview_metric")
    for trace in fig.data:
        assert [y for y in trace.y if y is not None and y == y], trace.name
    names = [t.name for t in fig.data]
    assert "estimate 90% interval" not in names  # a band of one point draws nothing
    [base] = [t for t in fig.data if t.name == "champion at training"]
    assert base.mode == "markers"
    events = [t for t in fig.data if t.yaxis == "y2"]
    assert {t.name for t in events} >= {"retrains", "promotions"}
    assert all(y == charts.EVENT_Y for t in events for y in t.y)  # at the top
    assert len(fig.layout.shapes) == sum(len(t.x) for t in events)


def _series(n: int) -> pd.DataFrame:
    at = pd.date_range("2026-01-01", periods=n, freq="8h")
    value = pd.Series(np.linspace(0.70, 0.75, n))
    return pd.DataFrame(
        {
            "at": at,
            "run": [f"m-{i}" for i in range(n)],
            "champion_version": "1",
            "status": "ok",
            "drift_share": 0.1,
            "rows": 100,
            "labelled_rows": 100,
            "metric": "roc_auc",
            "realised": value.where(value.index % 2 == 0),
            "estimated": value,
            "estimated_low": value - 0.02,
            "estimated_high": value + 0.02,
            "baseline": 0.74,
        }
    )


def _events(times: list[Any]) -> pd.DataFrame:
    kinds = ["retrain", "promotion", "rollback", "rejection"]
    return pd.DataFrame(
        {
            "at": times,
            "kind": [kinds[i % 4] for i in range(len(times))],
            "action": "x",
            "version": "2",
            "actor": "ana",
            "reason": "why",
        }
    )


def test_the_live_metric_of_many_runs_is_lines_and_of_one_run_markers() -> None:
    many = _series(1000)
    fig = charts.live_metric_figure(many, _events(list(many["at"].iloc[::100])), "roc_auc")
    modes = {t.name: t.mode for t in fig.data if t.yaxis != "y2"}
    assert modes == {
        "estimate 90% interval": "lines",
        None: "lines",
        "estimated roc_auc (no labels)": "lines",
        "realised roc_auc": "lines",
        "champion at training": "lines",
    }
    realised = next(t for t in fig.data if t.name == "realised roc_auc")
    assert len(realised.x) == 500  # runs without labels are left out, not gaps in the line
    marks = {t.name: t.mode for t in fig.data if t.yaxis == "y2"}
    assert marks == {"retrains": "markers", "promotions": "markers", "rollbacks": "markers"}
    assert len(fig.layout.shapes) == 8  # a line per retrain, promotion and rollback

    few = charts.live_metric_figure(_series(10), _events([]), "roc_auc")
    assert {t.mode for t in few.data if t.name and "realised" in t.name} == {"lines+markers"}
    assert not few.layout.shapes

    one = charts.live_metric_figure(_series(1), _events([]), "roc_auc")
    names = [t.name for t in one.data]
    assert names == [
        "estimated roc_auc (no labels), 90% interval",
        "realised roc_auc",
        "champion at training",
    ]
    assert one.data[0].error_y.array == pytest.approx((0.02,))


def test_without_a_project_the_app_says_what_to_do(tmp_path: Path, app: Any) -> None:
    at = app(tmp_path / "missing.yaml")
    at.run()
    assert not at.exception
    assert "No project configuration" in at.error[0].value


def test_an_empty_project_renders_every_page_with_next_steps(
    project: Project, app: Any, tmp_path: Path
) -> None:
    empty = with_changes(
        project.settings, project="dash-empty", storage={"workspace": str(tmp_path / "ws")}
    )
    at = app(write_config(empty, tmp_path / "mlops.yaml"))
    at.run()
    assert not at.exception
    assert "No champion yet" in _texts(at)
    for name in PAGES[1:]:
        text = _texts(_open(at, name))
        assert any(s in text for s in ("No ", "Nothing", "not running")), (name, text)


# approvals -----------------------------------------------------------------------------------
def _approvals(app: Any, project: Project, mode: str = "none", **session: Any) -> AppTest:
    at = app(
        project.configs[mode], **({"display_name": "ana"} if mode == "none" else {}), **session
    )
    return _open(at, "approvals")


def test_approve_with_a_comment_makes_the_version_champion(project: Project, app: Any) -> None:
    v = _pending(project)
    at = _approvals(app, project)
    assert f"v{v}" in _texts(at)
    # the gate's metrics: the champion's column shows "-" where it has none
    assert _table_element(at, "challenger", "champion").proto.placeholder == "-"
    at.text_area(key=f"approve_comment_{v}").input("better on recent data")
    at.button(key=f"approve_{v}").click().run()

    assert not at.exception
    assert any(f"v{v} is champion" in s for s in _messages(at, "success")), _texts(at)
    assert _champion(project) == v
    rec = _audit(project, actions=["approve"], version=v)
    assert list(rec["actor"]) == ["ana"] and list(rec["reason"]) == ["better on recent data"]
    assert f"approve_{v}" not in _keys(at)  # no longer pending


def test_markdown_in_a_comment_is_shown_as_text(project: Project, app: Any) -> None:
    """A comment is the approver's words: `**`, links, headings and emoji codes in it are
    shown as typed (escaped in the caption's Markdown), never rendered."""
    v = _pending(project)
    at = _approvals(app, project)
    comment = "**ok** [click](http://evil.example) :rocket: # big"
    at.text_area(key=f"approve_comment_{v}").input(comment)
    at.button(key=f"approve_{v}").click().run()
    assert _champion(project) == v

    at = app(project.configs["none"])
    at.run()
    [quoted] = [c.value for c in at.caption if "ok" in c.value and "click" in c.value]
    assert r"\*\*ok\*\*" in quoted and r"\[click\](http://evil.example)" in quoted
    assert ":\u200brocket:" in quoted  # no emoji shortcode
    assert "**ok**" not in quoted and "[click]" not in quoted


def test_an_empty_comment_is_refused(project: Project, app: Any) -> None:
    v = _pending(project)
    before = _champion(project)
    at = _approvals(app, project)
    at.button(key=f"approve_{v}").click().run()

    assert not at.exception
    assert any("comment is required" in s for s in _messages(at, "error")), _texts(at)
    assert _champion(project) == before
    assert Registry(project.settings).version(v).status == "pending_approval"
    # with a comment the same form goes through
    at.text_area(key=f"approve_comment_{v}").input("now with a reason")
    at.button(key=f"approve_{v}").click().run()
    assert _champion(project) == v


def test_a_double_submit_is_done_once(project: Project, app: Any) -> None:
    v = _pending(project)
    before = _champion(project)
    at = _approvals(app, project)
    at.text_area(key=f"approve_comment_{v}").input("twice")
    at.button(key=f"approve_{v}").click().run()
    assert _champion(project) == v
    rids = at.session_state["_request_ids"]
    rid = rids[json.dumps(["approve", v, before, "twice"])]
    # the second click of a double click: the same form, the same request id
    again = actions.approve(
        project.settings,
        Principal("ana", "approver", "none"),
        v,
        comment="twice",
        request_id=rid,
        expected_champion=before,
    )
    assert again.outcome == "noop"
    assert len(_audit(project, actions=["approve"], version=v)) == 1
    # a rerun of the page repeats nothing either
    at.run()
    assert len(_audit(project, actions=["approve"], version=v)) == 1


def test_an_approval_that_lost_a_race_says_so(project: Project, app: Any) -> None:
    mine, theirs = _pending(project), _pending(project)
    at = _approvals(app, project)
    shown = _champion(project)
    # someone else approves another version after the page was rendered
    assert (
        actions.approve(
            project.settings, Principal("bob", "approver", "cli"), theirs, comment="mine first"
        ).outcome
        == "applied"
    )
    at.text_area(key=f"approve_comment_{mine}").input("looks good")
    at.button(key=f"approve_{mine}").click().run()

    assert not at.exception
    errors = "\n".join(_messages(at, "error"))
    assert "champion changed while you decided" in errors, _texts(at)
    assert f"expected v{shown}" in errors and f"now v{theirs}" in errors
    assert _champion(project) == theirs
    assert Registry(project.settings).version(mine).status == "pending_approval"


def test_reject_with_a_comment(project: Project, app: Any) -> None:
    v = _pending(project)
    before = _champion(project)
    at = _approvals(app, project)
    at.text_area(key=f"approve_comment_{v}").input("worse for the south region")
    at.button(key=f"reject_{v}").click().run()

    assert not at.exception
    assert any(f"v{v} rejected" in s for s in _messages(at, "success")), _texts(at)
    assert Registry(project.settings).version(v).status == "rejected"
    assert _champion(project) == before


def test_rollback_to_an_earlier_approved_version(project: Project, app: Any) -> None:
    v = _pending(project)
    assert (
        actions.approve(
            project.settings, Principal("bob", "approver", "cli"), v, comment="newer"
        ).outcome
        == "applied"
    )
    at = _approvals(app, project)
    box = at.selectbox(key="rollback_to")
    labels = [o for o in box.options if o.startswith(f"v{project.first} ")]
    assert labels, box.options
    box.select_index(box.options.index(labels[0]))
    at.text_area(key="rollback_comment").input(f"v{v} misbehaves")
    at.button(key="rollback_submit").click().run()

    assert not at.exception
    assert any(f"v{project.first} is champion" in s for s in _messages(at, "success")), _texts(at)
    assert _champion(project) == project.first
    rolled = _audit(project, actions=["rollback"], version=project.first)
    assert rolled["actor"].iloc[0] == "ana"


def test_the_audit_log_filters_and_downloads_as_csv(project: Project, app: Any) -> None:
    at = _approvals(app, project)
    audit_cols = ("actor", "action", "outcome", "request_id")
    assert len(_table(at, *audit_cols)) > 0
    at.multiselect(key="audit_action").select("register").run()
    table = _table(at, *audit_cols)
    assert len(table) > 0 and set(table["action"]) == {"register"}
    button = at.download_button(key="audit_csv")
    assert button.proto.label == "Download as CSV"
    csv = views.audit_csv(_audit(project, actions=["register"]))
    lines = csv.decode().splitlines()
    assert (
        lines[0].startswith("id,at,actor,action")
        and len(lines) == len(_audit(project, actions=["register"])) + 1
    )


# sign-in and roles ---------------------------------------------------------------------------
def _login(at: AppTest, name: str, password: str) -> AppTest:
    at.run()
    at.text_input(key="login_user").input(name)
    at.text_input(key="login_password").input(password)
    at.button(key="login_submit").click().run()
    assert not at.exception, at.exception
    return at


def test_password_sign_in(project: Project, app: Any) -> None:
    at = app(project.configs["password"])
    at.run()
    assert "login_submit" in _keys(at) and "Overview" not in _texts(at)
    _login(at, "ana", "wrong password")
    assert "Wrong user name or password." in _messages(at, "error")
    failed = _audit(project, actions=["sign_in"])
    assert list(failed["actor"])[-1:] == ["ana"] and list(failed["outcome"])[-1:] == ["refused"]
    assert "wrong password" not in " ".join(failed["reason"])
    _login(at, "ana", PASSWORDS["ana"][0])
    assert "Overview" in _texts(at) and "ana · approver" in _texts(at)
    assert not any("Sign-in is off" in w for w in _messages(at, "warning"))


WRITE_KEYS = ("approve_", "reject_", "rollback_submit", "retrain_submit", "release_")


def test_a_viewer_sees_no_write_buttons(project: Project, app: Any) -> None:
    v = _pending(project)
    at = _login(app(project.configs["password"]), "vic", PASSWORDS["vic"][0])
    for page in ("approvals", "pipeline", "drift"):
        keys = _keys(_open(at, page))
        assert not [k for k in keys if k.startswith(WRITE_KEYS)], (page, keys)
    assert f"v{v}" in _texts(_open(at, "approvals"))  # the evidence is readable


def test_a_viewer_forcing_an_action_is_refused_by_mlops_core(project: Project, app: Any) -> None:
    v = _pending(project)
    before = _champion(project)
    at = _login(app(project.configs["password"]), "ana", PASSWORDS["ana"][0])
    _open(at, "approvals")
    # the page was rendered for an approver; a viewer's session sends the click
    at.session_state["principal"] = Principal("vic", "viewer", "password")
    at.text_area(key=f"approve_comment_{v}").input("let me")
    at.button(key=f"approve_{v}").click().run()

    assert not at.exception
    assert any(s.startswith("Not allowed") for s in _messages(at, "error")), _texts(at)
    assert _champion(project) == before
    refused = _audit(project, actions=["approve"], version=v)
    assert list(refused["outcome"]) == ["refused"] and list(refused["actor"]) == ["vic"]
    with pytest.raises(AuthorizationError):
        actions.request_retrain(
            project.settings, Principal("vic", "viewer", "password"), reason="please"
        )


def test_an_approver_demoted_after_sign_in_is_refused_at_the_click(
    project: Project, app: Any
) -> None:
    users = Path(project.configs["password"]).parent / "users.yaml"
    add_user(users, "dan", "dan-password-1", "approver")
    v = _pending(project)
    before = _champion(project)
    at = _login(app(project.configs["password"]), "dan", "dan-password-1")
    _open(at, "approvals")
    assert f"approve_{v}" in _keys(at)
    # demoted while the page is open: the role is read again when the click arrives
    add_user(users, "dan", "dan-password-1", "viewer")
    at.text_area(key=f"approve_comment_{v}").input("still mine")
    at.button(key=f"approve_{v}").click().run()

    assert not at.exception
    assert any(
        s.startswith("Not allowed") and "dan (viewer)" in s for s in _messages(at, "error")
    ), _texts(at)
    assert _champion(project) == before
    refused = _audit(project, actions=["approve"], version=v)
    assert list(refused["outcome"]) == ["refused"] and list(refused["actor"]) == ["dan"]
    # the page is drawn for the role as it is now: no write buttons, "viewer" in the sidebar
    assert not [k for k in _keys(at) if k.startswith(WRITE_KEYS)]
    assert "dan · viewer" in _texts(at)
    # and a user taken out of the users file is signed out at the next page
    doc = yaml.safe_load(users.read_text())
    del doc["users"]["dan"]
    users.write_text(yaml.safe_dump(doc))
    at.run()
    assert "login_submit" in _keys(at)


def test_oidc_sign_in_maps_approvers_and_viewers(project: Project, app: Any) -> None:
    at = app(project.configs["oidc"])
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception and "login_oidc" not in _keys(at)
    assert "[auth]" in at.error[0].value  # no identity provider configured: says how
    at = app(project.configs["oidc"])
    at.user = {"is_logged_in": False}
    at.secrets["auth"] = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback"}
    at.run()
    assert not at.exception and "login_oidc" in _keys(at)
    assert "Overview" not in _texts(at)
    viewer = app(project.configs["oidc"])
    viewer.user = {"is_logged_in": True, "email": "vera@corp.io"}
    viewer.run()
    assert "vera@corp.io · viewer" in _texts(viewer)
    assert viewer.session_state["principal"] == Principal("vera@corp.io", "viewer", "oidc")
    assert not [k for k in _keys(_open(viewer, "approvals")) if k.startswith(WRITE_KEYS)]
    v = _pending(project)
    approver = app(project.configs["oidc"])
    approver.user = {"is_logged_in": True, "email": "ana@corp.io"}
    approver.run()
    assert "ana@corp.io · approver" in _texts(approver)
    assert f"approve_{v}" in _keys(_open(approver, "approvals"))


# pipeline, drift, models, backtests ----------------------------------------------------------
def test_a_retrain_request_is_recorded_once(project: Project, app: Any) -> None:
    at = _open(app(project.configs["none"], display_name="ana"), "pipeline")
    at.text_input(key="retrain_reason").input("the south region drifts")
    at.button(key="retrain_submit").click().run()
    assert any("Retraining requested" in s for s in _messages(at, "success")), _texts(at)
    at.button(key="retrain_submit").click().run()  # a second click on the same form
    assert any("Already requested" in s for s in _messages(at, "info")), _texts(at)
    recs = _audit(project, actions=["request_retrain"])
    recs = recs[recs["reason"] == "the south region drifts"]
    assert len(recs) == 1 and list(recs["actor"]) == ["ana"]
    shown = _table(at, "actor", "reason", "request_id")
    assert "the south region drifts" in set(shown["reason"])


def test_an_unreachable_prefect_is_a_warning(project: Project, app: Any, tmp_path: Path) -> None:
    s = with_changes(project.settings, storage={"workspace": str(tmp_path / "ws")})
    _fake_service(s.workspace, free_port())  # nothing listens there
    at = _open(app(write_config(s, tmp_path / "mlops.yaml")), "pipeline")
    assert any("cannot be reached" in w for w in _messages(at, "warning")), _texts(at)
    assert "retrain_submit" in _keys(at)  # the rest of the page is there


_RUN = {
    "id": "r1",
    "name": "brisk-otter",
    "flow_id": "f1",
    "deployment_id": "d1",
    "state_name": "Completed",
    "state_type": "COMPLETED",
    "expected_start_time": "2026-11-28T01:00:00Z",
    "start_time": "2026-11-28T01:00:02Z",
    "end_time": "2026-11-28T01:00:40Z",
    "total_run_time": 38.0,
    "auto_scheduled": True,
    "parameters": {"config": "mlops.yaml"},
}
PREFECT_ANSWERS: dict[str, Any] = {  # path -> what the fake Prefect API answers
    "/api/deployments/filter": [
        {
            "id": "d1",
            "name": "dash",
            "flow_id": "f1",
            "schedules": [{"schedule": {"cron": "0 * * * *"}}],
        }
    ],
    "/api/flows/filter": [{"id": "f1", "name": "monitor"}],
    "/api/automations/filter": [
        {"trigger": {"expect": ["mlops.retrain.requested"]}, "actions": [{"deployment_id": "d1"}]}
    ],
    "/api/flow_runs/filter": [_RUN],
}


class _FakePrefect(BaseHTTPRequestHandler):
    """Prefect's HTTP API, the few answers the Pipeline page asks for."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(PREFECT_ANSWERS.get(self.path, [])).encode()
        self.send_response(200 if self.path in PREFECT_ANSWERS else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _fake_service(workspace: Path, port: int) -> None:
    """Record a Prefect server on ``port`` as `mlops up` would (this process stands in for it)."""
    run_dir = workspace / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "prefect-server.json").write_text(
        json.dumps(
            ServiceInfo(
                "prefect-server",
                os.getpid(),
                port,
                f"http://127.0.0.1:{port}",
                f"http://127.0.0.1:{port}/api/health",
                str(workspace / "log"),
                time.time(),
            ).__dict__
        )
    )


def test_pipeline_shows_deployments_and_flow_runs_from_prefect(
    project: Project, app: Any, tmp_path: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePrefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = with_changes(project.settings, storage={"workspace": str(tmp_path / "ws")})
        _fake_service(s.workspace, server.server_address[1])
        at = _open(app(write_config(s, tmp_path / "mlops.yaml")), "pipeline")
    finally:
        server.shutdown()
        server.server_close()
    deps = _table(at, "deployment", "schedules", "triggers", "next runs")
    assert list(deps["deployment"]) == ["monitor/dash"]
    assert deps["schedules"][0] == "cron 0 * * * *"
    assert deps["triggers"][0] == "mlops.retrain.requested"
    runs = _table(at, "flow run", "state")
    assert list(runs["flow run"]) == ["brisk-otter"] and list(runs["state"]) == ["Completed"]


def test_release_from_quarantine_by_an_approver(project: Project, app: Any) -> None:
    q = project.quarantined
    at = _open(app(project.configs["none"], display_name="ana"), "drift")
    at.text_input(key=f"release_comment_{q}").input("one duplicate id is fine")
    at.checkbox(key=f"release_force_{q}").check()
    at.button(key=f"release_{q}").click().run()

    assert not at.exception
    assert any(q in s for s in _messages(at, "success")), _texts(at)
    meta = MetadataStore(project.settings.db_url)
    assert meta.get_batch(q).status == "released"
    rec = _audit(project, actions=["release"])
    assert list(rec["actor"]) == ["ana"] and list(rec["outcome"]) == ["applied"]
    assert f"release_{q}" not in _keys(at)


def test_drift_page_picks_a_run_and_shows_its_report(project: Project, app: Any) -> None:
    at = _open(app(project.configs["none"]), "drift")
    assert at.selectbox(key="drift_run").value == project.run
    assert "drift_heatmap" in _charts(at)
    cols = _table(at, "column", "score", "drifted")
    assert len(cols) == len(project.settings.data.features.all())
    assert "Evidently report" in _texts(at)
    runs = _table(at, "id", "at", "status")
    assert runs["at"].str.match(STAMP).all(), list(runs["at"])
    # the report (megabytes) is not sent until asked for; its file can be downloaded
    assert at.toggle(key="drift_show_report").value is False
    assert not at.get("iframe")
    assert "drift_report_download" in {b.key for b in at.get("download_button")}
    at.toggle(key="drift_show_report").set_value(True).run()
    assert not at.exception, at.exception
    [frame] = at.get("iframe")
    assert "Dataset Drift" in frame.proto.srcdoc and common.REPORT_CSS in frame.proto.srcdoc
    assert frame.proto.alt == f"Evidently drift report of run {project.run}"


def test_models_compares_versions_on_the_same_rows(project: Project, app: Any) -> None:
    v = _pending(project)
    at = _open(app(project.configs["none"]), "models")
    at.multiselect(key="compare_versions").select(project.first).select(v).run()
    assert not at.exception, at.exception
    metrics = _table(at, "compared", "roc_auc", "accuracy")
    assert list(metrics["compared"]) == [f"v{project.first}", f"v{v}"]
    assert metrics["roc_auc"].notna().all()
    # the same trained model registered twice: the same predictions, the same metrics
    assert metrics["roc_auc"].iloc[0] == pytest.approx(metrics["roc_auc"].iloc[1])
    cached = list((views.cache_dir(project.settings) / "predictions").glob("*.parquet"))
    assert len(cached) >= 2
    assert {"compare_roc", "compare_pr", "compare_importance"} <= _charts(at)
    assert len(_table(at, "batches", "shared_with_first")) == 2


def test_backtests_page_charts_the_result(project: Project, app: Any) -> None:
    at = _open(app(project.configs["none"]), "backtests")
    table = _table(at, "strategy", "retrains")
    assert set(table["strategy"]) == {"static", "periodic:2"}
    assert {"backtest_over_time", "backtest_cost"} <= _charts(at)


def test_mlops_backtest_saves_its_result_for_the_backtests_page(
    project: Project, app: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mlops_cli.app import app as cli

    s = with_changes(project.settings, storage={"workspace": str(tmp_path / "ws")})
    config = write_config(s, tmp_path / "mlops.yaml")
    history = project.configs["none"].parent / "history.parquet"
    res = CliRunner().invoke(
        cli,
        [
            "backtest",
            "--config",
            str(config),
            "--data",
            str(history),
            "--batch-period",
            "7D",
            "--initial-batches",
            "3",
            "--strategies",
            "static",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    saved = list(views.backtests_dir(s).glob("history-*.json"))
    assert len(saved) == 1 and "Saved for the dashboard" in res.stdout
    at = _open(app(config), "backtests")
    assert set(_table(at, "strategy", "retrains")["strategy"]) == {"static"}


# serving -------------------------------------------------------------------------------------
def test_serving_page_shows_the_live_version_traffic_and_outcomes(
    project: Project, app: Any, tmp_path: Path
) -> None:
    import dataclasses

    import httpx
    import uvicorn
    from registry_helpers import client_records

    from mlops_core.ops.services import SERVING
    from mlops_core.serve.app import create_app

    s = project.settings
    api = create_app(s)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    run_file = s.workspace / "run" / f"{SERVING}.json"
    champion = _champion(project)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).json()["ready"]:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serving did not start"
            time.sleep(0.1)
        # as `mlops up` records it: this process runs it
        run_file.parent.mkdir(parents=True, exist_ok=True)
        run_file.write_text(
            json.dumps(
                dataclasses.asdict(
                    ServiceInfo(
                        SERVING,
                        os.getpid(),
                        port,
                        url,
                        url + "/health",
                        str(tmp_path / "log"),
                        time.time(),
                    )
                )
            )
        )
        rows = _weeks(generate_stream(10_000, days=70, seed=5, label_delay_days=0).frame, 8, 9)
        answer = httpx.post(url + "/predict", json=client_records(rows), timeout=60).json()
        httpx.post(
            url + "/feedback",
            timeout=60,
            json=[
                {"id": p["id"], "label": int(y)}
                for p, y in zip(answer["predictions"], rows[TARGET], strict=True)
            ],
        )
        httpx.post(url + "/predict", json={"nonsense": 1}, timeout=10)
        assert api.state.mlops.writer.flush()

        at = _open(app(project.configs["none"], display_name="ana"), "serving")
    finally:
        run_file.unlink(missing_ok=True)
        server.should_exit = True
        thread.join(15)

    metrics = {m.label: m.value for m in at.get("metric")}
    assert metrics["Serving"] == f"v{champion}"
    assert metrics["Predict requests"] == "1"
    assert metrics["Refused / failed"] == "1 / 0"
    assert {"serving_traffic", "serving_outcomes"} <= _charts(at)
    traffic = _figure(at, "serving_traffic")
    assert sum(traffic.data[0].y) == len(rows)
    live = _table(at, "version", "role", "labelled_rows", "accuracy")
    assert live["version"].tolist() == [champion]
    assert live["labelled_rows"].tolist() == [len(rows)]
    assert 0.5 < live["accuracy"].iloc[0] <= 1
    # the Models page shows the same live metrics (read from the log)
    models = _open(at, "models")
    assert _table(models, "version", "role", "labelled_rows")["version"].tolist() == [champion]
