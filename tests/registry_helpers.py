"""Helpers shared by test_registry.py and test_pipeline.py: settings for a project on the session
MLflow server, the demo stream and car_loan ingested by batches, and cheap extra versions."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
import yaml

from mlops_core.config import Settings, parse_config
from mlops_core.data.ingest import ingest
from mlops_core.demo.stream import ID, TARGET, TIME, generate_stream
from mlops_core.registry.registry import Registry
from mlops_core.serve.app import json_records
from mlops_core.store import open_project

DEMO_FEATURES = generate_stream(10, days=28).features
CAR_LOAN_FEATURES = {
    "numeric": ["car_value", "debt_to_income_ratio", "loan_length", "driver_tenure"],
    "categorical": ["salary_range", "size_of_downpayment"],
    "boolean": ["repaid_loan_on_prev_car"],
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def demo_raw(tmp_path: Path, mlflow_url: str, project: str, **sections: Any) -> dict[str, Any]:
    """The raw configuration of a demo-stream project (weekly batches, a small search)."""
    raw: dict[str, Any] = {
        "project": project,
        "data": {
            "id_column": ID,
            "time_column": TIME,
            "target": TARGET,
            "features": copy.deepcopy(DEMO_FEATURES),
            "batch": {"period": "W"},
        },
        "storage": {"workspace": str(tmp_path / "ws"), "mlflow_uri": mlflow_url},
        "model": {"search": {"trials": 2, "timeout_s": 60}},
    }
    return _merge(raw, sections)


def demo_settings(tmp_path: Path, mlflow_url: str, project: str, **sections: Any) -> Settings:
    return parse_config(demo_raw(tmp_path, mlflow_url, project, **sections), environ={})


def with_changes(settings: Settings, **sections: Any) -> Settings:
    """A copy of ``settings`` with some sections changed (e.g. ``gate={"min_score": 2}``)."""
    raw = settings.model_dump(mode="json")
    return parse_config(_merge(raw, sections), environ={})


def write_config(settings: Settings, path: Path, *, create: bool = True) -> Path:
    """Write ``settings`` as mlops.yaml and, as ``mlops init --config`` does, create its
    workspace and metadata DB (``create=False``: the config alone, a project not made yet)."""
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    if create:
        open_project(settings.workspace, settings.db_url, create=True)
    return path


def demo_frame(rows: int = 8000, days: int = 112, seed: int = 1) -> pd.DataFrame:
    return generate_stream(rows, days=days, seed=seed).frame


def ingest_frame(
    settings: Settings, frame: pd.DataFrame, folder: Path, name: str = "data.parquet"
) -> int:
    """Ingest ``frame`` as one file; returns the number of accepted batches (all must be)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.to_parquet(path, index=False)
    report = ingest(settings, [path])
    bad = [(o.id, o.reason) for o in report.outcomes if o.status != "accepted"]
    assert not bad, bad
    return len(report.outcomes)


def car_loan_settings(tmp_path: Path, mlflow_url: str, project: str, **sections: Any) -> Settings:
    raw: dict[str, Any] = {
        "project": project,
        "data": {
            "id_column": "id",
            "time_column": "timestamp",
            "target": "repaid",
            "features": copy.deepcopy(CAR_LOAN_FEATURES),
            "batch": {"period": "MS"},
        },
        "storage": {"workspace": str(tmp_path / "ws"), "mlflow_uri": mlflow_url},
        "model": {"search": {"trials": 2, "timeout_s": 60}},
    }
    return parse_config(_merge(raw, sections), environ={})


def add_version(
    reg: Registry,
    source: Registry,
    version: str,
    *,
    status: str = "pending_approval",
    challenger: bool = False,
) -> str:
    """A new version of ``reg``'s model registered from ``source``'s trained ``version`` (the
    same packaged files and recorded hash): a real MLflow version without another training."""
    mv = source.client.get_model_version(source.name, version)
    tags = {
        k: v
        for k, v in (mv.tags or {}).items()
        if k
        in (
            "trigger",
            "model_sha256",
            "package_sha256",
            "gate_passed",
            "gate_reasons",
            "metrics",
            "model_type",
            "rows",
            "data_window",
            "config_hash",
            "code_version",
        )
    }
    reg.ensure_registered_model()
    new = reg.register(mv.source, mv.run_id, tags | {"status": status})
    if challenger:
        reg.set_challenger(new)
    return new


def model_folder(reg: Registry, version: str) -> Path:
    """The local folder (under the server's artifact root) that holds ``version``'s files."""
    uri = reg.client.get_model_version_download_uri(reg.name, version)
    parsed = urlparse(uri)
    assert parsed.scheme == "file", uri
    return Path(unquote(parsed.path))


def audit_for(reg: Registry, request_id: str) -> list[Any]:
    return [r for r in reg.audit() if r.request_id == request_id]


def scored_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows to predict: the features only, as a client would send them."""
    return frame[[c for cols in DEMO_FEATURES.values() for c in cols]].head(20)


def client_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a serving client sends them: plain JSON values, null for missing, no target."""
    return json_records(frame.drop(columns=[TARGET], errors="ignore"))
