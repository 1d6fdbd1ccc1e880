"""The approval card (issue 16): the read model in :mod:`mlops_core.read.approval` (signed deltas
by direction, slices flagged beyond noise, confusion matrix, threshold table, per-class metrics,
MLflow run links), its figures in :mod:`dashboard.approval_charts`, and the Approvals and Models
pages through AppTest on a real project (a real MLflow server, a champion and a retrained
version awaiting approval)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from registry_helpers import demo_settings, with_changes, write_config
from streamlit.testing.v1 import AppTest

from dashboard import approval_charts as charts
from mlops_core.config import Settings
from mlops_core.data.ingest import ingest
from mlops_core.demo.stream import TIME, generate_stream
from mlops_core.ops.services import ServiceInfo
from mlops_core.read import approval
from mlops_core.registry.registry import Registry
from mlops_core.store import MetadataStore
from mlops_core.train.pipeline import train_and_register

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
WEEK = pd.Timedelta(weeks=1)


# the read model, pure ------------------------------------------------------------------------
def test_a_delta_is_better_or_worse_by_the_metric_direction() -> None:
    d = approval.metric_deltas(
        {"roc_auc": 0.761, "calibration_error": 0.05, "log_loss": 0.40, "rmse": 1.0},
        {"roc_auc": 0.758, "calibration_error": 0.03, "log_loss": 0.45, "rmse": 1.0},
    )
    assert list(d.columns) == ["champion", "challenger", "delta", "verdict"]
    assert d.loc["roc_auc", "delta"] == pytest.approx(0.003)
    assert d.loc["roc_auc", "verdict"] == "better"
    # a calibration error that rises is worse, a log loss that falls is better
    assert d.loc["calibration_error", "delta"] == pytest.approx(0.02)
    assert d.loc["calibration_error", "verdict"] == "worse"
    assert d.loc["log_loss", "verdict"] == "better"
    assert d.loc["rmse", "verdict"] == "same"


def test_a_metric_the_champion_lacks_has_no_verdict() -> None:
    d = approval.metric_deltas({"roc_auc": 0.8, "made_up": 1.0}, {})
    assert np.isnan(d.loc["roc_auc", "champion"]) and d.loc["roc_auc", "verdict"] == ""
    assert approval.verdict("made_up", 0.5) == ""


def _slices(metric_rows: list[tuple[str, int, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"column": "region", "value": v, "rows": n, "champion": a, "challenger": b}
            for v, n, a, b in metric_rows
        ]
    )


def test_a_clear_regression_is_flagged_and_a_tiny_slices_noise_is_not() -> None:
    out = approval.slice_deltas(
        _slices(
            [
                ("north", 4000, 0.80, 0.70),  # clear: 0.10 on 4,000 rows
                ("tiny", 20, 0.80, 0.60),  # larger drop, but 20 rows: noise
                ("east", 4000, 0.80, 0.795),  # within noise on 4,000 rows
                ("south", 4000, 0.70, 0.80),  # better
                ("west", 300, 0.80, None),  # the champion has no value
            ]
        ),
        "roc_auc",
    )
    flagged = dict(zip(out["value"], out["regressed"], strict=True))
    assert flagged == {"north": True, "tiny": False, "east": False, "south": False, "west": False}
    assert out["value"].iloc[0] == "north"  # the regressed first
    north = out.set_index("value").loc["north"]
    assert north["delta"] == pytest.approx(-0.10) and north["noise"] < 0.05
    assert out.set_index("value").loc["tiny", "noise"] > 0.2


def test_a_lower_is_better_slice_metric_is_flagged_when_it_rises() -> None:
    out = approval.slice_deltas(
        _slices([("north", 5000, 1.00, 1.30), ("south", 5000, 1.30, 1.00)]), "rmse"
    ).set_index("value")
    assert out.loc["north", "regressed"] and not out.loc["south", "regressed"]


def test_slice_noise_shrinks_with_rows_and_never_vanishes() -> None:
    noise = [approval.slice_noise("accuracy", 0.9, 0.9, n) for n in (10, 100, 1000, 100_000)]
    assert noise == sorted(noise, reverse=True)
    assert approval.slice_noise("accuracy", 1.0, 1.0, 50) > 0.01  # both perfect: still noise
    assert approval.slice_noise("accuracy", 0.5, 0.5, 10**9) == approval.MIN_DROP


def test_the_confusion_matrix_counts() -> None:
    cm = approval.confusion(["0", "0", "1", "1", "1"], ["0", "1", "1", "1", "0"], ["0", "1"])
    assert list(cm.index) == ["actual 0", "actual 1"]
    assert list(cm.columns) == ["predicted 0", "predicted 1"]
    assert cm.to_numpy().tolist() == [[1, 1], [1, 2]]
    # a class never predicted is a column of zeros
    cm = approval.confusion(["a", "b"], ["a", "a"], ["a", "b"])
    assert cm.to_numpy().tolist() == [[1, 0], [1, 0]]


def test_the_threshold_table_is_monotonic_in_positive_rate() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.3
    p = np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1)
    t = approval.threshold_table(y, p)
    assert list(t.columns) == ["threshold", "precision", "recall", "f1", "positive_rate"]
    assert t["threshold"].is_monotonic_increasing
    assert (t["positive_rate"].diff().dropna() <= 0).all()
    assert (t["recall"].diff().dropna() <= 0).all()
    row = t.set_index("threshold").loc[0.5]
    pred = p >= 0.5
    assert row["positive_rate"] == pytest.approx(pred.mean())
    assert row["precision"] == pytest.approx((pred & y).sum() / pred.sum())
    # nothing predicted positive: no precision, no recall lost to it
    t = approval.threshold_table([True, False], [0.1, 0.2], [0.5])
    assert np.isnan(t["precision"].iloc[0]) and t["positive_rate"].iloc[0] == 0


def test_per_class_metrics_of_a_multiclass_model() -> None:
    preds = pd.DataFrame(
        {
            "prediction": ["a", "b", "c", "c"],
            "proba_a": [0.8, 0.1, 0.1, 0.2],
            "proba_b": [0.1, 0.8, 0.1, 0.2],
            "proba_c": [0.1, 0.1, 0.8, 0.6],
        }
    )
    t = approval.per_class(["a", "b", "c", "b"], preds, ["a", "b", "c"])
    assert list(t.index) == ["a", "b", "c"]
    assert (
        t.loc["a", "f1"] == 1.0 and t.loc["b", "recall"] == 0.5 and t.loc["c", "precision"] == 0.5
    )
    assert list(t["rows"]) == [1, 2, 1]
    assert t.loc["a", "roc_auc"] == 1.0


def test_run_links_only_for_an_http_server_without_its_password() -> None:
    url = approval.run_url("https://bo:s3cret@mlflow.corp.io/", "7", "abc")
    assert url == "https://bo:***@mlflow.corp.io/#/experiments/7/runs/abc"
    assert approval.run_url("http://127.0.0.1:5000", "1", "r") == (
        "http://127.0.0.1:5000/#/experiments/1/runs/r"
    )
    assert approval.run_url("file:///tmp/mlruns", "1", "r") is None
    assert approval.run_url("sqlite:///x.db", "1", "r") is None
    assert approval.run_url("http://m:5000", "1", None) is None


# the figures ---------------------------------------------------------------------------------
def test_close_values_are_drawn_on_a_zoomed_axis() -> None:
    lo, hi = charts.zoomed_range([0.758, 0.761]) or [0, 0]
    assert 0.7 < lo < 0.758 and 0.761 < hi < 0.8
    fig = charts.metric_bars({"champion v1": 0.758, "challenger v2": 0.761}, "roc_auc")
    assert fig.layout.yaxis.range[0] > 0.7
    assert charts.zoomed_range([None, float("nan")]) is None
    lo, hi = charts.zoomed_range([0.5, 0.5]) or [0, 0]  # equal values: still a visible span
    assert lo < 0.5 < hi


def test_signed_deltas_against_a_baseline_version() -> None:
    metrics = pd.DataFrame(
        {"roc_auc": [0.75, 0.78], "calibration_error": [0.02, 0.04]},
        index=pd.Index(["1", "2"], name="version"),
    )
    d = charts.signed_deltas(metrics, "1")
    assert d.loc["2", ("delta", "roc_auc")] == pytest.approx(0.03)
    assert d.loc["2", ("verdict", "roc_auc")] == "better"
    assert d.loc["2", ("verdict", "calibration_error")] == "worse"
    html = charts.style_signed_deltas(d).to_html()
    assert "+0.0300" in html and charts.BETTER in html and charts.WORSE in html


def test_the_styled_tables_colour_by_direction_and_flag_regressions() -> None:
    d = approval.metric_deltas(
        {"roc_auc": 0.761, "log_loss": 0.5}, {"roc_auc": 0.758, "log_loss": 0.4}
    )
    html = charts.style_deltas(d).to_html()
    assert "+0.0030" in html and "▲ better" in html and "▼ worse" in html
    assert charts.BETTER in html and charts.WORSE in html
    sl = approval.slice_deltas(_slices([("north", 4000, 0.8, 0.7)]), "roc_auc")
    assert "⚠ regressed" in charts.style_slices(sl, True).to_html()


# on a real project ---------------------------------------------------------------------------
@dataclass
class Project:
    settings: Settings
    config: Path
    champion: str
    pending: str


def _weeks(frame: pd.DataFrame, first: int, stop: int) -> pd.DataFrame:
    t0 = frame[TIME].min().normalize()
    return frame[(frame[TIME] >= t0 + first * WEEK) & (frame[TIME] < t0 + stop * WEEK)]


def _ingest(settings: Settings, frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    assert {o.status for o in ingest(settings, [path]).outcomes} == {"accepted"}


@pytest.fixture(scope="module")
def project(mlflow_server: ServiceInfo, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A champion trained on weeks 0-5 and a version retrained on weeks 0-9 awaiting approval
    (its gate against the champion passed by a lenient gate), sliced by region."""
    root = tmp_path_factory.mktemp("approval")
    frame = generate_stream(10_000, days=70, seed=5, label_delay_days=0).frame
    s = demo_settings(
        root,
        mlflow_server.url,
        "approval-card",
        gate={"smoke_test": False, "slice_columns": ["region"]},
    )
    _ingest(s, _weeks(frame, 0, 5), root / "in" / "old.parquet")
    first = train_and_register(s)
    reg = Registry(s)
    assert reg.approve(str(first.version), by="tests", comment="the first model").ok
    _ingest(s, _weeks(frame, 5, 10), root / "in" / "new.parquet")
    lenient = with_changes(s, gate={"min_improvement": -1.0, "max_slice_regression": None})
    out = train_and_register(lenient)
    assert out.status == "pending_approval", out.gate.reasons
    config = write_config(s, root / "mlops.yaml")
    return Project(s, config, str(first.version), str(out.version))


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

    def make(config: Path, page: str) -> AppTest:
        monkeypatch.setenv("MLOPS_CONFIG", str(config))
        st.cache_data.clear()
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.session_state["display_name"] = "ana"
        at.run()
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, at.exception
        return at

    yield make
    st.cache_data.clear()


