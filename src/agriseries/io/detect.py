"""Which reader a path needs: the reader table.

Readers are registered in :data:`READERS`, one row each (a table, not a class hierarchy): a name,
a cheap ``detect(path) -> bool`` that looks only at names and metadata files, a
``diagnose(path)`` that explains what is wrong with a path that looks like the format
but is not a readable product of it (an incomplete SAFE, a Landsat 7 scene), and the
reader. Adding a format is one module and one row.

Every reader has the same signature, :class:`ReadFunction`: ``read(path, *,
allow_missing_bands=False, stack_bands=None)`` plus keyword options of its own with
defaults, so a caller that only knows the table (the CLI, ingest, the production inbox)
calls any reader the same way.

A "product" reader returns a :class:`~agriseries.io.product.SourceProduct` (one
acquisition); a "series" reader returns an agriseries ``xarray.Dataset`` with many
dates (openEO / odc-stac NetCDF and Zarr).

:func:`find_reader` raises one :class:`~agriseries.core.errors.InputProductError` per
kind of bad input, naming the path, what was recognised and what was expected: a
truncated zip, an incomplete or unsupported product of a known format, a product of
another mission (Sentinel-1, Sentinel-3 ...), or a path that is none of these.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence

from ..core.errors import InputProductError, UnknownProductError
from .files import looks_like_zip, zip_members


class ReadFunction(Protocol):
    """The signature every reader of the table has (readers add keyword options with defaults).

    Parameters
    ----------
    path
        The product (folder, archive, metadata file) or series file.
    allow_missing_bands
        Leave out the bands whose file is not on disk instead of refusing the product
        (listed in ``metadata["missing_bands"]``); a series has nothing to leave out.
    stack_bands
        The band names, in file order, of a product stored as one multi-band stack whose
        metadata does not say which bands it holds (MUSCATE ``*_STACK.tif``); a
        :class:`~agriseries.core.errors.ConfigurationError` for formats with one file
        per band.
    """

    def __call__(self, path: str | os.PathLike, *, allow_missing_bands: bool = False,
                 stack_bands: Sequence[str] | None = None) -> object: ...


@dataclass(frozen=True)
class Reader:
    """One row of the reader table."""

    name: str
    kind: Literal["product", "series"]
    detect: Callable[[str], bool]
    read: ReadFunction
    description: str
    #: For a path ``detect`` turns down: the error explaining why, if it looks like this format.
    diagnose: Callable[[str], InputProductError | None] = lambda path: None


def _table() -> list[Reader]:
    from . import landsat, muscate, safe, timeseries

    return [
        Reader("safe", "product", safe.is_safe, safe.read_safe,
               "ESA SAFE Sentinel-2 L1C / L2A (Sen2Cor)", safe.diagnose),
        Reader("muscate", "product", muscate.is_muscate, muscate.read_muscate,
               "THEIA MUSCATE L2A (MAJA / MACCS)", muscate.diagnose),
        Reader("landsat", "product", landsat.is_landsat, landsat.read_landsat,
               "USGS Landsat 8/9 Collection 2 Level-1 / Level-2", landsat.diagnose),
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
    CorruptProductError
        A truncated or unreadable zip archive (before any reader looks into it).
    UnknownProductError
        No reader recognises the path: the message says what the path looks like (an
        incomplete product of a known format, Landsat 4-7, a product of another mission)
        when it can tell, else lists the formats known. Other
        :class:`~agriseries.core.errors.InputProductError` subclasses come from a
        reader's own diagnosis (a corrupt Landsat MTL).
    """
    p = str(path)
    if not Path(p).exists():
        raise UnknownProductError(p, "no such file or folder")
    if looks_like_zip(p):
        zip_members(p)  # a truncated archive is said so here, not "unknown layout"
    for r in readers():
        if r.detect(p):
            return r
    for r in readers():
        problem = r.diagnose(p)
        if problem is not None:
            raise problem
    other = other_mission(p)
    known = "; ".join(r.description for r in readers())
    if other is not None:
        raise UnknownProductError(p, f"{other}, not a product agriseries reads (it reads: "
                                     f"{known})")
    raise UnknownProductError(p, f"not a product layout agriseries knows (expected one of: {known})")


# --------------------------------------------------------------------------------------
# products of other missions: said by name, so the user knows it is not a damaged product

#: Product name patterns of missions agriseries does not read -> what they are.
OTHER_MISSIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^S1[ABCD]_", re.I), "a Sentinel-1 SAR product"),
    (re.compile(r"^S2[ABC]_OPER_PRD_", re.I), "a pre-2016 multi-granule Sentinel-2 SAFE"),
    (re.compile(r"^S3[ABC]_", re.I), "a Sentinel-3 product"),
    (re.compile(r"^S5P_", re.I), "a Sentinel-5P product"),
    (re.compile(r"^(MOD|MYD|MCD)\d{2}[A-Z0-9]*\.A\d{7}", re.I), "a MODIS product"),
    (re.compile(r"^VNP\d{2}", re.I), "a VIIRS product"),
    (re.compile(r"^HLS\.[LS]30\.", re.I), "a NASA HLS (Harmonized Landsat Sentinel-2) granule"),
    (re.compile(r"^(DIM_|IMG_)?(SPOT|PHR|PNEO)", re.I), "a SPOT / Pleiades product (DIMAP)"),
    (re.compile(r"^\d{8}_\d{6}(_\d{2})?_[0-9a-f]{4}", re.I), "a PlanetScope scene"),
)
#: XFDU manifest family names (``manifest.safe``, ``xfdumanifest.xml``) -> mission.
_FAMILY_RE = re.compile(rb"<(?:\w+:)?familyName(?:\s[^>]*)?>\s*([A-Z0-9 -]+?)\s*<", re.I)


def other_mission(path: str | Path) -> str | None:
    """What a path is when it is a product of another mission (``"a Sentinel-1 SAR product
    (manifest.safe: SENTINEL-1)"``), from its name or its SAFE / XFDU manifest; else None.

    Reads at most the first 64 KiB of a manifest; never raises.
    """
    p = Path(path)
    name = p.name
    what = next((w for rx, w in OTHER_MISSIONS if rx.match(name)), None)
    family = None
    try:
        if p.is_dir():
            for manifest in ("manifest.safe", "xfdumanifest.xml"):
                if (p / manifest).is_file():
                    with open(p / manifest, "rb") as f:
                        m = _FAMILY_RE.search(f.read(65536))
                    if m:
                        family = (manifest, m.group(1).decode("ascii", "replace").strip())
                    break
    except OSError:
        pass
    if family is not None and "SENTINEL-2" not in family[1].upper():  # S2: safe.diagnose
        return f"{what or f'a {family[1].title()} product'} ({family[0]}: {family[1]})"
    return what
