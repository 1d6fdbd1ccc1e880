"""The smoke test of a packaged model: load it and predict in a fresh Python process, as
serving will, before it is registered. The child process imports MLflow; this module does not."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

_SMOKE_CODE = """
import json, sys
import mlflow, mlflow.pyfunc, pandas as pd, xgboost, sklearn  # the libraries, before any model
print("ready", flush=True)
job = json.loads(sys.stdin.readline())
mlflow.set_tracking_uri(job["tracking"]); mlflow.set_registry_uri(job["tracking"])
model = mlflow.pyfunc.load_model(job["model_uri"])
out = model.predict(pd.read_parquet(job["example"]))
print(json.dumps([str(v) for v in out["prediction"]]), flush=True)
"""


class SmokeTest:
    """Load and predict a packaged model in a fresh Python process.

    The process starts (and imports its libraries) as soon as the object is made, so a training
    run can start it before its search and only pay for loading the model at the end. It never
    sees the trained objects: only the model URI and an example file."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-smoke-")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SMOKE_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def submit(self, model_uri: str, example: pd.DataFrame, tracking: str) -> None:
        path = Path(self._tmp.name) / "example.parquet"
        example.to_parquet(path, index=False)
        assert self._proc.stdin is not None
        job = {"model_uri": model_uri, "example": str(path), "tracking": tracking}
        try:
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()  # one line is the whole job; communicate() closes stdin
        except BrokenPipeError:
            pass  # the process died; result() says why

    def result(self, timeout_s: float = 180) -> tuple[bool, str, list[str] | None]:
        """(ok, detail, predictions as text)."""
        try:
            out, errtext = self._proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            return False, f"timed out after {timeout_s:.0f} s", None
        finally:
            self._tmp.cleanup()
        if self._proc.returncode != 0:
            tail = (errtext.strip().splitlines() or ["(no output)"])[-1]
            return False, f"failed: {tail[-400:]}", None
        try:
            preds = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return False, f"unreadable output: {out[-200:]}", None
        return True, f"{len(preds)} predictions", preds

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._tmp.cleanup()


def smoke_test(
    model_uri: str, example: pd.DataFrame, tracking: str, timeout_s: float = 180
) -> tuple[bool, str, list[str] | None]:
    """Load ``model_uri`` in a fresh Python process and predict ``example`` (passed as Parquet,
    so types survive). Returns (ok, detail, predictions as text)."""
    test = SmokeTest()
    test.submit(model_uri, example, tracking)
    return test.result(timeout_s)
