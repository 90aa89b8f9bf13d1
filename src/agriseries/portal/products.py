"""What the portal reads: the published products (through the service's
:class:`~agriseries.distribution.access.Access`), the class table of a classification COG,
and how each kind of asset is drawn on the map.

A product is named by its id only. The portal never looks in the store for it: the id is
looked up in the catalogue (an unknown or unpublished product is a 404 before any file is
opened), after the same credential check as a search; a file is one asset of the published
item, checked as a download is (below the store root, no link on the way, a regular file).
"""

from __future__ import annotations

import functools
import posixpath
from dataclasses import dataclass
from pathlib import Path

import pystac

from ..core.errors import StoreError
from ..core.ids import Level
from ..core.masks import INVALID, MaskBit
from ..distribution.access import Access, NotPublished

__all__ = ["NotPublished", "Product", "Products", "ClassEntry", "read_classes", "layers_of",
           "MASK_COLOURS", "RAMPS"]


#: Colour of each common mask bit on the map (RGBA), drawn in this order (first wins).
MASK_COLOURS: dict[MaskBit, tuple[int, int, int, int]] = {
    MaskBit.CLOUD: (255, 255, 255, 220),
    MaskBit.CLOUD_SHADOW: (90, 90, 90, 200),
    MaskBit.CIRRUS: (170, 220, 255, 200),
    MaskBit.SNOW: (0, 255, 255, 220),
    MaskBit.WATER: (0, 60, 255, 220),
    MaskBit.SATURATED: (255, 0, 255, 220),
    MaskBit.TOPO_SHADOW: (120, 60, 0, 200),
    MaskBit.NODATA: (0, 0, 0, 160),
}

#: Colour ramp (a rio-tiler colour map name) and value range of the biophysical variables.
RAMPS: dict[str, tuple[str, float, float]] = {
    "LAI": ("ylgn", 0.0, 7.0),
    "FAPAR": ("ylgn", 0.0, 1.0),
    "FCOVER": ("ylgn", 0.0, 1.0),
    "CCC": ("ylgn", 0.0, 3.0),
    "CWC": ("blues", 0.0, 0.6),
}


@dataclass
class Product:
    """A published product as the portal reads it: the published item (``doc``,
    store-relative hrefs) and the same as a :class:`pystac.Item` whose local asset hrefs
    are paths below the store root (not yet checked: :meth:`Products.path` checks them)."""

    doc: dict
    item: pystac.Item

    @property
    def id(self) -> str:
        return self.item.id


class Products:
    """The published products and their files, by product id, for the portal's routes.

    Parameters
    ----------
    access
        The service's access rules (:class:`~agriseries.distribution.access.Access`).
    """

    def __init__(self, access: Access) -> None:
        self.access = access
        self.root = Path(access.root)

    def product(self, doc: dict) -> Product:
        """A published item (as the catalogue holds it) as a :class:`Product`."""
        doc = {**doc, "links": []}
        item = pystac.Item.from_dict(doc, preserve_dict=True)
        for key, a in item.assets.items():
            rel = (doc.get("assets") or {}).get(key, {}).get("href", "")
            if rel and "://" not in rel and not rel.startswith("/"):
                a.href = str(self.root / posixpath.normpath(rel))
            else:  # an external URL or a bad path: never read (path() refuses it)
                a.href = "/nonexistent/" + key
        return Product(doc, item)

    async def get(self, request, item_id: str) -> Product:
        """The published product ``item_id`` if the request may read it (401/403 without the
        right credential when search is private; 404 when not published)."""
        await self.access.reader(request)
        return self.product(await self.access.item_by_id(item_id))

    def path(self, product: Product, key: str) -> Path:
        """The checked file of asset ``key`` (404 :class:`NotPublished` otherwise)."""
        if key not in product.item.assets:
            raise NotPublished(f"product {product.id} has no asset {key!r} (it has "
                               f"{', '.join(sorted(product.item.assets))})")
        return self.access.path(product.doc, key)


@dataclass(frozen=True)
class ClassEntry:
    """One class of a classification COG: its value, name and colour (RGBA)."""

    value: int
    name: str
    rgba: tuple[int, int, int, int]


