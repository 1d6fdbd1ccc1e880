"""The backtester: on a seeded SEA stream with one abrupt concept change, retraining beats never
retraining; retrain counts match the triggers (static never, periodic:P every P batches,
every-batch on each batch that brought labels); no strategy sees a label before its delay has
passed, nor trains on rows past the newest labelled batch; runs are reproducible; the JSON and
HTML outputs; clear errors for bad options; detection delays against the true drift points; the
default policy retrains rarely and starts its window at the change it located; row-id columns
are left out of the features; the `mlops backtest` command; and the online learner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlops_cli.app import app
from mlops_core.backtest.engine import (
    STRATEGIES,
    BacktestError,
    BacktestResult,
    Fitted,
    History,
    Retrain,
    Step,
    Strategy,
    detection_metrics,
    figures,
    load_history,
    make_strategy,
    read_json,
    run_backtest,
    write_html,
    write_json,
)
from mlops_core.config import Settings
from mlops_core.demo.stream import synthetic_stream

ROWS, BATCH, INITIAL, SEED = 12_000, 1000, 3, 7
N_BATCHES = ROWS // BATCH
SCORED = N_BATCHES - INITIAL
CHANGE_ROW = ROWS // 2  # synthetic_stream puts one change in the middle
CHANGE_BATCH = CHANGE_ROW // BATCH
LONG_ROWS = 24_000
LONG_CHANGE_ROW, LONG_SCORED = LONG_ROWS // 2, LONG_ROWS // BATCH - INITIAL


def write_stream(path: Path, rows: int = ROWS, seed: int = SEED, sidecar: bool = True) -> Path:
    df, points = synthetic_stream("sea", rows, changes=1, seed=seed)
    df.to_parquet(path)
    if sidecar:
        path.with_name(path.stem + ".drift.json").write_text(
            json.dumps({"drift_points": [{"row": p} for p in points]}), encoding="utf-8"
        )
    return path


@pytest.fixture(scope="module")
def sea(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12,000 rows of SEA (concept 0, then 3 from row 6,000 on) with its drift sidecar."""
    return write_stream(tmp_path_factory.mktemp("backtest") / "sea.parquet")


def replay_of(path: Path, **kw: Any) -> History:
    return load_history(
        path, target="y", **({"batch_size": BATCH, "initial_batches": INITIAL} | kw)
    )


@pytest.fixture(scope="module")
def windowed(sea: Path) -> BacktestResult:
    """Static and periodic strategies training on the newest 2,000 rows."""
    return run_backtest(replay_of(sea, window="2000"), ["static", "every-batch", "periodic:3"])


