"""The production job store: idempotent, leased, retried jobs and the product catalogue.

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

Life of a job (:class:`JobState`)::

    submit -> queued --claim--> running --complete--> done
                 ^                 |  \\--fail (attempts < max)--> failed --(backoff)--> claimable
                 |                 |   \\-fail (attempts = max)--> quarantined (error + traceback)
                 |                 \\-lease expired (runner killed) --> claimable again
                 \\------------- retry_quarantined / release --------------/

A claim counts as an attempt. A runner keeps its lease alive with :meth:`JobStore.heartbeat`
(every ``lease_s / 3`` seconds, say); when a runner dies (``kill -9``, lost machine) its lease
expires and the next :meth:`JobStore.claim` takes the job again. A job whose lease expired
``max_attempts`` times (it kills its runner: out of memory...) is quarantined rather than
reclaimed forever. A runner whose lease was taken over gets
:class:`~agriseries.core.errors.LeaseLost` from ``heartbeat``, ``complete`` and ``fail``, so a
job is recorded done at most once. Failed attempts are retried after an exponential
backoff, ``backoff_s * 2 ** (attempt - 1)`` capped at ``backoff_max_s``.

Times (leases, backoff) are read from the database server's clock, so runners on several
machines agree on when a lease expires; they are stored as seconds since 1970 (UTC) and
returned as timezone-aware :class:`datetime.datetime`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import math
import sqlite3
import time
import traceback as _tb
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as _pg_insert
from sqlalchemy.dialects.sqlite import insert as _sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url

from ..core.errors import (
    ConfigurationError,
    JobStoreTimeout,
    LeaseLost,
    OptionalDependencyError,
    StoreError,
)
from ..core.ids import Level, ProductId

__all__ = ["Job", "JobState", "JobStore", "ProductRecord", "job_key", "params_hash"]

UTC = dt.UTC
_KEY_VERSION = "agriseries-job-v1"
_PG_SCHEMA_LOCK = 0x61677269  # pg_advisory_xact_lock id serialising table creation ("agri")


class JobState(str, enum.Enum):
    """The states of a job."""

    QUEUED = "queued"  #: waiting to be claimed
    RUNNING = "running"  #: claimed by a runner, which holds a lease on it
    DONE = "done"  #: completed; its outputs are recorded
    FAILED = "failed"  #: an attempt failed; it will be claimable again after its backoff
    QUARANTINED = "quarantined"  #: failed ``max_attempts`` times; waits for an operator


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as stored (a snapshot: the database row when it was read).

    Attributes
    ----------
    key
        Identity of the job: :func:`job_key` of processor, tile, inputs and parameters.
    processor
        Name of the processor (the stage function) that runs it.
    tile
        Sentinel-2 tile id the job works on, or ``None``.
    inputs
        Input product ids, sorted, without duplicates.
    params
        Parameters, as canonical JSON (what :func:`params_hash` hashed).
    state
        A :class:`JobState`.
    priority
        Higher runs first.
    attempts
        Number of claims so far (the current attempt when running).
    max_attempts
        Attempts allowed before quarantine.
    outputs
        Product ids the job made (set by :meth:`JobStore.complete`), else ``None``.
    lease_owner, lease_expires_at, heartbeat_at
        The runner holding the lease, until when, and its last heartbeat (running jobs).
    next_try_at
        Earliest time the job can be claimed (backoff after a failure).
    error, traceback
        Last error message and Python traceback (failed, quarantined jobs).
    created_at, updated_at, started_at, finished_at
        Bookkeeping times (UTC).
    """

    key: str
    processor: str
    tile: str | None
    inputs: tuple[str, ...]
    params: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    outputs: tuple[str, ...] | None
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    next_try_at: dt.datetime | None
    error: str | None
    traceback: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    def __str__(self) -> str:
        where = f" {self.tile}" if self.tile else ""
        return f"job {self.key[:12]} ({self.processor}{where}, {self.state.value})"


