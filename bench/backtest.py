"""Does the default retraining policy earn its place? Backtests on real and synthetic streams.

    .venv/bin/python bench/backtest.py                    # every data set (about an hour)
    .venv/bin/python bench/backtest.py --quick            # SEA + car_loan
    .venv/bin/python bench/backtest.py --windows all,20000   # also with a 20,000-row window
    .venv/bin/python bench/backtest.py --markdown bench/RESULTS-backtest.md
    .venv/bin/python bench/backtest.py --speed            # cheap strategies, 100 batches

Data sets: ``../shared/data/car_loan.parquet`` (time-ordered, weekly-ish batches of 1,000
rows), ``../shared/data/employment_ma.parquet`` (100 batches in file order; its time column is
a year), and seeded River streams (SEA, Agrawal, Hyperplane; 50,000 rows in 100 batches, two
concept changes each, abrupt and gradual), written by
:func:`mlops_core.simulate.synthetic_stream`.

Every data set is replayed with the policy that ``mlops init`` writes (``RetrainingConfig()``
defaults), against ``static``, ``every-batch``, ``drift`` and ``online`` (River's
``ARFClassifier`` learning each batch's labels as they arrive, as the batch strategies get
them), with the training window ``mlops init`` writes (every labelled row; ``--windows`` adds
others, e.g. ``all,20000``).

The bar (issue 5), per data set and window: the policy's mean accuracy within 1 point of
``every-batch``, retraining on at most 20% of the batches, and above ``static``, ``drift`` and
``online``. The last line is ``key=value`` pairs; exit status 1 when any case misses the bar.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
STRATEGIES = ["static", "every-batch", "drift", "online", "policy"]
MAX_GAP, MAX_SHARE = 0.01, 0.20
CHEAP = ["static", "periodic:10", "performance", "drift", "detector:adwin",
         "detector:page-hinkley", "detector:ddm"]
SPEED_TARGET = 30.0  # seconds: "well under a minute"


def datasets(tmp: Path, quick: bool, rows: int) -> list[tuple[str, Path, dict[str, Any]]]:
    from mlops_core.simulate import synthetic_stream

    out = []
    synth = [("sea", "abrupt")] if quick else [(n, d) for n in ("sea", "agrawal", "hyperplane")
                                                for d in ("abrupt", "gradual")]
    for name, drift in synth:
        df, points = synthetic_stream(name, rows, drift=drift, seed=7)
        path = tmp / f"{name}_{drift}.parquet"
        df.to_parquet(path)
        path.with_name(path.stem + ".drift.json").write_text(json.dumps(
            {"drift_points": [{"row": p} for p in points]}))
        out.append((f"{name}-{drift}", path, {"target": "y", "batch_size": rows // 100}))
    out.append(("car_loan", SHARED / "car_loan.parquet",
                {"target": "repaid", "time_column": "timestamp", "batch_size": 1000}))
    if not quick:
        out.append(("employment_ma", SHARED / "employment_ma.parquet",
                    {"target": "employed", "batch_size": 2777}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="SEA (abrupt) and car_loan only")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--json", type=Path, help="also write every result here")
    ap.add_argument("--only", help="comma-separated data sets to run (e.g. car_loan,sea-abrupt)")
    ap.add_argument("--windows", default="all", help="training windows to replay, comma-"
                    "separated: all (every labelled row, mlops init's default), a row count or a "
                    "period, e.g. all,20000")
    ap.add_argument("--rows", type=int, default=50_000, help="rows of each synthetic stream "
                    "(batches of rows/100)")
    ap.add_argument("--speed", action="store_true", help="only time the cheap strategies "
                    f"({', '.join(CHEAP)}) over 100 batches of a 100,000-row stream")
    args = ap.parse_args()
    if args.speed:
        return speed()

    from mlops_core.backtest import load_replay, run_backtest

    rows: list[dict[str, Any]] = []
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, kw in datasets(Path(tmp), args.quick, args.rows):
            if args.only and label not in args.only.split(","):
                continue
            for window in args.windows.split(","):
                replay = load_replay(path, initial_batches=5,
                                     window=None if window == "all" else window, **kw)
                res = run_backtest(replay, STRATEGIES)
                results.append(res.to_dict() | {"label": label, "window": window})
                by = {s.name: s for s in res.strategies}
                pol, every = by["policy"], by["every-batch"]
                share = pol.retrains / res.batches
                checks = {
                    "near_every_batch": pol.mean_metric >= every.mean_metric - MAX_GAP,
                    "retrain_share": share <= MAX_SHARE,
                    "beats_static": pol.mean_metric > by["static"].mean_metric,
                    "beats_drift": pol.mean_metric > by["drift"].mean_metric,
                    "beats_online": pol.mean_metric > by["online"].mean_metric,
                }
                row = {"data": label, "window": window, "batches": res.batches,
                       **{n: by[n].mean_metric for n in STRATEGIES},
                       "policy_retrains": pol.retrains, "policy_share": share,
                       "every_cpu": by["every-batch"].train_cpu_s,
                       "policy_cpu": pol.train_cpu_s + pol.monitor_cpu_s,
                       "ok": all(checks.values()),
                       "missed": [k for k, v in checks.items() if not v]}
                rows.append(row)
                print(f"{label:20s} window={row['window']:6s} " + " ".join(
                    f"{n}={by[n].mean_metric:.4f}" for n in STRATEGIES)
                    + f" policy_retrains={pol.retrains}/{res.batches} "
                    + ("ok" if row["ok"] else "MISSED " + ",".join(row["missed"])), flush=True)
    if args.markdown:
        args.markdown.write_text(markdown(rows), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(results, default=str), encoding="utf-8")
    gaps = [r["policy"] - r["every-batch"] for r in rows]
    ok = all(r["ok"] for r in rows)
    print(f"cases={len(rows)} cases_ok={sum(r['ok'] for r in rows)} "
          f"worst_gap_to_every_batch={min(gaps):.4f} "
          f"max_policy_retrain_share={max(r['policy_share'] for r in rows):.2f} "
          f"wall_s={time.perf_counter() - t0:.0f} bar_met={str(ok).lower()}")
    return 0 if ok else 1


def speed() -> int:
    """Issue 5: a 100-batch backtest of the cheap strategies on 100k rows in well under a
    minute. Wall time of the whole replay (reading, splitting, every strategy)."""
    from mlops_core.backtest import load_replay, run_backtest
    from mlops_core.simulate import synthetic_stream

    with tempfile.TemporaryDirectory() as tmp:
        df, _ = synthetic_stream("sea", 100_000, seed=7)
        path = Path(tmp) / "sea.parquet"
        df.to_parquet(path)
        t0 = time.perf_counter()
        replay = load_replay(path, target="y", batch_size=1000, initial_batches=5)
        res = run_backtest(replay, CHEAP)
        wall = time.perf_counter() - t0
    for st in res.strategies:
        print(f"{st.name:16s} mean={st.mean_metric:.4f} retrains={st.retrains} "
              f"wall_s={st.wall_s:.1f}")
    print(f"batches={res.batches} rows=100000 cheap_wall_s={wall:.1f} target_s={SPEED_TARGET} "
          f"met={str(wall < SPEED_TARGET).lower()}")
    return 0 if wall < SPEED_TARGET else 1


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| data | window | static | every-batch | drift | online (ARF) | **policy** | "
            "policy retrains | CPU s every-batch / policy | bar |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['data']} | {r['window']} | {r['static']:.4f} | {r['every-batch']:.4f} | "
        f"{r['drift']:.4f} | {r['online']:.4f} | **{r['policy']:.4f}** | "
        f"{r['policy_retrains']}/{r['batches']} ({r['policy_share']:.0%}) | "
        f"{r['every_cpu']:.0f} / {r['policy_cpu']:.0f} | "
        f"{'met' if r['ok'] else 'missed: ' + ', '.join(r['missed'])} |\n" for r in rows)
    return head + body


if __name__ == "__main__":
    sys.exit(main())
