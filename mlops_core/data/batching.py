"""Cutting rows into batches and reading time columns.

Pure functions over pandas: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import Tick

# calendar offsets (not fixed length) and the pandas period that matches them
_CALENDAR_PERIODS = {
    "W": "W",
    "MS": "M",
    "M": "M",
    "ME": "M",
    "QS": "Q",
    "Q": "Q",
    "QE": "Q",
    "YS": "Y",
    "Y": "Y",
    "YE": "Y",
    "AS": "Y",
    "A": "Y",
}


_MAX_EPOCH_S = 9.2e9  # epoch seconds that datetime64[ns] can hold


def check_period(period: str) -> None:
    """Raise ``ValueError`` unless ``period`` is a batch period we can cut by."""
    base = period.lstrip("0123456789")
    if base in _CALENDAR_PERIODS:
        if base != period:
            raise ValueError(
                f"batch period '{period}': calendar periods take no multiple; "
                "use a fixed one such as '14D'"
            )
        return
    try:
        offset = to_offset(period)
    except ValueError:
        offset = None
    if not isinstance(offset, Tick):
        raise ValueError(
            f"batch period '{period}' is not understood; use a fixed length "
            "('1D', '7D', '6h') or a calendar period ('W', 'MS', 'QS', 'YS')"
        )


def period_start(times: pd.Series, period: str) -> pd.Series:
    """The start of the batch period each timestamp falls in."""
    base = period.lstrip("0123456789")
    if base in _CALENDAR_PERIODS and base == period:
        return times.dt.to_period(_CALENDAR_PERIODS[base]).dt.start_time
    return times.dt.floor(period)


def parse_times(values: pd.Series, time_format: str | None = None) -> pd.Series:
    """Parse a time column into naive UTC ``datetime64[ns]``; unparseable values become NaT.

    Integers between 1000 and 9999 are read as years (census-style data), other integers as
    epoch seconds; strings by ``time_format`` or ISO 8601 inference.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        out = values
    elif time_format:
        out = pd.to_datetime(values.astype("string"), format=time_format, errors="coerce", utc=True)
    elif pd.api.types.is_integer_dtype(values) or pd.api.types.is_float_dtype(values):
        v = values.astype("float64")
        finite = v[np.isfinite(v)]
        if len(finite) and finite.between(1000, 9999).all() and (finite % 1 == 0).all():
            a = v.to_numpy()
            ok = np.isfinite(a)
            years = np.full(len(a), np.datetime64("NaT"), dtype="datetime64[ns]")
            years[ok] = (a[ok] - 1970).astype("int64").astype("datetime64[Y]")
            out = pd.Series(years, index=v.index, name=values.name)
        else:
            # only finite values datetime64[ns] can hold (years 1677-2262) are converted: the
            # rest are NaT. pandas' float conversion overflows on huge values and, given NaN,
            # can raise FloatingPointError from uninitialised memory.
            ok = v.abs() < _MAX_EPOCH_S
            out = pd.Series(pd.NaT, index=v.index, dtype="datetime64[ns, UTC]", name=values.name)
            if ok.any():
                out[ok] = pd.to_datetime(v[ok], unit="s", utc=True)
    else:
        s = values.astype("string")
        out = pd.to_datetime(s, errors="coerce", utc=True, format="ISO8601")
        if out.isna().sum() > s.isna().sum():  # not all ISO: let pandas try harder per value
            out = pd.to_datetime(s, errors="coerce", utc=True, format="mixed")
    if getattr(out.dt, "tz", None) is not None:
        out = out.dt.tz_convert("UTC").dt.tz_localize(None)
    return out.astype("datetime64[ns]")


class Batcher:
    """Accumulates chunks of one stream and yields complete batches.

    By ``size``: every ``size`` rows. By ``period``: all rows of one period, emitted once a row of
    a later period is seen. Rows of a chunk are grouped by their period, so rows whose times
    go back and forth across a boundary (mixed time zones, a few late rows) still make one
    batch per period; a row of a period already emitted (in an earlier chunk) starts a new
    batch for it, and validation reports the disorder. With neither: one batch at the end.
    Memory holds the open periods (one, for rows in time order) plus one chunk.
    """

    def __init__(
        self,
        *,
        size: int | None = None,
        period: str | None = None,
        time_column: str | None = None,
        time_format: str | None = None,
    ) -> None:
        if period and not time_column:
            raise ValueError("batching by period needs data.time_column")
        self.size = size
        self.period = period
        self.time_column = time_column
        self.time_format = time_format
        self._parts: list[pd.DataFrame] = []
        self._rows = 0
        self._open: dict[pd.Timestamp, list[pd.DataFrame]] = {}  # by period: its rows so far
        self._latest: pd.Timestamp | None = None

    @staticmethod
    def _join(parts: list[pd.DataFrame]) -> pd.DataFrame:
        if len(parts) == 1:
            return parts[0].reset_index(drop=True)
        df = pd.concat(parts, ignore_index=True)
        for c in df.columns:  # chunks' categories differ: unite them instead of going to text
            if df[c].dtype == object and all(
                isinstance(p[c].dtype, pd.CategoricalDtype) for p in parts
            ):
                df[c] = union_categoricals([p[c] for p in parts], ignore_order=True)
        return df

    def _take(self) -> pd.DataFrame:
        parts = self._parts
        self._parts, self._rows = [], 0
        return self._join(parts)

    def add(self, chunk: pd.DataFrame) -> Iterator[pd.DataFrame]:
        if chunk.empty:
            return
        if self.size:
            yield from self._add_by_size(chunk)
        elif self.period:
            yield from self._add_by_period(chunk)
        else:
            self._parts.append(chunk)
            self._rows += len(chunk)

    def _add_by_size(self, chunk: pd.DataFrame) -> Iterator[pd.DataFrame]:
        assert self.size
        start = 0
        while start < len(chunk):
            take = min(self.size - self._rows, len(chunk) - start)
            self._parts.append(chunk.iloc[start : start + take])
            self._rows += take
            start += take
            if self._rows >= self.size:
                yield self._take()

    def _add_by_period(self, chunk: pd.DataFrame) -> Iterator[pd.DataFrame]:
        assert self.period and self.time_column
        if self.time_column not in chunk.columns:  # validation will reject it; keep it whole
            self._parts.append(chunk)
            return
        starts = period_start(parse_times(chunk[self.time_column], self.time_format), self.period)
        # unparseable times stay with the rows around them: forward fill, then back fill
        keys = starts.ffill().bfill()
        if keys.isna().all():
            self._parts.append(chunk)
            return
        codes, uniques = pd.factorize(keys, sort=True)
        if len(uniques) == 1:  # the common case: the whole chunk in one period
            self._open.setdefault(uniques[0], []).append(chunk)
        else:  # each period's rows, in their order in the file
            order = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
            for i, key in enumerate(uniques):
                self._open.setdefault(key, []).append(chunk.iloc[order[bounds[i] : bounds[i + 1]]])
        latest = uniques[-1]
        if self._latest is None or latest > self._latest:
            self._latest = latest
        for key in sorted(k for k in self._open if k < self._latest):  # complete periods
            yield self._join(self._open.pop(key))

    def flush(self) -> Iterator[pd.DataFrame]:
        for key in sorted(self._open):
            yield self._join(self._open.pop(key))
        if self._parts:
            yield self._take()
        self._latest = None