@dataclasses.dataclass(frozen=True)
class ProductRecord:
    """A product in the catalogue.

    Attributes
    ----------
    product_id
        The product id (see :mod:`agriseries.core.ids`).
    level
        Product level code (``L2A``, ``L3A``...).
    tile
        Sentinel-2 tile id.
    start, end
        Acquisition time, or first and last day of the period (UTC); ``end == start`` for
        an acquisition.
    path
        Where the product is (its STAC item file or folder, a local path or an fsspec URL).
    item
        The STAC item as a dict, when stored and asked for.
    created_at
        When the record was (last) written.
    """

    product_id: str
    level: str
    tile: str
    start: dt.datetime
    end: dt.datetime
    path: str
    item: dict[str, Any] | None = None
    created_at: dt.datetime | None = None

    @classmethod
    def from_id(cls, product_id: str | ProductId, path: str | Path, *,
                level: Level | str | None = None, tile: str | None = None,
                start: dt.datetime | None = None, end: dt.datetime | None = None,
                item: Mapping[str, Any] | None = None) -> ProductRecord:
        """A record whose level, tile and dates default to what the product id says.

        Parameters
        ----------
        product_id
            An agriseries product id (:class:`~agriseries.core.ids.ProductId` or its
            text), or any other id when ``level``, ``tile`` and ``start`` are given.
        path
            Where the product is.
        level, tile, start, end
            Override or supply the parts of the id; ``end`` defaults to the period's end,
            else to ``start``.
        item
            The STAC item.

        Raises
        ------
        ConfigurationError
            If the id is not an agriseries id and level, tile or start is missing.
        """
        pid = product_id if isinstance(product_id, ProductId) else None
        if pid is None:
            try:
                pid = ProductId.parse(str(product_id))
            except ConfigurationError:
                pid = None
        level = level if level is not None else (pid.level if pid else None)
        tile = tile or (pid.tile if pid else None)
        start = start or (pid.start if pid else None)
        end = end or (pid.end if pid and pid.end else None) or start
        if level is None or tile is None or start is None:
            raise ConfigurationError(
                f"product {product_id}: not an agriseries product id, so level, tile and start "
                "must be given")
        return cls(str(product_id), level.value if isinstance(level, Level) else str(level),
                   tile, start, end, str(path), dict(item) if item is not None else None)


# --------------------------------------------------------------------------------- keys


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def _canonical_params(params: Any) -> dict[str, Any]:
    """Parameters as a plain JSON dict: a mapping, a dataclass or a pydantic model."""
    if params is None:
        obj: Any = {}
    elif dataclasses.is_dataclass(params) and not isinstance(params, type):
        obj = dataclasses.asdict(params)
    elif hasattr(params, "model_dump"):
        obj = params.model_dump(mode="json")
    elif isinstance(params, Mapping):
        obj = dict(params)
    else:
        raise ConfigurationError(
            f"job parameters {params!r}: expected a mapping, a dataclass or a pydantic model"
        )
    try:
        text = json.dumps(obj, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"job parameters cannot be stored as JSON: {e}") from e
    return json.loads(text)


