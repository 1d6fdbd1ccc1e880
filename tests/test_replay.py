"""`make up`'s main job, end to end: `mlops demo --replay` brings the whole system up itself
(Prefect server, work pool and worker, the MLflow server, the dashboard; no service of the
test session is used) and replays a demo stream through the real deployments: batches accepted
and quarantined, drift monitored, a retrain started by the `mlops.retrain.requested` event, a
candidate waiting for approval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_core.config import load_config
from mlops_core.ops.services import DASHBOARD, MLFLOW, SERVING, is_healthy, read_service
from mlops_core.registry.registry import Registry

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MLOPS = str(Path(sys.executable).parent / "mlops")


def test_demo_replay_through_the_deployments(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "MLOPS_"))
    }
    env["PREFECT_UI_ENABLED"] = "false"
    cfg = demo / "mlops.yaml"
    try:
        res = subprocess.run(
            [
                MLOPS,
                "demo",
                "--replay",
                "--dir",
                str(demo),
                "--rows",
                "20000",
                "--days",
                "182",
                "--initial",
                "8",
                "--per-step",
                "6",
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=1200,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        out = json.loads(res.stdout)
        settings = load_config(cfg)
        ws = settings.workspace

        # mlops up started its own MLflow server (the demo names none) and the dashboard
        mlflow = read_service(ws, MLFLOW)
        assert mlflow is not None and out["services"]["mlflow"] == mlflow.url
        assert is_healthy(mlflow.health_url)
        dash = read_service(ws, DASHBOARD)
        assert dash is not None and is_healthy(dash.health_url)

        ticks = out["ticks"]
        assert sum(t["accepted"] for t in ticks) >= 15
        reasons = [q["reason"] for t in ticks for q in t["quarantined"]]
        assert len(reasons) >= 3 and all(reasons)  # the spoiled files, each with its reason
        assert any(t["nothing_new"] for t in ticks)  # the file sent twice
        monitored = [t["monitoring"] for t in ticks if t["monitoring"]]
        assert monitored and any(m["retrain"] and m["reasons"] for m in monitored)
        # the concept change is retrained for: only the error rising (a detector, or the
        # realised metric dropping) asks for these, and the demo's error rises at its concept
        # change; a signal the cooldown held back stays pending until it is served
        erred = [
            m
            for m in monitored
            if m["retrain"] and any(r.startswith(("concept", "performance")) for r in m["reasons"])
        ]
        assert erred, [(m["retrain"], m["reasons"], m["held_back"]) for m in monitored]
        assert any(
            t["training_run"] for t in ticks if t["monitoring"] and t["monitoring"]["retrain"]
        )

        # the applications went through the serving API and their labels through /feedback;
        # monitoring measured what it answered (the demo's monitoring.source: predictions)
        served = [t["serving"] for t in ticks if t["serving"]]
        assert served and sum(x["rows"] for x in served) >= 5000
        assert sum(x["labels"] for x in served) > 0
        # the spoiled files after the first model: unreadable (corrupt, latin-1) or refused
        assert sum(x["refused"] + x["unreadable"] for x in served) >= 1
        assert all(x["versions"] == ["1"] for x in served)  # v1 is champion meanwhile
        assert any(m["served_rows"] > 0 for m in monitored)
        # the online model learnt the labels and waits, gated, beside the champion
        online = [t["online"] for t in ticks if t["online"]]
        assert online and all(o["base"] for o in online)
        serving = read_service(ws, SERVING)
        assert serving is not None and is_healthy(serving.health_url)

        # the training the event started ran to the end and left a candidate for a person
        assert any(
            r["state"] == "Completed" and r["trigger"] not in ("", "initial")
            for r in out["training_runs"]
        ), out["training_runs"]
        # ... which the demo approves to show the hot swap: serving answers with it, and no
        # request failed on the way
        reg = Registry(settings)
        swap = out["swap"]
        assert swap["swapped"] and swap["failed"] == 0, swap
        assert swap["versions"] == ["1", swap["to"]]
        assert out["champion"] == reg.champion() == swap["to"]
        approvals = [r for r in reg.audit(action="approve") if r.outcome == "applied"]
        assert [(r.actor, r.version) for r in approvals] == [  # newest first
            ("demo", swap["to"]),
            ("demo", "1"),
        ]
        pending = [v for v in reg.versions() if v.status == "pending_approval"]
        assert {p["version"] for p in out["pending"]} - {swap["to"]} == {v.version for v in pending}
        assert all(v.trigger not in ("", "initial") for v in pending)

        # run again: nothing left to replay, and it says so
        again = subprocess.run(
            [MLOPS, "demo", "--replay", "--dir", str(demo)],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
        )
        assert again.returncode == 0 and "replayed already" in again.stdout
    finally:
        if cfg.exists():
            subprocess.run(
                [MLOPS, "down", "--config", str(cfg)],
                capture_output=True,
                env=env,
                cwd=REPO,
                timeout=120,
            )
    assert read_service(load_config(cfg).workspace, MLFLOW) is None
