"""The ``L3A`` stage: the monthly WASP synthesis of each tile.

``plan``: for every tile and every calendar month of the season, the synthesis window is
the middle day of the month +- the WASP half period H (:func:`l3a_window`; the same window
:func:`agriseries.composite.composite` reads when called without inputs). The month is due
when the window holds at least one L2A product (of the sensors chosen) and its window has
ended (or at once with ``provisional: true``), unless an L3A product of that tile and
month exists that was made from exactly those inputs (its STAC item lists the inputs it
used and those it skipped). **Remake rule**: an L2A product arriving late in a window
changes the input set, so the job has a new key and runs again; it replaces the product
(atomically, same id) or, when the new input adds a sensor family and so changes the id
(``L3A_S2_...`` -> ``L3A_S2L8_...``), writes the new product and removes the superseded
one. A month whose window holds nothing is reported as waiting. The job's inputs are the
window's products, and the processor synthesises exactly those.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ...core.ids import Level, ProductId, l3a_id
from ...composite.params import WaspParams
from ...core.params import JsonParams
from ..plan import Catalogue, JobSpec, Waiting, day_end, day_start, family_ok
from ..records import ProductRecord
from .base import Stage, StageContext, StageOutput

if TYPE_CHECKING:
    import pystac

    from ..site import Site

__all__ = ["PRIORITY", "STAGE", "L3AJobParams", "considered_inputs", "l3a_window", "make",
           "outputs", "plan"]

#: Claim order: after the per-date products (L2A, L3B).
PRIORITY = 10


@dataclasses.dataclass(frozen=True)
class L3AJobParams(JsonParams):
    """Parameters of an L3A job.

    Attributes
    ----------
    period
        The month, ``YYYY-MM``.
    half_period
        WASP half synthesis period H (days).
    sensors
        Sensor families used (``S2``, ``L8``), or ``None`` for all.
    """

    period: str
    half_period: int = WaspParams.half_period
    sensors: tuple[str, ...] | None = None

    def wasp(self):
        """The method's :class:`~agriseries.composite.params.WaspParams`."""
        return WaspParams(half_period=self.half_period)


def l3a_window(month_start: dt.date, month_end: dt.date, half_period: int
               ) -> tuple[dt.date, dt.date, dt.date]:
    """Centre and first and last day of the synthesis window of a month.

    The centre is the middle day of the month, as :func:`agriseries.composite.composite`
    takes it by default; the window is the centre +- ``half_period`` days.
    """
    centre = month_start + (month_end - month_start) // 2
    half = dt.timedelta(days=half_period)
    return centre, centre - half, centre + half


def considered_inputs(record: ProductRecord) -> frozenset[str] | None:
    """The L2A ids an L3A product was made from: those it used and those it skipped (from
    its STAC item), or ``None`` when the record carries no item."""
    if not record.item:
        return None
    props = record.item.get("properties") or {}
    used = set(props.get("agriseries:inputs") or [])
    skipped = ((props.get("agriseries:synthesis") or {}).get("skipped") or [])
    used.update(s.get("id") or s.get("input") for s in skipped
                if isinstance(s, dict) and (s.get("id") or s.get("input")))
    return frozenset(used)


def _month(period: str) -> tuple[dt.date, dt.date]:
    import calendar

    y, m = (int(x) for x in period.split("-")[:2])
    return dt.date(y, m, 1), dt.date(y, m, calendar.monthrange(y, m)[1])


def outputs(tile: str | None, inputs: tuple[str, ...], params: L3AJobParams) -> tuple[str, ...]:
    """The id of the synthesis of the job's inputs (its sensors name it)."""
    m0, m1 = _month(params.period)
    return (str(l3a_id(tile, m0, m1, sorted({ProductId.parse(i).sensor for i in inputs}))),)


