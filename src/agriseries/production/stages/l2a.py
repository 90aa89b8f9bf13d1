"""The ``L2A`` stage (with ``l2a: {source: agriseries}``): L1C into surface reflectance
with the multi-temporal cloud, shadow, snow and water mask.

``plan``: for every tile with L1C products of the season that have no agriseries L2A yet,
one job for all of them, since the tile's cloud-detection state makes them in date order
(:func:`agriseries.l2a.processor.l2a`). An L1C that cannot be made (a missing band) is
recorded as a failed input of the run and stays pending: it comes back with the next new
L1C of the tile, in a job with a new key; the job of the same inputs is not submitted
twice. It waits for the ingest (an L1C ingested a minute later but older would be a late
date).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...core.ids import Level, ProductId, l2a_id
from ...core.params import JsonParams
from ...l2a.params import L2AParams
from ..plan import Catalogue, JobSpec, Waiting, day_end, day_start
from .base import Stage, StageContext, StageOutput

if TYPE_CHECKING:
    import pystac

    from ..site import Site

__all__ = ["PRIORITY", "STAGE", "L2AJobParams", "make", "outputs", "plan"]

#: Claim order: after ingest, before the products made from L2A.
PRIORITY = 25


@dataclasses.dataclass(frozen=True)
class L2AJobParams(JsonParams):
    """Parameters of an L2A job (the site's ``l2a`` section).

    Attributes
    ----------
    resolution
        Pixel size (m) of the cloud-detection grid and tile state.
    altitude
        Altitude (m) for the pressure, when there is no DEM.
    dem
        A DEM file for the pressure, or ``None``.
    backward_dates
        Dates made first in backward mode to initialise a tile state.
    """

    resolution: float = L2AParams.resolution
    altitude: float = L2AParams.altitude
    dem: str | None = L2AParams.dem
    backward_dates: int = L2AParams.backward_dates

    @classmethod
    def from_site(cls, site: Site) -> L2AJobParams:
        """The parameters of the site's ``l2a`` section."""
        cfg = site.l2a
        return cls(resolution=cfg.resolution, altitude=cfg.altitude,
                   dem=str(cfg.dem) if cfg.dem else None, backward_dates=cfg.backward_dates)

    def processor_params(self):
        """The processor's :class:`~agriseries.l2a.params.L2AParams`."""
        return L2AParams(resolution=self.resolution, altitude=self.altitude, dem=self.dem,
                         backward_dates=self.backward_dates)


def outputs(tile: str | None, inputs: tuple[str, ...], params: L2AJobParams) -> tuple[str, ...]:
    """The L2A ids of a job's L1C inputs (:func:`agriseries.core.ids.l2a_id`)."""
    return tuple(str(l2a_id(i, tile)) for i in inputs)


def plan(site: Site, catalogue: Catalogue, today: dt.date
         ) -> tuple[list[JobSpec], list[Waiting]]:
    """L2A jobs due: per tile, one job for the L1C products of the season without their
    agriseries L2A (made in date order by one processor call)."""
    params = L2AJobParams.from_site(site).to_json()
    jobs = []
    last = min(site.season.end, today)
    for tile in site.tiles:
        pending, outs = [], []
        for r in catalogue.find(Level.L1C, tile, day_start(site.season.start), day_end(last)):
            out = str(l2a_id(r.product_id, tile))
            if out not in catalogue:
                pending.append(r.product_id)
                outs.append(out)
        if pending:
            jobs.append(JobSpec("L2A", tile, tuple(sorted(pending)), params, tuple(outs),
                                PRIORITY, f"{len(pending)} L1C product(s) without L2A"))
    return jobs, []


def make(ctx: StageContext, inputs: Sequence[pystac.Item], params: L2AJobParams
         ) -> StageOutput:
    """The L2A of the job's L1C products, in date order (:func:`agriseries.l2a.processor.l2a`).

    An L1C that cannot be made is a failed input (recorded, the exit code says it), not a
    job failure: the others are made and recorded.
    """
    from ...l2a.processor import l2a

    dates = [ProductId.parse(it.id).start for it in inputs]
    res = l2a(ctx.store, ctx.tile, min(dates), max(dates), params=params.processor_params(),
              items=list(inputs))
    out = StageOutput()
    for pid in dict.fromkeys(res.written + res.skipped):
        out.products.append((pid, pid in res.written))
    out.failures += res.failures
    return out


STAGE = Stage(
    level="L2A", params=L2AJobParams, make=make, plan=plan, priority=PRIORITY,
    wait_for_ingest=True, enabled=lambda site: site.l2a.source == "agriseries",
    site_settings=("l2a",), reads=("L1C", "L2A"), outputs=outputs,
    description="L1C into surface reflectance with cloud, shadow, snow and water mask")
