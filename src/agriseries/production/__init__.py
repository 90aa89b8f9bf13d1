"""Automatic production: sites, the stage table, the scheduler, the job store, the runner.

* :mod:`.site` -- site files (pydantic): area, season, products, inbox, store, database,
  engine;
* :mod:`.stages` -- the stage table: one entry per level (ingest, L2A, L3A, L3B, L4A,
  L4B), each with a pure ``plan``, a ``make`` and a typed parameter class;
* :mod:`.plan`, :mod:`.scheduler` -- the pure planning: catalogue in, jobs due out;
* :mod:`.records`, :mod:`.database`, :mod:`.queue`, :mod:`.catalogue`, :mod:`.jobstore`
  -- the production database: the job queue and the product catalogue, in an SQLite file
  by default or in PostgreSQL with one URL setting;
* :mod:`.inbox`, :mod:`.tasks`, :mod:`.engine`, :mod:`.runner`, :mod:`.status` -- the
  inbox scan, the jobs as Dask tasks through the shared stage driver, the cluster, the run
  loop and the read-only status.

The names below are imported on first use, so that importing a light module of this
package (the scheduler) does not pull in the database layer.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Job", "JobQueue", "JobState", "JobStore", "ProductCatalogue", "ProductRecord",
           "job_key", "params_hash"]

_WHERE = {"Job": ".records", "JobState": ".records", "ProductRecord": ".records",
          "job_key": ".records", "params_hash": ".records", "JobStore": ".jobstore",
          "JobQueue": ".queue", "ProductCatalogue": ".catalogue"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
