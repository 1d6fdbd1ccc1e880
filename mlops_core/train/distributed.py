"""Training on Dask (``model.engine: dask``): the window as a ``dask.dataframe`` over the Parquet
batch store, the search's trials in parallel on the workers, XGBoost trained across the workers
through XGBoost's collective (set up as ``xgboost.dask`` sets it up).

The driver (the process that trains: `mlops train`, or the train flow) reads only the target
and time columns of the window's batches, so it cuts exactly the rows the local path cuts
(:func:`~mlops_core.train.fit.cut_window`) and gives each row its position in the window.
Each batch file is then a partition that a worker reads, keeps the window's rows of and tags
with their positions; the train, validation and hold-out rows are position ranges, so they
are the local path's rows too. Only samples come back to the driver (the search's, the
reference's, the leak check's: chosen by position, :mod:`mlops_core.data.sampling`) and the
hold-out, on which the gate compares the challenger with the champion as the local path does.

The search's trials fit in one worker each, on a time-ordered sample of at most
``dask.search_rows`` training rows, as many at once as the cluster has threads (Optuna asks and
is told in the driver; TPE with the constant liar, so trials running together try different
parameters). The chosen parameters then train on every training row across the workers, with
early stopping on every validation row, and the served model is refit on the whole window
with that number of trees: the local path's recipe, on data no worker holds whole. Each worker
streams its share of the rows, file by file, into XGBoost's histogram index
(:func:`dask_fit`), so what it holds is about a third of its share as a pandas frame.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xgboost as xgb

from mlops_core.config import Settings
from mlops_core.data.sampling import row_keys
from mlops_core.store import (
    BatchRecord,
    BatchStore,
    MetadataStore,
    lean_memory,
    read_chunks,
    read_released,
)
from mlops_core.train.evaluation import PRIMARY
from mlops_core.train.fit import (
    SearchResult,
    TrainedModel,
    TrainingData,
    WindowChoice,
    choose_window,
    cut_window,
    default_params,
    encode_y,
    labelled_batches,
    new_study,
    refuse_empty_window,
    suggest_params,
    time_split,
    trial_fit,
    unusable,
    window_batches,
    window_data,
    xgboost_params,
)
from mlops_core.train.pyfunc.tabular_model import prepare_features

POS = "_window_position"
_BATCH, _ROW = "_batch", "_row"


@dataclass
class DaskWindow:
    """The training window on the cluster: where each batch's rows sit in it."""

    paths: list[str]  # the batch files, oldest first
    positions: list[np.ndarray]  # per batch, per stored row: its position in the window, or -1
    columns: list[str]  # what the partitions read: features, target, time
    meta: pd.DataFrame  # the partitions' empty frame
    data: TrainingData  # lineage and time span (its frame: the target and time columns)
    target: str
    client: Any = None  # the cluster the positions were sent to (once: :meth:`_placed`)
    _shared: list[Any] | None = None
    _spans: list[tuple[int, int]] | None = None  # per batch: its first and last position

    @property
    def rows(self) -> int:
        return len(self.data.frame)

    def _placed(self) -> list[Any]:
        """The positions on the cluster, sent once (a window of 100 million rows has 800 MB
        of them: never in every task graph)."""
        if self._shared is None:
            self._shared = self.client.scatter(self.positions, hash=False)
        return self._shared

    def span(self, i: int) -> tuple[int, int]:
        """The first and last window position batch ``i`` holds ((0, -1) for none), found
        once: every frame and read asks, and a pass over the positions is a pass per row."""
        if self._spans is None:
            self._spans = [
                (int(p[p >= 0].min()), int(p.max())) if (p >= 0).any() else (0, -1)
                for p in self.positions
            ]
        return self._spans[i]

    def _overlapping(self, start: int, stop: int) -> list[int]:
        """The batches that hold any row at positions ``start`` to ``stop``."""
        spans = [self.span(i) for i in range(len(self.positions))]
        return [i for i, (lo, hi) in enumerate(spans) if lo <= hi and lo < stop and hi >= start]

    def frame(self, start: int = 0, stop: int | None = None, names: list[str] | None = None) -> Any:
        """The window's rows at positions ``start`` up to ``stop`` (columns ``names`` only, if
        given) as a ``dask.dataframe``: one partition per batch that holds any of them, its
        rows in window order."""
        import dask.dataframe as dd
        from dask import delayed

        stop = self.rows if stop is None else stop
        names = self.columns if names is None else names
        shared = self._placed()
        parts = [
            delayed(_read_rows)(self.paths[i], shared[i], names, start, stop)
            for i in self._overlapping(start, stop)
        ]
        meta = self.meta[[*names, POS]]
        return dd.from_delayed(parts, meta=meta, verify_meta=False)

    def rows_in(self, start: int, stop: int, wanted: np.ndarray | None = None) -> pd.DataFrame:
        """The rows at positions ``start`` to ``stop`` (only those in ``wanted``, sorted, if
        given), as one pandas frame in window order."""
        shared = self._placed()
        futures = []
        for i in self._overlapping(start, stop):
            pick = None
            if wanted is not None:
                first, last = self.span(i)
                lo, hi = np.searchsorted(wanted, [first, last + 1])
                if lo == hi:
                    continue
                pick = wanted[lo:hi]
            futures.append(
                self.client.submit(
                    _read_rows,
                    self.paths[i],
                    shared[i],
                    self.columns,
                    start,
                    stop,
                    pick,
                    pure=False,
                )
            )
        frames = _collected(futures)
        if not frames:
            return self.meta.copy()
        out = pd.concat(frames, ignore_index=True).sort_values(POS, kind="stable")
        return out.reset_index(drop=True)

    def sample(self, n: int, seed: int, start: int = 0, stop: int | None = None) -> Any:
        """A seeded sample of at most ``n`` of the rows at positions ``start`` to ``stop``, in
        window order (:mod:`mlops_core.data.sampling`'s keys over the positions)."""
        stop = self.rows if stop is None else stop
        pos = np.arange(start, stop)
        if len(pos) <= n:
            return self.rows_in(start, stop)
        pos = np.sort(pos[np.argpartition(row_keys(pos, seed), n - 1)[:n]])
        return self.rows_in(start, stop, pos)


