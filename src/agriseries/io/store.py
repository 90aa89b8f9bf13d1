"""The product store: a folder of products, each a folder of COGs plus a STAC Item.

Layout (docs/formats.md)::

    STORE/
      catalog.json                         root STAC catalog
      L2A/collection.json                  one STAC collection per level
      L2A/T29UNU/2022/<product id>/        one folder per product
          <product id>_B02.tif ...         COGs, one per band / layer
          <product id>_mask.tif
          <product id>.json                the STAC Item

Encoding of the COGs:

* reflectance: ``int16``, value x 10000, no data -10000 (the THEIA convention;
  ``raster:bands`` scale 1e-4 says so);
* thermal bands (Landsat B10, B11): ``int16``, (kelvin - 150) x 100, no data -10000
  (``raster:bands`` scale 0.01, offset 150, unit K; role ``temperature``);
* ``mask``: ``uint8`` common mask bits (:mod:`agriseries.core.masks`);
* other layers (``aot``, per-pixel angles): ``float32``, NaN no data;
* ``angles``: the provider's coarse angle grids (sun and per-band view zenith and
  azimuth, degrees) as one small multi-band float32 COG.

Writing is atomic: the whole product is written into ``STORE/.tmp/`` and renamed
into place, so a product folder is either complete or absent, whatever crashes.
A stage reads an earlier stage's output only through :meth:`ProductStore.open`,
which turns a stored item back into a :class:`~agriseries.io.product.SourceProduct`
for :func:`~agriseries.io.product.load`.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from ..core.bands import Band, bands_of
from ..core.errors import (
    AlreadyStoredError,
    CorruptItemError,
    ProductExistsError,
    StoreError,
    StoreWriteError,
)
from ..core.ids import Level, ProductId
from ..core.masks import MaskBit
from ..core.stac import AssetSpec, build_item, validate_item
from .catalog import collection_id, item_links
from .cog import BlockEncoding, CogJob, bit_categories, class_colormap, write_cog, write_cogs
from .durable import atomic_write, fsync_path, fsync_tree
from .product import AngleGrid, Asset, SourceProduct, nanmean_angles

#: Where warnings about the store go (a corrupt item skipped): the CLI prints them on stderr.
log = logging.getLogger("agriseries.store")

#: Folder of the store where products are written before being renamed into place.
TMP_DIR = ".tmp"
#: Folder of the store where ``agriseries store repair`` moves broken products.
QUARANTINE_DIR = ".quarantine"

REFLECTANCE_SCALE = 10000
REFLECTANCE_NODATA = -10000
#: DEFLATE level of the reflectance layers (int16, horizontal predictor): libdeflate's
#: level 1 compresses them 1.4-2.3 times faster than GDAL's default 6, to files of about
#: the same size (docs/benchmarks.md, "DEFLATE level"); the other layers keep level 6.
REFLECTANCE_DEFLATE_LEVEL = 1
_CLOUDY = int(MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.CIRRUS)
#: Mask bits from the most to the least important, with the colour of their pixels.
_MASK_COLOURS = [(MaskBit.NODATA, "000000"), (MaskBit.CLOUD, "ffffff"),
                 (MaskBit.CLOUD_SHADOW, "404040"), (MaskBit.CIRRUS, "c0e0ff"),
                 (MaskBit.SATURATED, "ff00ff"), (MaskBit.SNOW, "00ffff"),
                 (MaskBit.WATER, "0000ff"), (MaskBit.TOPO_SHADOW, "806040")]
#: Colours of the flag values/bits of a ``flags`` layer, in the order its text lists them.
_FLAG_COLOURS = ("000000", "ffffff", "00ffff", "0000ff", "00a000", "ff00ff", "ff8000", "808080")


def _mask_categories() -> tuple[dict[int, str], dict[int, tuple]]:
    names, cmap = bit_categories([(int(b), b.name.lower(), c) for b, c in _MASK_COLOURS])
    cmap[int(MaskBit.NODATA)] = (0, 0, 0, 0)
    return names, cmap


def _flag_categories(text: str) -> tuple[dict[int, str], dict[int, tuple]] | tuple[None, None]:
    """Category names and colours of a ``flags`` layer from its description: ``"0 no data,
    1 cloud, ..."`` lists values (a class layer) and ``"1 input out of range, 2 ..."``, whose
    values are all powers of two without 0, lists bits."""
    import re

    from .cog import hex_rgba

    pairs = [(int(v), n.strip()) for v, n in re.findall(r"(?:^|,)\s*(\d+)\s+([^,]+)", text)]
    if not pairs:
        return None, None
    values = [v for v, _ in pairs]
    if all(v > 0 and v & (v - 1) == 0 for v in values):
        return bit_categories([(v, n, _FLAG_COLOURS[1 + i % (len(_FLAG_COLOURS) - 1)])
                               for i, (v, n) in enumerate(sorted(pairs, reverse=True))])
    cmap = {v: hex_rgba(_FLAG_COLOURS[i % len(_FLAG_COLOURS)]) for i, v in enumerate(values)}
    return dict(pairs), cmap


def _classification_classes(classes: list[dict], cmap: dict[int, tuple]) -> list[dict]:
    """``classification:classes`` in the shape of the classification extension v1.1.0:
    ``value`` and ``description`` (required), ``name`` (letters, digits, ``_``, ``-``: what
    v2.0.0 requires) and the colour of the COG's colour table as ``color_hint``."""
    import re

    out = []
    for c in classes:
        text = str(c.get("description") or c.get("name") or c["value"])
        # ``name`` as v2.0.0 wants it too (pystac relabels v1.1.0 items as v2.0.0 on reading)
        slug = re.sub(r"[^0-9A-Za-z_-]+", "_", str(c.get("name") or text)).strip("_")
        entry = {"value": int(c["value"]), "description": text,
                 "name": slug or f"class_{int(c['value'])}"}
        r, g, b, _ = cmap[int(c["value"])]
        entry["color_hint"] = f"{r:02X}{g:02X}{b:02X}"
        out.append(entry)
    return out


