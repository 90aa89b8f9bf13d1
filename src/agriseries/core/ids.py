"""Product levels and product ids.

Every product in the store has an id that says what it is, readable by people and
sortable by tile and date (FORCE-style file naming):

* an acquisition: ``{level}_{sensor}_{tile}_{YYYYMMDDTHHMMSS}_{producer}``,
  e.g. ``L2A_S2A_T29UNU_20221005T115411_SEN2COR``;
* a period product: ``{level}_{sensors}_{tile}_{YYYYMMDD}-{YYYYMMDD}_{producer}``,
  e.g. ``L3A_S2L8_T31UDS_20180701-20180731_AGS``.

``producer`` says who made the level (``SEN2COR``, ``MAJA``, ``LASRC``, ``ESA`` for
L1C, ``USGS`` for Landsat L1, ``AGS`` for agriseries itself), so that the same
acquisition processed by two chains gets two ids. The product codes follow
Sen2Agri (L2A surface reflectance, L3A composite, L3B biophysical, L4A crop mask,
L4B crop type) so that its users recognise them.

The ids of the products agriseries makes are derived here and nowhere else, so that the
scheduler (which predicts them), the stages (which write them), the CLI and the store agree:
:func:`l2a_id` (from an L1C), :func:`l3a_id` (tile and month), :func:`l3b_id` (from an
L2A), :func:`crop_id` (crop mask / crop type of a season up to a date, with
:func:`crop_season`).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass

from .errors import ConfigurationError


class Level(str, enum.Enum):
    """Product levels, with Sen2Agri's codes."""

    L1C = "L1C"  #: top-of-atmosphere reflectance (input)
    L2A = "L2A"  #: surface reflectance with cloud/shadow/snow/water mask
    L3A = "L3A"  #: monthly cloud-free synthesis
    L3B = "L3B"  #: LAI, FAPAR, FCOVER and other biophysical variables
    L4A = "L4A"  #: crop mask
    L4B = "L4B"  #: crop type map

    @property
    def description(self) -> str:
        """One line saying what the level holds."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Level.L1C: "Top-of-atmosphere reflectance (Sentinel-2 L1C, Landsat C2 L1)",
    Level.L2A: "Surface reflectance with cloud, shadow, snow and water mask",
    Level.L3A: "Monthly cloud-free surface reflectance synthesis (weighted average)",
    Level.L3B: "Biophysical variables: LAI, FAPAR, FCOVER, canopy chlorophyll and water",
    Level.L4A: "Crop mask",
    Level.L4B: "Crop type map",
}

_PRODUCER_RE = re.compile(r"^[A-Z0-9]{2,12}$")
_ID_RE = re.compile(
    r"^(?P<level>L1C|L2A|L3A|L3B|L4A|L4B)_(?P<sensor>[A-Z0-9]+)_(?P<tile>T\d{2}[A-Z]{3})_"
    r"(?:(?P<stamp>\d{8}T\d{6})|(?P<start>\d{8})-(?P<end>\d{8}))_(?P<producer>[A-Z0-9]+)$"
)


@dataclass(frozen=True, order=True)
class ProductId:
    """The parts of a product id (see the module docstring).

    Attributes
    ----------
    level
        A :class:`Level`.
    sensor
        ``S2A``, ``L8``... or a combination for multi-sensor products (``S2L8``).
    tile
        Sentinel-2 tile id, ``T31UDS``.
    start
        Acquisition time (UTC), or the first day of the period.
    producer
        Who made the level.
    end
        Last day of the period for period products; ``None`` for acquisitions.
    """

    level: Level
    sensor: str
    tile: str
    start: dt.datetime
    producer: str
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", Level(self.level))
        if not _PRODUCER_RE.match(self.producer):
            raise ConfigurationError(
                f"producer {self.producer!r}: expected 2-12 upper-case letters or digits"
            )
        if not re.match(r"^T\d{2}[A-Z]{3}$", self.tile):
            raise ConfigurationError(f"tile {self.tile!r}: expected e.g. 'T31UDS'")
        if not re.match(r"^[A-Z0-9]+$", self.sensor):
            raise ConfigurationError(f"sensor {self.sensor!r}: expected e.g. 'S2A' or 'L8'")

    def __str__(self) -> str:
        if self.end is None:
            when = self.start.strftime("%Y%m%dT%H%M%S")
        else:
            when = f"{self.start:%Y%m%d}-{self.end:%Y%m%d}"
        return f"{self.level.value}_{self.sensor}_{self.tile}_{when}_{self.producer}"

    @classmethod
    def parse(cls, text: str) -> "ProductId":
        """Parse a product id written by :meth:`__str__`.

        Raises
        ------
        ConfigurationError
            If the text is not an agriseries product id.
        """
        m = _ID_RE.match(text)
        if not m:
            raise ConfigurationError(
                f"{text!r} is not an agriseries product id: expected "
                "LEVEL_SENSOR_TILE_YYYYMMDDTHHMMSS_PRODUCER or LEVEL_SENSOR_TILE_YYYYMMDD-YYYYMMDD_PRODUCER"
            )
        utc = dt.timezone.utc
        if m["stamp"]:
            start = dt.datetime.strptime(m["stamp"], "%Y%m%dT%H%M%S").replace(tzinfo=utc)
            end = None
        else:
            start = dt.datetime.strptime(m["start"], "%Y%m%d").replace(tzinfo=utc)
            end = dt.datetime.strptime(m["end"], "%Y%m%d").replace(tzinfo=utc)
        return cls(Level(m["level"]), m["sensor"], m["tile"], start, m["producer"], end)

    @property
    def year(self) -> int:
        """The year of the (start) date, used in the store's folder layout."""
        return self.start.year


