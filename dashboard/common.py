"""What every page shares: the project (its settings, read once from ``MLOPS_CONFIG`` by the
entry point), cached readers over :mod:`mlops_core.read.views`, the signed-in principal, and small
UI
helpers (messages after an action, request ids, paging, empty states).

The dashboard reads through ``mlops_core`` only and writes through :mod:`mlops_core.ops.actions`
only. Readers are cached for :data:`TTL` seconds (every write, and the Refresh button, clears
them), so a page renders from memory while someone works on it.
"""

from __future__ import annotations

import getpass
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from mlops_core.config import Settings, load_config
from mlops_core.errors import AuthorizationError, MlopsError, RegistryError
from mlops_core.ops.auth import Principal
from mlops_core.read import views
from mlops_core.registry.registry import Registry, VersionInfo
from mlops_core.store import MetadataStore

TTL = 30  # seconds a reader's answer is reused
SLOW_TTL = 300  # for what changes rarely (backtest files, run files)
PAGE_SIZE = 25

CONFIG_KEY = "_mlops_config"
PRINCIPAL_KEY = "principal"
FLASH_KEY = "_flash"
REQUESTS_KEY = "_request_ids"
TIME_FORMAT = "%Y-%m-%d %H:%M"  # every time shown, in tables and text (naive UTC)
MISSING = "-"  # a missing value in a table


# the project ------------------------------------------------------------------------------
def set_config(path: str) -> None:
    """Called by the entry point with the configuration path it read from the environment."""
    st.session_state[CONFIG_KEY] = str(Path(path).expanduser().resolve())


def config_key() -> str:
    key = st.session_state.get(CONFIG_KEY)
    if not key:
        raise RuntimeError("the dashboard must be started through dashboard/app.py")
    return str(key)


@st.cache_resource(show_spinner=False)
def _load_settings(path: str, stamp: float) -> Settings:
    return load_config(Path(path))


def settings(key: str | None = None) -> Settings:
    """The project's settings (read again when mlops.yaml changes)."""
    key = key or config_key()
    return _load_settings(key, Path(key).stat().st_mtime)


@st.cache_resource(show_spinner=False)
def _meta(db_url: str) -> MetadataStore:
    return MetadataStore(db_url)


def meta(key: str | None = None) -> MetadataStore:
    return _meta(settings(key).db_url)


@st.cache_resource(show_spinner=False)
def _registry(key: str, stamp: float) -> Registry:
    s = _load_settings(key, stamp)
    return Registry(s, _meta(s.db_url))


def registry(key: str | None = None) -> Registry:
    key = key or config_key()
    return _registry(key, Path(key).stat().st_mtime)


@dataclass(frozen=True)
class Context:
    key: str
    settings: Settings
    principal: Principal | None

    @property
    def project(self) -> str:
        return self.settings.project

    def can(self, action: str) -> bool:
        return self.principal is not None and self.principal.can(action)


def context() -> Context:
    key = config_key()
    return Context(key, settings(key), st.session_state.get(PRINCIPAL_KEY))


def os_user() -> str:
    try:
        return getpass.getuser() or "local"
    except (KeyError, OSError):
        return "local"


# cached readers ---------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def versions(key: str) -> list[VersionInfo]:
    return registry(key).versions()


def versions_or_error(key: str) -> list[VersionInfo]:
    """The versions, or none and an error on the page when the registry cannot be read (the
    rest of the page still renders)."""
    try:
        return versions(key)
    except (RegistryError, OSError) as e:
        st.error(
            f"The model registry ({registry(key).uri}) cannot be read: {str(e)[:300]}. "
            "Is MLflow running? `mlops up` starts it."
        )
        return []


@st.cache_data(ttl=TTL, show_spinner=False)
def champion(key: str) -> views.ChampionView:
    try:
        known = versions(key)
    except (RegistryError, OSError):  # the DB still says who is champion
        known = []
    return views.champion_view(settings(key), meta(key), known)


@st.cache_data(ttl=TTL, show_spinner=False)
def champion_history(key: str) -> pd.DataFrame:
    return views.champion_history(settings(key), meta(key))


