"""Data that dask graphs carry: in the graph on the local scheduler, on the workers on a cluster.

A processor that computes something in memory (the 20 m masks of the L3A coarse pass, the
coarse fields each block interpolates from) and hands it to the tasks of its next graph
puts the arrays in that graph. On the local (threaded) scheduler that costs nothing: the
tasks get the arrays themselves (views, no copies). On a distributed scheduler every
``dask.compute`` serialises the graph it is given and sends it to the scheduler, so data in
the graph travels with every computation that uses it (the L3A write computes one row of
blocks at a time: up to 40 MiB per row on one tile). :func:`graph_data` gives the tasks
either the arrays (local) or futures of copies scattered once to the workers, referenced
by key, which the graph holds as long as it lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["distributed_client", "graph_data", "local_scheduler"]


def local_scheduler(collections: Sequence[Any] | None = None) -> bool:
    """Whether dask computes ``collections`` with threads of this process in this context
    (the default, or ``scheduler="threads"`` / ``"sync"``): then its tasks share this
    process's objects (and may keep data in them for a later computation)."""
    import dask.local
    import dask.threaded
    from dask.base import get_scheduler

    return get_scheduler(collections=list(collections or ())) in (dask.threaded.get,
                                                                   dask.local.get_sync)


def distributed_client(collections: Sequence[Any] | None = None):
    """The ``distributed.Client`` dask computes ``collections`` with in this context (the
    ``scheduler`` of ``dask.config``, else a default client), or ``None`` when it is a local
    scheduler (threads, synchronous) or distributed is not installed."""
    from dask.base import get_scheduler

    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    owner = getattr(get_scheduler(collections=list(collections or ())), "__self__", None)
    return owner if isinstance(owner, Client) else None


def graph_data(blocks: Sequence[Any], collections: Sequence[Any] | None = None) -> list:
    """``blocks`` (numpy arrays, or any data) to put into the tasks of a dask graph: the
    blocks themselves on a local scheduler, or on a distributed one a future of each
    (scattered to the workers once, spread over them) that a task takes as an argument in
    place of the data; the data stays on the workers while the graph holds the futures.
    ``collections``: the arrays the graph is made from, to pick their scheduler."""
    client = distributed_client(collections)
    if client is None or not blocks:
        return list(blocks)
    return client.scatter(list(blocks), hash=False)
