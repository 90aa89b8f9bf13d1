"""The L3B processor: biophysical variables of every L2A product of a tile, and their season profile.

:func:`biophysical_product` turns one stored L2A product into one L3B product:

* the sensor picks the networks (:func:`~agriseries.biophysical.networks.model_for`):
  Sentinel-2A/B at 20 m with the eight-band networks (B03, B04, B05, B06, B07, B8A, B11,
  B12) or at 10 m with the three-band ones (B03, B04, B08: LAI, FAPAR, FCOVER only),
  Sentinel-2C with the S2B networks, Landsat 8/9 with the LANDSAT8 networks on their 30 m
  grid;
* the angles are the product's own (per-pixel sun and band-mean view angles interpolated
  from the provider's grids, or constant scene angles for Landsat);
* every variable is evaluated in one numba pass over the pixels, chunk by chunk (dask);
* pixels flagged by the L2A mask (cloud, cloud shadow, cirrus, snow, water, saturated,
  no data) are set to NaN and get the flag bit ``MASKED_BY_L2A`` (32), next to SNAP's five
  bits (1 input out of range, 2 thresholded to min, 4 thresholded to max, 8 too low,
  16 too high).

Output (one L3B product per L2A product, id ``L3B_<sensor>_<tile>_<time>_AGS``): each
variable as a float32 COG (NaN no data; LAI in m2/m2, FAPAR and FCOVER 0-1, LAI_Cab in
ug/cm2, LAI_Cw in g/cm2) with its ``<var>_flags`` uint8 COG; the STAC Item names the
network model and version.

:func:`biophysical_series` smooths and gap-fills one variable over a season with the
weighted Whittaker smoother (:mod:`agriseries.biophysical.timeseries`) onto a regular
grid of dates and writes one multi-date L3B product (one COG band per date).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import pystac
import xarray as xr

from ..version import VERSION
from ..core.errors import (
    ConfigurationError,
    FailureRecord,
    InputProductError,
    StoreWriteError,
    WithFailure,
)
from ..core.ids import Level, ProductId, l3b_id, sensor_code
from ..io.product import load
from ..io.store import Layer, ProductStore
from . import networks as nn
from .timeseries import (
    DEFAULT_LAMBDA,
    BiophysicalFlag,
    regular_dates,
    weights_from_flags,
    whittaker_dataarray,
)
from .params import EXCLUDED_BITS, BiophysicalParams  # noqa: F401 -- re-exported

#: agriseries' flag bit beside SNAP's five: the L2A mask excluded the pixel.
MASKED_BY_L2A = 32
UNITS = {"LAI": "m2/m2", "FAPAR": "1", "FCOVER": "1", "LAI_Cab": "ug/cm2", "LAI_Cw": "g/cm2"}
FLAG_BITS = ("1 input out of range, 2 output thresholded to min, 4 output thresholded to max, "
             "8 output too low, 16 output too high (SNAP BiophysicalFlag), "
             "32 masked by the L2A mask (agriseries)")


def _evaluate_block(block: np.ndarray, nets: tuple[nn.Network, ...]) -> np.ndarray:
    values, flags = nn.evaluate_model(nets, block)
    return np.concatenate([values, flags.astype(np.float32)], axis=0)


def compute_variables(ds: xr.Dataset, nets: dict[str, nn.Network],
                      excluded_bits: int = EXCLUDED_BITS) -> xr.Dataset:
    """Evaluate networks on a single-date agriseries Dataset (lazy, chunk by chunk).

    ``ds`` holds the network's bands, ``sun_zenith``, ``sun_azimuth``, ``view_zenith``,
    ``view_azimuth`` and, optionally, ``mask``. Returns a Dataset with one float32
    variable and one ``<var>_flags`` uint8 variable per network, dims ``(y, x)``.
    """
    first = next(iter(nets.values()))
    bands = [n for n in first.input_names if n not in nn.COSINE_INPUTS]
    missing = [v for v in bands + ["sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth"]
               if v not in ds]
    if missing:
        raise InputProductError(ds.attrs.get("source_path", "?"),
                                f"{', '.join(missing)} needed by the {first.model} networks "
                                "are not in the product")
    arr = lambda v: ds[v].data[0] if "time" in ds[v].dims else ds[v].data  # noqa: E731
    rad = np.float32(np.pi / 180.0)
    cos_vz = da.cos(arr("view_zenith") * rad)
    cos_sz = da.cos(arr("sun_zenith") * rad)
    cos_raa = da.cos((arr("sun_azimuth") - arr("view_azimuth")) * rad)
    stack = da.stack([arr(b).astype(np.float32) for b in bands]
                     + [cos_vz.astype(np.float32), cos_sz.astype(np.float32),
                        cos_raa.astype(np.float32)]).rechunk({0: -1})
    order = tuple(nets.values())
    n = len(order)
    out = stack.map_blocks(_evaluate_block, order, dtype=np.float32,
                           chunks=((2 * n,),) + stack.chunks[1:])
    excluded = None
    if "mask" in ds:
        excluded = (arr("mask") & np.uint8(excluded_bits)) != 0
    result = {}
    for i, name in enumerate(nets):
        values = out[i]
        flags = out[n + i].astype(np.uint8)
        if excluded is not None:
            values = da.where(excluded, np.float32(np.nan), values)
            flags = flags | (excluded.astype(np.uint8) * np.uint8(MASKED_BY_L2A))
        result[name] = (("y", "x"), values, {"units": UNITS[name]})
        result[f"{name}_flags"] = (("y", "x"), flags, {"flag_bits": FLAG_BITS})
    return xr.Dataset(result, coords={"y": ds["y"], "x": ds["x"]})


def _networks_for(sensor: str, params: BiophysicalParams) -> tuple[str, dict[str, nn.Network]]:
    root = Path(params.networks_root) if params.networks_root else None
    s2 = sensor.startswith("S2")
    model = nn.model_for(sensor, params.resolution if s2 else 30, root=root)
    have = nn.model_variables(nn.available_models(root)[model])
    wanted = [v for v in params.variables if v in have]
    if not wanted:
        raise ConfigurationError(f"model {model} has none of the variables {params.variables} "
                                 f"(it has {', '.join(have)})")
    return model, nn.load_model(model, wanted, root=root)


def biophysical_product(store: ProductStore, item: pystac.Item,
                        params: BiophysicalParams = BiophysicalParams(), *,
                        overwrite: bool = False) -> tuple[str, bool]:
    """Make the L3B product of one stored L2A product.

    Returns
    -------
    (product id, made)
        ``made`` is False when the product was already in the store.
    """
    pid = l3b_id(item.id)
    if not overwrite and store.already_made(pid, asdict(params), inputs=[item.id]):
        return str(pid), False
    product = store.open(item)
    sensor = product.sensor
    model, nets = _networks_for(sensor, params)
    first = next(iter(nets.values()))
    bands = [n for n in first.input_names if n not in nn.COSINE_INPUTS]
    res = params.resolution if sensor.startswith("S2") else min(product.native_grids or {30: 0})
    ds = load(product, resolution=res, bands=bands, angles="mean", chunks=params.chunks)
    out = compute_variables(ds, nets, params.excluded_bits)
    gb = ds.odc.geobox
    layers = []
    for name in nets:
        layers.append(Layer(name, out[name].data, gb, "aux", unit=UNITS[name]))
        layers.append(Layer(f"{name}_flags", out[f"{name}_flags"].data, gb, "flags", unit=FLAG_BITS))
    store.write_product(
        pid, layers, footprint=pystac_geometry(item), sensors=[sensor], inputs=[item.id],
        parameters={**asdict(params), "model": model},
        lineage=f"S2 Toolbox biophysical networks {model} applied by agriseries {VERSION} "
                f"to {item.id}",
        datetime=item.datetime or pid.start, overwrite=overwrite,
        properties={"agriseries:network": {"model": model, "version": model.split("/")[0],
                                           "variables": list(nets)}})
    return str(pid), True


def pystac_geometry(item: pystac.Item):
    """The footprint of an item as an odc-geo Geometry."""
    from odc.geo.geom import Geometry

    return Geometry(item.geometry, "EPSG:4326")


@dataclass
class L3BResult(WithFailure):
    """What happened to one input product.

    Attributes
    ----------
    input
        The L2A product.
    status
        ``made``, ``skipped`` (already in the store) or ``failed``.
    product
        The L3B product id.
    failure
        Why it failed (:class:`~agriseries.core.errors.FailureRecord`), else ``None``;
        ``error``, ``error_type`` and ``traceback`` read it.
    extra
        Remarks.
    """

    input: str
    status: str  # "made" | "skipped" | "failed"
    product: str | None = None
    failure: FailureRecord | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (with ``error`` and ``error_type``)."""
        return {"input": self.input, "status": self.status, "product": self.product,
                "error": self.error, "error_type": self.error_type, "extra": dict(self.extra)}


