"""flows/: prefect.yaml rendered from mlops.yaml (`mlops deploy`), the events' shape, the audit
outbox's mapping, and the boundaries (the library does not import flows or Prefect)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows import deploy, events
from mlops_cli.app import app
from mlops_core.config import parse_config
from tests.registry_helpers import demo_raw, write_config

REPO = Path(__file__).resolve().parents[1]


def _settings(tmp_path: Path, **sections: Any) -> Any:
    return parse_config(demo_raw(tmp_path, "http://127.0.0.1:1", "churn", **sections), environ={})


def _by_flow(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["entrypoint"].split(":")[1]: d for d in doc["deployments"]}


SOURCE = {"source": {"kind": "folder", "path": "landing"}}


def test_rendering_defaults_weekly_training_and_event_triggers(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        deploy.render_prefect_yaml(_settings(tmp_path, data=SOURCE), "proj/mlops.yaml")
    )
    assert doc["prefect-version"] == "3.9.1"
    deps = _by_flow(doc)
    assert set(deps) == {
        "ingest",
        "monitor",
        "train",
        "promote",
        "publish_events",
        "continuous_training",
    }
    for d in deps.values():
        assert d["name"] == "churn"
        assert d["work_pool"] == {"name": "mlops"}
        assert d["parameters"]["config"] == "proj/mlops.yaml"
        assert d["entrypoint"].startswith("flows/lifecycle.py:")
        assert (REPO / d["entrypoint"].split(":")[0]).is_file()
    assert deps["ingest"]["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]
    assert deps["monitor"]["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]
    train = deps["train"]
    assert train["schedules"] == [{"cron": "0 3 * * 1", "timezone": "UTC"}]
    assert train["concurrency_limit"] == 1
    (trigger,) = train["triggers"]
    assert trigger["expect"] == ["mlops.retrain.requested"]
    assert trigger["match"] == {"prefect.resource.id": "mlops.project.churn"}
    assert trigger["parameters"]["config"] == "proj/mlops.yaml"
    assert trigger["parameters"]["trigger"] == "{{ event.payload.trigger }}"
    assert trigger["parameters"]["since"] == "{{ event.payload.since }}"
    assert trigger["parameters"]["requested_by"] == "{{ event.payload.requested_by | default('') }}"
    (ptrigger,) = deps["promote"]["triggers"]
    assert ptrigger["expect"] == ["mlops.model.approved"]
    assert ptrigger["parameters"]["version"] == "{{ event.payload.version }}"
    assert "schedules" not in deps["continuous_training"]
    assert deps["publish_events"]["schedules"][0]["interval"] == deploy.PUBLISH_INTERVAL_S


def test_rendering_takes_the_schedules_from_the_config(tmp_path: Path) -> None:
    s = _settings(
        tmp_path,
        data=SOURCE,
        monitoring={"schedule": "*/30 * * * *"},
        retraining={"schedule": "0 4 * * 0"},
    )
    deps = _by_flow(yaml.safe_load(deploy.render_prefect_yaml(s, "mlops.yaml", pool="p")))
    assert deps["ingest"]["schedules"][0]["cron"] == "*/30 * * * *"
    assert deps["monitor"]["schedules"][0]["cron"] == "*/30 * * * *"
    assert deps["train"]["schedules"][0]["cron"] == "0 4 * * 0"
    assert all(d["work_pool"]["name"] == "p" for d in deps.values())


def test_without_a_source_ingestion_is_by_hand(tmp_path: Path) -> None:
    deps = _by_flow(yaml.safe_load(deploy.render_prefect_yaml(_settings(tmp_path), "m.yaml")))
    assert "schedules" not in deps["ingest"]
    assert deps["monitor"]["schedules"][0]["cron"] == "0 * * * *"


def test_config_parameter_is_relative_under_the_code_root(tmp_path: Path) -> None:
    assert (
        deploy.config_parameter(REPO / "demo-project" / "mlops.yaml") == "demo-project/mlops.yaml"
    )
    assert deploy.config_parameter(tmp_path / "mlops.yaml") == str(tmp_path / "mlops.yaml")


def test_cli_deploy_prints_the_rendering(tmp_path: Path) -> None:
    cfg = write_config(
        _settings(tmp_path, retraining={"schedule": "5 1 * * 2"}), tmp_path / "mlops.yaml"
    )
    res = CliRunner().invoke(app, ["deploy", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    deps = _by_flow(yaml.safe_load(res.stdout))
    assert deps["train"]["schedules"][0]["cron"] == "5 1 * * 2"
    assert deps["train"]["parameters"]["config"] == str(cfg.resolve())
    out = tmp_path / "prefect.yaml"
    res = CliRunner().invoke(app, ["deploy", "--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(
        deploy.render_prefect_yaml(
            _settings(tmp_path, retraining={"schedule": "5 1 * * 2"}), str(cfg.resolve())
        )
    )


def test_cli_deploy_apply_without_a_server_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    cfg = write_config(_settings(tmp_path), tmp_path / "mlops.yaml")
    res = CliRunner().invoke(app, ["deploy", "--config", str(cfg), "--apply"])
    assert res.exit_code == 1
    assert "mlops up" in res.output


def test_the_repository_prefect_yaml_renders_the_demo_project() -> None:
    """The top-level prefect.yaml is `mlops deploy` of demo-project/mlops.yaml as `mlops demo`
    writes it (project loans-demo, default schedules)."""
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deps = _by_flow(doc)
    assert {d["name"] for d in deps.values()} == {"loans-demo"}
    assert all(d["parameters"]["config"] == "demo-project/mlops.yaml" for d in deps.values())
    s = parse_config(
        {"project": "loans-demo", "data": {"source": {"kind": "folder", "path": "landing"}}},
        environ={},
    )
    assert doc == deploy.render_deployments(s, "demo-project/mlops.yaml")


def test_event_names_and_resource() -> None:
    assert set(events.EVENTS) == {
        "mlops.batch.accepted",
        "mlops.batch.quarantined",
        "mlops.drift.detected",
        "mlops.retrain.requested",
        "mlops.model.registered",
        "mlops.model.approved",
        "mlops.model.rejected",
    }
    assert events.resource("churn")["prefect.resource.id"] == "mlops.project.churn"
    assert (
        events.AUDIT_EVENTS["approve"]
        == events.AUDIT_EVENTS["auto_promote"]
        == "mlops.model.approved"
    )
    assert (
        events.AUDIT_EVENTS["reject"]
        == events.AUDIT_EVENTS["gate_reject"]
        == "mlops.model.rejected"
    )
    assert events.emit_decision("p", "register", "1") is None  # no event for it


def test_the_train_trigger_renders_every_retrain_request(tmp_path: Path) -> None:
    """Prefect renders the trigger's parameters from the event, and a key missing from the
    payload fails the whole action (it renders `tojson` of an undefined value). So both kinds of
    request carry every key, and requested_by has a default for events from before it existed.
    Checked with Prefect's own rendering, as the server does it."""
    import copy
    import inspect

    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    from flows.lifecycle import train

    (trigger,) = _by_flow(deploy.render_deployments(_settings(tmp_path), "m.yaml"))["train"][
        "triggers"
    ]

    def render(payload: dict[str, Any]) -> Any:
        params = copy.deepcopy(trigger["parameters"])
        RunDeployment._upgrade_v1_templates(params)
        return hydrate(
            params,
            HydrationContext(
                raise_on_error=True,
                render_jinja=True,
                jinja_context={"event": {"payload": payload}},
            ),
        )

    policy = events.retrain_payload(
        trigger="drift",
        reasons=["drift share 0.6"],
        since="2025-01-06T00:00:00",
        monitoring_run="m-1",
        requested_by=events.POLICY,
        champion_version="3",
    )
    manual = events.audit_payload(
        "request_retrain",
        None,
        actor="ana",
        reason="new season",
        previous_champion="3",
        audit_id=7,
        request_id="r-1",
    )
    assert render(policy) == {
        "config": "m.yaml",
        "trigger": "drift",
        "since": "2025-01-06T00:00:00",
        "monitoring_run": "m-1",
        "requested_by": "policy",
    }
    assert render(manual) == {
        "config": "m.yaml",
        "trigger": "manual",
        "since": "",
        "monitoring_run": "",
        "requested_by": "ana",
    }
    assert manual["reasons"] == ["new season"]
    older = {k: v for k, v in policy.items() if k != "requested_by"}
    assert render(older)["requested_by"] == ""
    assert set(render(manual)) <= set(inspect.signature(train.fn).parameters)


