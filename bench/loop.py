"""Time from a batch landing to a candidate awaiting approval, through the real deployments.

    .venv/bin/python bench/loop.py                  # 20k-row demo stream, 1 trial, smoke test on
    .venv/bin/python bench/loop.py --trials 5 --poll 10 --keep

A demo project is brought up with `mlops up` (Prefect server, work pool, worker, MLflow server,
deployments) in a temporary folder; its first ten weeks are ingested and a champion trained and
approved directly (set-up, not measured). Then ten weeks with a covariate shift land in the
source folder, and the clock starts:

    ingest deployment run → monitor deployment run → mlops.retrain.requested →
    train deployment run (started by the event) → version pending approval

(the ingest and monitor runs are started through the API, as their cron schedules would). The
split, from the flow and task runs' timestamps in Prefect's API and the training outcome
recorded against the monitoring decision:

* ``validation_s``: the ingest task (read, cut into batches, validate, store);
* ``monitoring_s``: the monitor task (drift, performance, detectors, policy);
* ``training_s``: the train task less its smoke test (window, search, hold-out, champion on the
  same rows, packaging, registration);
* ``gating_s``: the smoke test (a fresh process loads and predicts the packaged model) and gate;
* ``prefect_overhead_s``: the rest: worker polling (``--poll`` s), flow-run processes starting
  and importing, event → automation → run, state round trips.

The last line printed is ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MLOPS = str(Path(sys.executable).parent / "mlops")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=20_000, help="rows of the demo stream (a year)")
    p.add_argument("--trials", type=int, default=1, help="model.search.trials")
    p.add_argument(
        "--poll",
        type=float,
        default=2.0,
        help="PREFECT_WORKER_QUERY_SECONDS of the worker (Prefect's default is 10)",
    )
    p.add_argument("--no-smoke", action="store_true", help="gate.smoke_test: false")
    p.add_argument("--keep", action="store_true", help="keep the project folder")
    args = p.parse_args()

    import pandas as pd
    import yaml

    from mlops_core.config import load_config
    from mlops_core.data.ingest import ingest
    from mlops_core.demo.stream import ID, TARGET, TIME, generate_stream
    from mlops_core.monitor.run import list_decisions
    from mlops_core.ops.orchestration import (
        FlowRunError,
        deployment_id,
        parse_time,
        recent_runs,
        start_run,
        task_seconds,
        wait_run,
    )
    from mlops_core.registry.registry import Registry
    from mlops_core.store import MetadataStore
    from mlops_core.train.pipeline import train_and_register

    work = Path(tempfile.mkdtemp(prefix="mlops-loop-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_WORKER_QUERY_SECONDS"] = f"{args.poll:g}"
    cfg = work / "mlops.yaml"
    stream = generate_stream(args.rows, days=364, seed=7)
    landing = work / "landing"
    landing.mkdir()
    cfg.write_text(
        yaml.safe_dump(
            {
                "project": "loop-bench",
                "data": {
                    "source": {"kind": "folder", "path": "landing"},
                    "id_column": ID,
                    "time_column": TIME,
                    "target": TARGET,
                    "features": stream.features,
                    "batch": {"period": "W"},
                },
                "model": {"search": {"trials": args.trials, "timeout_s": 120}},
                "gate": {"smoke_test": not args.no_smoke},
                "monitoring": {"min_rows": 50},
                "retraining": {
                    "cooldown": "1s",
                    "min_new_labels": 0,
                    "drift_share": 0.2,
                    "max_model_age": None,
                },
            }
        )
    )
    try:
        t = time.perf_counter()
        up = subprocess.run(
            [MLOPS, "up", "--json", "--config", str(cfg)],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if up.returncode != 0:
            raise SystemExit(up.stdout + up.stderr)
        up_s = time.perf_counter() - t
        api = json.loads(up.stdout)["services"]["prefect_api"]
        settings = load_config(cfg)
        frame = stream.frame
        week = pd.Timedelta(weeks=1)
        t0 = frame[TIME].min().normalize()

        def weeks(a: int, b: int) -> pd.DataFrame:
            return frame[(frame[TIME] >= t0 + a * week) & (frame[TIME] < t0 + b * week)]

        weeks(0, 10).to_parquet(landing / "early.parquet", index=False)
        ingest(settings)
        first = train_and_register(settings, trigger="initial")
        Registry(settings).approve(first.version, by="bench", comment="first champion")

        # the clock starts: a batch lands
        weeks(30, 40).to_parquet(landing / "shifted.parquet", index=False)
        start = time.time()
        try:
            ing = wait_run(api, start_run(api, "ingest", settings.project))
            mon = wait_run(api, start_run(api, "monitor", settings.project))
        except FlowRunError as e:
            raise SystemExit(str(e)) from None
        (decision,) = list_decisions(MetadataStore(settings.db_url), settings.project, 1)
        if not decision["retrain"]:
            raise SystemExit(f"the policy did not ask for a retrain: {decision}")
        train_dep = deployment_id(api, "train", settings.project)
        deadline = time.monotonic() + 900
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not runs:
            runs = [
                r for r in recent_runs(api, deployment=train_dep) if not r["auto_scheduled"]
            ]  # not the weekly cron's runs
            time.sleep(0.5)
        if not runs:
            raise SystemExit("the retrain event started no training run")
        try:
            train = wait_run(api, runs[0]["id"], 900)
        except FlowRunError as e:
            raise SystemExit(str(e)) from None
        end = parse_time(train["end_time"]).timestamp()
        pending = [v for v in Registry(settings).versions() if v.status == "pending_approval"]
        (acted,) = list_decisions(MetadataStore(settings.db_url), settings.project, 1)
        seconds = (acted.get("acted") or {}).get("seconds", {})

        total = end - start
        validation = task_seconds(api, ing["id"], "ingest")
        monitoring = task_seconds(api, mon["id"], "monitor")
        train_task = task_seconds(api, train["id"], "train-")
        gating = float(seconds.get("smoke", 0.0))
        training = train_task - gating
        event_s = (
            parse_time(train["expected_start_time"]) - parse_time(mon["end_time"])
        ).total_seconds()
        figures = {
            "rows_landed": len(weeks(30, 40)),
            "total_s": round(total, 1),
            "validation_s": round(validation, 1),
            "monitoring_s": round(monitoring, 1),
            "training_s": round(training, 1),
            "gating_s": round(gating, 1),
            "prefect_overhead_s": round(total - validation - monitoring - train_task, 1),
            "event_to_run_s": round(event_s, 1),
            "worker_poll_s": args.poll,
            "trials": args.trials,
            "smoke_test": str(not args.no_smoke).lower(),
            "pending_version": pending[-1].version if pending else "none",
            "mlops_up_s": round(up_s, 1),
        }
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
        return 0 if pending else 1
    finally:
        subprocess.run(
            [MLOPS, "down", "--config", str(cfg)], env=env, capture_output=True, cwd=REPO
        )
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
