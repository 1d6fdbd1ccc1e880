"""Ingest throughput and peak memory, against a plain pandas round trip of the same data.

    .venv/bin/python bench/ingest.py                 # employment_ma.parquet + 5M-row demo stream
    .venv/bin/python bench/ingest.py --rows 1000000 --skip-employment --repeat 3
    .venv/bin/python bench/ingest.py --profile       # also cProfile our ingest, print hotspots

Every measured job runs in a fresh subprocess of this script, so its peak RSS (``ru_maxrss`` of
the child, via ``os.wait4``) is that job's alone; wall time is measured inside the child around
the work only (imports excluded). Two jobs per data set:

* ``ours``: ``mlops_core.data.ingest.ingest`` of the file into a fresh workspace (id, time and
target
  columns and the features declared; ``data.limits.chunk_rows`` = 100,000; batches of 100,000
  rows for the demo stream, one per year for employment);
* ``pandas``: ``pandas.read_parquet`` of the file, then ``DataFrame.to_parquet`` to a temp file.

Memory bounded by the chunk size is shown by running both on two sizes of the demo stream
(``--rows`` and a fifth of it): our peak should barely grow, pandas' grows with the file.

The last line printed is ``key=value`` pairs. Exit status 1 when the issue's target is missed:
ours more than 2x the pandas wall time on a data set, or our peak RSS growing more than 1.5x
from the small to the large demo file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# the parent process stays light (no pandas): it only spawns jobs and prints figures
EMPLOYMENT = Path(
    os.environ.get(
        "MLOPS_BENCH_EMPLOYMENT",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "employment_ma.parquet",
    )
)
CHUNK_ROWS = 100_000
DEMO_BATCH_ROWS = 100_000
DEMO_ROW_GROUP = 1_000_000  # row groups as pyarrow writes them by default (about 1M rows)
MAX_WALL_RATIO = 2.0
MAX_MEM_GROWTH = 1.5
RESULT_TAG = "BENCH_RESULT "

EMPLOYMENT_SPEC: dict[str, Any] = {
    "id_column": "id",
    "time_column": "year",
    "target": "employed",
    "features": {
        "numeric": ["AGEP"],
        "categorical": [
            "SCHL",
            "MAR",
            "RELP",
            "DIS",
            "ESP",
            "CIT",
            "MIG",
            "MIL",
            "ANC",
            "NATIVITY",
            "DEAR",
            "DEYE",
            "DREM",
            "SEX",
            "RAC1P",
        ],
    },
    "batch": {"period": "YS"},
}


# child jobs ---------------------------------------------------------------------------------
def _emit(result: dict[str, Any]) -> None:
    result["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(RESULT_TAG + json.dumps(result), flush=True)


def job_generate(out_dir: Path, rows: int, small_rows: int) -> None:
    """Write the demo stream (``rows``) and its first ``small_rows`` rows as Parquet files,
    in row groups of ``DEMO_ROW_GROUP``, plus the spec (columns, features) the ingest needs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_core.demo.stream import ID, TARGET, TIME, generate_stream

    t0 = time.perf_counter()
    stream = generate_stream(rows, days=365, seed=42)
    frame = stream.frame
    big, small = out_dir / f"demo_{rows}.parquet", out_dir / f"demo_{small_rows}.parquet"
    schema = pa.Schema.from_pandas(frame.iloc[:1], preserve_index=False)
    for path, n in ((big, rows), (small, small_rows)):
        with pq.ParquetWriter(path, schema) as w:
            for lo in range(0, n, DEMO_ROW_GROUP):
                piece = frame.iloc[lo : min(lo + DEMO_ROW_GROUP, n)]
                w.write_table(pa.Table.from_pandas(piece, schema=schema, preserve_index=False))
    spec = {
        "id_column": ID,
        "time_column": TIME,
        "target": TARGET,
        "features": stream.features,
        "batch": {"size": DEMO_BATCH_ROWS},
    }
    (out_dir / "demo_spec.json").write_text(json.dumps(spec))
    _emit(
        {
            "wall_s": time.perf_counter() - t0,
            "big": str(big),
            "small": str(small),
            "big_mb": big.stat().st_size / 2**20,
            "small_mb": small.stat().st_size / 2**20,
        }
    )