def sensor_code(sensors) -> str:
    """The sensor part of a multi-sensor product id: ``S2`` for any Sentinel-2, then the
    Landsat missions (``S2``, ``S2L8``, ``L8L9``...)."""
    fams = {"S2" if s.startswith("S2") else s for s in sensors}
    return "".join(sorted(fams, key=lambda f: (not f.startswith("S2"), f)))


AGS = "AGS"
"""The producer code of the products agriseries makes."""


def _as_id(pid: ProductId | str) -> ProductId:
    return pid if isinstance(pid, ProductId) else ProductId.parse(str(pid))


def _utc_day(d: dt.date | dt.datetime | str) -> dt.datetime:
    """Midnight UTC of a date (a datetime keeps its day, in UTC; ISO text is parsed)."""
    if isinstance(d, str):
        d = dt.datetime.fromisoformat(d)
    if isinstance(d, dt.datetime):
        d = (d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
        d = d.date()
    return dt.datetime.combine(d, dt.time(), dt.timezone.utc)


def l2a_id(l1c: ProductId | str, tile: str | None = None) -> ProductId:
    """The id of the agriseries L2A product made from an L1C product (same sensor and
    acquisition time; on ``tile``, default the L1C's)."""
    src = _as_id(l1c)
    return ProductId(Level.L2A, src.sensor, tile or src.tile, src.start, AGS)


def l3a_id(tile: str, start: dt.date, end: dt.date, sensors) -> ProductId:
    """The id of the L3A synthesis of a tile and period made from products of ``sensors``
    (``S2A``, ``L8``...: the sensor part is :func:`sensor_code` of them)."""
    return ProductId(Level.L3A, sensor_code(sensors), tile, _utc_day(start), AGS, _utc_day(end))


def l3b_id(l2a: ProductId | str) -> ProductId:
    """The id of the L3B product made from an L2A product (same sensor, tile and time).

    Raises
    ------
    ConfigurationError
        The input is not an L2A product.
    """
    src = _as_id(l2a)
    if src.level is not Level.L2A:
        raise ConfigurationError(f"{src}: the L3B processor takes L2A products")
    return ProductId(Level.L3B, src.sensor, src.tile, src.start, AGS)


def crop_season(season_start, season_end, until=None
                ) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """First day, last day and map date (midnight UTC) of an in-season crop map: ``until``
    (default the season end).

    Dates, datetimes (naive ones are UTC) or ISO strings.

    Raises
    ------
    ConfigurationError
        The season ends before it starts, or ``until`` is not after the season start, or
        after its end (a map "until" a day past the season would be the season's map under
        another name).
    """
    def full(d) -> dt.datetime:
        if isinstance(d, str):
            d = dt.datetime.fromisoformat(d)
        elif isinstance(d, dt.date) and not isinstance(d, dt.datetime):
            d = dt.datetime.combine(d, dt.time())
        return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)

    start, end = full(season_start), full(season_end)
    if end <= start:
        raise ConfigurationError(f"season end {end:%Y-%m-%d} is not after its start {start:%Y-%m-%d}")
    last = end if until is None else full(until)
    if last.date() > end.date():
        raise ConfigurationError(f"until {last:%Y-%m-%d} is after the season end {end:%Y-%m-%d}: "
                                 "expected a date within the season (or none: the season end)")
    if last <= start:
        raise ConfigurationError(f"until {last:%Y-%m-%d} is not after the season start {start:%Y-%m-%d}")
    day = lambda d: dt.datetime.combine(d.date(), dt.time(), dt.timezone.utc)  # noqa: E731
    return day(start), day(end), day(last)


def crop_id(level: Level | str, tile: str, season_start, season_end, until=None) -> ProductId:
    """The id of the crop mask (L4A) or crop type map (L4B) of a tile for a season up to
    ``until`` (see :func:`crop_season`): ``L4A_S2_<tile>_<season start>-<map date>_AGS``."""
    start, _, last = crop_season(season_start, season_end, until)
    return ProductId(Level(level), "S2", tile, start, AGS, last)