def _collected(futures: list[Any]) -> list[pd.DataFrame]:
    """The futures' frames, each fetched as it is ready and then released: a worker holds a
    read's rows until the driver has them (gathered all at once, 12 workers of 512 MiB died
    holding the hold-out of a 13.4-million-row window)."""
    from distributed import as_completed

    done = as_completed(futures, with_results=True)
    futures.clear()
    frames = []
    for _, frame in done:
        if isinstance(frame, BaseException):  # a cancelled read comes as its error
            raise frame
        frames.append(frame)
    return frames


def _read_rows(
    path: str,
    positions: np.ndarray,
    names: list[str],
    start: int,
    stop: int,
    wanted: np.ndarray | None = None,
) -> pd.DataFrame:
    """A partition: the rows of the batch file at ``path`` at window positions ``start`` to
    ``stop`` (and in ``wanted``, if given), tagged with them, in window order. (Not
    ``columns``: Dask would take the parameter for its own.)"""
    with lean_memory():
        parts = list(_chunks(path, positions, names, start, stop, wanted))
    if not parts:
        empty = pq.read_schema(path).empty_table().to_pandas()[names]
        return empty.assign(**{POS: pd.Series(dtype="int64")})
    df = pd.concat(parts, ignore_index=True)
    del parts
    if df[POS].is_monotonic_increasing:  # as stored (a copy less)
        return df
    return df.sort_values(POS, kind="stable").reset_index(drop=True)


