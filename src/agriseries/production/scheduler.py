"""The production scheduler: pure rules from "what exists" to "what is due".

Nothing here reads a file, the clock or the database: a rule takes the site
(:class:`~agriseries.production.site.Site`), the catalogue of products that exist
(:class:`Catalogue`, built from the job store's
:class:`~agriseries.production.jobstore.ProductRecord` rows) and the current date, and
returns the jobs due (:class:`JobSpec`: processor, tile, inputs, parameters, the product ids
it will make) and what is waiting (:class:`Waiting`: a month without any input yet...). The
runner submits the jobs to the job store, whose keys make submitting twice harmless
(:func:`~agriseries.production.jobstore.job_key`: processor, tile, sorted inputs,
parameters).

One rule per product level, registered in :data:`RULES` (a table, not a
class hierarchy):

``L3A`` -- :func:`l3a_rule`
    For every tile and every calendar month of the season: the synthesis window is the
    middle day of the month +- the WASP half period H (docs/l3a.md "Window"; the same window
    :func:`agriseries.composite.composite` reads). The month is due when the window holds
    at least one L2A product (of the sensors chosen) and its window has ended (or at once
    with ``provisional: true``), unless an L3A product of that tile and month exists that
    was made from exactly those inputs (its STAC item lists the inputs it used and those
    it skipped). **Remake rule**: an L2A product arriving late in a window changes the
    input set, so the job has a new key and runs again; it replaces the product
    (atomically, same id) or, when the new input adds a sensor family and so changes the
    id (``L3A_S2_...`` -> ``L3A_S2L8_...``), writes the new product and removes the
    superseded one. A month whose window holds nothing is reported as waiting.
``L3B`` -- :func:`l3b_rule`
    For every L2A acquisition of a site tile within the season (of the sensors chosen)
    without its L3B product (:func:`agriseries.biophysical.processor.l3b_id`): one job.
``L2A`` -- :func:`l2a_rule` (only with ``l2a: {source: agriseries}``)
    For every tile with L1C products of the season that have no agriseries L2A yet: one job
    for all of them, since the tile's cloud-detection state makes them in date order
    (:func:`agriseries.l2a.processor.l2a`). An L1C that cannot be made (a missing band)
    stays pending and comes back with the next new L1C of the tile, in a job with a new
    key; the job of the same inputs is not submitted twice.

``L4A`` -- :func:`l4a_rule` (crop mask, docs/crop.md)
    For every tile and every crop mask date of the site
    (:meth:`~agriseries.production.site.Site.l4a_dates`: the month ends from
    ``products.L4A.start``, default the middle of the season, to the season end, and the
    season end) that has come (date <= today) and has no L4A product yet: one job, whose
    inputs are the tile's Sentinel-2 L2A acquisitions from the season start to that date
    (what :func:`agriseries.crop.processor.cropmask` reads with ``until`` = the date) and
    whose output id is the crop processor's own (``L4A_S2_<tile>_<season start>-<date>_AGS``,
    :func:`crop_product_id`). A date whose span holds fewer than :data:`CROP_MIN_INPUTS`
    such products waits (the processor needs that many).
``L4B`` -- :func:`l4b_rule` (crop type, docs/crop.md)
    The same for every date of ``products.L4B.dates`` (default the season end). With
    ``crop_mask: true`` the map is masked with the tile's latest crop mask made on or before
    its date: it waits while a crop mask of such a date is still due (an L4A date with
    enough inputs and no product yet), and when the tile has no crop mask at all.

**An in-season map is made once** (as Sen2Agri does): the product id depends on the tile,
the season start and the map date only, and a date whose product exists is never due
again. An L2A acquisition of an already mapped span that arrives late does not remake the
map; it is used by the next map date, if any. (A map is due on its date: an acquisition of that
very day ingested after the map was made is not in it.) Because the job key holds the
inputs, a late input could give a second job for a product whose first job is still
queued, running or waiting to retry; the runner does not submit it (:data:`MADE_ONCE`:
``params["product"]`` names the product), since the processor reads the store when it runs
and so uses the late input anyway. Only when that first job is quarantined does a new
input give a new job.

``ingest`` jobs are planned by :func:`ingest_jobs` from the inbox entries the runner found
(inspected, not yet ingested): one job per product and target tile (a Landsat scene is
warped onto each site tile it overlaps, in parallel), one per group of series files that
hold the same dates (the 10 m and 20 m files of one extraction are written together), one
per entry that could not be read (it fails with the reader's error).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.ids import Level, ProductId
from .jobstore import ProductRecord, job_key
from .site import AVAILABLE_LEVELS, PENDING_LEVELS, Site

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

UTC = dt.UTC
#: Claim order: ingest first (it feeds everything), then per-date products, then syntheses,
#: then the crop mask, then the crop type (which may use the crop mask).
PRIORITY = {"ingest": 30, "L2A": 25, "L3B": 20, "L3A": 10, "L4A": 6, "L4B": 4}


@dataclass(frozen=True)
class JobSpec:
    """A job the scheduler finds due (not yet in the job store, or already there).

    Attributes
    ----------
    processor
        Name of the processor (``ingest``, ``L2A``, ``L3A``, ``L3B``, ``L4A``, ``L4B``).
    tile
        The tile it works on, or ``None``.
    inputs
        Input product ids (or inbox entry tokens for ``ingest``), sorted.
    params
        JSON parameters handed to the processor.
    outputs
        The product ids it will make, when known in advance.
    priority
        Higher is claimed first.
    reason
        Why it is due, for people.
    """

    processor: str
    tile: str | None
    inputs: tuple[str, ...]
    params: Mapping[str, Any]
    outputs: tuple[str, ...] = ()
    priority: int = 0
    reason: str = ""

    @property
    def key(self) -> str:
        """The job-store key (:func:`~agriseries.production.jobstore.job_key`)."""
        return job_key(self.processor, self.inputs, dict(self.params), self.tile)


@dataclass(frozen=True)
class Waiting:
    """A product the site wants that cannot be made yet, and why."""

    level: str
    tile: str | None
    what: str
    reason: str


@dataclass
class Schedule:
    """What :func:`schedule` found: jobs due, products waiting, and notices."""

    jobs: list[JobSpec] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------- catalogue


class Catalogue:
    """The products that exist, indexed by level and tile for date-range look-ups.

    Parameters
    ----------
    records
        Product records (:meth:`JobStore.products
        <agriseries.production.jobstore.JobStore.products>`); a record's ``item`` (the STAC
        item) is needed only for L3A products (the inputs they were made from).
    """

    def __init__(self, records: Iterable[ProductRecord] = ()) -> None:
        self._by_id: dict[str, ProductRecord] = {}
        groups: dict[tuple[str, str], list[ProductRecord]] = {}
        for r in records:
            self._by_id[r.product_id] = r
        for r in self._by_id.values():
            groups.setdefault((r.level, r.tile), []).append(r)
        self._index: dict[tuple[str, str], tuple[list[dt.datetime], list[ProductRecord],
                                                 dt.timedelta]] = {}
        for k, recs in groups.items():
            recs.sort(key=lambda r: (r.start, r.product_id))
            longest = max((r.end - r.start for r in recs), default=dt.timedelta(0))
            self._index[k] = ([r.start for r in recs], recs, longest)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, product_id: object) -> bool:
        return str(product_id) in self._by_id

    def get(self, product_id: str | ProductId) -> ProductRecord | None:
        """The record of a product, or ``None``."""
        return self._by_id.get(str(product_id))

    def find(self, level: Level | str, tile: str, start: dt.datetime | None = None,
             end: dt.datetime | None = None) -> list[ProductRecord]:
        """Products of a level and tile whose dates overlap ``[start, end]`` (inclusive),
        oldest first (as :meth:`JobStore.products
        <agriseries.production.jobstore.JobStore.products>`)."""
        lv = level.value if isinstance(level, Level) else str(level)
        entry = self._index.get((lv, tile))
        if entry is None:
            return []
        starts, recs, longest = entry
        hi = len(recs) if end is None else bisect.bisect_right(starts, _aware(end))
        lo = 0 if start is None else bisect.bisect_left(starts, _aware(start) - longest)
        s = None if start is None else _aware(start)
        return [r for r in recs[lo:hi] if s is None or r.end >= s]


def _aware(d: dt.datetime | dt.date) -> dt.datetime:
    if not isinstance(d, dt.datetime):
        d = dt.datetime(d.year, d.month, d.day)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _day_start(d: dt.date) -> dt.datetime:
    return dt.datetime(d.year, d.month, d.day, tzinfo=UTC)


def _day_end(d: dt.date) -> dt.datetime:
    return _day_start(d) + dt.timedelta(days=1) - dt.timedelta(microseconds=1)


def _family_ok(product_id: str, sensors: Sequence[str] | None) -> bool:
    if not sensors:
        return True
    sensor = ProductId.parse(product_id).sensor
    return any(sensor == s or sensor.startswith(s) for s in sensors)


# ------------------------------------------------------------------------------ rules


def l3a_window(month_start: dt.date, month_end: dt.date, half_period: int
               ) -> tuple[dt.date, dt.date, dt.date]:
    """Centre and first and last day of the synthesis window of a month.

    The centre is the middle day of the month, as
    :func:`agriseries.composite.composite` takes it by default; the window is the centre
    +- ``half_period`` days (docs/l3a.md, "Window").
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
    used.update(s.get("id") for s in skipped if isinstance(s, dict) and s.get("id"))
    return frozenset(used)