def job_floor() -> None:
    """Interpreter plus the imports both jobs pay: the floor under every peak below."""
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import mlops_core.data.ingest  # noqa: F401

    _emit({"wall_s": 0.0, "rows": 0})


def job_pandas(path: Path, work: Path) -> None:
    import pandas as pd

    out = work / "roundtrip.parquet"
    t0 = time.perf_counter()
    df = pd.read_parquet(path)
    df.to_parquet(out, index=False)
    wall = time.perf_counter() - t0
    _emit({"wall_s": wall, "rows": len(df)})


def job_ours(path: Path, work: Path, spec: dict[str, Any], profile: Path | None) -> None:
    from mlops_core.config import parse_config
    from mlops_core.data.ingest import ingest

    raw = {
        "project": "bench",
        "data": {**spec, "limits": {"chunk_rows": CHUNK_ROWS}},
        "storage": {"workspace": str(work / "workspace")},
    }
    settings = parse_config(raw, source="bench/ingest.py", environ={})
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        report = prof.runcall(ingest, settings, [path])
        wall = time.perf_counter() - t0
        prof.dump_stats(profile)
    else:
        t0 = time.perf_counter()
        report = ingest(settings, [path])
        wall = time.perf_counter() - t0
    rows_in = sum(o.rows for o in report.outcomes)
    _emit(
        {
            "wall_s": wall,
            "rows": rows_in,
            "accepted": report.count("accepted"),
            "quarantined": report.count("quarantined"),
            "duplicate": report.count("duplicate"),
            "rows_accepted": report.rows,
            "reasons": sorted({o.reason for o in report.outcomes if o.status != "accepted"}),
        }
    )