def _chunks(
    path: str,
    positions: np.ndarray,
    names: list[str],
    start: int,
    stop: int,
    wanted: np.ndarray | None = None,
) -> Iterator[pd.DataFrame]:
    """The rows :func:`_read_rows` keeps, a chunk of the file at a time
    (:func:`~mlops_core.store.read_chunks`)."""
    at = 0
    for batch in read_chunks(path, names):
        pos, at = positions[at : at + batch.num_rows], at + batch.num_rows
        keep = (pos >= start) & (pos < stop)
        if wanted is not None:
            keep &= np.isin(pos, wanted)
        if keep.any():
            yield batch.to_pandas()[keep].assign(**{POS: pos[keep]})


def _unusable_file(path: str, settings: Settings) -> str | None:
    """In a worker: why a model cannot train on the batch at ``path``, or None, checked a
    chunk at a time (read whole, three batches left a worker 60 to 90 MB larger for good);
    a bad batch is read whole once more, so the reason counts the whole file's values."""
    try:
        with lean_memory():
            for batch in read_chunks(path):
                if unusable(settings, batch.to_pandas()) is not None:
                    return unusable(settings, read_released(path))
        return None
    except (OSError, ValueError) as e:
        return f"its data cannot be read ({e})"


def read_window(
    settings: Settings, client: Any, meta: MetadataStore | None, since: datetime | None
) -> DaskWindow:
    """The training window of :func:`~mlops_core.train.fit.load_training_data`, its rows left
    on the cluster: the driver reads the target and time columns only."""
    store = BatchStore(settings.workspace)
    target, tcol = settings.data.target or "", settings.data.time_column
    narrow = [target] + ([tcol] if tcol else [])
    skipped: list[dict[str, str]] = []
    picked = window_batches(
        settings, labelled_batches(settings, meta), store, narrow, skipped=skipped
    )
    picked = _usable(settings, client, store, picked, skipped)
    refuse_empty_window(picked, skipped)
    frames = [
        f.assign(**{_BATCH: np.int32(i), _ROW: np.arange(len(f), dtype=np.int32)})
        for i, (_, f) in enumerate(picked)
    ]
    df, dropped = cut_window(settings, pd.concat(frames, ignore_index=True), since)
    positions = [np.full(len(f), -1, dtype=np.int64) for f in frames]
    for i, rows in df.groupby(_BATCH, sort=False).groups.items():
        positions[int(i)][df.loc[rows, _ROW].to_numpy()] = np.asarray(rows, dtype=np.int64)
    recs = [r for r, _ in picked]
    paths = [str(store.root / r.path) for r in recs]
    empty = pq.read_schema(paths[-1]).empty_table().to_pandas()  # the newest batch's columns
    meta_frame = empty.assign(**{POS: pd.Series(dtype="int64")})
    data = window_data(settings, df.drop(columns=[_BATCH, _ROW]), recs, dropped, skipped)
    return DaskWindow(paths, positions, list(empty.columns), meta_frame, data, target, client)


def _usable(
    settings: Settings,
    client: Any,
    store: BatchStore,
    picked: list[tuple[BatchRecord, pd.DataFrame]],
    skipped: list[dict[str, str]],
) -> list[tuple[BatchRecord, pd.DataFrame]]:
    """``picked`` without the batches a model cannot train on, each checked whole in a worker
    (the driver read two columns of it)."""
    paths = [str(store.root / r.path) for r, _ in picked]
    reasons = client.gather(client.map(_unusable_file, paths, settings=settings, pure=False))
    for (r, _), why in zip(picked, reasons, strict=True):
        if why is not None:
            skipped.append({"id": r.id, "reason": why})
    return [p for p, why in zip(picked, reasons, strict=True) if why is None]


def categories(window: DaskWindow, spec_kinds: dict[str, str]) -> dict[str, list[str]]:
    """The values of each categorical feature over the whole window: each partition's
    distinct values, their union taken in the driver (no shuffle)."""
    cats = [c for c, k in spec_kinds.items() if k == "categorical"]
    if not cats:
        return {}
    meta = pd.DataFrame({"column": pd.Series(dtype=object), "value": pd.Series(dtype=object)})
    found = window.frame(names=cats).map_partitions(_distinct, cats, meta=meta).compute()
    return {c: sorted(found.loc[found["column"] == c, "value"].unique().tolist()) for c in cats}


