"""A seeded demo stream: loan applications and whether they defaulted.

Realistic enough to exercise the whole life cycle without downloads: numeric and categorical
features, yearly seasonality, a gradual covariate shift (incomes rise, applications move online),
an abrupt concept change (the same applicants default more often when their debt is high and they
applied online), and labels that arrive only ``label_delay`` after the application. The true drift
points are recorded with the data. Vectorised numpy: a million rows in about a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_core.data.batching import period_start

REGIONS = ["north", "south", "east", "west", "central"]
PURPOSES = ["car", "home", "education", "business", "personal"]
CHANNELS = ["branch", "broker", "online"]
TARGET = "defaulted"
TIME = "applied_at"
ID = "application_id"


@dataclass(frozen=True)
class DriftPoint:
    kind: str  # covariate_shift | concept_change
    start: datetime
    end: datetime  # == start for an abrupt change
    description: str


@dataclass
class DemoStream:
    frame: pd.DataFrame
    drift_points: list[DriftPoint]
    label_delay: timedelta
    seed: int
    features: dict[str, list[str]] = field(default_factory=dict)

    def drift_json(self) -> str:
        return json.dumps(
            {
                "seed": self.seed,
                "label_delay_days": self.label_delay.days,
                "drift_points": [asdict(p) for p in self.drift_points],
            },
            default=str,
            indent=2,
        )


def _ramp(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 before ``start``, 1 after ``end``, linear between (t, start, end in [0, 1])."""
    return np.clip((t - start) / max(end - start, 1e-9), 0.0, 1.0)


# the demo stream's features, by kind (as mlops.yaml lists them)
FEATURES = {
    "numeric": [
        "age",
        "income",
        "loan_amount",
        "credit_score",
        "debt_to_income",
        "employment_years",
    ],
    "categorical": ["region", "purpose", "channel"],
    "boolean": ["has_cosigner"],
}


def generate_stream(
    n_rows: int = 100_000,
    *,
    start: str | datetime = "2025-01-06",
    days: int = 365,
    seed: int = 42,
    shift: tuple[float, float] = (0.35, 0.65),
    concept_change_at: float = 0.75,
    label_delay_days: int = 14,
) -> DemoStream:
    """Generate ``n_rows`` applications spread evenly over ``days`` from ``start``.

    ``shift`` is the (start, end) of the gradual covariate shift and ``concept_change_at`` the
    moment of the abrupt concept change, both as fractions of the timeline.
    """
    if n_rows <= 0:
        raise ValueError("n_rows must be positive")
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start)
    span_s = days * 86_400
    offsets = np.sort(rng.uniform(0, span_s, n_rows))
    times = t0 + pd.to_timedelta(offsets.round(), unit="s")
    t = offsets / span_s  # position on the timeline, 0..1
    frame = pd.DataFrame(
        {ID: np.arange(1, n_rows + 1, dtype=np.int64), TIME: times}
        | _applicants(rng, n_rows, _ramp(t, *shift))
    )
    doy = times.dayofyear.to_numpy()
    season = np.sin(2 * np.pi * (doy - 15) / 365.25)  # peaks in spring, trough in autumn
    p = 1.0 / (1.0 + np.exp(-_default_logit(frame, season, t >= concept_change_at)))
    frame[TARGET] = (rng.uniform(size=n_rows) < p).astype(np.int64)
    # a drift point's time, to the microsecond (a datetime holds no nanoseconds)
    when = lambda x: (t0 + pd.Timedelta(seconds=x * span_s)).floor("us").to_pydatetime()  # noqa: E731
    points = [
        DriftPoint(
            "covariate_shift",
            when(shift[0]),
            when(shift[1]),
            "gradual: incomes +28%, debt-to-income +0.05, credit scores -15, "
            "online share 25% -> 60%",
        ),
        DriftPoint(
            "concept_change",
            when(concept_change_at),
            when(concept_change_at),
            "abrupt: default risk rises for high debt-to-income and online applicants",
        ),
    ]
    return DemoStream(
        frame,
        points,
        timedelta(days=label_delay_days),
        seed,
        {k: list(v) for k, v in FEATURES.items()},
    )


