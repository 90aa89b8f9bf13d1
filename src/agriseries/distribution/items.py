"""What the service publishes: items and collections made from the production catalogue.

A published item is the product's STAC item with

* ``collection`` set (the item's own, or ``agriseries-<level>``),
* asset hrefs turned into paths relative to the **store root**
  (``L2A/T31UDS/2018/<id>/<id>_B04.tif``); the service rewrites them into its own
  download URLs when it answers (:func:`served_item`), so the catalogue does not depend on
  the host name or port the service runs on,
* no links (the service adds ``self``, ``parent``, ``collection`` and ``root``), except
  absolute ones (a licence page),
* a ``datetime`` on period products (the middle of the period) when the item has none,
  since STAC API datetime search looks at ``datetime``; and ``start_datetime`` =
  ``end_datetime`` = ``datetime`` on single-date products, since the embedded backend
  searches a collection by start and end once any of its items has them.

:func:`level_collection` makes the collection of a level: the store's
``LEVEL/collection.json`` when there is one (its summaries, providers...), with the extent
of the published items.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import posixpath
import urllib.parse
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from ..core.errors import AgriseriesError
from ..core.ids import Level, ProductId

__all__ = ["PublishError", "collection_id_of", "level_collection", "published_item",
           "served_item", "store_path_of"]


class PublishError(AgriseriesError, ValueError):
    """A product cannot be published (its item or files are not what the store holds)."""


def collection_id_of(item: dict[str, Any]) -> str:
    """The collection of an item: its ``collection`` field, else ``agriseries-<level>``."""
    if item.get("collection"):
        return str(item["collection"])
    level = (item.get("properties") or {}).get("agriseries:level")
    if not level:
        level = ProductId.parse(item["id"]).level.value
    return f"agriseries-{str(level).lower()}"


def _is_url(href: str) -> bool:
    if ":" not in href:  # no scheme (most hrefs: relative paths); urlparse is slow
        return False
    return bool(urllib.parse.urlparse(href).scheme) and not href.startswith("file:")


def published_item(item: dict[str, Any], item_path: str | Path, store_root: str | Path,
                   *, copy_item: bool = True) -> dict[str, Any]:
    """The item to publish for a product whose STAC item file is ``item_path`` (a copy of
    ``item``; ``copy_item=False``: ``item`` itself, changed, for a caller that owns it).

    Raises
    ------
    PublishError
        The item file is not inside the store, or an asset points outside its product.
    """
    root = Path(store_root).absolute()
    path = Path(item_path).absolute()
    try:
        folder = path.parent.relative_to(root)
    except ValueError:
        raise PublishError(f"product {item.get('id')}: its item {path} is not inside the "
                           f"store {root}") from None
    if not copy_item:
        out = item
    else:
        try:  # JSON's round trip is ~10x faster than deepcopy on a STAC item
            out = json.loads(json.dumps(item))
        except (TypeError, ValueError):  # not plain JSON (a datetime...)
            out = copy.deepcopy(item)
    out["collection"] = collection_id_of(item)
    out["links"] = [ln for ln in item.get("links", []) if _is_url(str(ln.get("href", "")))
                    and ln.get("rel") not in ("self", "root", "parent", "collection")]
    props = out.setdefault("properties", {})
    if props.get("datetime") is None and props.get("start_datetime") and props.get("end_datetime"):
        a = dt.datetime.fromisoformat(props["start_datetime"].replace("Z", "+00:00"))
        b = dt.datetime.fromisoformat(props["end_datetime"].replace("Z", "+00:00"))
        mid = (a + (b - a) / 2).astimezone(dt.UTC).replace(microsecond=0)
        props["datetime"] = mid.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif props.get("datetime") and not props.get("start_datetime") and \
            not props.get("end_datetime"):
        # an instant is also the period [datetime, datetime]: a collection mixing dates and
        # periods (the L3B dates and their season profiles) is searched by the embedded
        # backend on start/end once some item has them, and an item without them would
        # never match a datetime search
        props["start_datetime"] = props["end_datetime"] = props["datetime"]
    for key, asset in out.get("assets", {}).items():
        href = str(asset.get("href", ""))
        if _is_url(href):
            continue
        rel = posixpath.normpath(posixpath.join(folder.as_posix(), href))
        if href.startswith("/") or rel.startswith("../") or rel == ".." or \
                not rel.startswith(folder.as_posix() + "/"):
            raise PublishError(f"product {item.get('id')}: asset {key!r} href {href!r} is not "
                               f"a file of the product folder {folder}")
        asset["href"] = rel
    return out


def store_path_of(asset: dict[str, Any]) -> PurePosixPath | None:
    """The store-relative path of a published asset, ``None`` for an external URL."""
    href = str(asset.get("href", ""))
    if not href or _is_url(href):
        return None
    return PurePosixPath(href)


def _drop_nulls(d: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: (_drop_nulls(v) if isinstance(v, dict) else v) for k, v in d.items()
            if v is not None or k in keep}


def served_item(item: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The item as the service answers it: asset hrefs are its download URLs
    (``BASE/assets/<collection>/<item>/<asset key>``), and the null fields a columnar
    backend fills in for properties other items have are left out."""
    base = base_url.rstrip("/")
    if isinstance(item.get("properties"), dict):
        item["properties"] = _drop_nulls(item["properties"], keep=("datetime",))
    coll = urllib.parse.quote(str(item.get("collection", "")), safe="")
    iid = urllib.parse.quote(str(item.get("id", "")), safe="")
    assets = item.get("assets")
    if isinstance(assets, dict):
        for key, asset in list(assets.items()):
            if not isinstance(asset, dict):
                continue
            asset = _drop_nulls(asset)
            href = str(asset.get("href", ""))
            if href and not _is_url(href):
                asset["href"] = f"{base}/assets/{coll}/{iid}/{urllib.parse.quote(key, safe='')}"
            assets[key] = asset
    return item