def _canonical_text(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def params_hash(params: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of job parameters.

    Parameters
    ----------
    params
        A mapping, a (frozen) dataclass or a pydantic model; ``None`` means no parameters.
        Key order does not matter; tuples and lists are the same; dates are ISO strings.

    Raises
    ------
    ConfigurationError
        If the parameters cannot be written as JSON (an object, NaN...).
    """
    return hashlib.sha256(_canonical_text(_canonical_params(params)).encode()).hexdigest()


def _canonical_inputs(inputs: Iterable[str | ProductId]) -> tuple[str, ...]:
    if isinstance(inputs, (str, bytes, ProductId)):
        raise ConfigurationError(
            f"job inputs {inputs!r}: expected a sequence of product ids, not a single id"
        )
    out = set()
    for i in inputs:
        if not isinstance(i, (str, ProductId)) or not str(i):
            raise ConfigurationError(f"job input {i!r}: expected a product id (a string)")
        out.add(str(i))
    return tuple(sorted(out))


def _check_processor(processor: str) -> str:
    if not isinstance(processor, str) or not (0 < len(processor) <= 64):
        raise ConfigurationError(f"processor {processor!r}: expected a name of 1-64 characters")
    return processor


def job_key(processor: str, inputs: Iterable[str | ProductId], params: Any = None,
            tile: str | None = None) -> str:
    """The identity of a job: SHA-256 (hex) of processor, tile, sorted inputs and parameters.

    The same work submitted twice (inputs in another order, parameter keys in another
    order) has the same key; a different parameter value or input gives another key. The
    tile is part of the key because one input (a Landsat scene) can feed several tiles.

    Parameters
    ----------
    processor
        Processor name.
    inputs
        Input product ids (order and duplicates do not matter).
    params
        Parameters (see :func:`params_hash`).
    tile
        Tile id, or ``None``.
    """
    parts = [_KEY_VERSION, _check_processor(processor), tile, list(_canonical_inputs(inputs)),
             params_hash(params)]
    return hashlib.sha256(_canonical_text(parts).encode()).hexdigest()


# ------------------------------------------------------------------------------- schema

_meta = sa.MetaData()

jobs_table = sa.Table(
    "jobs", _meta,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("processor", sa.String(64), nullable=False),
    sa.Column("tile", sa.String(16)),
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("params_hash", sa.String(64), nullable=False),
    sa.Column("outputs", sa.JSON(none_as_null=True)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("next_try_at", sa.Double),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires_at", sa.Double),
    sa.Column("heartbeat_at", sa.Double),
    sa.Column("error", sa.Text),
    sa.Column("traceback", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Index("ix_jobs_state_next_try", "state", "next_try_at"),
    sa.Index("ix_jobs_state_lease", "state", "lease_expires_at"),
    sa.Index("ix_jobs_processor_state", "processor", "state"),
    sa.Index("ix_jobs_tile", "tile"),
)

products_table = sa.Table(
    "products", _meta,
    sa.Column("product_id", sa.String(200), primary_key=True),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("tile", sa.String(16), nullable=False),
    sa.Column("start_time", sa.DateTime, nullable=False),  # naive UTC
    sa.Column("end_time", sa.DateTime, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("item", sa.JSON(none_as_null=True)),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_products_level_tile_start", "level", "tile", "start_time"),
    sa.Index("ix_products_tile_start", "tile", "start_time"),
)

_J = jobs_table.c
_P = products_table.c


def _ts(x: float | None) -> dt.datetime | None:
    return None if x is None else dt.datetime.fromtimestamp(x, UTC)


def _naive_utc(d: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(d, dt.datetime):
        d = dt.datetime(d.year, d.month, d.day)
    if d.tzinfo is not None:
        d = d.astimezone(UTC).replace(tzinfo=None)
    return d


def _row_to_job(r: Mapping[str, Any]) -> Job:
    return Job(
        key=r["key"], processor=r["processor"], tile=r["tile"],
        inputs=tuple(r["inputs"]), params=dict(r["params"]), state=JobState(r["state"]),
        priority=r["priority"], attempts=r["attempts"], max_attempts=r["max_attempts"],
        outputs=None if r["outputs"] is None else tuple(r["outputs"]),
        lease_owner=r["lease_owner"], lease_expires_at=_ts(r["lease_expires_at"]),
        heartbeat_at=_ts(r["heartbeat_at"]), next_try_at=_ts(r["next_try_at"]),
        error=r["error"], traceback=r["traceback"],
        created_at=_ts(r["created_at"]), updated_at=_ts(r["updated_at"]),
        started_at=_ts(r["started_at"]), finished_at=_ts(r["finished_at"]),
    )


def _row_to_product(r: Mapping[str, Any], with_item: bool) -> ProductRecord:
    return ProductRecord(
        product_id=r["product_id"], level=r["level"], tile=r["tile"],
        start=r["start_time"].replace(tzinfo=UTC), end=r["end_time"].replace(tzinfo=UTC),
        path=r["path"], item=r["item"] if with_item else None, created_at=_ts(r["created_at"]),
    )


# ------------------------------------------------------------------------------- store


class JobStore:
    """The production database: jobs and the product catalogue.

    Parameters
    ----------
    url
        SQLAlchemy database URL, or a path to an SQLite file. ``sqlite:///path/jobs.db``
        (the parent folder is created), or ``postgresql+psycopg://user:pass@host:5432/db``
        (``postgresql://`` is read as ``postgresql+psycopg://``; a UNIX socket folder is
        given as ``?host=/path/to/socket/dir``). PostgreSQL needs ``agriseries[postgres]``.
    statement_timeout_s
        Time limit of every database statement and of every wait for a lock or for a
        pooled connection, in seconds. Past it the call raises
        :class:`~agriseries.core.errors.JobStoreTimeout`.
    lease_s
        Length of a lease: a claimed job whose runner has not sent a heartbeat for this
        long is considered abandoned and can be claimed again.
    max_attempts
        Default number of attempts (claims) before a job is quarantined.
    backoff_s
        Wait before the second attempt after a failure; it doubles at each attempt.
    backoff_max_s
        Longest wait between two attempts.
    connect_timeout_s
        Time limit to open a connection (PostgreSQL; rounded up to whole seconds, at
        least 2, as libpq requires).

    Notes
    -----
    One ``JobStore`` per process (do not share one across ``fork``); it is thread-safe.
    SQLite needs a local file system (WAL does not work over NFS); use PostgreSQL when
    runners are on several machines.
    """

    def __init__(self, url: str | Path, *, statement_timeout_s: float = 30.0,
                 lease_s: float = 300.0, max_attempts: int = 3, backoff_s: float = 60.0,
                 backoff_max_s: float = 6 * 3600.0, connect_timeout_s: float = 10.0) -> None:
        for name, value in (("statement_timeout_s", statement_timeout_s), ("lease_s", lease_s),
                            ("backoff_s", backoff_s), ("backoff_max_s", backoff_max_s),
                            ("connect_timeout_s", connect_timeout_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name}={value!r}: expected a positive number of seconds")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise ConfigurationError(f"max_attempts={max_attempts!r}: expected an integer >= 1")
        self.statement_timeout_s = float(statement_timeout_s)
        self.lease_s = float(lease_s)
        self.max_attempts = max_attempts
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.connect_timeout_s = float(connect_timeout_s)

        sa_url = self._parse_url(url)
        self.url = sa_url.render_as_string(hide_password=True)
        self.backend = "sqlite" if sa_url.get_backend_name() == "sqlite" else "postgresql"
        if self.backend == "sqlite":
            self._engine = self._sqlite_engine(sa_url)
            self._insert = _sqlite_insert
        else:
            self._engine = self._postgres_engine(sa_url)
            self._insert = _pg_insert
        self._create_tables()

    # -- engines -------------------------------------------------------------------

    @staticmethod
    def _parse_url(url: str | Path) -> URL:
        if isinstance(url, Path) or (isinstance(url, str) and "://" not in url):
            return make_url(f"sqlite:///{Path(url).expanduser().absolute()}")
        try:
            u = make_url(url)
        except sa_exc.ArgumentError as e:
            raise ConfigurationError(f"job store URL {url!r}: {e}") from e
        backend = u.get_backend_name()
        driver = u.drivername.partition("+")[2]
        if backend == "sqlite":
            if driver not in ("", "pysqlite"):
                raise ConfigurationError(f"job store URL {url!r}: use 'sqlite:///path/jobs.db'")
            if not u.database or u.database == ":memory:" or u.database.startswith("file:"):
                raise ConfigurationError(
                    f"job store URL {url!r}: expected an SQLite file, 'sqlite:///path/jobs.db' "
                    "(an in-memory database is not shared between connections or processes)"
                )
            return u
        if backend in ("postgresql", "postgres"):
            if "+" in u.drivername and driver != "psycopg":
                raise ConfigurationError(
                    f"job store URL {url!r}: the PostgreSQL driver is psycopg 3, "
                    "use 'postgresql+psycopg://...'"
                )
            return u.set(drivername="postgresql+psycopg")
        raise ConfigurationError(
            f"job store URL {url!r}: expected 'sqlite:///path/jobs.db' or "
            "'postgresql+psycopg://user@host/db'"
        )

    def _sqlite_engine(self, url: URL) -> sa.Engine:
        path = Path(url.database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"job store {self.url}: cannot create folder {path.parent}: {e}") from e
        timeout = self.statement_timeout_s
        engine = sa.create_engine(
            url, connect_args={"timeout": timeout}, pool_timeout=timeout,
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
            # SQLAlchemy emits BEGIN itself (see _on_begin): the driver must not.
            dbapi_conn.isolation_level = None
            deadline = [math.inf]
            record.info["agriseries_deadline"] = deadline

            def progress() -> int:  # interrupt a statement running past its deadline
                return 1 if time.monotonic() > deadline[0] else 0

            dbapi_conn.set_progress_handler(progress, 10_000)
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
                cur.execute("PRAGMA foreign_keys = ON")
            finally:
                cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(conn.get_execution_options().get("agriseries_begin", "BEGIN"))

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _on_execute(conn, cursor, statement, parameters, context, executemany) -> None:
            deadline = conn.info.get("agriseries_deadline")
            if deadline is not None:
                deadline[0] = time.monotonic() + timeout

        return engine

    def _postgres_engine(self, url: URL) -> sa.Engine:
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise OptionalDependencyError("psycopg", "postgres") from e
        ms = max(1, int(self.statement_timeout_s * 1000))
        # a lock wait ends a little before the statement limit, so its error says "lock"
        lock_ms = max(1, int(ms * 0.9))
        options = (f"-c statement_timeout={ms} -c lock_timeout={lock_ms} "
                   f"-c idle_in_transaction_session_timeout={4 * ms}")
        query = dict(url.query)
        if "options" in query:  # keep the user's own session settings, ours last
            options = f"{query.pop('options')} {options}"
            url = url.set(query=query)
        connect_args = {
            "connect_timeout": max(2, math.ceil(self.connect_timeout_s)),
            "options": options,
            "application_name": "agriseries",
            # a dead server or network is noticed instead of waited for (TCP only)
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(self.statement_timeout_s)),
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": ms + 15_000,
        }
        return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True,
                                pool_timeout=self.statement_timeout_s, pool_size=4,
                                max_overflow=4)

    # -- transactions and errors ---------------------------------------------------------

    @contextmanager
    def _transaction(self, op: str, *, write: bool) -> Iterator[Connection]:
        """A transaction; database errors become StoreError/JobStoreTimeout naming ``op``.

        On SQLite a writing transaction starts with ``BEGIN IMMEDIATE``: it takes the write
        lock first (waiting at most ``busy_timeout``), so it can never fail half-way on a
        lock upgrade. A reading one starts with a deferred ``BEGIN`` and never waits in WAL
        mode.
        """
        t0 = time.monotonic()
        try:
            with self._engine.connect() as conn:
                if self.backend == "sqlite":
                    conn.execution_options(agriseries_begin="BEGIN IMMEDIATE" if write else "BEGIN")
                with conn.begin():
                    yield conn
        except (sa_exc.SQLAlchemyError, sqlite3.Error) as e:
            raise self._translate(e, op, time.monotonic() - t0) from e
        except Exception as e:
            if _is_psycopg_error(e):
                raise self._translate(e, op, time.monotonic() - t0) from e
            raise

    def _translate(self, e: BaseException, op: str, elapsed: float) -> StoreError:
        orig = getattr(e, "orig", None) or e
        where = f"job store {self.url}: {op}"
        limit = f"limit {self.statement_timeout_s:g} s"
        detail = " ".join(str(orig).split())[:300]
        if isinstance(e, sa_exc.TimeoutError):
            return JobStoreTimeout(f"{where} timed out after {elapsed:.1f} s waiting for a free "
                                   f"database connection ({limit}; all pooled connections busy)")
        if isinstance(orig, sqlite3.OperationalError):
            if "locked" in detail or "busy" in detail:
                return JobStoreTimeout(
                    f"{where} timed out after {elapsed:.1f} s waiting for a lock held by another "
                    f"connection or process ({limit}; SQLite: {detail})")
            if "interrupted" in detail:
                return JobStoreTimeout(f"{where} was cancelled after {elapsed:.1f} s: a statement "
                                       f"ran past the {limit} (SQLite: {detail})")
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate == "55P03":
            return JobStoreTimeout(f"{where} timed out after {elapsed:.1f} s waiting for a lock "
                                   f"held by another connection ({limit}; PostgreSQL: {detail})")
        if sqlstate in ("57014", "25P03"):
            return JobStoreTimeout(f"{where} was cancelled after {elapsed:.1f} s: a statement ran "
                                   f"past the {limit} (PostgreSQL: {detail})")
        if "timeout expired" in detail:
            return JobStoreTimeout(f"{where}: cannot connect within {self.connect_timeout_s:g} s "
                                   f"({detail})")
        return StoreError(f"{where} failed: {type(orig).__name__}: {detail}")

    def _now(self, conn: Connection) -> float:
        """The database server's clock, seconds since 1970 (UTC)."""
        if self.backend == "sqlite":
            expr = "SELECT (julianday('now') - 2440587.5) * 86400.0"
        else:
            expr = "SELECT extract(epoch FROM clock_timestamp())::float8"
        return float(conn.exec_driver_sql(expr).scalar_one())

    def _create_tables(self) -> None:
        with self._transaction("open (create tables)", write=True) as conn:
            if self.backend == "postgresql":  # two processes starting at once
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK)))
            _meta.create_all(conn, checkfirst=True)

    # -- jobs ----------------------------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        return min(self.backoff_s * 2.0 ** max(0, attempts - 1), self.backoff_max_s)

    @staticmethod
    def _get(conn: Connection, key: str) -> Job | None:
        row = conn.execute(sa.select(jobs_table).where(_J.key == key)).mappings().first()
        return None if row is None else _row_to_job(row)

    def submit(self, processor: str, inputs: Iterable[str | ProductId], params: Any = None, *,
               tile: str | None = None, priority: int = 0,
               max_attempts: int | None = None) -> Job:
        """Add a job, or return the existing one with the same key.

        Idempotent: the same processor, tile, inputs and parameters give the same key
        (:func:`job_key`), and submitting it again returns the stored job unchanged, whatever
        its state (a done job stays done, a quarantined one stays quarantined).

        Parameters
        ----------
        processor
            Processor name.
        inputs
            Input product ids.
        params
            Parameters: a mapping, a dataclass or a pydantic model (stored as JSON).
        tile
            Tile id the job works on.
        priority
            Higher is claimed first.
        max_attempts
            Attempts before quarantine; default: the store's ``max_attempts``.

        Returns
        -------
        Job
        """
        canon_inputs = _canonical_inputs(inputs)
        canon_params = _canonical_params(params)
        key = job_key(processor, canon_inputs, canon_params, tile)
        n_max = self.max_attempts if max_attempts is None else max_attempts
        if not (isinstance(n_max, int) and n_max >= 1):
            raise ConfigurationError(f"max_attempts={max_attempts!r}: expected an integer >= 1")
        if not isinstance(priority, int):
            raise ConfigurationError(f"priority={priority!r}: expected an integer")
        with self._transaction(f"submit {processor}", write=True) as conn:
            now = self._now(conn)
            stmt = self._insert(jobs_table).values(
                key=key, processor=processor, tile=tile, inputs=list(canon_inputs),
                params=canon_params, params_hash=params_hash(canon_params), outputs=None,
                state=JobState.QUEUED.value, priority=priority, attempts=0, max_attempts=n_max,
                next_try_at=now, created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["key"])
            conn.execute(stmt)
            job = self._get(conn, key)
        assert job is not None
        return job

    def get(self, key: str) -> Job | None:
        """The job with this key, or ``None``."""
        with self._transaction("get job", write=False) as conn:
            return self._get(conn, key)

    def claim(self, worker_id: str, limit: int = 1,
              processors: Sequence[str] | None = None) -> list[Job]:
        """Take up to ``limit`` claimable jobs for ``worker_id``, atomically.

        Claimable: queued, or failed with its backoff over, or running with an expired
        lease (its runner died: the job is taken over). Highest priority first, then
        oldest. Each claim counts as an attempt; a job whose lease expired on its last
        allowed attempt is quarantined instead of being claimed again. Two runners never
        get the same job (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
        SQLite).

        Parameters
        ----------
        worker_id
            Name of the runner (host, process id...), recorded as the lease owner.
        limit
            Most jobs to take.
        processors
            Take only jobs of these processors.

        Returns
        -------
        list of Job
            The claimed jobs (running, leased to ``worker_id``); empty when none is due.
        """
        if not isinstance(worker_id, str) or not (0 < len(worker_id) <= 200):
            raise ConfigurationError(f"worker_id {worker_id!r}: expected 1-200 characters")
        if not (isinstance(limit, int) and limit >= 1):
            raise ConfigurationError(f"limit={limit!r}: expected an integer >= 1")
        claimed: list[str] = []
        with self._transaction(f"claim for {worker_id}", write=True) as conn:
            now = self._now(conn)
            due = sa.or_(
                sa.and_(_J.state.in_([JobState.QUEUED.value, JobState.FAILED.value]),
                        _J.next_try_at <= now),
                sa.and_(_J.state == JobState.RUNNING.value, _J.lease_expires_at < now),
            )
            if processors is not None:
                due = sa.and_(due, _J.processor.in_(list(processors)))
            while len(claimed) < limit:
                rows = conn.execute(
                    sa.select(_J.key, _J.state, _J.attempts, _J.max_attempts, _J.lease_owner)
                    .where(due)
                    .order_by(_J.priority.desc(), _J.created_at, _J.key)
                    .limit(limit - len(claimed))
                    .with_for_update(skip_locked=True)
                ).mappings().all()
                if not rows:
                    break
                take = []
                for r in rows:
                    if r["state"] == JobState.RUNNING.value and r["attempts"] >= r["max_attempts"]:
                        conn.execute(sa.update(jobs_table).where(_J.key == r["key"]).values(
                            state=JobState.QUARANTINED.value, lease_owner=None,
                            lease_expires_at=None, next_try_at=None, finished_at=now,
                            updated_at=now, traceback=None,
                            error=(f"the lease of runner {r['lease_owner']!r} expired on attempt "
                                   f"{r['attempts']} of {r['max_attempts']}: the runner died or "
                                   "hung on this job every time"),
                        ))
                    else:
                        take.append(r["key"])
                if take:
                    conn.execute(sa.update(jobs_table).where(_J.key.in_(take)).values(
                        state=JobState.RUNNING.value, lease_owner=worker_id,
                        lease_expires_at=now + self.lease_s, heartbeat_at=now,
                        attempts=_J.attempts + 1, started_at=now, finished_at=None,
                        updated_at=now,
                    ))
                    claimed.extend(take)
            if not claimed:
                return []
            rows = conn.execute(sa.select(jobs_table).where(_J.key.in_(claimed))).mappings().all()
        order = {k: i for i, k in enumerate(claimed)}
        return sorted((_row_to_job(r) for r in rows), key=lambda j: order[j.key])

    def _owned(self, conn: Connection, job: Job, owner: str | None, op: str) -> Job:
        """The current row of ``job`` if ``owner`` still holds its lease, else LeaseLost."""
        owner = owner or job.lease_owner
        q = sa.select(jobs_table).where(_J.key == job.key).with_for_update()
        row = conn.execute(q).mappings().first()
        if row is None:
            raise ConfigurationError(f"job store {self.url}: {op}: no job with key {job.key!r}")
        cur = _row_to_job(row)
        if (cur.state is not JobState.RUNNING or cur.lease_owner != owner
                or cur.attempts != job.attempts):
            raise LeaseLost(
                f"{job}: {op} by runner {owner!r} (attempt {job.attempts}) refused: the lease "
                f"is no longer theirs, the job is now {cur.state.value}"
                + (f", leased to {cur.lease_owner!r} (attempt {cur.attempts})"
                   if cur.state is JobState.RUNNING else "")
                + "; drop this work"
            )
        return cur

    def heartbeat(self, job: Job, worker_id: str | None = None) -> Job:
        """Extend the lease of a running job by ``lease_s`` from now.

        Parameters
        ----------
        job
            The job as returned by :meth:`claim`.
        worker_id
            The runner holding the lease (default: ``job.lease_owner``).

        Returns
        -------
        Job
            The job with its new ``lease_expires_at``.

        Raises
        ------
        LeaseLost
            If the lease was taken over by another runner (it expired) or the job is no
            longer running.
        """
        with self._transaction(f"heartbeat {job.key[:12]}", write=True) as conn:
            self._owned(conn, job, worker_id, "heartbeat")
            now = self._now(conn)
            conn.execute(sa.update(jobs_table).where(_J.key == job.key).values(
                lease_expires_at=now + self.lease_s, heartbeat_at=now, updated_at=now))
            out = self._get(conn, job.key)
        assert out is not None
        return out

    def complete(self, job: Job, outputs: Iterable[str | ProductId] = ()) -> Job:
        """Record a running job as done, with the product ids it made.

        Raises
        ------
        LeaseLost
            If the runner no longer holds the lease (another runner took the job over):
            the job is not marked done twice.
        """
        outs = [str(o) for o in outputs]
        with self._transaction(f"complete {job.key[:12]}", write=True) as conn:
            self._owned(conn, job, None, "complete")
            now = self._now(conn)
            conn.execute(sa.update(jobs_table).where(_J.key == job.key).values(
                state=JobState.DONE.value, outputs=outs, lease_owner=None,
                lease_expires_at=None, next_try_at=None, error=None, traceback=None,
                finished_at=now, updated_at=now))
            out = self._get(conn, job.key)
        assert out is not None
        return out

    def fail(self, job: Job, error: str | BaseException, traceback: str | None = None) -> Job:
        """Record a failed attempt: retry after a backoff, or quarantine after the last one.

        Parameters
        ----------
        job
            The job as returned by :meth:`claim`.
        error
            What went wrong: a message or the exception itself.
        traceback
            The Python traceback; by default formatted from ``error`` when it is an
            exception.

        Returns
        -------
        Job
            ``failed`` with ``next_try_at`` = now + ``backoff_s * 2 ** (attempts - 1)``
            (capped at ``backoff_max_s``), or ``quarantined`` when ``attempts`` reached
            ``max_attempts``; error and traceback are kept.

        Raises
        ------
        LeaseLost
            If the runner no longer holds the lease.
        """
        if isinstance(error, BaseException):
            if traceback is None and error.__traceback__ is not None:
                traceback = "".join(_tb.format_exception(error))
            message = f"{type(error).__name__}: {error}"
        else:
            message = str(error)
        with self._transaction(f"fail {job.key[:12]}", write=True) as conn:
            cur = self._owned(conn, job, None, "fail")
            now = self._now(conn)
            if cur.attempts >= cur.max_attempts:
                values = {"state": JobState.QUARANTINED.value, "next_try_at": None}
            else:
                values = {"state": JobState.FAILED.value,
                          "next_try_at": now + self._backoff(cur.attempts)}
            conn.execute(sa.update(jobs_table).where(_J.key == job.key).values(
                **values, error=message, traceback=traceback, lease_owner=None,
                lease_expires_at=None, finished_at=now, updated_at=now))
            out = self._get(conn, job.key)
        assert out is not None
        return out

    def release(self, job: Job) -> Job:
        """Give a running job back without counting the attempt (a runner stopping cleanly).

        Raises
        ------
        LeaseLost
            If the runner no longer holds the lease.
        """
        with self._transaction(f"release {job.key[:12]}", write=True) as conn:
            cur = self._owned(conn, job, None, "release")
            now = self._now(conn)
            conn.execute(sa.update(jobs_table).where(_J.key == job.key).values(
                state=JobState.QUEUED.value, attempts=max(0, cur.attempts - 1), lease_owner=None,
                lease_expires_at=None, next_try_at=now, updated_at=now))
            out = self._get(conn, job.key)
        assert out is not None
        return out

    def retry_quarantined(self, key: str) -> Job:
        """Put a quarantined job back in the queue, with its attempt count reset.

        Its last error and traceback stay until the next attempt ends.

        Raises
        ------
        ConfigurationError
            If there is no such job or it is not quarantined.
        """
        with self._transaction(f"retry {key[:12]}", write=True) as conn:
            cur = self._get(conn, key)
            if cur is None:
                raise ConfigurationError(f"job store {self.url}: no job with key {key!r}")
            if cur.state is not JobState.QUARANTINED:
                raise ConfigurationError(
                    f"{cur}: only a quarantined job can be retried, this one is {cur.state.value}")
            now = self._now(conn)
            conn.execute(sa.update(jobs_table).where(_J.key == key).values(
                state=JobState.QUEUED.value, attempts=0, next_try_at=now, updated_at=now))
            out = self._get(conn, key)
        assert out is not None
        return out

    def jobs(self, state: JobState | str | Iterable[JobState | str] | None = None, *,
             processor: str | None = None, tile: str | None = None,
             limit: int | None = None) -> list[Job]:
        """Jobs, oldest first, filtered by state(s), processor and tile."""
        q = sa.select(jobs_table)
        if state is not None:
            states = [state] if isinstance(state, (str, JobState)) else list(state)
            try:
                q = q.where(_J.state.in_([JobState(s).value for s in states]))
            except ValueError as e:
                raise ConfigurationError(
                    f"job state {state!r}: expected one of {[s.value for s in JobState]}") from e
        if processor is not None:
            q = q.where(_J.processor == processor)
        if tile is not None:
            q = q.where(_J.tile == tile)
        q = q.order_by(_J.created_at, _J.key)
        if limit is not None:
            q = q.limit(limit)
        with self._transaction("list jobs", write=False) as conn:
            return [_row_to_job(r) for r in conn.execute(q).mappings()]

    def counts(self, processor: str | None = None) -> dict[str, int]:
        """Number of jobs in each state (every state present, zeros included)."""
        q = sa.select(_J.state, sa.func.count()).group_by(_J.state)
        if processor is not None:
            q = q.where(_J.processor == processor)
        with self._transaction("count jobs", write=False) as conn:
            found = dict(conn.execute(q).all())
        return {s.value: int(found.get(s.value, 0)) for s in JobState}

    # -- product catalogue ---------------------------------------------------------------

    @staticmethod
    def _product_values(rec: ProductRecord, now: float) -> dict[str, Any]:
        try:
            level = Level(rec.level).value
        except ValueError as e:
            raise ConfigurationError(f"product {rec.product_id}: level {rec.level!r}: expected one "
                                     f"of {[lv.value for lv in Level]}") from e
        start, end = _naive_utc(rec.start), _naive_utc(rec.end)
        if end < start:
            raise ConfigurationError(f"product {rec.product_id}: end {rec.end} is before start "
                                     f"{rec.start}")
        return {"product_id": str(rec.product_id), "level": level, "tile": rec.tile,
                "start_time": start, "end_time": end, "path": str(rec.path), "item": rec.item,
                "created_at": now}

    def add_product(self, product_id: str | ProductId, path: str | Path, *,
                    level: Level | str | None = None, tile: str | None = None,
                    start: dt.datetime | None = None, end: dt.datetime | None = None,
                    item: Mapping[str, Any] | None = None) -> ProductRecord:
        """Record a product in the catalogue (or update it: same id, new path or item).

        Level, tile and dates default to what an agriseries product id says
        (:class:`~agriseries.core.ids.ProductId`); give them for other ids.

        Parameters
        ----------
        product_id
            The product id.
        path
            Where the product is (STAC item file, folder or URL).
        level, tile, start, end
            Override or supply the parts of the id; ``end`` defaults to ``start``.
        item
            The STAC item (a dict), stored as JSON.
        """
        rec = ProductRecord.from_id(product_id, path, level=level, tile=tile, start=start,
                                    end=end, item=item)
        self.add_products([rec])
        return rec

    def add_products(self, records: Iterable[ProductRecord]) -> int:
        """Record many products in one transaction (insert or update by id).

        Returns
        -------
        int
            Number of records written.
        """
        recs = list(records)
        if not recs:
            return 0
        with self._transaction(f"add {len(recs)} product(s)", write=True) as conn:
            now = self._now(conn)
            rows = [self._product_values(r, now) for r in recs]
            stmt = self._insert(products_table)
            stmt = stmt.on_conflict_do_update(
                index_elements=["product_id"],
                set_={c: stmt.excluded[c] for c in
                      ("level", "tile", "start_time", "end_time", "path", "item", "created_at")},
            )
            conn.execute(stmt, rows)
        return len(rows)

    def products(self, level: Level | str | None = None, tile: str | None = None,
                 start: dt.datetime | dt.date | None = None,
                 end: dt.datetime | dt.date | None = None, *,
                 with_items: bool = False) -> list[ProductRecord]:
        """Products of a level and tile whose dates overlap ``[start, end]``, oldest first.

        As :meth:`agriseries.io.store.ProductStore.items`: dates are inclusive, and an
        ``end`` at midnight (or a date) means the whole of that day.

        Parameters
        ----------
        level, tile
            Filters (``None``: any).
        start, end
            Period (``None``: open).
        with_items
            Also return the stored STAC items (slower for many products).
        """
        cols = list(products_table.c) if with_items else [
            c for c in products_table.c if c.name != "item"]
        q = sa.select(*cols)
        if level is not None:
            q = q.where(_P.level == (level.value if isinstance(level, Level) else str(level)))
        if tile is not None:
            q = q.where(_P.tile == tile)
        if start is not None:
            q = q.where(_P.end_time >= _naive_utc(start))
        if end is not None:
            e = _naive_utc(end)
            if e.time() == dt.time(0):
                e = e + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
            q = q.where(_P.start_time <= e)
        q = q.order_by(_P.start_time, _P.product_id)
        with self._transaction("query products", write=False) as conn:
            rows = conn.execute(q).mappings().all()
        return [_row_to_product({**r, "item": r.get("item")}, with_items) for r in rows]

    def has_product(self, product_id: str | ProductId) -> bool:
        """Whether the catalogue holds this product."""
        with self._transaction("look up product", write=False) as conn:
            q = sa.select(_P.product_id).where(_P.product_id == str(product_id))
            return conn.execute(q).first() is not None

    def remove_product(self, product_id: str | ProductId) -> bool:
        """Remove a product from the catalogue; ``True`` if it was there."""
        with self._transaction("remove product", write=True) as conn:
            res = conn.execute(sa.delete(products_table)
                               .where(_P.product_id == str(product_id)))
            return res.rowcount > 0

    # -- life cycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close all database connections."""
        self._engine.dispose()

    def __enter__(self) -> JobStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobStore({self.url!r})"


def _is_psycopg_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith("psycopg") and isinstance(e, Exception) and hasattr(e, "sqlstate")