def read_classes(path: str | Path) -> list[ClassEntry]:
    """The classes of a classification COG: the rows of its thematic raster attribute table
    (the PAM ``.aux.xml`` file agriseries writes beside it), else the used entries of its
    colour table.

    Raises
    ------
    StoreError
        The file has neither a raster attribute table nor a colour table.
    """
    path = Path(path)
    return list(_classes(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=256)
def _classes(path: str, mtime_ns: int) -> tuple[ClassEntry, ...]:
    import rasterio

    aux = Path(path + ".aux.xml")
    if aux.is_file():
        from lxml import etree

        tree = etree.parse(str(aux))
        rat = tree.find(".//PAMRasterBand[@band='1']/GDALRasterAttributeTable")
        if rat is not None:
            usage = {int(f.findtext("Usage")): int(f.get("index"))
                     for f in rat.findall("FieldDefn")}
            # GDAL field usages: 5 min-max (value), 2 name, 6-9 red, green, blue, alpha
            if 5 in usage and 2 in usage:
                out = []
                for row in rat.findall("Row"):
                    cells = [c.text or "" for c in row.findall("F")]
                    rgba = tuple(int(cells[usage[u]]) if u in usage else 255
                                 for u in (6, 7, 8, 9))
                    out.append(ClassEntry(int(float(cells[usage[5]])), cells[usage[2]], rgba))
                return tuple(out)
    with rasterio.open(path) as src:
        try:
            cmap = src.colormap(1)
        except ValueError:
            raise StoreError(f"{path}: no class table (neither a raster attribute table in "
                             f"{aux.name} nor a colour table)") from None
        nodata = src.nodata
    return tuple(ClassEntry(int(v), str(v), tuple(c)) for v, c in sorted(cmap.items())
                 if v != nodata and c != (0, 0, 0, 255))


def _roles(asset: pystac.Asset) -> set[str]:
    return set(asset.roles or [])


def _common_names(item: pystac.Item) -> dict[str, str]:
    """common name (red, green, blue, nir, nir08, ...) -> asset key."""
    out: dict[str, str] = {}
    for key, a in item.assets.items():
        for b in a.extra_fields.get("eo:bands") or []:
            if b.get("common_name") and b["common_name"] not in out:
                out[b["common_name"]] = key
    return out


def layers_of(item: pystac.Item, path_of=None) -> list[dict]:
    """How a product can be drawn on the map: a list of layers, each a dict with ``id``,
    ``title``, ``kind`` (``rgb``, ``ramp``, ``classes`` or ``maskbits``) and what the page
    needs to ask the tiler and draw the legend (``assets``, ``asset``, ``ramp``, ``range``,
    ``classes``, ``bits``).

    ``path_of(key)`` gives the (checked) file of an asset, for the class tables that are
    read here; by default the asset's href."""
    level = item.properties.get("agriseries:level") or item.id.split("_", 1)[0]
    names = _common_names(item)
    layers: list[dict] = []
    if all(c in names for c in ("red", "green", "blue")):
        layers.append({"id": "truecolour", "title": "True colour", "kind": "rgb",
                       "assets": [names["red"], names["green"], names["blue"]]})
    for key, a in item.assets.items():
        roles = _roles(a)
        if "classification" in roles and (a.media_type or "").startswith("image/tiff"):
            try:
                path = path_of(key) if path_of else a.get_absolute_href()
                classes = read_classes(path)
            except (StoreError, OSError, NotPublished):
                continue
            wanted = {c["value"] for c in a.extra_fields.get("classification:classes") or []}
            layers.append({"id": key, "title": a.title or key.replace("_", " "), "kind": "classes",
                           "asset": key,
                           "classes": [{"value": c.value, "name": c.name,
                                        "colour": "#%02x%02x%02x" % c.rgba[:3]}
                                       for c in classes if not wanted or c.value in wanted]})
    if level == Level.L3B.value:
        for var, (ramp, lo, hi) in RAMPS.items():
            if var in item.assets:
                layers.append({"id": var, "title": var, "kind": "ramp", "asset": var,
                               "ramp": ramp, "range": [lo, hi], "colours": ramp_stops(ramp)})
    if "mask" in item.assets:
        layers.append({"id": "mask", "title": "Mask bits", "kind": "maskbits", "asset": "mask",
                       "bits": [{"name": b.name.lower(), "value": int(b),
                                 "colour": "#%02x%02x%02x" % MASK_COLOURS[b][:3],
                                 "default": bool(b & INVALID) and b != MaskBit.NODATA}
                                for b in MASK_COLOURS]})
    return layers


@functools.lru_cache(maxsize=16)
def ramp_stops(name: str, n: int = 11) -> list[str]:
    """``n`` colours (``#rrggbb``) evenly spaced along a rio-tiler colour map (legends)."""
    from rio_tiler.colormap import cmap

    table = cmap.get(name)
    return ["#%02x%02x%02x" % tuple(table[round(i * 255 / (n - 1))][:3]) for i in range(n)]
