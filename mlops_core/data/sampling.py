"""A seeded row sample that is the same however the rows are split into partitions.

Each row gets a pseudo-random key from its position (a SplitMix64 hash of the seed and the
position); the sample is the ``n`` rows with the smallest keys, in their original order. A
partition can keep its own ``n`` smallest keys and the partitions' picks merge into exactly the
sample of the whole (a bottom-k sketch), so the local path and the Dask path draw the same rows,
and the drift tests run on them give the same verdicts, not verdicts "within noise".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEY = "_sample_key"
POSITION = "_row_position"

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def row_keys(positions: np.ndarray, seed: int) -> np.ndarray:
    """The sample key of each row position (uint64): SplitMix64 of ``seed`` and position."""
    with np.errstate(over="ignore"):
        z = positions.astype(np.uint64) * _GOLDEN + np.uint64(seed % 2**64) * _M2
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def sample_index(rows: int, n: int, seed: int, offset: int = 0) -> np.ndarray:
    """Which of ``rows`` rows (positions ``offset`` on) hold the ``n`` smallest keys, in order."""
    if rows <= n:
        return np.arange(rows)
    keys = row_keys(np.arange(offset, offset + rows), seed)
    return np.sort(np.argpartition(keys, n - 1)[:n])


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of ``n`` rows of ``frame`` in their original order (all rows if fewer):
    the same rows as :func:`merge_picks` over any partitioning of it."""
    if len(frame) <= n:
        return frame
    return frame.iloc[sample_index(len(frame), n, seed)]


def pick(part: pd.DataFrame, n: int, seed: int, offset: int) -> pd.DataFrame:
    """A partition's candidates for the sample: its ``n`` rows of smallest key (positions
    ``offset`` on), each with its key and position, to :func:`merge_picks` later."""
    keys = row_keys(np.arange(offset, offset + len(part)), seed)
    out = part.assign(**{KEY: keys, POSITION: np.arange(offset, offset + len(part))})
    if len(out) > n:
        out = out.iloc[np.sort(np.argpartition(keys, n - 1)[:n])]
    return out


def merge_picks(picks: list[pd.DataFrame], n: int) -> pd.DataFrame:
    """The ``n`` rows of smallest key among partitions' :func:`pick` results, still with their
    key and position columns, in position order."""
    nonempty = [p for p in picks if len(p)]
    if not nonempty:
        return picks[0].iloc[:0] if picks else pd.DataFrame()
    both = pd.concat(nonempty, ignore_index=True)
    if len(both) > n:
        both = both.iloc[np.argpartition(both[KEY].to_numpy(), n - 1)[:n]]
    return both.sort_values(POSITION, kind="stable", ignore_index=True)


def without_keys(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in (KEY, POSITION) if c in frame.columns])
