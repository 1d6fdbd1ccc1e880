"""Training and monitoring on Dask over a window several times a worker's memory limit, and the
local path on the same data.

    .venv/bin/python bench/scale.py                  # the default size (see --help; ~7 min, 2 cores)
    .venv/bin/python bench/scale.py --quick          # a small smoke run (~2 min): the size not judged
    .venv/bin/python bench/scale.py --rows 3000000 --memory-limit 384MiB --keep --dir /tmp/scale

Setup (not measured): a seeded synthetic binary-classification stream (an id, a time column, 12
float64 features, 2 string categoricals, a 0/1 target that is a noisy logistic function of some
features, a covariate shift in 3 columns over the last 40% of the time) is written as ``--files``
Parquet files, one per month, and ingested into a fresh project through
``mlops_core.data.ingest.ingest`` (one batch per file), in a child process. The window's size is
what pandas holds of it: ``memory_usage(deep=True)`` of every batch file read, summed
(``window_mb``). It must be at least ``--min-ratio`` (3) times a worker's memory limit.

Dask path (this process is the driver): the bench starts its own ``distributed.LocalCluster``
(``--workers`` processes, 1 thread each, ``memory_limit`` each: Dask's nanny terminates a worker
whose RSS passes 95% of it) and passes its address as ``dask.address``, then, with
``model.engine: dask``:

* ``train_and_register`` (whole window, ``window.choose`` off, ``--trials`` trials, no smoke
  test, auto promotion: the first version becomes champion);
* ``monitor`` of every batch against that champion.

Each worker's peak RSS in each phase is its kernel high-water mark (``VmHWM``, reset through
``/proc/PID/clear_refs`` as the phase starts), with a 20 Hz ``psutil`` poll beside it that
notices a worker restarted (killed for memory). The driver's own peak is measured the same way.

Local path (``model.engine: local``), each job in a child process of this script, in the same
workspace: monitoring the same batches against the same champion (the drift verdicts must be
the Dask run's: the dataset verdict and the set of drifted columns), and training on the same
window, registered under a model of its own (``bench-scale-local``) so that it is not compared
with, nor refused as a copy of, the Dask-trained champion. Both jobs run twice:

* ``limited``: held to the cluster's total memory (``--workers`` x ``memory_limit``), by default
  as Dask holds its workers: killed when the process's RSS passes the limit (polled at 20 Hz);
  ``--limit-how as`` sets ``RLIMIT_AS`` in the child instead (address space, which counts
  libraries and thread arenas too: a harsher limit). Reported as ``failed`` with the error or
  the phase it was killed in, or as its wall time;
* unlimited: its wall time and peak RSS (its own ``ru_maxrss``), the hold-out ROC AUC, and the
  drift verdicts.

Wall times are measured around the library call (imports excluded). The last line is
``key=value`` pairs; the exit status is 1 when a target is missed: the Dask training or
monitoring failed, a worker was restarted or its peak RSS passed its memory limit, the window is
under ``--min-ratio`` times the limit (not judged with ``--quick``), the hold-out AUCs of the two
paths differ by more than 0.01, or the drift verdicts differ.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULT_TAG = "BENCH_RESULT "
PROGRESS_TAG = "progress: "
MAX_AUC_DIFF = 0.01
PROJECT, LOCAL_PROJECT = "bench-scale", "bench-scale-local"
NUMERIC = [f"x{i}" for i in range(12)]
CATEGORICAL = ["region", "channel"]
REGIONS = [f"region_{k:02d}" for k in range(12)]
CHANNELS = ["web", "mobile", "branch", "partner", "phone"]
DRIFT_FROM = 0.6  # share of the files after which the covariate shift starts
_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """``512MiB``, ``1GiB``, ``500MB``, ``536870912`` -> bytes (Dask's own parser)."""
    from dask.utils import parse_bytes

    return int(parse_bytes(text))


# data ------------------------------------------------------------------------------------------
def month_frame(i: int, files: int, rows: int, first_id: int, seed: int) -> Any:
    """Month ``i`` of the stream: ``rows`` rows, time-ordered within the month. The target is a
    noisy logistic function of x0-x4, x7, x9 and both categoricals; from ``DRIFT_FROM`` of the
    months on, x5 and x8 shift (x5 has a small weight: the concept holds) and channel's mix
    changes."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, i])
    start = pd.Timestamp("2020-01-01") + pd.DateOffset(months=i)
    span = ((start + pd.DateOffset(months=1)) - start).total_seconds()
    ts = start + pd.to_timedelta(np.sort(rng.uniform(0, span, rows)), unit="s")
    z = rng.normal(size=(rows, len(NUMERIC)))
    late = i >= DRIFT_FROM * files
    if late:
        z[:, 5] += 1.0
        z[:, 8] = z[:, 8] * 1.6 + 0.5
    region = rng.integers(0, len(REGIONS), rows)
    mix = [0.25, 0.45, 0.1, 0.1, 0.1] if late else [0.4, 0.3, 0.15, 0.1, 0.05]
    channel = rng.choice(len(CHANNELS), rows, p=mix)
    region_effect = np.linspace(-0.6, 0.6, len(REGIONS))[region]
    channel_effect = np.array([0.3, 0.0, -0.4, 0.2, -0.2])[channel]
    logit = (
        1.1 * z[:, 0]
        - 0.8 * z[:, 1]
        + 0.6 * z[:, 2] * z[:, 3]
        + 0.8 * np.sin(2 * z[:, 4])
        + 0.15 * z[:, 5]
        + 0.5 * (z[:, 7] > 0.5)
        - 0.3 * np.abs(z[:, 9])
        + region_effect
        + channel_effect
        + rng.normal(scale=0.5, size=rows)
    )
    frame: dict[str, Any] = {
        "id": np.arange(first_id, first_id + rows, dtype=np.int64),
        "ts": ts,
    }
    for k, col in enumerate(NUMERIC):  # different scales and locations, float64
        frame[col] = z[:, k] * (1 + k / 4) + k
    frame["region"] = np.array(REGIONS, dtype=object)[region]
    frame["channel"] = np.array(CHANNELS, dtype=object)[channel]
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(frame)


def raw_config(
    root: Path, *, engine: str, project: str, trials: int, trees: int, address: str | None = None,
    search_rows: int = 200_000,
) -> dict[str, Any]:
    """The project's configuration; the two engines differ in ``model.engine`` and ``dask``."""
    raw: dict[str, Any] = {
        "project": project,
        "task": "binary",
        "data": {
            "id_column": "id",
            "time_column": "ts",
            "target": "label",
            "features": {"numeric": list(NUMERIC), "categorical": list(CATEGORICAL)},
        },
        "storage": {"workspace": str(root / "ws")},
        "model": {
            "type": "xgboost",
            "engine": engine,
            # the whole window, as the Dask path trains on (it does not choose a newer part)
            "window": {"rows": None, "choose": False},
            "search": {"trials": trials, "timeout_s": None},
            "params": {"n_estimators": trees},
        },
        # the first version becomes champion; no slice rule (synthetic slices are noise)
        "gate": {"smoke_test": False, "max_slice_regression": None},
        "promotion": {"mode": "auto"},
        "monitoring": {"report": "never"},
    }
    if engine == "dask":
        raw["dask"] = {"address": address, "search_rows": search_rows}
    return raw


def settings_from(raw: dict[str, Any]) -> Any:
    from mlops_core.config import parse_config

    return parse_config(raw, environ={})


# child jobs ------------------------------------------------------------------------------------
def _emit(result: dict[str, Any]) -> None:
    import resource

    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)