@dataclass(frozen=True)
class Layer:
    """One 2-D layer to store.

    Attributes
    ----------
    key
        Asset key and file suffix (``B04``, ``mask``, ``aot``).
    data
        2-D numpy or dask array on ``geobox``: reflectance float32 0-1 (NaN no data),
        mask uint8, or any float32 layer.
    geobox
        Its grid.
    kind
        ``reflectance``, ``mask`` (common mask bits), ``flags`` (other uint8 bit flags,
        described by ``unit``), ``classes`` (integer class codes, see ``nodata``), ``aux`` (float32), ``scaled`` (float values stored as
        ``int16 = round(value / scale)``, -10000 no data: a composite's weight x 1000) or
        ``series`` (a 3-D ``(date, y, x)`` float32 array written as one multi-band COG;
        ``unit`` holds the comma-separated band names).
    band
        The spectral band of a reflectance layer.
    unit
        Unit of an ``aux`` or ``scaled`` layer.
    scale, offset
        The quantisation of a ``scaled`` layer: ``value = stored * scale + offset``.
    nodata
        No-data value of a ``classes`` layer (a map of integer class codes, ``uint8`` or
        ``uint16``, written with nearest-neighbour overviews: the L4A / L4B maps).
    extra
        Further asset fields of a ``classes`` layer (e.g. ``classification:classes``).
    title
        The asset title (default: the key; reflectance layers say ``Reflectance <key>``).
    """

    key: str
    data: Any
    geobox: GeoBox
    kind: str
    band: Band | None = None
    unit: str | None = None
    scale: float | None = None
    nodata: float | None = None
    extra: dict | None = None
    offset: float | None = None
    title: str | None = None


#: Thermal bands (Landsat TIRS B10, B11): kelvin stored as int16 ``(K - 150) x 100``
#: (0.01 K steps from 50 to 477 K, finer than the 0.1 K or 0.0034 K of the sources; values
#: outside that range are no data).
TEMPERATURE_SCALE, TEMPERATURE_OFFSET = 0.01, 150.0


@dataclass(frozen=True)
class ProductFile:
    """A non-raster file stored inside a product (a trained model, a validation report).

    :meth:`ProductStore.write_product` copies it into the product folder as
    ``<product id>_<key><suffix of path>`` and lists it as an asset of the item with this
    media type and roles, without raster fields; :meth:`ProductStore.open` skips it.
    """

    key: str
    path: str | Path
    media_type: str
    roles: tuple[str, ...] = ("metadata",)
    title: str | None = None


def _xp(arr):
    """The array module of ``arr``: ``dask.array`` for a dask array, else numpy."""
    if hasattr(arr, "dask"):
        import dask.array as da

        return da
    return np


def _compiled_encoding(arr, scale, offset) -> bool:
    """Whether :func:`encode_scaled` takes the compiled pass: a float32/float64 numpy or
    dask array (other types, e.g. xarray objects or integers, take numpy's)."""
    import dask.array as da

    floats = (np.dtype(np.float32), np.dtype(np.float64))
    return (isinstance(arr, (np.ndarray, da.Array)) and np.dtype(arr.dtype) in floats
            and np.result_type(arr.dtype, scale, offset) in floats)


def encode_scaled(arr, scale: float, offset: float = 0.0, *, clip: bool = True):
    """``round((arr - offset) / scale)`` as int16, -10000 where NaN (reflectance x 10000,
    weight x 1000, temperature (K - 150) x 100). Values beyond the int16 range are clipped
    (``clip``: a reflectance above 3.2767) or no data (a "temperature" of 6453.7 K is a
    provider's fill value, not a measurement)."""
    if _compiled_encoding(arr, scale, offset):  # one pass per block, the values of numpy's
        from .blockcodec import encode_block

        args = (scale, offset, bool(clip), REFLECTANCE_NODATA)
        if isinstance(arr, np.ndarray):
            return encode_block(arr, *args)
        return arr.map_blocks(encode_block, *args, dtype=np.int16,
                              meta=np.empty((0,) * arr.ndim, np.int16))
    return encode_scaled_numpy(arr, scale, offset, clip=clip)


def encode_scaled_numpy(arr, scale: float, offset: float = 0.0, *, clip: bool = True):
    """:func:`encode_scaled` in numpy (or dask) operations, several passes over the data."""
    xp = _xp(arr)
    q = xp.round((arr - offset) / scale)
    bad = xp.isnan(arr)
    if clip:
        q = xp.clip(q, REFLECTANCE_NODATA + 1, 32767)
    else:
        bad = bad | (q <= REFLECTANCE_NODATA) | (q > 32767)
    return xp.where(bad, REFLECTANCE_NODATA, q).astype(np.int16)


def _block_encoding(arr, scale: float, offset: float, clip: bool) -> BlockEncoding | None:
    """For a dask array :func:`encode_scaled` encodes block by block: the writer's
    :class:`~agriseries.io.cog.BlockEncoding`, which encodes each float block straight into
    the file's pixels (the same :func:`~agriseries.io.blockcodec.encode_block` values)."""
    import dask.array as da

    if not (isinstance(arr, da.Array) and _compiled_encoding(arr, scale, offset)):
        return None
    from functools import partial

    from .blockcodec import encode_block

    return BlockEncoding(arr, partial(encode_block, scale=scale, offset=offset, clip=bool(clip),
                                      nodata=REFLECTANCE_NODATA))


def encode_reflectance(arr):
    """Reflectance (float, NaN = no data) as stored: int16 x 10000, -10000 for no data."""
    return encode_scaled(arr, 1.0 / REFLECTANCE_SCALE)