def _table(at: AppTest, *columns: str) -> pd.DataFrame:
    for d in at.dataframe:
        if set(columns) <= set(d.value.columns):
            return d.value
    raise AssertionError(
        f"no table with {columns}: {[list(d.value.columns) for d in at.dataframe]}"
    )


def _charts(at: AppTest) -> dict[str, Any]:
    import plotly.io as pio

    return {c.key: pio.from_json(c.proto.spec) for c in at.get("plotly_chart")}


@pytest.mark.slow
def test_the_card_of_a_real_pending_version(project: Project) -> None:
    s = project.settings
    reg = Registry(s)
    info = reg.version(project.pending)
    card = approval.approval_card(s, reg, MetadataStore(s.db_url), info, project.champion)
    assert card.gate_champion == project.champion and card.champion == project.champion
    assert card.holdout.loc["roc_auc", ["champion", "challenger"]].notna().all()
    assert set(card.holdout["verdict"]) <= {"better", "worse", "same", ""}
    assert set(card.holdout_slices["column"]) == {"region"}
    # the links go to the MLflow UI of both training runs
    assert set(card.links) == {project.champion, project.pending}
    for v, url in card.links.items():
        assert url.startswith(reg.uri) and url.endswith(f"/runs/{reg.version(v).run_id}")
    rc = card.recent
    assert rc is not None and not rc.errors
    assert set(rc.confusion) == {project.champion, project.pending}
    for cm in rc.confusion.values():
        assert int(cm.to_numpy().sum()) == rc.rows
    assert set(rc.thresholds) == set(rc.confusion) and rc.positive is not None
    assert rc.metrics[["champion", "challenger"]].notna().all().all()
    assert set(rc.slices["column"]) == {"region"}
    # the retrained version learnt from these rows: the card says its numbers are optimistic
    assert rc.trained_on[project.pending] > 0


