"""The serving API against a real MLflow registry: the endpoint contract, the prediction log and
feedback, verified loads, and hot swaps under load on loopback (a real uvicorn server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from registry_helpers import (
    add_version,
    client_records,
    demo_frame,
    demo_settings,
    ingest_frame,
    model_folder,
    with_changes,
)

from mlops_core.config import Settings
from mlops_core.demo.stream import ID, TARGET, TIME
from mlops_core.ops.services import ServiceInfo, free_port
from mlops_core.registry.registry import Registry
from mlops_core.serve.app import check_records, create_app
from mlops_core.serve.prediction_log import read_log
from mlops_core.train.fit import NothingNewError
from mlops_core.train.pipeline import train_and_register

FAST_GATE = {"smoke_test": False}


@pytest.fixture(scope="module")
def project(mlflow_server: ServiceInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project with v1 champion and v2 (the same package, another version) approvable."""
    tmp = tmp_path_factory.mktemp("serving")
    s = demo_settings(
        tmp,
        mlflow_server.url,
        "serving",
        gate=FAST_GATE,
        serving={"max_rows": 500, "max_body_mb": 1, "poll_seconds": 0.5},
    )
    frame = demo_frame(5000, days=70, seed=4)
    ingest_frame(s, frame, tmp / "landing")
    out = train_and_register(s)
    reg = Registry(s)
    assert reg.approve(str(out.version), by="ann", comment="first").outcome == "applied"
    v2 = add_version(reg, reg, str(out.version))
    return {
        "settings": s,
        "v1": str(out.version),
        "v2": v2,
        "rows": client_records(frame.head(50)),
        "frame": frame,
    }


@pytest.fixture
def client(project: dict[str, Any], tmp_path: Path) -> Iterator[TestClient]:
    """The app on its own workspace (its own prediction log), serving the champion."""
    s = with_changes(
        project["settings"],
        storage={
            **project["settings"].storage.model_dump(mode="json"),
            "workspace": str(tmp_path / "ws"),
        },
    )
    app = create_app(s, registry_factory=lambda: Registry(project["settings"]), background=False)
    with TestClient(app) as c:
        assert app.state.mlops.slot.refresh()["version"] == project["v1"]
        yield c


def test_predicts_one_record_or_a_list_and_names_the_version(
    client: TestClient, project: dict[str, Any]
) -> None:
    one = client.post("/predict", json=project["rows"][0])
    many = client.post("/predict", json=project["rows"][:20], headers={"X-Request-ID": "batch-7"})

    assert one.status_code == 200 and many.status_code == 200, (one.text, many.text)
    body = many.json()
    assert one.json()["version"] == body["version"] == project["v1"]
    assert one.headers["X-Model-Version"] == project["v1"]
    assert body["request_id"] == "batch-7"
    assert len(body["predictions"]) == 20
    # the id column names each row (for feedback); the predictions are the package's
    assert [p["id"] for p in body["predictions"]] == [str(r[ID]) for r in project["rows"][:20]]
    expected = Registry(project["settings"]).predict(
        project["v1"], project["frame"].head(20).drop(columns=[TARGET])
    )
    assert [str(p["prediction"]) for p in body["predictions"]] == expected["prediction"].astype(
        str
    ).tolist()
    for p in body["predictions"]:
        assert set(p["probabilities"]) == {"0", "1"}
        assert sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_bad_requests_are_422s_naming_every_bad_field(
    client: TestClient, project: dict[str, Any]
) -> None:
    good = project["rows"][0]
    numeric = project["settings"].data.features.numeric[0]
    category = project["settings"].data.features.categorical[0]
    wrong = [dict(good, **{numeric: "lots"}), dict(good, **{category: [1, 2]})]
    missing = {k: v for k, v in good.items() if k != numeric}
    extra = dict(good, colour="blue")

    malformed = client.post(
        "/predict", content=b'{"age": 3,', headers={"content-type": "application/json"}
    )
    types = client.post("/predict", json=wrong)
    gaps = client.post("/predict", json=[missing, extra])
    nan = client.post(
        "/predict", content=json.dumps(good).replace(str(good[numeric]), "NaN", 1).encode()
    )
    not_records = client.post("/predict", json=[1, "a"])
    empty = client.post("/predict", json=[])

    for r in (malformed, types, gaps, nan, not_records, empty):
        assert r.status_code == 422, r.text
    assert "not valid JSON" in malformed.json()["detail"]
    errs = types.json()["errors"]
    assert {(e["row"], e["field"]) for e in errs} == {(0, numeric), (1, category)}
    assert "expected a number, got 'lots'" in errs[0]["error"] + errs[1]["error"]
    gap_errs = {(e["row"], e["field"]): e["error"] for e in gaps.json()["errors"]}
    assert gap_errs == {
        (0, numeric): "missing (send null for an unknown value)",
        (1, "colour"): "not a field of this model",
    }
    assert "not valid JSON" in nan.json()["detail"]
    assert len(not_records.json()["errors"]) == 2
    # null is a missing value, which the model handles
    assert client.post("/predict", json=dict(good, **{numeric: None})).status_code == 200


