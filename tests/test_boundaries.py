"""The library stays a plain library, and every required package is installed and importable."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

REQUIRED = ["prefect", "streamlit", "sklearn", "xgboost", "pandas", "evidently", "mlflow"]


def test_importing_mlops_core_imports_neither_prefect_nor_streamlit() -> None:
    code = (
        "import sys, pkgutil, importlib, mlops_core\n"
        "for m in pkgutil.walk_packages(mlops_core.__path__, 'mlops_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('prefect', 'streamlit'))\n"
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"mlops_core pulled in: {res.stdout.strip()}"


@pytest.mark.parametrize("name", REQUIRED)
def test_required_package_imports(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__name__ == name


def test_pandas_is_below_3_for_evidently() -> None:
    import pandas as pd

    assert int(pd.__version__.split(".")[0]) < 3
    from evidently import Report  # noqa: F401  (fails to import on pandas 3)
