"""The ``L3B`` stage: LAI, FAPAR, FCOVER (and canopy chlorophyll and water) of every L2A
acquisition.

``plan``: for every L2A acquisition of a site tile within the season (of the sensors
chosen) without its L3B product (:func:`agriseries.core.ids.l3b_id`): one job, whose one
input is that L2A product.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...biophysical.params import BiophysicalParams
from ...core.ids import Level, l3b_id
from ...core.params import JsonParams
from ..plan import Catalogue, JobSpec, Waiting, day_end, day_start, family_ok
from .base import Stage, StageContext, StageOutput

if TYPE_CHECKING:
    import pystac

    from ..site import Site

__all__ = ["PRIORITY", "STAGE", "L3BJobParams", "make", "outputs", "plan"]

#: Claim order: per-date products right after L2A.
PRIORITY = 20


@dataclasses.dataclass(frozen=True)
class L3BJobParams(JsonParams):
    """Parameters of an L3B job.

    Attributes
    ----------
    variables
        Variables to estimate (``LAI``, ``FAPAR``, ``FCOVER``, ``LAI_Cab``, ``LAI_Cw``).
    resolution
        Sentinel-2 pixel size (m): 20 (eight-band networks) or 10.
    """

    variables: tuple[str, ...] = BiophysicalParams.variables
    resolution: int = BiophysicalParams.resolution

    def processor_params(self):
        """The processor's :class:`~agriseries.biophysical.params.BiophysicalParams`."""
        return BiophysicalParams(variables=self.variables, resolution=self.resolution)


def outputs(tile: str | None, inputs: tuple[str, ...], params: L3BJobParams) -> tuple[str, ...]:
    """The L3B id of the job's L2A input."""
    return tuple(str(l3b_id(i)) for i in inputs)


def plan(site: Site, catalogue: Catalogue, today: dt.date
         ) -> tuple[list[JobSpec], list[Waiting]]:
    """L3B jobs due: one per L2A acquisition of the season without its L3B product."""
    cfg = site.products.L3B
    params = L3BJobParams(tuple(cfg.variables), cfg.resolution).to_json()
    jobs = []
    last = min(site.season.end, today)
    for tile in site.tiles:
        for r in catalogue.find(Level.L2A, tile, day_start(site.season.start), day_end(last)):
            if r.end != r.start or not family_ok(r.product_id, cfg.sensors):
                continue
            out = str(l3b_id(r.product_id))
            if out in catalogue:
                continue
            jobs.append(JobSpec("L3B", tile, (r.product_id,), params, (out,), PRIORITY,
                                f"new L2A product {r.product_id}"))
    return jobs, []


def make(ctx: StageContext, inputs: Sequence[pystac.Item], params: L3BJobParams
         ) -> StageOutput:
    """The biophysical variables of the job's L2A product
    (:func:`agriseries.biophysical.processor.biophysical_product`)."""
    from ...biophysical.processor import biophysical_product

    out = StageOutput()
    for item in inputs:
        pid, made = biophysical_product(ctx.store, item, params.processor_params())
        out.products.append((pid, made))
    return out


#: The network inputs by Sentinel-2 pixel size (the S2 Toolbox's 20 m and 10 m networks).
BANDS = {20: ("B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12"),
         10: ("B03", "B04", "B08")}

STAGE = Stage(
    level="L3B", params=L3BJobParams, make=make, plan=plan, priority=PRIORITY,
    enabled=lambda site: site.products.L3B.enabled, site_settings=("products.L3B",),
    reads=("L2A", "L3B"), outputs=outputs,
    bands=lambda site: BANDS[site.products.L3B.resolution],
    description="LAI, FAPAR, FCOVER, canopy chlorophyll and water of every L2A acquisition")