@pytest.fixture(scope="module")
def sea_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24,000 rows, the change at row 12,000: 21 scored batches, so shares are not too coarse."""
    return write_stream(
        tmp_path_factory.mktemp("backtest-long") / "sea_long.parquet", rows=LONG_ROWS
    )


@pytest.fixture(scope="module")
def policy_run(sea_long: Path) -> tuple[History, BacktestResult]:
    """The default policy (``Settings().retraining``) against static and every-batch, all
    labelled rows."""
    replay = replay_of(sea_long)
    return replay, run_backtest(replay, ["static", "every-batch", "policy"])


def by_name(result: BacktestResult) -> dict[str, Any]:
    return {s.name: s for s in result.strategies}


def mean_accuracy(per_batch: list[dict[str, Any]], since: int = 0) -> float:
    return float(np.mean([b["accuracy"] for b in per_batch if b["batch"] >= since]))


# 1. retraining pays after an abrupt change -------------------------------------------------------
def test_every_batch_beats_static_after_an_abrupt_change(windowed: BacktestResult) -> None:
    s = by_name(windowed)
    static, every = s["static"], s["every-batch"]

    assert windowed.batches == SCORED and windowed.metric_name == "accuracy"
    assert every.mean_metric == pytest.approx(mean_accuracy(every.per_batch))
    assert every.mean_metric >= static.mean_metric + 0.02
    # the gap is the change: after it, the static model is clearly worse than before
    assert (
        mean_accuracy(every.per_batch, CHANGE_BATCH)
        >= mean_accuracy(static.per_batch, CHANGE_BATCH) + 0.03
    )
    before = [b["accuracy"] for b in static.per_batch if b["batch"] < CHANGE_BATCH]
    assert mean_accuracy(static.per_batch, CHANGE_BATCH) < np.mean(before) - 0.03


# 2. retrain counts ---------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 2])
def test_retrain_counts_match_the_triggers(sea: Path, delay: int) -> None:
    calls: list[tuple[str, int, int]] = []
    replay = replay_of(sea, window="2000", label_delay=delay)
    result = run_backtest(
        replay,
        ["static", "every-batch", "periodic:3", "periodic:4"],
        progress=lambda name, done, total: calls.append((name, done, total)),
    )
    s = by_name(result)
    labelled = SCORED - delay  # scored batches that brought labels

    for r in result.strategies:
        flagged = [b["batch"] for b in r.per_batch if b["retrained"]]
        assert r.retrains == len(r.triggers) == len(flagged)
        assert [t["batch"] for t in r.triggers] == flagged
        assert [b["batch"] for b in r.per_batch] == list(range(INITIAL, N_BATCHES))
        assert all(b["rows"] == BATCH for b in r.per_batch)
        assert all(t["window_rows"] == 2000 and t["start_row"] is None for t in r.triggers)
        assert [c for c in calls if c[0] == r.name] == [
            (r.name, i, SCORED) for i in range(1, SCORED + 1)
        ]
    assert s["static"].retrains == 0 and s["static"].train_cpu_s >= 0
    assert [t["batch"] for t in s["every-batch"].triggers] == list(
        range(INITIAL + delay, N_BATCHES)
    )
    for p in (3, 4):
        r = s[f"periodic:{p}"]
        assert r.retrains == labelled // p
        assert [t["batch"] for t in r.triggers] == [
            INITIAL - 1 + delay + j * p for j in range(1, labelled // p + 1)
        ]
        assert all(t["reasons"] == [f"periodic: {p} batch(es) of new labels"] for t in r.triggers)
    assert s["every-batch"].train_cpu_s > s["static"].train_cpu_s


# 3. label delay ------------------------------------------------------------------------------
class Spy(Strategy):
    """Records what it sees; retrains on the full window every third step and from a change
    50 rows before the newest labelled row (so ``min_rows`` applies) on the step after."""

    name = "spy"

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.fits: list[dict[str, Any]] = []

    def start(self, replay: History, fitted: Fitted) -> None:
        super().start(replay, fitted)
        self.fits.append({"step": None, "labelled_through": INITIAL - 1, "fitted": fitted})

    def decide(self, step: Step, fitted: Fitted) -> Retrain | None:
        r = self.replay
        self.steps.append(
            {
                "index": step.index,
                "labelled_through": step.labelled_through,
                "arrived": [a.batch for a in step.arrived],
                "labels_match": all(a.y.equals(r.batch(a.batch)[r.target]) for a in step.arrived),
                "prediction_rows": all(
                    a.prediction.index.equals(r.batch(a.batch).index) for a in step.arrived
                ),
                "x_has_target": r.target in step.X.columns,
                "x_rows": step.X.index.equals(r.batch(step.index).index),
            }
        )
        end = int(r.bounds[step.labelled_through + 1])
        if step.index % 3 == 0:
            return Retrain(["spy: full window"])
        if step.index % 3 == 1:
            return Retrain(["spy: recent change"], start_row=end - 50)
        return None

    def retrained(self, fitted: Fitted, step: Step, action: Retrain) -> None:
        self.fits.append(
            {
                "step": step.index,
                "labelled_through": step.labelled_through,
                "fitted": fitted,
                "start_row": action.start_row,
            }
        )


@pytest.mark.parametrize("delay", [0, 2])
def test_label_delay_is_honoured(sea: Path, delay: int) -> None:
    replay = replay_of(sea, label_delay=delay)
    spy = Spy()
    result = run_backtest(replay, [], extra={"spy": spy})
    bounds = replay.bounds

    assert [s["index"] for s in spy.steps] == list(range(INITIAL, N_BATCHES))
    for s in spy.steps:
        t = s["index"]
        assert s["arrived"] == ([t - delay] if t - delay >= INITIAL else [])
        assert all(b + delay == t for b in s["arrived"])
        assert s["labelled_through"] == max(INITIAL - 1, t - delay)
        assert all(b <= s["labelled_through"] for b in s["arrived"])
        assert s["labels_match"] and s["prediction_rows"] and s["x_rows"]
        assert not s["x_has_target"]
    # every batch's labels arrive exactly once, except the last `delay` ones
    arrived = [b for s in spy.steps for b in s["arrived"]]
    assert arrived == list(range(INITIAL, N_BATCHES - delay))

    assert len(spy.fits) == 1 + result.strategies[0].retrains
    assert result.strategies[0].name == "spy"
    for f in spy.fits:
        lt, fitted = f["labelled_through"], f["fitted"]
        end = int(bounds[lt + 1])
        assert fitted.trained_through == lt
        assert fitted.first_row + fitted.rows == end  # no row of a batch past labelled_through
        if f["step"] is not None:
            assert end == bounds[max(INITIAL, f["step"] - delay + 1)]
        if f.get("start_row") is None:
            # the default window (50,000 rows) holds every labelled row; the model keeps all
            # of it or its newest half or quarter, whichever predicted the validation rows best
            assert fitted.window_rows == end
            n = end - max(1, round(end * replay.settings.model.validation))  # training part
            assert fitted.first_row in (0, n - n // 2, n - n // 4)
            assert fitted.rows >= min(end, replay.settings.model.window.min_rows)
        else:  # from the change on, but never fewer than model.window.min_rows
            assert fitted.window_rows == fitted.rows == min(end, 1000)
            assert replay.settings.model.window.min_rows == 1000
    for lt in range(INITIAL - 1, N_BATCHES):
        win = replay.window(lt)
        assert win.index[-1] == bounds[lt + 1] - 1
        assert replay.window(lt, start_row=int(bounds[lt])).index[0] == bounds[lt]


# 4. reproducible -----------------------------------------------------------------------------
def test_runs_and_streams_are_reproducible(
    sea_long: Path, policy_run: tuple[History, BacktestResult]
) -> None:
    again = run_backtest(replay_of(sea_long), ["static", "every-batch", "policy"])
    for a, b in zip(policy_run[1].strategies, again.strategies, strict=True):
        assert a.name == b.name
        assert a.per_batch == b.per_batch
        assert a.triggers == b.triggers
        assert a.mean_metric == b.mean_metric
        assert a.detection_delays == b.detection_delays

    df1, p1 = synthetic_stream("sea", 2000, changes=1, seed=3)
    df2, p2 = synthetic_stream("sea", 2000, changes=1, seed=3)
    df3, _ = synthetic_stream("sea", 2000, changes=1, seed=4)
    pd.testing.assert_frame_equal(df1, df2)
    assert p1 == p2 == [1000]
    assert not df1.equals(df3)
    assert list(df1.columns) == ["0", "1", "2", "y"]


# 5. JSON and HTML ----------------------------------------------------------------------------
def test_json_schema_and_round_trip(windowed: BacktestResult, tmp_path: Path) -> None:
    d = windowed.to_dict()

    assert {
        "schema",
        "dataset",
        "task",
        "batches",
        "metric_name",
        "drift_batches",
        "settings",
        "strategies",
    } <= set(d)
    assert d["dataset"] == "sea.parquet" and d["batches"] == SCORED and d["task"] == "binary"
    assert [s["name"] for s in d["strategies"]] == ["static", "every-batch", "periodic:3"]
    for s in d["strategies"]:
        assert {
            "name",
            "mean_metric",
            "metric_name",
            "retrains",
            "train_cpu_s",
            "monitor_cpu_s",
            "per_batch",
            "triggers",
            "detection_delays",
            "false_triggers",
        } <= set(s)
        assert s["metric_name"] == "accuracy"
        for b in s["per_batch"]:
            assert {"batch", "time", "rows", "accuracy", "roc_auc", "retrained"} <= set(b)
        for t in s["triggers"]:
            assert {"batch", "time", "reasons", "start_row", "window_rows"} <= set(t)
    assert d["settings"]["window_rows"] == 2000 and d["settings"]["label_delay"] == 0

    path = write_json(windowed, tmp_path / "out" / "bt.json")
    back = read_json(path)
    assert back == json.loads(json.dumps(d, default=str))
    assert back["strategies"][1]["per_batch"] == d["strategies"][1]["per_batch"]

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"metrics": {"accuracy": 0.9}}), encoding="utf-8")
    with pytest.raises(BacktestError, match="not a backtest result"):
        read_json(other)
    other.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(BacktestError):
        read_json(other)


def test_html_and_figures(windowed: BacktestResult, tmp_path: Path) -> None:
    html = write_html(windowed, tmp_path / "bt.html").read_text(encoding="utf-8")

    assert html.startswith("<!doctype html>") and "plotly" in html.lower()
    for name in ("static", "every-batch", "periodic:3"):
        assert f"<td>{name}</td>" in html
    # retrain share, refusals, detection delay, false triggers, the estimate's coverage, and
    # the model and window settings of the run
    for head in (
        "retrain share",
        "refused by the gate",
        "detection delay (batches)",
        "false triggers",
        "estimate inside its 90% interval",
    ):
        assert f"<th>{head}</th>" in html
    every = by_name(windowed)["every-batch"]
    share = f"{every.retrains / windowed.batches:.0%}"
    assert (
        f"<td>every-batch</td><td>{every.mean_metric:.4f}</td><td>{every.retrains}</td>"
        f"<td>{share}</td><td>0</td><td>0</td><td>0</td>"
    ) in html
    assert "<li>model: xgboost, hyper-parameters {&quot;max_depth&quot;: 6" in html
    assert "window: 2,000 newest rows" in html and "max_model_age=8 batches" in html
    figs = figures(windowed.to_dict())
    assert set(figs) == {"over_time", "cost"}
    names = [t.name for t in figs["over_time"].data]
    # a line per strategy, and retrain marks for those that retrained
    assert names == [
        "static",
        "every-batch",
        "every-batch retrains",
        "periodic:3",
        "periodic:3 retrains",
    ]
    assert len(figs["cost"].data) == 3
    # from the JSON as read back, too
    assert "every-batch" in write_html(
        json.loads(json.dumps(windowed.to_dict(), default=str)), tmp_path / "again.html"
    ).read_text(encoding="utf-8")


# 6. errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"batch_size": 1000, "batch_period": "7D"}, "exactly one of --batch-size and"),
        ({}, "exactly one of --batch-size and"),
        ({"batch_size": 1000, "target": "label"}, r"column.*label"),
        ({"batch_size": 1000, "time_column": "ts"}, r"column.*ts"),
        ({"batch_period": "7D"}, "--batch-period needs a time column"),
        (
            {"batch_size": 6000, "initial_batches": 3},
            r"2 batches: need more than --initial-batches",
        ),
        ({"batch_size": 1000, "initial_batches": 12}, "need more than --initial-batches"),
        ({"batch_size": 0}, "--batch-size must be positive"),
        ({"batch_size": 1000, "window": "lots"}, "--window 'lots'"),
    ],
)
def test_bad_options_raise_clear_errors(sea: Path, kw: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"target": "y", "initial_batches": INITIAL} | kw
    with pytest.raises(BacktestError, match=match):
        load_history(sea, **args)


def test_bad_files_and_strategy_names(sea: Path, tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match="no such file"):
        load_history(tmp_path / "nope.parquet", target="y", batch_size=100)
    odd = tmp_path / "data.xlsx"
    odd.write_bytes(b"x")
    with pytest.raises(BacktestError, match="unknown file type"):
        load_history(odd, target="y", batch_size=100)
    with pytest.raises(BacktestError, match="the columns are: 0, 1, 2, y"):
        load_history(sea, target="label", batch_size=1000)

    with pytest.raises(BacktestError, match="unknown strategy 'bogus'") as e:
        make_strategy("bogus", Settings())
    for known in STRATEGIES:
        assert known in str(e.value)
    for spec, message in [
        ("periodic:x", "write periodic:P"),
        ("periodic:", "write periodic:P"),
        ("periodic:0", "P ≥ 1"),
        ("detector:cusum", "detector:adwin"),
    ]:
        with pytest.raises(BacktestError, match=message):
            make_strategy(spec, Settings())
    replay = replay_of(sea)
    with pytest.raises(BacktestError, match="unknown strategy"):
        run_backtest(replay, ["static", "nightly"])


# 7. detection metrics ------------------------------------------------------------------------
def test_detection_delays_against_the_true_drift_points(
    sea: Path, windowed: BacktestResult, tmp_path: Path
) -> None:
    replay = replay_of(sea)
    assert replay.drift_batches == [CHANGE_BATCH] == windowed.drift_batches
    for r in windowed.strategies:
        assert len(r.detection_delays) == 1
        after = [t["batch"] for t in r.triggers if t["batch"] >= CHANGE_BATCH]
        assert r.detection_delays == [after[0] - CHANGE_BATCH if after else None]
        # periodic retrains are planned, never false triggers
        assert all(t["planned"] and t["kinds"] == ["periodic"] for t in r.triggers)
        assert r.false_triggers == 0
    s = by_name(windowed)
    assert s["static"].detection_delays == [None] and s["static"].false_triggers == 0
    assert s["every-batch"].detection_delays == [0]
    # the signals' triggers are counted: far from the drift point, they are false
    spy = Retrain(["spy: asked"], kinds=("performance",))
    assert not spy.planned and Retrain(["growth"], kinds=("growth", "schedule")).planned
    assert detection_metrics(replay, [2, CHANGE_BATCH + 1], signalled=[2]) == ([1], 1)
    assert detection_metrics(replay, [2, CHANGE_BATCH + 1], signalled=[]) == ([1], 0)

    # explicit points (rows without a time column) override the sidecar
    assert replay_of(sea, drift_points=[3500, 9999, 99_999]).drift_batches == [3, 9]
    # no sidecar: nothing to measure against
    bare = tmp_path / "bare.parquet"
    shutil.copy(sea, bare)
    unmarked = replay_of(bare)
    assert unmarked.drift_batches == []
    res = run_backtest(unmarked, ["static"]).strategies[0]
    assert res.detection_delays == [] and res.false_triggers is None


# 8. the default policy -----------------------------------------------------------------------
def test_default_policy_retrains_rarely_and_from_the_located_change(
    policy_run: tuple[History, BacktestResult],
) -> None:
    replay, result = policy_run
    s = by_name(result)
    policy, static, every = s["policy"], s["static"], s["every-batch"]
    bounds = replay.bounds
    change_batch = LONG_CHANGE_ROW // BATCH

    assert replay.drift_batches == [change_batch] and result.batches == LONG_SCORED
    assert 1 <= policy.retrains <= 0.3 * LONG_SCORED
    assert policy.mean_metric > max(static.mean_metric, every.mean_metric) + 0.01
    assert policy.monitor_cpu_s > 0
    # it finds the change soon (labels arrive with their batch)
    assert policy.detection_delays[0] is not None and policy.detection_delays[0] <= 3
    erred = [
        t
        for t in policy.triggers
        if t["batch"] >= change_batch
        and any(r.startswith(("concept", "performance")) for r in t["reasons"])
    ]
    assert erred, policy.triggers
    first = erred[0]
    # the window starts where the error rose, not at the start of the data
    assert first["start_row"] is not None
    assert LONG_CHANGE_ROW - BATCH <= first["start_row"] < bounds[first["batch"] + 1]
    # (at least model.window.min_rows: a shorter window's hold-out is not worth trusting)
    assert first["window_rows"] == max(bounds[first["batch"] + 1] - first["start_row"], 1000)
    # growth retrains from the newest located change on (the window it chooses from is that
    # long), each once the rows since the change have doubled
    later = policy.triggers[policy.triggers.index(first) + 1 :]
    grown = [t for t in later if t["kinds"] == ["growth"]]
    assert grown, policy.triggers
    starts = [t["start_row"] for t in later]
    assert all(x is not None and x >= first["start_row"] for x in starts)
    for t in grown:
        before = [u for u in policy.triggers if u["batch"] < t["batch"]][-1]
        assert t["start_row"] == before["start_row"]
        assert t["window_rows"] <= bounds[t["batch"] + 1] - t["start_row"]
    for t in policy.triggers:
        assert t["reasons"] and set(t["kinds"]) <= {
            "schedule",
            "performance",
            "estimated",
            "drift",
            "concept",
            "growth",
        }
        assert t["reasons"][0].split(":")[0] == t["kinds"][0]


# 9. row ids ----------------------------------------------------------------------------------
def test_row_id_columns_are_not_features(tmp_path: Path) -> None:
    df, _ = synthetic_stream("sea", 3000, changes=1, seed=1)
    rng = np.random.default_rng(0)
    df.insert(0, "id", np.arange(10, 3010, dtype=np.int64))
    df["shuffled"] = rng.permutation(3000).astype(np.int64)  # unique, not increasing: a feature
    path = tmp_path / "ids.parquet"
    df.to_parquet(path)

    replay = load_history(path, target="y", batch_size=500, initial_batches=2)
    assert set(replay.kinds) == {"0", "1", "2", "shuffled"}
    assert "id" not in replay.kinds and "id" not in replay.features(3).columns
    assert replay.settings.data.id_column == "id"
    assert any("row ids" in n and "id" in n for n in replay.notes)


# 10. the command -----------------------------------------------------------------------------
def test_backtest_command(sea: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLOPS_CONFIG", raising=False)
    out, html = tmp_path / "bt.json", tmp_path / "bt.html"
    runner = CliRunner()

    res = runner.invoke(
        app,
        [
            "backtest",
            "--data",
            str(sea),
            "--target",
            "y",
            "--batch-size",
            "1000",
            "--strategies",
            "static,every-batch",
            "--json",
            str(out),
            "--html",
            str(html),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "static" in res.stdout and "every-batch" in res.stdout
    assert "7 batches scored" in res.stdout  # 12 batches, 5 to start by default
    raw = read_json(out)
    assert [s["name"] for s in raw["strategies"]] == ["static", "every-batch"]
    assert raw["batches"] == 7 and raw["drift_batches"] == [CHANGE_BATCH]
    assert "every-batch" in html.read_text(encoding="utf-8")

    bad = runner.invoke(
        app,
        [
            "backtest",
            "--data",
            str(sea),
            "--target",
            "y",
            "--batch-size",
            "1000",
            "--strategies",
            "static,nightly",
        ],
    )
    assert bad.exit_code == 1
    assert "unknown strategy 'nightly'" in bad.output

    helped = runner.invoke(app, ["backtest", "--help"])
    assert helped.exit_code == 0 and "--strategies" in helped.stdout


# 11. online ----------------------------------------------------------------------------------
def test_online_learner(tmp_path: Path) -> None:
    path = write_stream(tmp_path / "tiny.parquet", rows=3000, seed=5, sidecar=False)
    replay = load_history(path, target="y", batch_size=500, initial_batches=2, label_delay=1)
    r = run_backtest(replay, ["online"]).strategies[0]

    assert r.name == "online" and r.retrains == 0 and r.triggers == []
    assert r.train_cpu_s > 0 and r.monitor_cpu_s == 0
    assert [b["batch"] for b in r.per_batch] == [2, 3, 4, 5]
    assert all(0.5 < b["accuracy"] <= 1 for b in r.per_batch)
    assert r.mean_metric == pytest.approx(mean_accuracy(r.per_batch))


# 10. a signal held back by a brake stays pending -----------------------------------------------
def test_a_detector_firing_inside_a_cooldown_retrains_when_it_ends(tmp_path: Path) -> None:
    """ADWIN fires right after the change, inside the cooldown that the first model's training
    started; nothing fires afterwards (the detector has adapted), yet the retrain happens at
    the first batch after the cooldown, for the concept change, pending since it fired."""
    df, points = synthetic_stream("sea", 12_000, changes=1, seed=5)
    path = tmp_path / "sea_cooldown.parquet"
    df.to_parquet(path)
    cooldown = 12
    policy = {
        "max_model_age": None,
        "performance_drop": None,
        "estimated_drop": None,
        "drift_share": None,
        "detectors": ["adwin"],
        "window_growth": None,
        "min_new_labels": 0,
        "cooldown": f"{cooldown} batches",
    }
    settings = Settings().model_copy(
        update={"retraining": Settings().retraining.model_copy(update=policy)}
    )
    # the change at row 6,000: batch 12 of 500-row batches; the first model's data ends at 4
    replay = load_history(
        path, target="y", batch_size=500, initial_batches=5, settings=settings, drift_points=points
    )
    change = replay.drift_batches[0]
    strategy = make_strategy("policy", settings)
    held: list[tuple[int, Any]] = []
    original = strategy.decide

    def spy(step: Step, fitted: Fitted) -> Retrain | None:
        action = original(step, fitted)
        if strategy.state.pending:
            held.append((step.index, strategy.state.pending))
        return action

    strategy.decide = spy  # type: ignore[method-assign]
    result = run_backtest(replay, [], extra={"policy": strategy}).strategies[0]
    first_at = replay.initial_batches - 1  # the first model's newest batch: the cooldown starts
    assert held, "the detector never fired inside the cooldown"
    fired_at = held[0][0]
    assert change <= fired_at < first_at + cooldown
    assert [f.reason.value for f in held[0][1]] == ["concept"]
    retrain = result.triggers[0]
    # served at the first batch the cooldown allows, not forgotten
    assert retrain["batch"] == first_at + cooldown
    assert retrain["kinds"] == ["concept"]
    # pending at every batch from the firing to the retrain (cleared by the retrain)
    assert [i for i, _ in held] == list(range(fired_at, retrain["batch"] + 1))
    since = held[0][1][0].since
    assert since == replay.times[fired_at].to_pydatetime()


def test_the_drift_sidecar_may_be_a_plain_list(sea: Path, tmp_path: Path) -> None:
    """``{"drift_points": [...]}`` or a plain list of rows (or times); a bad file is a clear
    error."""
    keyed = replay_of(sea).drift_batches
    plain = tmp_path / "plain.parquet"
    shutil.copy(sea, plain)
    side = plain.with_name("plain.drift.json")
    side.write_text(json.dumps([CHANGE_ROW]), encoding="utf-8")
    assert replay_of(plain).drift_batches == keyed == [CHANGE_BATCH]
    side.write_text(json.dumps([{"row": CHANGE_ROW}, 3500]), encoding="utf-8")
    assert replay_of(plain).drift_batches == [3, CHANGE_BATCH]
    side.write_text("{not json", encoding="utf-8")
    with pytest.raises(BacktestError, match=r"plain\.drift\.json: not JSON"):
        replay_of(plain)
    side.write_text(json.dumps({"points": 3}), encoding="utf-8")
    with pytest.raises(BacktestError, match="expected"):
        replay_of(plain)