@pytest.mark.slow
def test_the_approval_card_shows_deltas_confusion_thresholds_and_run_links(
    project: Project, app: Any
) -> None:
    at = app(project.config, "approvals")
    v, champ = project.pending, project.champion
    gate = _table(at, "champion", "challenger", "delta", "verdict")
    assert "roc_auc" in gate.index and gate["verdict"].str.contains("better|worse|same").any()
    assert at.toggle(key=f"show_recent_{v}").value  # the newest candidate is open
    got = _charts(at)
    assert {f"approval_confusion_{v}_{champ}", f"approval_confusion_{v}_{v}"} <= set(got)
    # the metric's bars are zoomed to the values, not drawn from 0
    bar = got[f"approval_metric_bar_{v}"]
    assert bar.layout.yaxis.range[0] > 0.3
    text = "\n".join(m.value for m in at.markdown)
    reg = Registry(project.settings)
    for x in (v, champ):
        assert f"/#/experiments/{reg.experiment_id()}/runs/{reg.version(x).run_id}" in text
    # the threshold view follows the slider
    at.slider(key=f"approval_threshold_{v}").set_value(0.3).run()
    assert not at.exception, at.exception
    fig = _charts(at)[f"approval_thresholds_{v}"]
    assert any(getattr(s, "x0", None) == 0.3 for s in fig.layout.shapes)
    assert any("optimistic" in c.value for c in at.caption)
    table = _table(at, f"champion v{champ}", f"challenger v{v}")
    assert set(table.index) >= {"precision", "recall", "f1", "positive_rate"}


