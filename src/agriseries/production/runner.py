"""The production runner: inbox -> catalogue -> schedule -> jobs on Dask -> catalogue.

:func:`run` does, for one site, what Sen2Agri's orchestrator did, with a Dask cluster as
the engine and the job store (:mod:`agriseries.production.jobstore`) as the memory:

0. **acquire** (a site with an ``acquire:`` section, at each look at the inbox): search the
   providers and submit an ``acquire`` job per new acquisition
   (:mod:`agriseries.production.stages.acquire`); the workers fetch them into the inbox;
1. **inbox**: list the entries of the site's inbox folder (files and folders matching its
   patterns, left alone while they are still being written), skip those already seen (an
   ingest job lists each entry as ``inbox:<name>@<size>-<mtime>`` among its inputs, so a
   changed entry is ingested again and an unchanged one never twice), read the metadata
   of the new ones to plan their ingest jobs (:mod:`agriseries.production.inbox`,
   :func:`~agriseries.production.stages.ingest.ingest_jobs`);
2. **catalogue**: bring the job store's product table in line with the store on disk (the
   STAC items; :func:`~agriseries.production.catalogue.rescan`), so that the catalogue can
   always be rebuilt from disk;
3. **schedule**: the pure plans of the stage table (:mod:`agriseries.production.scheduler`)
   give the jobs due; each is submitted to the job store under its key (processor, tile, inputs,
   parameters: submitting it twice is harmless, a done job stays done);
4. **execute**: claimable jobs are claimed (leased to this runner), each becomes **one Dask
   task** on the cluster (jobs of different tiles and dates run in parallel on the workers;
   a job's own dask chunks run on its worker's threads; :mod:`agriseries.production.tasks`
   runs it through
   the shared stage driver, :mod:`agriseries.production.engine` provides the cluster); the runner -- not the workers, which never touch
   the database -- keeps the leases alive with heartbeats (a thread of its own), and when
   a task ends registers its products in the catalogue and marks the job done, or records
   the failure (retried with an exponential backoff, quarantined after
   ``max_attempts``); a job still leased to the runner that it no longer tracks (a task
   the cluster lost) is released and run again;
5. after jobs completed, back to 3 (an ingested date makes its L3B due, a crop mask made
   the crop type masked with it) until nothing is due; ``--watch`` then waits ``poll_s`` and starts again at 1, until SIGINT / SIGTERM.

Crash safety: a product is written into ``STORE/.tmp`` and
renamed into place (:meth:`~agriseries.io.store.ProductStore.write_product`), then
registered, then its job is marked done. A runner killed at any moment leaves whole
products or none in the store; its leased jobs are taken over when their lease expires
(or at once by the next runner on the same machine, which sees the process is gone), and a
processor that finds its product already in the store (made from the same inputs)
returns it without computing it again. A worker process that dies mid-job is replaced by
Dask and the task runs again on a live worker. Every database call is bounded in time;
a call that keeps failing for ``database.retry_s`` stops the run cleanly (jobs released,
cluster closed, a clear error and exit code 1) instead of hanging. The store's STAC
catalogue (``catalog.json`` and the collections) is rewritten once per pass that changed
products, not once per product. The run's exit code is non-zero when any job or any input
of a job failed (an L1C that could not be made into L2A included).

The run's state, read-only, is :func:`agriseries.production.status.status`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import signal
import socket
import threading
import time
import traceback as tb_format
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from ..core.errors import (
    EXIT_FAILED,
    EXIT_OK,
    ConfigurationError,
    FailureRecord,
    JobFailure,
    JobStoreTimeout,
    LeaseLost,
    StoreError,
)
from .catalogue import load_catalogue, rescan
from .engine import engine as _cluster
from .inbox import inspect_entry, scan_inbox
from .jobstore import Job, JobState, JobStore, ProductRecord
from .plan import JobSpec, Waiting
from .scheduler import schedule
from .site import Site
from .stages import STAGES
from .stages.ingest import ingest_jobs
from .status import SiteStatus, status
from .tasks import JobError, TaskResult, TaskSpec, execute_task

__all__ = [
    "DatabaseUnavailable",
    "JobError",
    "RunEvent",
    "RunReport",
    "Runner",
    "SiteStatus",
    "TaskResult",
    "TaskSpec",
    "clean_tmp",
    "execute_task",
    "inspect_entry",
    "load_catalogue",
    "rescan",
    "run",
    "scan_inbox",
    "status",
]

UTC = dt.UTC


class DatabaseUnavailable(JobStoreTimeout):
    """The job store kept failing for longer than ``database.retry_s``: the run stops."""


# ------------------------------------------------------------------------- temporary area

#: Leftovers in ``STORE/.tmp`` untouched for this long (a write interrupted by a crash) are
#: deleted when a run starts; younger ones may belong to a write in progress and are left.
TMP_MAX_AGE_S = 24 * 3600.0


def clean_tmp(store_root: str | Path, older_than_s: float = TMP_MAX_AGE_S) -> list[str]:
    """Delete the leftovers of interrupted writes in ``STORE/.tmp`` (never the product tree).

    Returns
    -------
    list of str
        The names removed.
    """
    tmp = Path(store_root) / ".tmp"
    if not tmp.is_dir():
        return []
    limit = time.time() - older_than_s
    removed = []
    for entry in sorted(tmp.iterdir()):
        try:
            latest = entry.lstat().st_mtime
            if entry.is_dir() and not entry.is_symlink():
                for root, _dirs, files in os.walk(entry):
                    for f in files:
                        latest = max(latest, os.lstat(os.path.join(root, f)).st_mtime)
            if latest < limit:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry.name)
        except FileNotFoundError:
            continue  # finished (renamed away) while we looked
    return removed


# ------------------------------------------------------------------------------ report


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """Something that happened during a run (for progress displays).

    ``kind``: ``planned`` (``detail`` = number of new jobs), ``started``, ``done``,
    ``failed``, ``released``, ``note``.
    """

    kind: str
    processor: str | None = None
    tile: str | None = None
    key: str | None = None
    detail: Any = None


@dataclasses.dataclass
class RunReport:
    """What a run did.

    Attributes
    ----------
    site, runner
        The site name and this runner's id (host:pid:site:token).
    passes
        Planning passes.
    submitted
        New jobs submitted to the job store.
    done
        Jobs completed: key, processor, tile, outputs, made (products written),
        seconds, worker.
    failed
        Failed jobs and failed inputs, one :class:`~agriseries.core.errors.JobFailure`
        each: the :class:`~agriseries.core.errors.FailureRecord` (``input``,
        ``error_type``, ``message``, ``traceback``, ``id``) and the job's ``key``,
        ``processor``, ``tile``, ``state`` (``failed`` or ``quarantined``; ``done`` for an
        input that failed in a job that made the others), ``attempts``, ``error``
        (``Type: message``) and ``next_try_at``; ``f["state"]`` reads it too.
    made
        Products written in this run.
    removed
        Products removed (superseded).
    notes, notices
        Remarks (lease lost, database retries...) and what the site asks that cannot be
        done yet.
    waiting
        Products waiting on inputs (last planning pass).
    arriving
        Inbox entries still being written (last pass).
    stopped
        ``None`` (finished), ``signal`` or ``database``.
    signal
        The number of the signal that stopped it (2 SIGINT, 15 SIGTERM; ``None`` when
        stopped by the ``stop`` event alone).
    error
        The error that stopped the run.
    publication
        The publish stage (site ``publish.enabled``): ``published``, ``removed``,
        ``rejected``, ``failures`` (the last few), ``failed_passes``, ``backlog`` (outbox
        rows left), ``final_wait_s``; ``None`` when the run does not publish.
    """

    site: str
    runner: str
    passes: int = 0
    submitted: int = 0
    done: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failed: list[JobFailure] = dataclasses.field(default_factory=list)
    made: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    notices: list[str] = dataclasses.field(default_factory=list)
    waiting: list[Waiting] = dataclasses.field(default_factory=list)
    arriving: list[str] = dataclasses.field(default_factory=list)
    stopped: str | None = None
    error: str | None = None
    signal: int | None = None
    publication: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        """:data:`~agriseries.core.errors.EXIT_OK`: all went well;
        :data:`~agriseries.core.errors.EXIT_FAILED`: a job or an input failed, or the run
        stopped on an error."""
        return EXIT_FAILED if (self.failed or self.error) else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["exit_code"] = self.exit_code
        return d


# ------------------------------------------------------------------------------ runner


def _made_once(params) -> list:
    """The products a made-once job makes, from its parameters (``products`` of a site crop
    job, else ``product``)."""
    return list(params.get("products") or [params.get("product")])


def _job_failure(job: Job, error: str, traceback: str | None) -> FailureRecord:
    """The failure record of a failed job (``error`` is ``Type: message`` when the
    processor raised)."""
    kind, sep, message = error.partition(": ")
    if not (sep and kind.isidentifier()):
        kind, message = "JobError", error
    return FailureRecord(", ".join(job.inputs) or job.key, kind, message, traceback, job.key)


def _owner_process(owner: str | None) -> tuple[str, int] | None:
    parts = (owner or "").split(":")
    if len(parts) >= 2 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    """One run of one site: the loop of :func:`run` (plan, claim, submit, record), usable on
    its own with a job store and an engine factory (the scheduler benchmark times one
    planning pass with it)."""

    def __init__(self, site: Site, js: JobStore, engine: Callable[[], Any], *, watch: bool,
                 poll_s: float, today: dt.date | None,
                 on_event: Callable[[RunEvent], None] | None, stop: threading.Event,
                 local_slots: int | None) -> None:
        self.site = site
        self.js = js
        self.engine = engine
        self.client = None
        self.local_slots = local_slots
        self.store = site.product_store()
        self.watch = watch
        self.poll_s = poll_s
        self.today = today
        self.on_event = on_event or (lambda ev: None)
        self.stop = stop
        self.id = f"{socket.gethostname()}:{os.getpid()}:{site.name}:{uuid.uuid4().hex[:6]}"
        self.report = RunReport(site.name, self.id)
        self.running: dict[Any, Job] = {}  # future -> job (snapshot with the current lease)
        self.lock = threading.Lock()  # guards running / lost (the heartbeat thread)
        self.lost: set[Any] = set()  # futures whose lease the heartbeat found taken over
        self.orphans: dict[str, int] = {}
        self.transient: dict[str, int] = {}
        self.seen_tokens: set[str] | None = None
        self.acquired_ids: set[str] | None = None  # acquisitions that have an acquire job
        self.acquired_entries: set[str] | None = None  # inbox entries acquire jobs put there
        self.warned_done: set[str] = set()
        self.catalog_dirty = False  # products changed since the STAC catalogue was written

    # -- database calls, bounded and retried -----------------------------------------

    def db(self, what: str, fn: Callable, *args, **kwargs):
        """Call the job store; retry timeouts and errors for ``database.retry_s``, then
        raise :class:`DatabaseUnavailable`. LeaseLost and ConfigurationError pass through."""
        deadline = time.monotonic() + self.site.database.retry_s
        pause, retried = 0.25, False
        while True:
            try:
                out = fn(*args, **kwargs)
                if retried:
                    self.note(f"job store back: {what} succeeded after retries")
                return out
            except (LeaseLost, ConfigurationError):
                raise
            except StoreError as e:
                if time.monotonic() + pause > deadline or self.stop.is_set():
                    raise DatabaseUnavailable(
                        f"{e} -- gave up {what} after retrying for "
                        f"{self.site.database.retry_s:g} s (database.retry_s)") from e
                if not retried:
                    self.note(f"job store unavailable during {what}, retrying: {e}")
                retried = True
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def note(self, text: str) -> None:
        self.report.notes.append(text)
        self.on_event(RunEvent("note", detail=text))

    # -- planning --------------------------------------------------------------------

    def take_over_dead_runners(self) -> None:
        """Release the jobs leased by runners of this machine whose process is gone."""
        host = socket.gethostname()
        for job in self.db("list running jobs", self.js.jobs, JobState.RUNNING):
            who = _owner_process(job.lease_owner)
            if who and who[0] == host and who[1] != os.getpid() and not _alive(who[1]):
                with suppress(LeaseLost):
                    self.db("release a dead runner's job", self.js.release, job)
                    self.note(f"{job}: its runner {job.lease_owner} is gone; job taken over")

    def plan_acquire(self) -> list[JobSpec]:
        """Search the site's providers for new acquisitions (each look at the inbox): one
        ``acquire`` job each (:func:`~agriseries.production.stages.acquire.acquisition_jobs`).
        A provider that fails is a note (the others are used); all failing is a failure of
        the run."""
        stage = STAGES.get("acquire")
        if stage is None or not stage.enabled(self.site):
            return []
        from .stages.acquire import acquisition_jobs

        if self.acquired_ids is None:
            self.acquired_ids = {i for j in self.db("list acquire jobs", self.js.jobs,
                                                    processor="acquire") for i in j.inputs}
        today = self.today or dt.datetime.now(UTC).date()
        try:
            found = acquisition_jobs(self.site, today, self.acquired_ids)
        except Exception as e:  # noqa: BLE001 -- a search that fails never stops the site
            found = None
            error = f"{type(e).__name__}: {e}"
        else:
            error = None
            for name, why in found.failures.items():
                self.note(f"acquisition search at {name} failed: {why}")
            if found.failures and len(found.failures) == len(self.site.acquire.providers):
                error = "every provider failed: " + "; ".join(
                    f"{n}: {w}" for n, w in found.failures.items())
        if error is not None:
            kind = error.partition(":")[0] if found is None else "ProviderUnavailableError"
            self.report.failed.append(JobFailure(
                "acquisition search", kind, error, processor="acquire", state="failed",
                attempts=1, error=error))
            self.on_event(RunEvent("failed", "acquire", None, None, error))
        if found is None:
            return []
        self.note(f"acquisition search: {found.found} acquisition(s) found "
                  f"({found.requests} request(s)), {len(found.jobs)} new, "
                  f"{found.present} already in the inbox")
        return found.jobs

    def plan_inbox(self) -> list[JobSpec]:
        if self.acquired_entries is None:
            self.acquired_entries = {o for j in self.db("list acquire jobs", self.js.jobs,
                                                        JobState.DONE, processor="acquire")
                                     for o in (j.outputs or ())}
        try:
            ready, arriving = scan_inbox(self.site, complete=self.acquired_entries)
        except ConfigurationError as e:  # the inbox went away (a network mount...): wait
            self.note(f"{e}; looking again at the next pass")
            return []
        self.report.arriving = arriving
        if self.seen_tokens is None:
            self.seen_tokens = {t for j in self.db("list ingest jobs", self.js.jobs,
                                                   processor="ingest") for t in j.inputs}
        new = [(p, t) for p, t in ready if t not in self.seen_tokens]
        entries = [inspect_entry(p, t, self.site.inbox.allow_missing_bands,
                                 acquired=p.name in self.acquired_entries) for p, t in new]
        return ingest_jobs(self.site, entries)

    def flush_catalog(self) -> None:
        """Rewrite the store's STAC catalogue when products changed (once per pass, not once
        per product)."""
        if self.catalog_dirty:
            self.catalog_dirty = False
            try:
                self.store.update_catalog()
            except OSError as e:
                self.note(f"could not rewrite the catalogue of {self.store.root}: {e}")

    def plan(self, sync_catalogue: bool) -> int:
        """One planning pass; returns the number of new jobs submitted."""
        self.report.passes += 1
        self.flush_catalog()
        specs = self.plan_acquire() if sync_catalogue else []
        specs += self.plan_inbox()
        if sync_catalogue:
            added, removed = self.db("rescan the catalogue", rescan, self.js, self.store)
            if added or removed:
                self.note(f"catalogue brought in line with the store: {added} product(s) "
                          f"added, {removed} removed")
        cat = self.db("load the catalogue", load_catalogue, self.js, self.site)
        active = {j.key: j for j in self.db("list active jobs", self.js.jobs,
                                            [JobState.QUEUED, JobState.RUNNING,
                                             JobState.FAILED, JobState.QUARANTINED])}
        pending = bool(specs) or any(
            j.processor in ("acquire", "ingest")
            and j.state in (JobState.QUEUED, JobState.RUNNING)
            for j in active.values())
        today = self.today or dt.datetime.now(UTC).date()
        sched = schedule(self.site, cat, today, ingest_pending=pending)
        self.report.waiting = sched.waiting
        self.report.notices = sched.notices
        specs += sched.jobs
        # a crop map is made once: a job of the same product queued, running or waiting to
        # retry (it reads the store when it runs, so it uses the late inputs too) is enough
        # (a site job makes several: params["products"])
        making = {(j.processor, p) for j in active.values()
                  if j.processor in STAGES and STAGES[j.processor].made_once
                  and j.state is not JobState.QUARANTINED for p in _made_once(j.params)}
        n_new = 0
        for spec in specs:
            if spec.key in active:
                continue
            once = spec.processor in STAGES and STAGES[spec.processor].made_once
            if once and any((spec.processor, p) in making for p in _made_once(spec.params)):
                continue  # another job (made from fewer inputs) is making this product
            job = self.db(f"submit {spec.processor}", self.js.submit, spec.processor,
                          spec.inputs, dict(spec.params), tile=spec.tile,
                          priority=spec.priority)
            if spec.processor == "ingest" and self.seen_tokens is not None:
                self.seen_tokens.update(spec.inputs)
            if spec.processor == "acquire" and self.acquired_ids is not None:
                self.acquired_ids.update(spec.inputs)
            if job.state is JobState.DONE:
                if job.key not in self.warned_done and spec.processor != "ingest":
                    self.warned_done.add(job.key)
                    gone = [o for o in spec.outputs if o in job.outputs]
                    if gone:  # made by the job, since gone from the store
                        self.note(f"{job} is done but its product(s) {', '.join(gone)} are "
                                  "not in the store (removed by hand?); not remade -- "
                                  f"`agriseries retry SITE {job.key[:12]}` remakes it")
                    else:  # never made: an input failed in the job (reported when it ran)
                        self.note(f"{job} is done without {', '.join(spec.outputs)}: an "
                                  "input failed in it (see the job's failure); not tried "
                                  "again -- fix the input, then `agriseries retry SITE "
                                  f"{job.key[:12]}`")
                continue
            if job.attempts == 0 and job.state is JobState.QUEUED:
                n_new += 1
        self.report.submitted += n_new
        self.on_event(RunEvent("planned", detail=n_new))
        return n_new

    # -- execution -------------------------------------------------------------------

    def capacity(self) -> int:
        """Jobs to run at once: the cluster's threads (a LocalCluster not started yet: the
        threads it will have)."""
        if self.client is None:
            if self.local_slots is not None:
                return self.local_slots
            self.client = self.engine()
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001 -- no worker yet
            return 1

    def claim_and_submit(self) -> int:
        free = self.capacity() - len(self.running)
        if free <= 0 or self.stop.is_set():
            return 0
        jobs = self.db("claim jobs", self.js.claim, self.id, limit=free,
                       processors=list(STAGES))
        if jobs and self.client is None:  # the cluster starts when there is work
            try:
                self.client = self.engine()
            except BaseException:
                for job in jobs:
                    with suppress(LeaseLost, StoreError):
                        self.js.release(job)
                raise
        for job in jobs:
            spec = TaskSpec(job.processor, job.key, job.tile, tuple(job.inputs),
                            dict(job.params), str(self.site.store))
            fut = self.client.submit(  # the stage travels with the task (a plug-in's too)
                execute_task, spec, STAGES[job.processor], pure=False, priority=job.priority,
                key=f"agriseries-{job.processor}-{job.key[:12]}-a{job.attempts}-"
                    f"{uuid.uuid4().hex[:6]}")
            with self.lock:
                self.running[fut] = job
            self.on_event(RunEvent("started", job.processor, job.tile, job.key,
                                   job.attempts))
        return len(jobs)

    def finish(self, fut) -> bool:
        """Record the end of a task; True if products changed."""
        with self.lock:
            job = self.running.pop(fut)
        if fut.status == "finished":
            res: TaskResult = fut.result()
            res.products = list({p["id"]: p for p in res.products}.values())
            recs = [ProductRecord.from_id(p["id"], p["path"], item=p["item"])
                    for p in res.products]
            if recs:
                self.db("register products", self.js.add_products, recs)
            for pid in res.removed:
                self.db("unregister a removed product", self.js.remove_product, pid)
            made = list(dict.fromkeys(p["id"] for p in res.products if p["made"]))
            self.report.made += made
            self.report.removed += res.removed
            for n in res.notes:
                self.note(n)
            if made or res.removed:
                self.catalog_dirty = True
            for f in res.failures:  # inputs that failed in a job that made the others
                self.report.failed.append(JobFailure(
                    **f.to_dict(), key=job.key, processor=job.processor, tile=job.tile,
                    state=JobState.DONE.value, attempts=job.attempts,
                    error=f"{f.error_type}: {f.message}"))
                self.on_event(RunEvent("failed", job.processor, job.tile, job.key, str(f)))
            outputs = [p["id"] for p in res.products] + list(res.inbox)
            if res.inbox and self.acquired_entries is not None:
                self.acquired_entries.update(res.inbox)
            try:
                self.db("complete a job", self.js.complete, job, outputs)
            except LeaseLost as e:
                self.note(str(e))
                return bool(recs)
            self.report.done.append({"key": job.key, "processor": job.processor,
                                     "tile": job.tile, "outputs": outputs,
                                     "made": made, "seconds": round(res.seconds, 3),
                                     "worker": res.worker})
            self.on_event(RunEvent("done", job.processor, job.tile, job.key, made))
            return True
        if fut.status == "cancelled":
            with suppress(LeaseLost):
                self.db("release a job", self.js.release, job)
            return False
        exc = fut.exception()
        if isinstance(exc, JobError) and exc.transient:
            n = self.transient[job.key] = self.transient.get(job.key, 0) + 1
            if n <= 3:
                with suppress(LeaseLost):
                    self.db("release a job", self.js.release, job)
                    self.note(f"{job}: the cluster lost some of its chunks ({exc.message}); "
                              "run again")
                return False
        tb = getattr(exc, "detail", None)
        if not tb:
            tb_obj = fut.traceback()
            tb = "".join(tb_format.format_exception(type(exc), exc, tb_obj))
        error: str | BaseException = exc.message if isinstance(exc, JobError) else exc
        if type(exc).__name__ == "KilledWorker":
            error = (f"the worker running it died every time it was tried ({exc}); "
                     "too little memory for the job?")
        try:
            failed = self.db("record a failure", self.js.fail, job, error, tb)
        except LeaseLost as e:
            self.note(str(e))
            return False
        self.report.failed.append(JobFailure(
            **_job_failure(job, failed.error or "", tb).to_dict(),
            key=job.key, processor=job.processor, tile=job.tile, state=failed.state.value,
            attempts=failed.attempts, error=failed.error,
            next_try_at=failed.next_try_at.isoformat() if failed.next_try_at else None))
        self.on_event(RunEvent("failed", job.processor, job.tile, job.key, failed.error))
        return False

    def heartbeat(self) -> None:
        """Extend the leases of the running jobs (called by the heartbeat thread)."""
        with self.lock:
            items = list(self.running.items())
        for fut, job in items:
            try:
                new = self.js.heartbeat(job, self.id)
            except LeaseLost as e:
                with self.lock:
                    if fut not in self.running:
                        continue  # it ended meanwhile (done, failed): nothing to drop
                    self.lost.add(fut)
                self.note(str(e))
                continue
            except StoreError as e:  # the next heartbeat tries again
                self.note(f"heartbeat of {job} failed: {e}")
                return
            with self.lock:
                if fut in self.running:
                    self.running[fut] = new

    def _heartbeats(self, every: float, done: threading.Event) -> None:
        """The heartbeat thread: leases stay alive whatever the main loop is waiting on."""
        while not done.wait(every):
            try:
                self.heartbeat()
            except Exception as e:  # noqa: BLE001 -- never let the thread die silently
                self.note(f"heartbeat failed: {type(e).__name__}: {e}")

    def drop_lost(self) -> None:
        """Stop tracking the jobs whose lease another runner took over."""
        with self.lock:
            lost, self.lost = self.lost, set()
            for fut in lost:
                self.running.pop(fut, None)
        for fut in lost:
            fut.cancel()

    def release_orphans(self) -> bool:
        """Jobs leased to this runner that it no longer tracks (a task the cluster lost
        track of) are released to be run again; True if there were any."""
        with self.lock:
            tracked = {j.key for j in self.running.values()}
        found = False
        for job in self.db("list running jobs", self.js.jobs, JobState.RUNNING):
            if job.lease_owner != self.id or job.key in tracked:
                continue
            found = True
            n = self.orphans[job.key] = self.orphans.get(job.key, 0) + 1
            try:
                if n <= 2:
                    self.db("release a job", self.js.release, job)
                    self.note(f"{job} was leased to this runner but no longer tracked: "
                              "released to run again")
                else:
                    self.db("record a failure", self.js.fail, job,
                            "the cluster lost track of this job's task several times")
            except LeaseLost:
                pass
        return found

    def release_all(self) -> None:
        with self.lock:
            futs = list(self.running)
        if futs and self.client is not None:
            with suppress(Exception):
                self.client.cancel(futs)
        for fut in futs:
            with self.lock:
                job = self.running.pop(fut)
            try:
                self.js.release(job)
                self.on_event(RunEvent("released", job.processor, job.tile, job.key))
            except (LeaseLost, StoreError) as e:  # its lease will expire
                self.note(f"could not release {job} ({e}); its lease will expire")

    def loop(self) -> None:
        hb_done = threading.Event()
        hb = threading.Thread(target=self._heartbeats, name="agriseries-heartbeats",
                              args=(max(0.5, self.site.database.lease_s / 3), hb_done),
                              daemon=True)
        hb.start()
        try:
            self._loop()
        finally:
            self.flush_catalog()
            hb_done.set()
            hb.join(self.site.database.statement_timeout_s + 5)

    def _loop(self) -> None:
        from distributed import wait

        replan_every = 5.0
        next_poll = 0.0
        last_plan = -1e9
        dirty = True
        self.take_over_dead_runners()
        gone = clean_tmp(self.site.store)
        if gone:
            self.note(f"removed {len(gone)} leftover(s) of interrupted writes from "
                      f"{self.site.store / '.tmp'}")
        while not self.stop.is_set():
            now = time.monotonic()
            poll_due = now >= next_poll
            if poll_due or (dirty and (not self.running or now - last_plan >= replan_every)):
                self.plan(sync_catalogue=poll_due)
                dirty = False
                last_plan = time.monotonic()
                if poll_due:
                    next_poll = last_plan + (self.poll_s if self.watch else 1e12)
            self.drop_lost()
            claimed = self.claim_and_submit()
            if not self.running:
                if dirty:
                    continue
                if self.release_orphans():
                    continue
                if not self.watch:
                    return
                self.stop.wait(max(0.0, next_poll - time.monotonic()))
                continue
            if claimed == 0:
                with self.lock:
                    futs = list(self.running)
                try:
                    wait(futs, timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    pass  # nothing ended within the half second: signals, lost leases
                for fut in futs:
                    if fut.status in ("finished", "error", "cancelled") and fut in self.running:
                        dirty |= self.finish(fut)
                del futs


@contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT / SIGTERM set ``stop`` (main thread only) for the duration of the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}

    def handler(signum, frame):
        stop.signum = signum  # the run's exit code says which: 130 SIGINT, 143 SIGTERM
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def run(site: Site, *, watch: bool = False, poll_s: float | None = None,
        scheduler: str | None = None, scheduler_file: str | Path | None = None,
        n_workers: int | None = None, client=None, today: dt.date | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
        stop: threading.Event | None = None) -> RunReport:
    """Run the production of a site: ingest, schedule, execute, record (module docstring).

    Parameters
    ----------
    site
        The site (:func:`~agriseries.production.site.load_site`).
    watch
        Keep running: look at the inbox again every ``poll_s`` seconds, until SIGINT,
        SIGTERM or ``stop``.
    poll_s
        Seconds between two looks at the inbox (default: ``engine.poll_s``).
    scheduler, scheduler_file
        An existing Dask cluster (address ``tcp://host:port`` or scheduler file); default
        the site's, else a LocalCluster of ``engine.n_workers`` processes.
    n_workers
        LocalCluster size (default: ``engine.n_workers``).
    client
        A ``distributed.Client`` to use (the caller closes it).
    today
        The current date for the schedule (default: today, UTC).
    on_event
        Called with a :class:`RunEvent` at each step (progress displays).
    stop
        Set it to stop the run cleanly (running jobs are released, not failed).

    Returns
    -------
    RunReport
        What was done; ``exit_code`` 1 when a job failed or the run stopped on an error.
        A job store that stays unavailable for ``database.retry_s`` stops the run with
        ``stopped == "database"`` and the error (it never hangs).

    Raises
    ------
    ConfigurationError
        The inbox is missing, the Dask scheduler cannot be reached.
    """
    stop = stop or threading.Event()
    report = RunReport(site.name, "")
    try:
        js = site.job_store()
    except StoreError as e:
        report.stopped, report.error = "database", str(e)
        return report
    try:
        if site.acquire is not None and site.acquire.enabled:
            site.inbox.path.mkdir(parents=True, exist_ok=True)  # the acquisition fills it
        scan_inbox(site)  # a missing inbox is a configuration error: say it before starting
        external = bool(client is not None or scheduler or scheduler_file
                        or site.engine.scheduler or site.engine.scheduler_file)
        with ExitStack() as stack:
            stack.enter_context(_signals(stop))

            def engine():
                return stack.enter_context(_cluster(site, scheduler, scheduler_file, n_workers,
                                                   client))

            slots = None if external else ((n_workers or site.engine.n_workers)
                                           * site.engine.threads_per_worker)
            runner = Runner(site, js, engine, watch=watch, poll_s=poll_s or site.engine.poll_s,
                             today=today, on_event=on_event, stop=stop, local_slots=slots)
            report = runner.report
            publishing = None
            if site.publish.enabled:  # the publish stage: its own thread, never waited on
                from ..distribution.stage import PublishStage

                publishing = PublishStage(site).start()
            try:
                runner.loop()
                if stop.is_set():
                    report.stopped = "signal"
                    report.signal = getattr(stop, "signum", None)
            except DatabaseUnavailable as e:
                report.stopped, report.error = "database", str(e)
            finally:
                runner.release_all()
                if publishing is not None:
                    report.publication = publishing.finish()
    finally:
        js.close()
    return report


