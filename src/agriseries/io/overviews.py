"""COG overview levels computed in memory, with the values GDAL's COG driver gives.

GDAL's COG driver makes a file's overviews by a pass of its own over the full-resolution
pixels: it writes every level into a temporary compressed GeoTIFF (ZSTD or LZW), reads
each level back to compute the next one, then reads them all once more to compress them
into the COG. On a full 10980 px tile that is about half of the COG write. Here the
levels are computed from the uncompressed pixels the writer already holds
(:func:`agriseries.io.cog.write_cogs` gathers them in memory), in one compiled pass per
level, and handed to the COG driver as the source's own overviews, which it copies.

The values are GDAL's (3.10, checked pixel for pixel against it by
``tests/test_overviews.py``, odd sizes and no data included):

* the level sizes: each level half the one above, rounded down (at least 1 px), until
  both sides are at most the block size (512 px);
* every level is computed from the level above it (chained), not from full resolution;
* ``average``: the source pixels a target pixel covers, ``src / dst`` of them along each
  axis (2 when the size above is even; a little more when it is odd, the border pixels
  then weighted by the part of them the target covers), no-data pixels left out (no
  data where all are), the sum of value x weight over the sum of weights in double
  precision. The working type is GDAL's: integer for ``uint8``/``uint16`` (the mean
  plus 0.5, truncated), ``float32`` for ``int16`` and ``float32`` (the mean as a
  float32, then, for ``int16``, rounded half away from zero); a mean that equals the
  no-data value is replaced by GDAL's replacement value (the next value up for
  integers);
* ``nearest``: the source pixel ``int(0.5 + i * src / dst)`` along each axis.

Other cases (another resampling, another data type, a colour table with ``average``,
``float32`` data without a no-data value, whose 2 x 2 means GDAL sums in float32 SIMD
lanes) return ``None`` from :func:`build_overviews`: the writer then lets GDAL compute
them as before.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.jit import compiled

#: The data types :func:`build_overviews` computes ``average`` levels for, and the kind of
#: GDAL working type each uses ("int": integer, "float": float32).
AVERAGE_TYPES = {np.dtype("uint8"): "int", np.dtype("uint16"): "int",
                 np.dtype("int16"): "float", np.dtype("float32"): "float"}
#: ``nearest`` copies pixels: any fixed-size type.
NEAREST_TYPES = frozenset(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32",
                                                "int32", "float32", "float64"))


def overview_sizes(width: int, height: int, blocksize: int = 512) -> list[tuple[int, int]]:
    """``(width, height)`` of each overview level GDAL's COG driver makes."""
    out = []
    while width > blocksize or height > blocksize:
        width, height = max(width // 2, 1), max(height // 2, 1)
        out.append((width, height))
    return out


def _axis(n_src: int, n_dst: int):
    """Per target pixel along one axis: first and end source pixel, weight of the first and
    of the last (GDAL's formulas, in the same double arithmetic)."""
    ratio = n_src / n_dst
    i = np.arange(n_dst, dtype=np.float64)
    a = i * ratio
    b = (i + 1) * ratio
    first = (a + 1e-8).astype(np.int64)  # non-negative: truncation is floor
    end = np.ceil(b - 1e-8).astype(np.int64)
    end = np.where(end == first, end + 1, end)
    end = np.minimum(end, n_src)
    w_first = np.where(end == first + 1, 1.0, 1.0 - (a - first))
    w_last = 1.0 - (end - b)
    near = (0.5 + i * ratio).astype(np.int64)
    return first, end, w_first, w_last, near


@compiled(nogil=True)
def _store(dst, j, i, total, weight, count, int_work, to_int, lo, hi, check, nodata, repl,
           fnodata, frepl):
    if check and count == 0:
        dst[j, i] = nodata
    elif int_work:
        q = np.int64(total / weight + 0.5)
        if check and q == nodata:
            q = np.int64(repl)
        dst[j, i] = q
    else:
        f = np.float32(total / weight)
        if check and f == fnodata:
            f = frepl
        if to_int:
            f = f + np.float32(0.5) if f >= 0 else f - np.float32(0.5)
            if f > hi:
                f = hi
            elif f < lo:
                f = lo
            dst[j, i] = np.int64(f)
        else:
            dst[j, i] = f


@compiled(nogil=True)
def _valid(v, check, nan_nodata, nodata):
    if not check:
        return True
    if nan_nodata:
        return v == v
    return v != nodata


@compiled(nogil=True)
def _pairs_row(src, dst, j, ya, int_work, to_int, lo, hi, check, nan_nodata, nodata, repl,
               fnodata, frepl):
    """One target row from 2 x 2 source pixels of weight 1 (the width above even): GDAL's
    sum in its order (line by line, left to right) without the products by 1.0 (exact)."""
    for i in range(dst.shape[1]):
        x = 2 * i
        count = 0
        line0 = 0.0
        v = src[ya, x]
        if _valid(v, check, nan_nodata, nodata):
            line0 += np.float64(v) if int_work else np.float64(np.float32(v))
            count += 1
        v = src[ya, x + 1]
        if _valid(v, check, nan_nodata, nodata):
            line0 += np.float64(v) if int_work else np.float64(np.float32(v))
            count += 1
        line1 = 0.0
        v = src[ya + 1, x]
        if _valid(v, check, nan_nodata, nodata):
            line1 += np.float64(v) if int_work else np.float64(np.float32(v))
            count += 1
        v = src[ya + 1, x + 1]
        if _valid(v, check, nan_nodata, nodata):
            line1 += np.float64(v) if int_work else np.float64(np.float32(v))
            count += 1
        _store(dst, j, i, 0.0 + line0 + line1, np.float64(count), count, int_work, to_int, lo,
               hi, check, nodata, repl, fnodata, frepl)


@compiled(nogil=True)
def _average(src, dst, pairs, int_work, to_int, lo, hi, check, nan_nodata, nodata, repl,
             x0, x1, wx0, wx1, y0, y1, wy0, wy1):
    """One level of GDAL's ``average`` from the level above (``src``) into ``dst``."""
    ny, nx = dst.shape
    fnodata = np.float32(nodata)
    frepl = np.float32(repl)
    for j in range(ny):
        ya, yb = y0[j], y1[j]
        if pairs and yb == ya + 2:
            _pairs_row(src, dst, j, ya, int_work, to_int, lo, hi, check, nan_nodata, nodata,
                       repl, fnodata, frepl)
            continue
        for i in range(nx):
            xa, xb = x0[i], x1[i]
            total = 0.0
            weight = 0.0
            count = 0
            for y in range(ya, yb):  # GDAL's loop: a line's weighted sum, times its weight
                wy = wy0[j] if y == ya else (wy1[j] if y + 1 == yb else 1.0)
                line = 0.0
                wline = 0.0
                for x in range(xa, xb):
                    v = src[y, x]
                    if not _valid(v, check, nan_nodata, nodata):
                        continue
                    wx = wx0[i] if x == xa else (wx1[i] if x + 1 == xb else 1.0)
                    count += 1
                    if int_work:
                        line += np.float64(v) * wx
                    else:
                        line += np.float64(np.float32(v)) * wx
                    wline += wx
                total += line * wy
                weight += wline * wy
            _store(dst, j, i, total, weight, count, int_work, to_int, lo, hi, check, nodata,
                   repl, fnodata, frepl)


@compiled(nogil=True)
def _nearest(src, dst, xs, ys):
    ny, nx = dst.shape
    for j in range(ny):
        y = ys[j]
        for i in range(nx):
            dst[j, i] = src[y, xs[i]]


def _replacement(dtype: np.dtype, nodata: float) -> float:
    """GDAL's value for a mean that equals the no-data value (GDALGetNoDataReplacementValue):
    the next integer up (down at the type's maximum); for float32 the next float32 up
    (down at the largest float32)."""
    if dtype.kind in "iu":
        return nodata - 1 if nodata == np.iinfo(dtype).max else nodata + 1
    f = np.float32(nodata)
    if f == np.finfo(np.float32).max:
        return float(np.nextafter(f, np.float32(-np.inf)))
    return float(np.nextafter(f, np.float32(np.inf)))


def supported(dtype, resampling: str, nodata, colormap=None) -> bool:
    """Whether :func:`build_overviews` computes this file's levels (else GDAL does)."""
    dtype = np.dtype(dtype)
    if resampling == "nearest":
        return dtype in NEAREST_TYPES
    if resampling != "average" or dtype not in AVERAGE_TYPES or colormap:
        return False
    if nodata is None:
        return dtype != np.float32  # GDAL's float32 2 x 2 fast path sums in SIMD lanes
    if isinstance(nodata, float) and math.isnan(nodata):
        return dtype.kind == "f"
    if dtype.kind in "iu":  # a no-data value the type holds exactly
        return float(nodata).is_integer() and np.iinfo(dtype).min <= nodata <= np.iinfo(dtype).max
    return bool(np.float32(nodata) == nodata)


def build_overviews(data: np.ndarray, resampling: str, nodata, colormap=None,
                    blocksize: int = 512) -> list[np.ndarray] | None:
    """The overview levels of ``data`` (``(bands, rows, cols)``) as GDAL's COG driver makes
    them, largest first, each ``(bands, h, w)``; ``None`` if this case is left to GDAL
    (:func:`supported`)."""
    if data.ndim != 3 or not supported(data.dtype, resampling, nodata, colormap):
        return None
    dtype = data.dtype
    check = nodata is not None
    nan_nodata = check and isinstance(nodata, float) and math.isnan(nodata)
    nd = 0.0 if not check else float(nodata)
    repl = _replacement(dtype, nd) if check and not nan_nodata else 0.0
    int_work = AVERAGE_TYPES.get(dtype) == "int"
    to_int = dtype.kind in "iu"
    lo, hi = (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) if to_int else (0.0, 0.0)
    levels: list[np.ndarray] = []
    above = data
    for w, h in overview_sizes(data.shape[2], data.shape[1], blocksize):
        x0, x1, wx0, wx1, xn = _axis(above.shape[2], w)
        y0, y1, wy0, wy1, yn = _axis(above.shape[1], h)
        level = np.empty((data.shape[0], h, w), dtype)
        for b in range(data.shape[0]):
            src = np.ascontiguousarray(above[b])
            if resampling == "nearest":
                _nearest(src, level[b], xn, yn)
            else:
                _average(src, level[b], above.shape[2] == 2 * w, int_work, to_int, np.float32(lo), np.float32(hi),
                         check, nan_nodata, dtype.type(nd), repl, x0, x1, wx0, wx1, y0, y1, wy0, wy1)
        levels.append(level)
        above = level
    return levels


__all__ = ["AVERAGE_TYPES", "NEAREST_TYPES", "build_overviews", "overview_sizes", "supported"]