def l3a_rule(site: Site, catalogue: Catalogue, today: dt.date
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
    from ..composite.processor import l3a_id

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
                            catalogue.find(Level.L2A, tile, _day_start(w0), _day_end(w1))
                            if _family_ok(r.product_id, cfg.sensors))
            if not inputs:
                waiting.append(Waiting("L3A", tile, period,
                                       f"no L2A product between {w0} and {w1} yet"))
                continue
            if not cfg.provisional and today <= w1:
                waiting.append(Waiting("L3A", tile, period,
                                       f"{len(inputs)} input(s) so far; made once its window "
                                       f"ends on {w1}"))
                continue
            sensors = sorted({ProductId.parse(i).sensor for i in inputs})
            pid = str(l3a_id(tile, m0, m1, sensors))
            existing = [r for r in catalogue.find(Level.L3A, tile, _day_start(m0), _day_end(m1))
                        if r.start.date() == m0 and r.end.date() == m1]
            made_from = [considered_inputs(r) for r in existing]
            if any(c is None or c == frozenset(inputs) for c in made_from):
                continue  # made from exactly these inputs (or made elsewhere: unknown, kept)
            reason = (f"{len(inputs)} L2A product(s) in {w0}..{w1}"
                      + ("; inputs changed since the last synthesis" if existing else ""))
            params = {"period": period, "half_period": cfg.half_period,
                      "sensors": list(cfg.sensors) if cfg.sensors else None}
            jobs.append(JobSpec("L3A", tile, tuple(inputs), params, (pid,), PRIORITY["L3A"],
                                reason))
    return jobs, waiting


