"""The compute engine of the production: a Dask cluster.

:func:`engine` yields a ``distributed.Client``: the caller's, or one on the Dask scheduler
the site (or the command line) names (an address or a scheduler file; Kubernetes, SLURM
or PBS clusters are reached this way), or a ``LocalCluster`` of ``engine.n_workers``
processes on loopback. Connecting is bounded in time (30 s).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError, OptionalDependencyError
from .site import Site

__all__ = ["engine"]


@contextmanager
def engine(site: Site, scheduler: str | None, scheduler_file: str | Path | None,
            n_workers: int | None, client) -> Iterator[Any]:
    """A Dask client for the run (see the module docstring); closes what it opened."""
    if client is not None:
        yield client
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - distributed is a dependency
        raise OptionalDependencyError("distributed", "cluster") from e
    address = scheduler or site.engine.scheduler
    sfile = scheduler_file or site.engine.scheduler_file
    if address or sfile:
        where = address or f"the scheduler file {sfile}"
        try:
            c = (Client(address, timeout="30s") if address
                 else Client(scheduler_file=str(sfile), timeout="30s"))
        except (OSError, TimeoutError) as e:
            raise ConfigurationError(f"cannot reach the Dask scheduler at {where} within 30 s: "
                                     f"{e}") from e
        try:
            yield c
        finally:
            c.close(timeout=10)
        return
    e = site.engine
    # silence_logs: the workers' own log lines (a failed task's "Compute Failed", logged as an
    # ERROR with its arguments and the escaped traceback) stay off the terminal; the runner
    # reports every failed job and its record holds the error and the traceback
    # (agriseries status SITE); a worker that dies is reported by the runner too
    cluster = LocalCluster(n_workers=n_workers or e.n_workers,
                           threads_per_worker=e.threads_per_worker, processes=True,
                           memory_limit=e.memory_limit, dashboard_address=":0",
                           host="127.0.0.1", silence_logs=logging.CRITICAL)
    c = Client(cluster)
    try:
        yield c
    finally:
        with suppress(Exception):
            c.close(timeout=10)
        with suppress(Exception):
            cluster.close(timeout=20)
