"""Compiled one-pass block conversions of the read and of the store's encoding.

Two per-block passes that numpy did in several (each a full read and write of the block):

* :func:`decode_block` -- a provider's digital numbers (DN) as ``float32`` physical
  values, ``DN * scale + offset``, NaN where the pixel is outside the source, has the
  source's no-data value, or is not ``valid`` (what :func:`agriseries.io.product.load`
  reads; numpy took 8 passes: mask, compare, cast, multiply, add, invert, assign, copy);
* :func:`encode_block` -- ``round((x - offset) / scale)`` as ``int16``, -10000 where NaN,
  clipped to the int16 range or no data beyond it (the store's reflectance and scaled
  layers; numpy took 6 passes).

Both give the same values as the numpy expressions they replace, bit for bit: the same
float32 (or float64) operations in the same order, without fused multiply-add or
fast-math, and the same comparisons (``tests/test_blockcodec.py`` checks every uint16 DN
and every float32 class of value against numpy). Inputs they do not cover (other data
types, no-data values that do not convert exactly) take the numpy path, by the callers.
"""

from __future__ import annotations

import numpy as np

from ..core.jit import compiled

#: The data types :func:`decode_block` reads (DN of every provider format agriseries knows).
DECODE_TYPES = frozenset(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32",
                                                "int32", "float32", "float64"))


@compiled(nogil=True)
def _decode(data, valid, r0, r1, c0, c1, nodata, check_nodata, nodata_nan, scale, offset, out):
    ny, nx = data.shape
    nan = np.float32(np.nan)
    for i in range(ny):
        row_in = i >= r0 and i < r1
        for j in range(nx):
            v = data[i, j]
            bad = not row_in or j < c0 or j >= c1
            if valid is not None:
                bad = bad or not valid[i, j]
            if check_nodata:
                if nodata_nan:
                    bad = bad or v != v
                else:
                    bad = bad or v == nodata
            if bad:
                out[i, j] = nan
            else:
                out[i, j] = np.float32(v) * scale + offset


def decode_block(data: np.ndarray, nodata, scale: float, offset: float, *,
                 inside: tuple[int, int, int, int] | None = None,
                 valid: np.ndarray | None = None) -> np.ndarray | None:
    """``float32(data) * float32(scale) + float32(offset)``, NaN where not valid.

    A pixel is not valid outside ``inside`` (``(row0, row1, col0, col1)``, the part of the
    block the source covers; default: all of it), where ``valid`` (a boolean array of the
    block's shape) is false, or where it equals ``nodata`` (NaN: is NaN; ``None``: no
    check). Returns ``None`` when the block is not one this pass covers (a data type not in
    :data:`DECODE_TYPES`, a no-data value the data's comparison would convert inexactly),
    for the caller's numpy path.
    """
    if data.ndim != 2 or data.dtype not in DECODE_TYPES:
        return None
    ny, nx = data.shape
    r0, r1, c0, c1 = inside if inside is not None else (0, ny, 0, nx)
    check = nodata is not None
    nan_nodata = check and isinstance(nodata, float) and np.isnan(nodata)
    if check and not nan_nodata:
        # numpy compares in the type of data with the Python number (NEP 50); the same here
        try:
            with np.errstate(all="raise"):
                nd = np.result_type(data.dtype, nodata).type(nodata)
        except (TypeError, ValueError, OverflowError, FloatingPointError):
            return None
        if not (nd == nodata):  # e.g. -9999.5 against int16 data
            return None
    else:
        nd = data.dtype.type(0)
    if valid is not None:
        valid = np.ascontiguousarray(valid, dtype=np.bool_)
        if valid.shape != data.shape:
            return None
    out = np.empty(data.shape, np.float32)
    _decode(data, valid, int(r0), int(r1), int(c0), int(c1), nd, check, nan_nodata,
            np.float32(scale), np.float32(offset), out)
    return out


