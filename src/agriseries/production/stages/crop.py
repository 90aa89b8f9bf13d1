"""What the two crop stages (``L4A`` crop mask, ``L4B`` crop type) share: the map dates,
their inputs, their product ids, and the result of a crop job.

**An in-season map is made once** (as Sen2Agri does): the product id depends on the tile,
the season start and the map date only (:func:`agriseries.core.ids.crop_id`), and a date
whose product exists is never due again. An L2A acquisition of an already mapped span that
arrives late does not remake the map; it is used by the next map date, if any. (A map is
due on its date: an acquisition of that very day ingested after the map was made is not
in it.) Because the job key holds the inputs, a late input could give a second job for a
product whose first job is still queued, running or waiting to retry; the runner does not
submit it (``Stage.made_once``: ``params["product"]`` names the product). Only when that
first job is quarantined does a new input give a new job.

So a crop job reads the season's L2A products when it runs (the processor looks them up,
:func:`agriseries.crop.processor.load_season`): the job's inputs are those known when it
was planned, and one that came later is used too, since the map will never be remade. The
crop stages therefore take their inputs as ids (``Stage.inputs_in_store`` is False), not as
items read by the driver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...core.ids import Level, ProductId, crop_id
from ...core.params import JsonParams
from ..plan import Catalogue, JobSpec, Waiting, day_end, day_start
from .base import StageContext, StageOutput

if TYPE_CHECKING:
    from ..site import Site

__all__ = ["CROP_BANDS", "CROP_MIN_INPUTS", "S2_SENSORS", "CropJobParams", "crop_inputs",
           "crop_plan", "crop_product_id", "crop_output", "crop_outputs"]

#: Fewest Sentinel-2 L2A products a crop map needs
#: (:func:`agriseries.crop.processor.load_season` refuses fewer).
CROP_MIN_INPUTS = 3
#: The sensors the crop maps are made from.
S2_SENSORS = ("S2A", "S2B", "S2C")
#: The bands of the crop features (:data:`agriseries.crop.features.BANDS`).
CROP_BANDS = ("B03", "B04", "B08", "B11")


@dataclasses.dataclass(frozen=True)
class CropJobParams(JsonParams):
    """What the parameters of every crop map job hold (``L4A``, ``L4B`` add their own).

    Attributes
    ----------
    season
        First and last day of the season (ISO dates).
    until
        The map date: acquisitions up to that day are used.
    product
        The product the job makes (a crop map is made once).
    """

    season: tuple[str, str]
    until: str
    product: str | None = None


def crop_product_id(level: Level | str, tile: str, site: Site, until: dt.date) -> str:
    """The id of the crop mask / crop type product of a tile for the site's season up to
    ``until``, as :func:`agriseries.crop.processor.cropmask` / ``croptype`` name it."""
    return str(crop_id(level, tile, site.season.start, site.season.end, until))


def crop_inputs(site: Site, catalogue: Catalogue, tile: str, day: dt.date) -> list[str]:
    """The Sentinel-2 L2A acquisitions of a tile from the season start to ``day``, sorted:
    what the crop processors read for a map of that date."""
    return sorted(r.product_id for r in
                  catalogue.find(Level.L2A, tile, day_start(site.season.start), day_end(day))
                  if r.end == r.start and ProductId.parse(r.product_id).sensor in S2_SENSORS)


def crop_plan(level: str, priority: int, params_cls: type, site: Site, catalogue: Catalogue,
              today: dt.date, dates: Sequence[dt.date], base: Mapping[str, Any],
              mask_for: Callable[[str, dt.date], tuple[str | None, str | None]] | None = None
              ) -> tuple[list[JobSpec], list[Waiting]]:
    """The jobs of one crop level: one per tile and map date that has come, has no product,
    has enough inputs (and, with ``mask_for``, its crop mask)."""
    what = {"L4A": "crop mask", "L4B": "crop type map"}[level]
    season0 = f"{site.season.start}"
    jobs: list[JobSpec] = []
    waiting: list[Waiting] = []
    for tile in site.tiles:
        for day in dates:
            if day > today:
                waiting.append(Waiting(level, tile, f"{day}", f"the {what} of {day} is made "
                                                             f"on that day"))
                continue
            pid = crop_product_id(level, tile, site, day)
            if pid in catalogue:
                continue  # made once, never remade (module docstring)
            inputs = crop_inputs(site, catalogue, tile, day)
            if len(inputs) < CROP_MIN_INPUTS:
                waiting.append(Waiting(level, tile, f"{day}", (
                    f"{len(inputs) or 'no'} Sentinel-2 L2A product(s) between {season0} and "
                    f"{day} yet; a {what} needs at least {CROP_MIN_INPUTS}")))
                continue
            params = {**base, "until": f"{day}", "product": pid}
            if mask_for is not None:
                mask, why = mask_for(tile, day)
                if mask is None:
                    waiting.append(Waiting(level, tile, f"{day}", why or ""))
                    continue
                params["crop_mask"] = mask
                inputs = sorted([*inputs, mask])
            params = params_cls.from_json(params).to_json()  # typed: checked, canonical
            jobs.append(JobSpec(level, tile, tuple(inputs), params, (pid,), priority,
                                f"{what} of {day}: {len(inputs)} input(s) from {season0}"))
    return jobs, waiting


def crop_outputs(tile: str | None, inputs: tuple[str, ...], params) -> tuple[str, ...]:
    """The product of a crop job (named in its parameters)."""
    return (params.product,) if params.product else ()


def crop_output(ctx: StageContext, res) -> StageOutput:
    """The stage output of a crop map, checked against the id the scheduler expected."""
    from ..tasks import JobError

    want = ctx.outputs[0] if ctx.outputs else None
    if want and res.product != want:
        raise JobError(f"the crop processor made {res.product}, the scheduler expected {want} "
                       "(season or date changed?)")
    out = StageOutput(products=[(res.product, res.made)])
    if res.made and res.oa is None:
        out.notes.append(f"{res.product}: made with the site model, not validated (no in-situ "
                         f"data), data up to {res.last_date_used}")
    elif res.made:
        out.notes.append(f"{res.product}: OA {res.oa:.3f}, kappa {res.kappa:.3f}, macro F1 "
                         f"{res.macro_f1:.3f} on {res.n_validation} validation pixels, data up "
                         f"to {res.last_date_used}")
    else:
        out.notes.append(f"{res.product} already in the store: kept (made once)")
    return out
