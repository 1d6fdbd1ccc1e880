"""`mlops serve` against `mlflow models serve`: the same champion, the same rows.

    .venv/bin/python bench/serve.py                       # 500 single-row requests, 200 batches
    .venv/bin/python bench/serve.py --requests 200 --batch-requests 10 --keep

Setup (not measured): a temporary project on a real MLflow server (``start_mlflow``), the demo
stream (8,000 rows, 16 weeks) ingested, one model trained with ``train_and_register`` (2
trials) and approved, so that it is the ``champion``. Then two servers, each in its own process
group, on free ports:

* ``ours``: ``mlops serve --config mlops.yaml --port P``, with the prediction log on (the
  default): ``POST /predict`` with one record (a JSON object) or a list of records;
* ``mlflow``: ``mlflow models serve -m models:/<project>@champion --env-manager local``:
  ``POST /invocations`` with ``{"dataframe_records": [...]}``.

Both get the same rows, the demo data's feature columns as plain JSON values (no target, no id
or time column), over one keep-alive ``httpx.Client`` each, one request at a time:

* single-row latency: ``--warmup`` requests (not counted), then ``--requests`` requests; p50 and
  p99 of the client-side wall time in ms;
* batch throughput: 1,000-row requests (two warm-up ones first), until ``--batch-requests``
  requests or ``--batch-seconds`` seconds, whichever comes first; rows per second;
* the same under load, for information: ``--clients`` clients sending 1,000-row requests back
  to back for ``--load-seconds`` (on a 2-core machine the clients take CPU from the server).

Answers are parsed with orjson for both, so the client's JSON parser is not what is measured.

Every answer must be a 200 with one prediction per row; anything else counts as a failure. The
last line is ``key=value`` pairs; exit status 1 when the issue's target is missed: our batch
throughput under 3x MLflow's, our single-row p99 at 20 ms or more, or any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

PROJECT = "bench-serve"
MIN_RATIO_BATCH = 3.0
MAX_P99_MS = 20.0
BATCH_ROWS = 1000


def venv_bin() -> Path:
    here = REPO / ".venv" / "bin"
    return here if (here / "mlops").exists() else Path(sys.executable).parent


# setup -----------------------------------------------------------------------------------------
def make_project(tmp: Path, mlflow_url: str) -> tuple[Path, list[dict[str, Any]], str]:
    """Ingest the demo stream, train and approve a champion; returns (mlops.yaml, the feature
    rows as plain JSON records, the champion's version)."""
    from registry_helpers import (
        DEMO_FEATURES,
        demo_frame,
        demo_settings,
        ingest_frame,
        write_config,
    )

    from mlops_core.registry.registry import Registry
    from mlops_core.train.pipeline import train_and_register

    settings = demo_settings(tmp, mlflow_url, PROJECT, gate={"smoke_test": False})
    frame = demo_frame(8000, days=112)
    batches = ingest_frame(settings, frame, tmp / "landing")
    t0 = time.perf_counter()
    out = train_and_register(settings, trigger="bench")
    reg = Registry(settings)
    if reg.champion() is None:
        if out.version is None:
            raise SystemExit(
                f"training registered nothing (status {out.status}): {out.gate.reasons}"
            )
        res = reg.approve(out.version, by="bench", comment="bench/serve.py")
        if res.outcome != "applied":
            raise SystemExit(f"approving v{out.version} was refused: {res}")
    champion = reg.champion()
    assert champion is not None
    print(
        f"ingested {len(frame):,} rows in {batches} batches; trained and approved "
        f"v{champion} in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    cfg = write_config(settings, tmp / "mlops.yaml")
    columns = [c for cols in DEMO_FEATURES.values() for c in cols]
    # through JSON: plain ints, floats, strings and booleans, as a client sends them
    records = json.loads(frame[columns].to_json(orient="records"))
    return cfg, records, champion


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def wait_ready(
    name: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    url: str,
    ready: Callable[[Any], bool],
    timeout_s: float = 180.0,
) -> float:
    """Poll ``url`` until ``ready(response)``; returns the seconds it took."""
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise SystemExit(
                f"{name} exited ({proc.returncode}) before it was ready:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        try:
            r = httpx.get(url, timeout=2.0)
            if ready(r):
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(
        f"{name} not ready after {timeout_s:.0f} s:\n" + log.read_text(errors="replace")[-3000:]
    )


# measuring -------------------------------------------------------------------------------------
class Target:
    """One server: how a list of records becomes a request, and how many answers came back."""

    def __init__(
        self,
        name: str,
        url: str,
        path: str,
        body: Callable[[list[dict[str, Any]]], Any],
        answers: Callable[[Any], list[Any]],
    ) -> None:
        import httpx

        self.name, self.path, self.body, self.answers = name, path, body, answers
        self.client = httpx.Client(
            base_url=url, timeout=120.0, headers={"content-type": "application/json"}
        )
        self.failures = 0
        self.first_failure: str | None = None

    def encode(self, records: list[dict[str, Any]]) -> bytes:
        return json.dumps(self.body(records)).encode()

    def post(self, content: bytes, rows: int) -> Any:
        """Send one request; returns its parsed answer, or None (counted) when it failed."""
        try:
            r = self.client.post(self.path, content=content)
            if r.status_code != 200:
                raise ValueError(f"HTTP {r.status_code}: {r.text[:300]}")
            payload = orjson.loads(r.content)  # the same fast parser for both servers
            n = len(self.answers(payload))
            if n != rows:
                raise ValueError(f"{n} answers for {rows} rows")
            return payload
        except Exception as e:
            self.failures += 1
            self.first_failure = self.first_failure or f"{type(e).__name__}: {e}"
            return None

    def close(self) -> None:
        self.client.close()


def single_row(t: Target, bodies: list[bytes], warmup: int, requests: int) -> list[float]:
    """Latencies (ms) of ``requests`` one-row requests, after ``warmup`` uncounted ones."""
    for i in range(warmup):
        t.post(bodies[i % len(bodies)], 1)
    times = []
    for i in range(requests):
        body = bodies[(warmup + i) % len(bodies)]
        t0 = time.perf_counter()
        t.post(body, 1)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def batches(
    t: Target, bodies: list[bytes], requests: int, seconds: float
) -> tuple[float, int, float]:
    """(rows per second, requests sent, seconds) of sequential 1,000-row requests."""
    for body in bodies[:2]:
        t.post(body, BATCH_ROWS)
    sent = 0
    t0 = time.perf_counter()
    while sent < requests and (sent == 0 or time.perf_counter() - t0 < seconds):
        t.post(bodies[sent % len(bodies)], BATCH_ROWS)
        sent += 1
    wall = time.perf_counter() - t0
    return sent * BATCH_ROWS / wall, sent, wall


def under_load(t: Target, bodies: list[bytes], clients: int, seconds: float) -> float:
    """Rows per second with ``clients`` clients sending 1,000-row requests back to back for
    ``seconds`` (each its own connection): the server's capacity, not one client's wait."""
    import threading

    done = [0] * clients
    stop_at = time.perf_counter() + seconds

    def run(k: int) -> None:
        other = Target(t.name, str(t.client.base_url), t.path, t.body, t.answers)
        i = k
        while time.perf_counter() < stop_at:
            if other.post(bodies[i % len(bodies)], BATCH_ROWS) is not None:
                done[k] += BATCH_ROWS
            i += clients
        with lock:
            t.failures += other.failures
            t.first_failure = t.first_failure or other.first_failure
        other.close()

    lock = threading.Lock()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(done) / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def ours_proba(payload: dict[str, Any]) -> list[float]:
    return [float(p["probabilities"]["1"]) for p in payload["predictions"]]


def mlflow_proba(payload: dict[str, Any]) -> list[float]:
    return [float(p["proba_1"]) for p in payload["predictions"]]


# main ------------------------------------------------------------------------------------------
def main() -> int:
    head, rest = __doc__.split("\n\n", 1)
    ap = argparse.ArgumentParser(
        description=head, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--requests",
        type=int,
        default=500,
        help="single-row requests measured per server (default 500)",
    )
    ap.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="single-row warm-up requests per server, not measured (default 50)",
    )
    ap.add_argument(
        "--batch-requests",
        type=int,
        default=200,
        help="1,000-row requests per server, at most (default 30)",
    )
    ap.add_argument(
        "--batch-seconds",
        type=float,
        default=10.0,
        help="stop sending batches after this long (default 10)",
    )
    ap.add_argument(
        "--clients",
        type=int,
        default=4,
        help="concurrent clients for the throughput under load (default 4)",
    )
    ap.add_argument(
        "--load-seconds", type=float, default=8.0, help="seconds of load per server (default 8)"
    )
    ap.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (workspace, server logs)"
    )
    args = ap.parse_args()

    from mlops_core.ops.services import MLFLOW, free_port, start_mlflow, stop_service

    # XGBoost's OpenMP threads spin while they wait; passive waiting, for both servers alike
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    mlflow_ws = tmp / "mlflow-server"
    bin_dir = venv_bin()
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    ours_proc = mlflow_proc = None
    targets: list[Target] = []
    try:
        server = start_mlflow(mlflow_ws)
        cfg, records, champion = make_project(tmp, server.url)

        port = free_port()
        ours_log = tmp / "ours.log"
        ours_proc = start(
            [
                str(bin_dir / "mlops"),
                "serve",
                "--config",
                str(cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            ours_log,
            env,
        )
        ours_url = f"http://127.0.0.1:{port}"
        took = wait_ready(
            "mlops serve",
            ours_proc,
            ours_log,
            f"{ours_url}/health",
            lambda r: r.status_code == 200 and r.json().get("ready") is True,
        )
        print(f"mlops serve ready in {took:.1f} s", flush=True)

        mport = free_port()
        mlflow_log = tmp / "mlflow-serve.log"
        mlflow_proc = start(
            [
                str(bin_dir / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{PROJECT}@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mport),
            ],
            mlflow_log,
            dict(env, MLFLOW_TRACKING_URI=server.url),
        )
        mlflow_url = f"http://127.0.0.1:{mport}"
        took = wait_ready(
            "mlflow models serve",
            mlflow_proc,
            mlflow_log,
            f"{mlflow_url}/ping",
            lambda r: r.status_code == 200,
        )
        print(f"mlflow models serve ready in {took:.1f} s", flush=True)

        ours = Target("ours", ours_url, "/predict", lambda recs: recs, lambda p: p["predictions"])
        mlf = Target(
            "mlflow",
            mlflow_url,
            "/invocations",
            lambda recs: {"dataframe_records": recs},
            lambda p: p["predictions"],
        )
        targets = [ours, mlf]

        # the same rows, in the same order, for both
        one = [[r] for r in records]
        many = [
            records[i : i + BATCH_ROWS] for i in range(0, len(records) - BATCH_ROWS + 1, BATCH_ROWS)
        ]
        ours_single = [json.dumps(r[0]).encode() for r in one]  # one record: a JSON object
        mlflow_single = [mlf.encode(r) for r in one]
        ours_many = [ours.encode(b) for b in many]
        mlflow_many = [mlf.encode(b) for b in many]

        # do both answer the same? (one batch; not timed)
        a, b = ours.post(ours_many[0], BATCH_ROWS), mlf.post(mlflow_many[0], BATCH_ROWS)
        max_diff = (
            max(abs(x - y) for x, y in zip(ours_proba(a), mlflow_proba(b), strict=True))
            if a is not None and b is not None
            else float("nan")
        )

        lat = {
            ours.name: single_row(ours, ours_single, args.warmup, args.requests),
            mlf.name: single_row(mlf, mlflow_single, args.warmup, args.requests),
        }
        thr = {
            ours.name: batches(ours, ours_many, args.batch_requests, args.batch_seconds),
            mlf.name: batches(mlf, mlflow_many, args.batch_requests, args.batch_seconds),
        }
        load = {
            t.name: under_load(t, many_bodies, args.clients, args.load_seconds)
            for t, many_bodies in ((ours, ours_many), (mlf, mlflow_many))
        }
    finally:
        for t in targets:
            t.close()
        stop(ours_proc)
        stop(mlflow_proc)
        stop_service(mlflow_ws, MLFLOW)
        if args.keep:
            print(f"kept {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    failures = sum(t.failures for t in targets)
    print(
        f"\nchampion v{champion}; {args.requests} single-row requests after {args.warmup} "
        f"warm-up ones; batches of {BATCH_ROWS:,} rows"
    )
    print(
        f"{'server':<8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'batch rows/s':>13} "
        f"{'batches':>8} {'batch s':>8} {f'{args.clients} clients rows/s':>18} "
        f"{'failures':>9}"
    )
    for t in targets:
        ms, (rate, sent, wall) = lat[t.name], thr[t.name]
        print(
            f"{t.name:<8} {pct(ms, 50):8.2f} {pct(ms, 99):8.2f} {max(ms):8.2f} "
            f"{rate:13,.0f} {sent:8d} {wall:8.1f} {load[t.name]:18,.0f} {t.failures:9d}"
        )
    print(
        f"largest difference in P(class 1) between the two on {BATCH_ROWS:,} rows: {max_diff:.2g}"
    )
    for t in targets:
        if t.first_failure:
            print(f"{t.name}: first failure: {t.first_failure}")
    ours_p99 = pct(lat["ours"], 99)
    ratio = thr["ours"][0] / thr["mlflow"][0]
    ratio_load = load["ours"] / load["mlflow"]
    met = ratio >= MIN_RATIO_BATCH and ours_p99 < MAX_P99_MS and failures == 0
    print(
        f"ours_p50_ms={pct(lat['ours'], 50):.2f} ours_p99_ms={ours_p99:.2f} "
        f"mlflow_p50_ms={pct(lat['mlflow'], 50):.2f} "
        f"mlflow_p99_ms={pct(lat['mlflow'], 99):.2f} "
        f"ours_batch_rows_s={thr['ours'][0]:.0f} mlflow_batch_rows_s={thr['mlflow'][0]:.0f} "
        f"ratio_batch={ratio:.2f} ours_load_rows_s={load['ours']:.0f} "
        f"mlflow_load_rows_s={load['mlflow']:.0f} ratio_load={ratio_load:.2f} "
        f"failures={failures} target_met={str(met).lower()}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