class ProductStore:
    """A product store rooted at a local folder.

    Parameters
    ----------
    root
        The store folder (created when the first product is written).
    catalog_updates
        ``False``: :meth:`update_catalog` does nothing unless forced (the production
        workers write products, the runner rewrites the catalogue once per run).
    """

    def __init__(self, root: str | Path, *, catalog_updates: bool = True) -> None:
        self.root = Path(root)
        self.catalog_updates = catalog_updates
        #: Item files skipped by :meth:`items` because they could not be read, by path.
        self.corrupt: dict[str, CorruptItemError] = {}
        #: Ids of the products this store object wrote (to know whether the catalogue
        #: needs rewriting, also after an interruption).
        self.written: list[str] = []
        #: Properties added to every item this store object writes (the production driver
        #: records the job that made a product: ``agriseries:job``).
        self.extra_properties: dict[str, Any] = {}

    @property
    def temp_dir(self) -> Path:
        """Where products are written before being renamed into place (``STORE/.tmp``)."""
        return self.root / TMP_DIR

    @property
    def quarantine_dir(self) -> Path:
        """Where broken products are moved by :meth:`quarantine` (``STORE/.quarantine``)."""
        return self.root / QUARANTINE_DIR

    # -- paths ---------------------------------------------------------------------
    def product_dir(self, pid: ProductId | str) -> Path:
        """The folder of a product (whether or not it exists)."""
        p = ProductId.parse(pid) if isinstance(pid, str) else pid
        return self.root / p.level.value / p.tile / f"{p.year:04d}" / str(p)

    def item_path(self, pid: ProductId | str) -> Path:
        """The STAC Item file of a product."""
        d = self.product_dir(pid)
        return d / f"{d.name}.json"

    def exists(self, pid: ProductId | str) -> bool:
        """True if the product is in the store with a readable item. A product whose item is
        corrupt does not exist: writing it again replaces the broken one."""
        path = self.item_path(pid)
        if not path.is_file():
            return False
        try:
            read_item(path)
        except CorruptItemError as e:
            log.warning("%s (it will be rewritten)", e)
            return False
        return True

    def already_made(self, pid: ProductId | str, parameters: dict[str, Any] | None = None,
                     inputs: list[str] | None = None) -> bool:
        """Whether the product is in the store, made as asked.

        ``False`` when it is not in the store (or its item is corrupt); ``True`` when it is,
        made with the same ``parameters`` (those the processor would record, compared key by
        key: see :func:`parameter_differences`) and from every one of ``inputs``.

        Raises
        ------
        ProductExistsError
            It is in the store made otherwise; the message lists what differs and suggests
            ``--overwrite``.
        """
        if not self.exists(pid):
            return False
        if parameters is None and inputs is None:
            return True
        item = self.item(pid)
        props = item.properties
        diffs = []
        if parameters is not None:
            stored = props.get("agriseries:parameters") or {}
            if props.get("agriseries:parameter_hash") != _parameter_hash(parameters):
                diffs = parameter_differences(stored, _json_like(parameters))
        if inputs is not None:
            made_from = set(props.get("agriseries:inputs") or [])
            for s in (props.get("agriseries:synthesis") or {}).get("skipped") or []:
                if isinstance(s, dict) and s.get("id"):
                    made_from.add(s["id"])
            new = sorted(set(inputs) - made_from)
            if new:
                diffs.append(f"{len(new)} input(s) it was not made from ({', '.join(new[:3])}"
                             + (", ..." if len(new) > 3 else "") + ")")
        if diffs:
            raise ProductExistsError(
                f"{pid} is already in the store ({self.item_path(pid)}), made otherwise: "
                + "; ".join(diffs) + ". Use --overwrite to make it again as asked (or remove it: "
                f"agriseries store remove {self.root} {pid})")
        return True

    def item_files(self, level: Level | str | None = None,
                   tile: str | None = None) -> Iterator[Path]:
        """The item file of every product folder of the store (``LEVEL/TILE/YEAR/ID/ID.json``),
        sorted, whether or not it can be read; filtered by level and tile."""
        levels = [Level(level).value] if level else sorted(lv.value for lv in Level)
        for lv in levels:
            for path in sorted(self.root.glob(f"{lv}/{tile or '*'}/*/*/*.json")):
                if path.stem == path.parent.name:
                    yield path

    # -- writing -------------------------------------------------------------------
    def write_product(self, pid: ProductId, layers: list[Layer], *, footprint: Geometry,
                      sensors: list[str], inputs: list[str], parameters: dict[str, Any],
                      lineage: str, datetime: dt.datetime | None = None,
                      angle_grids: dict[str, AngleGrid] | None = None,
                      properties: dict[str, Any] | None = None,
                      extras: Callable[[Path, str], list[AssetSpec]] | None = None,
                      files: list[ProductFile] | None = None,
                      overwrite: bool = False) -> pystac.Item:
        """Write a product atomically and return its STAC Item.

        Parameters
        ----------
        pid
            The product id.
        layers
            The layers to write (each becomes one COG).
        footprint
            Where the product has data (any CRS).
        sensors, inputs, parameters, lineage, datetime, properties
            See :func:`agriseries.core.stac.build_item`.
        angle_grids
            Coarse angle grids to keep: ``sun`` and one per band name (view angles).
        extras
            Called as ``extras(folder, stem)`` once the layers are written in the
            temporary product folder; writes further files there (a quicklook) and
            returns their asset specs.
        files
            Non-raster files (:class:`ProductFile`) to copy into the product.
        overwrite
            Replace an existing product (default: refuse with :class:`StoreError`).
        """
        final = self.product_dir(pid)
        self.check_root()
        if self.exists(pid) and not overwrite:
            raise AlreadyStoredError(f"{final}: product {pid} is already in the store")
        tmp_root = self.temp_dir
        tmp = tmp_root / f"{pid}.{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise (store_write_error(self.root, exc, f"writing {pid}") or exc) from exc
        placed = False  # the product folder renamed into place
        try:
            counts: dict[str, int] = {}
            jobs, specs = zip(*[self._layer_job(tmp, str(pid), layer, counts)
                                for layer in layers]) if layers else ((), ())
            write_cogs(list(jobs))
            specs = list(specs)
            stats: dict[str, float] = {}
            if "size" in counts:
                n = counts["valid"]
                stats["cloud_cover"] = 100.0 * counts["cloud"] / n if n else 0.0
                if n:
                    stats["snow_cover"] = 100.0 * counts["snow"] / n
            if extras is not None:
                specs += extras(tmp, str(pid))
            sun = view = None
            if angle_grids:
                spec, sun, view = self._write_angles(tmp, str(pid), angle_grids)
                if spec is not None:
                    specs.append(spec)
            item = build_item(
                pid, geometry=footprint, assets=specs, sensors=sensors, inputs=inputs,
                parameters=parameters, lineage=lineage, datetime=datetime,
                cloud_cover=stats.get("cloud_cover"), snow_cover=stats.get("snow_cover"),
                sun_angles=sun, view_angles=view,
                properties={**(properties or {}), **self.extra_properties} or None)
            for f in files or ():
                src = Path(f.path)
                if not src.is_file():
                    raise StoreError(f"{src}: file to store in {pid} does not exist")
                if f.key in item.assets:
                    raise StoreError(f"{pid}: asset key {f.key!r} used twice")
                name = f"{pid}_{f.key}{src.suffix}"
                shutil.copyfile(src, tmp / name)
                item.add_asset(f.key, pystac.Asset(name, title=f.title or f.key,
                                                   media_type=f.media_type, roles=list(f.roles)))
            item.collection_id = collection_id(pid.level)
            item.links = item_links(pid)
            validate_item(item)
            item_file = tmp / f"{pid}.json"
            item.set_self_href(None)
            _atomic_write_json(item_file, item.to_dict(include_self_link=False,
                                                        transform_hrefs=False))
            final.parent.mkdir(parents=True, exist_ok=True)
            if not overwrite and self.exists(pid):  # written by another process meanwhile
                raise AlreadyStoredError(f"{final}: product {pid} is already in the store "
                                         "(written by another process meanwhile)")
            # the product's bytes on disk before its rename: after a power cut the store
            # holds the whole product or none of it (a kill -9 needs only the rename)
            fsync_tree(tmp)
            if final.exists():
                trash = tmp_root / f"{pid}.old.{uuid.uuid4().hex[:8]}"
                os.rename(final, trash)
                os.rename(tmp, final)
                placed = True
                fsync_path(final.parent)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.rename(tmp, final)
                placed = True
                fsync_path(final.parent)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if placed:  # in place (a signal or an error after the rename): the catalogue lists it
                self.written.append(str(pid))
            failure = store_write_error(self.root, exc, f"writing {pid}") \
                if isinstance(exc, Exception) else None
            if failure is not None and failure is not exc:
                raise failure from exc
            raise
        self.written.append(str(pid))
        try:
            self._ensure_root_catalog()
        except OSError as exc:
            raise (store_write_error(self.root, exc, "writing the STAC catalogue") or exc) \
                from exc
        item.set_self_href(str(self.item_path(pid)))
        return item

    def _ensure_root_catalog(self) -> None:
        """Write a root ``catalog.json`` if the store has none yet, so that an item's ``root``
        link resolves before the first :meth:`update_catalog` (pystac follows it)."""
        path = self.root / "catalog.json"
        if not path.is_file():
            from .catalog import root_catalog

            _atomic_write_json(path, root_catalog("agriseries product store"))

    def finish_catalog(self, interrupted: bool = False) -> None:
        """Rewrite the STAC catalogue at the end of a command when it wrote products (or
        the store has none yet); after an interruption (``interrupted``) a failure to do so
        is ignored, so that the error that stopped the command is the one reported."""
        if not (self.written or not (self.root / "catalog.json").exists()):
            return
        if interrupted:
            if self.written:
                try:
                    self.update_catalog()
                except Exception:  # noqa: BLE001 -- the original error matters more
                    log.warning("%s: the STAC catalogue could not be rewritten; "
                                "agriseries store repair %s rewrites it", self.root, self.root)
            return
        self.update_catalog()

    def check_root(self) -> None:
        """Raise :class:`StoreWriteError` if the store's path (or a folder above it) is a
        file; a store that does not exist yet is fine (it is made by the first write)."""
        p = _existing_parent(self.root)
        if not p.is_dir():
            what = "the store path" if p == self.root.absolute() else f"{p} (above the store)"
            raise StoreWriteError(f"{self.root}: {what} is a file, not a folder")

    def _layer_job(self, folder: Path, stem: str, layer: Layer,
                   counts: dict) -> tuple[CogJob, AssetSpec]:
        """The COG to write for a layer and what the item says about it."""
        fname = f"{stem}_{layer.key}.tif"
        path = folder / fname
        if layer.kind == "reflectance":
            return (CogJob(path, encode_reflectance(layer.data), layer.geobox,
                           REFLECTANCE_NODATA, "average", description=layer.key,
                           scale=1.0 / REFLECTANCE_SCALE, offset=0.0,
                           encoding=_block_encoding(layer.data, 1.0 / REFLECTANCE_SCALE, 0.0,
                                                    True),
                           level=REFLECTANCE_DEFLATE_LEVEL),
                    AssetSpec(layer.key, fname, layer.geobox, "int16", ("data", "reflectance"),
                              f"Reflectance {layer.key}", nodata=REFLECTANCE_NODATA,
                              scale=1.0 / REFLECTANCE_SCALE, offset=0.0, band=layer.band))
        if layer.kind == "scaled":
            scale = layer.scale or 1.0
            offset = layer.offset or 0.0
            roles = ("data", "temperature") if layer.unit == "K" else ("data",)
            clip = layer.unit != "K"
            data = encode_scaled(layer.data, scale, offset, clip=clip)
            return (CogJob(path, data, layer.geobox,
                           REFLECTANCE_NODATA, "average", description=layer.key,
                           scale=scale, offset=offset, units=layer.unit,
                           encoding=_block_encoding(layer.data, scale, offset, clip)),
                    AssetSpec(layer.key, fname, layer.geobox, "int16", roles,
                              layer.title or layer.key, nodata=REFLECTANCE_NODATA, scale=scale,
                              offset=offset, unit=layer.unit, band=layer.band))
        if layer.kind == "mask":
            def count(block: np.ndarray) -> None:
                valid = (block & int(MaskBit.NODATA)) == 0
                counts["valid"] = counts.get("valid", 0) + int(valid.sum())
                counts["size"] = counts.get("size", 0) + block.size
                counts["cloud"] = counts.get("cloud", 0) + int(((block & _CLOUDY) != 0)[valid].sum())
                counts["snow"] = counts.get("snow", 0) + int(
                    ((block & int(MaskBit.SNOW)) != 0)[valid].sum())

            bits = [{"name": b.name.lower(), "value": int(b)} for b in MaskBit]
            names, cmap = _mask_categories()
            return (CogJob(path, layer.data.astype(np.uint8), layer.geobox, None, "nearest",
                           description="agriseries mask bits", on_block=count,
                           colormap=cmap, categories=names),
                    AssetSpec("mask", fname, layer.geobox, "uint8",
                              ("cloud", "snow-ice", "water", "data-mask"),
                              "agriseries common mask bits",
                              extra={"agriseries:mask_bits": bits}))
        if layer.kind == "series":
            names = (layer.unit or "").split(",")
            return (CogJob(path, layer.data.astype(np.float32), layer.geobox, float("nan"),
                           "average", description=names),
                    AssetSpec(layer.key, fname, layer.geobox, "float32", ("data",), layer.key,
                              nodata=float("nan"), extra={"agriseries:bands": names},
                              count=len(names)))
        if layer.kind == "classes":
            dtype = np.dtype(layer.data.dtype)
            if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
                raise StoreError(f"{folder}: classes layer {layer.key} must be uint8 or uint16, "
                                 f"not {dtype}")
            classes = (layer.extra or {}).get("classification:classes") or []
            nodata = None if layer.nodata is None else int(layer.nodata)
            cats = {int(c["value"]): str(c.get("description") or c.get("name") or c["value"])
                    for c in classes}
            if cats and nodata is not None:
                cats.setdefault(nodata, "no data")
            cmap = class_colormap(classes, nodata) if classes else None
            extra = dict(layer.extra or {})
            if classes:
                extra["classification:classes"] = _classification_classes(classes, cmap)
            return (CogJob(path, layer.data, layer.geobox, layer.nodata, "nearest",
                           description=layer.key, colormap=cmap, categories=cats or None),
                    AssetSpec(layer.key, fname, layer.geobox, dtype.name, ("data", "classification"),
                              layer.key, nodata=layer.nodata, extra=extra))
        if layer.kind == "flags":
            names, cmap = _flag_categories(layer.unit or "")
            return (CogJob(path, layer.data.astype(np.uint8), layer.geobox, None, "nearest",
                           description=layer.key, colormap=cmap, categories=names),
                    AssetSpec(layer.key, fname, layer.geobox, "uint8", ("data", "quality"),
                              layer.key, extra={"agriseries:flag_bits": layer.unit or ""}))
        if layer.kind != "aux":
            raise StoreError(f"{folder}: layer {layer.key} has an unknown kind {layer.kind!r}")
        return (CogJob(path, layer.data.astype(np.float32), layer.geobox, float("nan"), "average",
                       description=layer.key, units=layer.unit),
                AssetSpec(layer.key, fname, layer.geobox, "float32", ("data",), layer.key,
                          nodata=float("nan"), unit=layer.unit))

    def _write_angles(self, folder: Path, stem: str, grids: dict[str, AngleGrid]):
        usable = {k: g for k, g in grids.items() if g.zenith.size > 1}
        sun = grids.get("sun")
        views = {k: g for k, g in grids.items() if k != "sun"}
        sun_mean = (float(nanmean_angles(sun.zenith, None)),
                    float(nanmean_angles(sun.azimuth, None, circular=True))) if sun else None
        view_mean = None
        if views:
            z = np.concatenate([g.zenith.ravel() for g in views.values()])
            a = np.concatenate([g.azimuth.ravel() for g in views.values()])
            if np.isfinite(z).any():
                view_mean = (float(nanmean_angles(z, None)),
                             float(nanmean_angles(a, None, circular=True)))
        if not usable:
            return None, sun_mean, view_mean
        shapes = {g.zenith.shape for g in usable.values()}
        first = next(iter(usable.values()))
        if len(shapes) != 1:
            raise StoreError(f"{stem}: angle grids of different shapes {shapes}")
        from affine import Affine

        ny, nx = first.zenith.shape
        half = first.step / 2.0
        gb = GeoBox((ny, nx), Affine(first.step, 0, first.x0 - half, 0, -first.step, first.y0 + half),
                    first.crs)
        arrays, names = [], []
        for key, g in usable.items():
            arrays += [g.zenith, g.azimuth]
            prefix = "sun" if key == "sun" else f"view_{key}"
            names += [f"{prefix}_zenith", f"{prefix}_azimuth"]
        fname = f"{stem}_angles.tif"
        write_cog(folder / fname, np.stack(arrays).astype(np.float32), gb, nodata=float("nan"),
                  overview_resampling="nearest", description=names, units="degree")
        spec = AssetSpec("angles", fname, gb, "float32", ("metadata", "angles"),
                         "Sun and viewing angle grids (degrees, values at pixel centres)",
                         nodata=float("nan"), unit="degree", extra={"agriseries:bands": names},
                         count=len(names))
        return spec, sun_mean, view_mean

    # -- reading -------------------------------------------------------------------
    def item(self, pid: ProductId | str) -> pystac.Item:
        """The STAC Item of a stored product (:class:`StoreError` if it is not in the store,
        :class:`CorruptItemError` if its item cannot be read)."""
        path = self.item_path(pid)
        if not path.is_file():
            raise StoreError(f"{path}: product {pid} is not in the store")
        return read_item(path)

    def items(self, level: Level | str | None = None, tile: str | None = None,
              start: dt.datetime | None = None, end: dt.datetime | None = None
              ) -> Iterator[pystac.Item]:
        """Iterate over stored items, filtered by level, tile and date range (inclusive; an
        ``end`` at midnight means the whole of that day).

        A product whose item cannot be read (truncated JSON, no ``datetime``...) is skipped
        with a warning naming the file (logger ``agriseries.store``) and kept in
        :attr:`corrupt`: one broken product never breaks a command that reads the store."""
        if end is not None and end.time() == dt.time(0):
            end = end + dt.timedelta(days=1) - dt.timedelta(microseconds=1)  # a date: the whole day
        for path in self.item_files(level, tile):
            try:
                pid = ProductId.parse(path.stem)
            except ValueError:
                continue  # not a product folder (agriseries store check reports it)
            if start and (pid.end or pid.start) < _utc(start):
                continue
            if end and pid.start > _utc(end):
                continue
            try:
                item = read_item(path)
            except CorruptItemError as e:
                if str(path) not in self.corrupt:
                    log.warning("skipped %s", e)
                self.corrupt[str(path)] = e
                continue
            yield item

    def open(self, pid: ProductId | str | pystac.Item) -> SourceProduct:
        """A stored product as a :class:`SourceProduct`, ready for :func:`load`."""
        item = pid if isinstance(pid, pystac.Item) else self.item(pid)
        folder = self.item_path(item.id).parent
        props = item.properties
        sensors = props.get("agriseries:sensors") or []
        sensor = sensors[0] if len(sensors) == 1 else "+".join(sensors)
        table = bands_of(sensors[0]) if len(sensors) == 1 else {}
        bands, quality, aux = {}, {}, {}
        view_grids: dict[str, AngleGrid] = {}
        sun_grid = None
        grids: dict[int, GeoBox] = {}
        crs = props.get("proj:code") or props.get("proj:wkt2")
        for key, a in item.assets.items():
            if a.media_type and not a.media_type.startswith("image/tiff"):
                continue  # a ProductFile (model, report): not a raster layer
            path = str(folder / a.href)
            rb = (a.extra_fields.get("raster:bands") or [{}])[0]
            res = rb.get("spatial_resolution")
            if key != "angles" and res and "proj:shape" in a.extra_fields:
                from affine import Affine

                grids.setdefault(int(round(res)), GeoBox(
                    tuple(a.extra_fields["proj:shape"]),
                    Affine(*a.extra_fields["proj:transform"][:6]), crs))
            if {"overview", "thumbnail"} & set(a.roles or []):
                continue  # quicklooks are for people
            if "reflectance" in (a.roles or []):
                bands[key] = Asset(path, 1, rb.get("scale", 1e-4), rb.get("offset", 0.0),
                                   REFLECTANCE_NODATA, res, "reflectance")
            elif key == "mask":
                quality["mask"] = Asset(path, 1, nodata=None, resolution=res, kind="quality")
            elif "quality" in (a.roles or []):
                aux[key] = Asset(path, 1, nodata=None, resolution=res, kind="quality")
            elif key == "angles":
                sun_grid, view_grids = _read_angle_grids(path, a.extra_fields["agriseries:bands"])
            else:  # what raster:bands says: value = DN * scale + offset, DN nodata is no data
                aux[key] = Asset(path, 1, rb.get("scale", 1.0), rb.get("offset", 0.0),
                                 _nodata(rb.get("nodata")), res, "aux", rb.get("unit"))
        if sun_grid is None and "view:sun_elevation" in props:
            sun_grid = _constant_grid(90.0 - props["view:sun_elevation"], props["view:sun_azimuth"],
                                      props.get("proj:code", "EPSG:4326"))
        if not view_grids and "view:incidence_angle" in props:
            view_grids = {"mean": _constant_grid(props["view:incidence_angle"],
                                                 props.get("view:azimuth", 0.0),
                                                 props.get("proj:code", "EPSG:4326"))}
        pid_obj = ProductId.parse(item.id)
        when = item.datetime or pid_obj.start
        from odc.geo.geom import Geometry as _G

        return SourceProduct(
            path=str(folder), product_id=item.id, level=pid_obj.level.value, sensor=sensor,
            producer=pid_obj.producer, datetime=when, crs=props.get("proj:code", ""),
            footprint=_G(item.geometry, "EPSG:4326"), bands=bands, quality=quality,
            mask_decoder=(lambda layers: layers["mask"]) if quality else None, aux=aux,
            sun_angles=sun_grid, view_angles=view_grids, tile=pid_obj.tile, native_grids=grids,
            metadata=_opened_metadata(self.item_path(item.id), list(table), props))

    # -- removal -------------------------------------------------------------------
    def remove_product(self, pid: ProductId | str) -> None:
        """Remove a product folder atomically: renamed into the temporary area
        (``STORE/.tmp``), then deleted, so the product is either whole or gone
        (:class:`StoreError` if it is not in the store)."""
        folder = self.product_dir(pid)
        if not folder.is_dir():
            raise StoreError(f"{folder}: product {pid} is not in the store")
        trash = self.temp_dir / f"{ProductId.parse(str(pid))}.removed.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    remove = remove_product

    def quarantine(self, folder: str | Path | ProductId, reason: str) -> Path:
        """Move a broken product folder (or any folder of the store) out of the way, into
        ``STORE/.quarantine/<name>.<UTC time>/`` with a ``QUARANTINE.txt`` saying why;
        nothing is deleted. Returns the new place."""
        src = self.product_dir(folder) if isinstance(folder, ProductId) else Path(folder)
        if not src.is_absolute() and not src.exists():
            src = self.root / src
        if not src.is_dir():
            raise StoreError(f"{src}: no such product folder in the store")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        dest = self.quarantine_dir / f"{src.name}.{stamp}.{uuid.uuid4().hex[:4]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dest)
        (dest / "QUARANTINE.txt").write_text(
            f"moved from {src} on {stamp} UTC by agriseries store repair\n{reason}\n")
        return dest

    def clean_tmp(self, older_than_s: float = 86400.0) -> list[Path]:
        """Delete what crashed writers left in ``STORE/.tmp`` (entries not modified for
        ``older_than_s`` seconds: a write in progress is younger); returns what was deleted."""
        import time

        gone = []
        if not self.temp_dir.is_dir():
            return gone
        now = time.time()
        for p in sorted(self.temp_dir.iterdir()):
            try:
                if now - p.lstat().st_mtime < older_than_s:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                gone.append(p)
            except FileNotFoundError:
                continue
        return gone

    # -- catalogue -----------------------------------------------------------------
    def update_catalog(self, title: str = "agriseries product store", *,
                       force: bool = False) -> Path:
        """(Re)write ``catalog.json``, one ``collection.json`` per level and the catalogues of
        each tile, tile-year and tile-month from the items on disk (:mod:`agriseries.io.catalog`); skipped,
        unless ``force``, on a store opened with ``catalog_updates=False``."""
        if not (self.catalog_updates or force):
            return self.root / "catalog.json"
        self.check_root()
        try:
            return self._update_catalog(title)
        except OSError as exc:
            raise (store_write_error(self.root, exc, "writing the STAC catalogue") or exc) \
                from exc

    def _update_catalog(self, title: str) -> Path:
        from .catalog import write_catalog

        return write_catalog(self.root, title, lambda lv: list(self.items(level=lv)),
                             _atomic_write_json)


