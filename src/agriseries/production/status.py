"""The production state of a site, read-only: jobs by state (with their errors), products
made, what is due and what waits (``agriseries status``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from ..core.ids import Level
from .catalogue import load_catalogue
from .outbox import backlog
from .plan import Waiting
from .records import JobState
from .scheduler import schedule
from .site import Site

__all__ = ["SiteStatus", "status"]

UTC = dt.UTC


@dataclasses.dataclass
class SiteStatus:
    """The production state of a site (:func:`status`).

    Attributes
    ----------
    site
        Site name.
    counts
        Jobs per processor and state.
    problems
        Failed and quarantined jobs: key, processor, tile, state, attempts, error,
        next_try_at.
    running
        Running jobs: key, processor, tile, runner, heartbeat, lease expiry.
    products
        Products in the catalogue per level (site tiles).
    due
        Jobs the scheduler finds due that are not in the job store yet.
    waiting
        Products waiting on inputs.
    notices
        What the site asks that cannot be done yet.
    publication
        The publication backlog (:func:`~agriseries.production.outbox.backlog`): products
        recorded but not yet in the distribution catalogue.
    """

    site: str
    counts: dict[str, dict[str, int]]
    problems: list[dict[str, Any]]
    running: list[dict[str, Any]]
    products: dict[str, int]
    due: int
    waiting: list[Waiting]
    notices: list[str]
    publication: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _iso(d: dt.datetime | None) -> str | None:
    return d.isoformat() if d else None


def status(site: Site, today: dt.date | None = None) -> SiteStatus:
    """Jobs by state (with errors), products made, what is due and waiting; read-only.

    Raises
    ------
    JobStoreTimeout, StoreError
        The job store cannot be read within its time limit.
    """
    js = site.job_store()
    try:
        jobs = js.jobs()
        cat = load_catalogue(js, site)
        tiles = set(site.tiles)
        products: dict[str, int] = {}
        for lv in Level:
            n = sum(1 for r in js.products(level=lv) if r.tile in tiles)
            if n:
                products[lv.value] = n
        publication = backlog(js)
    finally:
        js.close()
    counts: dict[str, dict[str, int]] = {}
    for j in jobs:
        counts.setdefault(j.processor, {s.value: 0 for s in JobState})[j.state.value] += 1
    problems = [{"key": j.key, "processor": j.processor, "tile": j.tile,
                 "state": j.state.value, "attempts": j.attempts, "error": j.error,
                 "next_try_at": _iso(j.next_try_at)}
                for j in jobs if j.state in (JobState.FAILED, JobState.QUARANTINED)]
    running = [{"key": j.key, "processor": j.processor, "tile": j.tile,
                "runner": j.lease_owner, "heartbeat": _iso(j.heartbeat_at),
                "lease_expires_at": _iso(j.lease_expires_at)}
               for j in jobs if j.state is JobState.RUNNING]
    pending = any(j.processor == "ingest" and j.state in (JobState.QUEUED, JobState.RUNNING)
                  for j in jobs)
    sched = schedule(site, cat, today or dt.datetime.now(UTC).date(), ingest_pending=pending)
    known = {j.key for j in jobs}
    due = sum(1 for s in sched.jobs if s.key not in known)
    return SiteStatus(site.name, counts, problems, running, products, due, sched.waiting,
                      sched.notices, publication)