def l3b_rule(site: Site, catalogue: Catalogue, today: dt.date
             ) -> tuple[list[JobSpec], list[Waiting]]:
    """L3B jobs due: one per L2A acquisition of the season without its L3B product."""
    from ..biophysical.processor import l3b_id

    cfg = site.products.L3B
    params = {"variables": list(cfg.variables), "resolution": cfg.resolution}
    jobs = []
    last = min(site.season.end, today)
    for tile in site.tiles:
        for r in catalogue.find(Level.L2A, tile, _day_start(site.season.start), _day_end(last)):
            if r.end != r.start or not _family_ok(r.product_id, cfg.sensors):
                continue
            out = str(l3b_id(r.product_id))
            if out in catalogue:
                continue
            jobs.append(JobSpec("L3B", tile, (r.product_id,), params, (out,), PRIORITY["L3B"],
                                f"new L2A product {r.product_id}"))
    return jobs, []


def l2a_rule(site: Site, catalogue: Catalogue, today: dt.date
             ) -> tuple[list[JobSpec], list[Waiting]]:
    """L2A jobs due: per tile, one job for the L1C products of the season without their
    agriseries L2A (made in date order by one processor call)."""
    cfg = site.l2a
    params = {"resolution": cfg.resolution, "altitude": cfg.altitude,
              "dem": str(cfg.dem) if cfg.dem else None, "backward_dates": cfg.backward_dates}
    jobs = []
    last = min(site.season.end, today)
    for tile in site.tiles:
        pending, outputs = [], []
        for r in catalogue.find(Level.L1C, tile, _day_start(site.season.start), _day_end(last)):
            pid = ProductId.parse(r.product_id)
            out = str(ProductId(Level.L2A, pid.sensor, tile, pid.start, "AGS"))
            if out not in catalogue:
                pending.append(r.product_id)
                outputs.append(out)
        if pending:
            jobs.append(JobSpec("L2A", tile, tuple(sorted(pending)), params, tuple(outputs),
                                PRIORITY["L2A"], f"{len(pending)} L1C product(s) without L2A"))
    return jobs, []


#: Fewest Sentinel-2 L2A products a crop map needs
#: (:func:`agriseries.crop.processor.load_season` refuses fewer).
CROP_MIN_INPUTS = 3

