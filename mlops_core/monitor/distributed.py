"""Monitoring's current rows on Dask (``model.engine: dask``): each batch file is a partition,
read and reduced in a worker to its candidates for the seeded sample (:mod:`mlops_core.data.
sampling`), and the candidates merged in a tree, two at a time. The result is the
very sample the local path draws from the same batches, so Evidently's tests give the same
verdicts on it; no process holds more than a partition and a few samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mlops_core.data.sampling import merge_picks, pick, without_keys
from mlops_core.store import lean_memory, read_chunks, read_released

FAN_IN = 2  # picks merged by one task (8 took a 512 MiB worker past its limit: 8 x 50,000 rows)


def _pick_file(path: str, n: int, seed: int, offset: int) -> pd.DataFrame:
    """The file's candidates, picked chunk by chunk (a worker holds a chunk and a pick, not
    the file: the keys are by position, so this is the file's pick)."""
    best: pd.DataFrame | None = None
    with lean_memory():
        for batch in read_chunks(path):
            chunk = pick(batch.to_pandas(), n, seed, offset)
            best = chunk if best is None else merge_picks([best, chunk], n)
            offset += batch.num_rows
    return best if best is not None else pick(read_released(path), n, seed, offset)


def sample_batches(
    client: object, paths: list[Path], n: int, seed: int
) -> tuple[pd.DataFrame, int]:
    """The seeded sample of at most ``n`` rows of the batch files ``paths`` taken as one frame
    in this order (all of their rows when fewer), and how many rows they hold: the row counts
    come from the files' footers, the sample from the cluster."""
    from dask import delayed

    if not paths:
        return pd.DataFrame(), 0
    counts = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    parts = [
        delayed(_pick_file)(str(p), n, seed, int(o)) for p, o in zip(paths, offsets, strict=True)
    ]
    while True:  # at least one merge: it orders the rows
        parts = [
            delayed(merge_picks)(parts[i : i + FAN_IN], n) for i in range(0, len(parts), FAN_IN)
        ]
        if len(parts) == 1:
            break
    sample = client.compute(parts[0]).result()  # type: ignore[attr-defined]
    return without_keys(sample).reset_index(drop=True), int(sum(counts))
