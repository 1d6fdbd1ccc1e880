"""Training to registry, end to end against a real MLflow server: the demo stream and car_loan
(train, gate, pending, approve, the champion by alias, a second version, rollback), what a run
and a version carry, the gate rejecting, auto promotion, bad training input registering
nothing, and the `mlops` commands over all of it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import yaml
from registry_helpers import (
    DEMO_FEATURES,
    add_version,
    audit_for,
    car_loan_settings,
    demo_frame,
    demo_settings,
    ingest_frame,
    scored_frame,
    with_changes,
    write_config,
)
from typer.testing import CliRunner, Result

from mlops_cli.app import app
from mlops_core.data.ingest import ingest
from mlops_core.demo.stream import TARGET
from mlops_core.ops.services import ServiceInfo
from mlops_core.registry.mlflow_adapter import scoped_uris
from mlops_core.registry.registry import (
    CHALLENGER,
    CHAMPION,
    Registry,
    RegistryError,
    conform_to_signature,
    file_sha256,
)
from mlops_core.store import MetadataStore
from mlops_core.train.evaluation import compute_metrics
from mlops_core.train.fit import (
    NothingNewError,
    TrainingInputError,
    load_training_data,
    time_split,
)
from mlops_core.train.pipeline import TrainingOutcome, train_and_register

# every test here needs the MLflow server, and most train models
pytestmark = pytest.mark.slow

FAST_GATE = {"smoke_test": False}
RUN_FILES = [
    "lineage/lineage.json",
    "reference/reference.parquet",
    "training/feature_importance.json",
    "training/search.json",
    "evidence/comparison.json",
    "evidence/performance.html",
    "evidence/performance.json",
    "card/model_card.md",
]


def _run_files(reg: Registry, run_id: str, dst: Path) -> Path:
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="", dst_path=str(dst), tracking_uri=reg.uri
        )
    )


def _holdout_metrics_of(reg: Registry, version: str, settings: Any) -> dict[str, float]:
    """``version``'s metrics on the hold-out rows a training run on ``settings`` uses now."""
    df = load_training_data(settings).frame
    _, _, ho = time_split(len(df), settings.model.holdout, settings.model.validation)
    pred = reg.predict(version, df.iloc[ho])
    return compute_metrics(settings.task, df[TARGET].iloc[ho], pred, [0, 1])


def _check_pending(reg: Registry, out: TrainingOutcome) -> str:
    assert out.status == "pending_approval", out.gate.reasons
    assert out.gate.passed and out.gate.failed == []
    v = str(out.version)
    info = reg.version(v)
    assert info.status == "pending_approval" and info.gate_passed is True
    assert reg.aliases()[CHALLENGER] == v
    assert CHALLENGER in info.aliases and CHAMPION not in info.aliases
    assert json.loads(info.tags["gate_reasons"]) == out.gate.reasons
    assert all(r.startswith("PASS ") for r in out.gate.reasons)
    return v