def test_oversized_requests_are_refused_with_413(
    client: TestClient, project: dict[str, Any]
) -> None:
    too_many = client.post("/predict", json=project["rows"][:1] * 501)
    too_big = client.post(
        "/predict",
        content=b"[" + b" " * (1024 * 1024 + 10) + b"]",
        headers={"content-type": "application/json"},
    )

    assert too_many.status_code == 413 and "at most 500" in too_many.json()["detail"]
    assert too_big.status_code == 413 and "over 1 MB" in too_big.json()["detail"]


def test_nothing_to_serve_is_a_503_and_health_says_not_ready(
    project: dict[str, Any], tmp_path: Path
) -> None:
    class NoChampion:
        def aliases(self) -> dict[str, str]:
            return {}

    s = with_changes(
        project["settings"],
        storage={**project["settings"].storage.model_dump(mode="json"), "workspace": str(tmp_path)},
    )
    with TestClient(create_app(s, registry_factory=NoChampion, background=False)) as c:
        c.app.state.mlops.slot.refresh()  # type: ignore[attr-defined]
        health = c.get("/health").json()
        r = c.post("/predict", json=project["rows"][0])

    assert health == {"status": "waiting for a champion", "ready": False, "version": None}
    assert r.status_code == 503 and "no champion" in r.json()["detail"]


def test_feedback_joins_the_prediction_log(project: dict[str, Any], tmp_path: Path) -> None:
    s = with_changes(
        project["settings"],
        storage={**project["settings"].storage.model_dump(mode="json"), "workspace": str(tmp_path)},
    )
    app = create_app(s, registry_factory=lambda: Registry(project["settings"]), background=False)
    rows = project["rows"][:10]
    labels = project["frame"][TARGET].head(10).tolist()
    with TestClient(app) as c:
        app.state.mlops.slot.refresh()
        served = c.post("/predict", json=rows).json()["predictions"]
        ok = c.post(
            "/feedback",
            json=[
                {"id": p["id"], "label": int(y)} for p, y in zip(served[:6], labels, strict=False)
            ],
        )
        bad = c.post(
            "/feedback",
            json=[
                {"id": served[0]["id"], "label": "maybe"},
                {"label": 1},
                {"id": "x", "label": 1, "extra": 2},
            ],
        )
        metrics = c.get("/metrics").text
    # the app closed: the log writer wrote what waited

    logged = read_log(tmp_path)

    assert ok.status_code == 202 and ok.json() == {"accepted": 6}
    assert bad.status_code == 422
    assert {(e["row"], e["field"]) for e in bad.json()["errors"]} == {
        (0, "label"),
        (1, "id"),
        (2, "extra"),
    }
    assert len(logged) == 10
    assert logged["served_version"].unique().tolist() == [project["v1"]]
    assert logged["served_row_id"].tolist() == [p["id"] for p in served]
    assert logged["label"].notna().sum() == 6
    assert logged["label"].head(6).tolist() == [str(int(y)) for y in labels[:6]]
    assert logged[TIME].notna().all()  # the time column is kept with the features
    assert "mlops_feedback_labels_total 6.0" in metrics
    assert "mlops_prediction_log_dropped_rows_total 0.0" in metrics


def test_model_and_metrics_describe_what_serves(
    client: TestClient, project: dict[str, Any]
) -> None:
    client.post("/predict", json=project["rows"][:3])
    client.post("/predict", json={"bad": 1})

    info = client.get("/model").json()
    metrics = client.get("/metrics").text

    assert info["version"] == project["v1"] and len(info["package_sha256"]) == 64
    assert {f["name"] for f in info["features"]} == set(project["settings"].data.features.all())
    assert info["last_error"] is None
    assert (
        f'mlops_model_info{{package_sha256="{info["package_sha256"]}",version="'
        f'{project["v1"]}"}} 1.0' in metrics
    )
    assert 'mlops_requests_total{endpoint="/predict",status="200"} 1.0' in metrics
    assert 'mlops_requests_total{endpoint="/predict",status="422"} 1.0' in metrics
    assert f'mlops_predicted_rows_total{{version="{project["v1"]}"}} 3.0' in metrics
    assert "mlops_request_seconds_bucket" in metrics