#: Causes of a failed write that are the store's, not the product's, by errno.
_STORE_ERRNOS = {
    errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted", errno.ENOTDIR: "a path in it is a file, not a folder",
    errno.EFBIG: "file too large for the file system or the process's file size limit",
}
_STORE_TEXTS = {"no space left on device": errno.ENOSPC, "disk quota exceeded": errno.EDQUOT,
                "read-only file system": errno.EROFS, "permission denied": errno.EACCES,
                "file too large": errno.EFBIG}


def store_write_error(root: Path, exc: BaseException, doing: str) -> StoreWriteError | None:
    """The :class:`StoreWriteError` of an exception raised while writing into the store at
    ``root`` when its cause is the store's (full, read-only, not writable), else ``None``.

    The cause is found in the chain of exceptions (an ``OSError``'s errno, or GDAL's message
    for the same), or, when GDAL only says "IO error", in the free space left."""
    if isinstance(exc, StoreWriteError):
        return exc
    seen, cur, code, where = set(), exc, None, None
    while cur is not None and id(cur) not in seen and code is None:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _STORE_ERRNOS:
            code, where = cur.errno, cur.filename
        else:
            text = str(cur).lower()
            code = next((c for t, c in _STORE_TEXTS.items() if t in text), None)
        cur = cur.__cause__ or cur.__context__
    if code is None and any(w in str(exc).lower() for w in ("io error", "write failed",
                                                            "writing the cog failed")):
        try:
            if shutil.disk_usage(_existing_parent(root)).free < 4 * 2**20:
                code = errno.ENOSPC
        except OSError:
            pass
    if code is None:
        return None
    target = root
    if where and code in (errno.EACCES, errno.EPERM, errno.ENOTDIR):
        target = Path(where)
    msg = f"{target}: {_STORE_ERRNOS[code]} ({doing})"
    if code in (errno.ENOSPC, errno.EDQUOT):
        try:
            free = shutil.disk_usage(_existing_parent(root)).free
            msg = f"{target}: {_STORE_ERRNOS[code]} ({doing}; {free / 2**20:.1f} MiB free)"
        except OSError:
            pass
    err = StoreWriteError(msg)
    err.errno = code
    return err