def _distinct(df: pd.DataFrame, cats: list[str]) -> pd.DataFrame:
    """A partition's distinct values of each of ``cats``, as text, in long form."""
    parts = [
        pd.DataFrame({"column": c, "value": pd.unique(df[c].dropna().astype(str))}) for c in cats
    ]
    return pd.concat(parts, ignore_index=True)


# search ------------------------------------------------------------------------------------
def _trial(
    kind: str,
    task: str,
    spec: dict[str, Any],
    params: dict[str, Any],
    rows: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
    seed: int,
) -> float:
    score, _ = trial_fit(kind, task, spec, params, rows, seed, n_jobs=1)
    return score


def parallel_search(
    client: Any,
    spec: dict[str, Any],
    rows: tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series],
    *,
    trials: int,
    timeout_s: float | None,
    seed: int,
    fixed: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """Optuna's TPE search (seeded, the defaults as its first trial, as the local search) with
    as many trials at once as the cluster has threads, each fitting on the (sample) ``rows``
    in one worker. Returns (best parameters, best score, history)."""
    from distributed import as_completed

    from mlops_core.ops.cluster import worker_threads

    task, metric = spec["task"], PRIMARY[spec["task"]]
    study = new_study("xgboost", task, trials, seed, parallel=True)
    shared = client.scatter(rows, broadcast=True, hash=False)
    running: dict[Any, tuple[Any, dict[str, Any]]] = {}
    done = as_completed()
    t0 = time.perf_counter()

    def submit() -> None:
        trial = study.ask()
        params = suggest_params(trial, "xgboost", task) | (fixed or {})
        future = client.submit(_trial, "xgboost", task, spec, params, shared, seed, pure=False)
        running[future] = (trial, params)
        done.add(future)

    for _ in range(min(trials, worker_threads(client))):
        submit()
    history: list[dict[str, Any]] = []
    for future in done:
        trial, params = running.pop(future)
        score = future.result()
        study.tell(trial, score)
        history.append({"trial": trial.number, "score": score, **params})
        if progress is not None:
            progress(f"trial {len(history)}/{trials}, best {metric} {study.best_value:.4f}")
        in_time = timeout_s is None or time.perf_counter() - t0 < timeout_s
        if len(history) + len(running) < trials and in_time:
            submit()
    best = study.best_trial
    params = next(h for h in history if h["trial"] == best.number)
    return (
        {k: v for k, v in params.items() if k not in ("trial", "score")},
        float(study.best_value),
        history,
    )


