"""The ``L4A`` stage: in-season crop masks.

``plan``: for every tile and every crop mask date of the site (:meth:`Site.l4a_dates
<agriseries.production.site.Site.l4a_dates>`: the month ends from ``products.L4A.start``,
default the middle of the season, to the season end, and the season end) that has come
(date <= today) and has no L4A product yet: one job, whose inputs are the tile's
Sentinel-2 L2A acquisitions from the season start to that date and whose output id is
:func:`agriseries.core.ids.crop_id`. A date whose span holds fewer than
:data:`~agriseries.production.stages.crop.CROP_MIN_INPUTS` such products waits. Made once
(:mod:`agriseries.production.stages.crop`); trained on the site's in-situ polygons, or
without them on a reference land-cover map (Matton et al.).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...crop.params import CropMaskParams, NoInsituParams
from ..plan import Catalogue, JobSpec, Waiting
from .base import Stage, StageContext, StageOutput
from .crop import CROP_BANDS, CropJobParams, crop_output, crop_outputs, crop_plan

if TYPE_CHECKING:
    from ..site import Site

__all__ = ["PRIORITY", "STAGE", "L4AJobParams", "make", "plan"]

#: Claim order: after the syntheses, before the crop type (which may use the crop mask).
PRIORITY = 6


@dataclasses.dataclass(frozen=True)
class L4AJobParams(CropJobParams):
    """Parameters of a crop mask job: those of every crop job
    (:class:`~agriseries.production.stages.crop.CropJobParams`: ``season``, ``until``,
    ``product``) and

    Attributes
    ----------
    class_field
        Field of the in-situ polygons with the class.
    crop_values
        Class codes that are cropland.
    insitu
        In-situ polygons file, or ``None`` (then ``reference_map``).
    reference_map
        Reference land-cover raster, or ``None``.
    ignore_values
        Reference map codes treated as no data.
    model
        A site model file (``agriseries croptrain``, site ``products.L4A.model``): the map is
        made with it, ``insitu`` only validates.
    """

    class_field: str = CropMaskParams.class_field
    crop_values: tuple[int, ...] = CropMaskParams.crop_values
    insitu: str | None = None
    reference_map: str | None = None
    ignore_values: tuple[int, ...] = NoInsituParams.ignore_values
    model: str | None = dataclasses.field(default=None, metadata={"json": "omit_none"})

    def processor_params(self):
        """The processor's :class:`~agriseries.crop.params.CropMaskParams`."""
        return CropMaskParams(class_field=self.class_field, crop_values=self.crop_values,
                              series=self.series_params(),
                              no_insitu=NoInsituParams(crop_values=self.crop_values,
                                                       ignore_values=self.ignore_values))


def job_base(site: Site) -> dict:
    """The parameters every crop mask job of the site shares (``L4AJobParams`` without the
    map date and product), as JSON."""
    cfg = site.products.L4A
    ref = cfg.reference_map
    return {"season": [f"{site.season.start}", f"{site.season.end}"],
            "class_field": cfg.class_field, "crop_values": list(cfg.crop_values),
            "insitu": None if ref is not None or site.in_situ is None else str(site.in_situ),
            "reference_map": None if ref is None else str(ref),
            "ignore_values": list(cfg.ignore_values),
            **({"model": str(cfg.model)} if cfg.model is not None else {}),
            **({"feature_set": cfg.feature_set} if cfg.feature_set != "sen2agri" else {})}


def plan(site: Site, catalogue: Catalogue, today: dt.date
         ) -> tuple[list[JobSpec], list[Waiting]]:
    """L4A (crop mask) jobs due: one per tile and crop mask date (see the module docstring).

    Parameters
    ----------
    site
        The site (tiles, season, ``in_situ``, ``products.L4A``).
    catalogue
        The products that exist (L2A; L4A records).
    today
        The current date (UTC): a map date is due from that day on.

    Returns
    -------
    jobs, waiting
        The jobs (params: :class:`L4AJobParams`) and the map dates that wait (not come
        yet, too few inputs).
    """
    return crop_plan("L4A", PRIORITY, L4AJobParams, site, catalogue, today, site.l4a_dates(),
                     job_base(site))


def make(ctx: StageContext, inputs: Sequence[str], params: L4AJobParams) -> StageOutput:
    """A crop mask of the season up to the job's date (:func:`agriseries.crop.processor.cropmask`:
    it reads the season's L2A products when it runs, see :mod:`.crop`); a site job
    (``products.L4A.site_model``) trains one model on all the site's tiles and maps each
    (:func:`agriseries.crop.site.map_site`), the model kept in the store's ``site-models/``."""
    from ...crop.processor import cropmask

    season0, season1 = params.season
    if params.tiles:  # a site job: one model trained on every tile's polygons, every tile mapped
        from ...crop.site import map_site

        _, results = map_site(ctx.store, params.tiles, season0, season1, insitu=params.insitu,
                              kind="crop_mask", until=params.until,
                              params=params.processor_params(),
                              model_path=params.model_file(ctx.store, "L4A"))
        return crop_output(ctx, *results)
    res = cropmask(ctx.store, ctx.tile, season0, season1, insitu=params.insitu,
                   reference_map=None if params.model else params.reference_map,
                   until=params.until, params=params.processor_params(), model=params.model)
    return crop_output(ctx, res)



def _bands(feature_set: str) -> tuple[str, ...]:
    """The L2A bands the crop features of ``feature_set`` read (what acquisition fetches)."""
    from ...crop.params import SeriesParams

    return CROP_BANDS if feature_set == "sen2agri" else SeriesParams(feature_set=feature_set).bands


STAGE = Stage(
    level="L4A", params=L4AJobParams, make=make, plan=plan, priority=PRIORITY,
    made_once=True, wait_for_ingest=True, enabled=lambda site: site.products.L4A.enabled,
    site_settings=("products.L4A", "in_situ", "season"), reads=("L2A", "L4A"),
    outputs=crop_outputs, inputs_in_store=False,
    bands=lambda site: _bands(site.products.L4A.feature_set),
    description="In-season crop mask")
