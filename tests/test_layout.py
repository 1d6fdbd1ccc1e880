"""The house rules of the code base (issue 15), checked on the source so they hold as it grows:
the library is grouped by life-cycle stage, only the adapter modules import MLflow, Evidently
and River, the CLI lives outside the library, and no function runs past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "mlops_core"
CLI = ROOT / "mlops_cli"

STAGES = {"data", "train", "registry", "monitor", "backtest", "serve", "read", "ops", "demo"}
# Modules shared by every stage; everything else sits in its stage's package.
SHARED = {"__init__.py", "config.py", "errors.py", "store.py"}

# The only modules allowed to import each third-party engine: a change of engine (or of its
# exceptions) stays inside them: River's detectors, its online models (a backtest strategy) and its
# synthetic streams (the demo) each have one module. The served model's code is logged into every
# MLflow model and loaded by MLflow itself, so it may import mlflow too.
ADAPTERS = {
    "mlflow": {"registry/mlflow_adapter.py", "train/pyfunc/tabular_model.py"},
    "evidently": {"monitor/reports.py"},
    "river": {"monitor/detectors.py", "backtest/river_online.py", "demo/stream.py"},
    # Dask: the cluster, the training window and fits on it, monitoring's sample on it
    "dask": {"ops/cluster.py", "train/distributed.py", "monitor/distributed.py"},
    "distributed": {"ops/cluster.py", "train/distributed.py", "monitor/distributed.py"},
}
MAX_LINES = 60


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for r in roots for p in r.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_library_is_grouped_by_stage() -> None:
    loose = sorted(p.name for p in LIBRARY.glob("*.py") if p.name not in SHARED)
    assert loose == [], f"modules outside a stage package: {loose}"
    packages = {p.name for p in LIBRARY.iterdir() if (p / "__init__.py").exists()}
    assert packages == STAGES, f"stage packages differ: {sorted(packages ^ STAGES)}"


@pytest.mark.parametrize("engine", sorted(ADAPTERS))
def test_only_adapters_import_the_engines(engine: str) -> None:
    importers = {str(p.relative_to(LIBRARY)) for p in _sources(LIBRARY) if engine in _imports(p)}
    outside = sorted(importers - ADAPTERS[engine])
    assert outside == [], f"{engine} imported outside its adapter: {outside}"
    for layer in ("mlops_cli", "flows", "dashboard"):
        leaks = [str(p.relative_to(ROOT)) for p in _sources(ROOT / layer) if engine in _imports(p)]
        assert leaks == [], f"{engine} imported by {layer}: {leaks}"


def test_library_does_not_import_its_entry_points() -> None:
    bad = [
        str(p.relative_to(ROOT))
        for p in _sources(LIBRARY)
        if _imports(p) & {"mlops_cli", "flows", "dashboard", "prefect", "streamlit", "typer"}
    ]
    assert bad == [], f"the library imports an entry point or its framework: {bad}"


def test_no_function_is_longer_than_60_lines() -> None:
    long: list[str] = []
    for path in _sources(LIBRARY, CLI):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    assert long == [], "functions over 60 lines:\n" + "\n".join(long)
