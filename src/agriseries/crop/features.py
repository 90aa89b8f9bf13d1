"""Time-series preparation shared by the crop mask (L4A) and crop type (L4B) products.

docs/crop.md, "Features" (Sen2Agri ``CropTypeFused.py`` / ``CropMaskFused.py``,
``-trm resample``):

1. **Bands** -- green, red, NIR, SWIR (Sentinel-2 ``B03``, ``B04``, ``B08``, ``B11``),
   optionally the red-edge bands ``B05``, ``B06``, ``B07``, ``B8A``, all on the 10 m grid.
2. **Validity** -- an observation is used when none of the L2A mask bits in
   :data:`EXCLUDED_BITS` is set (cloud, cloud shadow, cirrus, snow, water, saturated,
   no data) and every band is finite. A pixel with no valid observation at all in the
   season (a lake, a permanent snow field) falls back to the observations that are only
   flagged water or snow (:data:`FALLBACK_BITS` still excluded), so that it is still
   classified (as non-crop, normally) rather than left without data.
3. **Temporal resampling** -- onto a regular grid of dates (:func:`season_dates`,
   ``step_days`` = 10 days, Sen2Agri's Sentinel-2 sampling rate), each output date gets the
   **linear interpolation** between the nearest valid observations before and after it
   (the nearest valid value before the first or after the last valid observation), per
   pixel and band (:func:`gapfill_linear`, a numba kernel).
4. **Optional smoothing** -- the resampled series can be smoothed with the Whittaker
   smoother (the crop mask without in-situ data uses lambda = 2 on the resampled grid,
   docs/crop.md, "Crop mask without in-situ data"). The smoother is :func:`agriseries.biophysical.timeseries.whittaker`
   (daily support): a lambda ``lam`` on a grid of step ``h`` days is passed to it as
   ``lam * h**3``, the value with the same frequency response (its docstring derives
   ``2 x 10**3`` for Sen2Agri's ``lam = 2`` on a 10-day grid).
5. **Features per resampled date** (Sen2Agri ``FeatureExtraction.hxx``): the band
   reflectances, ``NDVI = (NIR - R) / (NIR + R)``, ``NDWI = (SWIR - NIR) / (SWIR + NIR)``
   (Sen2Agri's sign convention), both 0 where the denominator is 0, and
   ``Brightness = sqrt(G^2 + R^2 + NIR^2 + SWIR^2)``. Reflectance is kept as 0-1 (Sen2Agri
   works on DN = reflectance x 10000: the indices are the same, the reflectances and the
   brightness are scaled by 1e-4, which a random forest does not see). The feature vector
   is ordered date by date: ``[B03, B04, B08, B11, NDVI, NDWI, BRIGHTNESS] x n_dates``
   (``B05 B06 B07 B8A`` after ``B11`` with the red edge), named ``<feature>_<YYYYMMDD>``.

Everything works on a block of pixels: :func:`series_block` and
:class:`SeriesFeatures.block` take numpy arrays, and :func:`stack_series` /
:func:`feature_map` wrap them in dask ``map_blocks`` over ``(y, x)`` with the whole time
axis in each block, so a full Sentinel-2 tile (10980 x 10980 px, 70 dates) is computed
chunk by chunk in bounded memory.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass, field

import dask.array as da
import numba
import numpy as np
import xarray as xr

from ..biophysical.timeseries import regular_dates, whittaker
from ..core.errors import ConfigurationError, MissingBandError
from ..core.masks import MaskBit
from .params import (  # noqa: F401 -- re-exported (defined there: light, no numba)
    BANDS,
    BANDS_20M,
    EXCLUDED_BITS,
    FEATURE_SETS,
    INDICES,
    INDICES_20M,
    RED_EDGE_BANDS,
    SeriesParams,
)

__all__ = [
    "BANDS",
    "BANDS_20M",
    "EXCLUDED_BITS",
    "FEATURE_SETS",
    "FALLBACK_BITS",
    "RED_EDGE_BANDS",
    "SeriesFeatures",
    "SeriesParams",
    "day_numbers",
    "feature_map",
    "gapfill_linear",
    "index_features",
    "index_features_20m",
    "merge_resolutions",
    "on_grid",
    "season_dates",
    "series_block",
    "smooth_series",
    "stack_series",
]

#: Bits still excluded for a pixel that has no valid observation in the whole season
#: (it may then use observations flagged water or snow only).
FALLBACK_BITS = int(MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.CIRRUS | MaskBit.SATURATED
                    | MaskBit.NODATA)
# --------------------------------------------------------------------------------------
# dates


def season_dates(start, end, step_days: int = 10) -> np.ndarray:
    """The regular output dates of a season: ``start, start + step, ...`` up to ``end``.

    A thin wrapper of :func:`agriseries.biophysical.timeseries.regular_dates`
    (``datetime64[D]``).
    """
    return regular_dates(start, end, step_days)


def day_numbers(dates) -> np.ndarray:
    """Dates (datetime64 of any unit, ``datetime``, ISO strings) as float64 days since 1970-01-01
    (the time of day kept as a fraction)."""
    arr = np.asarray(dates)
    if not np.issubdtype(arr.dtype, np.datetime64):
        arr = np.array([np.datetime64(v if not isinstance(v, _dt.datetime) else
                                      v.replace(tzinfo=None), "s") for v in arr.tolist()])
    return arr.astype("datetime64[s]").astype(np.int64) / 86400.0


def date_tags(dates) -> list[str]:
    """``YYYYMMDD`` strings of dates."""
    return [np.datetime_as_string(np.datetime64(d, "D")).replace("-", "") for d in np.asarray(dates)]


# --------------------------------------------------------------------------------------
# kernels


@numba.njit(inline="always")
def _valid_obs(values, mask, p, excluded, fallback, idx):  # pragma: no cover - compiled
    """Fill ``idx`` with the dates of pixel ``p`` whose mask has none of ``excluded`` and
    whose bands are all finite (else, if none, none of ``fallback``); return their count."""
    nb, nt, _ = values.shape
    for bits in (excluded, fallback):
        nv = 0
        for t in range(nt):
            if (mask[t, p] & bits) == 0:
                ok = True
                for b in range(nb):
                    if not np.isfinite(values[b, t, p]):
                        ok = False
                        break
                if ok:
                    idx[nv] = t
                    nv += 1
        if nv > 0:
            return nv
    return 0


@numba.njit(inline="always")
def _interp_at(values, t_obs, idx, nv, j, to, p, cur):  # pragma: no cover - compiled
    """Advance ``j`` past the valid dates <= ``to`` and put the linear interpolation at ``to``
    (nearest valid value beyond the ends) in ``cur``; return the new ``j``."""
    nb = values.shape[0]
    while j < nv and t_obs[idx[j]] <= to:
        j += 1
    # idx[j - 1] is the last valid observation at or before `to`, idx[j] the first after
    if j == 0:
        for b in range(nb):
            cur[b] = values[b, idx[0], p]
    elif j == nv:
        for b in range(nb):
            cur[b] = values[b, idx[nv - 1], p]
    else:
        tp = t_obs[idx[j - 1]]
        w = (to - tp) / (t_obs[idx[j]] - tp)
        for b in range(nb):
            vp = values[b, idx[j - 1], p]
            cur[b] = vp + w * (values[b, idx[j], p] - vp)
    return j


@numba.njit(nogil=True, cache=True)
def _gapfill_kernel(values, mask, t_obs, t_out, excluded, fallback, out):  # pragma: no cover
    nb, nt, npix = values.shape
    nout = t_out.shape[0]
    idx = np.empty(nt, np.int64)
    cur = np.empty(nb, np.float32)
    for p in range(npix):
        nv = _valid_obs(values, mask, p, excluded, fallback, idx)
        if nv == 0:
            for b in range(nb):
                for o in range(nout):
                    out[b, o, p] = np.nan
            continue
        j = 0
        for o in range(nout):
            j = _interp_at(values, t_obs, idx, nv, j, t_out[o], p, cur)
            for b in range(nb):
                out[b, o, p] = cur[b]


@numba.njit(nogil=True, cache=True)
def _features_kernel(values, mask, t_obs, t_out, excluded, fallback, out):  # pragma: no cover
    """Gap filling + per-date features (docs/crop.md, "Features"), one row per pixel.

    ``values`` ``(band, time, pixel)`` with bands G, R, NIR, SWIR first; ``out`` ``(pixel,
    date * (band + 3))``: per date the bands, NDVI, NDWI, brightness."""
    nb, nt, npix = values.shape
    nout = t_out.shape[0]
    per = nb + 3
    idx = np.empty(nt, np.int64)
    cur = np.empty(nb, np.float32)
    for p in range(npix):
        nv = _valid_obs(values, mask, p, excluded, fallback, idx)
        if nv == 0:
            for k in range(nout * per):
                out[p, k] = np.nan
            continue
        j = 0
        for o in range(nout):
            j = _interp_at(values, t_obs, idx, nv, j, t_out[o], p, cur)
            base = o * per
            for b in range(nb):
                out[p, base + b] = cur[b]
            g, r, nir, swir = cur[0], cur[1], cur[2], cur[3]
            sn = nir + r
            out[p, base + nb] = np.float32(0.0) if sn == 0 else (nir - r) / sn
            sw = swir + nir
            out[p, base + nb + 1] = np.float32(0.0) if sw == 0 else (swir - nir) / sw
            out[p, base + nb + 2] = np.sqrt(g * g + r * r + nir * nir + swir * swir)


def gapfill_linear(values: np.ndarray, mask: np.ndarray, obs_dates, out_dates, *,
                   excluded_bits: int = EXCLUDED_BITS,
                   fallback_bits: int = FALLBACK_BITS) -> np.ndarray:
    """Resample per-pixel series onto output dates with linear gap filling (docs/crop.md).

    Parameters
    ----------
    values
        ``(band, time, ...)`` float32 reflectances (NaN = no data).
    mask
        ``(time, ...)`` uint8 L2A mask bits.
    obs_dates
        The ``time`` dates (any form :func:`day_numbers` takes); they must be sorted.
    out_dates
        Sorted output dates.
    excluded_bits
        Mask bits that make an observation invalid.
    fallback_bits
        Bits still excluded for a pixel with no valid observation at all (see the module
        docstring); pass ``excluded_bits`` to disable the fallback.

    Returns
    -------
    numpy.ndarray
        ``(band, n_out, ...)`` float32: linear interpolation between the nearest valid
        observations before and after each output date, the nearest valid value outside
        their span, NaN for a pixel without any usable observation.
    """
    values = np.asarray(values)
    mask = np.asarray(mask)
    if values.ndim < 2 or mask.shape != values.shape[1:]:
        raise ConfigurationError(f"values shape {values.shape} and mask shape {mask.shape}: "
                                 "expected (band, time, ...) and (time, ...)")
    t_obs = day_numbers(obs_dates)
    t_out = day_numbers(out_dates)
    if t_obs.size != values.shape[1]:
        raise ConfigurationError(f"{t_obs.size} observation dates for {values.shape[1]} time steps")
    if np.any(np.diff(t_obs) < 0) or np.any(np.diff(t_out) < 0):
        raise ConfigurationError("observation and output dates must be sorted")
    pix_shape = values.shape[2:]
    npix = int(np.prod(pix_shape, dtype=np.int64))
    v = np.ascontiguousarray(values.reshape(values.shape[0], values.shape[1], npix),
                             dtype=np.float32)
    m = np.ascontiguousarray(mask.reshape(mask.shape[0], npix), dtype=np.uint8)
    out = np.empty((values.shape[0], t_out.size, npix), np.float32)
    if npix and t_out.size:
        _gapfill_kernel(v, m, t_obs, t_out, np.uint8(excluded_bits & 0xFF),
                        np.uint8(fallback_bits & 0xFF), out)
    return out.reshape((values.shape[0], t_out.size) + pix_shape)


def smooth_series(series: np.ndarray, out_dates, lam: float) -> np.ndarray:
    """Whittaker-smooth complete series on a regular grid (``lam`` in grid units).

    Parameters
    ----------
    series
        ``(band, n_dates, ...)`` float32 values on ``out_dates`` (NaN for pixels without
        data, which stay NaN).
    out_dates
        The regular grid (``datetime64[D]``).
    lam
        Whittaker lambda on the grid (Sen2Agri units, e.g. 2); converted to the daily support
        of :func:`~agriseries.biophysical.timeseries.whittaker` as ``lam * step**3``.
    """
    dates = np.asarray(out_dates).astype("datetime64[D]")
    if dates.size < 3:
        return series
    step = float(np.median(np.diff(dates).astype(np.int64)))
    nb, nt = series.shape[:2]
    pix = series.shape[2:]
    flat = np.moveaxis(series.reshape(nb, nt, -1), 1, 0).reshape(nt, -1)
    z, _ = whittaker(flat, None, dates, dates, lam=float(lam) * step ** 3, min_obs=3)
    return np.moveaxis(z.reshape(nt, nb, -1), 0, 1).reshape((nb, nt) + pix)


def index_features(bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NDVI, NDWI and brightness (docs/crop.md, "Features") from ``B03``, ``B04``, ``B08`` and ``B11``.

    NDVI and NDWI are 0 where their denominator is 0; NaN inputs give NaN.
    ``B11`` may be absent (a sensor without SWIR): NDWI is then left out and the brightness
    uses the bands present.
    """
    g, r, nir = bands["B03"], bands["B04"], bands["B08"]
    swir = bands.get("B11")
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        s = nir + r
        out["NDVI"] = np.where(s == 0, np.float32(0), (nir - r) / np.where(s == 0, 1, s))
        if swir is not None:
            s = swir + nir
            out["NDWI"] = np.where(s == 0, np.float32(0), (swir - nir) / np.where(s == 0, 1, s))
        sq = g * g + r * r + nir * nir + (swir * swir if swir is not None else 0)
        out["BRIGHTNESS"] = np.sqrt(sq)
    return {k: v.astype(np.float32) for k, v in out.items()}