@pytest.mark.slow
def test_a_regressed_slice_is_flagged_on_the_card(
    project: Project, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = approval.slice_deltas

    def one_regressed(slices: pd.DataFrame, metric: str) -> pd.DataFrame:
        out = real(slices, metric)
        if len(out):
            out.loc[0, "regressed"] = True
        return out

    monkeypatch.setattr(approval, "slice_deltas", one_regressed)
    at = app(project.config, "approvals")
    warnings = [w.value for w in at.warning]
    assert any("regressed beyond noise" in w for w in warnings), warnings
    flagged = _table(at, "column", "value", "delta", "noise", "regressed")
    assert "⚠ regressed" in set(flagged["regressed"])
    assert any("⚠" in e.label for e in at.expander)


@pytest.mark.slow
def test_models_compare_preselects_champion_and_candidate_with_signed_deltas(
    project: Project, app: Any
) -> None:
    at = app(project.config, "models")
    assert at.multiselect(key="compare_versions").value == [project.champion, project.pending]
    change = f"v{project.pending} − v{project.champion}"  # signed, against the champion
    [deltas] = [d.value for d in at.dataframe if change in map(str, d.value.index)]
    assert {"roc_auc", "calibration_error"} <= set(deltas.columns)
    bar = _charts(at)["compare_metric_bar"]
    assert bar.layout.yaxis.range[0] > 0.3
