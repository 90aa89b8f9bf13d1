"""Which reader a path needs: the reader table.

Readers are registered in :data:`READERS`, one row each (a table, not a class hierarchy): a name,
a cheap ``detect(path) -> bool`` that looks only at names and metadata files, and
the reader. Adding a format is one module and one row.

A "product" reader returns a :class:`~agriseries.io.product.SourceProduct` (one
acquisition); a "series" reader returns an agriseries ``xarray.Dataset`` with many
dates (openEO / odc-stac NetCDF and Zarr).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from ..core.errors import UnknownProductError


@dataclass(frozen=True)
class Reader:
    """One row of the reader table."""

    name: str
    kind: Literal["product", "series"]
    detect: Callable[[str], bool]
    read: Callable[..., object]
    description: str


def _table() -> list[Reader]:
    from . import landsat, muscate, safe, timeseries

    return [
        Reader("safe", "product", safe.is_safe, safe.read_safe,
               "ESA SAFE Sentinel-2 L1C / L2A (Sen2Cor)"),
        Reader("muscate", "product", muscate.is_muscate, muscate.read_muscate,
               "THEIA MUSCATE L2A (MAJA / MACCS)"),
        Reader("landsat", "product", landsat.is_landsat, landsat.read_landsat,
               "USGS Landsat 8/9 Collection 2 Level-1 / Level-2"),
        Reader("timeseries", "series", timeseries.is_timeseries, timeseries.read_timeseries,
               "Time-series NetCDF / Zarr (openEO, odc-stac layout)"),
    ]


READERS: list[Reader] = []


def readers() -> list[Reader]:
    """The reader table (built on first use, so importing agriseries stays cheap)."""
    if not READERS:
        READERS.extend(_table())
    return READERS


def find_reader(path: str | Path) -> Reader:
    """The reader for ``path``.

    Raises
    ------
    UnknownProductError
        If no reader recognises the path (the message lists the formats known).
    """
    p = str(path)
    if not Path(p).exists():
        raise UnknownProductError(p, "no such file or folder")
    for r in readers():
        if r.detect(p):
            return r
    known = "; ".join(r.description for r in readers())
    raise UnknownProductError(p, f"not a product layout agriseries knows (expected one of: {known})")
