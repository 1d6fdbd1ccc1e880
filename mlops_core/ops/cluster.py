"""The Dask cluster a training or monitoring run uses when ``model.engine`` is ``dask``: the
scheduler at ``dask.address``, or a ``LocalCluster`` started for the run and closed after it.

One of the three modules that import Dask (with ``train/distributed.py`` and
``monitor/distributed.py``); the rest of the library never sees a Dask object.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlops_core.config import Settings
from mlops_core.errors import ClusterError, ServiceUnavailable

log = logging.getLogger(__name__)


@contextmanager
def dask_client(settings: Settings) -> Iterator[Any]:
    """A ``distributed.Client`` for the run. With ``dask.address``, the existing scheduler
    (an unreachable one is :class:`ServiceUnavailable`, which the flows retry); without it,
    a ``LocalCluster`` of ``dask.n_workers`` worker processes, each held to
    ``dask.memory_limit``, closed when the block ends."""
    from distributed import Client, LocalCluster

    cfg = settings.dask
    # the cluster's comings and goings are Dask's business: its warnings and errors show;
    # a shuffle (xgboost.dask finding the classes) is routine here, not worth a warning
    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("distributed.shuffle._scheduler_plugin").setLevel(logging.ERROR)
    if cfg.address:
        try:
            _listening(cfg.address)
            client = Client(cfg.address, timeout="20s")
        except OSError as e:  # distributed raises OSError (and TimeoutError) when none answers
            raise ServiceUnavailable(
                f"the Dask scheduler at {cfg.address} (dask.address) does not answer: {e}"
            ) from None
        # entered, it is the current client, which xgboost.dask (distributed.wait) and
        # dask's .compute() use even where the caller entered another; closed after the block
        with client, _translated(settings):
            yield client
        return
    log.info(
        "starting a LocalCluster: %d workers x %d thread(s), memory limit %s each",
        cfg.n_workers,
        cfg.threads_per_worker,
        cfg.memory_limit,
    )
    with (
        LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            processes=True,
            dashboard_address=":0",  # a free port: several runs on one machine
        ) as cluster,
        Client(cluster) as client,
        _translated(settings),
    ):
        yield client


@contextmanager
def _translated(settings: Settings) -> Iterator[None]:
    """Dask's failures as :class:`ClusterError`, naming the likely cause."""
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    try:
        yield
    except KilledWorker as e:
        more = (
            "give its workers more memory"
            if settings.dask.address
            else f"raise dask.memory_limit (now {settings.dask.memory_limit}) or dask.n_workers"
        )
        raise ClusterError(
            f"a Dask worker died while running {getattr(e, 'task', '?')!r}, and so did the "
            f"workers that retried it: most often they ran out of memory; {more}, or ingest "
            "smaller batches (a batch file is one partition)"
        ) from None
    except CommClosedError as e:
        raise ClusterError(f"the Dask cluster went away during the run: {e}") from None


def _listening(address: str) -> None:
    """Raise ``OSError`` at once where nothing listens at a TCP scheduler address: distributed
    retries a refused connection until its whole connect timeout has passed."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        with socket.create_connection(parse_host_port(location), timeout=5):
            pass


def worker_threads(client: Any) -> int:
    """How many tasks the cluster runs at once (its workers' threads together)."""
    return max(1, sum(client.nthreads().values()))
