"""Map tiles of the store's COGs, by titiler-core / rio-tiler (no resampling of our own).

Two titiler factories, both resolving product ids through :class:`~.products.Products`
(so a tile request follows the service's access rules: the credential of a search when
search is private, a published product, a file of its published item checked as a download
is; anything else is a 401 or a 404 before a file is opened):

* ``/tiles/cog/...`` (:class:`titiler.core.factory.TilerFactory`) reads one asset
  (``?item=<id>&asset=<key>``): the colour ramp of a biophysical variable
  (``colormap_name=ylgn&rescale=0,7``), the class colours of a crop mask / crop type map
  (the COG's own colour table, cut down to its classes by :class:`StoreCOGReader`);
* ``/tiles/item/...`` (:class:`titiler.core.factory.MultiBaseTilerFactory`) reads assets
  of one item (``?item=<id>&assets=B04&assets=B03&assets=B02&rescale=...``): true colour,
  and the mask bits (``assets=mask&algorithm=maskbits&algorithm_params={"bits":3}``,
  :class:`MaskBits`; this reader leaves the mask COG's own colour table aside).

:func:`stretch` gives the 2-98 % stretch of reflectance assets the page asks true colour with.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import attr
import numpy as np
from fastapi import Request
from rio_tiler.errors import InvalidAssetName
from rio_tiler.io import Reader, STACReader
from rio_tiler.models import ImageData
from rio_tiler.types import AssetInfo
from titiler.core.algorithm import BaseAlgorithm, algorithms

from ..core.errors import StoreError
from .products import MASK_COLOURS, Product, Products, read_classes

__all__ = ["MaskBits", "NotModified", "StoreCOGReader", "item_reader", "tile_routers",
           "stretch", "CACHE_CONTROL", "CachingHeaders"]

#: Cache-Control of the portal's pictures: the browser keeps them but asks again each time
#: (with the ETag), so an unpublished product or a revoked token takes effect at once; a
#: revalidated tile costs the access check, not a rendering.
CACHE_CONTROL = "private, no-cache"


class NotModified(Exception):
    """The client's copy (``If-None-Match``) is current: answered 304."""

    def __init__(self, etag: str) -> None:
        super().__init__(etag)
        self.etag = etag