def index_features_20m(bands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NDRE, NDMI and brightness of the ``20m`` feature set from :data:`BANDS_20M` (0 where
    a denominator is 0, NaN inputs give NaN)."""
    b05, b8a, b11 = bands["B05"], bands["B8A"], bands["B11"]
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, a, b in (("NDRE", b8a, b05), ("NDMI", b8a, b11)):
            s = a + b
            out[name] = np.where(s == 0, np.float32(0), (a - b) / np.where(s == 0, 1, s))
        out["BRIGHTNESS"] = np.sqrt(sum(bands[k] * bands[k] for k in BANDS_20M))
    return {k: v.astype(np.float32) for k, v in out.items()}


def series_block(values: np.ndarray, mask: np.ndarray, obs_days: np.ndarray,
                 out_days: np.ndarray, params: SeriesParams) -> np.ndarray:
    """Gap-filled (and optionally smoothed) band series of one block.

    ``values`` ``(band, time, ...)``, ``mask`` ``(time, ...)``; ``obs_days`` / ``out_days``
    float64 day numbers (:func:`day_numbers`). Returns ``(band, n_out, ...)`` float32.
    """
    out = np.empty((values.shape[0], out_days.size) + values.shape[2:], np.float32)
    npix = int(np.prod(values.shape[2:], dtype=np.int64))
    if npix and out_days.size:
        v = np.ascontiguousarray(values.reshape(values.shape[0], values.shape[1], npix),
                                 dtype=np.float32)
        m = np.ascontiguousarray(mask.reshape(mask.shape[0], npix), dtype=np.uint8)
        o = out.reshape(values.shape[0], out_days.size, npix)
        _gapfill_kernel(v, m, obs_days, out_days, np.uint8(params.excluded_bits & 0xFF),
                        np.uint8(FALLBACK_BITS & params.excluded_bits & 0xFF), o)
    if params.smoothing_lambda is not None and out_days.size >= 3:
        dates = (out_days * 86400).astype("datetime64[s]").astype("datetime64[D]")
        out = smooth_series(out, dates, params.smoothing_lambda).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------
# feature extractors


@dataclass(frozen=True)
class SeriesFeatures:
    """The per-date features (docs/crop.md, "Features") on a regular grid of dates.

    Attributes
    ----------
    out_dates
        The regular grid (``datetime64[D]``), see :func:`season_dates`.
    params
        Band choice, smoothing and masking.
    relative
        Name the features by their day offset in the season instead of their date (the
        site models of :mod:`agriseries.crop.site`, applied to other seasons).
    """

    out_dates: np.ndarray
    params: SeriesParams = field(default_factory=SeriesParams)
    relative: bool = False

    @property
    def bands(self) -> tuple[str, ...]:
        """Bands the extractor needs, in order."""
        return self.params.bands

    @property
    def names(self) -> list[str]:
        """Feature names, ``<band or index>_<YYYYMMDD>``, date by date (``relative``:
        ``<band or index>_d<days since the first grid date>``, the same in every season)."""
        per_date = list(self.bands) + list(self.params.indices)
        if self.relative:
            days = np.asarray(self.out_dates).astype("datetime64[D]").astype(np.int64)
            tags = [f"d{int(d - days[0]):03d}" for d in days]
        else:
            tags = date_tags(self.out_dates)
        return [f"{f}_{tag}" for tag in tags for f in per_date]

    def layout(self) -> dict:
        """What the features are, independent of the year: the per-date features, the grid
        step, the grid's day offsets from its first date, the smoothing. Two extractors
        with the same layout give features a model trained on one can read on the other
        (another tile or season)."""
        days = np.asarray(self.out_dates).astype("datetime64[D]").astype(np.int64)
        return {"per_date": list(self.bands) + list(self.params.indices),
                "step_days": int(self.params.step_days),
                "offsets": [int(d - days[0]) for d in days] if days.size else [],
                "smoothing_lambda": self.params.smoothing_lambda,
                "excluded_bits": int(self.params.excluded_bits)}

    def rows(self, values: np.ndarray, mask: np.ndarray, obs_days: np.ndarray) -> np.ndarray:
        """Features of one block as C-contiguous rows: ``(n_pixels, n_features)`` float32.

        Without smoothing, one numba pass per pixel fills the gaps and writes the bands and
        indices straight into the row (no temporary per-date arrays): the layout the
        classifier reads.
        """
        out_days = day_numbers(self.out_dates)
        npix = int(np.prod(values.shape[2:], dtype=np.int64))
        nb = len(self.bands)
        if self.params.smoothing_lambda is not None or self.params.feature_set != "sen2agri":
            return np.ascontiguousarray(self._stacked(values, mask, obs_days).reshape(
                len(self.names), npix).T)
        out = np.empty((npix, out_days.size * (nb + len(INDICES))), np.float32)
        if npix and out_days.size:
            v = np.ascontiguousarray(values.reshape(values.shape[0], values.shape[1], npix),
                                     dtype=np.float32)
            m = np.ascontiguousarray(mask.reshape(mask.shape[0], npix), dtype=np.uint8)
            _features_kernel(v, m, obs_days, out_days, np.uint8(self.params.excluded_bits & 0xFF),
                             np.uint8(FALLBACK_BITS & self.params.excluded_bits & 0xFF), out)
        return out

    def block(self, values: np.ndarray, mask: np.ndarray, obs_days: np.ndarray) -> np.ndarray:
        """Features of one block: ``values (band, time, ...)``, ``mask (time, ...)`` ->
        ``(feature, ...)`` float32 (NaN where a pixel has no usable observation)."""
        return self.rows(values, mask, obs_days).T.reshape((-1,) + values.shape[2:])

    def _stacked(self, values, mask, obs_days):
        out_days = day_numbers(self.out_dates)
        s = series_block(values, mask, obs_days, out_days, self.params)
        bands = {b: s[i] for i, b in enumerate(self.bands)}
        idx = (index_features(bands) if self.params.feature_set == "sen2agri"
               else index_features_20m(bands))
        per_date = [s[i] for i in range(len(self.bands))] + [idx[k] for k in self.params.indices]
        # (per-date feature, date, ...) -> (date, per-date feature, ...) -> flat
        stacked = np.stack(per_date, axis=1)
        return stacked.reshape((-1,) + values.shape[2:])


# --------------------------------------------------------------------------------------
# dask plumbing


def stack_series(ds: xr.Dataset, bands: tuple[str, ...], chunk: int = 512
                 ) -> tuple[da.Array, da.Array, np.ndarray]:
    """The bands and mask of a multi-date agriseries Dataset as dask arrays for the kernels.

    Parameters
    ----------
    ds
        Dims ``(time, y, x)``, one float32 variable per band, ``mask`` (uint8 common bits;
        all observations count as valid where there is none).
    bands
        Band names, in order.
    chunk
        Spatial chunk edge (pixels); the time axis is one chunk.

    Returns
    -------
    (values, mask, obs_days)
        ``(band, time, y, x)`` float32, ``(time, y, x)`` uint8, float64 day numbers; sorted by
        time.

    Raises
    ------
    MissingBandError
        A band is not in ``ds``.
    """
    missing = [b for b in bands if b not in ds]
    if missing:
        raise MissingBandError(ds.attrs.get("source_path", "the time series"),
                               f"band(s) {', '.join(missing)} needed by the crop features are "
                               f"missing (it has {', '.join(map(str, ds.data_vars))})")
    if "time" not in ds.dims or ds.sizes["time"] == 0:
        raise ConfigurationError("the time series has no date")
    order = np.argsort(np.asarray(ds["time"].values), kind="stable")
    if np.any(order != np.arange(order.size)):
        ds = ds.isel(time=order)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    spatial = {"y": min(chunk, ny), "x": min(chunk, nx)}

    def arr(name):
        d = ds[name].transpose("time", "y", "x").data
        d = d if isinstance(d, da.Array) else da.from_array(d, chunks=(-1, spatial["y"], spatial["x"]))
        return d.rechunk((-1, spatial["y"], spatial["x"]))

    values = da.stack([arr(b).astype(np.float32) for b in bands]).rechunk(
        (-1, -1, spatial["y"], spatial["x"]))
    if "mask" in ds:
        mask = arr("mask").astype(np.uint8)
    else:
        mask = da.zeros((ds.sizes["time"], ny, nx), np.uint8,
                        chunks=(-1, spatial["y"], spatial["x"]))
    return values, mask, day_numbers(ds["time"].values)


def _feature_block(values, mask, extractor, obs_days):
    return extractor.block(values, mask, obs_days)


def feature_map(ds: xr.Dataset, extractor) -> xr.DataArray:
    """Lazy features of every pixel of a multi-date Dataset: ``(feature, y, x)`` float32.

    ``extractor`` is a :class:`SeriesFeatures` (or any object with ``bands``, ``names`` and
    ``block(values, mask, obs_days)``, e.g. :class:`agriseries.crop.nolabels.KeyDateFeatures`).
    The result is a dask-backed DataArray with ``feature`` names as coordinate and the
    Dataset's ``y`` / ``x`` coordinates; it is computed block by block.
    """
    chunk = getattr(getattr(extractor, "params", None), "chunk", 512)
    values, mask, obs_days = stack_series(ds, extractor.bands, chunk)
    names = extractor.names
    feats = da.map_blocks(_feature_block, values, mask, extractor, obs_days, dtype=np.float32,
                          drop_axis=1, chunks=((len(names),),) + values.chunks[2:],
                          name=f"agriseries-crop-features-{uuid.uuid4().hex}")
    coords = {"feature": names, "y": ds["y"], "x": ds["x"]}
    if "spatial_ref" in ds.coords:
        coords["spatial_ref"] = ds["spatial_ref"]
    return xr.DataArray(feats, dims=("feature", "y", "x"), coords=coords, name="features")


def _replicate(ds: xr.Dataset, gb) -> xr.Dataset:
    """``ds`` on the finer grid ``gb``: pixel replication when ``gb`` subdivides ``ds``'s
    pixels exactly (20 m -> 10 m on one lattice), else odc-geo nearest-neighbour reprojection."""
    src = ds.odc.geobox
    ratio = abs(src.resolution.x) / abs(gb.resolution.x)
    k = round(ratio)
    aligned = (src.crs == gb.crs and abs(ratio - k) < 1e-9 and k >= 1
               and abs(src.resolution.y / gb.resolution.y - k) < 1e-9
               and src.affine.c == gb.affine.c and src.affine.f == gb.affine.f
               and src.shape[0] * k == gb.shape[0] and src.shape[1] * k == gb.shape[1])
    if not aligned:
        return ds.odc.reproject(gb, resampling="nearest")
    out = {}
    for name, var in ds.data_vars.items():
        if set(var.dims) != {"time", "y", "x"}:
            continue
        d = var.transpose("time", "y", "x").data
        d = da.repeat(da.repeat(d if isinstance(d, da.Array) else da.from_array(d), k, axis=1),
                      k, axis=2)
        out[name] = xr.DataArray(d, dims=("time", "y", "x"), attrs=var.attrs)
    return xr.Dataset(out, coords={"time": ds["time"]})


def on_grid(ds: xr.Dataset, gb) -> xr.Dataset:
    """A multi-date Dataset on the grid ``gb``: pixels replicated when ``gb`` subdivides the
    Dataset's pixels exactly (20 m -> 10 m on one lattice), else nearest-neighbour
    reprojection; the ``time`` coordinates kept."""
    out = _replicate(ds, gb)
    if "x" not in out.coords:
        from odc.geo.xr import xr_coords

        out = out.assign_coords(xr_coords(gb, crs_coord_name="spatial_ref"))
    return out.assign_coords({k: v for k, v in ds.coords.items() if v.dims == ("time",)})


def merge_resolutions(*datasets: xr.Dataset) -> xr.Dataset:
    """Put multi-date Datasets of one area and the same dates (e.g. the 10 m and 20 m files of
    one extraction) onto the finest grid of them: coarser pixels are replicated when they
    are whole multiples on the same lattice, else resampled nearest neighbour.

    The first Dataset's variables win when a name is in several; the ``mask`` of a coarser
    Dataset is used when the finest has none (Sen2Cor's SCL is at 20 m).

    Raises
    ------
    ConfigurationError
        The Datasets have different dates.
    """
    if not datasets:
        raise ConfigurationError("merge_resolutions: no Dataset given")
    finest = min(datasets, key=lambda d: abs(d.odc.geobox.resolution.x))
    gb = finest.odc.geobox
    times = np.asarray(finest["time"].values)
    out = {}
    for ds in datasets:
        if ds.sizes["time"] != times.size or not np.array_equal(np.asarray(ds["time"].values), times):
            raise ConfigurationError("merge_resolutions: the Datasets do not have the same dates")
        if ds.odc.geobox != gb:
            ds = _replicate(ds, gb)
        for name, var in ds.data_vars.items():
            if name not in out and set(var.dims) == {"time", "y", "x"}:
                out[name] = var.transpose("time", "y", "x")
    merged = xr.Dataset(out, coords=finest.coords, attrs=dict(finest.attrs))
    return merged