def test_since_text() -> None:
    from datetime import datetime

    assert events.since_text(None) == ""
    assert events.since_text(datetime(2025, 3, 1, 12)) == "2025-03-01T12:00:00"


def test_flows_import_without_side_effects() -> None:
    """flows/ imports Prefect; the library still does not (checked in a fresh interpreter),
    and importing flows.deploy does not import Prefect either (mlops deploy stays fast)."""
    code = (
        "import sys, flows.deploy, flows.events, mlops_cli.app\n"
        "print(','.join(sorted(k for k in sys.modules if k.split('.')[0] == 'prefect')))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert res.stdout.strip() == ""


def test_training_cache_key_follows_the_labelled_batches_and_the_config(tmp_path: Path) -> None:
    """A repeat training on the same data and configuration is the same cache key; a new batch,
    a changed configuration or another window start is a new one."""
    from flows.lifecycle import _training_cache_key
    from tests.registry_helpers import demo_frame, ingest_frame

    s = _settings(tmp_path)
    cfg = write_config(s, tmp_path / "mlops.yaml")
    frame = demo_frame(600, days=28)
    ingest_frame(s, frame[frame.index < 300], tmp_path / "in", "a.parquet")

    def key(config: Path = cfg, since: str = "") -> str:
        return _training_cache_key(None, {"config": str(config), "since": since})  # type: ignore[arg-type]

    first = key()
    assert key() == first
    assert key(since="2025-01-20T00:00:00") != first
    other = write_config(
        parse_config(
            demo_raw(tmp_path, "http://127.0.0.1:1", "churn", model={"search": {"trials": 3}}),
            environ={},
        ),
        tmp_path / "other.yaml",
    )
    assert key(other) != first
    ingest_frame(s, frame[frame.index >= 300], tmp_path / "in", "b.parquet")
    assert key() != first


class _State:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (ConnectionError("refused"), True),
        (TimeoutError("slow"), True),
        (OSError("disk"), True),
        (ValueError("bad data"), False),
        (KeyError("column"), False),
    ],
)
def test_retries_only_what_may_pass(exc: BaseException, retry: bool) -> None:
    from flows.lifecycle import is_transient

    assert is_transient(None, None, _State(exc)) is retry


def test_retries_mlflow_errors_that_are_transient() -> None:
    """MLflow's exceptions stop at the registry's adapter (translate_error); the flows see
    RegistryUnavailable (retried) or RegistryError (final)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    from flows.lifecycle import is_transient
    from mlops_core.errors import SourceError
    from mlops_core.registry.mlflow_adapter import translate_error
    from mlops_core.train.fit import TrainingInputError

    def ours(e: Exception) -> Exception:
        return translate_error(e, "http://127.0.0.1:5000")

    assert is_transient(
        None, None, _State(ours(MlflowException("boom", error_code=INTERNAL_ERROR)))
    )
    assert not is_transient(
        None,
        None,
        _State(ours(MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST))),
    )
    assert is_transient(None, None, _State(SourceError("server unreachable")))
    assert not is_transient(None, None, _State(TrainingInputError("one class")))
