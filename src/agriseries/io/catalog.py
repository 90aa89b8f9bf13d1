"""The STAC catalogue of a product store: a catalogue per folder and per month (docs/formats.md
"STAC").

::

    STORE/catalog.json                       root Catalog: one child per level
    STORE/L2A/collection.json                Collection of the level: extents, summaries,
                                             item_assets, providers, licence; one child per tile
    STORE/L2A/T31UDS/catalog.json            Catalog of a tile: one child per year
    STORE/L2A/T31UDS/2018/catalog.json       Catalog of a tile-year: one child per month
    STORE/L2A/T31UDS/2018/catalog-07.json    Catalog of a tile-month: the links to the items
                                             whose period starts in that month
    STORE/L2A/T31UDS/2018/<id>/<id>.json     the Item: collection, root, parent, collection links

Every link is relative, so the store can be moved, copied or served as it is (a
self-contained catalogue in pystac's words: no ``self`` links on disk, pystac sets them from
where it reads a file). No file lists more than one tile-month of items (a dozen or so with
four satellites), so the catalogue grows by files, not by ever longer link lists. :func:`item_links` gives the links a product's item
is written with; :func:`write_catalog` writes the catalogues and collections from the items.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import pystac

from ..core.errors import StoreError
from ..core.ids import Level, ProductId
from ..core.stac import stac_schema_errors

JSON = "application/json"
EO_EXTENSION = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
RASTER_EXTENSION = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"

#: Who made the data the products are made from, by constellation.
_PROVIDERS = {
    "sentinel-2": {"name": "European Space Agency (Copernicus Sentinel-2)",
                   "roles": ["producer", "licensor"],
                   "url": "https://sentinels.copernicus.eu/web/sentinel/missions/sentinel-2"},
    "landsat": {"name": "U.S. Geological Survey (Landsat 8/9 Collection 2)",
                "roles": ["producer", "licensor"], "url": "https://www.usgs.gov/landsat-missions"},
}
_AGRISERIES = {"name": "agriseries", "roles": ["processor"],
               "description": "open production system for Sentinel-2 / Landsat time series over "
                              "farmland (COG + STAC)"}
#: Terms of the input data, by constellation (the products are derived from them).
_LICENCES = {
    "sentinel-2": {"rel": "license", "type": "application/pdf",
                   "title": "Legal notice on the use of Copernicus Sentinel data",
                   "href": "https://sentinels.copernicus.eu/documents/247904/690755/"
                           "Sentinel_Data_Legal_Notice"},
    "landsat": {"rel": "license", "type": "text/html",
                "title": "USGS: Landsat data are in the public domain (data citation)",
                "href": "https://www.usgs.gov/centers/eros/data-citation"},
}
#: Item properties summarised in a collection: as a list of the values met, or as a range.
_SUMMARY_LISTS = ("platform", "constellation", "instruments", "proj:code", "agriseries:sensors",
                  "agriseries:producer", "agriseries:tile", "processing:level")
_SUMMARY_RANGES = ("eo:cloud_cover", "eo:snow_cover", "view:sun_elevation")


def collection_id(level: Level | str) -> str:
    """The id of a level's collection (``agriseries-l2a``)."""
    return f"agriseries-{Level(level).value.lower()}"


def item_links(pid: ProductId) -> list[pystac.Link]:
    """The links of a product's item, relative to the item file
    (``STORE/<level>/<tile>/<year>/<id>/<id>.json``)."""
    return [
        pystac.Link("root", "../../../../catalog.json", JSON, "agriseries product store"),
        pystac.Link("parent", f"../catalog-{pid.start.month:02d}.json", JSON,
                    f"{pid.level.value} {pid.tile} {pid.year}-{pid.start.month:02d}"),
        pystac.Link("collection", "../../../collection.json", JSON,
                    f"agriseries {pid.level.value}"),
    ]


def listed_item_ids(path: Path) -> set[str]:
    """The ids of the items a collection or catalogue file lists, through its child
    catalogues (``OSError`` / ``ValueError`` when one of them cannot be read)."""
    doc = json.loads(Path(path).read_text())
    out = set()
    for link in doc.get("links", []):
        if link.get("rel") == "item":
            out.add(Path(link["href"]).stem)
        elif link.get("rel") == "child":
            out |= listed_item_ids(Path(path).parent / link["href"])
    return out