# the demo stream, end to end ----------------------------------------------------------------
def test_demo_stream_end_to_end(mlflow_server: ServiceInfo, tmp_path: Path) -> None:
    # the whole window (not a chosen newest part), so that the rows are known here
    s = demo_settings(
        tmp_path,
        mlflow_server.url,
        "pl-demo",
        gate={"slice_columns": ["channel"]},
        model={"window": {"choose": False}},
    )
    frame = demo_frame(8000, days=112)
    batches = ingest_frame(s, frame, tmp_path / "landing")
    assert batches >= 15  # weekly batches
    reg = Registry(s)

    out = train_and_register(s, trigger="manual")

    v1 = _check_pending(reg, out)
    assert out.rows == 8000 and out.batches == batches and out.champion_version is None
    assert any("no champion yet" in r for r in out.gate.reasons)
    assert any("fresh process" in r for r in out.gate.reasons)  # the smoke test ran
    assert 0.6 < out.metrics["roc_auc"] <= 1
    # the version's tags
    info = reg.version(v1)
    assert info.trigger == "manual" and info.tags["trigger"] == "manual"
    assert info.metrics == pytest.approx(out.metrics)
    assert set(info.metrics) >= {
        "roc_auc",
        "pr_auc",
        "accuracy",
        "f1",
        "log_loss",
        "calibration_error",
    }
    assert len(info.tags["model_sha256"]) == 64 and info.tags["gate_passed"] == "true"
    assert info.run_id == out.run_id
    # the run: parameters, metrics, tags and files
    run = reg.client.get_run(out.run_id)
    assert run.data.params["model_type"] == "xgboost" and run.data.params["rows"] == "8000"
    assert int(run.data.params["search_trials"]) >= 1
    assert any(k.startswith("hp_") for k in run.data.params)
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(out.metrics["roc_auc"])
    assert "validation_score" in run.data.metrics
    for tag in ("config_hash", "code_version", "model_sha256", "lineage_batches", "trigger"):
        assert run.data.tags[tag], tag
    files = _run_files(reg, out.run_id, tmp_path / "run")
    for name in RUN_FILES:
        assert (files / name).is_file(), name
    accepted = MetadataStore(s.db_url).list_batches("accepted")
    lineage = json.loads((files / "lineage/lineage.json").read_text())
    assert [(b["id"], b["sha256"]) for b in lineage["batches"]] == [
        (r.id, r.content_sha256) for r in accepted
    ]
    assert lineage["rows"] == 8000
    ref = pd.read_parquet(files / "reference/reference.parquet")
    assert 0 < len(ref) <= 8000 * 0.8 and set(DEMO_FEATURES["numeric"]) <= set(ref.columns)
    importance = json.loads((files / "training/feature_importance.json").read_text())
    assert set(importance) == {c for cols in DEMO_FEATURES.values() for c in cols}
    assert math.isclose(sum(importance.values()), 1, abs_tol=1e-6)
    comparison = json.loads((files / "evidence/comparison.json").read_text())
    assert comparison["challenger"] == pytest.approx(out.metrics)
    assert comparison["champion"] is None and comparison["gate"]["passed"] is True
    assert set(comparison["slices"]["challenger"]["channel"]) == {"branch", "broker", "online"}
    evidently = json.loads((files / "evidence/performance.json").read_text())
    assert evidently.get("metrics")
    assert "<html" in (files / "evidence/performance.html").read_text()[:5000].lower()
    card = (files / "card/model_card.md").read_text()
    assert info.tags["model_sha256"] in card and "Gate: PASSED" in card
    assert "debt_to_income" in card
    # the packaged model: signature, input example, pinned requirements, native XGBoost file
    model = reg.download(v1, tmp_path / "model")
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert {c["name"] for c in inputs} == set(importance)
    assert mlmodel["saved_input_example_info"]
    assert (model / mlmodel["saved_input_example_info"]["artifact_path"]).is_file()
    reqs = [
        line.strip()
        for line in (model / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len([r for r in reqs if r.startswith("xgboost")]) == 1, reqs
    assert all("==" in r for r in reqs), reqs
    assert {r.split("==")[0] for r in reqs} >= {"mlflow", "pandas", "scikit-learn"}
    ubj = model / "artifacts" / "model.ubj"
    assert ubj.read_bytes()[:1] == b"{"  # UBJSON, as XGBoost writes it natively
    assert file_sha256(ubj) == info.tags["model_sha256"]
    assert not [p for p in model.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]

    # approve: the champion resolves by alias and predicts
    approved = reg.approve(v1, by="alice", comment="first model")
    assert approved.outcome == "applied"
    assert reg.champion() == v1 and reg.aliases() == {CHAMPION: v1}
    rows = scored_frame(frame.tail(50))
    with scoped_uris(reg.uri) as mlflow:  # the registry leaves no global URI set
        champ = mlflow.pyfunc.load_model(f"models:/{reg.name}@{CHAMPION}")
    by_alias = champ.predict(conform_to_signature(rows, champ.metadata.get_input_schema()))
    by_registry = reg.predict(reg.champion() or "", rows)
    pd.testing.assert_frame_equal(by_alias, by_registry)
    assert list(by_registry.columns) == ["prediction", "proba_0", "proba_1"]

    # a second version, gated against the champion on the same recent rows; the same data
    # and budget make (nearly) the same model: allow a small loss, so that the test does not
    # hang on how many trials the time budget allowed on a busy machine
    out2 = train_and_register(
        with_changes(
            s, gate={"smoke_test": False, "min_improvement": -0.05, "max_slice_regression": 0.1}
        ),
        trigger="drift",
    )
    v2 = _check_pending(reg, out2)
    # v1 was refit on its whole window, the hold-out too, and no newer row exists: no fair
    # comparison (test_a_failed_gate_rejects_the_version compares on newer rows)
    assert out2.champion_version == v1 and out2.champion_metrics is None
    assert any(
        r.startswith("PASS no comparison: the champion has trained on") for r in out2.gate.reasons
    ), out2.gate.reasons
    assert reg.version(v2).trigger == "drift"
    assert reg.approve(v2, by="bob", expected_champion=v1).outcome == "applied"
    assert {v.version: v.status for v in reg.versions()} == {v1: "retired", v2: "approved"}
    assert len(reg.predict(v1, rows)) == len(rows)  # the previous champion stays loadable

    back = reg.rollback(by="carol", comment="v2 is worse in production")
    assert (back.outcome, back.version, back.previous_champion) == ("applied", v1, v2)
    assert reg.aliases()[CHAMPION] == v1 and reg.champion() == v1
    assert {v.version: v.status for v in reg.versions()} == {v1: "approved", v2: "retired"}
    assert [r.action for r in reg.audit()] == [
        "rollback",
        "approve",
        "register",
        "approve",
        "register",
    ]


def test_car_loan_end_to_end(mlflow_server: ServiceInfo, tmp_path: Path, shared_data: Path) -> None:
    s = car_loan_settings(
        tmp_path,
        mlflow_server.url,
        "pl-car-loan",
        gate={"slice_columns": ["salary_range"]},
        model={"window": {"choose": False}},
    )
    data = pd.read_parquet(shared_data / "car_loan.parquet").head(30_000)
    batches = ingest_frame(s, data, tmp_path / "landing")
    assert batches == 7  # monthly, January to the first of July 2018
    reg = Registry(s)

    out = train_and_register(s)

    v = _check_pending(reg, out)
    assert out.rows == 30_000 and out.batches == batches
    assert out.metrics["roc_auc"] > 0.8
    assert reg.approve(v, by="alice").outcome == "applied"
    assert reg.champion() == v
    with scoped_uris(reg.uri) as mlflow:  # the registry leaves no global URI set
        champ = mlflow.pyfunc.load_model(f"models:/{reg.name}@{CHAMPION}")
    assert champ.metadata.run_id == out.run_id
    preds = reg.predict(v, data.tail(100).drop(columns=["repaid"]))
    assert len(preds) == 100 and set(preds["prediction"]) <= {0, 1}
    acc = (preds["prediction"].to_numpy() == data["repaid"].tail(100).to_numpy()).mean()
    assert acc > 0.6


# the gate ------------------------------------------------------------------------------------
def test_a_failed_gate_rejects_the_version(mlflow_server: ServiceInfo, tmp_path: Path) -> None:
    s = demo_settings(
        tmp_path, mlflow_server.url, "pl-gate", gate=FAST_GATE, model={"search": {"trials": 1}}
    )
    frame = demo_frame(9000, days=126, seed=5)
    ingest_frame(s, frame.head(6000), tmp_path / "landing", "first.parquet")
    reg = Registry(s)
    first = train_and_register(s)
    v1 = _check_pending(reg, first)
    reg.approve(v1, by="alice")
    ingest_frame(s, frame.tail(3000), tmp_path / "landing", "later.parquet")
    strict = with_changes(s, gate={"min_score": 0.999, "min_improvement": 0.2})

    out = train_and_register(strict)

    v2 = str(out.version)
    assert out.status == "rejected" and not out.gate.passed
    assert len(out.gate.failed) == 2, out.gate.reasons
    assert any("misses the minimum 0.9990" in r for r in out.gate.failed)
    assert any("vs champion" in r and "needs ≥ +0.2000" in r for r in out.gate.failed)
    # the champion was measured on the challenger's hold-out rows: the newest ones
    assert out.champion_version == v1
    assert out.champion_metrics == pytest.approx(_holdout_metrics_of(reg, v1, strict))
    assert out.champion_metrics != pytest.approx(first.metrics)
    info = reg.version(v2)
    assert (info.status, info.gate_passed) == ("rejected", False)
    assert reg.aliases() == {CHAMPION: v1}  # not a challenger
    [rec] = reg.audit(action="gate_reject")
    assert (rec.actor, rec.version, rec.previous_champion) == ("gate", v2, v1)
    assert "misses the minimum" in rec.reason and rec.evidence == f"runs:/{out.run_id}"
    refused = reg.approve(v2, by="alice", expected_champion=v1)
    assert refused.outcome == "refused" and "rejected" in refused.message
    assert reg.champion() == v1
    # the evidence holds both sides
    comparison = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                tracking_uri=reg.uri,
                run_id=out.run_id,
                artifact_path="evidence/comparison.json",
                dst_path=str(tmp_path / "ev"),
            )
        ).read_text()
    )
    assert comparison["champion_version"] == v1
    assert comparison["champion"] == pytest.approx(out.champion_metrics)
    assert comparison["holdout_rows"] == round(len(load_training_data(strict).frame) * 0.2)