def plan(site: Site, catalogue: Catalogue, today: dt.date
         ) -> tuple[list[JobSpec], list[Waiting]]:
    """L3A jobs due: one per tile and month of the season (see the module docstring).

    Parameters
    ----------
    site
        The site (tiles, season, ``products.L3A``).
    catalogue
        The products that exist (L2A; L3A records with their STAC items).
    today
        The current date (UTC): a month is made once its window has ended, unless
        ``provisional``.
    """
    cfg = site.products.L3A
    jobs: list[JobSpec] = []
    waiting: list[Waiting] = []
    for tile in site.tiles:
        for m0, m1 in site.months():
            period = f"{m0:%Y-%m}"
            _, w0, w1 = l3a_window(m0, m1, cfg.half_period)
            if w0 > today:
                waiting.append(Waiting("L3A", tile, period, f"its window starts on {w0}"))
                continue
            inputs = sorted(r.product_id for r in
                            catalogue.find(Level.L2A, tile, day_start(w0), day_end(w1))
                            if family_ok(r.product_id, cfg.sensors))
            if not inputs:
                waiting.append(Waiting("L3A", tile, period,
                                       f"no L2A product between {w0} and {w1} yet"))
                continue
            if not cfg.provisional and today <= w1:
                waiting.append(Waiting("L3A", tile, period,
                                       f"{len(inputs)} input(s) so far; made once its window "
                                       f"ends on {w1}"))
                continue
            params = L3AJobParams(period, cfg.half_period,
                                  tuple(cfg.sensors) if cfg.sensors else None)
            (pid,) = outputs(tile, tuple(inputs), params)
            existing = [r for r in catalogue.find(Level.L3A, tile, day_start(m0), day_end(m1))
                        if r.start.date() == m0 and r.end.date() == m1]
            made_from = [considered_inputs(r) for r in existing]
            if any(c is None or c == frozenset(inputs) for c in made_from):
                continue  # made from exactly these inputs (or made elsewhere: unknown, kept)
            reason = (f"{len(inputs)} L2A product(s) in {w0}..{w1}"
                      + ("; inputs changed since the last synthesis" if existing else ""))
            jobs.append(JobSpec("L3A", tile, tuple(inputs), params.to_json(), (pid,), PRIORITY,
                                reason))
    return jobs, waiting


def make(ctx: StageContext, inputs: Sequence[pystac.Item], params: L3AJobParams
         ) -> StageOutput:
    """The synthesis of exactly the job's inputs (:func:`agriseries.composite.composite`).

    A product of the month made from other inputs is replaced, and a product of the same
    month with another id (another sensor set) is removed once the new one is written.
    (One already made from exactly these inputs never gets here: the driver returns it.)
    """
    from ...composite import composite

    store = ctx.store
    m0, m1 = _month(params.period)
    utc = lambda d: dt.datetime.combine(d, dt.time(), dt.UTC)  # noqa: E731
    existing = [it.id for it in store.items(level=Level.L3A, tile=ctx.tile, start=utc(m0),
                                            end=utc(m1))
                if (pid := ProductId.parse(it.id)).end is not None
                and pid.start.date() == m0 and pid.end.date() == m1]
    res = composite(store, ctx.tile, params.period, sensors=params.sensors,
                    params=params.wasp(), overwrite=bool(existing), items=list(inputs),
                    update_catalog=False)
    out = StageOutput(products=[(res.product, res.made)])
    out.failures += res.skipped  # made from the others; the run says some input failed
    for pid in existing:
        if pid != res.product:
            store.remove_product(pid)
            out.removed.append(pid)
    return out


#: The bands of the synthesis (WASP): the 10 m and 20 m reflectance bands.
BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")

STAGE = Stage(
    level="L3A", params=L3AJobParams, make=make, plan=plan, priority=PRIORITY,
    wait_for_ingest=True, enabled=lambda site: site.products.L3A.enabled,
    site_settings=("products.L3A",), reads=("L2A", "L3A"), reads_items=("L3A",),
    outputs=outputs, bands=lambda site: BANDS,
    description="Monthly cloud-free surface reflectance synthesis (WASP)")
