"""Crop mask without in-situ data: a trimmed reference map (Matton et al. 2015, doi:10.3390/rs71013208).

Method: docs/crop.md, "Crop mask without in-situ data".

When no field data exist, the training labels come from a prior land-cover map (Sen2Agri:
ESA-CCI LC 300 m) that is coarse and partly wrong. Sen2Agri's ``CropMaskFused.py`` chain,
followed here step by step:

1. **Reference** (:func:`reference_on_grid`): the map is read onto the product grid
   (nearest neighbour) and recoded: its codes in ``crop_values`` are cropland (1), every
   other code non-cropland (0), its no-data value (and ``ignore_values``) no data (255).
   For ESA-CCI LC pass ``crop_values = (10, 11, 12, 20, 30)`` (rainfed, irrigated and
   mosaic > 50 % cropland); a binary map needs nothing (default ``(1,)``).
2. **Erosion** (:func:`erode_reference`) of each class by ``erosion_radius = 1`` pixel (a
   3 x 3 square structuring element): pixels at the border between crop and non-crop,
   where a coarse map is most often wrong, are dropped.
3. **Time series**: the 5.1 resampling (10-day grid, linear gap filling) followed by
   Whittaker smoothing with ``lambda = 2`` on the grid (:mod:`agriseries.crop.features`).
4. **Temporal features** (:class:`KeyDateFeatures`, Sen2Agri ``TemporalFeaturesNoInsitu``
   and ``FeaturesWithoutInsitu``): per pixel, the **key dates** of maximum NDVI slope,
   minimum NDVI slope (centred difference ``(NDVI[i+1] - NDVI[i-1]) / (t[i+1] - t[i-1])``,
   interior dates), maximum NDVI, minimum NDVI and maximum red reflectance; the features
   are, for each key date, its day in the season (days after the first grid date), every
   band value (4, or 8 with the red edge) and the NDVI there. Sen2Agri's exact feature list
   was not traced beyond "the band values at the key dates"; the day and the NDVI are
   added because they are what the key dates are.
5. **Trimming** (:func:`mahalanobis_trim`, Sen2Agri ``Trimming`` /
   ``MahalanobisPixelExtractor``): for each class separately, repeat: compute the mean and
   covariance of the class's feature vectors, drop the pixels whose squared Mahalanobis
   distance exceeds the chi-square quantile ``chi2^-1(1 - alpha, dim)`` with
   ``alpha = 0.01``; until no pixel is dropped. Mislabelled pixels of a coarse map are
   outliers of their class's distribution and go first. On a full tile a random pool of
   at most ``trim_pool`` pixels per class is trimmed (the mean and covariance of a
   100 000-pixel random subset are as good as the whole class's). Iterated to the end, the
   trimming also peels a class that is a mixture (non-cropland = grassland + built-up +
   woods) down to its main mode: with an accurate reference it removes the minority land
   covers and the map gets worse (docs/crop_evaluation.py: OA 0.63 against 0.91 without
   trimming on the Flanders patch with a clean 80 m reference, 0.82 against 0.78 with 20 %
   of the reference cells wrong). ``alpha = 0`` turns it off.
6. **Samples**: ``samples = 40000`` random pixels of the trimmed pools, in proportion to the
   classes' areas (:func:`agriseries.crop.samples.sample_pixels`), train the random forest
   (100 trees, depth 25, 25 samples; :mod:`agriseries.crop.classifier`).
7. **Validation** against the part of the (eroded, untrimmed) reference held out: the grid
   is cut in blocks of ``block`` pixels (1 km at 10 m) and 25 % of the blocks, drawn at
   random, give only validation pixels. This measures agreement with the reference map,
   which is itself wrong in places: it is not the accuracy of the product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from ..core.errors import ConfigurationError, CorruptProductError, InputProductError
from .features import SeriesParams, date_tags, day_numbers, index_features, series_block
from .params import NoInsituParams  # noqa: F401 -- re-exported

__all__ = [
    "KEYS",
    "KeyDateFeatures",
    "NoInsituParams",
    "block_split",
    "erode_reference",
    "key_date_features",
    "mahalanobis_trim",
    "reference_on_grid",
]

#: The key dates of :class:`KeyDateFeatures`, in order.
KEYS = ("max_ndvi_slope", "min_ndvi_slope", "max_ndvi", "min_ndvi", "max_red")
#: Values of the recoded reference map.
CROP, NONCROP, NODATA = 1, 0, 255


# --------------------------------------------------------------------------------------
# reference map


def reference_on_grid(path: str | Path, geobox: GeoBox, crop_values=(1,),
                      ignore_values=()) -> np.ndarray:
    """A reference land-cover map on ``geobox``, recoded crop 1 / non-crop 0 / no data 255.

    Parameters
    ----------
    path
        A raster GDAL reads (any CRS; read nearest neighbour).
    geobox
        The product grid.
    crop_values
        Codes meaning cropland.
    ignore_values
        Codes meaning no data (besides the file's no-data value and pixels outside it).

    Raises
    ------
    InputProductError
        The file is missing or unreadable, or the map has no valid pixel on the grid.
    """
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.warp import Resampling, reproject

    p = Path(path)
    if not p.exists():
        raise InputProductError(p, "no such reference map")
    ny, nx = geobox.shape
    try:
        with rasterio.open(p) as src:
            if src.crs is None:
                raise InputProductError(p, "the reference map has no CRS")
            nodata = src.nodata
            dst = np.zeros((ny, nx), np.float64)
            inside = np.zeros((ny, nx), np.uint8)
            reproject(rasterio.band(src, 1), dst, dst_transform=geobox.affine,
                      dst_crs=geobox.crs.to_wkt(), resampling=Resampling.nearest,
                      dst_nodata=np.nan)
            ones = np.ones(src.shape, np.uint8)
            reproject(ones, inside, src_transform=src.transform, src_crs=src.crs,
                      dst_transform=geobox.affine, dst_crs=geobox.crs.to_wkt(),
                      resampling=Resampling.nearest, src_nodata=None, dst_nodata=0)
    except RasterioIOError as exc:
        raise CorruptProductError(p, f"cannot read the reference map: {exc}") from exc
    valid = (inside == 1) & np.isfinite(dst)
    if nodata is not None and np.isfinite(nodata):
        valid &= dst != nodata
    if ignore_values:
        valid &= ~np.isin(dst, np.asarray(ignore_values, np.float64))
    out = np.full((ny, nx), NODATA, np.uint8)
    crop = np.isin(dst, np.asarray(crop_values, np.float64))
    out[valid] = np.where(crop[valid], CROP, NONCROP)
    if not valid.any():
        raise InputProductError(p, "the reference map has no valid pixel on the product grid")
    return out


def erode_reference(ref: np.ndarray, radius: int = 1) -> np.ndarray:
    """Erode each class of a recoded reference (0 / 1 / 255) by ``radius`` pixels.

    A pixel keeps its class only if its whole ``(2 radius + 1)`` square neighbourhood has
    that class; the others become 255 (no data). Pixels outside the grid count as another
    class (a class touching the border is eroded there too).
    """
    from scipy import ndimage

    if radius <= 0:
        return ref.copy()
    st = np.ones((2 * radius + 1, 2 * radius + 1), bool)
    out = np.full(ref.shape, NODATA, np.uint8)
    for c in (NONCROP, CROP):
        er = ndimage.binary_erosion(ref == c, structure=st, border_value=0)
        out[er] = c
    return out


def block_split(shape: tuple[int, int], block: int, share: float, seed: int = 0) -> np.ndarray:
    """Per-pixel bool: True in the blocks held out for validation (``share`` of them)."""
    ny, nx = shape
    by, bx = -(-ny // block), -(-nx // block)
    nblocks = by * bx
    rng = np.random.default_rng(seed)
    held = np.zeros(nblocks, bool)
    k = round(share * nblocks)
    if share > 0 and nblocks > 1:
        k = min(max(k, 1), nblocks - 1)
    held[rng.permutation(nblocks)[:k]] = True
    grid = held.reshape(by, bx)
    return np.repeat(np.repeat(grid, block, axis=0), block, axis=1)[:ny, :nx]


# --------------------------------------------------------------------------------------
# features


def key_date_features(series: np.ndarray, out_days: np.ndarray, bands: tuple[str, ...]
                      ) -> np.ndarray:
    """The key-date features of smoothed band series (see the module docstring, step 4).

    Parameters
    ----------
    series
        ``(band, n_dates, npix)`` float32 (NaN for a pixel without data).
    out_days
        Day numbers of the dates.
    bands
        Band names of ``series`` (``B03``, ``B04``, ``B08``, ``B11`` at least).

    Returns
    -------
    numpy.ndarray
        ``(len(KEYS) * (2 + n_bands), npix)`` float32: per key date, the day in the season,
        the band values and the NDVI.
    """
    nb, nt, npix = series.shape
    if nt < 3:
        raise ConfigurationError(f"{nt} dates: the key-date features need at least 3")
    b = {name: series[i] for i, name in enumerate(bands)}
    ndvi = index_features(b)["NDVI"]
    nan_px = ~np.isfinite(series).all(axis=(0, 1))
    filled = np.where(np.isfinite(ndvi), ndvi, 0)
    dt = (out_days[2:] - out_days[:-2])[:, None]
    slope = (filled[2:] - filled[:-2]) / dt
    red = np.where(np.isfinite(b["B04"]), b["B04"], 0)
    idx = np.stack([
        np.argmax(slope, axis=0) + 1,
        np.argmin(slope, axis=0) + 1,
        np.argmax(filled, axis=0),
        np.argmin(filled, axis=0),
        np.argmax(red, axis=0),
    ])
    cols = np.arange(npix)
    day = (out_days - out_days[0]).astype(np.float32)
    feats = []
    for k in range(len(KEYS)):
        i = idx[k]
        feats.append(day[i])
        for j in range(nb):
            feats.append(series[j, i, cols])
        feats.append(ndvi[i, cols])
    out = np.stack(feats).astype(np.float32)
    out[:, nan_px] = np.nan
    return out


@dataclass(frozen=True)
class KeyDateFeatures:
    """Feature extractor of the crop mask without in-situ data (step 4).

    Attributes
    ----------
    out_dates
        The regular grid of dates.
    params
        Series preparation (default: Whittaker lambda 2 on the 10-day grid).
    """

    out_dates: np.ndarray
    params: SeriesParams = field(default_factory=lambda: SeriesParams(smoothing_lambda=2.0))

    @property
    def bands(self) -> tuple[str, ...]:
        """Bands the extractor needs."""
        return self.params.bands

    @property
    def names(self) -> list[str]:
        """``<key>_day``, ``<key>_<band>``, ``<key>_NDVI`` for each key date."""
        out = []
        for k in KEYS:
            out += [f"{k}_day"] + [f"{k}_{b}" for b in self.bands] + [f"{k}_NDVI"]
        return out

    def block(self, values: np.ndarray, mask: np.ndarray, obs_days: np.ndarray) -> np.ndarray:
        """Features of one block: ``(band, time, ...)`` and ``(time, ...)`` -> ``(feature, ...)``."""
        out_days = day_numbers(self.out_dates)
        s = series_block(values, mask, obs_days, out_days, self.params)
        shape = values.shape[2:]
        f = key_date_features(s.reshape(s.shape[0], s.shape[1], -1), out_days, self.bands)
        return f.reshape((f.shape[0],) + shape)

    @property
    def date_tags(self) -> list[str]:
        """``YYYYMMDD`` of the grid dates."""
        return date_tags(self.out_dates)


# --------------------------------------------------------------------------------------
# trimming


def mahalanobis_trim(X: np.ndarray, alpha: float = 0.01, max_iterations: int = 100
                     ) -> tuple[np.ndarray, int]:
    """Iterative Mahalanobis trimming of one class's samples (step 5).

    Parameters
    ----------
    X
        ``(n, dim)`` features of the class (rows with a NaN are dropped at once).
    alpha
        Significance level: a sample goes when its squared distance to the class mean exceeds
        ``chi2.ppf(1 - alpha, dim)`` (0: keep everything).
    max_iterations
        Safety cap on the iterations.

    Returns
    -------
    (keep, iterations)
        Boolean mask of the samples kept, and the number of passes that removed samples.
        Constant features are left out of the distance (their covariance is 0); a class with
        fewer samples than features + 2 is not trimmed.
    """
    from scipy.stats import chi2

    X = np.asarray(X, dtype=np.float64)
    keep = np.isfinite(X).all(axis=1)
    if alpha <= 0:
        return keep, 0
    var = X[keep].var(axis=0) if keep.any() else np.zeros(X.shape[1])
    cols = np.flatnonzero(var > 1e-12 * max(1.0, float(np.nanmax(var)) if var.size else 1.0))
    dim = cols.size
    if dim == 0 or keep.sum() < dim + 2:
        return keep, 0
    Z = X[:, cols]
    thr = chi2.ppf(1.0 - alpha, dim)
    it = 0
    for _ in range(max_iterations):
        sub = Z[keep]
        if sub.shape[0] < dim + 2:
            break
        mu = sub.mean(axis=0)
        cov = np.cov(sub, rowvar=False)
        inv = np.linalg.pinv(np.atleast_2d(cov), hermitian=True)
        d = np.where(keep[:, None], Z - mu, 0.0)
        d2 = np.einsum("ij,jk,ik->i", d, inv, d)
        new = keep & (d2 <= thr)
        if new.sum() == keep.sum():
            break
        keep = new
        it += 1
    return keep, it
