"""`mlops package`: a self-contained folder (the MLflow model and a Dockerfile that serves it)
for deployment where Docker runs. Uses MLflow's own `models generate-dockerfile`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlops_core.errors import MlopsError
from mlops_core.registry.registry import Registry


def package_version(reg: Registry, version: str, out_dir: Path) -> Path:
    """Write ``out_dir`` with ``Dockerfile``, ``model_dir/`` and ``version.json``."""
    info = reg.version(version)  # raises NotFoundError for a wrong version
    if out_dir.exists() and any(out_dir.iterdir()):
        raise MlopsError(f"{out_dir} exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MLFLOW_TRACKING_URI=reg.uri, MLFLOW_REGISTRY_URI=reg.uri)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    res = subprocess.run(
        [
            str(mlflow_bin),
            "models",
            "generate-dockerfile",
            "-m",
            reg.model_uri(version),
            "-d",
            str(out_dir),
            "--env-manager",
            "local",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if res.returncode != 0:
        raise MlopsError(f"mlflow generate-dockerfile failed: {res.stderr.strip()[-500:]}")
    (out_dir / "version.json").write_text(
        json.dumps(
            {"model": reg.name, **info.to_dict(), "model_sha256": info.tags.get("model_sha256")},
            indent=2,
            default=str,
        )
    )
    return out_dir