# training across the workers ---------------------------------------------------------------
def dask_fit(
    client: Any,
    window: DaskWindow,
    spec: dict[str, Any],
    params: dict[str, Any],
    seed: int,
    *,
    train: tuple[int, int],
    validation: tuple[int, int] | None = None,
) -> TrainedModel:
    """XGBoost trained across the workers on the window's rows at positions ``train``
    (early-stopped on those at ``validation``), returned as the local model the rest of the
    life cycle packages and serves: the same booster.

    Each worker takes an equal, contiguous share of the positions and streams it, one batch
    file at a time, into a ``QuantileDMatrix`` (XGBoost's histogram index: a byte per feature
    per row); the workers then train one model together through XGBoost's collective, whose
    tracker runs on the scheduler as ``xgboost.dask`` starts it. No worker holds its share as
    a frame: handing ``xgboost.dask`` the partitions took about 180 bytes a row per worker,
    this about 50 (``bench/scale.py``)."""
    import xgboost as xgb

    task, classes = spec["task"], spec.get("classes")
    kw = xgboost_params(task, params, seed)
    rounds, stopping = kw.pop("n_estimators"), kw.pop("early_stopping_rounds")
    model_cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    native = {k: v for k, v in model_cls(**kw).get_xgb_params().items() if v is not None}
    if task == "multiclass":
        native |= {"objective": "multi:softprob", "num_class": len(classes or [])}
    spans = [train] + ([validation] if validation is not None else [])
    workers = sorted(client.scheduler_info()["workers"])
    n = max(1, min(len(workers), *(hi - lo for lo, hi in spans)))
    shares = [[_share(window, lo, hi, k, n) for lo, hi in spans] for k in range(n)]
    collective = _collective_args(client, n)  # one tracker: the n tasks join it together
    futures = [
        client.submit(
            _fit_share,
            native,
            rounds,
            stopping if validation is not None else None,
            collective,
            spec,
            window.target,
            [path for path, _, _, _ in chain(*share)],
            [pos for _, pos, _, _ in chain(*share)],
            [[(lo, hi) for _, _, lo, hi in part] for part in share],
            key=f"xgboost-train-{k}-{uuid.uuid4().hex[:8]}",
            workers=[workers[k]],
            allow_other_workers=False,
            pure=False,
        )
        for k, share in enumerate(shares)
    ]
    raw = next(r for r in _trained(client, futures, workers[:n]) if r is not None)
    local = model_cls()
    local.load_model(bytearray(raw))
    best = local.best_iteration if validation is not None else None
    return TrainedModel("xgboost", task, spec, local, params, best)


def _share(
    window: DaskWindow, start: int, stop: int, k: int, n: int
) -> list[tuple[str, Any, int, int]]:
    """Worker ``k`` of ``n``'s part of the positions ``start`` to ``stop``: its contiguous
    ``n``-th, as (batch file, its positions on the cluster, from, to) per batch it touches."""
    lo, hi = start + (stop - start) * k // n, start + (stop - start) * (k + 1) // n
    shared = window._placed()
    return [(window.paths[i], shared[i], lo, hi) for i in window._overlapping(lo, hi)]


def _collective_args(client: Any, n: int) -> dict[str, Any]:
    """A tracker for ``n`` workers, started on the scheduler as ``xgboost.dask`` starts its own
    (its address from ``dask.config``'s ``xgboost`` section, as there), and the arguments
    its workers join it with. (``_get_rabit_args`` is xgboost.dask's: pinned 3.2.0.)"""
    from xgboost import dask as dxgb

    return client.sync(dxgb._get_rabit_args, client, n, dxgb._get_dask_config())


def _trained(client: Any, futures: list[Any], workers: list[str]) -> list[Any]:
    """The training tasks' results. They train together, so one task failed, or one worker
    lost (killed for memory), would leave the others waiting on it for ever: the first is
    raised, the second is :class:`ClusterError`, and the other tasks are cancelled."""
    from distributed import wait

    from mlops_core.errors import ClusterError

    while True:
        try:
            with client.as_current():  # distributed.wait uses the current client
                wait(futures, timeout=2)
            return client.gather(futures)
        except TimeoutError:
            error = next((f.exception() for f in futures if f.status == "error"), None)
            gone = set(workers) - set(client.scheduler_info()["workers"])
            if error is not None or gone:
                client.cancel(futures)
            if error is not None:
                raise error from None
            if gone:
                raise ClusterError(
                    f"a Dask worker ({', '.join(sorted(gone))}) left while XGBoost trained "
                    "across the workers: most often it ran out of memory; give the workers "
                    "more memory (dask.memory_limit) or add workers (dask.n_workers)"
                ) from None