def _progress(msg: str) -> None:
    print(PROGRESS_TAG + msg, file=sys.stderr, flush=True)


def job_prepare(root: Path, rows: int, files: int, seed: int) -> None:
    """Write the stream's files, create the project, ingest them, measure the window."""
    import pandas as pd
    import yaml

    from mlops_core.data.ingest import ingest
    from mlops_core.store import BatchStore, MetadataStore, open_project

    settings = settings_from(raw_config(root, engine="local", project=PROJECT, trials=1, trees=1))
    source = root / "source"
    source.mkdir(parents=True)
    t0 = time.perf_counter()
    paths, first = [], 0
    for i in range(files):
        n = rows // files + (1 if i < rows % files else 0)
        path = source / f"month_{i:03d}.parquet"
        month_frame(i, files, n, first, seed).to_parquet(path, index=False)
        paths.append(path)
        first += n
    gen_s = time.perf_counter() - t0
    _progress(f"wrote {rows:,} rows as {files} files in {gen_s:.1f} s; ingesting")
    (root / "mlops.yaml").write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    open_project(settings.workspace, settings.db_url, create=True)
    t0 = time.perf_counter()
    report = ingest(settings, paths)
    ingest_s = time.perf_counter() - t0
    bad = [(o.id, o.status, o.reason) for o in report.outcomes if o.status != "accepted"]
    if bad:
        raise SystemExit(f"batches not accepted: {bad[:5]}")
    ids = [o.id for o in report.outcomes]
    meta, store = MetadataStore(settings.db_url), BatchStore(settings.workspace)
    window_bytes, stored_rows, disk = 0, 0, 0
    for b in ids:
        path = store.root / meta.get_batch(b).path
        df = pd.read_parquet(path)
        window_bytes += int(df.memory_usage(deep=True).sum())
        stored_rows += len(df)
        disk += path.stat().st_size
    shutil.rmtree(source)  # the batch store holds the data now
    _emit(
        {
            "batch_ids": ids,
            "rows": stored_rows,
            "window_bytes": window_bytes,
            "disk_bytes": disk,
            "generate_s": gen_s,
            "ingest_s": ingest_s,
        }
    )


