"""The job queue of the production: idempotent, leased, retried jobs.

The ``jobs`` table holds one row per unit of work, keyed by what it computes
(:func:`~agriseries.production.records.job_key`: the processor, the tile, the sorted input
product ids and a hash of the parameters), so that submitting the same work twice gives the
same job, and a job that is done stays done. Runners never wait for each other: claims use
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite
(:mod:`agriseries.production.database`).

Life of a job (:class:`~agriseries.production.records.JobState`)::

    submit -> queued --claim--> running --complete--> done
                 ^                 |  \\--fail (attempts < max)--> failed --(backoff)--> claimable
                 |                 |   \\-fail (attempts = max)--> quarantined (error + traceback)
                 |                 \\-lease expired (runner killed) --> claimable again
                 \\-------- retry (failed, quarantined) / release -----------/

A claim counts as an attempt. A runner keeps its lease alive with :meth:`JobQueue.heartbeat`
(every ``lease_s / 3`` seconds, say); when a runner dies (``kill -9``, lost machine) its lease
expires and the next :meth:`JobQueue.claim` takes the job again. A job whose lease expired
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

import datetime as dt
import math
import traceback as tb_format
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..core.errors import ConfigurationError, LeaseLost
from ..core.ids import ProductId
from .database import METADATA, Database, from_timestamp
from .records import (
    Job,
    JobState,
    canonical_inputs,
    canonical_params,
    job_key,
    params_hash,
)

__all__ = ["JobQueue", "jobs_table"]

UTC = dt.UTC

jobs_table = sa.Table(
    "jobs", METADATA,
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

_J = jobs_table.c


def _row_to_job(r: Mapping[str, Any]) -> Job:
    return Job(
        key=r["key"], processor=r["processor"], tile=r["tile"],
        inputs=tuple(r["inputs"]), params=dict(r["params"]), state=JobState(r["state"]),
        priority=r["priority"], attempts=r["attempts"], max_attempts=r["max_attempts"],
        outputs=None if r["outputs"] is None else tuple(r["outputs"]),
        lease_owner=r["lease_owner"], lease_expires_at=from_timestamp(r["lease_expires_at"]),
        heartbeat_at=from_timestamp(r["heartbeat_at"]),
        next_try_at=from_timestamp(r["next_try_at"]),
        error=r["error"], traceback=r["traceback"],
        created_at=from_timestamp(r["created_at"]), updated_at=from_timestamp(r["updated_at"]),
        started_at=from_timestamp(r["started_at"]), finished_at=from_timestamp(r["finished_at"]),
    )


class JobQueue(Database):
    """The production's job queue (the ``jobs`` table).

    Parameters
    ----------
    url, statement_timeout_s, connect_timeout_s
        The database (:class:`~agriseries.production.database.Database`).
    lease_s
        Length of a lease: a claimed job whose runner has not sent a heartbeat for this
        long is considered abandoned and can be claimed again.
    max_attempts
        Default number of attempts (claims) before a job is quarantined.
    backoff_s
        Wait before the second attempt after a failure; it doubles at each attempt.
    backoff_max_s
        Longest wait between two attempts.

    Notes
    -----
    One queue per process (do not share one across ``fork``); it is thread-safe.
    SQLite needs a local file system (WAL does not work over NFS); use PostgreSQL when
    runners are on several machines.
    """

    TABLES: ClassVar[tuple[sa.Table, ...]] = (jobs_table,)

    def __init__(self, url: str | Path, *, statement_timeout_s: float = 30.0,
                 lease_s: float = 300.0, max_attempts: int = 3, backoff_s: float = 60.0,
                 backoff_max_s: float = 6 * 3600.0, connect_timeout_s: float = 10.0) -> None:
        for name, value in (("lease_s", lease_s), ("backoff_s", backoff_s),
                            ("backoff_max_s", backoff_max_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name}={value!r}: expected a positive number of seconds")
        if not (isinstance(max_attempts, int) and max_attempts >= 1):
            raise ConfigurationError(f"max_attempts={max_attempts!r}: expected an integer >= 1")
        self.lease_s = float(lease_s)
        self.max_attempts = max_attempts
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        super().__init__(url, statement_timeout_s=statement_timeout_s,
                         connect_timeout_s=connect_timeout_s)

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
        canon_inputs = canonical_inputs(inputs)
        canon_params = canonical_params(params)
        key = job_key(processor, canon_inputs, canon_params, tile)
        n_max = self.max_attempts if max_attempts is None else max_attempts
        if not (isinstance(n_max, int) and n_max >= 1):
            raise ConfigurationError(f"max_attempts={max_attempts!r}: expected an integer >= 1")
        if not isinstance(priority, int):
            raise ConfigurationError(f"priority={priority!r}: expected an integer")
        with self.transaction(f"submit {processor}", write=True) as conn:
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
        with self.transaction("get job", write=False) as conn:
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
        with self.transaction(f"claim for {worker_id}", write=True) as conn:
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
        with self.transaction(f"heartbeat {job.key[:12]}", write=True) as conn:
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
        with self.transaction(f"complete {job.key[:12]}", write=True) as conn:
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
                traceback = "".join(tb_format.format_exception(error))
            message = f"{type(error).__name__}: {error}"
        else:
            message = str(error)
        with self.transaction(f"fail {job.key[:12]}", write=True) as conn:
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
        with self.transaction(f"release {job.key[:12]}", write=True) as conn:
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
        return self._requeue(key, (JobState.QUARANTINED,), "only a quarantined job")

    def retry(self, key: str, *, done: bool = False) -> Job:
        """Put a failed or quarantined job back in the queue, claimable at once (no backoff
        left) and with its attempt count reset: for after its cause was fixed (an input
        replaced, more memory, a provider back). With ``done=True`` a done job too: run it
        again (its product was removed from the store, or an input failed in it and was
        fixed; a product still in the store made the same way is kept as it is).
        ``agriseries retry`` calls it.

        Its last error and traceback (or outputs) stay until the next attempt ends.

        Raises
        ------
        ConfigurationError
            If there is no such job or it is in another state.
        """
        if done:
            return self._requeue(key, (JobState.FAILED, JobState.QUARANTINED, JobState.DONE),
                                 "only a failed, quarantined or done job")
        return self._requeue(key, (JobState.FAILED, JobState.QUARANTINED),
                             "only a failed or quarantined job")

    def _requeue(self, key: str, allowed: tuple[JobState, ...], what: str) -> Job:
        with self.transaction(f"retry {key[:12]}", write=True) as conn:
            cur = self._get(conn, key)
            if cur is None:
                raise ConfigurationError(f"job store {self.url}: no job with key {key!r}")
            if cur.state not in allowed:
                raise ConfigurationError(
                    f"{cur}: {what} can be retried, this one is {cur.state.value}")
            now = self._now(conn)
            conn.execute(sa.update(jobs_table).where(_J.key == key).values(
                state=JobState.QUEUED.value, attempts=0, next_try_at=now, finished_at=None,
                updated_at=now))
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
        with self.transaction("list jobs", write=False) as conn:
            return [_row_to_job(r) for r in conn.execute(q).mappings()]

    def counts(self, processor: str | None = None) -> dict[str, int]:
        """Number of jobs in each state (every state present, zeros included)."""
        q = sa.select(_J.state, sa.func.count()).group_by(_J.state)
        if processor is not None:
            q = q.where(_J.processor == processor)
        with self.transaction("count jobs", write=False) as conn:
            found = dict(conn.execute(q).all())
        return {s.value: int(found.get(s.value, 0)) for s in JobState}

