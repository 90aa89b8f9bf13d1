"""The ``L4B`` stage: in-season crop type maps.

``plan``: as :mod:`.l4a`, for every date of ``products.L4B.dates`` (default the season
end). With ``crop_mask: true`` the map is masked with the tile's latest crop mask made on
or before its date (an input of the job too): it waits while a crop mask of such a date is
still due (an L4A date with enough inputs and no product yet), and when the tile has no
crop mask at all. Made once (:mod:`agriseries.production.stages.crop`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...core.ids import Level
from ...crop.params import CropTypeParams
from ..plan import Catalogue, JobSpec, Waiting
from .base import Stage, StageContext, StageOutput
from .crop import (
    CROP_BANDS,
    CROP_MIN_INPUTS,
    CropJobParams,
    crop_inputs,
    crop_output,
    crop_outputs,
    crop_plan,
    crop_product_id,
)

if TYPE_CHECKING:
    from ..site import Site

__all__ = ["PRIORITY", "STAGE", "L4BJobParams", "make", "plan"]

#: Claim order: last (it may use the crop mask).
PRIORITY = 4


@dataclasses.dataclass(frozen=True)
class L4BJobParams(CropJobParams):
    """Parameters of a crop type job: those of every crop job
    (:class:`~agriseries.production.stages.crop.CropJobParams`: ``season``, ``until``,
    ``product``) and

    Attributes
    ----------
    class_field
        Field of the in-situ polygons with the crop code.
    exclude_codes
        Codes of polygons left out.
    insitu
        In-situ polygons file.
    crop_mask
        The L4A product that masks the map (also an input of the job), or ``None``.
    model
        A crop type site model file (``products.L4B.model``), or ``None``.
    crop_masks
        A site job with ``crop_mask: true``: the crop mask of each of ``tiles``.
    """

    class_field: str = CropTypeParams.class_field
    exclude_codes: tuple[int, ...] = CropTypeParams.exclude_codes
    insitu: str | None = None
    crop_mask: str | None = dataclasses.field(default=None, metadata={"json": "omit_none"})
    model: str | None = dataclasses.field(default=None, metadata={"json": "omit_none"})
    crop_masks: tuple[str, ...] | None = dataclasses.field(default=None,
                                                           metadata={"json": "omit_none"})

    def processor_params(self):
        """The processor's :class:`~agriseries.crop.params.CropTypeParams`."""
        return CropTypeParams(class_field=self.class_field, exclude_codes=self.exclude_codes,
                              series=self.series_params())


def plan(site: Site, catalogue: Catalogue, today: dt.date
         ) -> tuple[list[JobSpec], list[Waiting]]:
    """L4B (crop type) jobs due: one per tile and date of ``products.L4B.dates`` (see the
    module docstring).

    Parameters
    ----------
    site
        The site (tiles, season, ``in_situ``, ``products.L4B``, and ``products.L4A`` for the
        crop mask dates).
    catalogue
        The products that exist (L2A; L4B records; L4A records with ``crop_mask: true``).
    today
        The current date (UTC).

    Returns
    -------
    jobs, waiting
        The jobs (params: :class:`L4BJobParams`; ``crop_mask`` is also an input) and the
        map dates that wait.
    """
    cfg = site.products.L4B
    base = {"season": [f"{site.season.start}", f"{site.season.end}"],
            "class_field": cfg.class_field, "exclude_codes": list(cfg.exclude_codes),
            "insitu": None if site.in_situ is None else str(site.in_situ),
            **({"model": str(cfg.model)} if cfg.model is not None else {}),
            **({"feature_set": cfg.feature_set} if cfg.feature_set != "sen2agri" else {})}

    def latest_mask(tile: str, day: dt.date) -> tuple[str | None, str | None]:
        """The crop mask of a map: (L4A id, None), or (None, why it waits)."""
        if site.products.L4A.enabled:  # a crop mask still to be made on or before day
            for d in site.l4a_dates():
                if d > day:
                    break
                pid = crop_product_id(Level.L4A, tile, site, d)
                # a site crop mask can be made once every tile has enough inputs
                need = site.tiles if site.products.L4A.site_model else [tile]
                if pid not in catalogue and all(len(crop_inputs(site, catalogue, t, d))
                                                >= CROP_MIN_INPUTS for t in need):
                    return None, (f"waits for its crop mask {pid} (due first; "
                                  "'agriseries status' shows its job if it failed)")
        made = [r for r in catalogue.find(Level.L4A, tile)
                if r.start.date() == site.season.start and r.end.date() <= day]
        if not made:
            return None, (f"no crop mask (L4A) of {tile} made on or before {day} to mask "
                          "the crop type with (crop_mask: true)")
        return max(made, key=lambda r: (r.end, r.product_id)).product_id, None

    return crop_plan("L4B", PRIORITY, L4BJobParams, site, catalogue, today, site.l4b_dates(),
                     base, latest_mask if cfg.crop_mask else None)


def make(ctx: StageContext, inputs: Sequence[str], params: L4BJobParams) -> StageOutput:
    """A crop type map of the season up to the job's date, masked with its crop mask when it
    names one (:func:`agriseries.crop.processor.croptype`: it reads the season's L2A
    products when it runs, see :mod:`.crop`)."""
    from ...crop.processor import croptype

    season0, season1 = params.season
    if params.tiles:  # a site job: one model of every tile's polygons maps every tile
        from ...crop.site import map_site

        masks = dict(zip(params.tiles, params.crop_masks)) if params.crop_masks else None
        _, results = map_site(ctx.store, params.tiles, season0, season1, insitu=params.insitu,
                              kind="crop_type", until=params.until,
                              params=params.processor_params(), crop_masks=masks,
                              model_path=params.model_file(ctx.store, "L4B"))
        return crop_output(ctx, *results)
    res = croptype(ctx.store, ctx.tile, season0, season1, insitu=params.insitu,
                   crop_mask=params.crop_mask, until=params.until,
                   params=params.processor_params(), model=params.model)
    return crop_output(ctx, res)


def _enabled(site: Site) -> bool:
    return site.products.L4B.enabled



def _bands(feature_set: str) -> tuple[str, ...]:
    """The L2A bands the crop features of ``feature_set`` read (what acquisition fetches)."""
    from ...crop.params import SeriesParams

    return CROP_BANDS if feature_set == "sen2agri" else SeriesParams(feature_set=feature_set).bands


STAGE = Stage(
    level="L4B", params=L4BJobParams, make=make, plan=plan, priority=PRIORITY,
    made_once=True, wait_for_ingest=True, enabled=_enabled,
    site_settings=("products.L4B", "products.L4A", "in_situ", "season"),
    reads=("L2A", "L4B", "L4A"), outputs=crop_outputs, inputs_in_store=False,
    bands=lambda site: _bands(site.products.L4B.feature_set),
    description="In-season crop type map")
