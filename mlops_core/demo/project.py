"""`mlops demo`'s project on disk: the seeded loan stream as weekly files (a few spoiled on
purpose), its true drift points, and a commented ``mlops.yaml`` over them."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlops_core.config import Settings, load_config
from mlops_core.demo.stream import (
    ID,
    TARGET,
    TIME,
    DemoStream,
    LandedFile,
    generate_stream,
    write_landing,
)
from mlops_core.errors import MlopsError
from mlops_core.ops.scaffold import InferredSchema, render_config
from mlops_core.ops.services import stop_all

PROJECT = "loans-demo"


@dataclass
class DemoProject:
    config: Path  # its mlops.yaml
    settings: Settings
    drop: Path  # where the weekly files are: landing/, or incoming/ to land during a replay
    stream: DemoStream
    files: list[LandedFile] | None  # the weekly files written now; None if they were there


def create_demo_project(
    directory: Path,
    *,
    rows: int = 100_000,
    days: int = 364,
    seed: int = 42,
    fresh: bool = False,
    replay: bool = False,
) -> DemoProject:
    """Write the demo project into ``directory``, keeping what is there unless ``fresh`` (its
    services are stopped and the folder deleted first). With ``replay`` the weekly files wait
    in ``incoming/`` to land during the replay, and the project monitors what the serving API
    answered and learns online."""
    if fresh and directory.exists():
        remove_demo_project(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / "mlops.yaml"
    stream = generate_stream(rows, days=days, seed=seed)
    drop = directory / ("incoming" if replay else "landing")
    files = None
    if not (directory / "landing").exists() and not drop.exists():
        files = write_landing(stream, drop)
        (directory / "drift_points.json").write_text(stream.drift_json(), encoding="utf-8")
    if not cfg_path.exists():
        cfg_path.write_text(demo_config(stream, replay=replay), encoding="utf-8")
    return DemoProject(cfg_path, load_config(cfg_path), drop, stream, files)


def remove_demo_project(directory: Path) -> None:
    """Stop the services of the demo project in ``directory``, then delete it."""
    if (directory / "mlops.yaml").exists():
        with contextlib.suppress(MlopsError):
            stop_all(load_config(directory / "mlops.yaml").workspace)
    shutil.rmtree(directory)


def demo_config(stream: DemoStream, *, replay: bool = False) -> str:
    """The demo's ``mlops.yaml``: a folder source (``landing/``), five search trials."""
    schema = InferredSchema("binary", **stream.features)  # type: ignore[arg-type]
    return render_config(
        project=PROJECT,
        data=Path("landing"),
        target=TARGET,
        time=TIME,
        id_col=ID,
        schema=schema,
        source_kind="folder",
        trials=5,
        # the replay sends the applications through the serving API:
        # monitoring measures what it answered, the online model learns
        monitoring_source="predictions" if replay else "batches",
        online=replay,
    )