def test_auto_mode_promotes_a_passing_version_as_the_system(
    mlflow_server: ServiceInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = demo_settings(
        tmp_path, mlflow_server.url, "pl-auto", gate=FAST_GATE, promotion={"mode": "auto"}
    )
    ingest_frame(s, demo_frame(6000, days=84, seed=2), tmp_path / "landing")
    reg = Registry(s)

    out = train_and_register(s, trigger="schedule")

    v = str(out.version)
    assert out.status == "approved" and out.gate.passed
    assert out.promotion is not None and out.promotion["outcome"] == "applied"
    assert reg.champion() == v and reg.aliases() == {CHAMPION: v}
    assert reg.version(v).status == "approved"
    [rec] = audit_for(reg, out.promotion["request_id"])
    assert (rec.actor, rec.action, rec.version, rec.outcome) == (
        "system",
        "auto_promote",
        v,
        "applied",
    )
    assert rec.reason.startswith("auto: the gate passed") and rec.alias_moved_at is not None

    # a promotion the registry refuses leaves the version to a person, as the challenger
    def refuse(self: Registry, version: str) -> None:
        raise RegistryError(f"version {version}: the artifact store could not be read")

    monkeypatch.setattr(Registry, "_verify_promotable", refuse)
    # another seed: not a copy of v1 (the same data and configuration would be refused)
    again = train_and_register(with_changes(s, model={"seed": 7}), trigger="schedule")
    v2 = str(again.version)
    assert again.status == "pending_approval" and again.promotion is not None
    assert again.promotion["outcome"] == "refused"
    assert "could not be read" in again.promotion["message"]
    assert reg.aliases() == {CHAMPION: v, CHALLENGER: v2}
    assert reg.version(v2).status == "pending_approval"
    assert [(r.action, r.outcome) for r in reg.audit(version=v2)] == [
        ("auto_promote", "refused"),
        ("register", "recorded"),
    ]


# bad training input registers nothing ----------------------------------------------------------
def _single_class(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(**{TARGET: 0})


def _leaky(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(repaid_flag=frame[TARGET].astype("float64"))


@pytest.mark.parametrize(
    ("case", "change", "sections", "message"),
    [
        ("few", None, {"model": {"min_rows": 100_000}}, "too few rows: 3,000 labelled rows"),
        ("one-class", _single_class, {}, "a single class in the target"),
        (
            "leak",
            _leaky,
            {"data": {"features": {"numeric": [*DEMO_FEATURES["numeric"], "repaid_flag"]}}},
            "repaid_flag (score 1.0)",
        ),
    ],
)
def test_bad_training_input_registers_nothing(
    mlflow_server: ServiceInfo,
    tmp_path: Path,
    case: str,
    change: Any,
    sections: dict[str, Any],
    message: str,
) -> None:
    s = demo_settings(tmp_path, mlflow_server.url, f"pl-bad-{case}", **sections)
    frame = demo_frame(3000, days=42, seed=4)
    ingest_frame(s, change(frame) if change else frame, tmp_path / "landing")
    reg = Registry(s)

    with pytest.raises(TrainingInputError, match="cannot train") as err:
        train_and_register(s)

    assert message in str(err.value)
    assert reg.versions() == []
    assert reg.client.get_experiment_by_name(s.project) is None  # no run either
    assert reg.audit() == []


def test_no_labelled_batches_is_a_clear_error(mlflow_server: ServiceInfo, tmp_path: Path) -> None:
    s = demo_settings(tmp_path, mlflow_server.url, "pl-bad-empty")
    with pytest.raises(TrainingInputError, match="ingest data first"):
        train_and_register(s)
    assert Registry(s).versions() == []


# the command line ------------------------------------------------------------------------------
def _ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def test_cli_train_models_approve_reject_rollback_audit_package(
    mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    s = demo_settings(tmp_path, mlflow_server.url, "pl-cli", gate=FAST_GATE)
    ingest_frame(s, demo_frame(6000, days=84, seed=6), tmp_path / "landing")
    config = str(write_config(s, tmp_path / "mlops.yaml"))
    runner = CliRunner()

    def cli(*args: str) -> Result:
        return runner.invoke(app, [*args, "--config", config], catch_exceptions=False)

    trained = json.loads(_ok(cli("train", "--trigger", "manual", "--json")).stdout)
    assert trained["status"] == "pending_approval" and trained["version"] == "1"
    assert trained["gate"]["passed"] is True and trained["run_id"]
    assert set(trained["metrics"]) >= {"roc_auc", "log_loss"}
    reg = Registry(s)
    v2 = add_version(reg, reg, "1")
    v3 = add_version(reg, reg, "1", challenger=True)

    listed = json.loads(_ok(cli("models", "--json")).stdout)
    assert list(listed) == ["versions"]
    assert [v["version"] for v in listed["versions"]] == ["1", v2, v3]
    for v in listed["versions"]:
        assert set(v) >= {"version", "status", "aliases", "metrics", "trigger", "created"}
        assert v["status"] == "pending_approval" and v["trigger"] == "manual"
        assert v["metrics"] == pytest.approx(trained["metrics"])
        pd.Timestamp(v["created"])  # ISO time
    assert [v["aliases"] for v in listed["versions"]] == [[], [], [CHALLENGER]]

    assert "applied" in _ok(cli("approve", "1", "--by", "alice", "--comment", "good")).stdout
    _ok(cli("approve", v2, "--by", "bob", "--comment", "better", "--expect-champion", "1"))
    stale = cli("approve", v3, "--by", "eve", "--comment", "ok", "--expect-champion", "none")
    assert stale.exit_code != 0 and "champion changed" in stale.stdout
    missing = cli("reject", v3, "--by", "dave")  # --comment is required
    assert missing.exit_code != 0
    rejected = _ok(cli("reject", v3, "--by", "dave", "--comment", "not better", "--json"))
    assert json.loads(rejected.stdout)["outcome"] == "applied"
    assert cli("approve", v3, "--by", "dave").exit_code != 0  # --comment is required
    again = cli("approve", v3, "--by", "dave", "--comment", "second thoughts")
    assert again.exit_code == 1 and "refused" in again.stdout
    back = json.loads(
        _ok(cli("rollback", "--by", "carol", "--comment", "v2 misbehaves", "--json")).stdout
    )
    assert (back["outcome"], back["version"], back["previous_champion"]) == ("applied", "1", v2)
    same = _ok(
        cli(
            "rollback",
            "--by",
            "carol",
            "--comment",
            "retry",
            "--to",
            "1",
            "--request-id",
            back["request_id"],
        )
    )
    assert "noop" in same.stdout

    statuses = {
        v["version"]: (v["status"], v["aliases"])
        for v in json.loads(_ok(cli("models", "--json")).stdout)["versions"]
    }
    assert statuses == {"1": ("approved", [CHAMPION]), v2: ("retired", []), v3: ("rejected", [])}
    table = _ok(cli("models")).stdout
    assert "approved" in table and "rejected" in table

    audit = json.loads(_ok(cli("audit", "--json")).stdout)["audit"]
    decisions = [
        (r["action"], r["actor"], r["version"], r["outcome"])
        for r in audit
        if r["action"] != "register"
    ]
    assert decisions == [
        ("rollback", "carol", "1", "applied"),
        ("approve", "dave", v3, "refused"),
        ("reject", "dave", v3, "applied"),
        ("approve", "eve", v3, "refused"),
        ("approve", "bob", v2, "applied"),
        ("approve", "alice", "1", "applied"),
    ]
    assert all(r["request_id"] for r in audit if r["action"] != "register")
    assert all(r["at"] and r["model"] == "pl-cli" for r in audit)

    out = tmp_path / "pkg"
    _ok(cli("package", "1", "--out", str(out)))
    assert (out / "Dockerfile").is_file() and (out / "model_dir" / "MLmodel").is_file()
    assert "model_dir" in (out / "Dockerfile").read_text()
    meta = json.loads((out / "version.json").read_text())
    assert meta["version"] == "1" and meta["model_sha256"] == reg.version("1").tags["model_sha256"]
    assert cli("package", "1", "--out", str(out)).exit_code != 0  # not empty
    assert cli("package", "99", "--out", str(tmp_path / "pkg2")).exit_code != 0


def test_training_again_on_the_same_data_is_refused_as_no_new_data(
    mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    """`mlops train` twice on the same batches and configuration registers one version; the
    second says "no new data" and registers nothing. New data, or a changed configuration,
    trains again. The model is refit on its whole window: it learnt the hold-out too."""
    s = demo_settings(
        tmp_path, mlflow_server.url, "pl-same", gate=FAST_GATE, model={"search": {"trials": 1}}
    )
    frame = demo_frame(7000, days=98, seed=11)
    ingest_frame(s, frame.head(5000), tmp_path / "landing", "first.parquet")
    reg = Registry(s)
    first = train_and_register(s)
    info = reg.version(str(first.version))
    assert info.tags["data_fingerprint"] and info.tags["data_end"]
    assert int(info.tags["window_rows"]) >= int(info.tags["rows"])
    # refit: the packaged model has all the window's trees and learnt the hold-out rows
    run = reg.client.get_run(first.run_id)
    assert int(run.data.params["window_start_row"]) >= 0
    assert set(json.loads(run.data.params["window_choice"])) >= {"0"}

    with pytest.raises(
        NothingNewError,
        match=f"no new data: version {first.version} was trained on the same batches",
    ):
        train_and_register(s)
    runner = CliRunner()
    cfg = write_config(s, tmp_path / "mlops.yaml")
    res = runner.invoke(app, ["train", "--config", str(cfg)])
    assert res.exit_code != 0 and "no new data" in res.output
    assert [v.version for v in reg.versions()] == [first.version]

    changed = with_changes(s, model={"search": {"trials": 1}, "seed": 7})
    assert train_and_register(changed).version != first.version  # a new configuration
    ingest_frame(s, frame.tail(2000), tmp_path / "landing", "later.parquet")
    third = train_and_register(changed)  # new data
    assert len(reg.versions()) == 3 and third.version not in (first.version,)


def test_one_unrepresentable_batch_never_stops_training_and_can_be_withdrawn(
    mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    """A value of 1e308 is refused at ingestion now; a batch accepted with it anyway (here:
    the rule relaxed to a warning, as before the rule existed) is left out of training with the
    reason, and `mlops batches withdraw` takes it out for good, audited."""
    s = demo_settings(
        tmp_path, mlflow_server.url, "pl-huge", gate=FAST_GATE, model={"search": {"trials": 1}}
    )
    frame = demo_frame(6000, days=84, seed=3)
    week = frame["applied_at"].dt.to_period("W")
    huge_week = frame[week == week.max()].copy()  # one batch
    huge_week.loc[huge_week.index[7], "income"] = 1e308
    ingest_frame(s, frame[week != week.max()], tmp_path / "landing", "first.parquet")
    refused = ingest(s, [_parquet(huge_week, tmp_path / "huge.parquet")])
    assert {o.status for o in refused.outcomes} == {"quarantined"}
    assert any(
        f.rule == "unrepresentable_values" and "income" in f.message
        for o in refused.outcomes
        for f in o.findings
    )

    relaxed = with_changes(s, validation={"rules": {"unrepresentable_values": "warning"}})
    accepted = ingest(
        relaxed, [_parquet(huge_week.assign(age=huge_week["age"] + 1), tmp_path / "huge2.parquet")]
    )
    bad = [
        o.id
        for o in accepted.outcomes
        if o.status == "accepted" and any(f.rule == "unrepresentable_values" for f in o.findings)
    ]
    assert len(bad) == 1

    out = train_and_register(s)  # trains on the rest; the batch is named, not fatal

    assert out.version is not None
    lineage = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                tracking_uri=s.storage.mlflow_uri,
                run_id=out.run_id,
                artifact_path="lineage/lineage.json",
                dst_path=str(tmp_path / "lin"),
            )
        ).read_text()
    )
    assert [b["id"] for b in lineage["skipped_batches"]] == bad
    assert "income" in lineage["skipped_batches"][0]["reason"]
    assert bad[0] not in {b["id"] for b in lineage["batches"]}

    runner = CliRunner()
    cfg = str(write_config(s, tmp_path / "mlops.yaml"))
    res = runner.invoke(
        app,
        [
            "batches",
            "withdraw",
            bad[0][:10],
            "-c",
            cfg,
            "--by",
            "olga",
            "--comment",
            "income of 1e308 from a broken export",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "withdrawn" in res.output
    meta = MetadataStore(s.db_url)
    assert meta.get_batch(bad[0]).status == "withdrawn"
    assert bad[0] not in {r.id for r in meta.list_batches("accepted")}
    listed = json.loads(
        runner.invoke(app, ["batches", "-c", cfg, "--status", "withdrawn", "--json"]).stdout
    )
    assert [b["id"] for b in listed["batches"]] == bad
    [rec] = [r for r in Registry(s).audit(action="withdraw") if r.outcome == "applied"]
    assert (rec.actor, rec.evidence) == ("olga", f"batch:{bad[0]}")
    assert "broken export" in rec.reason
    # a second withdrawal is refused, and the refusal audited; so is a missing comment
    again = runner.invoke(
        app, ["batches", "withdraw", bad[0], "-c", cfg, "--by", "olga", "--comment", "again"]
    )
    assert again.exit_code == 1 and "is withdrawn, not accepted" in again.output
    assert [r.outcome for r in Registry(s).audit(action="withdraw")] == ["refused", "applied"]
    nocomment = runner.invoke(app, ["batches", "withdraw", bad[0], "-c", cfg, "--comment", " "])
    assert nocomment.exit_code == 1 and "comment is required" in nocomment.output


def _parquet(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def test_progress_is_told_each_step_and_each_trial(
    mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    """Issue 16: `mlops train` printed nothing for 20 s. The library tells a callback."""
    s = demo_settings(tmp_path, mlflow_server.url, "pl-progress", model={"search": {"trials": 3}})
    frame = demo_frame(9000, days=126, seed=8)
    ingest_frame(s, frame.head(6000), tmp_path / "landing")
    told: list[str] = []

    first = train_and_register(s, progress=told.append)

    steps = [t.split(" (")[0].split(":")[0] for t in told]
    expected = [
        "reading the training window",
        "checking the window",
        "looking for features that leak the target",
        "opening the registry",
        "choosing the training window",
        "searching hyper-parameters",
        "refitting on the whole window",
        "logging the run",
        "writing the evidence",
        "smoke test",
        "registering the version",
    ]
    assert list(dict.fromkeys(steps)) == expected, told
    trials = [t for t in told if ": trial " in t]
    assert [t.split(": ")[1].split(",")[0] for t in trials] == [
        "trial 1/3",
        "trial 2/3",
        "trial 3/3",
    ]
    assert all(" best roc_auc 0." in t for t in trials)
    Registry(s).approve(str(first.version), by="alice")
    ingest_frame(s, frame.tail(3000), tmp_path / "landing", "later.parquet")
    told.clear()
    train_and_register(s, progress=told.append)
    assert any(t.startswith(f"scoring the champion v{first.version} on the same ") for t in told)


def test_retrain_now_trains_in_process_and_is_not_queued(
    mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    """Issue 16: `mlops retrain --now` trains here, as the train deployment would on the
    request (trigger manual, requested_by for the four-eyes rule), shows its steps on stderr,
    and the request is not published for the services to train again."""
    from flows import events

    s = demo_settings(
        tmp_path,
        mlflow_server.url,
        "pl-now",
        gate=FAST_GATE,
        model={"search": {"trials": 2}},
        dashboard={"four_eyes": True},
    )
    ingest_frame(s, demo_frame(6000, days=84, seed=9), tmp_path / "landing")
    config = str(write_config(s, tmp_path / "mlops.yaml"))
    runner = CliRunner()
    args = ["retrain", "--by", "bo", "--reason", "cannot wait", "--now", "--config", config]

    res = _ok(runner.invoke(app, [*args, "--request-id", "now-1", "--json"]))

    doc = json.loads(res.stdout)  # nothing but the document on stdout
    assert set(doc) >= {"outcome", "request_id", "requested_by", "reason", "at", "audit_id"}
    assert (doc["outcome"], doc["queued"], doc["request_id"]) == ("applied", False, "now-1")
    trained = doc["training"]
    assert trained["status"] == "pending_approval" and trained["trigger"] == "manual"
    assert trained["requested_by"] == "bo"
    # progress went to stderr, one line a step (not a line a trial)
    said = res.stderr.splitlines()
    assert any("searching hyper-parameters (2 trials" in line for line in said), said
    assert not [line for line in said if ": trial " in line]
    reg = Registry(s)
    [rec] = reg.audit(action="request_retrain")
    assert (rec.actor, rec.outcome, rec.request_id) == ("bo", "recorded", "now-1")
    assert [p for p in events.publish_decisions(s) if p["action"] == "request_retrain"] == []
    # the four-eyes rule the request carries: bo may not approve what bo asked for
    v = trained["version"]
    refused = runner.invoke(
        app, ["approve", v, "--by", "bo", "--comment", "mine", "--config", config]
    )
    assert refused.exit_code == 1 and reg.champion() is None
    # the same request again trains nothing
    again = json.loads(_ok(runner.invoke(app, [*args, "--request-id", "now-1", "--json"])).stdout)
    assert again["outcome"] == "noop" and "training" not in again
    assert [x.version for x in reg.versions()] == [v]