@st.cache_data(ttl=TTL, show_spinner=False)
def metric_series(key: str, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    return views.metric_series(settings(key), meta(key), start=start, end=end)


@st.cache_data(ttl=TTL, show_spinner=False)
def model_events(key: str, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    return views.model_events(settings(key), meta(key), start=start, end=end)


@st.cache_data(ttl=TTL, show_spinner=False)
def latest_drift(key: str) -> views.DriftStatus | None:
    return views.latest_drift(settings(key), meta(key))


@st.cache_data(ttl=TTL, show_spinner=False)
def recent_decisions(key: str, limit: int = 10) -> list[dict[str, Any]]:
    return views.recent_decisions(settings(key), meta(key), limit)


@st.cache_data(ttl=15, show_spinner=False)
def service_health(key: str) -> list[views.ServiceHealth]:
    return views.service_health(settings(key))


@st.cache_data(ttl=15, show_spinner=False)
def serving_view(key: str) -> views.ServingView:
    return views.serving_view(settings(key))


@st.cache_data(ttl=TTL, show_spinner=False)
def monitoring_span(key: str) -> tuple[datetime | None, datetime | None]:
    return views.monitoring_span(settings(key), meta(key))


@st.cache_data(ttl=TTL, show_spinner=False)
def monitoring_runs(
    key: str, start: datetime | None, end: datetime | None, limit: int, offset: int
) -> pd.DataFrame:
    return views.monitoring_runs_frame(
        settings(key), meta(key), start=start, end=end, limit=limit, offset=offset
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def count_monitoring_runs(key: str, start: datetime | None, end: datetime | None) -> int:
    return views.count_monitoring_runs(settings(key), meta(key), start=start, end=end)


@st.cache_data(ttl=TTL, show_spinner=False)
def drift_matrix(
    key: str, start: datetime | None, end: datetime | None, limit: int
) -> views.DriftMatrix:
    return views.drift_matrix(settings(key), meta(key), start=start, end=end, limit=limit)


@st.cache_data(ttl=TTL, show_spinner=False)
def monitoring_run(key: str, run_id: str) -> views.RunDetail:
    return views.monitoring_run(settings(key), meta(key), run_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def quarantined(key: str, include_released: bool) -> list[Any]:
    return views.quarantined(settings(key), meta(key), include_released=include_released)


@st.cache_data(ttl=TTL, show_spinner=False)
def batch_counts(key: str) -> dict[str, int]:
    return views.batch_counts(meta(key))


@st.cache_data(ttl=SLOW_TTL, show_spinner=False)
def run_file(key: str, version: str, path: str) -> Path | None:
    """A file of the version's training run, downloaded once (None if it has none)."""
    return views.run_path(settings(key), registry(key), version, path)


@st.cache_data(ttl=SLOW_TTL, show_spinner=False, max_entries=20)
def compare(key: str, picked: tuple[str, ...], rows: int) -> views.Comparison | None:
    return views.compare_versions(
        settings(key), registry(key), meta(key), picked, rows=rows, infos=versions(key)
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def audit(
    key: str,
    actor: str | None,
    actions: tuple[str, ...],
    version: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int | None,
    offset: int,
) -> pd.DataFrame:
    return views.audit_frame(
        settings(key),
        meta(key),
        actor=actor,
        actions=actions or None,
        version=version,
        start=start,
        end=end,
        limit=limit,
        offset=offset,
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def count_audit(
    key: str,
    actor: str | None,
    actions: tuple[str, ...],
    version: str | None,
    start: datetime | None,
    end: datetime | None,
) -> int:
    return views.count_audit(
        settings(key),
        meta(key),
        actor=actor,
        actions=actions or None,
        version=version,
        start=start,
        end=end,
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def audit_facets(key: str) -> dict[str, list[str]]:
    return views.audit_facets(settings(key), meta(key))


@st.cache_data(ttl=TTL, show_spinner=False)
def retrain_requests(key: str) -> pd.DataFrame:
    return views.retrain_requests(settings(key), meta(key))


@st.cache_data(ttl=TTL, show_spinner=False)
def backtests(key: str) -> list[views.BacktestEntry]:
    return views.list_backtests(settings(key))


@st.cache_data(ttl=SLOW_TTL, show_spinner=False, max_entries=10)
def backtest_result(path: str, stamp: float) -> dict[str, Any]:
    from mlops_core.backtest.engine import read_json

    return read_json(Path(path))


def refresh() -> None:
    """Forget every cached answer: the next render reads the project again."""
    st.cache_data.clear()


# writes: request ids and what the person is told -----------------------------------------
def request_id(*parts: Any) -> str:
    """One request id per form and what it was about (its version, the champion shown, the
    comment), kept for the session: a double click or a rerun sends the same id, which
    mlops_core answers as already handled."""
    ids = st.session_state.setdefault(REQUESTS_KEY, {})
    k = json.dumps(parts, default=str)
    if k not in ids:
        ids[k] = uuid.uuid4().hex
    return str(ids[k])


def forget_request(*parts: Any) -> None:
    """After a refusal the same form may be sent again as a new request."""
    st.session_state.setdefault(REQUESTS_KEY, {}).pop(json.dumps(parts, default=str), None)


_MARKDOWN = re.compile(r"([\\`*_\[\]<>~$|])")  # emphasis, code, links, HTML, math, tables
_LINE_START = re.compile(r"(?m)^(\s*)([#>+-]|\d+[.)])")  # headings, quotes, lists
_SHORTCODE = re.compile(r":(?=\w)")  # :rocket: emoji and :red[...] colours


def plain(text: object) -> str:
    """``text`` shown as it is inside Markdown (a caption, an expander's label, a message): a
    comment, a name or a file name never turns into links, emphasis, headings, colours or emoji.
    Marks are escaped; a colon before a word gets a zero-width space (Streamlit expands
    shortcodes after escapes are read)."""
    out = _MARKDOWN.sub(r"\\\1", str(text))
    out = _LINE_START.sub(r"\1\\\2", out)
    return _SHORTCODE.sub(":\u200b", out).replace("\n", "  \n")


def flash(level: str, text: str) -> None:
    """A message shown at the top of the page on the next render (after a callback)."""
    st.session_state.setdefault(FLASH_KEY, []).append((level, text))


def show_flash() -> None:
    for level, text in st.session_state.pop(FLASH_KEY, []):
        {"success": st.success, "info": st.info, "warning": st.warning}.get(level, st.error)(
            plain(text)
        )


def write(parts: tuple[Any, ...], call: Callable[[Principal, str], Any]) -> Any | None:
    """Run a write as the signed-in principal with the form's request id. A refusal by
    mlops_core (a role, a missing comment, a wrong state) becomes a message, never a traceback;
    the caches are cleared whatever happened."""
    principal = st.session_state.get(PRINCIPAL_KEY)
    if principal is None:
        flash("error", "Sign in first.")
        return None
    rid = request_id(*parts)
    try:
        return call(principal, rid)
    except AuthorizationError as e:
        forget_request(*parts)
        flash("error", f"Not allowed: {e}")
    except (MlopsError, LookupError, ValueError) as e:
        forget_request(*parts)
        flash("error", str(e))
    finally:
        refresh()
    return None


def decision_message(res: Any, parts: tuple[Any, ...]) -> None:
    """Tell the person what an approve / reject / rollback did."""
    if res is None:
        return
    if res.outcome == "applied":
        flash("success", res.message)
    elif res.outcome == "noop":
        flash("info", f"Already done, nothing repeated: {res.message}")
    else:
        forget_request(*parts)
        flash("error", f"Refused: {res.message}")


# small UI helpers -------------------------------------------------------------------------
def page_header(title: str, caption: str | None = None) -> Context:
    ctx = context()
    st.title(title)
    if caption:
        st.caption(caption)
    show_flash()
    return ctx


def paged(frame: pd.DataFrame, key: str, size: int = PAGE_SIZE) -> pd.DataFrame:
    """The rows of the page picked in a pagination widget under the table."""
    pages = max(1, -(-len(frame) // size))
    page = st.pagination(pages, key=key) if pages > 1 else 1
    return frame.iloc[(page - 1) * size : page * size]


def paged_items(items: list[Any], key: str, size: int = PAGE_SIZE) -> list[Any]:
    pages = max(1, -(-len(items) // size))
    page = st.pagination(pages, key=key) if pages > 1 else 1
    return items[(page - 1) * size : page * size]


def page_number(total: int, key: str, size: int = PAGE_SIZE) -> int:
    """A pagination widget for ``total`` rows; the 0-based offset of the page picked."""
    pages = max(1, -(-total // size))
    page = st.pagination(pages, key=key) if pages > 1 else 1
    return (page - 1) * size


def day_range(value: Any) -> tuple[datetime | None, datetime | None]:
    """A date_input range as naive UTC datetimes covering whole days."""
    if not value:
        return None, None
    if isinstance(value, date) and not isinstance(value, tuple | list):
        value = (value, value)
    start = datetime.combine(value[0], time.min) if len(value) > 0 and value[0] else None
    end = (
        datetime.combine(value[1], time.min) + timedelta(days=1) - timedelta(microseconds=1)
        if len(value) > 1 and value[1]
        else None
    )
    return start, end


def stamp(ts: Any, missing: str | None = MISSING) -> str | None:
    """A time as every page shows it: ``YYYY-MM-DD HH:MM`` (naive UTC), ``missing`` for none."""
    if ts is None or ts is pd.NaT or (isinstance(ts, float) and pd.isna(ts)):
        return missing
    try:
        return f"{pd.Timestamp(ts):{TIME_FORMAT}}"
    except (TypeError, ValueError):
        return str(ts)


def when(ts: Any) -> str:
    shown = stamp(ts)
    return MISSING if shown in (None, MISSING) else f"{shown} UTC"


def _is_time(col: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if col.dtype != object:
        return False
    values = col.dropna()
    return len(values) > 0 and all(isinstance(v, datetime) for v in values)


def for_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as the tables show it: every time column as ``YYYY-MM-DD HH:MM`` (a missing
    time stays missing: the table shows :data:`MISSING`)."""
    times = [c for c in frame.columns if _is_time(frame[c])]
    if not times:
        return frame
    return frame.assign(**{c: frame[c].map(lambda t: stamp(t, None)) for c in times})


def table(data: pd.DataFrame, *, key: str, hide_index: bool | None = True, **kwargs: Any) -> Any:
    """``st.dataframe`` as every page uses it: times as ``YYYY-MM-DD HH:MM``, missing values as
    :data:`MISSING` (never "None")."""
    return st.dataframe(
        for_table(data), hide_index=hide_index, key=key, placeholder=MISSING, **kwargs
    )


def wide() -> Any:
    """The column config of free text (reasons, findings, comments): a wide column."""
    return st.column_config.TextColumn(width="large")


def decision_box(dec: dict[str, Any]) -> None:
    """A monitoring run's retraining decision: the signals that asked, the brakes that held
    them back (they stay pending), or for a no the signals nearest their thresholds."""
    if dec["retrain"]:
        st.error("Retrain: " + "; ".join(dec["reasons"]))
    elif dec["held_back"]:
        st.warning(
            "Held back: "
            + "; ".join(dec["held_back"])
            + ". Asking: "
            + "; ".join(dec["reasons"])
            + (
                f" (pending since {dec['pending_since'][:16]}; asks again at the next run)"
                if dec.get("pending_since")
                else ""
            )
        )
    else:
        near = dec.get("nearest") or []
        st.success(
            "No retrain: no signal reached its threshold. "
            + (
                "Nearest: " + "; ".join(near)
                if near
                else "No signal was measured (no labels, or too few rows)."
            )
        )


SERVICE_ICONS = {"healthy": "🟢", "not answering": "🔴", "stopped": "⚪", "direct store": "🔵"}


def service_label(s: views.ServiceHealth) -> str:
    """The service's health in words, with its icon: healthy, not answering, stopped or direct
    store; (external) for an MLflow the project does not run."""
    return f"{SERVICE_ICONS.get(s.state, '')} {s.state}" + (
        " (external)" if s.where == "external" else ""
    )


# Evidently reports -------------------------------------------------------------------------
REPORT_HEIGHT = 1200  # px; the report scrolls inside
# Evidently lays its report out for about 1,000 px and cuts off what does not fit (its cards
# hide their overflow): let its grid shrink to the frame and narrow the tables' cell padding,
# so that it fits from about 900 px (narrower, its tables scroll sideways)
REPORT_CSS = (
    "<style>/* mlops-ct dashboard: fit the frame's width */ .MuiGrid-root "
    "{min-width: 0 !important; max-width: 100% !important;} .MuiTableCell-root "
    "{padding-left: 8px !important; padding-right: 8px !important;}</style>"
)


@st.cache_data(ttl=SLOW_TTL, show_spinner=False, max_entries=4)
def _report_html(path: str, mtime: float) -> str:
    html = Path(path).read_text(encoding="utf-8", errors="replace")
    at = html.find("</head>")
    return html[:at] + REPORT_CSS + html[at:] if at >= 0 else REPORT_CSS + html


def report_html(path: Path) -> str:
    """An Evidently HTML report as embedded (read once per change of the file)."""
    return _report_html(str(path), path.stat().st_mtime)


def show_report(path: Path, alt: str, height: int = REPORT_HEIGHT) -> None:
    """Embed an Evidently HTML report across the whole width of the container."""
    st.iframe(report_html(path), width="stretch", height=height, alt=alt)


def fmt(v: Any, digits: int = 4) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if f != f else f"{f:.{digits}f}"


@st.cache_data(ttl=TTL, show_spinner=False)
def batches_with_findings(key: str) -> pd.DataFrame:
    return views.batches_with_findings(settings(key), meta(key))