def _fit_share(
    native: dict[str, Any],
    rounds: int,
    stopping: int | None,
    collective: dict[str, Any],
    spec: dict[str, Any],
    target: str,
    paths: list[str],
    positions: list[np.ndarray],
    ranges: list[list[tuple[int, int]]],
) -> bytes | None:
    """In a worker: its share of the training rows (and of the validation rows, when
    ``ranges`` has two parts) streamed into ``QuantileDMatrix``es, and its part of the
    collective training. Rank 0 returns the booster (every rank holds the same one)."""
    from distributed import get_worker
    from xgboost.dask import CommunicatorContext

    threads = get_worker().state.nthreads
    files = iter(zip(paths, positions, strict=True))
    parts = [[(*next(files), lo, hi) for lo, hi in part] for part in ranges]
    matrix_kw = dict(enable_categorical=True, max_bin=native.get("max_bin"), nthread=threads)
    with lean_memory(), CommunicatorContext(**collective):
        dtrain = xgb.QuantileDMatrix(_Stream(parts[0], spec, target), **matrix_kw)
        evals = [
            (xgb.QuantileDMatrix(_Stream(p, spec, target), ref=dtrain, **matrix_kw), "valid")
            for p in parts[1:]
        ]
        booster = xgb.train(
            native | {"nthread": threads},
            dtrain,
            rounds,
            evals=evals,
            early_stopping_rounds=stopping,
            verbose_eval=False,
        )
        first = xgb.collective.get_rank() == 0
    return bytes(booster.save_raw("ubj")) if first else None


class _Stream(xgb.DataIter):
    """Batch files as XGBoost reads them: each ``next`` hands over the prepared features and
    encoded target of a chunk's rows in its position range (a worker holds a chunk as a
    frame, never a file or its share: :func:`~mlops_core.store.read_chunks`)."""

    def __init__(
        self, parts: list[tuple[str, np.ndarray, int, int]], spec: dict[str, Any], target: str
    ) -> None:
        self._parts, self._spec, self._target = parts, spec, target
        self._chunks = self._read()
        super().__init__(release_data=True)

    def _read(self) -> Iterator[pd.DataFrame]:
        spec, target = self._spec, self._target
        names = [*spec["feature_order"], target]
        for path, positions, lo, hi in self._parts:
            for rows in _chunks(path, positions, names, lo, hi):
                yield _prepared(rows, spec, target, spec.get("classes"))

    def next(self, input_data: Callable[..., None]) -> bool:
        df = next(self._chunks, None)
        if df is None:
            return False
        input_data(data=df[self._spec["feature_order"]], label=df[self._target].to_numpy())
        return True

    def reset(self) -> None:
        self._chunks = self._read()


def _prepared(
    df: pd.DataFrame, spec: dict[str, Any], target: str, classes: list[Any] | None
) -> pd.DataFrame:
    """The features as XGBoost reads them, numbers as float32 (XGBoost stores float32 itself:
    nothing is lost, and the workers hold half), and the target encoded (a class's index)."""
    X = prepare_features(df, spec, for_xgboost=True)
    numeric = [c for c, k in spec["kinds"].items() if k != "categorical"]
    X = X.astype(dict.fromkeys(numeric, "float32"))
    X[target] = encode_y(df[target], classes)
    return X


@dataclass
class DaskTraining:
    """What :func:`train` gives the pipeline: the search, the early-stopped model (its
    hold-out predictions are the fair estimate), the model refit on the (chosen) window, the
    window's choice, and a small frame that stands for the window: a reference sample of the
    rows before the hold-out, then the hold-out itself (``holdout`` of it)."""

    found: SearchResult
    model: TrainedModel
    choice: WindowChoice  # its start and scores in window positions
    frame: pd.DataFrame
    holdout: slice
    split_rows: tuple[int, int, int]