def write_catalog(root: Path, title: str, items_of: Callable[[str], list[pystac.Item]],
                  write_json: Callable[[Path, dict], None]) -> Path:
    """(Re)write the root catalogue, the level collections and the tile / year / month
    catalogues of a store from its items; every document is checked against the STAC core
    schema and the schema of every extension it declares before it is written."""
    root.mkdir(parents=True, exist_ok=True)
    levels = sorted(p.name for p in root.iterdir()
                    if p.is_dir() and p.name in {lv.value for lv in Level})
    cat = root_catalog(title)
    for lv in levels:
        items = items_of(lv)
        if not items:
            continue
        _write_level(root, lv, items, write_json)
        cat["links"].append({"rel": "child", "href": f"./{lv}/collection.json", "type": JSON,
                             "title": f"{lv}: {Level(lv).description}"})
    path = root / "catalog.json"
    _checked_write(path, cat, write_json)
    return path


def root_catalog(title: str) -> dict[str, Any]:
    """The root catalogue of a store, without children."""
    return _catalog("agriseries", title, "Products of an agriseries store, one collection per level",
                    root_href="./catalog.json", parent_href=None)


def _write_level(root: Path, level: str, items: list[pystac.Item], write_json) -> None:
    by_tile: dict[str, dict[int, dict[int, list[pystac.Item]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for it in items:
        pid = ProductId.parse(it.id)
        by_tile[pid.tile][pid.year][pid.start.month].append(it)
    col_dir = root / level
    col = _collection(level, items)
    for tile in sorted(by_tile):
        years = by_tile[tile]
        tcat = _catalog(f"{collection_id(level)}-{tile.lower()}", f"{level} {tile}",
                        f"{level} products of tile {tile}: one catalogue per year",
                        root_href="../../catalog.json", parent_href="../collection.json",
                        parent_title=f"agriseries {level}")
        for year in sorted(years):
            ydir = col_dir / tile / f"{year:04d}"
            ycat = _catalog(f"{collection_id(level)}-{tile.lower()}-{year}",
                            f"{level} {tile} {year}",
                            f"{level} products of tile {tile} in {year}: one catalogue per month",
                            root_href="../../../catalog.json", parent_href="../catalog.json",
                            parent_title=f"{level} {tile}")
            written = set()
            for month in sorted(years[year]):
                name = f"catalog-{month:02d}.json"
                mcat = _catalog(f"{collection_id(level)}-{tile.lower()}-{year}-{month:02d}",
                                f"{level} {tile} {year}-{month:02d}",
                                f"{level} products of tile {tile} starting in {year}-{month:02d}",
                                root_href="../../../catalog.json", parent_href="./catalog.json",
                                parent_title=f"{level} {tile} {year}")
                for it in sorted(years[year][month], key=lambda i: i.id):
                    mcat["links"].append({"rel": "item", "href": f"./{it.id}/{it.id}.json",
                                          "type": "application/geo+json", "title": it.id})
                _checked_write(ydir / name, mcat, write_json)
                written.add(name)
                ycat["links"].append({"rel": "child", "href": f"./{name}", "type": JSON,
                                      "title": f"{level} {tile} {year}-{month:02d}"})
            _checked_write(ydir / "catalog.json", ycat, write_json)
            for stale in ydir.glob("catalog-[0-9][0-9].json"):
                if stale.name not in written:  # a month whose products were all removed
                    stale.unlink(missing_ok=True)
            tcat["links"].append({"rel": "child", "href": f"./{year:04d}/catalog.json",
                                  "type": JSON, "title": f"{level} {tile} {year}"})
        _checked_write(col_dir / tile / "catalog.json", tcat, write_json)
        col["links"].append({"rel": "child", "href": f"./{tile}/catalog.json", "type": JSON,
                             "title": f"{level} {tile}"})
    _checked_write(col_dir / "collection.json", col, write_json)


def _catalog(cid: str, title: str, description: str, *, root_href: str,
             parent_href: str | None, parent_title: str | None = None) -> dict[str, Any]:
    links = [{"rel": "root", "href": root_href, "type": JSON, "title": "agriseries product store"}]
    if parent_href:
        links.append({"rel": "parent", "href": parent_href, "type": JSON, "title": parent_title})
    return {"type": "Catalog", "stac_version": pystac.get_stac_version(), "id": cid,
            "title": title, "description": description, "links": links}


def _collection(level: str, items: list[pystac.Item]) -> dict[str, Any]:
    bboxes = [it.bbox for it in items]
    times = []
    for it in items:
        p = it.properties
        times.append(pystac.utils.str_to_datetime(p.get("start_datetime") or p["datetime"]))
        times.append(pystac.utils.str_to_datetime(p.get("end_datetime") or p["datetime"]))
    constellations = sorted({c for it in items for c in _constellations(it)})
    summaries = _summaries(items)
    item_assets, extensions = _item_assets(items)
    links = [{"rel": "root", "href": "../catalog.json", "type": JSON,
              "title": "agriseries product store"},
             {"rel": "parent", "href": "../catalog.json", "type": JSON,
              "title": "agriseries product store"}]
    links += [_LICENCES[c] for c in constellations if c in _LICENCES]
    col: dict[str, Any] = {
        "type": "Collection", "stac_version": pystac.get_stac_version(),
        "stac_extensions": extensions,
        "id": collection_id(level), "title": f"agriseries {level}: {Level(level).description}",
        "description": f"{Level(level).description}, made by agriseries on the Sentinel-2 tile "
                       "grid; one item per product, one COG per band or layer "
                       "(see the project's docs/formats.md).",
        "keywords": ["agriculture", "time series", level] + constellations,
        "license": "other",
        "providers": [_PROVIDERS[c] for c in constellations if c in _PROVIDERS] + [_AGRISERIES],
        "extent": {
            "spatial": {"bbox": [[min(b[0] for b in bboxes), min(b[1] for b in bboxes),
                                  max(b[2] for b in bboxes), max(b[3] for b in bboxes)]]},
            "temporal": {"interval": [[pystac.utils.datetime_to_str(min(times)),
                                       pystac.utils.datetime_to_str(max(times))]]},
        },
        "summaries": summaries,
        "item_assets": item_assets,
        "links": links,
    }
    if not col["stac_extensions"]:
        del col["stac_extensions"]
    return col


def _constellations(item: pystac.Item) -> list[str]:
    sensors = item.properties.get("agriseries:sensors") or []
    out = set()
    for s in sensors:
        if s.startswith("S2"):
            out.add("sentinel-2")
        elif s.startswith("L"):
            out.add("landsat")
    return sorted(out)


def _summaries(items: list[pystac.Item]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _SUMMARY_LISTS:
        vals = set()
        for it in items:
            v = it.properties.get(key)
            for x in (v if isinstance(v, list) else [v]):
                if x is not None:
                    vals.add(x)
        if vals:
            out[key] = sorted(vals)
    for key in _SUMMARY_RANGES:
        vals = [it.properties[key] for it in items if it.properties.get(key) is not None]
        if vals:
            out[key] = {"minimum": min(vals), "maximum": max(vals)}
    gsd = sorted({rb["spatial_resolution"] for it in items for a in it.assets.values()
                  for rb in a.extra_fields.get("raster:bands") or [] if "spatial_resolution" in rb})
    if gsd:
        out["gsd"] = gsd
    return out


_ASSET_FIELDS = ("title", "type", "roles", "eo:bands", "raster:bands")


def _item_assets(items: list[pystac.Item]) -> tuple[dict[str, Any], list[str]]:
    """What the assets of the collection's items are, by key: the fields every item that has
    the asset agrees on (a key that means different things for different sensors, such as
    ``B10``, keeps only the fields they share)."""
    seen: dict[str, dict[str, Any]] = {}
    for it in items:
        for key, a in it.assets.items():
            d = a.to_dict()
            desc = {f: d[f] for f in _ASSET_FIELDS if f in d}
            if "raster:bands" in desc:  # the resolution may vary between products
                desc["raster:bands"] = [{k: v for k, v in b.items() if k != "spatial_resolution"}
                                        for b in desc["raster:bands"]]
            if key not in seen:
                seen[key] = desc
            else:
                prev = seen[key]
                seen[key] = {f: v for f, v in prev.items()
                             if json.dumps(desc.get(f), sort_keys=True)
                             == json.dumps(v, sort_keys=True)}
    out = {}
    for key, desc in sorted(seen.items()):
        desc.setdefault("title", key)
        if len(desc) < 2:  # core schema: at least two fields
            desc["description"] = f"{key}: see the item (it differs between products)"
        out[key] = desc
    ext = []
    if any("eo:bands" in d for d in out.values()):
        ext.append(EO_EXTENSION)
    if any("raster:bands" in d for d in out.values()):
        ext.append(RASTER_EXTENSION)
    return out, ext


def _checked_write(path: Path, doc: dict, write_json) -> None:
    errors = stac_schema_errors(json.loads(json.dumps(doc)))
    if errors:
        raise StoreError(f"{path}: the {doc['type']} is not valid STAC: " + "; ".join(errors[:5]))
    write_json(path, doc)