def conditional(request: Request, product: Product, paths: list[Path]) -> None:
    """Give the request its ETag (the published item, the URL, and the size and modification
    time of the files it reads); raise :class:`NotModified` when the client has it."""
    h = hashlib.sha256(json.dumps(product.doc, sort_keys=True, default=str).encode())
    h.update(request.url.path.encode())
    h.update(repr(sorted(request.query_params.multi_items())).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    tag = '"' + h.hexdigest()[:40] + '"'
    request.state.etag = tag
    wanted = request.headers.get("if-none-match", "")
    if wanted and tag in {t.strip().removeprefix("W/") for t in wanted.split(",")}:
        raise NotModified(tag)


class CachingHeaders:
    """ASGI middleware: a successful answer under ``prefix`` whose request got an ETag
    (:func:`conditional`) carries it and :data:`CACHE_CONTROL`."""

    def __init__(self, app, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_tag(message) -> None:
            if message["type"] == "http.response.start" and message.get("status") == 200:
                tag = (scope.get("state") or {}).get("etag")
                if tag:
                    headers = [(k, v) for k, v in message.get("headers", [])
                               if k.lower() not in (b"etag", b"cache-control")]
                    headers += [(b"etag", tag.encode()), (b"cache-control", CACHE_CONTROL.encode())]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_tag)


class StoreCOGReader(Reader):
    """A rio-tiler reader whose colour map is the COG's classes only.

    A crop type COG is ``uint16`` and its GDAL colour table has 65,536 entries; rendering
    with such a table costs about a second a tile. The classes (the raster attribute table
    agriseries writes beside the COG) are a handful: the colour map becomes those, the
    no-data value transparent.
    """

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        if self.colormap and len(self.colormap) > 256:
            try:
                classes = read_classes(self.input)
            except (StoreError, OSError):
                classes = []
            cmap = {c.value: c.rgba for c in classes}
            if self.dataset.nodata is not None:
                cmap[int(self.dataset.nodata)] = (0, 0, 0, 0)
            self.colormap = cmap

    def tile(self, *args, **kwargs) -> ImageData:
        """A tile; float data with NaN as no data gets 0 under its mask (rio-tiler's
        rescale to bytes would cast the NaN, which numpy warns about)."""
        img = super().tile(*args, **kwargs)
        arr = img.array
        if np.issubdtype(arr.dtype, np.floating):
            data = np.ma.getdata(arr)
            bad = ~np.isfinite(data)
            if bad.any():
                data[bad] = 0
                arr.mask = np.ma.getmaskarray(arr) | bad
            arr.set_fill_value(0)
        return img


class ProductRef(str):
    """The id of a published product, carrying it (what the item tiler's path dependency
    gives its reader)."""

    product: Product

    def __new__(cls, product: Product) -> ProductRef:
        ref = super().__new__(cls, product.id)
        ref.product = product
        return ref


def item_reader(products: Products) -> type[STACReader]:
    """A :class:`rio_tiler.io.STACReader` of a published product (``input``: a
    :class:`ProductRef`, or a :class:`~.products.Product`), whose asset files are checked by
    :meth:`~.products.Products.path` when they are read."""

    @attr.s
    class StoreItemReader(STACReader):
        def __attrs_post_init__(self):
            product = self.input.product if isinstance(self.input, ProductRef) else self.input
            if not isinstance(product, Product):
                raise TypeError(f"expected a published product, not {self.input!r}")
            self._product = product
            self.input = product.id
            self.item = product.item
            super().__attrs_post_init__()

        def _get_asset_info(self, asset) -> AssetInfo:
            # the store's assets carry raster:bands without statistics: rio-tiler 9 warns
            # about each of them; the STAC statistics are not needed here
            if isinstance(asset, str):
                asset = {"name": asset}
            name = asset.get("name")
            if name not in self.assets:
                raise InvalidAssetName(f"{name!r} is not an asset of {self.item.id}: "
                                       f"expected one of {', '.join(self.assets)}")
            a = self.item.assets[name]
            path = products.path(self._product, name)
            reader_options, method_options = self._get_options(asset, a)
            info = AssetInfo(url=str(path), name=name, media_type=a.media_type,
                             reader_options=reader_options, method_options=method_options)
            info["metadata"] = a.extra_fields
            return info

    StoreItemReader.__name__ = "StoreItemReader"
    return StoreItemReader


class MaskBits(BaseAlgorithm):
    """The common mask bits selected by ``bits`` (their sum), each drawn in its colour
    (:data:`~.products.MASK_COLOURS`); pixels with none of them transparent."""

    title: str = "Mask bits"
    description: str = "Colours the selected bits of an agriseries mask layer"
    bits: int = 0
    input_nbands: int = 1
    output_nbands: int = 3
    output_dtype: str = "uint8"

    def __call__(self, img: ImageData) -> ImageData:
        data = np.ma.getdata(img.array[0]).astype(np.uint8)
        out = np.zeros((3, *data.shape), np.uint8)
        shown = np.zeros(data.shape, bool)
        for bit, rgba in MASK_COLOURS.items():  # the first bit listed wins
            if not self.bits & int(bit):
                continue
            sel = ((data & int(bit)) != 0) & ~shown
            out[:, sel] = np.array(rgba[:3], np.uint8)[:, None]
            shown |= sel
        mask = ~shown | np.ma.getmaskarray(img.array[0])
        return ImageData(np.ma.MaskedArray(out, mask=np.broadcast_to(mask, out.shape)),
                         assets=img.assets, crs=img.crs, bounds=img.bounds,
                         band_names=["red", "green", "blue"])


@functools.lru_cache(maxsize=256)
def _stretch(path: str, mtime_ns: int) -> tuple[float, float]:
    with Reader(path) as r:
        stats = r.statistics(max_size=512, percentiles=[2, 98])
    s = next(iter(stats.values()))
    lo, hi = s.percentile_2, s.percentile_98
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        lo, hi = s.min, max(s.max, s.min + 1)
    return float(lo), float(hi)


def stretch(paths: list[Path]) -> list[tuple[float, float]]:
    """The 2 % and 98 % values of each file (read from an overview of at most 512 pixels),
    one range per band of a true colour layer."""
    return [_stretch(str(p), p.stat().st_mtime_ns) for p in paths]


def preview_png(products: Products, layer: dict, product: Product, max_size: int = 128) -> bytes:
    """A small PNG of a product drawn as one of its layers (:func:`~.products.layers_of`,
    with ``rescale`` for true colour): the picture of the result list when the product
    has no quicklook of its own."""
    from rio_tiler.colormap import cmap

    kind = layer["kind"]
    if kind == "rgb":
        with item_reader(products)(product) as r:
            img = r.preview(assets=layer["assets"], max_size=max_size)
        img.rescale(in_range=[tuple(x) for x in layer["rescale"]])
        return img.render(img_format="PNG")
    path = str(products.path(product, layer["asset"]))
    with StoreCOGReader(path) as r:
        img = r.preview(max_size=max_size)
        own = r.colormap
    if kind == "ramp":
        arr = img.array
        data = np.ma.getdata(arr)
        bad = ~np.isfinite(data)
        data[bad] = 0
        arr.mask = np.ma.getmaskarray(arr) | bad
        arr.set_fill_value(0)
        img.rescale(in_range=[tuple(layer["range"])])
        return img.render(img_format="PNG", colormap=cmap.get(layer["ramp"]))
    if kind == "classes":
        return img.render(img_format="PNG", colormap=own)
    img = MaskBits(bits=int(sum(b["value"] for b in layer["bits"] if b["default"])))(img)
    return img.render(img_format="PNG")


def tile_routers(products: Products, prefix: str = ""):
    """The two titiler factories (see the module docstring), ``(cog, item)``; their routers
    are to be included under ``prefix + "/tiles/cog"`` and ``prefix + "/tiles/item"``.
    Every route of both (tiles, tilejson, info, statistics, point...) resolves its input
    through the path dependencies below, so every one follows the access rules."""
    from fastapi import Query
    from starlette.concurrency import run_in_threadpool
    from titiler.core.factory import MultiBaseTilerFactory, TilerFactory

    async def asset_file(request: Request, item: str = Query(description="Product id"),
                         asset: str = Query(description="Asset key of the product")) -> str:
        product = await products.get(request, item)
        path = await run_in_threadpool(products.path, product, asset)
        conditional(request, product, [path])
        return str(path)

    async def item_id(request: Request, item: str = Query(description="Product id")) -> str:
        product = await products.get(request, item)
        named = [a for v in request.query_params.getlist("assets") for a in v.split(",")]

        def paths():
            return [products.path(product, a) for a in named if a in product.item.assets]

        conditional(request, product, await run_in_threadpool(paths))
        return ProductRef(product)

    process = algorithms.register({"maskbits": MaskBits}).dependency
    common = dict(add_preview=False, add_part=False, add_viewer=False, add_ogc_maps=False,
                  process_dependency=process)
    cog = TilerFactory(reader=StoreCOGReader, path_dependency=asset_file,
                       router_prefix=f"{prefix}/tiles/cog", **common)
    item = MultiBaseTilerFactory(reader=item_reader(products), path_dependency=item_id,
                                 router_prefix=f"{prefix}/tiles/item", **common)
    return cog, item
