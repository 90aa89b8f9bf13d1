"""The ``ingest`` stage: inbox entries into the product store (COG + STAC).

Its jobs come from the inbox scan, not from the catalogue: :func:`ingest_jobs` plans them
from the entries the runner found and inspected (one job per product and target tile: a
Landsat scene is warped onto each site tile it overlaps, in parallel; one per group of
series files that hold the same dates, the 10 m and 20 m files of one extraction being
written together; one per entry that could not be read, which fails with the reader's
error). ``make`` is :func:`agriseries.io.ingest.ingest`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...core.params import OMIT_NONE, JsonParams
from ..plan import InboxEntry, JobSpec
from .base import Stage, StageContext, StageOutput

if TYPE_CHECKING:
    from ..site import Site

__all__ = ["PRIORITY", "STAGE", "IngestParams", "ingest_jobs", "make"]

#: Claim order: ingest first (it feeds everything).
PRIORITY = 30


@dataclasses.dataclass(frozen=True)
class IngestParams(JsonParams):
    """Parameters of an ingest job.

    Attributes
    ----------
    paths
        The inbox files or folders to ingest together.
    tile
        Warp onto this tile (a product not on the Sentinel-2 grid), or ``None``.
    allow_missing_bands
        Ingest the bands on disk when some are missing (partial downloads).
    ignored
        Why nothing is ingested (a product outside the site), or ``None``.
    """

    paths: tuple[str, ...] = ()
    tile: str | None = None
    allow_missing_bands: bool = False
    ignored: str | None = dataclasses.field(default=None, metadata={"json": OMIT_NONE})


def ingest_jobs(site: Site, entries: Sequence[InboxEntry]) -> list[JobSpec]:
    """The ingest jobs of new inbox entries (see the module docstring).

    A product outside the site's tiles gets a job that writes nothing (``ignored`` says
    why), so that it is not looked at again.
    """
    tiles = set(site.tiles)
    allow = site.inbox.allow_missing_bands

    def job(job_tile, inputs, reason, acquired=False, **kw) -> JobSpec:
        params = IngestParams(allow_missing_bands=allow or acquired, **kw)
        return JobSpec("ingest", job_tile, tuple(inputs), params.to_json(), priority=PRIORITY,
                       reason=reason)

    jobs: list[JobSpec] = []
    groups: dict[str, list[InboxEntry]] = {}
    for e in entries:
        if e.kind == "series":
            groups.setdefault(e.group or e.token, []).append(e)
            continue
        if e.kind != "product":
            jobs.append(job(None, (e.token,), f"new inbox entry (unreadable: {e.error})",
                            paths=(e.path,)))
            continue
        wanted = sorted(tiles.intersection(e.tiles))
        if not wanted:
            jobs.append(job(None, (e.token,), "new inbox entry",
                            ignored=f"outside the site: the product covers "
                                    f"{', '.join(e.tiles) or 'no tile'}"))
        elif e.on_tile_grid:
            jobs.append(job(wanted[0], (e.token,), "new inbox product", e.acquired,
                            paths=(e.path,)))
        else:  # warped onto each site tile it covers: one job per tile, in parallel
            for t in wanted:
                jobs.append(job(t, (e.token,), f"new inbox product, onto {t}", e.acquired,
                                paths=(e.path,), tile=t))
    for members in groups.values():
        members = sorted(members, key=lambda m: m.path)
        jobs.append(job(None, sorted(m.token for m in members),
                        f"new time series ({len(members)} file(s))",
                        paths=tuple(m.path for m in members)))
    return jobs


def make(ctx: StageContext, inputs: Sequence[str], params: IngestParams) -> StageOutput:
    """Ingest the job's inbox entries (:func:`agriseries.io.ingest.ingest`).

    Raises
    ------
    JobError
        An entry failed (the message and traceback are the reader's): the job fails and is
        retried, then quarantined.
    """
    from ...io.ingest import ingest
    from ..tasks import JobError

    if params.ignored:
        return StageOutput(notes=[f"{', '.join(inputs)}: not ingested, {params.ignored}"])
    results = ingest(list(params.paths), ctx.store, tile=params.tile,
                     allow_missing_bands=params.allow_missing_bands)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        msg = "; ".join(f"{r.error_type or 'Error'}: {r.error or r.path}" for r in failed)
        raise JobError(msg, "\n".join(r.traceback or "" for r in failed) or None)
    out = StageOutput()
    for r in results:
        out.products += [(pid, r.status == "ingested") for pid in r.products]
    return out


STAGE = Stage(
    level="ingest", params=IngestParams, make=make, plan=None, priority=PRIORITY,
    site_settings=("inbox",), inputs_in_store=False,
    description="Provider products and time series from the inbox into the store (COG + STAC)")
