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

How a level is computed: when both sides of the level above are even (every level of a
10980 px tile down to 2745 px, where nearly all the work is), every target pixel is a
2 x 2 cell of weight 1, and one small compiled function per case (integer or float32 work,
with or without a no-data value, NaN or a number) computes the level branch-free so that
LLVM vectorises it (four doubles per AVX2 instruction, the division included): a no-data
pixel adds +0.0 to its line's sum instead of being skipped and counts 0 instead of 1; the
cell's sum is ``0.0 + line 0 + line 1`` as in the weighted sum. That is the weighted sum's
value bit for bit: a line sum starts at +0.0 and ``0.0 + x`` is never -0.0, so adding +0.0
changes no sum (NaN included); the count is exact; the division, rounding, replacement and
clipping are the same operations, done as selects (``tests/test_overviews.py`` checks it
against a plain reference, every data type). One freedom remains: a sum of two NaN of
different signs (float32 with a numeric no-data value, valid NaN pixels of both signs in
one cell, e.g. from ``inf - inf``) propagates either one, IEEE 754 leaving it open, and the
compiler's operand order picks it, in the scalar code before as here. Any other size (an
odd side: fractional border weights) goes through the scalar weighted sum, ``nearest``
through a plain copy.

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


# The 2 x 2 level (both sides of the level above even, every weight 1), one small compiled
# function per case so that LLVM vectorises its inner loop (AVX2: four doubles an instruction).
# Each reads its cells through _cell (the four pixels, _valid's test with constant flags, the
# sum and the count), which LLVM inlines and folds to the case's test, or to none and a count
# of 4 without no data. Each cell is branch-free: a no-data pixel adds +0.0 instead of being
# skipped, its count 0/1. That is GDAL's sum bit for bit: its line sums start at +0.0 and add
# the valid pixels left to right, and 0.0 + x is never -0.0, so adding +0.0 for a skipped
# pixel leaves any sum (NaN included) as it is; the cell is then 0.0 + line 0 + line 1, as
# GDAL (and the weighted path) computes it. Division by a count of 0 (all no data) gives NaN,
# replaced by no data.


@compiled(nogil=True)
def _cell(r0, r1, i, check, nan_nodata, nodata):
    """Cell ``i`` of rows ``r0``, ``r1``: GDAL's sum of its valid pixels in its order (an
    invalid one zeroed), and their count (:func:`_valid`'s test)."""
    a, b, c, d = r0[2 * i], r0[2 * i + 1], r1[2 * i], r1[2 * i + 1]
    ka = _valid(a, check, nan_nodata, nodata)
    kb = _valid(b, check, nan_nodata, nodata)
    kc = _valid(c, check, nan_nodata, nodata)
    kd = _valid(d, check, nan_nodata, nodata)
    fa = np.float64(a) if ka else 0.0
    fb = np.float64(b) if kb else 0.0
    fc = np.float64(c) if kc else 0.0
    fd = np.float64(d) if kd else 0.0
    total = 0.0 + (0.0 + fa + fb) + (0.0 + fc + fd)
    return total, np.int32(ka) + np.int32(kb) + np.int32(kc) + np.int32(kd)


@compiled(nogil=True)
def _to_int16(f, lo, hi):
    """A float32 mean rounded half away from zero, clipped to the type (GDAL's int16 store)."""
    r = f + np.float32(0.5) if f >= 0 else f - np.float32(0.5)
    r = hi if r > hi else (lo if r < lo else r)
    return np.int32(r)


@compiled(nogil=True, error_model="numpy")
def _pairs_int(src, dst, nodata, repl):
    """uint8/uint16 with a no-data value: integer work (the mean + 0.5, truncated)."""
    for j in range(dst.shape[0]):
        r0, r1, out = src[2 * j], src[2 * j + 1], dst[j]
        for i in range(out.shape[0]):
            total, n = _cell(r0, r1, i, True, False, nodata)
            q = np.int32(total / np.float64(n) + 0.5)
            q = repl if q == nodata else q
            out[i] = nodata if n == 0 else q


@compiled(nogil=True, error_model="numpy")
def _pairs_int_all(src, dst):
    """uint8/uint16 without a no-data value."""
    for j in range(dst.shape[0]):
        r0, r1, out = src[2 * j], src[2 * j + 1], dst[j]
        for i in range(out.shape[0]):
            total, _ = _cell(r0, r1, i, False, False, 0)
            out[i] = np.int32(total / 4.0 + 0.5)


