"""The WASP weighted-average synthesis: per-date weights and the recursive update.

This module is the method of docs/l3a.md without any I/O: numpy/dask arrays
in, arrays out. :mod:`agriseries.composite.processor` feeds it the L2A products of a
tile from the store.

Per-date weight (docs/l3a.md, "Weights"), for the clear land pixels of a date::

    W = W_cld * W_aot * W_date * W_sensor

* ``W_cld`` -- distance to clouds: the binary cloud + shadow mask is undersampled to a
  coarse grid (240 m: the share of cloudy pixels in each coarse cell, re-binarised at
  0.5), blurred by two Gaussians of sigma 2 and 10 coarse pixels (local cloud fractions
  ``A`` and ``B``), interpolated back bilinearly at each pixel, and
  ``W_cld = (1 - A)(1 - B)`` (0 where ``A`` or ``B`` reaches 1). The coarse grid covers
  the whole processed area, so the blur has no chunk-edge effects; the Gaussian
  replicates the edge values (ITK's zero-flux boundary) and is truncated at 4 sigma (a
  kernel of at most ``kernel_width`` = 801 coarse pixels).
* ``W_aot`` -- ``W_min + (W_max - W_min)(1 - aot/aot_max)`` below ``aot_max``, ``W_min``
  above, 0 for a negative AOT; 1 where the product has no AOT.
* ``W_date`` -- ``1 - (|d - t_c| / H)(1 - 0.5)`` (linear, the method as described), or
  WASP's integer-division implementation with ``legacy_date_weight``.
* ``W_sensor`` -- 1 for Sentinel-2, 0.33 for Landsat 8/9.

Directional correction (docs/l3a.md): before the update, the reflectance of each clear
land pixel is normalised to nadir view with the date's sun zenith,
``rho * M(ts, 0, 0) / M(ts, tv, phi)``, ``M = 1 + kV FV + kR FR`` with WASP's volume and
roughness kernels and per-band coefficients (``kV = V0 + V1 NDVI``, ``kR = R0 + R1
NDVI``). The kernels depend on the angles only, so they are evaluated on the coarse grid
and interpolated like the cloud fractions.

Recursive update (docs/l3a.md), per pixel, for the dates in time order; state ``W``
(weight), ``D`` (weighted date, days since 1970-01-01), ``F`` (flag: 0 no data,
1 cloud, 2 snow, 3 water, 4 land), ``R`` (one reflectance per band):

* land: weighted mean with the previous clear values (the first clear observation
  replaces anything that is not clear land); a land observation always counts, with a
  weight of at least ``1e-6`` (WASP divides by zero when both weights are 0);
* snow or water (not cloud): ignored where the pixel already has a clear-land value;
  otherwise the most recent snow/water observation is kept, with weight 0;
* cloud (and shadow, cirrus): kept only where nothing better exists, choosing the
  observation with the darkest blue (the least cloudy) -- WASP's minimum-blue rule;
* a date with no valid band at a pixel changes nothing there.

Where this differs from WASP, on purpose, so that the result does not depend on the
order in which the dates are read and a band never mixes clear and cloudy values:

* each band is averaged with its own weight sum, over the clear observations that
  measured it: Landsat has no red edge, so its weight does not dilute the Sentinel-2
  red-edge average (WASP shares one weight per resolution); the ``weight`` layer is
  the sum over all clear observations, as in WASP;
* a kept observation (the first clear one, the darkest cloud, the latest snow/water)
  brings all its bands, and the bands it did not measure become no data, instead of
  keeping values of an observation of another kind (WASP also fills a clear pixel's
  empty bands from cloudy or snowy dates);
* ties in the blue rule and competing snow/water observations go to the later date.

The update runs in a numba kernel (:func:`update_block`) over a block of pixels and all
dates at once; :func:`composite_dask` builds the dask graph for a whole grid, one task
per block, each task getting only its window of the coarse fields.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dask.array as da
import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..core.errors import ConfigurationError
from ..core.graphs import graph_data
from ..core.jit import compiled
from ..core.masks import MaskBit
from .params import WASP_BRDF_COEFFICIENTS, WaspParams  # noqa: F401 -- re-exported

#: Composite flag values (docs/l3a.md, "Flags").
FLAG_NODATA, FLAG_CLOUD, FLAG_SNOW, FLAG_WATER, FLAG_LAND = 0, 1, 2, 3, 4
FLAG_MEANING = "0 no data, 1 cloud, 2 snow, 3 water, 4 land"
#: The least weight a clear land observation gets (WASP's weights can be exactly 0).
MIN_LAND_WEIGHT = 1e-6
#: Dates are counted in days since this day.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

#: Coarse fields per date, in this order: cloud fractions A (small sigma) and B (large
#: sigma), volume and roughness kernels at the date's geometry and at nadir view.
COARSE_FIELDS = ("cloud_small", "cloud_large", "fv", "fr", "fv_nadir", "fr_nadir")

_HOTSPOT = math.radians(1.5)


# -- per-date weights ---------------------------------------------------------------

def date_weight(delta_days, half_period: int, minimum: float = 0.5, legacy: bool = False):
    """``W_date`` for ``delta_days`` = whole days between a date and the synthesis centre.

    Linear: ``1 - (delta / H)(1 - minimum)``, not below ``minimum``. Legacy (WASP's
    integer division): 1 for ``delta < H``, then ``1 - (delta // H)(1 - minimum)``, not
    below ``minimum``.
    """
    d = np.abs(np.asarray(delta_days, dtype=np.float64))
    ratio = np.floor(d / half_period) if legacy else d / half_period
    out = np.maximum(1.0 - ratio * (1.0 - minimum), minimum)
    return out if out.ndim else float(out)


@compiled(nogil=True)
def _aot_weight(aot, wmin, wmax, amax):  # pragma: no cover - compiled
    if aot != aot:  # no AOT for this pixel or product
        return 1.0
    if aot < 0.0:
        return 0.0
    if aot < amax:
        return wmin + (wmax - wmin) * (1.0 - aot / amax)
    return wmin


@compiled(nogil=True)
def _aot_weight_array(aot, wmin, wmax, amax):  # pragma: no cover - compiled
    out = np.empty(aot.shape, np.float32)
    flat, res = aot.ravel(), out.ravel()
    for k in range(flat.size):
        res[k] = _aot_weight(flat[k], wmin, wmax, amax)
    return out


def aot_weight(aot, params: WaspParams = WaspParams()) -> np.ndarray:
    """``W_aot`` of an array of aerosol optical thickness (NaN, i.e. no AOT, gives 1)."""
    arr = np.ascontiguousarray(np.asarray(aot, dtype=np.float32))
    return _aot_weight_array(arr, params.aot_weight_min, params.aot_weight_max, params.aot_max)


def coarse_cloud_share(cloud, valid, factor: int):
    """Share of cloudy pixels among the valid ones in each ``factor x factor`` cell.

    ``cloud`` and ``valid`` are 2-D boolean numpy or dask arrays; the last cells of a
    grid whose size is not a multiple of ``factor`` hold fewer pixels. A cell with no
    valid pixel counts as clear. Returns a float32 numpy array of
    ``ceil(ny / factor) x ceil(nx / factor)`` cells (dask input is computed).
    """
    ny, nx = cloud.shape
    cy, cx = -(-ny // factor), -(-nx // factor)
    pad = ((0, cy * factor - ny), (0, cx * factor - nx))
    if hasattr(cloud, "dask"):
        c = da.pad((cloud & valid).astype(np.float32), pad)
        v = da.pad(valid.astype(np.float32), pad)
        c = c.rechunk(_multiple_chunks(c.chunks, factor))
        v = v.rechunk(c.chunks)
        cs = da.coarsen(np.sum, c, {0: factor, 1: factor})
        vs = da.coarsen(np.sum, v, {0: factor, 1: factor})
        cs, vs = da.compute(cs, vs)
    else:
        c = np.pad((cloud & valid).astype(np.float32), pad)
        v = np.pad(valid.astype(np.float32), pad)
        cs = c.reshape(cy, factor, cx, factor).sum(axis=(1, 3))
        vs = v.reshape(cy, factor, cx, factor).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(vs > 0, cs / np.maximum(vs, 1), 0.0).astype(np.float32)


@compiled(nogil=True)
def _cloud_counts(mask, cloud_bits, invalid_bits, factor, cs, vs):  # pragma: no cover - compiled
    for i in range(mask.shape[0]):
        ci = i // factor
        for j in range(mask.shape[1]):
            m = mask[i, j]
            if (m & invalid_bits) == 0:
                cj = j // factor
                vs[ci, cj] += 1
                if m & cloud_bits:
                    cs[ci, cj] += 1


def mask_cloud_share(mask: np.ndarray, cloud_bits: int, invalid_bits: int, factor: int
                     ) -> np.ndarray:
    """:func:`coarse_cloud_share` of ``(mask & cloud_bits) != 0`` among
    ``(mask & invalid_bits) == 0``, counted in one compiled pass over a 2-D mask in memory
    (its low 8 bits, as the update reads it); the same float32 values."""
    m = np.ascontiguousarray(np.asarray(mask).astype(np.uint8, copy=False))
    ny, nx = m.shape
    cy, cx = -(-ny // factor), -(-nx // factor)
    cs = np.zeros((cy, cx), np.int64)
    vs = np.zeros((cy, cx), np.int64)
    _cloud_counts(m, np.uint8(cloud_bits & 0xFF), np.uint8(invalid_bits & 0xFF), int(factor),
                  cs, vs)
    cs, vs = cs.astype(np.float32), vs.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(vs > 0, cs / np.maximum(vs, 1), 0.0).astype(np.float32)


def _multiple_chunks(chunks, factor):
    out = []
    for axis in chunks:
        n = sum(axis)
        step = max(factor, (max(axis) // factor) * factor)
        out.append(tuple(min(step, n - i) for i in range(0, n, step)))
    return tuple(out)


def cloud_fractions(share: np.ndarray, params: WaspParams = WaspParams()
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The local cloud fractions ``A`` and ``B`` on the coarse grid (docs/l3a.md, "Cloud weight").

    ``share`` is the cloudy share of each coarse cell (:func:`coarse_cloud_share`); it is
    re-binarised at ``coarse_threshold`` and blurred with the two Gaussians.
    """
    from scipy.ndimage import gaussian_filter

    binary = (np.asarray(share, np.float64) > params.coarse_threshold + 1e-4).astype(np.float64)
    radius = (params.kernel_width - 1) // 2
    out = []
    for sigma in (params.sigma_small, params.sigma_large):
        truncate = min(4.0, radius / sigma)
        out.append(gaussian_filter(binary, sigma, mode="nearest", truncate=truncate)
                   .astype(np.float32))
    return out[0], out[1]


def cloud_weight(a, b):
    """``W_cld = (1 - |A|)(1 - |B|)``, 0 where ``|A|`` or ``|B|`` reaches 1."""
    a, b = np.abs(np.asarray(a, np.float32)), np.abs(np.asarray(b, np.float32))
    return np.where((a >= 1) | (b >= 1), np.float32(0), (1 - a) * (1 - b))


# -- directional correction ---------------------------------------------------------

def directional_kernels(sun_zenith, sun_azimuth, view_zenith, view_azimuth):
    """WASP's volume and roughness kernels ``(FV, FR)``, angles in degrees (docs/l3a.md).

    ``phi`` is the relative azimuth ``sun_azimuth - view_azimuth``. NaN angles give NaN.
    """
    ts = np.radians(np.asarray(sun_zenith, np.float64))
    tv = np.radians(np.asarray(view_zenith, np.float64))
    phi = np.radians(np.asarray(sun_azimuth, np.float64) - np.asarray(view_azimuth, np.float64))
    tan_s, tan_v = np.tan(ts), np.tan(tv)
    cos_s, cos_v = np.cos(ts), np.cos(tv)
    delta = np.sqrt(np.maximum(tan_s ** 2 + tan_v ** 2 - 2 * tan_s * tan_v * np.cos(phi), 0.0))
    mass = 1.0 / cos_s + 1.0 / cos_v
    cos_xi = np.clip(cos_s * cos_v + np.sin(ts) * np.sin(tv) * np.cos(phi), -1.0, 1.0)
    xi = np.arccos(cos_xi)
    cos_t = np.clip(np.sqrt(delta ** 2 + (tan_s * tan_v * np.sin(phi)) ** 2) / mass, -1.0, 1.0)
    t = np.arccos(cos_t)
    fv = (mass / np.pi) * (t - np.sin(t) * cos_t - np.pi) + (1.0 + cos_xi) / (2.0 * cos_s * cos_v)
    fr = (4.0 / (3.0 * np.pi)) / (cos_s + cos_v) * ((np.pi / 2 - xi) * cos_xi + np.sin(xi)) \
        * (1.0 + 1.0 / (1.0 + xi / _HOTSPOT)) - 1.0 / 3.0
    return fv, fr


def directional_factor(band: str, ndvi, sun_zenith, sun_azimuth, view_zenith, view_azimuth,
                       params: WaspParams = WaspParams()):
    """The factor ``M(ts, 0, 0) / M(ts, tv, phi)`` that brings a reflectance to nadir view."""
    v0, v1, r0, r1 = params.brdf_coefficients[band]
    fv, fr = directional_kernels(sun_zenith, sun_azimuth, view_zenith, view_azimuth)
    fv0, fr0 = directional_kernels(sun_zenith, sun_azimuth, 0.0, view_azimuth)
    kv, kr = v0 + v1 * np.asarray(ndvi), r0 + r1 * np.asarray(ndvi)
    return (1 + kv * fv0 + kr * fr0) / (1 + kv * fv + kr * fr)


def coarse_fields(share: np.ndarray, angles: Mapping[str, np.ndarray] | None,
                  params: WaspParams = WaspParams()) -> np.ndarray:
    """The six coarse fields of one date (:data:`COARSE_FIELDS`), float32 ``(6, cy, cx)``.

    ``angles`` holds ``sun_zenith``, ``sun_azimuth``, ``view_zenith``, ``view_azimuth``
    (degrees) on the coarse grid; without them (or with directional correction off) the
    kernel fields are NaN and no correction is applied.
    """
    a, b = cloud_fractions(share, params)
    out = np.full((len(COARSE_FIELDS),) + a.shape, np.nan, np.float32)
    out[0], out[1] = a, b
    if params.directional_correction and angles is not None:
        sz, sa = angles["sun_zenith"], angles["sun_azimuth"]
        vz, va = angles["view_zenith"], angles["view_azimuth"]
        with np.errstate(invalid="ignore"):
            out[2], out[3] = directional_kernels(sz, sa, vz, va)
            out[4], out[5] = directional_kernels(sz, sa, np.zeros_like(vz), va)
    return out


# -- the per-pixel update -------------------------------------------------------------

# The kernel reads each date's inputs (the blocks of its bands, mask and AOT) where the reads
# left them, through their addresses, instead of from one (dates, bands, rows, columns) stack
# copied together for each block (4.3 of the 103 CPU seconds of a full-tile month): numba
# takes a fixed number of arrays, and a typed list of them costs a compilation per process.
# The caller keeps every array alive until the kernel returns (_BlockInputs).

@intrinsic
def _pointer(typingctx, address):
    """An integer address as a void pointer (for ``numba.carray``)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(types.intp), codegen


@compiled(nogil=True)
def _f32_row(address, stride, i, w):  # pragma: no cover - compiled
    # row ``i`` (``w`` float32) of a 2-D array at ``address`` whose rows are ``stride`` bytes apart
    return numba.carray(_pointer(address + i * stride), (w,), np.float32)


@compiled(nogil=True)
def _u8_row(address, stride, i, w):  # pragma: no cover - compiled
    return numba.carray(_pointer(address + i * stride), (w,), np.uint8)


class _BlockInputs:
    """The addresses and row strides (bytes) of a block's 2-D inputs, for :func:`_update`:
    ``refl[t, b]`` (float32), ``mask[t]`` (uint8), ``aot[t]`` (float32); ``aot_known[t]``
    False where date t has no AOT (its block all NaN: the kernel does not scan it). Holds
    each array (converted to its type and to unit column steps where it was not) until it
    is dropped, so the addresses stay valid while the kernel runs."""

    def __init__(self, nt: int, nb: int, h: int, w: int):
        self.h, self.w = h, w
        self.refl = np.zeros((2, nt, nb), np.intp)
        self.mask = np.zeros((2, nt), np.intp)
        self.aot = np.zeros((2, nt), np.intp)
        self.aot_known = np.ones(nt, np.bool_)  # False: the date has no AOT (all NaN)
        self._held: list[np.ndarray] = []

    def put(self, table: np.ndarray, where: tuple, arr, dtype) -> None:
        a = np.asarray(arr)
        if a.shape != (self.h, self.w):
            raise ValueError(f"a block input of shape {a.shape}, expected {(self.h, self.w)}")
        if a.dtype != dtype or a.strides[1] != a.itemsize or a.strides[0] < a.itemsize * self.w:
            a = np.ascontiguousarray(a, dtype)
        self._held.append(a)
        table[(0,) + where] = a.__array_interface__["data"][0]
        table[(1,) + where] = a.strides[0]


# What one date does at one pixel (the kernel's first pass over a row, see _update).
_SKIP, _TAKE_CLOUD, _TAKE_SNOW, _TAKE_WATER, _LAND_MEAN, _LAND_FIRST = 0, 1, 2, 3, 4, 5


@compiled(nogil=True, error_model="numpy")
def _weight_pass(ca_row, cb_row, seg, ix0, ix1, fx, arow, has_aot, wd, aot_min, aot_maxw,
                 aot_max, kind, wcur):  # pragma: no cover - compiled (tested through update_block)
    # The weight ``wcur`` the date brings at each pixel of the row: for clear land
    # (``kind``), ``W_cld W_aot W_date W_sensor``, at least 1e-6; else 0. Computed at every
    # pixel, without a branch (the selects are _aot_weight's and the cloud weight's
    # tests, in their order), then selected with ``kind``. ``seg``: the
    # starts of the runs of pixels that interpolate between the same two coarse cells
    # (then the row's length), unsigned: within a run the coarse values are loop constants
    # and the loop vectorises (no gather; unsigned indices, no negative-index wraparound).
    for s in range(seg.shape[0] - 1):
        j0, j1 = seg[s], seg[s + 1]
        c0, c1 = ix0[j0], ix1[j0]
        a0, a1, b0, b1 = ca_row[c0], ca_row[c1], cb_row[c0], cb_row[c1]
        if has_aot:
            for k in range(j0, j1):
                g = fx[k]
                ca = abs(a0 * (1.0 - g) + a1 * g)
                cb = abs(b0 * (1.0 - g) + b1 * g)
                wcld = 0.0 if (ca >= 1.0) | (cb >= 1.0) else (1.0 - ca) * (1.0 - cb)
                a = arow[k]
                wa = aot_min + (aot_maxw - aot_min) * (1.0 - a / aot_max)
                wa = wa if a < aot_max else aot_min
                wa = 0.0 if a < 0.0 else wa
                wa = 1.0 if a != a else wa
                wc = wcld * wa * wd
                wc = 1e-6 if wc < 1e-6 else wc
                wcur[k] = wc if kind[k] >= _LAND_MEAN else 0.0
        else:  # no AOT on this row: W_aot is 1 (as _aot_weight of NaN)
            for k in range(j0, j1):
                g = fx[k]
                ca = abs(a0 * (1.0 - g) + a1 * g)
                cb = abs(b0 * (1.0 - g) + b1 * g)
                wcld = 0.0 if (ca >= 1.0) | (cb >= 1.0) else (1.0 - ca) * (1.0 - cb)
                wc = wcld * 1.0 * wd
                wc = 1e-6 if wc < 1e-6 else wc
                wcur[k] = wc if kind[k] >= _LAND_MEAN else 0.0


@compiled(nogil=True, error_model="numpy")
def _classify(mrow, anyv, sf, sw, sd, rblue, sblue, has_blue, d, cloud_bits, invalid_bits,
              water_bit, snow_bit, kind, later, earlier, darker, wle0, wgt0
              ):  # pragma: no cover - compiled (tested through update_block)
    # What the date does at each pixel of the row (``kind``): the rules of the module
    # docstring written with selects, not branches, in passes of one type each (the
    # comparisons of float64 dates, those of float32 blues and weights, then the uint8
    # flags and mask bits) so that LLVM vectorises each; every test is evaluated at every
    # pixel (they only read), then the first rule that applies gives the kind, as the chain of ifs they replace did.
    n = kind.shape[0]
    for j in range(n):
        dp = sd[j]
        later[j] = d > dp
        earlier[j] = d < dp
    for j in range(n):
        wp = sw[j]
        wle0[j] = wp <= 0.0
        wgt0[j] = wp > 0.0
    if has_blue:
        # cloud or shadow over cloud: the darkest blue (ties to the later date)
        for j in range(n):
            bc, bp = rblue[j], sblue[j]
            darker[j] = (bc == bc) & ((bp != bp) | (bc < bp) | ((bc == bp) & later[j]))
    else:
        darker[:] = False  # no blue at this date: NaN, never darker
    cb, ib = np.uint8(cloud_bits & 0xFF), np.uint8(invalid_bits & 0xFF)
    wb, sb = np.uint8(water_bit & 0xFF), np.uint8(snow_bit & 0xFF)
    swb = np.uint8((water_bit | snow_bit) & 0xFF)
    for j in range(n):
        m, fprev = mrow[j], sf[j]
        # cloud or shadow: kept only where nothing better exists
        take_cloud = (fprev == 0) | ((fprev == 1) & darker[j])
        # snow or water: only where no clear land was seen; the latest wins
        take_sw = wle0[j] & (not (((fprev == 2) | (fprev == 3)) & earlier[j]))
        kd_sw = np.uint8(_TAKE_WATER) if (m & wb) != 0 else np.uint8(_TAKE_SNOW)
        kd = np.uint8(_LAND_MEAN) if wgt0[j] else np.uint8(_LAND_FIRST)
        kd = (kd_sw if take_sw else np.uint8(_SKIP)) if (m & swb) != 0 else kd
        kd = (np.uint8(_TAKE_CLOUD) if take_cloud else np.uint8(_SKIP)) if (m & cb) != 0 else kd
        kind[j] = kd if ((m & ib) == 0) & anyv[j] else np.uint8(_SKIP)


@compiled(nogil=True, error_model="numpy")
def _band_pass(rb, sr, swb, kind, wcur, ndvi, kfv, kfr, kfv0, kfr0, bok, corr_any, cv0, cv1,
               cr0, cr1):  # pragma: no cover - compiled (tested through update_block)
    # One band of one row at one date: the directional correction and the state update of
    # each pixel (what ``kind`` says the date does there). A function of its own, not a
    # loop inside _update: there LLVM left it scalar (its remarks blame the cost model and
    # the mixed float32/float64 arithmetic), here it vectorises it (the float64 divisions
    # of the correction and of the weighted mean go four at a time, ``vdivpd`` on AVX2),
    # with the same operations per pixel, so the same values; the kernel takes about a
    # quarter less time (docs/benchmarks.md, L3A). Rows where no pixel is corrected go
    # through _band_pass_plain instead.
    for j in range(rb.shape[0]):
        kd = kind[j]
        raw = rb[j]
        v = raw
        if corr_any:
            nd = ndvi[j]
            kv = cv0 + cv1 * nd
            kr = cr0 + cr1 * nd
            den = 1.0 + kv * kfv[j] + kr * kfr[j]
            corr = raw * (1.0 + kv * kfv0[j] + kr * kfr0[j]) / den
            v = np.float32(corr) if (bok[j] and den != 0.0 and corr >= 0.0) else raw
        wb, r0, wc = swb[j], sr[j], wcur[j]
        valid = v == v
        mean = np.float32((wb * r0 + wc * v) / (wb + wc))
        r_mean = (mean if wb > 0.0 else v) if valid else r0
        w_mean = np.float32(wb + wc) if valid else wb
        w_first = np.float32(wc) if valid else np.float32(0.0)
        if kd == _LAND_MEAN:
            r_new, w_new = r_mean, w_mean
        elif kd == _LAND_FIRST:
            r_new, w_new = v, w_first
        elif kd == _SKIP:
            r_new, w_new = r0, wb
        else:
            r_new, w_new = raw, np.float32(0.0)
        sr[j] = r_new
        swb[j] = w_new


@compiled(nogil=True, error_model="numpy")
def _band_pass_plain(rb, sr, swb, kind, wcur):  # pragma: no cover - compiled
    # _band_pass without the directional correction (no pixel of the row corrected): the
    # same values from the raw value, its selects regrouped (fewer blends): the state is
    # kept where the date is skipped or its land value is no data; else the weighted mean
    # (a previous clear value) or the value itself, with the summed weight (mean), the
    # date's weight (first clear value) or 0 (first no data, kept observations).
    for j in range(rb.shape[0]):
        kd = kind[j]
        v = rb[j]
        wb, r0, wc = swb[j], sr[j], wcur[j]
        valid = v == v
        is_mean = kd == _LAND_MEAN
        mean = np.float32((wb * r0 + wc * v) / (wb + wc))
        keep = (kd == _SKIP) | (is_mean & (not valid))
        sr[j] = r0 if keep else (mean if is_mean & (wb > 0.0) else v)
        swb[j] = wb if keep else (np.float32(wb + wc) if is_mean else (
            np.float32(wc) if (kd == _LAND_FIRST) & valid else np.float32(0.0)))


@compiled(nogil=True, error_model="numpy")
def _state_pass(sw, sd, sf, kind, wcur, d):  # pragma: no cover - compiled
    # The weight, date and flag of one row at one date, as _band_pass for the bands: every
    # pixel's state is written (a skipped pixel gets its own values back), so the loop
    # has no branch.
    for j in range(kind.shape[0]):
        kd = kind[j]
        wprev, dprev, wc = sw[j], sd[j], wcur[j]
        ws = wprev + wc
        d_mean = (wprev * dprev + wc * d) / ws
        land = (kd == _LAND_MEAN) | (kd == _LAND_FIRST)
        sw[j] = (np.float32(ws) if kd == _LAND_MEAN else np.float32(wc)) if land else (
            wprev if kd == _SKIP else np.float32(0.0))
        sd[j] = (d_mean if kd == _LAND_MEAN else d) if kd != _SKIP else dprev
    for j in range(kind.shape[0]):  # the flag apart: a loop of uint8 only
        kd, fprev = kind[j], sf[j]
        land = (kd == _LAND_MEAN) | (kd == _LAND_FIRST)
        sf[j] = (np.uint8(4) if land else kd) if kd != _SKIP else fprev


@compiled(nogil=True, error_model="numpy")
def _update(refl, avail, mask, aot, aot_known, coarse, iy0, iy1, fy, ix0, ix1, fx, seg, dates,
            wds, coefs, blue, red, nir, brdf, cloud_bits, invalid_bits, water_bit, snow_bit,
            aot_min, aot_maxw, aot_max, state_w, state_d, state_f, state_r, state_wb
            ):  # pragma: no cover - compiled (tested through update_block)
    # ``refl``, ``mask``, ``aot``: the addresses and row strides of the inputs (_BlockInputs:
    # ``refl[0, t, b]`` the address of date t's band b, ``refl[1, t, b]`` its row stride).
    # Rows outside, dates inside: a row's state (nb x w values) stays in the cache over the
    # dates; each pixel still sees the dates in time order. For each (row, date), passes
    # over the row's pixels, each without branches so that LLVM can vectorise it: what
    # the date does at each pixel (:func:`_classify`: ``kind``), the weight it brings
    # (:func:`_weight_pass`: ``wcur``, the land weight where ``kind`` is land, else 0;
    # ``seg``: the runs of columns between the same two coarse cells; ``aot_known[t]``
    # False: date t has no AOT), the directional kernels and
    # NDVI where the correction applies (a pass of its own, run only on rows where the
    # date's kernel fields are not all NaN), then one pass per band (:func:`_band_pass`,
    # or :func:`_band_pass_plain` where no pixel is corrected), then one for the weight,
    # date and flag (:func:`_state_pass`). Every pixel goes through the same operations,
    # in the same order and types, as the per-pixel update of docs/l3a.md (no fastmath:
    # no contraction into FMA).
    nt, nb = refl.shape[1], refl.shape[2]
    h, w = state_w.shape
    nf = coarse.shape[1]
    cw = coarse.shape[3]
    nan = np.float32(np.nan)
    row = np.empty((nf, cw), np.float32)
    kind = np.empty(w, np.uint8)
    anyv = np.empty(w, np.bool_)
    wcur = np.empty(w, np.float64)
    later = np.empty(w, np.bool_)
    earlier = np.empty(w, np.bool_)
    darker = np.empty(w, np.bool_)
    wle0 = np.empty(w, np.bool_)
    wgt0 = np.empty(w, np.bool_)
    bok = np.empty(w, np.bool_)  # the directional correction applies (land, kernels known)
    ndvi = np.empty(w, np.float64)
    kfv = np.empty(w, np.float64)
    kfr = np.empty(w, np.float64)
    kfv0 = np.empty(w, np.float64)
    kfr0 = np.empty(w, np.float64)
    for i in range(h):
        a0, a1, f = iy0[i], iy1[i], fy[i]
        sw, sd, sf = state_w[i], state_d[i], state_f[i]
        for t in range(nt):
            d = dates[t]
            wd = wds[t]
            mrow = _u8_row(mask[0, t], mask[1, t], i, w)
            arow = _f32_row(aot[0, t], aot[1, t], i, w)
            for k in range(nf):
                for c in range(cw):
                    row[k, c] = coarse[t, k, a0, c] * (1.0 - f) + coarse[t, k, a1, c] * f
            # the directional kernels of a pixel are NaN where all four interpolated fields
            # are (NaN times anything is NaN): a row whose fields are all NaN (no angles)
            # corrects no pixel
            kernels = False
            if brdf:
                for k in range(2, nf):
                    for c in range(cw):
                        kernels = kernels | (row[k, c] == row[k, c])
            # a row of the date's AOT all NaN (or a date without AOT): W_aot is 1 at every
            # pixel
            has_aot = False
            if aot_known[t]:
                for j in range(w):
                    has_aot = has_aot | (arow[j] == arow[j])
            # a date with no valid band at a pixel changes nothing there
            anyv[:] = False
            for b in range(nb):
                if avail[t, b]:
                    rb = _f32_row(refl[0, t, b], refl[1, t, b], i, w)
                    for j in range(w):
                        anyv[j] = anyv[j] | (rb[j] == rb[j])
            has_blue = avail[t, blue]
            rblue = _f32_row(refl[0, t, blue], refl[1, t, blue], i, w)
            sblue = state_r[blue, i]
            _classify(mrow, anyv, sf, sw, sd, rblue, sblue, has_blue, d, cloud_bits,
                      invalid_bits, water_bit, snow_bit, kind, later, earlier, darker, wle0,
                      wgt0)
            _weight_pass(row[0], row[1], seg, ix0, ix1, fx, arow, has_aot, wd, aot_min,
                         aot_maxw, aot_max, kind, wcur)
            corr_any = False
            if kernels:
                rred = _f32_row(refl[0, t, red], refl[1, t, red], i, w)
                rnir = _f32_row(refl[0, t, nir], refl[1, t, nir], i, w)
                has_ndvi = red >= 0 and nir >= 0 and avail[t, red] and avail[t, nir]
                for j in range(w):
                    bok[j] = False
                    if kind[j] >= _LAND_MEAN:
                        c0, c1, g = ix0[j], ix1[j], fx[j]
                        fv = row[2, c0] * (1.0 - g) + row[2, c1] * g
                        fr = row[3, c0] * (1.0 - g) + row[3, c1] * g
                        fv0 = row[4, c0] * (1.0 - g) + row[4, c1] * g
                        fr0 = row[5, c0] * (1.0 - g) + row[5, c1] * g
                        if fv == fv and fr == fr and fv0 == fv0 and fr0 == fr0:
                            bok[j] = True
                            corr_any = True
                            kfv[j], kfr[j], kfv0[j], kfr0[j] = fv, fr, fv0, fr0
                            nd = 0.0
                            if has_ndvi:
                                rr, nn = rred[j], rnir[j]
                                if rr == rr and nn == nn and abs(nn + rr) > 1e-6:
                                    nd = (nn - rr) / (nn + rr)
                            ndvi[j] = nd
                    if not bok[j]:
                        # harmless values for the branch-free band pass (not used)
                        kfv[j], kfr[j], kfv0[j], kfr0[j], ndvi[j] = 0.0, 0.0, 0.0, 0.0, 0.0
            # one branch-free pass per band
            for b in range(nb):
                sr, swb = state_r[b, i], state_wb[b, i]
                if not avail[t, b]:
                    # the band is no data at this date: a kept observation brings it as no
                    # data; a weighted mean leaves it
                    for j in range(w):
                        kd = kind[j]
                        take = kd != _SKIP and kd != _LAND_MEAN
                        sr[j] = nan if take else sr[j]
                        swb[j] = np.float32(0.0) if take else swb[j]
                    continue
                rb = _f32_row(refl[0, t, b], refl[1, t, b], i, w)
                if corr_any:
                    _band_pass(rb, sr, swb, kind, wcur, ndvi, kfv, kfr, kfv0, kfr0, bok,
                               corr_any, coefs[b, 0], coefs[b, 1], coefs[b, 2], coefs[b, 3])
                else:
                    _band_pass_plain(rb, sr, swb, kind, wcur)
            # weight, date and flag
            _state_pass(sw, sd, sf, kind, wcur, d)


@dataclass(frozen=True)
class BlockSetup:
    """What every block of one grid shares: the dates, their weights and the band roles.

    Attributes
    ----------
    bands
        Band names of the stack: the output bands first, then helper bands (the blue of
        the 20 m update).
    n_out
        Number of output bands.
    avail
        ``(dates, bands)``: whether each date's sensor has each band.
    days
        Dates in days since 1970-01-01 (float).
    date_sensor_weight
        ``W_date * W_sensor`` of each date.
    ratio
        Pixel size / coarse pixel size.
    """

    bands: tuple[str, ...]
    n_out: int
    avail: np.ndarray
    days: np.ndarray
    date_sensor_weight: np.ndarray
    ratio: float
    params: WaspParams

    def roles(self) -> tuple[int, int, int]:
        """Stack indices of blue (or the shortest band), red and NIR (-1: absent)."""
        names = list(self.bands)
        blue = names.index("B02") if "B02" in names else _shortest(names)
        red = names.index("B04") if "B04" in names else -1
        nir = names.index("B08") if "B08" in names else (
            names.index("B8A") if "B8A" in names else -1)
        return blue, red, nir

    def coefficients(self) -> np.ndarray:
        coefs = np.zeros((len(self.bands), 4), np.float32)
        for k, b in enumerate(self.bands):
            coefs[k] = self.params.brdf_coefficients.get(b, (0.0, 0.0, 0.0, 0.0))
        return coefs


def _shortest(names: Sequence[str]) -> int:
    from ..core.bands import SENSORS

    table = SENSORS["S2A"]
    waves = [table[n].center_wavelength if n in table else 1e9 for n in names]
    return int(np.argmin(waves))


def _interp_index(start: int, n: int, ratio: float, c0: int, nc: int):
    pos = (start + np.arange(n) + 0.5) * ratio - 0.5 - c0
    f0 = np.floor(pos)
    i0 = np.clip(f0, 0, nc - 1).astype(np.int64)
    i1 = np.clip(f0 + 1, 0, nc - 1).astype(np.int64)
    return i0, i1, (pos - f0).astype(np.float32)


def coarse_window(start: int, n: int, ratio: float, total: int) -> tuple[int, int]:
    """Coarse rows (or columns) ``[c0, c1)`` that pixels ``start .. start + n - 1`` interpolate from."""
    lo = math.floor((start + 0.5) * ratio - 0.5)
    hi = math.floor((start + n - 0.5) * ratio - 0.5) + 1
    return max(0, min(lo, total - 1)), max(1, min(hi + 1, total))


class WorkBuffers:
    """Work arrays the block tasks of one composite reuse (the update's state), so that a
    block does not allocate and fault in fresh pages for each of them: about a quarter of a block's time went there. A task takes an array of a
    shape and type (a free one, else a new one) and gives it back when done; the pool
    holds at most what the tasks running at once used. Pickled (a distributed cluster)
    it arrives empty."""

    def __init__(self):
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def __reduce__(self):
        return (WorkBuffers, ())

    def take(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        return np.empty(shape, dtype)

    def give(self, *arrays: np.ndarray) -> None:
        with self._lock:
            for a in arrays:
                self._free.setdefault((a.shape, a.dtype.str), []).append(a)


def update_block(refl: np.ndarray, mask: np.ndarray, aot: np.ndarray, coarse: np.ndarray,
                 setup: BlockSetup, row0: int = 0, col0: int = 0, cy0: int = 0,
                 cx0: int = 0, buffers: WorkBuffers | None = None) -> np.ndarray:
    """Run the recursive update over a block of pixels and all dates.

    Parameters
    ----------
    refl
        ``(dates, bands, h, w)`` float32 reflectance, NaN no data, bands as in ``setup``
        (values of a band a date's sensor does not have are ignored).
    mask
        ``(dates, h, w)`` uint8 common mask bits.
    aot
        ``(dates, h, w)`` float32 AOT, NaN where unknown.
    coarse
        ``(dates, 6, cy, cx)`` coarse fields (:func:`coarse_fields`), the window
        starting at coarse cell ``(cy0, cx0)``.
    setup
        The dates, weights and bands (:class:`BlockSetup`).
    row0, col0
        Position of the block's first pixel in the grid.
    buffers
        Where the update's state arrays are taken from and given back to (default: new
        arrays).

    Returns
    -------
    numpy.ndarray
        ``(3 + n_out, h, w)`` float32: weight, weighted date (days since 1970-01-01,
        NaN no data), flag, then the ``n_out`` output bands (NaN no data).
    """
    nt, nb, h, w = refl.shape
    refl = np.asarray(refl, np.float32)
    mask, aot = np.asarray(mask, np.uint8), np.asarray(aot, np.float32)
    inputs = _BlockInputs(nt, nb, h, w)
    for t in range(nt):
        for b in range(nb):
            inputs.put(inputs.refl, (t, b), refl[t, b], np.float32)
        inputs.put(inputs.mask, (t,), mask[t], np.uint8)
        inputs.put(inputs.aot, (t,), aot[t], np.float32)
    return _run_update(inputs, coarse, setup, row0, col0, cy0, cx0, buffers)


def _run_update(inputs: "_BlockInputs", coarse: np.ndarray, setup: BlockSetup, row0: int,
                col0: int, cy0: int, cx0: int, buffers: WorkBuffers | None) -> np.ndarray:
    """:func:`update_block` on the inputs' addresses."""
    nb, h, w = inputs.refl.shape[2], inputs.h, inputs.w
    p = setup.params
    iy0, iy1, fy = _interp_index(row0, h, setup.ratio, cy0, coarse.shape[2])
    ix0, ix1, fx = _interp_index(col0, w, setup.ratio, cx0, coarse.shape[3])
    # the runs of columns between the same two coarse cells (_weight_pass)
    seg = np.concatenate(([0], np.flatnonzero((np.diff(ix0) != 0) | (np.diff(ix1) != 0)) + 1,
                          [w] if w else [])).astype(np.uint64)
    pool = buffers if buffers is not None else WorkBuffers()
    sw = pool.take((h, w), np.float32)
    sd = pool.take((h, w), np.float64)
    sf = pool.take((h, w), np.uint8)
    sr = pool.take((nb, h, w), np.float32)
    swb = pool.take((nb, h, w), np.float32)
    sw.fill(0)
    sd.fill(np.nan)
    sf.fill(0)
    sr.fill(np.nan)
    swb.fill(0)
    blue, red, nir = setup.roles()
    _update(inputs.refl, np.ascontiguousarray(setup.avail, np.bool_), inputs.mask, inputs.aot,
            inputs.aot_known,
            np.ascontiguousarray(coarse, np.float32), iy0, iy1, fy, ix0, ix1, fx, seg,
            np.asarray(setup.days, np.float64), np.asarray(setup.date_sensor_weight, np.float64),
            setup.coefficients(), blue, red, nir, bool(p.directional_correction), p.cloud_bits,
            p.invalid_bits, int(MaskBit.WATER), int(MaskBit.SNOW), p.aot_weight_min,
            p.aot_weight_max, p.aot_max, sw, sd, sf, sr, swb)
    out = np.empty((3 + setup.n_out, h, w), np.float32)
    out[0] = sw
    out[1] = sd
    out[2] = sf
    out[3:] = sr[:setup.n_out]
    pool.give(sw, sd, sf, sr, swb)
    return out


def _block_task(band_blocks, mask_blocks, aot_blocks, coarse, setup, row0, col0, cy0, cx0,
                buffers=None):
    h, w = np.shape(mask_blocks[0])
    nt, nb = len(mask_blocks), len(setup.bands)
    inputs = _BlockInputs(nt, nb, h, w)  # the blocks as the reads made them: no copy
    for t in range(nt):
        for b, blk in enumerate(band_blocks[t]):
            inputs.put(inputs.refl, (t, b), _nan_block(h, w) if blk is None else blk, np.float32)
        aot = aot_blocks[t]
        inputs.put(inputs.aot, (t,), _nan_block(h, w) if aot is None else aot, np.float32)
        inputs.aot_known[t] = aot is not None
        inputs.put(inputs.mask, (t,), mask_blocks[t], np.uint8)
    return _run_update(inputs, coarse, setup, row0, col0, cy0, cx0, buffers)


@functools.lru_cache(maxsize=8)
def _nan_block(h: int, w: int) -> np.ndarray:
    """A read-only float32 block of NaN: a band or AOT a date does not have."""
    out = np.full((h, w), np.nan, np.float32)
    out.flags.writeable = False
    return out


def composite_dask(bands: Sequence[Sequence[da.Array | None]], masks: Sequence[da.Array],
                   aots: Sequence[da.Array | None], coarse: Sequence[np.ndarray],
                   setup: BlockSetup) -> da.Array:
    """The composite of one grid as a lazy ``(3 + n_out, y, x)`` float32 dask array.

    ``bands[t][b]`` is the 2-D reflectance of date ``t`` and band ``setup.bands[b]``
    (``None`` when the sensor lacks it), ``masks[t]`` its mask, ``aots[t]`` its AOT or
    ``None``; every array has the same shape and chunks. ``coarse[t]`` are the date's
    coarse fields on the whole grid's coarse grid. One task per block; each task gets
    only the window of the coarse fields it interpolates from: in the graph on the local
    scheduler, scattered to the workers once on a distributed one (the graph names it by
    key), so that the graph a distributed computation sends holds no pixels.
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    if not masks:
        raise ConfigurationError("no date to composite")
    ref = masks[0]
    for arr in [a for row in bands for a in row if a is not None] + list(masks) + \
            [a for a in aots if a is not None]:
        if arr.shape != ref.shape or arr.chunks != ref.chunks:
            raise ConfigurationError(f"composite inputs differ in shape or chunks: {arr.shape} "
                                     f"{arr.chunks} vs {ref.shape} {ref.chunks}")
    stack = np.stack([np.asarray(c, np.float32) for c in coarse])
    cy, cx = stack.shape[2:]
    deps = [a for row in bands for a in row if a is not None] + list(masks) + \
        [a for a in aots if a is not None]
    rows = np.cumsum((0,) + ref.chunks[0])
    cols = np.cumsum((0,) + ref.chunks[1])
    buffers = WorkBuffers()  # shared by this grid's block tasks, freed with the graph
    blocks = [(bi, bj, int(rows[bi]), int(cols[bj]),
               *coarse_window(int(rows[bi]), int(ref.chunks[0][bi]), setup.ratio, cy),
               *coarse_window(int(cols[bj]), int(ref.chunks[1][bj]), setup.ratio, cx))
              for bi in range(len(ref.chunks[0])) for bj in range(len(ref.chunks[1]))]
    # each block's window of the coarse fields: in the task (local scheduler), or scattered
    # once to the workers on a distributed one (graph_data), the task naming it by key
    windows = graph_data([np.ascontiguousarray(stack[:, :, y0:y1, x0:x1])
                          for _, _, _, _, y0, y1, x0, x1 in blocks], deps)
    scattered = [w.key for w in windows if not isinstance(w, np.ndarray)]
    name = "wasp-composite-" + tokenize([a.name for a in deps], stack, setup.days,
                                        setup.date_sensor_weight, setup.bands, setup.params,
                                        *scattered)
    dsk = {}
    for (bi, bj, r0, c0, y0, _, x0, _), window in zip(blocks, windows):
        band_keys = [[(a.name, bi, bj) if a is not None else None for a in row]
                     for row in bands]
        mask_keys = [(m.name, bi, bj) for m in masks]
        aot_keys = [(a.name, bi, bj) if a is not None else None for a in aots]
        dsk[(name, 0, bi, bj)] = (_block_task, band_keys, mask_keys, aot_keys, window, setup,
                                  r0, c0, y0, x0, buffers)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    return da.Array(graph, name, chunks=((3 + setup.n_out,),) + ref.chunks, dtype=np.float32)


def days_since_epoch(when: dt.datetime) -> float:
    """Days (with fraction) from 1970-01-01 UTC to ``when``."""
    when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return (when - EPOCH).total_seconds() / 86400.0


__all__ = [
    "FLAG_NODATA", "FLAG_CLOUD", "FLAG_SNOW", "FLAG_WATER", "FLAG_LAND", "FLAG_MEANING",
    "WASP_BRDF_COEFFICIENTS", "COARSE_FIELDS", "WaspParams", "BlockSetup", "date_weight",
    "aot_weight", "coarse_cloud_share", "mask_cloud_share", "cloud_fractions", "cloud_weight",
    "directional_kernels", "directional_factor", "coarse_fields", "update_block",
    "composite_dask", "coarse_window", "days_since_epoch",
]
