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
from pathlib import Path
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
        The product the job makes (a crop map is made once); a site job: its first product
        (the runner's made-once key).
    tiles
        A site job (``site_model: true``): the site's tiles, all of whose in-situ polygons
        train one model that maps them.
    products
        A site job: the products it makes (the tiles' maps not made yet).
    site
        A site job: the site's name (names the model file).
    feature_set
        The per-date features (:class:`~agriseries.crop.params.SeriesParams`), default
        ``sen2agri``.
    """

    season: tuple[str, str]
    until: str
    product: str | None = None
    tiles: tuple[str, ...] | None = dataclasses.field(default=None, metadata={"json": "omit_none"})
    products: tuple[str, ...] | None = dataclasses.field(default=None,
                                                         metadata={"json": "omit_none"})
    site: str | None = dataclasses.field(default=None, metadata={"json": "omit_none"})
    feature_set: str | None = dataclasses.field(default=None, metadata={"json": "omit_none"})

    def series_params(self):
        """The :class:`~agriseries.crop.params.SeriesParams` of the job's ``feature_set``."""
        from ...crop.params import SeriesParams

        return SeriesParams(feature_set=self.feature_set or "sen2agri")

    def model_file(self, store, level: str) -> Path:
        """Where a site job writes its site model: ``<store>/site-models/<level>_<site>_<season
        start>-<until>.joblib`` (``agriseries cropmask --model`` applies it elsewhere)."""
        s0 = self.season[0].replace("-", "")
        return (Path(store.root) / "site-models"
                / f"{level}_{self.site or 'site'}_{s0}-{self.until.replace('-', '')}.joblib")


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
    if getattr(site.products, level).site_model:
        return _site_plan(level, priority, params_cls, site, catalogue, today, dates, base,
                          mask_for)
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
    """The products of a crop job (named in its parameters)."""
    if params.products:
        return tuple(params.products)
    return (params.product,) if params.product else ()


def crop_output(ctx: StageContext, *results) -> StageOutput:
    """The stage output of crop maps (one per tile for a site job), checked against the ids
    the scheduler expected."""
    from ..tasks import JobError

    made = {r.product for r in results}
    missing = [p for p in ctx.outputs if p not in made]
    if missing:
        raise JobError(f"the crop processor made {', '.join(sorted(made))}, the scheduler "
                       f"expected {', '.join(missing)} (season or date changed?)")
    out = StageOutput()
    for res in results:
        if ctx.outputs and res.product not in ctx.outputs:
            continue  # a site job's tile made before (made once): not this job's product
        out.products.append((res.product, res.made))
        if res.made and res.oa is None:
            out.notes.append(f"{res.product}: made with the site model, not validated (no "
                             f"in-situ data), data up to {res.last_date_used}")
        elif res.made:
            out.notes.append(f"{res.product}: OA {res.oa:.3f}, kappa {res.kappa:.3f}, macro F1 "
                             f"{res.macro_f1:.3f} on {res.n_validation} validation pixels, data "
                             f"up to {res.last_date_used}")
        else:
            out.notes.append(f"{res.product} already in the store: kept (made once)")
    return out


def _site_plan(level: str, priority: int, params_cls: type, site: Site, catalogue: Catalogue,
               today: dt.date, dates: Sequence[dt.date], base: Mapping[str, Any],
               mask_for: Callable[[str, dt.date], tuple[str | None, str | None]] | None
               ) -> tuple[list[JobSpec], list[Waiting]]:
    """``site_model: true``: one job per map date for the whole site (tile ``None``) that
    trains one model on every tile's in-situ polygons and maps the tiles not mapped yet.
    It waits until every tile has enough inputs (a model of the site is trained on all of
    it) and, with ``mask_for``, every tile its crop mask."""
    what = {"L4A": "crop mask", "L4B": "crop type map"}[level]
    season0 = f"{site.season.start}"
    jobs: list[JobSpec] = []
    waiting: list[Waiting] = []
    tiles = list(site.tiles)
    for day in dates:
        if day > today:
            waiting.append(Waiting(level, None, f"{day}", f"the site's {what}s of {day} are "
                                                          "made on that day"))
            continue
        pids = [crop_product_id(level, t, site, day) for t in tiles]
        todo = [p for p in pids if p not in catalogue]
        if not todo:
            continue
        inputs: list[str] = []
        short = []
        for t in tiles:
            mine = crop_inputs(site, catalogue, t, day)
            if len(mine) < CROP_MIN_INPUTS:
                short.append(f"{t} ({len(mine)})")
            inputs += mine
        if short:
            waiting.append(Waiting(level, None, f"{day}", (
                f"the site model of {day} is trained on every tile; "
                f"{', '.join(short)}: fewer than {CROP_MIN_INPUTS} Sentinel-2 L2A products between "
                f"{season0} and {day} yet")))
            continue
        params = {**base, "until": f"{day}", "product": todo[0], "tiles": tiles,
                  "products": todo, "site": site.name}
        if mask_for is not None:
            masks, why = [], None
            for t in tiles:
                mask, why = mask_for(t, day)
                if mask is None:
                    break
                masks.append(mask)
            if len(masks) < len(tiles):
                waiting.append(Waiting(level, None, f"{day}", why or ""))
                continue
            params["crop_masks"] = masks
            inputs += masks
        params = params_cls.from_json(params).to_json()
        jobs.append(JobSpec(level, None, tuple(sorted(inputs)), params, tuple(todo), priority,
                            f"site {what}s of {day} ({len(tiles)} tiles, one model): "
                            f"{len(inputs)} input(s) from {season0}"))
    return jobs, waiting