@compiled(nogil=True, error_model="numpy")
def _pairs_int16(src, dst, nodata, fnodata, frepl, lo, hi):
    """int16 with a no-data value: float32 work, then rounded and clipped."""
    for j in range(dst.shape[0]):
        r0, r1, out = src[2 * j], src[2 * j + 1], dst[j]
        for i in range(out.shape[0]):
            total, n = _cell(r0, r1, i, True, False, nodata)
            f = np.float32(total / np.float64(n))
            f = frepl if f == fnodata else f
            q = _to_int16(f, lo, hi)
            out[i] = nodata if n == 0 else q


@compiled(nogil=True, error_model="numpy")
def _pairs_int16_all(src, dst, lo, hi):
    """int16 without a no-data value."""
    for j in range(dst.shape[0]):
        r0, r1, out = src[2 * j], src[2 * j + 1], dst[j]
        for i in range(out.shape[0]):
            total, _ = _cell(r0, r1, i, False, False, 0)
            out[i] = _to_int16(np.float32(total / 4.0), lo, hi)


@compiled(nogil=True, error_model="numpy")
def _pairs_float(src, dst, nodata, frepl):
    """float32 with a numeric no-data value (NaN pixels are valid: their cells are NaN)."""
    for j in range(dst.shape[0]):
        r0, r1, out = src[2 * j], src[2 * j + 1], dst[j]
        for i in range(out.shape[0]):
            total, n = _cell(r0, r1, i, True, False, nodata)
            f = np.float32(total / np.float64(n))
            f = frepl if f == nodata else f
            out[i] = nodata if n == 0 else f


@compiled(nogil=True, error_model="numpy")
def _pairs_float_nan(src, dst, nodata):
    """float32 with NaN as no data (a mean is never NaN: no replacement)."""
    for j in range(dst.shape[0]):
        r0, r1, out = src[2 * j], src[2 * j + 1], dst[j]
        for i in range(out.shape[0]):
            total, n = _cell(r0, r1, i, True, True, nodata)
            f = np.float32(total / np.float64(n))
            out[i] = nodata if n == 0 else f


@compiled(nogil=True)
def _average(src, dst, int_work, to_int, lo, hi, check, nan_nodata, nodata, repl,
             x0, x1, wx0, wx1, y0, y1, wy0, wy1):
    """One level of GDAL's ``average`` from the level above (``src``) into ``dst``, any
    sizes (the weighted sum; :func:`_pairs` and the ``_pairs_*`` functions it calls are the
    2 x 2 case's faster twin)."""
    ny, nx = dst.shape
    fnodata = np.float32(nodata)
    frepl = np.float32(repl)
    for j in range(ny):
        ya, yb = y0[j], y1[j]
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


def _pairs(src, dst, dtype, check, nan_nodata, nodata, repl, lo, hi):
    """A 2 x 2 level (``src`` twice ``dst`` along both axes) by the compiled function of
    its case: the values of :func:`_average`, bit for bit."""
    nd = dtype.type(nodata)
    if AVERAGE_TYPES[dtype] == "int":
        if check:
            _pairs_int(src, dst, np.int32(nodata), np.int32(repl))
        else:
            _pairs_int_all(src, dst)
    elif dtype == np.int16:
        lo, hi = np.float32(lo), np.float32(hi)
        if check:
            _pairs_int16(src, dst, nd, np.float32(nodata), np.float32(repl), lo, hi)
        else:
            _pairs_int16_all(src, dst, lo, hi)
    elif nan_nodata:
        _pairs_float_nan(src, dst, nd)
    else:  # float32 with a numeric no-data value (without one it is left to GDAL)
        _pairs_float(src, dst, nd, np.float32(repl))


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
            elif src.shape == (2 * h, 2 * w):
                _pairs(src, level[b], dtype, check, nan_nodata, nd, repl, lo, hi)
            else:
                _average(src, level[b], int_work, to_int, np.float32(lo), np.float32(hi),
                         check, nan_nodata, dtype.type(nd), repl, x0, x1, wx0, wx1, y0, y1, wy0, wy1)
        levels.append(level)
        above = level
    return levels


__all__ = ["AVERAGE_TYPES", "NEAREST_TYPES", "build_overviews", "overview_sizes", "supported"]