@compiled(nogil=True)
def _encode_run(x, scale, offset, clip, nodata, out):
    lo = nodata + 1
    for k in range(x.size):
        v = x[k]
        if np.isnan(v):
            out[k] = nodata
            continue
        q = np.rint((v - offset) / scale)
        if clip:
            if q < lo:
                out[k] = lo
            elif q > 32767:
                out[k] = 32767
            else:
                out[k] = np.int16(q)
        elif q <= nodata or q > 32767:
            out[k] = nodata
        else:
            out[k] = np.int16(q)


@compiled(nogil=True)
def _encode(x, x_row, scale, offset, clip, nodata, out, out_row, ny, nx):
    # ``ny`` rows of ``nx`` values, row ``i`` at ``x[i * x_row:]`` / ``out[i * out_row:]``
    # of flat contiguous arrays: a block's place in a whole file's pixels (rows strided) is
    # written by the same contiguous loop as a block of its own
    for i in range(ny):
        _encode_run(x[i * x_row:i * x_row + nx], scale, offset, clip, nodata,
                    out[i * out_row:i * out_row + nx])


def _rows(a: np.ndarray) -> tuple[np.ndarray, int] | None:
    """A 2-D array with contiguous rows as ``(flat contiguous array spanning it, row stride
    in items)``; ``None`` for other layouts."""
    ny, nx = a.shape
    item = a.dtype.itemsize
    if a.strides[1] != item and nx > 1 or a.strides[0] % item or a.strides[0] < nx * item:
        return None
    row = a.strides[0] // item if ny > 1 else nx
    span = (ny - 1) * row + nx
    return np.lib.stride_tricks.as_strided(a, shape=(span,), strides=(item,)), row


def encode_block(x: np.ndarray, scale: float, offset: float, clip: bool,
                 nodata: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """``round((x - offset) / scale)`` as int16 in one pass: ``nodata`` where ``x`` is NaN;
    values beyond ``(nodata, 32767]`` clipped into ``[nodata + 1, 32767]`` (``clip``) or
    ``nodata``. ``x`` is float32 or float64; the arithmetic is done in the type numpy would
    use for ``x - offset`` and ``/ scale`` (NEP 50: ``x``'s own type with Python numbers).

    ``out``: an int16 array of ``x``'s shape (e.g. the place of the block in a whole file's
    pixels, rows strided), written in place and returned; default a new array."""
    x = np.asarray(x)
    t = np.result_type(x.dtype, scale, offset)
    if x.dtype not in (np.float32, np.float64) or t not in (np.float32, np.float64):
        raise TypeError(f"encode_block: float32/float64 data and scale expected, not "
                        f"{x.dtype} with {type(scale).__name__}/{type(offset).__name__}")
    args = (t.type(scale), t.type(offset), bool(clip), np.int16(nodata))
    if out is None:
        flat = np.ascontiguousarray(x).reshape(-1)
        res = np.empty(flat.shape, np.int16)
        _encode(flat, flat.size, *args, res, res.size, 1, flat.size)
        return res.reshape(x.shape)
    if (not isinstance(out, np.ndarray) or out.dtype != np.int16 or out.shape != x.shape
            or not out.flags.writeable):
        raise ValueError(f"encode_block: out must be a writeable int16 array of shape "
                         f"{x.shape}, not {getattr(out, 'dtype', type(out).__name__)} "
                         f"{getattr(out, 'shape', '')}")
    if x.size == 0:
        return out
    xs, outs = np.atleast_2d(x), np.atleast_2d(out)  # views: writes reach ``out``
    for idx in np.ndindex(*xs.shape[:-2]):  # one compiled pass per 2-D plane
        plane, dst = np.ascontiguousarray(xs[idx]), outs[idx]
        rows = _rows(dst)
        if rows is None:  # e.g. columns strided: encoded apart, then copied
            dst[...] = encode_block(plane, scale, offset, clip, nodata)
            continue
        ny, nx = plane.shape
        _encode(plane.reshape(-1), nx, *args, rows[0], rows[1], ny, nx)
    return out


__all__ = ["DECODE_TYPES", "decode_block", "encode_block"]
