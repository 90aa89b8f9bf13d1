"""The production scheduler: pure rules from "what exists" to "what is due".

Nothing here reads a file, the clock or the database, and nothing imports numba, dask or
the product store (a test checks the import graph): :func:`schedule` asks the ``plan`` of
every stage of the stage table (:data:`agriseries.production.stages.STAGES`) that the site
enables, with the site (:class:`~agriseries.production.site.Site`), the catalogue of the
products that exist (:class:`~agriseries.production.plan.Catalogue`, built from the
product catalogue's :class:`~agriseries.production.records.ProductRecord` rows) and the
current date, and gathers the jobs due (:class:`~agriseries.production.plan.JobSpec`:
stage, tile, inputs, parameters, the product ids it will make) and what is waiting
(:class:`~agriseries.production.plan.Waiting`: a month without any input yet...). The
runner submits the jobs to the job queue, whose keys make submitting twice harmless
(:func:`~agriseries.production.records.job_key`: stage, tile, sorted inputs, parameters).

What each level plans is documented with its stage: :mod:`.stages.l2a`,
:mod:`.stages.l3a`, :mod:`.stages.l3b`, :mod:`.stages.l4a`, :mod:`.stages.l4b` (the crop
maps are made once: :mod:`.stages.crop`). ``ingest`` jobs are planned by
:func:`~agriseries.production.stages.ingest.ingest_jobs` from the inbox entries the runner
found (inspected, not yet ingested).

:data:`PRIORITY`, :data:`MADE_ONCE`, :data:`WAIT_FOR_INGEST` and :data:`RULES` are live
views of the stage table (a stage registered later appears in them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Set

from .plan import Catalogue, InboxEntry, JobSpec, Schedule, Waiting
from .site import PENDING_LEVELS, Site
from .stages import STAGES, Plan
from .stages.crop import CROP_MIN_INPUTS, crop_product_id
from .stages.ingest import ingest_jobs
from .stages.l3a import considered_inputs, l3a_window
from .stages.l3a import plan as l3a_rule
from .stages.l3b import plan as l3b_rule
from .stages.l2a import plan as l2a_rule
from .stages.l4a import plan as l4a_rule
from .stages.l4b import plan as l4b_rule

__all__ = [
    "CROP_MIN_INPUTS",
    "MADE_ONCE",
    "PRIORITY",
    "RULES",
    "WAIT_FOR_INGEST",
    "Catalogue",
    "InboxEntry",
    "JobSpec",
    "Schedule",
    "Waiting",
    "considered_inputs",
    "crop_product_id",
    "ingest_jobs",
    "l2a_rule",
    "l3a_rule",
    "l3a_window",
    "l3b_rule",
    "l4a_rule",
    "l4b_rule",
    "schedule",
]


class _Priorities(Mapping):
    """Claim priority of every stage (a live view of the stage table)."""

    def __getitem__(self, level: str) -> int:
        return STAGES[level].priority

    def __iter__(self) -> Iterator[str]:
        return iter(STAGES)

    def __len__(self) -> int:
        return len(STAGES)

    def __repr__(self) -> str:
        return repr(dict(self))


class _Rules(Mapping):
    """The ``plan`` of every stage that has one (a live view of the stage table)."""

    def __getitem__(self, level: str) -> Plan:
        plan = STAGES[level].plan
        if plan is None:
            raise KeyError(level)
        return plan

    def __iter__(self) -> Iterator[str]:
        return (lv for lv, s in STAGES.items() if s.plan is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Flagged(Set):
    """The stages with a flag set (a live view of the stage table)."""

    def __init__(self, flag: str) -> None:
        self.flag = flag

    def __contains__(self, level: object) -> bool:
        s = STAGES.get(level) if isinstance(level, str) else None
        return bool(s is not None and getattr(s, self.flag))

    def __iter__(self) -> Iterator[str]:
        return (lv for lv, s in STAGES.items() if getattr(s, self.flag))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self))}}}"


#: Claim order per stage: ingest first (it feeds everything), then per-date products, then
#: syntheses, then the crop mask, then the crop type (which may use the crop mask).
PRIORITY: Mapping[str, int] = _Priorities()
#: Stages whose product is made once and kept (the in-season crop maps): a job whose
#: product (``params["product"]``) another job is making (queued, running or waiting to
#: retry; not quarantined) is not submitted.
MADE_ONCE: Set[str] = _Flagged("made_once")
#: Stages that wait while inputs are still being ingested: a synthesis made from half of a
#: window's inputs would be made again minutes later, the L2A of a tile goes in date
#: order, and a crop map is made once.
WAIT_FOR_INGEST: Set[str] = _Flagged("wait_for_ingest")
#: The plan of every stage that has one.
RULES: Mapping[str, Plan] = _Rules()


def schedule(site: Site, catalogue: Catalogue, today: dt.date, *,
             ingest_pending: bool = False) -> Schedule:
    """Every job due for the site's enabled stages, what waits, and notices (levels of
    :data:`~agriseries.production.site.PENDING_LEVELS` get none).

    Parameters
    ----------
    site
        The site.
    catalogue
        The products that exist.
    today
        The current date (UTC).
    ingest_pending
        Ingest jobs are queued or running: the stages that wait for the ingest wait.
    """
    out = Schedule(notices=site.notices())
    for level, stage in list(STAGES.items()):
        if stage.plan is None or not stage.enabled(site) or level in PENDING_LEVELS:
            continue
        if ingest_pending and stage.wait_for_ingest:
            out.waiting.append(Waiting(level, None, "all", "inputs are being ingested"))
            continue
        jobs, waiting = stage.plan(site, catalogue, today)
        out.jobs += jobs
        out.waiting += waiting
    return out
