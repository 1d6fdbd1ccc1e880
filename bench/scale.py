"""Training and monitoring on Dask over a window several times a worker's memory limit, and the
local path on the same data.

    .venv/bin/python bench/scale.py          # the issue's target: 13.4M rows, 3x 512 MiB (~45 min)
    .venv/bin/python bench/scale.py --quick  # a smoke run, 600k rows (~4 min): size not judged
    .venv/bin/python bench/scale.py --rows 3000000 --memory-limit 768MiB --min-ratio 0.4 --keep

Setup (not measured): a seeded synthetic binary-classification stream (an id, a time column, 12
float64 features, 2 string categoricals, a 0/1 target that is a noisy logistic function of some
features, a covariate shift in x5, x8 and channel's mix over the last 40% of the months) is
written as ``--files`` Parquet files, one per month, and ingested into a fresh project through
``mlops_core.data.ingest.ingest`` (one batch per file), in a child process. The window's size is
what pandas holds of it as the library reads it (the batch store keeps the categoricals as
dictionaries, so they read back as ``category``): ``memory_usage(deep=True)`` of every batch
file, summed (``window_mb``). It must be at least ``--min-ratio`` (3) times a worker's limit.

The cluster: a ``distributed.LocalCluster`` (``--workers`` processes, 1 thread each,
``memory_limit`` each: Dask pauses a worker at 80% of it and its nanny kills it at 95%) started
in a child process of this script, so that this process (the driver: the process that trains or
monitors) holds no scheduler, and its address passed as ``dask.address``.

Measured, each phase's wall time around the library call (imports excluded):

* Dask path, ``model.engine: dask``, this process the driver: ``train_and_register`` (whole
  window, ``window.choose`` off, ``--trials`` trials, no smoke test, auto promotion: the first
  version becomes champion), then ``monitor`` of every batch against the champion. Each
  worker's peak RSS is its kernel high-water mark (``VmHWM``, reset through
  ``/proc/PID/clear_refs`` as each step of the training starts, so the step that peaked is
  named), with a 20 Hz poll beside it that notices a worker killed and restarted; the driver's
  peak the same way; pauses and restarts counted from the cluster's log.
* Local path, ``model.engine: local``, each job a child process of this script in the same
  workspace: training on the same window, registered under a model of its own
  (``bench-scale-local``: not compared with, nor refused as a copy of, the Dask-trained one),
  and monitoring the same batches against the same champion as the Dask run: the drift verdicts
  (the dataset verdict and the set of drifted columns) must be the Dask run's. Unlimited: wall
  time, peak RSS (its own ``ru_maxrss``), hold-out ROC AUC, drift verdicts. Then ``limited``:
  the same two jobs held to the cluster's total memory (``--workers`` x ``memory_limit``), by
  default as Dask holds its workers (killed once the process's RSS passes the limit, polled at
  20 Hz); ``--limit-how as`` sets ``RLIMIT_AS`` instead (address space, which also counts
  libraries and thread arenas: a harsher limit). Reported as ``failed`` (why, and in which step)
  or as its wall time.

The local monitoring's failure or timeout is reported, not a miss (the drift verdicts are then
compared in the --quick run and in ``tests/test_dask.py``, on data it can monitor). When the
Dask training fails, the monitoring phases (both paths) run against the local path's
model (``monitor_champion=local``), so that monitoring is still measured. A Dask phase still
running after ``--phase-timeout`` s has hung (``dask_train=hung``: e.g. workers paused at 80%
of their limit by memory the process does not give back) and its cluster is killed (a fresh one
serves the next phase); a local job still running after ``--local-timeout`` s is killed and
reported as ``>N`` seconds. At the default size most of the time is the local baseline's: its
training (~10 min on 2 cores) and its monitoring (over 20 min: the label-free estimate scores
200 simulated label draws over every row).

The last line is ``key=value`` pairs; ``problem: ...`` lines above it say what missed. The exit
status is 1 when a target is missed: the Dask training or monitoring failed, a worker was
restarted or its peak RSS passed its memory limit, the window is under ``--min-ratio`` times the
limit (not judged with ``--quick``), the hold-out AUCs of the two paths differ by more than
0.01, or the drift verdicts differ.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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
DRIFT_FROM = 0.6  # share of the months after which the covariate shift starts
DEFAULT_ROWS, QUICK_ROWS = 13_400_000, 600_000
_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """``512MiB``, ``1GiB``, ``500MB``, ``536870912`` -> bytes (Dask's own parser)."""
    from dask.utils import parse_bytes

    return int(parse_bytes(text))


def mib(n: float | None) -> str:
    return "na" if n is None else f"{n / 2**20:.0f}"


# data ------------------------------------------------------------------------------------------
def month_frame(i: int, files: int, rows: int, first_id: int, seed: int) -> Any:
    """Month ``i`` of the stream: ``rows`` rows, time-ordered. The target is a noisy logistic
    function of x0-x5, x7, x9 and both categoricals; from ``DRIFT_FROM`` of the months on, x5
    and x8 shift (x5's weight is small: the concept holds) and channel's mix changes."""
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
    logit = (
        1.1 * z[:, 0]
        - 0.8 * z[:, 1]
        + 0.6 * z[:, 2] * z[:, 3]
        + 0.8 * np.sin(2 * z[:, 4])
        + 0.15 * z[:, 5]
        + 0.5 * (z[:, 7] > 0.5)
        - 0.3 * np.abs(z[:, 9])
        + np.linspace(-0.6, 0.6, len(REGIONS))[region]
        + np.array([0.3, 0.0, -0.4, 0.2, -0.2])[channel]
        + rng.normal(scale=0.5, size=rows)
    )
    frame: dict[str, Any] = {"id": np.arange(first_id, first_id + rows, dtype=np.int64), "ts": ts}
    for k, col in enumerate(NUMERIC):  # different scales and locations, float64
        frame[col] = z[:, k] * (1 + k / 4) + k
    frame["region"] = np.array(REGIONS, dtype=object)[region]
    frame["channel"] = np.array(CHANNELS, dtype=object)[channel]
    frame["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(frame)


def raw_config(
    root: Path,
    *,
    engine: str,
    project: str,
    trials: int,
    trees: int,
    address: str | None = None,
    search_rows: int = 200_000,
) -> dict[str, Any]:
    """The project's configuration; the engines differ in ``model.engine`` and ``dask``."""
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
            # the whole window, which is what the Dask path trains on (it does not choose)
            "window": {"rows": None, "choose": False},
            "search": {"trials": trials, "timeout_s": None},
            "params": {"n_estimators": trees},
        },
        # the first version becomes champion; no slice rule (the synthetic slices are noise)
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
    _progress(f"ingested {len(ids)} batches in {ingest_s:.1f} s; measuring the window")
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


def job_cluster(address_file: Path, workers: int, limit: int, scratch: Path) -> None:
    """A LocalCluster until standard input closes (the parent ended or let it go)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        memory_limit=limit,
        processes=True,
        dashboard_address=":0",
        local_directory=str(scratch),
    ) as cluster:
        address_file.write_text(cluster.scheduler_address)
        sys.stdin.read()


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


def run_child(
    root: Path,
    tag: str,
    args: list[str],
    limit: int | None = None,
    how: str = "rss",
    echo: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """This script as a child job; with ``limit``, held to it (``how``: ``rss``, killed once
    its RSS passes it; ``as``: ``RLIMIT_AS``); killed after ``timeout`` s. Its progress lines
    are echoed (``echo``: the prefix). Returns its result with ``ok``, or ``ok`` false and
    ``why``."""
    import psutil

    out_path, err_path = root / f"{tag}.out", root / f"{tag}.err"
    preexec = None
    if limit is not None and how == "as":

        def preexec() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.perf_counter()
    killed_at, peak, said, late = None, 0, ["starting (imports)"], False
    with out_path.open("w") as out, err_path.open("w") as err, err_path.open() as tail:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--job", *args], stdout=out, stderr=err, preexec_fn=preexec
        )
        ps = psutil.Process(proc.pid)

        def follow() -> None:
            for line in tail.read().splitlines():
                if line.startswith(PROGRESS_TAG):
                    said.append(line[len(PROGRESS_TAG) :])
                    if echo:
                        say(f"  {echo}: {said[-1]}")

        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss
            except psutil.NoSuchProcess:
                break
            peak = max(peak, rss)
            if limit is not None and how == "rss" and rss > limit:
                proc.send_signal(signal.SIGKILL)
                killed_at = rss
                break
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.send_signal(signal.SIGKILL)
                late = True
                break
            follow()
            time.sleep(0.05)
        proc.wait()
        follow()
    wall = time.perf_counter() - t0

    def failed(why: str, peak_bytes: int, **more: Any) -> dict[str, Any]:
        return {"ok": False, "wall": wall, "peak_mb": peak_bytes / 2**20, "why": why, **more}

    if late:
        why = f"no end after {timeout:.0f} s (killed), while '{said[-1]}'"
        return failed(why, peak, late=True)
    if killed_at is not None:
        why = (
            f"killed at RSS {mib(killed_at)} MB > limit {mib(limit)} MB after {wall:.1f} s, "
            f"while '{said[-1]}'"
        )
        return failed(why, killed_at)
    found = [ln for ln in out_path.read_text().splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not found:
        lines = [ln for ln in err_path.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        why = f"{last[:300]} (exit status {proc.returncode} after {wall:.1f} s, while '{said[-1]}')"
        return failed(why, peak)
    result = json.loads(found[-1][len(RESULT_TAG) :])
    result["ok"] = True
    result["peak_mb"] = max(result["peak_mb"], peak / 2**20)
    return result


# the Dask path ---------------------------------------------------------------------------------
def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to VmRSS


class PeakWatch:
    """Peak RSS of some processes over a phase, per step: at each :meth:`step` each process's
    ``VmHWM`` is read (the previous step's peak) and reset. A poll at ``interval`` s beside it
    sees a process disappear (a worker killed) and keeps the highest RSS it saw."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.pids, self.interval = dict(pids), interval
        self.polled = dict.fromkeys(pids, 0)
        self.gone: set[str] = set()
        self.steps: list[tuple[str, dict[str, int]]] = []
        self._step = "start"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakWatch:
        for pid in self.pids.values():
            _reset_hwm(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.step("end")
        self._stop.set()
        self._thread.join()

    def step(self, name: str) -> None:
        with self._lock:
            peaks = {}
            for key, pid in self.pids.items():
                kb = _status_kb(pid, "VmHWM")
                if kb is not None and key not in self.gone:
                    peaks[key] = kb * 1024
                    _reset_hwm(pid)
            self.steps.append((self._step, peaks))
            self._step = name

    def _poll(self) -> None:
        import psutil

        procs = {}
        for key, pid in self.pids.items():
            try:
                procs[key] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                self.gone.add(key)
        while not self._stop.is_set():
            for key, p in procs.items():
                if key in self.gone:
                    continue
                try:
                    self.polled[key] = max(self.polled[key], p.memory_info().rss)
                except psutil.NoSuchProcess:
                    self.gone.add(key)
            self._stop.wait(self.interval)

    def peak(self, key: str) -> int:
        return max([self.polled.get(key, 0), *(p.get(key, 0) for _, p in self.steps)])

    def worst_step(self, keys: list[str]) -> tuple[str, int]:
        """The step in which any of ``keys`` peaked highest, and that peak."""
        best = ("", 0)
        for name, peaks in self.steps:
            top = max((peaks.get(k, 0) for k in keys), default=0)
            if top > best[1]:
                best = (name, top)
        return best


def worker_pids(client: Any) -> dict[str, int]:
    return dict(client.run(os.getpid))


def _warm_worker() -> int:
    """Import what a training task imports, so that the idle RSS counts the libraries."""
    import xgboost  # noqa: F401

    import mlops_core.monitor.distributed
    import mlops_core.train.distributed  # noqa: F401

    return os.getpid()


def _spilled(client: Any) -> int:
    """Bytes the workers hold spilled to disk now (the scheduler's heartbeat metrics)."""
    total = 0
    for w in client.scheduler_info(n_workers=-1).get("workers", {}).values():
        spilled = w.get("metrics", {}).get("spilled_bytes", {})
        total += int(spilled.get("disk", 0)) if isinstance(spilled, dict) else 0
    return total


def _log_counts(log: Path) -> dict[str, int]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return {
        "pauses": text.count("Pausing worker"),
        "restarts": text.count("Restarting worker"),
    }


def dask_phase(
    name: str, cluster: Cluster, fn: Any, limit: int, timeout: float
) -> tuple[dict[str, Any], Any]:
    """Run ``fn(step)`` (``step``: the progress callback) while watching the workers and this
    process. A phase still running after ``timeout`` s has hung (e.g. workers paused at 80% of
    their limit by memory Python freed but the process kept): the cluster is killed, which ends
    the call. Returns the phase's figures (``error`` set when ``fn`` raised or hung) and its
    result."""
    client = cluster.client
    before = worker_pids(client)
    workers = sorted(before)
    logged = _log_counts(cluster.log)
    spill = [0]
    stop = threading.Event()

    def watch_spill() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(Exception):  # a metrics read must not fail the phase
                spill[0] = max(spill[0], _spilled(client))

    spiller = threading.Thread(target=watch_spill, daemon=True)
    spiller.start()
    say(f"{name}: started")
    t0 = time.perf_counter()
    box: dict[str, Any] = {"result": None, "error": None}
    last = ["start"]
    hung = False
    with PeakWatch(before | {"driver": os.getpid()}) as watch:

        def step(msg: str) -> None:
            last[0] = msg
            watch.step(msg)
            say(f"  {name}: {msg}")

        def call() -> None:
            try:
                box["result"] = fn(step)
            except Exception as e:  # reported and judged, not raised
                box["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        caller.join(timeout)
        if caller.is_alive():
            hung = True
            rss = [_status_kb(pid, "VmRSS") for pid in before.values()]
            watch.step("(hung)")
            counts = _log_counts(cluster.log)
            box["error"] = (
                f"no end after {timeout:.0f} s: worker RSS "
                f"{', '.join(mib(kb * 1024 if kb else None) for kb in rss)} MB, "
                f"{counts['pauses'] - logged['pauses']} pause(s) logged; cluster killed"
            )
            say(f"{name}: hung for {timeout:.0f} s; killing the cluster")
            cluster.kill()
            caller.join(60)
    wall = time.perf_counter() - t0
    stop.set()
    spiller.join()
    after: dict[str, int] = {}
    if not hung:
        with contextlib.suppress(Exception):
            after = worker_pids(client)
    log_after = _log_counts(cluster.log)
    restarted = {a for a in workers if a in watch.gone or after.get(a) != before[a]}
    restarts = 0 if hung else max(len(restarted), log_after["restarts"] - logged["restarts"])
    peaks = [watch.peak(a) for a in workers]
    step_name, _ = watch.worst_step(workers)
    error = box["error"]
    fig: dict[str, Any] = {
        "wall": wall,
        "peaks": peaks,
        "peak_step": step_name,
        "driver_peak": watch.peak("driver"),
        "restarts": restarts,
        "pauses": log_after["pauses"] - logged["pauses"],
        "spilled": spill[0],
        "hung": hung,
        "error": error and f"{error} (in '{last[0]}')",
        "steps": [(s, dict(p)) for s, p in watch.steps],
    }
    say(
        f"{name}: {'FAILED' if error else 'done'} in {wall:.1f} s; worker peaks "
        f"{', '.join(mib(p) for p in peaks)} MB (limit {mib(limit)} MB; highest in "
        f"'{step_name[:60]}'); driver peak {mib(fig['driver_peak'])} MB; "
        f"pauses {fig['pauses']}, restarts {restarts}, spilled {mib(spill[0])} MB"
        + (f"\n    error: {fig['error']}" if error else "")
    )
    return fig, box["result"]


class Cluster:
    """A LocalCluster in a child process of this script (its own process group), and this
    process's client of it: never the default client, which the library's own client
    (``dask.address``) must be (Dask's waits use the current client)."""

    def __init__(self, root: Path, workers: int, limit: int) -> None:
        self.root, self.workers, self.limit = root, workers, limit
        self.log = root / "cluster.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Any = None
        self.address = ""

    def start(self) -> None:
        from distributed import Client

        address_file = self.root / "scheduler-address"
        address_file.unlink(missing_ok=True)
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--job",
                    "cluster",
                    str(address_file),
                    str(self.workers),
                    str(self.limit),
                    str(self.root / "dask-scratch"),
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while not address_file.exists() or not address_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the cluster did not start: see {self.log}")
            time.sleep(0.2)
        self.address = address_file.read_text().strip()
        self.client = Client(self.address, set_as_default=False)
        self.client.run(_warm_worker)
        idle = [(_status_kb(p, "VmRSS") or 0) * 1024 for p in worker_pids(self.client).values()]
        say(
            f"dask: LocalCluster at {self.address}; idle workers (libraries imported): "
            f"{', '.join(mib(b) for b in idle)} MB of {mib(self.limit)} MiB each"
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=10)
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def kill(self) -> None:
        """The whole cluster (its process group: the scheduler, nannies and workers)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# parent ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=Formatter)
    ap.add_argument(
        "--rows",
        type=int,
        help=f"rows of the stream, all in the window (default {DEFAULT_ROWS:,}: about 3x 512 "
        f"MiB in pandas; --quick: {QUICK_ROWS:,})",
    )
    ap.add_argument("--files", type=int, default=48, help="monthly files, one batch each")
    ap.add_argument(
        "--memory-limit",
        default="512MiB",
        help="memory_limit of each LocalCluster worker (Dask's syntax: 512MiB, 1GB, bytes)",
    )
    ap.add_argument("--workers", type=int, default=12, help="LocalCluster workers, 1 thread each")
    ap.add_argument(
        "--trials",
        type=int,
        default=1,
        help="model.search.trials (both paths); 1: both train with the default "
        "hyper-parameters, so the AUCs compare the engines alone",
    )
    ap.add_argument(
        "--trees", type=int, default=100, help="model.params n_estimators (early stopping under it)"
    )
    ap.add_argument(
        "--search-rows",
        type=int,
        default=100_000,
        help="dask.search_rows: each trial's sample (the sample is sent to every worker)",
    )
    ap.add_argument(
        "--min-ratio", type=float, default=3.0, help="window size / worker limit, at least"
    )
    ap.add_argument(
        "--limit-how",
        choices=["rss", "as"],
        default="rss",
        help="how the limited local runs are held: killed past the RSS (as Dask's nanny does), "
        "or RLIMIT_AS",
    )
    ap.add_argument("--skip-local-limited", action="store_true", help="no limited local runs")
    ap.add_argument(
        "--skip-local",
        action="store_true",
        help="the Dask path only, to investigate it: nothing compared, exit status 1",
    )
    ap.add_argument(
        "--phase-timeout",
        type=float,
        default=600,
        help="seconds after which a Dask phase counts as hung (the cluster is then killed)",
    )
    ap.add_argument(
        "--local-timeout",
        type=float,
        default=1200,
        help="seconds after which a local job is killed (reported as >N seconds)",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows: a smoke run")
    ap.add_argument("--dir", type=Path, help="work folder under this (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rows is None:
        args.rows = QUICK_ROWS if args.quick else DEFAULT_ROWS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.job:
        name, *rest = args.job
        if name == "prepare":
            job_prepare(Path(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif name == "cluster":
            job_cluster(Path(rest[0]), int(rest[1]), int(rest[2]), Path(rest[3]))
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
        f"x {mib(limit)} MiB; {os.cpu_count()} CPUs"
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
    say("prepare: generating and ingesting the stream (child process)")
    prep = run_child(
        root,
        "prepare",
        ["prepare", str(root), str(args.rows), str(args.files), str(args.seed)],
        echo="prepare",
    )
    if not prep["ok"]:
        raise SystemExit(f"setup failed: {prep['why']}")
    ids = prep["batch_ids"]
    ids_file = root / "batch_ids.json"
    ids_file.write_text(json.dumps(ids))
    ratio = prep["window_bytes"] / limit
    say(
        f"prepare: {prep['rows']:,} rows, {len(ids)} batches: {mib(prep['window_bytes'])} MiB "
        f"in pandas ({ratio:.2f}x a worker's limit), {mib(prep['disk_bytes'])} MiB of Parquet"
    )
    if ratio < args.min_ratio and not args.quick:
        problems.append(f"the window is {ratio:.2f}x a worker's limit, under {args.min_ratio}x")

    def cfg(name: str, raw: dict[str, Any]) -> Path:
        (root / name).write_text(json.dumps(raw))
        return root / name

    common = {"trials": args.trials, "trees": args.trees}
    train_cfg = cfg(
        "local-train.json", raw_config(root, engine="local", project=LOCAL_PROJECT, **common)
    )
    total = args.workers * limit
    cluster = Cluster(root, args.workers, limit)
    cluster.start()
    try:
        dask_raw = raw_config(
            root,
            engine="dask",
            project=PROJECT,
            address=cluster.address,
            search_rows=args.search_rows,
            **common,
        )
        dask_settings = settings_from(dask_raw)
        train_fig, out = dask_phase(
            "dask train",
            cluster,
            lambda step: train_and_register_(dask_settings, step),
            limit,
            args.phase_timeout,
        )
        if out is not None:
            say(
                f"dask train: v{out.version} {out.status}, {out.rows:,} rows, roc_auc "
                f"{out.metrics.get('roc_auc'):.4f}"
            )
        local_train: dict[str, Any] = {"ok": False, "why": "skipped"}
        if not args.skip_local:
            say("local train: started (child process)")
            local_train = run_child(
                root,
                "local-train",
                ["local-train", str(train_cfg)],
                echo="local train",
                timeout=args.local_timeout,
            )
            say(
                "local train: "
                + (
                    f"done in {local_train['wall']:.1f} s, peak {local_train['peak_mb']:.0f} "
                    f"MB, roc_auc {local_train['auc']:.4f}"
                    if local_train["ok"]
                    else f"failed: {local_train['why']}"
                )
            )
        if not cluster.alive:  # killed when the training hung
            cluster.stop()
            cluster.start()
            dask_raw["dask"]["address"] = cluster.address
        # monitoring: against the Dask-trained champion, or the local one if there is none
        champion_of = "dask" if out is not None else "local"
        mon_project = PROJECT if out is not None else LOCAL_PROJECT
        mon_settings = settings_from(dask_raw | {"project": mon_project})
        mon_cfg = cfg(
            "local-monitor.json",
            raw_config(root, engine="local", project=mon_project, **common),
        )
        mon_fig: dict[str, Any] = {"error": "no champion to monitor against"}
        dask_drift = None
        if out is not None or local_train["ok"]:
            from mlops_core.monitor.run import monitor

            mon_fig, res = dask_phase(
                "dask monitor",
                cluster,
                lambda step: monitor(mon_settings, batch_ids=ids),
                limit,
                args.phase_timeout,
            )
            if res is not None:
                dask_drift = drift_result(res)
                say(
                    f"dask monitor: {dask_drift['status']}, drifted {dask_drift['drifted']} "
                    f"(champion: the {champion_of} path's v{dask_drift['champion']})"
                )
    finally:
        cluster.stop()
    if args.skip_local:
        problems.append("--skip-local: no baseline, nothing compared")
        for p in problems:
            print(f"problem: {p}")
        return 1

    say("local monitor: started (child process)")
    local_mon = run_child(
        root,
        "local-monitor",
        ["local-monitor", str(mon_cfg), str(ids_file)],
        echo="local monitor",
        timeout=args.local_timeout,
    )
    say(
        "local monitor: "
        + (
            f"done in {local_mon['wall']:.1f} s, peak {local_mon['peak_mb']:.0f} MB, "
            f"{local_mon['status']}, drifted {local_mon['drifted']}"
            if local_mon["ok"]
            else f"failed: {local_mon['why']}"
        )
    )
    limited: dict[str, dict[str, Any]] = {}
    if not args.skip_local_limited:
        limited_cfg = cfg(
            "local-train-limited.json",
            raw_config(root, engine="local", project=LOCAL_PROJECT + "-limited", **common),
        )
        for job, cmd in (
            ("monitor", ["local-monitor", str(mon_cfg), str(ids_file)]),
            ("train", ["local-train", str(limited_cfg)]),
        ):
            say(f"local {job}, limited to {mib(total)} MiB ({args.limit_how}): started")
            r = run_child(
                root, f"limited-{job}", cmd, total, args.limit_how, timeout=args.local_timeout
            )
            limited[job] = r
            say(
                f"local {job}, limited: "
                + (f"done in {r['wall']:.1f} s" if r["ok"] else f"failed: {r['why']}")
            )
    return report(
        args,
        prep,
        ratio,
        limit,
        train_fig,
        mon_fig,
        out,
        dask_drift,
        champion_of,
        local_train,
        local_mon,
        limited,
        problems,
    )


def train_and_register_(settings: Any, step: Any) -> Any:
    from mlops_core.train.pipeline import train_and_register

    return train_and_register(settings, trigger="bench", progress=step)


def _took(r: dict[str, Any]) -> str:
    """A local job's wall time: seconds, ``>N`` when it was killed at the timeout, else
    ``failed``."""
    if r.get("ok"):
        return f"{r['wall']:.1f}"
    return f">{r['wall']:.0f}" if r.get("late") else "failed"


def report(
    args: argparse.Namespace,
    prep: dict[str, Any],
    ratio: float,
    limit: int,
    train_fig: dict[str, Any],
    mon_fig: dict[str, Any],
    out: Any,
    dask_drift: dict[str, Any] | None,
    champion_of: str,
    local_train: dict[str, Any],
    local_mon: dict[str, Any],
    limited: dict[str, dict[str, Any]],
    problems: list[str],
) -> int:
    """Print the summary and the last line; the exit status."""
    for name, fig in (("training", train_fig), ("monitoring", mon_fig)):
        if fig.get("error"):
            problems.append(f"dask {name} failed: {fig['error']}")
        if fig.get("restarts"):
            problems.append(
                f"{fig['restarts']} worker restart(s) during {name} (killed for memory)"
            )
        over = [p for p in fig.get("peaks", []) if p > limit]
        if over:
            problems.append(
                f"worker peak RSS over the limit during {name}: "
                + ", ".join(f"{mib(p)} MB" for p in over)
            )
    if not local_train["ok"]:
        problems.append(f"local training failed: {local_train['why']}")
    if not local_mon["ok"]:
        # the local path's failure or time on the same data is a result; the verdicts are
        # compared where it finishes (always at --quick's size, and in tests/test_dask.py)
        print(f"local monitoring did not finish: {local_mon['why']}")
        if args.quick:
            problems.append(f"local monitoring failed: {local_mon['why']}")
    dask_auc = out.metrics.get("roc_auc") if out is not None else None
    local_auc = local_train.get("auc")
    auc_diff = None
    if dask_auc is not None and local_auc is not None:
        auc_diff = dask_auc - local_auc
        if abs(auc_diff) > MAX_AUC_DIFF:
            problems.append(f"the hold-out AUCs differ by {auc_diff:+.4f}")
    agree, score_diff = None, None
    if dask_drift is not None and local_mon["ok"]:
        ours = (dask_drift["status"], dask_drift["drifted"])
        theirs = (local_mon["status"], local_mon["drifted"])
        agree = ours == theirs
        if not agree:
            problems.append(f"drift verdicts differ: dask {ours}, local {theirs}")
        diffs = [
            abs(v - local_mon["scores"].get(c, float("nan")))
            for c, v in dask_drift["scores"].items()
            if v is not None
        ]
        score_diff = max(diffs, default=0.0)
    for job, r in limited.items():
        print(
            f"local {job} held to {mib(args.workers * limit)} MiB: "
            + (f"done in {r['wall']:.1f} s" if r["ok"] else r["why"])
        )
    if dask_drift is not None:
        print(
            f"drift against the {champion_of} path's champion: dask {dask_drift['status']} "
            f"{dask_drift['drifted']}; local "
            + (f"{local_mon['status']} {local_mon['drifted']}" if local_mon["ok"] else "na")
        )
    for name, fig in (("train", train_fig), ("monitor", mon_fig)):
        for step, peaks in fig.get("steps", []):
            workers = [v for k, v in sorted(peaks.items()) if k != "driver"]
            print(
                f"dask {name} step peaks MB: workers {','.join(mib(v) for v in workers)} "
                f"driver {mib(peaks.get('driver'))}  <- {step[:80]}"
            )
    for p in problems:
        print(f"problem: {p}")

    def lim(job: str) -> str:
        r = limited.get(job)
        return "skipped" if r is None else (f"{r['wall']:.1f}s" if r["ok"] else "failed")

    all_peaks = [*train_fig.get("peaks", []), *mon_fig.get("peaks", [])]
    met = not problems
    figures = {
        "rows": prep["rows"],
        "batches": len(prep["batch_ids"]),
        "window_mb": mib(prep["window_bytes"]),
        "worker_limit_mb": mib(limit),
        "window_ratio": f"{ratio:.2f}",
        "workers": args.workers,
        "dask_train": "hung"
        if train_fig.get("hung")
        else "failed"
        if train_fig.get("error")
        else "ok",
        "dask_train_s": f"{train_fig['wall']:.1f}",
        "train_peak_worker_mb": ",".join(mib(p) for p in train_fig.get("peaks", [])) or "na",
        "monitor_champion": champion_of,
        "dask_monitor_s": f"{mon_fig['wall']:.1f}" if "wall" in mon_fig else "na",
        "monitor_peak_worker_mb": ",".join(mib(p) for p in mon_fig.get("peaks", [])) or "na",
        "max_peak_ratio": f"{max(all_peaks, default=0) / limit:.2f}",
        "worker_restarts": train_fig.get("restarts", 0) + mon_fig.get("restarts", 0),
        "worker_pauses": train_fig.get("pauses", 0) + mon_fig.get("pauses", 0),
        "spilled_mb": mib(max(train_fig.get("spilled", 0), mon_fig.get("spilled", 0))),
        "driver_train_peak_mb": mib(train_fig.get("driver_peak")),
        "driver_monitor_peak_mb": mib(mon_fig.get("driver_peak")),
        "local_limited_train": lim("train"),
        "local_limited_monitor": lim("monitor"),
        "local_train_s": _took(local_train),
        "local_train_peak_mb": f"{local_train.get('peak_mb', 0):.0f}",
        "local_monitor_s": _took(local_mon),
        "local_monitor_peak_mb": f"{local_mon.get('peak_mb', 0):.0f}",
        "dask_auc": "na" if dask_auc is None else f"{dask_auc:.4f}",
        "local_auc": "na" if local_auc is None else f"{local_auc:.4f}",
        "auc_diff": "na" if auc_diff is None else f"{auc_diff:+.4f}",
        "drift_status": dask_drift["status"] if dask_drift else "na",
        "drifted": ",".join(dask_drift["drifted"]) or "none" if dask_drift else "na",
        "verdicts_agree": "na" if agree is None else str(agree).lower(),
        "max_score_diff": "na" if score_diff is None else f"{score_diff:.2g}",
        "target_met": str(met).lower(),
    }
    print(" ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
