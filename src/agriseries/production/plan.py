"""What the scheduler plans with and produces, as pure values: the in-memory
:class:`Catalogue` of the products that exist, the :class:`JobSpec` of a job due, a
:class:`Waiting` product, the :class:`Schedule` of one pass, the :class:`InboxEntry` of an
inbox file, and the date helpers the stages' ``plan`` functions share.

Nothing here reads a file, the clock or a database (and nothing imports numba, dask or
the product store): the stages' ``plan`` functions are built on it.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.ids import Level, ProductId
from .records import ProductRecord, job_key

__all__ = ["Catalogue", "InboxEntry", "JobSpec", "Schedule", "Waiting", "aware", "day_end",
           "day_start", "family_ok"]

UTC = dt.UTC


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
        hi = len(recs) if end is None else bisect.bisect_right(starts, aware(end))
        lo = 0 if start is None else bisect.bisect_left(starts, aware(start) - longest)
        s = None if start is None else aware(start)
        return [r for r in recs[lo:hi] if s is None or r.end >= s]


def aware(d: dt.datetime | dt.date) -> dt.datetime:
    """A date or datetime as a timezone-aware UTC datetime (naive ones are UTC)."""
    if not isinstance(d, dt.datetime):
        d = dt.datetime(d.year, d.month, d.day)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def day_start(d: dt.date) -> dt.datetime:
    """Midnight UTC at the start of a day."""
    return dt.datetime(d.year, d.month, d.day, tzinfo=UTC)


def day_end(d: dt.date) -> dt.datetime:
    """The last microsecond of a day (UTC)."""
    return day_start(d) + dt.timedelta(days=1) - dt.timedelta(microseconds=1)


def family_ok(product_id: str, sensors: Sequence[str] | None) -> bool:
    """Whether a product's sensor is one of ``sensors`` (a sensor or family: ``S2``,
    ``L8``); any sensor when ``sensors`` is empty."""
    if not sensors:
        return True
    sensor = ProductId.parse(product_id).sensor
    return any(sensor == s or sensor.startswith(s) for s in sensors)



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
    acquired
        Fetched by an ``acquire`` job (only the bands the site's products read: it is
        ingested with the bands it has).
    """

    path: str
    token: str
    kind: str
    tiles: tuple[str, ...] = ()
    on_tile_grid: bool = False
    group: str | None = None
    error: str | None = None
    acquired: bool = False