def job_local_train(cfg: Path) -> None:
    from mlops_core.train.pipeline import train_and_register

    settings = settings_from(json.loads(cfg.read_text()))
    t0 = time.perf_counter()
    out = train_and_register(settings, trigger="bench", progress=_progress)
    _emit(
        {
            "wall": time.perf_counter() - t0,
            "auc": out.metrics.get("roc_auc"),
            "rows": out.rows,
            "version": out.version,
            "status": out.status,
            "best_params": out.best_params,
        }
    )


def job_local_monitor(cfg: Path, ids_file: Path) -> None:
    from mlops_core.monitor.run import monitor

    settings = settings_from(json.loads(cfg.read_text()))
    ids = json.loads(ids_file.read_text())
    _progress(f"monitoring {len(ids)} batches (engine local)")
    t0 = time.perf_counter()
    res = monitor(settings, batch_ids=ids)
    _emit({"wall": time.perf_counter() - t0} | drift_result(res))


def drift_result(res: Any) -> dict[str, Any]:
    d = res.drift
    return {
        "status": d.status,
        "drifted": sorted(d.drifted_columns),
        "share": d.drift_share,
        "scores": {c.column: c.score for c in d.columns},
        "rows": res.rows,
        "champion": res.champion_version,
    }


# memory ----------------------------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakWatch:
    """Peak RSS of some processes over a phase: each one's ``VmHWM`` (reset as the phase
    starts), and a poll at ``interval`` s that also sees a process disappear (a worker
    killed). Use as a context manager."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.pids, self.interval = dict(pids), interval
        self.polled = dict.fromkeys(pids, 0)
        self.gone: set[str] = set()
        self.hwm: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakWatch:
        for pid in self.pids.values():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to VmRSS
            except OSError:
                pass
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, pid in self.pids.items():
            kb = _status_kb(pid, "VmHWM")
            if kb is not None and name not in self.gone:
                self.hwm[name] = kb * 1024

    def _poll(self) -> None:
        import psutil

        procs = {}
        for name, pid in self.pids.items():
            try:
                procs[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                self.gone.add(name)
        while not self._stop.is_set():
            for name, p in procs.items():
                if name in self.gone:
                    continue
                try:
                    self.polled[name] = max(self.polled[name], p.memory_info().rss)
                except psutil.NoSuchProcess:
                    self.gone.add(name)
            self._stop.wait(self.interval)

    def peak(self, name: str) -> int:
        return max(self.hwm.get(name, 0), self.polled.get(name, 0))


def worker_pids(client: Any) -> dict[str, int]:
    return dict(client.run(os.getpid))


def _warm_worker() -> int:
    """Import what a training task imports, so the idle RSS counts the libraries."""
    import mlops_core.monitor.distributed  # noqa: F401
    import mlops_core.train.distributed  # noqa: F401
    import xgboost  # noqa: F401

    return os.getpid()


def _spilled(client: Any) -> int:
    """Bytes the workers hold spilled to disk now (from the scheduler's heartbeat metrics)."""
    total = 0
    for w in client.scheduler_info(n_workers=-1).get("workers", {}).values():
        spilled = w.get("metrics", {}).get("spilled_bytes", {})
        total += int(spilled.get("disk", 0)) if isinstance(spilled, dict) else 0
    return total


def dask_phase(
    name: str, client: Any, fn: Any, limit: int
) -> tuple[dict[str, Any], Any, BaseException | None]:
    """Run ``fn()`` while watching the workers and this process. Returns the phase's figures,
    ``fn``'s result and its exception, if any."""
    before = worker_pids(client)
    pids = {addr: pid for addr, pid in before.items()} | {"driver": os.getpid()}
    spill = [0]
    stop = threading.Event()

    def watch_spill() -> None:
        while not stop.wait(1.0):
            try:
                spill[0] = max(spill[0], _spilled(client))
            except Exception:  # noqa: BLE001  (a metrics read must not fail the phase)
                pass

    spiller = threading.Thread(target=watch_spill, daemon=True)
    spiller.start()
    say(f"{name}: started")
    t0 = time.perf_counter()
    result, error = None, None
    with PeakWatch(pids) as watch:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001  (reported, judged, not raised)
            error = e
    wall = time.perf_counter() - t0
    stop.set()
    spiller.join()
    after = worker_pids(client)
    restarted = sorted(
        a for a in before if a in watch.gone or after.get(a) != before[a]
    ) + sorted(a for a in after if a not in before)
    peaks = [watch.peak(a) for a in sorted(before)]
    figures = {
        "wall": wall,
        "peaks": peaks,
        "driver_peak": watch.peak("driver"),
        "restarted": len(set(restarted)),
        "spilled": spill[0],
        "over_limit": [p for p in peaks if p > limit],
    }
    say(
        f"{name}: {'FAILED' if error else 'done'} in {wall:.1f} s; worker peaks "
        f"{', '.join(f'{p / 2**20:.0f}' for p in peaks)} MB (limit {limit / 2**20:.0f}); "
        f"driver {figures['driver_peak'] / 2**20:.0f} MB; restarts {figures['restarted']}"
        + (f"; error: {error!r}"[:600] if error else "")
    )
    return figures, result, error


# local child runs ------------------------------------------------------------------------------
def run_child(
    root: Path, tag: str, args: list[str], limit: int | None, how: str
) -> dict[str, Any]:
    """This script as a child job; with ``limit``, held to it (``how``: ``rss``, killed when its
    RSS passes it; ``as``: ``RLIMIT_AS``). Returns its result, or ``failed`` and why."""
    import psutil

    out_path, err_path = root / f"{tag}.out", root / f"{tag}.err"
    preexec = None
    if limit is not None and how == "as":

        def preexec() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.perf_counter()
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--job", *args],
            stdout=out,
            stderr=err,
            preexec_fn=preexec,
        )
        killed_at, peak, last_said = None, 0, ""
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss
            except psutil.NoSuchProcess:
                break
            peak = max(peak, rss)
            if limit is not None and how == "rss" and rss > limit:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = rss
                break
            time.sleep(0.05)
        proc.wait()
    wall = time.perf_counter() - t0
    errtext = err_path.read_text(errors="replace")
    said = [ln[len(PROGRESS_TAG) :] for ln in errtext.splitlines() if ln.startswith(PROGRESS_TAG)]
    last_said = said[-1] if said else "starting (imports)"
    if killed_at is not None:
        return {
            "ok": False,
            "wall": wall,
            "peak_mb": killed_at / 2**20,
            "why": f"killed at RSS {killed_at / 2**20:.0f} MB > limit {limit / 2**20:.0f} MB "
            f"after {wall:.1f} s, while '{last_said}'",
        }
    lines = out_path.read_text().splitlines()
    found = [ln for ln in lines if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not found:
        tail = [ln for ln in errtext.strip().splitlines() if ln.strip()]
        last = tail[-1] if tail else f"exit status {proc.returncode}"
        return {
            "ok": False,
            "wall": wall,
            "peak_mb": peak / 2**20,
            "why": f"{last[:300]} (exit {proc.returncode} after {wall:.1f} s, while '{last_said}')",
        }
    result = json.loads(found[-1][len(RESULT_TAG) :])
    result["ok"] = True
    result["peak_mb"] = max(result["peak_mb"], peak / 2**20)
    return result


# parent ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--rows", type=int, help="rows of the stream, all in the window (default 6,600,000; "
        "--quick: 600,000)"
    )
    ap.add_argument("--files", type=int, default=48, help="monthly files, one batch each")
    ap.add_argument(
        "--memory-limit",
        default="512MiB",
        help="memory_limit of each LocalCluster worker (Dask's syntax: 512MiB, 1GB, bytes)",
    )
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers (1 thread each)")
    ap.add_argument("--trials", type=int, default=4, help="model.search.trials (both paths)")
    ap.add_argument(
        "--trees", type=int, default=100, help="model.params n_estimators (early stopping below)"
    )
    ap.add_argument("--search-rows", type=int, default=200_000, help="dask.search_rows")
    ap.add_argument(
        "--min-ratio", type=float, default=3.0, help="window size / worker limit that is judged"
    )
    ap.add_argument(
        "--limit-how",
        choices=["rss", "as"],
        default="rss",
        help="how the limited local run is held: killed past the RSS (as Dask's nanny does), "
        "or RLIMIT_AS",
    )
    ap.add_argument("--skip-local-limited", action="store_true", help="no limited local run")
    ap.add_argument(
        "--skip-local",
        action="store_true",
        help="the Dask path only, to investigate it: nothing compared, exit status 1",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="600,000 rows: a smoke run")
    ap.add_argument("--dir", type=Path, help="work folder (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rows is None:
        args.rows = 600_000 if args.quick else 6_600_000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.job:
        name, *rest = args.job
        if name == "prepare":
            job_prepare(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif name == "local-train":
            job_local_train(Path(rest[0]))
        else:
            job_local_monitor(Path(rest[0]), Path(rest[1]))
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `mlops` sets it
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    limit = parse_size(args.memory_limit)
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="run-", dir=args.dir))
    else:
        root = Path(tempfile.mkdtemp(prefix="mlops-bench-scale-"))
    say(
        f"work folder {root}; {args.rows:,} rows in {args.files} files; {args.workers} workers "
        f"x {limit / 2**20:.0f} MiB; {os.cpu_count()} CPUs"
    )
    try:
        return run(args, root, limit)
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path, limit: int) -> int:
    problems: list[str] = []
    # 1. data, ingested (a child: its memory is not the driver's)
    say("prepare: generating and ingesting the stream (child process)")
    prep = run_child(
        root, "prepare", ["prepare", str(root), str(args.rows), str(args.files), str(args.seed)],
        None, "rss",
    )
    if not prep["ok"]:
        raise SystemExit(f"setup failed: {prep['why']}")
    ids = prep["batch_ids"]
    ids_file = root / "batch_ids.json"
    ids_file.write_text(json.dumps(ids))
    window_mb, limit_mb = prep["window_bytes"] / 2**20, limit / 2**20
    ratio = prep["window_bytes"] / limit
    say(
        f"prepare: {prep['rows']:,} rows, {len(ids)} batches: {window_mb:.0f} MiB in pandas "
        f"({ratio:.1f}x a worker's limit), {prep['disk_bytes'] / 2**20:.0f} MiB of Parquet; "
        f"generated in {prep['generate_s']:.0f} s, ingested in {prep['ingest_s']:.0f} s"
    )
    if ratio < args.min_ratio and not args.quick:
        problems.append(f"window {ratio:.2f}x the worker limit < {args.min_ratio}")

    # 2. the Dask path, on a LocalCluster of our own
    dask_train, dask_mon, dask_out, dask_drift = run_dask(args, root, limit, ids, problems)

    if args.skip_local:
        problems.append("--skip-local: no baseline, nothing compared")
        print(f"dask: train {dask_train}\ndask: monitor {dask_mon}\ndrift {dask_drift}")
        print(f"problems: {problems}")
        return 1
    # 3. the local path, in child processes (monitoring first: it uses the Dask champion)
    local_cfg = root / "local.json"
    local_cfg.write_text(
        json.dumps(
            raw_config(
                root, engine="local", project=PROJECT, trials=args.trials, trees=args.trees
            )
        )
    )
    train_cfg = root / "local-train.json"
    train_cfg.write_text(
        json.dumps(
            raw_config(
                root, engine="local", project=LOCAL_PROJECT, trials=args.trials, trees=args.trees
            )
        )
    )
    total = args.workers * limit
    limited: dict[str, dict[str, Any]] = {}
    if not args.skip_local_limited:
        limited_cfg = root / "local-train-limited.json"
        limited_cfg.write_text(
            json.dumps(
                raw_config(
                    root,
                    engine="local",
                    project=LOCAL_PROJECT + "-limited",
                    trials=args.trials,
                    trees=args.trees,
                )
            )
        )
        for job, cmd in (
            ("monitor", ["local-monitor", str(local_cfg), str(ids_file)]),
            ("train", ["local-train", str(limited_cfg)]),
        ):
            say(f"local {job}, limited to {total / 2**20:.0f} MiB ({args.limit_how}): started")
            r = run_child(root, f"limited-{job}", cmd, total, args.limit_how)
            limited[job] = r
            say(
                f"local {job}, limited: "
                + (f"done in {r['wall']:.1f} s" if r["ok"] else f"failed: {r['why']}")
            )
    say("local monitor: started")
    local_mon = run_child(root, "local-monitor", ["local-monitor", str(local_cfg), str(ids_file)],
                          None, "rss")
    say(
        "local monitor: "
        + (
            f"done in {local_mon['wall']:.1f} s, peak {local_mon['peak_mb']:.0f} MB, "
            f"{local_mon['status']}, drifted {local_mon['drifted']}"
            if local_mon["ok"]
            else f"failed: {local_mon['why']}"
        )
    )
    say("local train: started")
    local_train = run_child(root, "local-train", ["local-train", str(train_cfg)], None, "rss")
    say(
        "local train: "
        + (
            f"done in {local_train['wall']:.1f} s, peak {local_train['peak_mb']:.0f} MB, "
            f"roc_auc {local_train['auc']:.4f}"
            if local_train["ok"]
            else f"failed: {local_train['why']}"
        )
    )

    # 4. judge
    if not local_mon["ok"]:
        problems.append(f"local monitoring failed: {local_mon['why']}")
    if not local_train["ok"]:
        problems.append(f"local training failed: {local_train['why']}")
    dask_auc = dask_out.metrics.get("roc_auc") if dask_out is not None else None
    local_auc = local_train.get("auc")
    auc_diff = None
    if dask_auc is not None and local_auc is not None:
        auc_diff = dask_auc - local_auc
        if abs(auc_diff) > MAX_AUC_DIFF:
            problems.append(f"hold-out AUCs differ by {auc_diff:+.4f}")
    agree = None
    if dask_drift is not None and local_mon["ok"]:
        agree = (dask_drift["status"], dask_drift["drifted"]) == (
            local_mon["status"],
            local_mon["drifted"],
        )
        if not agree:
            problems.append(
                f"drift verdicts differ: dask {dask_drift['status']} {dask_drift['drifted']}, "
                f"local {local_mon['status']} {local_mon['drifted']}"
            )
    scores_equal = None
    if dask_drift is not None and local_mon["ok"]:
        scores_equal = dask_drift["scores"] == local_mon["scores"]

    def mb(x: float | None) -> str:
        return "na" if x is None else f"{x / 2**20:.0f}"

    def lim(job: str) -> str:
        r = limited.get(job)
        if r is None:
            return "skipped"
        return f"{r['wall']:.1f}s" if r["ok"] else "failed"

    for job, r in limited.items():
        if not r["ok"]:
            print(f"local {job} under {total / 2**20:.0f} MiB: {r['why']}")
    if dask_drift is not None:
        print(
            f"drift (dask): {dask_drift['status']}, drifted {dask_drift['drifted']}, "
            f"share {dask_drift['share']}; local: "
            + (f"{local_mon['status']}, drifted {local_mon['drifted']}" if local_mon["ok"] else "na")
        )
    for p in problems:
        print(f"problem: {p}")
    met = not problems
    figures = {
        "rows": prep["rows"],
        "batches": len(ids),
        "window_mb": f"{window_mb:.0f}",
        "worker_limit_mb": f"{limit_mb:.0f}",
        "window_ratio": f"{ratio:.2f}",
        "workers": args.workers,
        "dask_train_s": _s(dask_train.get("wall") if dask_out is not None else None),
        "dask_monitor_s": _s(dask_mon.get("wall") if dask_drift is not None else None),
        "train_peak_worker_mb": ",".join(mb(p) for p in dask_train.get("peaks", [])) or "na",
        "monitor_peak_worker_mb": ",".join(mb(p) for p in dask_mon.get("peaks", [])) or "na",
        "max_peak_ratio": _r(
            max([*dask_train.get("peaks", []), *dask_mon.get("peaks", [])], default=0) / limit
        ),
        "worker_restarts": dask_train.get("restarted", 0) + dask_mon.get("restarted", 0),
        "spilled_mb": mb(max(dask_train.get("spilled", 0), dask_mon.get("spilled", 0))),
        "driver_train_peak_mb": mb(dask_train.get("driver_peak")),
        "driver_monitor_peak_mb": mb(dask_mon.get("driver_peak")),
        "dask_auc": _r(dask_auc, 4),
        "local_limited_train": lim("train"),
        "local_limited_monitor": lim("monitor"),
        "local_train_s": _s(local_train.get("wall")),
        "local_train_peak_mb": f"{local_train['peak_mb']:.0f}",
        "local_monitor_s": _s(local_mon.get("wall")),
        "local_monitor_peak_mb": f"{local_mon['peak_mb']:.0f}",
        "local_auc": _r(local_auc, 4),
        "auc_diff": "na" if auc_diff is None else f"{auc_diff:+.4f}",
        "drift_status": dask_drift["status"] if dask_drift else "na",
        "drifted": ",".join(dask_drift["drifted"]) if dask_drift and dask_drift["drifted"] else "none",
        "verdicts_agree": _b(agree),
        "scores_equal": _b(scores_equal),
        "target_met": _b(met),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    return 0 if met else 1


def _s(x: float | None) -> str:
    return "na" if x is None else f"{x:.1f}"


def _r(x: float | None, digits: int = 2) -> str:
    return "na" if x is None else f"{x:.{digits}f}"


def _b(x: bool | None) -> str:
    return "na" if x is None else str(x).lower()


def run_dask(
    args: argparse.Namespace, root: Path, limit: int, ids: list[str], problems: list[str]
) -> tuple[dict[str, Any], dict[str, Any], Any, dict[str, Any] | None]:
    """Train and monitor with ``model.engine: dask`` on a LocalCluster started here.

    This process's own client (memory figures) is not set as the current client: inside a
    ``with Client(...)`` block, ``xgboost.dask`` running on the library's client (the one
    ``mlops_core.ops.cluster.dask_client`` opens on ``dask.address``) finds the outer client
    through ``distributed.wait``'s ``default_client()`` and blocks its own event loop: the fit
    hangs forever (``dask_client`` does not make its client current)."""
    import logging

    from distributed import Client, LocalCluster

    from mlops_core.monitor.run import monitor
    from mlops_core.registry.registry import Registry
    from mlops_core.train.pipeline import train_and_register

    # "Unmanaged memory use is high" and the like: the figures below say it once
    logging.getLogger("distributed.worker.memory").setLevel(logging.ERROR)
    logging.getLogger("distributed.nanny.memory").setLevel(logging.ERROR)
    say(f"dask: starting a LocalCluster of {args.workers} workers")
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            memory_limit=limit,
            processes=True,
            dashboard_address=":0",
            local_directory=str(root / "dask-scratch"),
        ) as cluster,
        # not made the current client: the library's own client (dask.address) must be the
        # one xgboost.dask finds (see the note in run_dask's docstring)
        Client(cluster, set_as_default=False) as client,
    ):
        client.run(_warm_worker)
        idle = [
            _status_kb(pid, "VmRSS") or 0 for pid in worker_pids(client).values()
        ]
        say(
            f"dask: {cluster.scheduler_address}; idle workers (libraries imported): "
            f"{', '.join(f'{kb / 1024:.0f}' for kb in idle)} MB of {limit / 2**20:.0f} MiB"
        )
        settings = settings_from(
            raw_config(
                root,
                engine="dask",
                project=PROJECT,
                trials=args.trials,
                trees=args.trees,
                address=cluster.scheduler_address,
                search_rows=args.search_rows,
            )
        )
        train_fig, out, err = dask_phase(
            "dask train",
            client,
            lambda: train_and_register(
                settings, trigger="bench", progress=lambda m: say(f"  dask train: {m}")
            ),
            limit,
        )
        if err is not None:
            problems.append(f"dask training failed: {err!r}"[:500])
            return train_fig, {}, None, None
        say(
            f"dask train: v{out.version} {out.status}, {out.rows:,} rows, roc_auc "
            f"{out.metrics.get('roc_auc'):.4f}, params {out.best_params}"
        )
        reg = Registry(settings)
        if reg.champion() != out.version:
            reg.approve(out.version, by="bench", comment="bench/scale.py: the Dask-trained model")
        mon_fig, res, err = dask_phase(
            "dask monitor", client, lambda: monitor(settings, batch_ids=ids), limit
        )
        if err is not None:
            problems.append(f"dask monitoring failed: {err!r}"[:500])
            return train_fig, mon_fig, out, None
        drift = drift_result(res)
        say(f"dask monitor: {drift['status']}, drifted {drift['drifted']}, {drift['rows']:,} rows")
    for name, fig in (("training", train_fig), ("monitoring", mon_fig)):
        if fig["restarted"]:
            problems.append(f"{fig['restarted']} worker(s) restarted during {name}")
        if fig["over_limit"]:
            problems.append(
                f"worker peak RSS over the limit during {name}: "
                + ", ".join(f"{p / 2**20:.0f} MB" for p in fig["over_limit"])
            )
    return train_fig, mon_fig, out, drift


if __name__ == "__main__":
    sys.exit(main())