def test_a_tampered_version_is_not_served_and_the_old_one_keeps_serving(
    project: dict[str, Any], mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    s = demo_settings(tmp_path, mlflow_server.url, "serving-tampered", gate=FAST_GATE)
    reg = Registry(s)
    src = Registry(project["settings"])
    good = add_version(reg, src, project["v1"])
    assert reg.approve(good, by="ann", comment="ok").outcome == "applied"
    # a version whose package is a copy elsewhere, then changed after its approval
    app = create_app(s, registry_factory=lambda: Registry(s), background=False)
    with TestClient(app) as c:
        slot = app.state.mlops.slot
        assert slot.refresh()["version"] == good
        bad = add_version(reg, src, project["v1"])
        assert reg.approve(bad, by="ann", comment="fine at approval").outcome == "applied"
        spec = model_folder(reg, bad) / "artifacts" / "spec.json"
        original = spec.read_bytes()
        try:
            spec.write_bytes(original + b"\n")

            res = slot.refresh()
            info = c.get("/model").json()
            served = c.post("/predict", json=project["rows"][:2])
            metrics = c.get("/metrics").text
        finally:
            spec.write_bytes(original)  # the package is shared with the module's versions

    assert res["swapped"] is False and "sha256 no longer matches" in res["error"]
    assert info["version"] == good and f"version {bad} not served" in info["last_error"]["error"]
    assert served.status_code == 200 and served.json()["version"] == good
    assert "mlops_model_load_failures_total 1.0" in metrics


def test_check_records_converts_values_as_the_model_takes_them(
    client: TestClient, project: dict[str, Any]
) -> None:
    model = client.app.state.mlops.slot.current  # type: ignore[attr-defined]
    [boolean] = project["settings"].data.features.boolean  # the demo has one
    rec = dict(project["rows"][0], **{boolean: "yes"})
    checked = check_records([rec], model, id_column=ID, time_column=TIME, request_id="r")
    assert not checked.errors
    assert checked.frame[boolean].tolist() == [True]
    assert checked.row_ids == [str(rec[ID])]


# hot swaps on loopback -------------------------------------------------------------------
class _Server:
    """The app under a real uvicorn server in a thread."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        import uvicorn

        self.port = free_port()
        self.app = create_app(settings, registry_factory=lambda: registry)
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).json()["ready"]:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("serving did not become ready")

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.mark.slow
def test_hot_swap_under_load_loses_no_request(
    project: dict[str, Any], mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    s = demo_settings(
        tmp_path, mlflow_server.url, "serving-swap", gate=FAST_GATE, serving={"poll_seconds": 30}
    )  # the swaps come from /reload here
    reg = Registry(s)
    src = Registry(project["settings"])
    old = add_version(reg, src, project["v1"])
    assert reg.approve(old, by="ann", comment="old").outcome == "applied"
    new = add_version(reg, src, project["v1"])
    rows = project["rows"][:25]
    seen: list[tuple[int, str | None, str | None]] = []
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set() and len(seen) < 20_000:
                r = c.post("/predict", json=rows)
                body = r.json() if r.status_code == 200 else {}
                seen.append((r.status_code, r.headers.get("X-Model-Version"), body.get("version")))

    def until(version: str, url: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if seen and seen[-1][2] == version:
                return
            time.sleep(0.05)
        raise AssertionError(f"v{version} never answered")

    with _Server(s, reg) as url:
        clients = [threading.Thread(target=load, args=(url,)) for _ in range(2)]
        for t in clients:
            t.start()
        time.sleep(1)
        assert reg.approve(new, by="ann", comment="new").outcome == "applied"
        assert httpx.post(url + "/reload", timeout=60).json()["swapped"] is True
        until(new, url)
        time.sleep(0.5)
        assert reg.rollback(by="ann", comment="back").outcome == "applied"
        assert httpx.post(url + "/reload", timeout=60).json()["swapped"] is True
        until(old, url)
        time.sleep(0.5)
        stop.set()
        for t in clients:
            t.join(30)

    assert len(seen) > 20
    assert [s for s in seen if s[0] != 200] == []
    assert all(header == body for _, header, body in seen)
    order = [v for i, (_, _, v) in enumerate(seen) if i == 0 or seen[i - 1][2] != v]
    # two clients: at a swap their answers may interleave once, never a third version
    assert order[0] == old and order[-1] == old and new in order
    assert set(order) == {old, new}


@pytest.mark.slow
def test_serving_follows_the_alias_by_polling(
    project: dict[str, Any], mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    s = demo_settings(
        tmp_path, mlflow_server.url, "serving-poll", gate=FAST_GATE, serving={"poll_seconds": 0.5}
    )
    reg = Registry(s)
    src = Registry(project["settings"])
    old = add_version(reg, src, project["v1"])
    assert reg.approve(old, by="ann", comment="old").outcome == "applied"
    new = add_version(reg, src, project["v1"])

    with _Server(s, reg) as url:
        assert httpx.get(url + "/health").json()["version"] == old
        assert reg.approve(new, by="ann", comment="new").outcome == "applied"
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health").json()["version"] != new:
            assert time.monotonic() < deadline, "serving did not follow the alias"
            time.sleep(0.2)
        answer = httpx.post(url + "/predict", json=project["rows"][:2]).json()

    assert answer["version"] == new


# the online model in shadow ----------------------------------------------------------------
@pytest.mark.slow
def test_the_online_model_learns_served_labels_and_runs_in_shadow(
    mlflow_server: ServiceInfo, tmp_path: Path
) -> None:
    # any snapshot passes the gate here: the shadow is what is exercised
    s = demo_settings(
        tmp_path,
        mlflow_server.url,
        "serving-online",
        gate=FAST_GATE | {"min_improvement": -1.0, "max_slice_regression": None},
        online={"enabled": True, "min_rows": 50},
    )
    frame = demo_frame(8000, days=112, seed=5)
    t0 = frame[TIME].min()
    early = frame[frame[TIME] < t0 + pd.Timedelta(weeks=10)]
    later = frame[frame[TIME] >= t0 + pd.Timedelta(weeks=10)]
    ingest_frame(s, early, tmp_path / "landing")
    reg = Registry(s)
    first = train_and_register(s)
    assert reg.approve(str(first.version), by="ann", comment="first").outcome == "applied"
    with pytest.raises(NothingNewError, match="no new labels to learn"):
        train_and_register(s, trigger="online", online=True)
    app = create_app(s, registry_factory=lambda: Registry(s), background=False)
    served = later.head(400)
    with TestClient(app) as c:
        slot = app.state.mlops.slot
        slot.refresh()
        answers = c.post("/predict", json=client_records(served)).json()["predictions"]
        c.post(
            "/feedback",
            json=[
                {"id": p["id"], "label": int(y)}
                for p, y in zip(answers, served[TARGET], strict=True)
            ],
        )
        assert app.state.mlops.writer.flush()  # written now: the update reads the log

        # labels from the log, then a labelled batch newer than the champion's data
        ingest_frame(s, later.iloc[400:2400], tmp_path / "landing2")
        snap = train_and_register(s, trigger="online", online=True)
        info = reg.version(str(snap.version))
        assert info.tags["model_type"] == "online"
        assert info.tags["online_base"] == str(first.version)
        assert snap.best_params["rows_learnt"] >= 400 + 1000
        assert "online_log_until" in info.tags
        assert snap.status == "pending_approval", snap.gate.reasons

        slot.refresh()
        assert slot.shadow is not None and slot.shadow.version == str(snap.version)
        model = c.get("/model").json()
        answer = c.post("/predict", json=client_records(later.tail(5)))
    logged = read_log(s.workspace)

    assert model["version"] == str(first.version)
    assert model["shadow"]["version"] == str(snap.version)
    assert answer.json()["version"] == str(first.version)  # only the champion answers
    shadowed = logged[logged["shadow_version"].notna()]
    assert len(shadowed) == 5 and set(shadowed["shadow_version"]) == {str(snap.version)}
    assert shadowed["shadow_proba_1"].between(0, 1).all()
    # the next update continues the snapshot, and has nothing new to learn
    with pytest.raises(NothingNewError):
        train_and_register(s, trigger="online", online=True)


def test_monitoring_measures_what_was_served(project: dict[str, Any]) -> None:
    from mlops_core.monitor.run import monitor

    s = with_changes(project["settings"], monitoring={"source": "predictions", "min_rows": 50})
    rows = project["frame"].tail(300)
    app = create_app(s, registry_factory=lambda: Registry(s), background=False)
    with TestClient(app) as c:
        app.state.mlops.slot.refresh()
        answers = c.post("/predict", json=client_records(rows)).json()["predictions"]
        c.post(
            "/feedback",
            json=[
                {"id": p["id"], "label": int(y)} for p, y in zip(answers, rows[TARGET], strict=True)
            ],
        )

    first = monitor(s)
    quiet = monitor(s)  # nothing served since: the newest served rows again, not an error

    assert first.served_rows == 300 and first.batch_ids == []
    assert first.labelled_rows == 300 and first.performance is not None
    assert first.performance["accuracy"] > 0.5
    assert quiet.served_rows == 300 and quiet.decision is not None


def test_a_failure_of_ours_is_a_json_500_and_counted(
    client: TestClient, project: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = client.app.state.mlops.slot.current  # type: ignore[attr-defined]

    def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("the booster fell over")

    monkeypatch.setattr(model, "answers", broken)
    c = TestClient(client.app, raise_server_exceptions=False)
    r = c.post("/predict", json=project["rows"][0])
    metrics = c.get("/metrics").text

    assert r.status_code == 500
    assert r.json() == {
        "detail": "internal error: RuntimeError: the booster fell over",
        "version": project["v1"],
    }
    assert 'mlops_requests_total{endpoint="/predict",status="500"} 1.0' in metrics
