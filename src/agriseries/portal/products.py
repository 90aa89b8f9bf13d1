"""What the portal reads from the product store: items by id, the file of an asset, the
class table of a classification COG, and how each kind of asset is drawn on the map.

Everything here is read-only and takes ids from the outside world: a product id must be an
agriseries id (:meth:`~agriseries.core.ids.ProductId.parse`) and an asset file must lie in
its product's folder, so no request can name a file outside the store.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import pystac

from ..core.errors import AgriseriesError, ConfigurationError, StoreError
from ..core.ids import Level, ProductId
from ..core.masks import INVALID, MaskBit

__all__ = ["NotInStore", "ProductFiles", "ClassEntry", "read_classes", "layers_of",
           "MASK_COLOURS", "RAMPS"]


class NotInStore(AgriseriesError, LookupError):
    """A product id, or one of its assets, that the store does not hold."""


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


class ProductFiles:
    """Items and asset files of a product store, by product id (read-only).

    Parameters
    ----------
    root
        The product store folder.
    """

    def __init__(self, root: str | Path) -> None:
        from ..io.store import ProductStore

        self.store = ProductStore(root, catalog_updates=False)
        self.root = Path(os.path.realpath(root))

    @staticmethod
    def parse_id(item_id: str) -> ProductId:
        try:
            return ProductId.parse(item_id)
        except ConfigurationError:
            raise NotInStore(f"{item_id!r} is not an agriseries product id") from None

    def item_path(self, item_id: str) -> Path:
        """The STAC item file of a product (raises :class:`NotInStore`)."""
        path = self.store.item_path(self.parse_id(item_id))
        if not path.is_file():
            raise NotInStore(f"product {item_id} is not in the store")
        return path

    def item(self, item_id: str) -> pystac.Item:
        """The STAC item of a product, hrefs absolute (raises :class:`NotInStore`)."""
        path = self.item_path(item_id)
        return _read_item(str(path), path.stat().st_mtime_ns)

    def asset_path(self, item_id: str, asset: str) -> Path:
        """The file of one asset of a product; it must be inside the product's folder."""
        item = self.item(item_id)
        if asset not in item.assets:
            raise NotInStore(f"product {item_id} has no asset {asset!r} (it has "
                             f"{', '.join(sorted(item.assets))})")
        folder = Path(os.path.realpath(self.item_path(item_id).parent))
        path = Path(os.path.realpath(item.assets[asset].get_absolute_href()))
        if folder not in path.parents or not path.is_file():
            raise NotInStore(f"asset {asset!r} of {item_id} is not a file of the product")
        return path

    def items(self, level: Level | str, tile: str | None = None, start=None, end=None):
        """The store's items of a level (and tile, dates)."""
        try:
            yield from self.store.items(level=level, tile=tile, start=start, end=end)
        except StoreError:
            return


@functools.lru_cache(maxsize=512)
def _read_item(path: str, mtime_ns: int) -> pystac.Item:
    item = pystac.Item.from_file(path)
    item.make_asset_hrefs_absolute()
    return item


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


def layers_of(item: pystac.Item) -> list[dict]:
    """How a product can be drawn on the map: a list of layers, each a dict with ``id``,
    ``title``, ``kind`` (``rgb``, ``ramp``, ``classes`` or ``maskbits``) and what the page
    needs to ask the tiler and draw the legend (``assets``, ``asset``, ``ramp``, ``range``,
    ``classes``, ``bits``)."""
    level = item.properties.get("agriseries:level") or item.id.split("_", 1)[0]
    names = _common_names(item)
    layers: list[dict] = []
    if all(c in names for c in ("red", "green", "blue")):
        layers.append({"id": "truecolour", "title": "True colour", "kind": "rgb",
                       "assets": [names["red"], names["green"], names["blue"]]})
    for key, a in item.assets.items():
        roles = _roles(a)
        if "classification" in roles and (a.media_type or "").startswith("image/tiff"):
            path = a.get_absolute_href()
            try:
                classes = read_classes(path)
            except (StoreError, OSError):
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
