"""The production job store: the job queue and the product catalogue in one database.

One database holds what the automatic production needs to know between two runs:

* ``jobs``: one row per unit of work, keyed by what it computes (:func:`job_key`: the
  processor, the tile, the sorted input product ids and a hash of the parameters), so that
  submitting the same work twice gives the same job, and a job that is done stays done;
* ``products``: the catalogue of products that exist (id, level, tile, dates, path, STAC
  item), indexed on level, tile and dates, so that the scheduler can ask "what exists for
  tile T between these dates" in milliseconds with tens of thousands of products.

Backends (through SQLAlchemy 2 Core, the same code for both):

* an **SQLite file** (default, no setup): WAL journal (readers never wait for the writer),
  ``busy_timeout`` for lock waits, every write transaction opened with ``BEGIN IMMEDIATE``
  so that two processes never dead-lock on a lock upgrade, and a progress handler that
  interrupts any statement running longer than the time limit;
* **PostgreSQL** (``postgresql+psycopg://user@host/db``): ``statement_timeout``,
  ``lock_timeout`` and ``idle_in_transaction_session_timeout`` set on every session,
  ``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` (a dead server or network is
  noticed), ``pool_pre_ping`` (a restarted server is reconnected), and claims with
  ``SELECT ... FOR UPDATE SKIP LOCKED`` so that runners never wait for each other.

Reliability (docs/jobstore.md): every database call is bounded in time and raises
:class:`~agriseries.core.errors.JobStoreTimeout` (naming the database and the operation)
instead of hanging, the MUSCATE centre having stalled for days on one hung request; other
database failures raise :class:`~agriseries.core.errors.StoreError`. A failed call changes
nothing (its transaction is rolled back), so the caller can retry it or stop cleanly.

The life of a job (states, claims and leases, heartbeats, retries with backoff,
quarantine) is the job queue's: see :mod:`agriseries.production.queue`.

Times (leases, backoff) are read from the database server's clock, so runners on several
machines agree on when a lease expires; they are stored as seconds since 1970 (UTC) and
returned as timezone-aware :class:`datetime.datetime`.
"""

from __future__ import annotations

from typing import ClassVar

import sqlalchemy as sa

from .catalogue import ProductCatalogue, products_table
from .outbox import outbox_table
from .queue import JobQueue, jobs_table
from .records import Job, JobState, ProductRecord, job_key, params_hash

__all__ = ["Job", "JobState", "JobStore", "ProductRecord", "job_key", "params_hash"]


class JobStore(JobQueue, ProductCatalogue):
    """The production database as the runner uses it: the job queue
    (:class:`~agriseries.production.queue.JobQueue`) and the product catalogue
    (:class:`~agriseries.production.catalogue.ProductCatalogue`) on one connection pool.

    Takes the parameters of :class:`~agriseries.production.queue.JobQueue`. Either part can
    be opened alone on the same URL (the distribution reads only the catalogue).
    """

    TABLES: ClassVar[tuple[sa.Table, ...]] = (jobs_table, products_table, outbox_table)
