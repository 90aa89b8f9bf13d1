"""The production database connection, shared by the job queue
(:mod:`agriseries.production.queue`) and the product catalogue
(:mod:`agriseries.production.catalogue`): one SQLite file by default, or PostgreSQL.

* an **SQLite file** (default, no setup): WAL journal (readers never wait for the writer),
  ``busy_timeout`` for lock waits, every write transaction opened with ``BEGIN IMMEDIATE``
  so that two processes never dead-lock on a lock upgrade, and a progress handler that
  interrupts any statement running longer than the time limit;
* **PostgreSQL** (``postgresql+psycopg://user@host/db``): ``statement_timeout``,
  ``lock_timeout`` and ``idle_in_transaction_session_timeout`` set on every session,
  ``connect_timeout``, TCP keepalives and ``tcp_user_timeout`` (a dead server or network is
  noticed), ``pool_pre_ping`` (a restarted server is reconnected).

Every call is bounded in time and raises
:class:`~agriseries.core.errors.JobStoreTimeout` (naming the database and the operation)
instead of hanging; other database failures raise
:class:`~agriseries.core.errors.StoreError`. A failed call changes nothing (its transaction
is rolled back). Tables are declared on :data:`METADATA` by the modules that own them; a
:class:`Database` subclass lists the tables it needs in ``TABLES`` and they are created when
it opens. (A new concern, such as the distribution's outbox, adds its table the same way.)
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url

from ..core.errors import (
    ConfigurationError,
    JobStoreTimeout,
    OptionalDependencyError,
    StoreError,
)

__all__ = ["METADATA", "Database", "from_timestamp", "naive_utc"]

#: The tables of the production database (each declared by the module that owns it).
METADATA = sa.MetaData()
PG_SCHEMA_LOCK = 0x61677269  # pg_advisory_xact_lock id serialising table creation ("agri")


class Database:
    """A connection pool to the production database, with bounded calls.

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
    connect_timeout_s
        Time limit to open a connection (PostgreSQL; rounded up to whole seconds, at
        least 2, as libpq requires).
    """

    #: The tables this class reads and writes (created when it opens).
    TABLES: ClassVar[tuple[sa.Table, ...]] = ()
    #: What the database is, in error messages.
    WHAT: ClassVar[str] = "job store"

    def __init__(self, url: str | Path, *, statement_timeout_s: float = 30.0,
                 connect_timeout_s: float = 10.0) -> None:
        for name, value in (("statement_timeout_s", statement_timeout_s),
                            ("connect_timeout_s", connect_timeout_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name}={value!r}: expected a positive number of seconds")
        self.statement_timeout_s = float(statement_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        sa_url = self._parse_url(url)
        self.url = sa_url.render_as_string(hide_password=True)
        self.backend = "sqlite" if sa_url.get_backend_name() == "sqlite" else "postgresql"
        if self.backend == "sqlite":
            self._engine = self._sqlite_engine(sa_url)
            self._insert = sqlite_insert
        else:
            self._engine = self._postgres_engine(sa_url)
            self._insert = pg_insert
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

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (its pool holds the connections, bounded)."""
        return self._engine

    @contextmanager
    def transaction(self, op: str, *, write: bool) -> Iterator[Connection]:
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

    #: The former name of :meth:`transaction` (for code written against it).
    _transaction = transaction

    def _translate(self, e: BaseException, op: str, elapsed: float) -> StoreError:
        orig = getattr(e, "orig", None) or e
        where = f"{self.WHAT} {self.url}: {op}"
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
        with self.transaction("open (create tables)", write=True) as conn:
            if self.backend == "postgresql":  # two processes starting at once
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_SCHEMA_LOCK)))
            METADATA.create_all(conn, tables=list(self.TABLES), checkfirst=True)

    # -- life cycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close all database connections."""
        self._engine.dispose()

    def __enter__(self):  # noqa: ANN204 -- the subclass
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _is_psycopg_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith("psycopg") and isinstance(e, Exception) and hasattr(e, "sqlstate")


def from_timestamp(x: float | None) -> dt.datetime | None:
    """A stored time (seconds since 1970, UTC) as a timezone-aware datetime; ``None`` stays
    ``None``."""
    return None if x is None else dt.datetime.fromtimestamp(x, dt.UTC)


def naive_utc(d: dt.datetime | dt.date) -> dt.datetime:
    """A date or datetime as a naive UTC datetime (a date: its midnight), the form the
    time columns are compared in."""
    if not isinstance(d, dt.datetime):
        d = dt.datetime(d.year, d.month, d.day)
    if d.tzinfo is not None:
        d = d.astimezone(dt.UTC).replace(tzinfo=None)
    return d