# the parent -----------------------------------------------------------------------------------
def run_job(*job_args: str) -> dict[str, Any]:
    """Run one job in a fresh interpreter; its figures plus the child's peak RSS in MB."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_job", *job_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"job {' '.join(job_args)} failed with status {proc.returncode}")
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_TAG)]
    if not lines:
        raise SystemExit(f"job {' '.join(job_args)} printed no result:\n{out}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_TAG) :])
    result["peak_mb"] = usage.ru_maxrss / 1024  # KB on Linux
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def warm_cache(path: Path) -> None:
    """Read the file once so neither job pays for a cold page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def measure(name: str, path: Path, spec_file: Path, work: Path, repeat: int) -> dict[str, Any]:
    """Best wall time and highest peak RSS over ``repeat`` runs of each job, alternating."""
    warm_cache(path)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "pandas": []}
    for i in range(repeat):
        for kind in ("pandas", "ours"):
            job_dir = work / f"{name}-{kind}-{i}"
            job_dir.mkdir(parents=True)
            runs[kind].append(run_job(kind, str(path), str(job_dir), str(spec_file)))
            shutil.rmtree(job_dir, ignore_errors=True)  # keep the disk clean between runs
            print(
                f"  {name:<14} {kind:<6} run {i + 1}/{repeat}: "
                f"{runs[kind][-1]['wall_s']:7.2f} s  {runs[kind][-1]['peak_mb']:7.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    out: dict[str, Any] = {"dataset": name}
    for kind, rs in runs.items():
        out[kind] = {
            "wall_s": min(r["wall_s"] for r in rs),
            "peak_mb": max(r["peak_mb"] for r in rs),
            "cpu_s": min(r["cpu_s"] for r in rs),
            **{k: v for k, v in rs[-1].items() if k not in ("wall_s", "peak_mb", "cpu_s")},
        }
    out["rows"] = out["pandas"]["rows"]
    return out


def profile_ours(name: str, path: Path, spec_file: Path, work: Path, top: int = 25) -> None:
    import pstats

    job_dir = work / f"{name}-profile"
    job_dir.mkdir(parents=True)
    stats_file = work / f"{name}.pstats"
    r = run_job("ours", str(path), str(job_dir), str(spec_file), str(stats_file))
    shutil.rmtree(job_dir, ignore_errors=True)
    print(
        f"\n== cProfile of ours on {name} ({r['wall_s']:.2f} s under the profiler; "
        f"stats in {stats_file})"
    )
    for key in ("cumulative", "tottime"):
        print(f"-- top {top} by {key}")
        pstats.Stats(str(stats_file), stream=sys.stdout).strip_dirs().sort_stats(key).print_stats(
            top
        )


def fmt_table(results: list[dict[str, Any]]) -> str:
    head = [
        "dataset",
        "rows",
        "ours s",
        "pandas s",
        "ours rows/s",
        "pandas rows/s",
        "ours peak MB",
        "pandas peak MB",
        "wall ratio",
    ]
    body = []
    for r in results:
        o, p = r["ours"], r["pandas"]
        body.append(
            [
                r["dataset"],
                f"{r['rows']:,}",
                f"{o['wall_s']:.2f}",
                f"{p['wall_s']:.2f}",
                f"{r['rows'] / o['wall_s']:,.0f}",
                f"{r['rows'] / p['wall_s']:,.0f}",
                f"{o['peak_mb']:,.0f}",
                f"{p['peak_mb']:,.0f}",
                f"{o['wall_s'] / p['wall_s']:.2f}",
            ]
        )
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Rows per second and peak memory of mlops_core ingest (Parquet in, batch "
        "store out) against a plain pandas read_parquet + to_parquet of the same "
        "file, each job in its own fresh process. Data: employment_ma.parquet and a "
        "generated demo stream. Target: within 2x of pandas' wall time, and peak "
        "memory bounded by the chunk size, not the file size. Prints a table, then "
        "one line of key=value figures; exits 1 when the target is missed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--rows",
        type=int,
        default=5_000_000,
        help="rows of the generated demo stream; a fifth of it is the small file of "
        "the memory-growth comparison",
    )
    ap.add_argument(
        "--skip-employment",
        action="store_true",
        help=f"leave out {EMPLOYMENT.name} (path: $MLOPS_BENCH_EMPLOYMENT)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each job; the best wall time and the highest peak are kept",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp folder (generated files, profiles) and print its path",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, run ours once more per data set under cProfile and print "
        "the top functions (not part of the measured figures)",
    )
    ap.add_argument("--_job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rows < 10 or args.repeat < 1:
        ap.error("--rows must be at least 10 and --repeat at least 1")
    return args


def child(job: list[str]) -> None:
    kind, *rest = job
    if kind == "generate":
        job_generate(Path(rest[0]), int(rest[1]), int(rest[2]))
    elif kind == "floor":
        job_floor()
    elif kind == "pandas":
        job_pandas(Path(rest[0]), Path(rest[1]))
    elif kind == "ours":
        spec = json.loads(Path(rest[2]).read_text())
        job_ours(Path(rest[0]), Path(rest[1]), spec, Path(rest[3]) if len(rest) > 3 else None)
    else:
        raise SystemExit(f"unknown job {kind}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._job:
        child(args._job)
        return 0
    small_rows = max(args.rows // 5, 1)
    if small_rows < 5 * CHUNK_ROWS:
        print(
            f"note: the small demo file ({small_rows:,} rows) is not many chunks of "
            f"{CHUNK_ROWS:,} rows: the memory-growth figures mean little below --rows "
            f"{25 * CHUNK_ROWS:,}",
            file=sys.stderr,
        )
    work = Path(tempfile.mkdtemp(prefix="mlops-bench-ingest-"))
    started = time.perf_counter()
    try:
        print(f"workdir {work}; chunk_rows={CHUNK_ROWS:,}, {os.cpu_count()} CPUs", file=sys.stderr)
        gen = run_job("generate", str(work), str(args.rows), str(small_rows))
        print(
            f"  generated demo stream: {args.rows:,} rows ({gen['big_mb']:.0f} MB) and "
            f"{small_rows:,} rows ({gen['small_mb']:.0f} MB) in {gen['wall_s']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        demo_spec = work / "demo_spec.json"
        floor = run_job("floor")
        results = []
        if not args.skip_employment:
            if not EMPLOYMENT.is_file():
                raise SystemExit(
                    f"{EMPLOYMENT} not found: set $MLOPS_BENCH_EMPLOYMENT or pass --skip-employment"
                )
            emp_spec = work / "employment_spec.json"
            emp_spec.write_text(json.dumps(EMPLOYMENT_SPEC))
            results.append(measure("employment", EMPLOYMENT, emp_spec, work, args.repeat))
        big = measure(f"demo-{_short(args.rows)}", Path(gen["big"]), demo_spec, work, args.repeat)
        small = measure(
            f"demo-{_short(small_rows)}", Path(gen["small"]), demo_spec, work, args.repeat
        )
        results += [big, small]

        print()
        print(fmt_table(results))
        print(
            f"(peak = max RSS of the job's process; interpreter + imports alone: "
            f"{floor['peak_mb']:.0f} MB. chunk_rows={CHUNK_ROWS:,}; wall = best of "
            f"{args.repeat}, imports excluded)"
        )
        for r in results:
            o = r["ours"]
            print(
                f"  {r['dataset']}: ours accepted {o['accepted']} batch(es), quarantined "
                f"{o['quarantined']}, duplicate {o['duplicate']}; cpu ours {o['cpu_s']:.1f} s, "
                f"pandas {r['pandas']['cpu_s']:.1f} s"
                + (f"; not accepted: {o['reasons']}" if o["reasons"] else "")
            )
        if args.profile:
            for r, path, spec in (
                [(results[0], EMPLOYMENT, work / "employment_spec.json")]
                if not args.skip_employment
                else []
            ) + [(big, Path(gen["big"]), demo_spec)]:
                profile_ours(r["dataset"], path, spec, work)

        figures: dict[str, Any] = {}
        ratios = {}
        for r, key in ([(results[0], "employment")] if not args.skip_employment else []) + [
            (big, "demo")
        ]:
            ratios[key] = r["ours"]["wall_s"] / r["pandas"]["wall_s"]
            figures[f"ratio_wall_{key}"] = f"{ratios[key]:.2f}"
            figures[f"rows_per_s_ours_{key}"] = f"{r['rows'] / r['ours']['wall_s']:.0f}"
            figures[f"rows_per_s_pandas_{key}"] = f"{r['rows'] / r['pandas']['wall_s']:.0f}"
        growth_ours = big["ours"]["peak_mb"] / small["ours"]["peak_mb"]
        growth_pandas = big["pandas"]["peak_mb"] / small["pandas"]["peak_mb"]
        unaccepted = sum(r["ours"]["quarantined"] for r in results)
        target_met = (
            all(v <= MAX_WALL_RATIO for v in ratios.values()) and growth_ours <= MAX_MEM_GROWTH
        )
        figures |= {
            "mem_ours_mb": f"{big['ours']['peak_mb']:.0f}",
            "mem_pandas_mb": f"{big['pandas']['peak_mb']:.0f}",
            "mem_floor_mb": f"{floor['peak_mb']:.0f}",
            "mem_growth_ours": f"{growth_ours:.2f}",
            "mem_growth_pandas": f"{growth_pandas:.2f}",
            "demo_rows": args.rows,
            "demo_small_rows": small_rows,
            "quarantined_batches": unaccepted,
            "elapsed_s": f"{time.perf_counter() - started:.0f}",
            "target_met": str(target_met).lower(),
        }
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        print(" ".join(f"{k}={v}" for k, v in figures.items()))
        return 0 if target_met else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _short(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return str(n)


if __name__ == "__main__":
    sys.exit(main())