def extent_of(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    x0 = y0 = float("inf")
    x1 = y1 = float("-inf")
    t0 = t1 = None
    for it in items:
        b = it.get("bbox") or [None] * 4
        if None not in b[:4]:
            x0, y0, x1, y1 = min(x0, b[0]), min(y0, b[1]), max(x1, b[2]), max(y1, b[3])
        p = it.get("properties", {})
        for t in (p.get("start_datetime") or p.get("datetime"),
                  p.get("end_datetime") or p.get("datetime")):
            if t:
                t = dt.datetime.fromisoformat(str(t).replace("Z", "+00:00")).astimezone(dt.UTC)
                t0 = t if t0 is None or t < t0 else t0
                t1 = t if t1 is None or t > t1 else t1
    bbox = [[x0, y0, x1, y1]] if x0 != float("inf") else [[-180.0, -90.0, 180.0, 90.0]]
    fmt = (lambda t: None if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {"spatial": {"bbox": bbox}, "temporal": {"interval": [[fmt(t0), fmt(t1)]]}}


def level_collection(collection_id: str, items: list[dict[str, Any]],
                     store_root: str | Path | None = None) -> dict[str, Any]:
    """The published collection ``collection_id`` holding ``items``: the store's own
    collection file of that level when it has one, else a plain collection; the extent is
    that of ``items``; relative links are dropped (the service adds its own)."""
    level = collection_id.removeprefix("agriseries-").upper()
    base: dict[str, Any] | None = None
    if store_root is not None and level in {lv.value for lv in Level}:
        f = Path(store_root) / level / "collection.json"
        try:
            base = json.loads(f.read_text())
        except (OSError, ValueError):
            base = None
        if base is not None and base.get("id") != collection_id:
            base = None
    if base is None:
        try:
            description = Level(level).description
        except ValueError:
            description = f"agriseries products of collection {collection_id}"
        base = {"type": "Collection", "stac_version": "1.1.0", "id": collection_id,
                "title": f"agriseries {level}", "description": description,
                "license": "other"}
    col = copy.deepcopy(base)
    col["links"] = [ln for ln in base.get("links", []) if _is_url(str(ln.get("href", "")))
                    and ln.get("rel") not in ("self", "root", "parent", "items", "child", "item")]
    col["extent"] = extent_of(items)
    col.pop("assets", None)
    return col