#: Processors whose product is made once and kept (the in-season crop maps): a job whose
#: product (``params["product"]``) another job is making (queued, running or waiting to
#: retry; not quarantined) is not submitted.
MADE_ONCE = frozenset({"L4A", "L4B"})


def crop_product_id(level: Level | str, tile: str, site: Site, until: dt.date) -> str:
    """The id of the crop mask / crop type product of a tile for the site's season up to
    ``until``, as :func:`agriseries.crop.processor.cropmask` / ``croptype`` name it."""
    from ..crop.processor import _pid, _season

    start, _, last = _season(site.season.start, site.season.end, until)
    return str(_pid(Level(level), tile, start, last))


def _crop_inputs(site: Site, catalogue: Catalogue, tile: str, day: dt.date) -> list[str]:
    """The Sentinel-2 L2A acquisitions of a tile from the season start to ``day``, sorted:
    what the crop processors read for a map of that date."""
    from ..crop.processor import S2_SENSORS

    return sorted(r.product_id for r in
                  catalogue.find(Level.L2A, tile, _day_start(site.season.start), _day_end(day))
                  if r.end == r.start and ProductId.parse(r.product_id).sensor in S2_SENSORS)


def _crop_rule(level: str, site: Site, catalogue: Catalogue, today: dt.date,
               dates: Sequence[dt.date], base: Mapping[str, Any],
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
            inputs = _crop_inputs(site, catalogue, tile, day)
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
            jobs.append(JobSpec(level, tile, tuple(inputs), params, (pid,), PRIORITY[level],
                                f"{what} of {day}: {len(inputs)} input(s) from {season0}"))
    return jobs, waiting


def _l4a_params(site: Site) -> dict[str, Any]:
    cfg = site.products.L4A
    ref = cfg.reference_map
    return {"season": [f"{site.season.start}", f"{site.season.end}"],
            "class_field": cfg.class_field, "crop_values": list(cfg.crop_values),
            "insitu": None if ref is not None or site.in_situ is None else str(site.in_situ),
            "reference_map": None if ref is None else str(ref),
            "ignore_values": list(cfg.ignore_values)}


def l4a_rule(site: Site, catalogue: Catalogue, today: dt.date
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
        The jobs (params: ``season``, ``until``, ``product``, ``class_field``,
        ``crop_values``, ``insitu`` or ``reference_map``, ``ignore_values``) and the map
        dates that wait (not come yet, too few inputs).
    """
    return _crop_rule("L4A", site, catalogue, today, site.l4a_dates(), _l4a_params(site))


def l4b_rule(site: Site, catalogue: Catalogue, today: dt.date
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
        The jobs (params: ``season``, ``until``, ``product``, ``class_field``,
        ``exclude_codes``, ``insitu``, and ``crop_mask``: the L4A id, also an input) and the
        map dates that wait.
    """
    cfg = site.products.L4B
    base = {"season": [f"{site.season.start}", f"{site.season.end}"],
            "class_field": cfg.class_field, "exclude_codes": list(cfg.exclude_codes),
            "insitu": None if site.in_situ is None else str(site.in_situ)}

    def latest_mask(tile: str, day: dt.date) -> tuple[str | None, str | None]:
        """The crop mask of a map: (L4A id, None), or (None, why it waits)."""
        if site.products.L4A.enabled:  # a crop mask still to be made on or before day
            for d in site.l4a_dates():
                if d > day:
                    break
                pid = crop_product_id(Level.L4A, tile, site, d)
                if pid not in catalogue and len(
                        _crop_inputs(site, catalogue, tile, d)) >= CROP_MIN_INPUTS:
                    return None, (f"waits for its crop mask {pid} (due first; "
                                  "'agriseries status' shows its job if it failed)")
        made = [r for r in catalogue.find(Level.L4A, tile)
                if r.start.date() == site.season.start and r.end.date() <= day]
        if not made:
            return None, (f"no crop mask (L4A) of {tile} made on or before {day} to mask "
                          "the crop type with (crop_mask: true)")
        return max(made, key=lambda r: (r.end, r.product_id)).product_id, None

    return _crop_rule("L4B", site, catalogue, today, site.l4b_dates(), base,
                      latest_mask if cfg.crop_mask else None)


def _enabled(site: Site, level: str) -> bool:
    if level == "L2A":
        return site.l2a.source == "agriseries"
    return getattr(site.products, level).enabled


Rule = Callable[[Site, Catalogue, dt.date], tuple[list[JobSpec], list[Waiting]]]

#: One rule per product level the production makes.
RULES: dict[str, Rule] = {"L2A": l2a_rule, "L3A": l3a_rule, "L3B": l3b_rule,
                          "L4A": l4a_rule, "L4B": l4b_rule}
assert set(RULES) == set(AVAILABLE_LEVELS)


#: Rules that wait while inputs are still being ingested: a synthesis made from half of a
#: window's inputs would be made again minutes later, the L2A of a tile goes in date
#: order (an L1C ingested a minute later but older would be a late date), and a crop map
#: is made once (an input ingested a minute later would never be in it).
WAIT_FOR_INGEST = frozenset({"L2A", "L3A", "L4A", "L4B"})


def schedule(site: Site, catalogue: Catalogue, today: dt.date, *,
             ingest_pending: bool = False) -> Schedule:
    """Every job due for the site's enabled products, what waits, and notices (levels of
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
        Ingest jobs are queued or running: the rules of :data:`WAIT_FOR_INGEST` wait.
    """
    out = Schedule(notices=site.notices())
    for level, rule in RULES.items():
        if not _enabled(site, level) or level in PENDING_LEVELS:
            continue
        if ingest_pending and level in WAIT_FOR_INGEST:
            out.waiting.append(Waiting(level, None, "all", "inputs are being ingested"))
            continue
        jobs, waiting = rule(site, catalogue, today)
        out.jobs += jobs
        out.waiting += waiting
    return out


# ----------------------------------------------------------------------------- ingest


@dataclass(frozen=True)
class InboxEntry:
    """An inbox entry (file or folder) as the runner found and inspected it.

    Attributes
    ----------
    path
        Absolute path.
    token
        ``inbox:<name>@<fingerprint>``: the entry and its size / modification time, the
        input id of its ingest job (a changed entry is a new input).
    kind
        ``product`` (one acquisition), ``series`` (NetCDF/Zarr time series) or
        ``unreadable`` (no reader knows it, or reading its metadata failed).
    tiles
        Product: the tiles it covers (its own tile for a Sentinel-2 product).
    on_tile_grid
        Product: already on a Sentinel-2 tile grid (stored on its own tile as is).
    group
        Series: files of one extraction (same sensors, dates and grid) share a group.
    error
        Why it could not be inspected.
    """

    path: str
    token: str
    kind: str
    tiles: tuple[str, ...] = ()
    on_tile_grid: bool = False
    group: str | None = None
    error: str | None = None


def ingest_jobs(site: Site, entries: Sequence[InboxEntry]) -> list[JobSpec]:
    """The ingest jobs of new inbox entries (see the module docstring).

    A product outside the site's tiles gets a job that writes nothing (``ignored`` says
    why), so that it is not looked at again.
    """
    tiles = set(site.tiles)
    base = {"allow_missing_bands": site.inbox.allow_missing_bands}
    jobs: list[JobSpec] = []
    groups: dict[str, list[InboxEntry]] = {}
    for e in entries:
        if e.kind == "series":
            groups.setdefault(e.group or e.token, []).append(e)
            continue
        if e.kind != "product":
            jobs.append(JobSpec("ingest", None, (e.token,), {**base, "paths": [e.path],
                                                              "tile": None},
                                priority=PRIORITY["ingest"],
                                reason=f"new inbox entry (unreadable: {e.error})"))
            continue
        wanted = sorted(tiles.intersection(e.tiles))
        if not wanted:
            jobs.append(JobSpec("ingest", None, (e.token,),
                                {**base, "paths": [], "tile": None,
                                 "ignored": f"outside the site: the product covers "
                                            f"{', '.join(e.tiles) or 'no tile'}"},
                                priority=PRIORITY["ingest"], reason="new inbox entry"))
        elif e.on_tile_grid:
            jobs.append(JobSpec("ingest", wanted[0], (e.token,),
                                {**base, "paths": [e.path], "tile": None},
                                priority=PRIORITY["ingest"], reason="new inbox product"))
        else:  # warped onto each site tile it covers: one job per tile, in parallel
            for t in wanted:
                jobs.append(JobSpec("ingest", t, (e.token,),
                                    {**base, "paths": [e.path], "tile": t},
                                    priority=PRIORITY["ingest"],
                                    reason=f"new inbox product, onto {t}"))
    for members in groups.values():
        members = sorted(members, key=lambda m: m.path)
        jobs.append(JobSpec("ingest", None, tuple(sorted(m.token for m in members)),
                            {**base, "paths": [m.path for m in members], "tile": None},
                            priority=PRIORITY["ingest"],
                            reason=f"new time series ({len(members)} file(s))"))
    return jobs