def _existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _json_like(value):
    """A value as it reads back from an item's JSON (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value, default=str))


def _parameter_hash(parameters: dict[str, Any]) -> str:
    from ..core.stac import parameter_hash

    return parameter_hash(parameters)


def parameter_differences(stored: Any, requested: Any, prefix: str = "") -> list[str]:
    """What differs between a stored product's parameters and a request, one
    ``"name: stored -> requested"`` each.

    Top-level parameters the stored product lacks are ignored (a product of an older
    version, made before the parameter existed, with its default); within a nested mapping
    (``source``: in-situ polygons or a reference map) a key only one side has is a
    difference. ``None`` in a request means "the default": not compared.
    """
    out: list[str] = []
    if isinstance(stored, dict) and isinstance(requested, dict):
        for k, v in requested.items():
            name = f"{prefix}{k}"
            if v is None or k in _NOT_COMPARED:
                continue
            if k not in stored:
                if prefix:
                    out.append(f"{name}: (none) -> {_short(v)}")
                continue
            out += parameter_differences(stored[k], v, name + ".")
        if prefix:
            out += [f"{prefix}{k}: {_short(stored[k])} -> (none)" for k in stored
                    if k not in requested and k in _SOURCE_KINDS]
        return out
    if _json_like(stored) != _json_like(requested):
        out.append(f"{prefix.rstrip('.')}: {_short(stored)} -> {_short(requested)}")
    return out


#: Parameters that change how a product is computed, not what it holds (block sizes).
_NOT_COMPARED = frozenset({"chunk", "chunks"})

#: Keys of a nested parameter mapping that say where a product's reference came from: one
#: the stored product has and the request lacks is a difference.
_SOURCE_KINDS = ("insitu", "reference_map", "crop_mask")


def _short(v) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def read_item(path: str | Path) -> pystac.Item:
    """Read a stored product's STAC item, checking what every agriseries item has.

    Raises
    ------
    CorruptItemError
        The file cannot be read, is not JSON (truncated), is not a STAC item of the product
        its file name says, or lacks a field every item has (``datetime`` or a range).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptItemError(path, f"cannot be read ({e.strerror or e})") from e
    if not text.strip():
        raise CorruptItemError(path, "the item file is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        # cut off: the error is at the end, or in a string that runs to the end
        cut = e.pos >= len(text.rstrip()) or (e.msg.startswith("Unterminated string")
                                              and '"' not in text[e.pos + 1:])
        what = "truncated" if cut else "not valid JSON"
        raise CorruptItemError(path, f"{what}: {e.msg} at line {e.lineno} column {e.colno} "
                               "(expected a STAC item)") from e
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        raise CorruptItemError(path, "not a STAC item (expected a GeoJSON Feature)")
    if doc.get("id") != path.stem:
        raise CorruptItemError(path, f"the item's id is {doc.get('id')!r}, expected {path.stem!r}")
    props = doc.get("properties")
    if not isinstance(props, dict):
        raise CorruptItemError(path, "the item has no properties")
    if not props.get("datetime") and not (props.get("start_datetime")
                                          and props.get("end_datetime")):
        raise CorruptItemError(path, "the item has no datetime (nor start_datetime and "
                               "end_datetime)")
    if not isinstance(doc.get("assets"), dict):
        raise CorruptItemError(path, "the item has no assets")
    try:
        href = str(path.absolute())
        # as written: pystac's migration would relabel extension versions (classification
        # v1.1.0 as v2.0.0) and the item would no longer be what the store validated
        item = pystac.Item.from_dict(doc, href=href, migrate=False, preserve_dict=False)
    except (pystac.STACError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptItemError(path, f"not a valid STAC item: {e}") from e
    return item


def _opened_metadata(item_path: Path, table: list, props: dict) -> dict[str, Any]:
    """What :meth:`ProductStore.open` tells about a stored product: its item, its bands and,
    for an ingested product, the atmosphere its reader found (the L2A processor uses it)."""
    out: dict[str, Any] = {"stac_item": str(item_path), "band_table": table}
    reader = (props.get("agriseries:parameters") or {}).get("reader_metadata") or {}
    if isinstance(reader, dict) and isinstance(reader.get("atmosphere"), dict):
        out["atmosphere"] = reader["atmosphere"]
    return out


def _nodata(value) -> float | None:
    """A ``raster:bands`` no-data value as a number (the extension spells NaN ``"nan"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}[value]
    return float(value)


def _constant_grid(zenith: float, azimuth: float, crs: str) -> AngleGrid:
    return AngleGrid(np.array([[zenith]], np.float32), np.array([[azimuth]], np.float32),
                     0.0, 0.0, 1.0, crs)


def _read_angle_grids(path: str, names: list[str]) -> tuple[AngleGrid | None, dict[str, AngleGrid]]:
    import rasterio

    with rasterio.open(path) as src:
        data = src.read()
        t = src.transform
        crs = src.crs.to_string()
    step = t.a
    x0, y0 = t.c + step / 2.0, t.f - step / 2.0
    sun, views = None, {}
    for i in range(0, len(names), 2):
        stem = names[i].rsplit("_", 1)[0]
        grid = AngleGrid(data[i], data[i + 1], x0, y0, step, crs)
        if stem == "sun":
            sun = grid
        else:
            views[stem[len("view_"):]] = grid
    return sun, views


def _utc(d: dt.datetime) -> dt.datetime:
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


def _atomic_write_json(path: Path, obj: dict) -> None:
    """``path`` replaced by ``obj`` as JSON whole or not at all, the file and its folder's
    entry flushed to disk (:func:`agriseries.io.durable.atomic_write`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(obj, indent=1, allow_nan=False).encode())


def dataset_layers(ds: xr.Dataset, sensor: str) -> list[Layer]:
    """Split a single-date agriseries Dataset into store layers (time squeezed)."""
    table = bands_of(sensor)
    gb = ds.odc.geobox
    layers = []
    for name, var in ds.data_vars.items():
        data = var.data[0] if "time" in var.dims else var.data
        if name in table and not table[name].is_reflective:  # thermal: kelvin, not reflectance
            title = str(var.attrs.get("long_name") or f"temperature {name}")
            layers.append(Layer(name, data, gb, "scaled", band=table[name], unit="K",
                                scale=TEMPERATURE_SCALE, offset=TEMPERATURE_OFFSET,
                                title=f"{title[0].upper()}{title[1:]} (K)"))
        elif name in table:
            layers.append(Layer(name, data, gb, "reflectance", band=table[name]))
        elif name == "mask":
            layers.append(Layer(name, data, gb, "mask"))
        else:
            layers.append(Layer(name, data, gb, "aux", unit=var.attrs.get("units")))
    return layers