def l2a_items(store: ProductStore, tile: str, start: dt.datetime | None = None,
              end: dt.datetime | None = None, sensors: tuple[str, ...] | None = None):
    """The L2A items :func:`run_biophysical` works on."""
    for item in store.items(level=Level.L2A, tile=tile, start=start, end=end):
        sensor = ProductId.parse(item.id).sensor
        if not sensors or any(sensor == s or sensor.startswith(s) for s in sensors):
            yield item


def run_biophysical(store: ProductStore, tile: str, start: dt.datetime | None = None,
                    end: dt.datetime | None = None,
                    params: BiophysicalParams = BiophysicalParams(), *, overwrite: bool = False,
                    sensors: tuple[str, ...] | None = None, on_result=None) -> list[L3BResult]:
    """Make the L3B product of every L2A product of a tile in a date range (bad ones are
    reported; a store that cannot be written stops the batch). ``sensors``: only the L2A
    products of these sensors or families (``S2``, ``L8``)."""
    results = []
    try:
        for item in l2a_items(store, tile, start, end, sensors):
            r = L3BResult(item.id, "failed")
            try:
                r.product, made = biophysical_product(store, item, params, overwrite=overwrite)
                r.status = "made" if made else "skipped"
            except StoreWriteError:
                raise
            except Exception as exc:  # one bad product never stops the tile
                r.failure = FailureRecord.from_exception(item.id, exc)
            results.append(r)
            if on_result:
                on_result(r)
    except BaseException:  # the store failed, or Ctrl-C: the catalogue lists what was made
        store.finish_catalog(interrupted=True)
        raise
    store.update_catalog()
    return results


