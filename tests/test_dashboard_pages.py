"""The Pipeline and Backtests pages through Streamlit's AppTest, on small projects of their own
(no MLflow server: the registry is not what these pages show).

Pipeline: the flow runs that ran come first, newest first, and the runs scheduled ahead are apart
(asked of Prefect separately, so they never crowd the others out); service addresses are links.
Backtests: the charts show the policy against static and every-batch unless more strategies are
picked; each strategy keeps its colour in both charts. The demo project has a backtest to show.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import streamlit as st
from registry_helpers import demo_settings, write_config
from streamlit.testing.v1 import AppTest
from test_dashboard import APP, _figure, _open, _table, _table_element, _texts

from mlops_core.config import Settings
from mlops_core.demo.backtest import RESULT, STRATEGIES, write_demo_backtest
from mlops_core.demo.stream import generate_stream
from mlops_core.ops.services import free_port
from mlops_core.read import views

pytestmark = pytest.mark.slow


def _settings(tmp_path: Path, name: str = "pages") -> Settings:
    # nothing listens on the registry's port: the pages under test do not read it
    return demo_settings(tmp_path, f"http://127.0.0.1:{free_port()}", name)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A factory of AppTests of the dashboard on a given mlops.yaml (as in test_dashboard)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")

    def make(config: Path) -> AppTest:
        monkeypatch.setenv("MLOPS_CONFIG", str(config))
        st.cache_data.clear()
        return AppTest.from_file(str(APP), default_timeout=60)

    yield make
    st.cache_data.clear()


# pipeline ----------------------------------------------------------------------------------------
def _run(name: str, state: str, start: str | None, expected: str) -> dict[str, Any]:
    return {
        "id": f"id-{name}",
        "name": name,
        "flow_id": "f1",
        "deployment_id": "d1",
        "state_name": state.capitalize(),
        "state_type": state,
        "expected_start_time": expected,
        "start_time": start,
        "end_time": None,
        "total_run_time": 3.0,
        "auto_scheduled": True,
        "parameters": {},
    }


RAN = [  # as Prefect answers START_TIME_DESC
    _run("running-run", "RUNNING", "2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z"),
    _run("done-run", "COMPLETED", "2026-12-01T09:00:00Z", "2026-12-01T09:00:00Z"),
    _run("failed-run", "FAILED", "2026-11-30T09:00:00Z", "2026-11-30T09:00:00Z"),
]
AHEAD = [  # EXPECTED_START_TIME_ASC
    _run(f"future-{i}", "SCHEDULED", None, f"2026-12-{i + 2:02d}T09:00:00Z") for i in range(25)
]


class _Prefect(BaseHTTPRequestHandler):
    """Prefect's API as far as the Pipeline page asks: flow runs filtered by state type."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        answer: Any = []
        if self.path == "/api/deployments/filter":
            answer = [{"id": "d1", "name": "pages", "flow_id": "f1", "schedules": []}]
        elif self.path == "/api/flows/filter":
            answer = [{"id": "f1", "name": "monitor"}]
        elif self.path == "/api/flow_runs/filter":
            _Prefect.bodies.append(body)
            types = body.get("flow_runs", {}).get("state", {}).get("type", {})
            runs = AHEAD if types.get("any_") == ["SCHEDULED"] else RAN
            answer = runs[: body.get("limit", 200)]
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prefect(tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    from test_dashboard import _fake_service

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Prefect.bodies = []
    s = _settings(tmp_path)
    _fake_service(s.workspace, server.server_address[1])
    try:
        yield s, write_config(s, tmp_path / "mlops.yaml")
    finally:
        server.shutdown()
        server.server_close()


def test_pipeline_shows_runs_that_ran_first_and_scheduled_ones_apart(
    prefect: tuple[Settings, Path], app: Any
) -> None:
    s, config = prefect
    at = _open(app(config), "pipeline")
    ran = _table(at, "flow run", "state", "end")
    assert list(ran["flow run"]) == ["running-run", "done-run", "failed-run"]
    [expander] = [e for e in at.expander if e.label.startswith("Scheduled flow runs")]
    ahead = next(d.value for d in expander.dataframe)
    assert list(ahead["flow run"]) == [f"future-{i}" for i in range(10)]  # the next ten
    assert "end" not in ahead.columns
    # each run links to its page in Prefect's UI
    port = json.loads((s.workspace / "run" / "prefect-server.json").read_text())["port"]
    assert ran["link"][0] == f"http://127.0.0.1:{port}/runs/flow-run/id-running-run"
    cols = json.loads(_table_element(at, "flow run", "state", "end").proto.columns)
    assert cols["link"]["type_config"]["type"] == "link"
    # asked of Prefect apart, each bounded
    runs_asked = [b for b in _Prefect.bodies if b.get("limit") in (10, 20)]
    assert {(b["sort"], b["limit"]) for b in runs_asked} == {
        ("START_TIME_DESC", 20),
        ("EXPECTED_START_TIME_ASC", 10),
    }


def test_pipeline_service_addresses_are_links(prefect: tuple[Settings, Path], app: Any) -> None:
    _, config = prefect
    at = _open(app(config), "pipeline")
    services = _table(at, "service", "health", "url")
    assert services.set_index("service")["url"]["prefect-server"].startswith("http://127.0.0.1:")
    cols = json.loads(_table_element(at, "service", "health", "url").proto.columns)
    assert cols["url"]["type_config"]["type"] == "link"
    assert "open the Prefect UI" in _texts(at)


# backtests ---------------------------------------------------------------------------------------
NAMES = [
    "static",
    "every-batch",
    "periodic:10",
    "performance",
    "drift",
    "detector:adwin",
    "estimated",
    "policy",
]


def _result(names: list[str]) -> dict[str, Any]:
    """A backtest result as ``mlops backtest`` writes it, made up."""
    times = [f"2026-0{m}-01T00:00:00" for m in range(1, 7)]

    def strategy(i: int, name: str) -> dict[str, Any]:
        per_batch = [
            {"batch": b, "time": t, "rows": 100, "accuracy": 0.7 + 0.01 * i, "retrained": b == 2}
            for b, t in enumerate(times)
        ]
        return {
            "name": name,
            "metric_name": "accuracy",
            "mean_metric": 0.7 + 0.01 * i,
            "retrains": 1,
            "train_cpu_s": 1.0 + i,
            "monitor_cpu_s": 0.1,
            "per_batch": per_batch,
            "triggers": [{"batch": 2, "time": times[2], "reasons": ["x"], "start_row": None}],
            "detection_delays": [],
            "false_triggers": None,
        }

    return {
        "schema": 1,
        "dataset": "made-up",
        "task": "binary",
        "batches": len(times),
        "metric_name": "accuracy",
        "drift_batches": [],
        "settings": {},
        "strategies": [strategy(i, n) for i, n in enumerate(names)],
    }


def _colours(fig: Any) -> dict[str, str]:
    """Strategy → colour of its traces (all of a strategy's traces share it)."""
    out: dict[str, set[str]] = {}
    for t in fig.data:
        name = t.legendgroup or t.name
        colour = t.marker.color if "lines" not in (t.mode or "") else t.line.color
        out.setdefault(name, set()).add(colour)
    assert all(len(c) == 1 for c in out.values()), out
    return {n: c.pop() for n, c in out.items()}


@pytest.fixture
def backtest_project(tmp_path: Path) -> Path:
    s = _settings(tmp_path, "pages-bt")
    folder = views.backtests_dir(s)
    folder.mkdir(parents=True)
    (folder / "eight.json").write_text(json.dumps(_result(NAMES)))
    return write_config(s, tmp_path / "mlops.yaml")


def test_backtests_chart_the_policy_against_the_baselines_by_default(
    backtest_project: Path, app: Any
) -> None:
    at = _open(app(backtest_project), "backtests")
    assert set(_table(at, "strategy", "retrains")["strategy"]) == set(NAMES)  # the table: all
    over = _colours(_figure(at, "backtest_over_time"))
    cost = _colours(_figure(at, "backtest_cost"))
    assert set(over) == set(cost) == {"policy", "static", "every-batch"}
    assert over == cost and len(set(over.values())) == 3

    at.multiselect(key="backtest_strategies:eight").select("drift").run()
    assert not at.exception, at.exception
    more = _colours(_figure(at, "backtest_over_time"))
    assert set(more) == {"policy", "static", "every-batch", "drift"}
    assert {n: more[n] for n in over} == over  # the same colours as before

    at.toggle(key="backtest_all:eight").set_value(True).run()
    assert not at.exception, at.exception
    every = _colours(_figure(at, "backtest_over_time"))
    assert set(every) == set(NAMES) and len(set(every.values())) == len(NAMES)
    assert every == _colours(_figure(at, "backtest_cost"))
    assert {n: every[n] for n in more} == more


def test_a_result_without_the_baselines_charts_every_strategy(tmp_path: Path, app: Any) -> None:
    s = _settings(tmp_path, "pages-bt2")
    views.backtests_dir(s).mkdir(parents=True)
    (views.backtests_dir(s) / "two.json").write_text(json.dumps(_result(["drift", "periodic:4"])))
    at = _open(app(write_config(s, tmp_path / "mlops.yaml")), "backtests")
    assert set(_colours(_figure(at, "backtest_over_time"))) == {"drift", "periodic:4"}
    assert not at.multiselect and not at.toggle


def test_the_demo_project_has_a_backtest_to_show(tmp_path: Path, app: Any) -> None:
    s = _settings(tmp_path, "pages-demo")
    config = write_config(s, tmp_path / "mlops.yaml")
    stream = generate_stream(12_000, days=84, seed=3)
    res = write_demo_backtest(s, stream)
    assert res.path == views.backtests_dir(s) / RESULT and res.batches > 0
    assert set(res.mean) == set(STRATEGIES) and res.retrains["static"] == 0
    at = _open(app(config), "backtests")
    assert set(_table(at, "strategy", "retrains")["strategy"]) == set(STRATEGIES)
    assert set(_colours(_figure(at, "backtest_over_time"))) == set(STRATEGIES)
    assert "quick backtest" in _texts(at)  # its note says what it is