def _applicants(rng: np.random.Generator, n_rows: int, shift_w: np.ndarray) -> dict[str, Any]:
    """The features, drawn in a fixed order (the seed's stream); ``shift_w`` (0..1 per row) is
    how far the covariate shift has gone: incomes rise, applications move online."""
    age = np.clip(rng.normal(41, 12, n_rows), 18, 80).round().astype(np.int64)
    income = np.exp(rng.normal(10.8 + 0.25 * shift_w, 0.45, n_rows)).round(-2)
    loan_amount = np.clip(income * rng.lognormal(-0.9, 0.5, n_rows), 1_000, None).round(-2)
    credit_score = np.clip(rng.normal(680 - 15 * shift_w, 70, n_rows), 300, 850).round()
    dti = np.clip(rng.beta(2.2, 5.0, n_rows) + 0.05 * shift_w, 0, 1.5).round(4)
    employment_years = np.clip(rng.exponential(6.0, n_rows), 0, 45).round(1)
    region = np.array(REGIONS)[rng.choice(5, n_rows, p=[0.22, 0.24, 0.2, 0.18, 0.16])]
    purpose = np.array(PURPOSES)[rng.choice(5, n_rows, p=[0.35, 0.2, 0.1, 0.1, 0.25])]
    online_share = 0.25 + 0.35 * shift_w  # applications move online
    u = rng.uniform(size=n_rows)
    channel_idx = np.where(u < online_share, 2, np.where(u < online_share + 0.25, 1, 0))
    return {
        "age": age,
        "income": income,
        "loan_amount": loan_amount,
        "credit_score": credit_score,
        "debt_to_income": dti,
        "employment_years": employment_years,
        "region": region,
        "purpose": purpose,
        "channel": np.array(CHANNELS)[channel_idx],
        "has_cosigner": rng.uniform(size=n_rows) < 0.18,
    }


def _default_logit(df: pd.DataFrame, season: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """The log-odds of a default; from ``changed`` on, the concept differs."""
    dti, channel = df["debt_to_income"].to_numpy(), df["channel"].to_numpy()
    region, purpose, age = df["region"].to_numpy(), df["purpose"].to_numpy(), df["age"].to_numpy()
    logit = (
        -1.6
        - 0.012 * (df["credit_score"].to_numpy() - 680)
        + 2.4 * (dti - 0.3)
        - 0.35 * np.log(df["income"].to_numpy() / 50_000)
        + 0.5 * np.log(df["loan_amount"].to_numpy() / 20_000)
        - 0.04 * np.minimum(df["employment_years"].to_numpy(), 15)
        - 0.6 * df["has_cosigner"].to_numpy()
        + 0.25 * season
        + 0.015 * (age < 25) * (25 - age)
        + np.select([region == "south", region == "central"], [0.2, -0.15], 0.0)
        + np.select([purpose == "business", purpose == "home"], [0.35, -0.3], 0.0)
    )
    # concept change: the same applicants behave differently (a fraud wave online, high-debt
    # borrowers hit by a rate rise): no feature distribution moves at that moment
    return np.asarray(
        logit
        + changed * (3.0 * (dti - 0.3) + 0.9 * (channel == "online") - 0.6 * (channel == "branch"))
    )


# a landing folder with a few of the faults real feeds have ---------------------------------
@dataclass(frozen=True)
class LandedFile:
    path: Path
    fault: str | None  # what is wrong with it on purpose, or None


def write_landing(
    stream: DemoStream, folder: Path, *, period: str = "W", faults: bool = True
) -> list[LandedFile]:
    """Write the stream as one file per batch ``period`` into ``folder`` (CSV and Parquet
    alternating), the way an upstream system would drop them. Files whose labels are not yet
    due (within the label delay of the stream's end) carry no target column. With ``faults``,
    a few files are spoiled the way real feeds are: a renamed column, a corrupt file, a wrong
    encoding, a feature gone all-missing, and one file sent twice."""
    folder.mkdir(parents=True, exist_ok=True)
    df = stream.frame
    label_cutoff = df[TIME].max() - pd.Timedelta(stream.label_delay)
    groups = list(df.groupby(period_start(df[TIME], period), sort=True))
    n = len(groups)
    spoil = {}
    if faults and n >= 10:
        spoil = {
            n // 6: "renamed_column",
            n // 3: "corrupt_parquet",
            n // 2: "all_null_feature",
            (2 * n) // 3: "non_utf8_csv",
            (5 * n) // 6: "resent_duplicate",
        }
    out: list[LandedFile] = []
    prev: Path | None = None
    for i, (start, g) in enumerate(groups):
        g = g.reset_index(drop=True)
        if g[TIME].max() > label_cutoff:
            g = g.drop(columns=[TARGET])  # labels not in yet
        fault = spoil.get(i)
        stem = f"applications_{start:%Y-%m-%d}"
        as_csv = i % 2 == 0
        if fault == "renamed_column":
            g = g.rename(columns={"credit_score": "CreditScore"})
        elif fault == "all_null_feature":
            g = g.assign(income=np.nan)
        if fault == "corrupt_parquet":
            path = folder / f"{stem}.parquet"
            g.to_parquet(path, index=False)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])  # truncated upload
        elif fault == "non_utf8_csv":
            path = folder / f"{stem}.csv"
            g = g.assign(region=g["region"].where(g.index % 50 != 7, "nörth"))
            path.write_bytes(g.to_csv(index=False).encode("latin-1"))
        elif fault == "resent_duplicate" and prev is not None:
            path = folder / f"{prev.stem}_resent{prev.suffix}"
            path.write_bytes(prev.read_bytes())
            out.append(LandedFile(path, fault))
            fault = None
            path = folder / f"{stem}.{'csv' if as_csv else 'parquet'}"
            _write(g, path)
        else:
            path = folder / f"{stem}.{'csv' if as_csv else 'parquet'}"
            _write(g, path)
        out.append(LandedFile(path, fault))
        prev = path
    return out