def train(
    settings: Settings,
    client: Any,
    window: DaskWindow,
    spec: dict[str, Any],
    progress: Callable[[str], None],
) -> DaskTraining:
    """The window's choice and the search on samples (:func:`choose_start`,
    :func:`parallel_search`), the fit on every training row early-stopped on every validation
    row, the refit on the whole chosen window (:func:`dask_fit`)."""
    mcfg, target, feats = settings.model, window.target, spec["feature_order"]
    t0 = time.perf_counter()
    tr, va, ho = time_split(window.rows, mcfg.holdout, mcfg.validation)
    n = settings.dask.search_rows
    progress(f"sampling {min(n, tr.stop):,} training rows for the search")
    X_tr = window.sample(n, mcfg.seed, tr.start, tr.stop)
    X_va = window.sample(n, mcfg.seed + 1, va.start, va.stop)
    progress("choosing the training window")
    choice = choose_start(settings, client, spec, X_tr, X_va, target)
    start = choice.start
    X_tr = X_tr[X_tr[POS] >= start]
    progress(f"searching hyper-parameters ({mcfg.search.trials} trials on the cluster)")
    best, score, history = parallel_search(
        client,
        spec,
        (X_tr[feats], X_tr[target], X_va[feats], X_va[target]),
        trials=mcfg.search.trials,
        timeout_s=mcfg.search.timeout_s,
        seed=mcfg.seed,
        fixed=mcfg.params,
        progress=lambda d: progress(f"searching hyper-parameters: {d}"),
    )
    # read before the workers train: after, they hold what training left them
    progress(f"reading the hold-out ({ho.stop - ho.start:,} rows) and a reference sample")
    reference = window.sample(mcfg.reference_rows, mcfg.seed, start, ho.start)
    holdout = window.rows_in(ho.start, ho.stop)
    rows, stopping = tr.stop - start, va.stop - va.start
    progress(f"training on {rows:,} rows across the workers (early stopping on {stopping:,})")
    early = dask_fit(
        client,
        window,
        spec,
        best,
        mcfg.seed,
        train=(start, tr.stop),
        validation=(va.start, va.stop),
    )
    found = SearchResult(early, best, score, len(history), time.perf_counter() - t0, history)
    final = _refit(client, window, spec, early, best, mcfg.seed, start, progress)
    frame = pd.concat([reference, holdout], ignore_index=True).drop(columns=[POS])
    sizes = (tr.stop - start, va.stop - va.start, ho.stop - ho.start)
    return DaskTraining(found, final, choice, frame, slice(len(reference), len(frame)), sizes)


def _refit(
    client: Any,
    window: DaskWindow,
    spec: dict[str, Any],
    early: TrainedModel,
    best: dict[str, Any],
    seed: int,
    start: int,
    progress: Callable[[str], None],
) -> TrainedModel:
    """The served model: ``best`` refit on the chosen window, hold-out included, with the
    number of trees early stopping chose (:func:`~mlops_core.train.fit.refit`'s recipe)."""
    trees = (
        (early.best_iteration + 1)
        if early.best_iteration is not None
        else best.get("n_estimators", 1000)
    )
    progress(f"refitting on the whole window ({window.rows - start:,} rows, {trees} trees)")
    params = best | {"n_estimators": trees}
    final = dask_fit(client, window, spec, params, seed, train=(start, window.rows))
    final.params = params
    return final


def choose_start(
    settings: Settings,
    client: Any,
    spec: dict[str, Any],
    X_tr: pd.DataFrame,
    X_va: pd.DataFrame,
    target: str,
) -> WindowChoice:
    """``model.window.choose`` on the search's samples, in a worker: the whole window, its
    newest half or its newest quarter, whichever predicts the validation sample best
    (:func:`~mlops_core.train.fit.choose_window`). Its start and scores are returned as window
    positions."""
    mcfg, feats = settings.model, spec["feature_order"]
    params = default_params("xgboost", settings.task) | mcfg.params
    rows = client.scatter([X_tr[feats], X_tr[target], X_va[feats], X_va[target]], hash=False)
    future = client.submit(
        choose_window,
        "xgboost",
        settings.task,
        spec,
        params,
        *rows,
        min_rows=mcfg.window.min_rows,
        choose=mcfg.window.choose,
        seed=mcfg.seed,
        pure=False,
    )
    chosen = future.result()
    position = X_tr[POS].to_numpy()
    return WindowChoice(
        int(position[chosen.start]) if chosen.start else 0,
        chosen.model,
        chosen.score,
        {int(position[s]) if s else 0: v for s, v in chosen.scores.items()},
    )