def biophysical_series(store: ProductStore, tile: str, start: dt.datetime, end: dt.datetime, *,
                       variables: tuple[str, ...] = ("LAI",), step_days: int = 10,
                       lam: float = DEFAULT_LAMBDA, resolution: int | None = None,
                       overwrite: bool = False) -> str:
    """Smooth and gap-fill L3B variables over a season onto a regular grid of dates.

    Every per-date L3B product of the tile between ``start`` and ``end`` is read onto one
    grid (the tile's, cropped to the union of the products), weighted by its flags
    (:func:`~agriseries.biophysical.timeseries.weights_from_flags`), smoothed with the
    Whittaker smoother (``lam`` on a daily support) and written as one L3B product
    (``L3B_<sensors>_<tile>_<start>-<end>_AGS``) holding, per variable, a COG with one band
    per output date (``<var>_smoothed``) and one of the distance in days to the nearest
    valid observation (``<var>_obs_distance``).
    """
    from odc.geo.geom import unary_union

    from ..core.grid import snap_to_tile, tile_geobox

    unknown = [v for v in variables if v not in nn.VARIABLES]
    if unknown or not variables:
        raise ConfigurationError(f"unknown biophysical variable(s) {unknown or variables}: expected "
                                 f"some of {', '.join(nn.VARIABLES)}")
    items = [it for it in store.items(level=Level.L3B, tile=tile, start=start, end=end)
             if ProductId.parse(it.id).end is None and all(v in it.assets for v in variables)]
    if len(items) < 3:
        raise ConfigurationError(f"{len(items)} L3B product(s) with {', '.join(variables)} on {tile} "
                                 f"between {start:%Y-%m-%d} and {end:%Y-%m-%d}: need at least 3")
    items.sort(key=lambda i: i.datetime)
    opened = [store.open(it) for it in items]
    sensors = sorted({sp.sensor for sp in opened})
    pid = ProductId(Level.L3B, sensor_code(sensors), tile,
                    dt.datetime.combine(start.date(), dt.time(), dt.timezone.utc), "AGS",
                    dt.datetime.combine(end.date(), dt.time(), dt.timezone.utc))
    if not overwrite and store.already_made(
            pid, {"variables": list(variables), "step_days": step_days, "lambda": lam},
            inputs=[it.id for it in items]):
        return str(pid)
    res = resolution or int(min(it.assets[variables[0]].extra_fields["raster:bands"][0]
                                ["spatial_resolution"] for it in items))
    tb = tile_geobox(tile, res)
    gb = snap_to_tile(tb, unary_union([pystac_geometry(it).to_crs(tb.crs) for it in items]))
    loaded = [load(sp, geobox=gb, bands=[], angles=None, with_mask=False) for sp in opened]
    times = [np.datetime64(it.datetime.replace(tzinfo=None), "ns") for it in items]
    coords = {"time": times, "y": loaded[0]["y"], "x": loaded[0]["x"]}
    out_dates = regular_dates(np.datetime64(start.date()), np.datetime64(end.date()), step_days)
    layers = []
    for var in variables:
        values, weights = [], []
        for ds in loaded:
            v = ds[var].data[0]
            f = ds[f"{var}_flags"].data[0]
            f = da.where(da.isnan(f), np.float32(BiophysicalFlag.INPUT_OUT_OF_RANGE), f)
            values.append(v)
            weights.append(weights_from_flags(f.astype(np.uint8), values=v))
        vda = xr.DataArray(da.stack(values), dims=("time", "y", "x"), coords=coords)
        wda = xr.DataArray(da.stack(weights), dims=("time", "y", "x"), coords=coords)
        smooth = whittaker_dataarray(vda.chunk({"time": -1}), wda.chunk({"time": -1}), out_dates,
                                     lam=lam)
        names = [f"{var}_{np.datetime_as_string(d, 'D').replace('-', '')}" for d in out_dates]
        layers += [Layer(f"{var}_smoothed", smooth.data, gb, "series", unit=",".join(names)),
                   Layer(f"{var}_obs_distance", smooth["obs_distance"].data.astype(np.float32), gb,
                         "series", unit=",".join(n.replace(var, "days") for n in names))]
    store.write_product(
        pid, layers, footprint=gb.extent, sensors=sensors, inputs=[it.id for it in items],
        parameters={"variables": list(variables), "step_days": step_days, "lambda": lam,
                    "order": 2, "method": "weighted Whittaker smoother on a daily support"},
        lineage=f"{', '.join(variables)} of {len(items)} L3B products smoothed and gap-filled onto a "
                f"{step_days}-day grid by agriseries {VERSION}",
        properties={"agriseries:dates": [str(d) for d in out_dates]}, overwrite=overwrite)
    store.update_catalog()
    return str(pid)
