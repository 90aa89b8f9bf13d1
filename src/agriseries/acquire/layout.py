"""What a fetched acquisition looks like in the inbox: the provider's own product layout, so
the existing readers (:mod:`agriseries.io.safe`, :mod:`agriseries.io.landsat`) read it.

* Sentinel-2 from a COG provider (Earth Search, Planetary Computer): a ``.SAFE`` folder
  holding the product's real ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` and ``MTD_TL.xml``
  (fetched whole: offsets, quantification, sun and viewing angle grids) and each band at
  the path the product metadata lists (``GRANULE/<granule>/IMG_DATA/R20m/..._B05_20m.tif``),
  cut to the site's window. The SAFE reader clips the footprint to the band files' extent,
  so ingest writes just the site's part of the tile.
* Landsat from a COG provider (Earth Search, Planetary Computer, USGS): a folder named by
  the Landsat product id with the MTL files (whole) and the band files (``*_SR_B4.TIF``...,
  windowed) under their USGS names.
* A whole-product archive (CDSE, GEODES): the archive file as the provider names it.

Each folder gets ``agriseries-acquisition.json`` (the acquisition id, provider, item id and
every file with its size) written last, just before the folder is renamed into the inbox:
a folder with a matching manifest is a complete, verified acquisition.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

from ..core.errors import CorruptProductError, MissingBandError

__all__ = ["MANIFEST", "PlannedFile", "landsat_files", "manifest_ok", "s2_band_files",
           "write_manifest"]

MANIFEST = "agriseries-acquisition.json"

#: Landsat files a product folder needs for the Landsat reader (USGS names).
LANDSAT_LAYERS = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "ST_B10",
                  "QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL", "B1", "B2", "B3", "B4", "B5", "B6",
                  "B7", "B8", "B9", "B10", "B11", "QA_PIXEL")
_LS_FILE_RE = re.compile(r"_(SR_B\d|ST_B10|QA_PIXEL|QA_RADSAT|SR_QA_AEROSOL|B\d{1,2})\.TIF$",
                         re.IGNORECASE)


@dataclass(frozen=True)
class PlannedFile:
    """One file of an inbox entry: where it comes from and where it goes."""

    rel: str
    """Path inside the entry folder."""
    href: str
    """The provider's URL (unsigned)."""
    windowed: bool
    """Cut to the site's area (a COG band) or fetched whole (metadata, archives)."""
    size: int | None = None
    """``file:size`` from the item, when given."""
    checksum: str | None = None
    """``file:checksum`` multihash from the item, when given (whole files only)."""


def basename(href: str) -> str:
    """The file name of a URL, without its query string."""
    return Path(urlsplit(href).path).name


def s2_band_files(mtd_xml: bytes, source: str, bands: dict[str, tuple[str, int | None]]
                  ) -> tuple[str, dict[str, str]]:
    """Where each band goes in a SAFE folder, from the product metadata's IMAGE_FILE list.

    Parameters
    ----------
    mtd_xml
        The ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` document.
    source
        Its URL, for error messages.
    bands
        ESA band name -> (asset href, the band file's resolution in m or ``None``).

    Returns
    -------
    (granule folder, {band: path inside the SAFE folder})
    """
    try:
        root = etree.fromstring(mtd_xml, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as e:
        raise CorruptProductError(source, f"product metadata is not XML: {e}") from None
    listed: dict[tuple[str, int | None], str] = {}
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith("IMAGE_FILE") and el.text:
            rel = el.text.strip()
            m = re.search(r"_(B\d[\dA]|SCL|AOT|WVP|TCI)(?:_(\d{2})m)?$", rel)
            if m:
                listed[(m.group(1), int(m.group(2)) if m.group(2) else None)] = rel
    if not listed:
        raise CorruptProductError(source, "no IMAGE_FILE entries in the product metadata")
    granule = next(iter(listed.values())).split("/")[1]
    out = {}
    for band, (_href, res) in bands.items():
        rel = listed.get((band, res)) or listed.get((band, None))
        if rel is None:
            rel = next((r for (b, _), r in sorted(listed.items(), key=lambda kv: kv[0][1] or 0)
                        if b == band), None)
        if rel is None:
            raise MissingBandError(source, f"band {band} is not listed in the product metadata")
        out[band] = rel + ".tif"
    return granule, out


def landsat_files(assets: dict[str, dict]) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """The Landsat product id, the (file name, href) of its MTL files and of its layers."""
    mtl, layers = [], []
    for a in assets.values():
        href = a["href"]
        name = basename(href)
        if re.search(r"_MTL\.(txt|xml|json)$", name, re.IGNORECASE):
            mtl.append((name, href))
        elif _LS_FILE_RE.search(name):
            layers.append((name, href))
    if not mtl:
        raise MissingBandError(next(iter(assets.values()))["href"] if assets else "item",
                               "the item has no MTL asset: the Landsat reader needs it")
    pid = re.sub(r"_MTL\.(txt|xml|json)$", "", mtl[0][0], flags=re.IGNORECASE)
    return pid, sorted(set(mtl)), sorted(set(layers))


def write_manifest(folder: Path, acquisition: dict) -> None:
    """Write the manifest (last step before the rename into the inbox)."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = p.stat().st_size
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({**acquisition, "files": files}, indent=1, sort_keys=True))
    os.replace(tmp, folder / MANIFEST)


def manifest_ok(folder: Path) -> bool:
    """True when ``folder`` holds a manifest and every file it lists, with its size."""
    m = folder / MANIFEST
    try:
        doc = json.loads(m.read_text())
        return all((folder / rel).stat().st_size == size for rel, size in doc["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False
