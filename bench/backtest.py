"""Does the default retraining policy earn its place? Backtests on real and synthetic streams.

    .venv/bin/python bench/backtest.py                    # every data set, both windows
    .venv/bin/python bench/backtest.py --quick            # SEA + car_loan, one window
    .venv/bin/python bench/backtest.py --markdown bench/RESULTS-backtest.md

Data sets: ``../shared/data/car_loan.parquet`` (time-ordered, weekly-ish batches of 1,000
rows), ``../shared/data/employment_ma.parquet`` (100 batches in file order; its time column is
a year), and seeded River streams (SEA, Agrawal, Hyperplane; 50,000 rows in 100 batches, two
concept changes each, abrupt and gradual), written by
:func:`mlops_core.simulate.synthetic_stream`.

Every data set is replayed with the policy that ``mlops init`` writes (``RetrainingConfig()``
defaults), against ``static``, ``every-batch``, ``drift`` and ``online`` (River's
``ARFClassifier`` learning each batch's labels as they arrive, as the batch strategies get
them), with two training windows: all labelled rows (``mlops init``'s default) and the newest
20,000 rows.

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
WINDOWS = [None, "20000"]
MAX_GAP, MAX_SHARE = 0.01, 0.20


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
    ap.add_argument("--quick", action="store_true", help="SEA (abrupt) and car_loan only, "
                    "the default window only")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    ap.add_argument("--json", type=Path, help="also write every result here")
    ap.add_argument("--only", help="comma-separated data sets to run (e.g. car_loan,sea-abrupt)")
    ap.add_argument("--rows", type=int, default=50_000, help="rows of each synthetic stream "
                    "(batches of rows/100)")
    args = ap.parse_args()

    from mlops_core.backtest import load_replay, run_backtest

    rows: list[dict[str, Any]] = []
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, kw in datasets(Path(tmp), args.quick, args.rows):
            if args.only and label not in args.only.split(","):
                continue
            for window in WINDOWS[:1] if args.quick else WINDOWS:
                replay = load_replay(path, initial_batches=5, window=window, **kw)
                res = run_backtest(replay, STRATEGIES)
                results.append(res.to_dict() | {"label": label, "window": window or "all"})
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
                row = {"data": label, "window": window or "all", "batches": res.batches,
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