def _write(df: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)


# River's synthetic concept-drift benchmarks -----------------------------------------------------
SYNTHETIC = ("sea", "agrawal", "hyperplane")


def synthetic_stream(
    name: str,
    n_rows: int = 100_000,
    *,
    drift: str = "abrupt",
    changes: int = 2,
    width: int | None = None,
    noise: float = 0.1,
    seed: int = 42,
) -> tuple[pd.DataFrame, list[int]]:
    """A seeded River benchmark stream (``sea``, ``agrawal``, ``hyperplane``) with ``changes``
    concept changes at evenly spaced rows: ``abrupt`` switches at once, ``gradual`` blends
    the two concepts over ``width`` rows (default a tenth of the stream) with a sigmoid, as
    River's ``ConceptDriftStream`` does; ``incremental`` (hyperplane only) turns the hyperplane
    a little with every row, so there is no change point. Returns the frame (features, ``y``)
    and the rows where each change is centred. Each concept draws its own rows, so only the
    concept changes."""
    if name not in SYNTHETIC:
        raise ValueError(f"unknown stream '{name}'; known: {', '.join(SYNTHETIC)}")
    if drift not in ("abrupt", "gradual", "incremental"):
        raise ValueError("drift is 'abrupt', 'gradual' or 'incremental'")
    if drift == "incremental":  # one concept that moves a little with every row
        if name != "hyperplane":
            raise ValueError("incremental drift: only the hyperplane stream moves by itself")
        return _incremental_hyperplane(n_rows, noise, seed), []
    frames = [_rows(_concept(name, k, noise, seed), n_rows) for k in range(changes + 1)]
    points = [round(n_rows * (k + 1) / (changes + 1)) for k in range(changes)]
    width = width or (max(n_rows // 10, 1) if drift == "gradual" else 1)
    which = _concept_of_each_row(n_rows, points, width, seed)
    out = frames[0].copy()
    for k in range(1, changes + 1):
        sel = which == k
        out.loc[sel] = frames[k].loc[sel].to_numpy()
    out = out.astype(frames[0].dtypes.to_dict())
    out.columns = [str(c) for c in out.columns]
    return out, points


def _rows(gen: Any, n_rows: int) -> pd.DataFrame:
    """The first ``n_rows`` of a River stream, features and ``y``."""
    from itertools import islice

    return pd.DataFrame([x | {"y": y} for x, y in islice(gen, n_rows)])


def _incremental_hyperplane(n_rows: int, noise: float, seed: int) -> pd.DataFrame:
    """One hyperplane concept that moves a little with every row."""
    from river.datasets import synth

    gen = synth.Hyperplane(
        seed=seed * 100,
        n_features=10,
        noise_percentage=noise / 2,
        n_drift_features=5,
        mag_change=0.001,
        sigma=0.1,
    )
    out = _rows(gen, n_rows)
    out.columns = [str(c) for c in out.columns]
    return out


def _concept(name: str, k: int, noise: float, seed: int) -> Any:
    """The generator of concept ``k`` of stream ``name``, seeded on its own."""
    from river.datasets import synth

    s = seed * 100 + k
    if name == "sea":
        return synth.SEA(variant=[0, 3, 1, 2][k % 4], noise=noise, seed=s)
    if name == "agrawal":
        return synth.Agrawal(
            classification_function=[0, 2, 5, 8][k % 4], seed=s, perturbation=noise / 2
        )
    return synth.Hyperplane(seed=s, n_features=10, noise_percentage=noise / 2)


def _concept_of_each_row(n_rows: int, points: list[int], width: int, seed: int) -> np.ndarray:
    """Past each change point, a row moves to the next concept (with a sigmoid's odds over
    ``width`` rows when the drift is gradual)."""
    rng = np.random.default_rng(seed)
    which = np.zeros(n_rows, dtype=int)
    idx = np.arange(n_rows)
    for p in points:
        prob = (
            1 / (1 + np.exp(np.clip(-4 * (idx - p) / width, -50, 50)))
            if width > 1
            else (idx >= p).astype(float)
        )
        which += (rng.uniform(size=n_rows) < prob).astype(int)
    return which
