"""Temporal smoothing and gap filling of per-pixel profiles (the L3B reprocessed product).

Sen2Agri's L3B chain ends with a multi-date "reprocessing / fitting" of the LAI
profiles: every pixel's noisy, cloud-gapped series of single-date estimates becomes
one smooth profile on a regular grid of dates (Sen2Agri produces L3B every
``processor.l3b.production_interval = 10`` days). This module holds the pure kernel
for that step (no I/O):

* :func:`regular_dates` -- the regular output grid (10 days by default);
* :func:`weights_from_flags` -- observation weights from the L3B flags band and the
  agriseries mask;
* :func:`whittaker` -- a weighted Whittaker smoother (Eilers 2003) on irregular
  dates, vectorised over pixels, numpy in / numpy out;
* :func:`whittaker_dataarray` -- the same on an ``xarray.DataArray`` (numpy or dask;
  dask blocks over ``y`` / ``x`` only, the whole time axis in each block).

Method
------
The observations ``y_i`` (dates ``t_i``, weights ``w_i >= 0``) are placed on a
**daily support** ``s_0 .. s_{m-1}`` that spans the observations and the output
dates; the smoothed series ``z`` minimises

    ``sum_j W_j (Y_j - z_j)^2 + lam * sum_j (Delta^d z)_j^2``

where ``W_j`` is the sum of the weights of the observations of day ``j`` (0 on days
without a valid observation), ``W_j Y_j`` the sum of their weighted values and
``Delta^d`` the ``d``-th order difference (``d = order``, 2 by default). So uneven
spacing is handled exactly: a 3-day gap and a 40-day gap are penalised as what they
are. The normal equations ``(W + lam D'D) z = W Y`` are a symmetric positive definite
band matrix of half bandwidth ``d``, factorised as ``L diag(D) L'`` (banded
Cholesky without square roots) with the loops over days and the arithmetic
vectorised over pixels, O(days x pixels x d^2). The output is ``z`` read at the
output dates. Between valid observations the solution is a (discrete) smoothing
spline; outside the span of the valid observations it continues as a polynomial of
degree ``d - 1`` (a straight line for ``d = 2``): such output dates carry the
:attr:`SmoothingFlag.EXTRAPOLATED` bit.

Properties (tested): a polynomial of degree ``< d`` is reproduced exactly for any
``lam``; the weighted mean (and for ``d = 2`` the weighted first moment in time) of
the data is preserved at the observation days; the result is linear in the data
and does not depend on the order in which the dates are given. The result is *not*
bounded by the data's minimum and maximum: like a smoothing spline, the smoother's
equivalent kernel has negative side lobes, so it overshoots next to abrupt changes
(a harvest drop) by a few percent of the step.

The smoothing parameter ``lam``
-------------------------------
On a support of step ``h`` the penalty damps a sinusoid of angular frequency
``omega`` (radians per day) by ``1 / (1 + lam (2 - 2 cos(omega h))^d / rho)``,
``rho`` being the weight per support point; with ``d = 2`` the half-power period is
about ``2 pi h (lam / rho)^(1/4)``. Sen2Agri smooths its 10-day resampled series
(every grid point filled by linear interpolation, weight 1) with ``lam = 2``
(``-lmbd``, docs/crop.md), i.e. a half-power period of ``2 pi 10 2^(1/4) = 75``
days. The same response on a daily support, with a clear observation every 10 days
on average (``rho = 1/10``), needs ``lam = 2 x 10^3``:
:data:`DEFAULT_LAMBDA` = 2000. Denser clear observations make the smoothing
shorter (about 63 days at one every 5 days), sparser ones longer (about 89 days at
one every 20 days): the daily support adapts the smoothing to the data density.
A crop season (green-up to harvest about 100-150 days, peak plateau about 4-8
weeks) has most of its energy at periods above 100 days, so this keeps a season's
peak: on a sharp double-logistic maize-like LAI profile (green-up and senescence
over about 30 days) sampled every 5 or 10 days, the peak height is kept within 3 %
(a slight overshoot) and its date and the half-height dates within 10 days
(``tests/test_biophysical_timeseries.py``). On the real WorldCereal Flanders 2018
patch (NDVI as a stand-in for LAI, weights from the Sen2Cor mask) the median maize
profile peaks on 2018-07-19 at NDVI 0.79, keeps the bare-soil trough of late May
(0.26) and the post-harvest one of early October (0.23), and ignores the
July-August cloud dips, including those the mask missed (``docs/make_figures.py``,
``docs/img/ndvi_whittaker_maize.png``); lam = 2 x 10^4 there lowers the peak to
0.75 and moves it 10 days later, lam = 100 to 5000 all give 0.79 on 2018-07-19.
Smaller values (200-500) follow abrupt events (ploughing, harvest) more closely
but also more of the residual cloud noise. ``lam`` can
also be chosen per pixel from the data, either by leave-one-day-out
cross-validation (``lam="cv"``, Eilers 2003, with the hat matrix diagonal from a
banded selected inversion) or by the V-curve (``lam="vcurve"``, Frasso & Eilers
2015), over :data:`DEFAULT_LAMBDA_GRID`; both tend to under-smooth cloud-
contaminated series whose outliers are not flagged (they fit the noise they cannot
tell from signal: on the maize pixels of the Flanders patch CV picks a median lam
of 100 and the V-curve 750), so the fixed default is the production choice.

Quality layers
--------------
:class:`SmoothingQuality` holds, per output date and pixel, ``distance``: days from
the output date to the nearest valid observation (NaN for a pixel without any), the
most useful confidence measure of a gap-filled value; ``flags`` (uint8,
:class:`SmoothingFlag`); per pixel, ``n_valid`` (number of distinct days with a
positive weight) and ``lam`` (the smoothing parameter used).

References
----------
Eilers P. H. C. (2003), A perfect smoother, Analytical Chemistry 75(14):3631-3636.
Frasso G., Eilers P. H. C. (2015), L- and V-curves for optimal smoothing,
Statistical Modelling 15(1):91-111.
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..core.errors import ConfigurationError
from ..core.jit import compiled
from ..core.masks import INVALID, MaskBit

__all__ = [
    "DEFAULT_LAMBDA",
    "DEFAULT_LAMBDA_GRID",
    "DEFAULT_MIN_OBS",
    "REJECT_MASK",
    "BiophysicalFlag",
    "SmoothingFlag",
    "SmoothingQuality",
    "inverse_diagonal",
    "ldl",
    "penalty_bands",
    "regular_dates",
    "weights_from_flags",
    "whittaker",
    "whittaker_dataarray",
]

#: Default smoothing parameter on the 1-day support (order 2): Sen2Agri's lam = 2 on its
#: 10-day grid carried over to a daily support (see the module docstring).
DEFAULT_LAMBDA = 2000.0
#: Candidate lambdas for ``lam="cv"`` / ``lam="vcurve"``: 10 ** (0, 0.25, ..., 5).
DEFAULT_LAMBDA_GRID = tuple(float(v) for v in 10.0 ** np.arange(0.0, 5.01, 0.25))
#: Fewest distinct days with a valid observation for a pixel to be smoothed.
DEFAULT_MIN_OBS = 3
#: Pixels processed together inside :func:`whittaker` (bounds the working memory to
#: about ``(order + 3) * days * 8`` bytes per pixel of a batch).
BATCH_PIXELS = 8192


class BiophysicalFlag(enum.IntFlag):
    """Bits of the L3B ``<var>_flags`` band (SNAP BiophysicalFlag.java; docs/l3b.md, "Flags")."""

    INPUT_OUT_OF_RANGE = 1
    OUTPUT_THRESHOLDED_TO_MIN = 2
    OUTPUT_THRESHOLDED_TO_MAX = 4
    OUTPUT_TOO_LOW = 8
    OUTPUT_TOO_HIGH = 16


class SmoothingFlag(enum.IntFlag):
    """Bits of :attr:`SmoothingQuality.flags` (per output date and pixel).

    ``TOO_FEW_OBSERVATIONS``
        The pixel has fewer than ``min_obs`` days with a valid observation: its
        values are NaN at every output date.
    ``EXTRAPOLATED``
        The output date is before the pixel's first or after its last valid
        observation (the value continues the fit as a polynomial of degree
        ``order - 1``).
    ``TOO_FAR``
        The output date is more than ``max_distance`` days from any valid
        observation: the value is NaN (only when ``max_distance`` is given).
    """

    TOO_FEW_OBSERVATIONS = 1
    EXTRAPOLATED = 2
    TOO_FAR = 4


#: Mask bits (agriseries.core.masks) that make an observation unusable (weight 0):
#: cloud, cloud shadow, cirrus, saturated, no data (``masks.INVALID``) plus snow and water.
REJECT_MASK = int(INVALID | MaskBit.SNOW | MaskBit.WATER)


@dataclass(frozen=True)
class SmoothingQuality:
    """Quality layers of :func:`whittaker` (numpy arrays; ``...`` = the pixel shape).

    Attributes
    ----------
    distance
        ``float32 (n_out, ...)``: days from each output date to the pixel's nearest
        valid observation (NaN where the pixel has none).
    flags
        ``uint8 (n_out, ...)``: :class:`SmoothingFlag` bits.
    n_valid
        ``int32 (...)``: distinct days with a valid (finite, positive weight) observation.
    lam
        ``float32 (...)``: the smoothing parameter used (NaN where not smoothed).
    """

    distance: np.ndarray
    flags: np.ndarray
    n_valid: np.ndarray
    lam: np.ndarray


# --------------------------------------------------------------------------------------
# dates


def _to_day(value, what: str) -> np.datetime64:
    if isinstance(value, str):
        try:
            return np.datetime64(_dt.date.fromisoformat(value[:10]), "D")
        except ValueError:
            raise ConfigurationError(f"{what} {value!r}: expected an ISO date YYYY-MM-DD") from None
    try:
        return np.datetime64(value, "D") if not isinstance(value, np.datetime64) else \
            value.astype("datetime64[D]")
    except (TypeError, ValueError):
        raise ConfigurationError(f"{what} {value!r}: expected a date") from None


def _days(dates, what: str) -> np.ndarray:
    """Dates (any datetime64 unit, datetime, ISO strings) -> datetime64[D] (floored)."""
    arr = np.asarray(dates)
    if arr.ndim != 1:
        raise ConfigurationError(f"{what}: expected a 1-d sequence of dates, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.datetime64):
        out = arr.astype("datetime64[D]")
    else:
        out = np.array([_to_day(v, what) for v in arr.tolist()], dtype="datetime64[D]")
    if np.isnat(out).any():
        raise ConfigurationError(f"{what}: missing date (NaT)")
    return out


def regular_dates(start, end, step_days: int = 10) -> np.ndarray:
    """A regular grid of dates from ``start`` to ``end`` (both included if on the grid).

    Parameters
    ----------
    start, end
        First date and last possible date (``datetime64``, ``datetime.date`` or ISO
        string; a time of day is dropped).
    step_days
        Grid step in days (Sen2Agri's L3B production interval is 10).

    Returns
    -------
    numpy.ndarray
        ``datetime64[D]`` dates ``start, start + step, ...`` up to ``end``.
    """
    if int(step_days) != step_days or step_days < 1:
        raise ConfigurationError(f"step_days {step_days!r}: expected a positive whole number of days")
    s, e = _to_day(start, "start"), _to_day(end, "end")
    if e < s:
        raise ConfigurationError(f"end {e} is before start {s}")
    return np.arange(s, e + np.timedelta64(1, "D"), np.timedelta64(int(step_days), "D"))


# --------------------------------------------------------------------------------------
# weights


def weights_from_flags(flags=None, mask=None, *, values=None, thresholded_weight: float = 0.5,
                       reject_mask: int = REJECT_MASK):
    """Observation weights for :func:`whittaker` from the L3B flags and the L2A mask.

    ============================================  =======================
    condition                                     weight
    ============================================  =======================
    clean value                                   1
    ``values`` NaN / inf                          0
    flags bit 0 INPUT_OUT_OF_RANGE                0 (the value is NaN)
    flags bit 3 OUTPUT_TOO_LOW, bit 4 TOO_HIGH    0 (kept out-of-range)
    flags bit 1 / 2 OUTPUT_THRESHOLDED_TO_MIN/MAX ``thresholded_weight``
    ``mask & reject_mask`` (cloud, shadow,        0
    cirrus, saturated, no data, snow, water)
    ============================================  =======================

    A value thresholded to the output range (within the network's tolerance) is a
    plausible but clipped estimate, hence half weight. ``TOPO_SHADOW`` (Sen2Cor's
    "dark area" class) is not rejected by default; add it to ``reject_mask`` to do so.

    Parameters
    ----------
    flags
        ``<var>_flags`` band (uint8, :class:`BiophysicalFlag` bits), or None.
    mask
        agriseries common mask (uint8, :class:`agriseries.core.masks.MaskBit`), or None.
    values
        The variable itself, to give NaN values weight 0, or None.
    thresholded_weight
        Weight of a value thresholded to the output range (0-1).
    reject_mask
        Mask bits that give weight 0 (default :data:`REJECT_MASK`).

    Returns
    -------
    float32 array of the inputs' shape and kind (numpy, dask or xarray).
    """
    if not 0.0 <= thresholded_weight <= 1.0:
        raise ConfigurationError(f"thresholded_weight {thresholded_weight!r}: expected 0 to 1")
    if flags is None and mask is None and values is None:
        raise ConfigurationError("weights_from_flags: give at least one of flags, mask, values")
    w = None

    def times(a, b):
        return b if a is None else a * b

    one = np.float32(1.0)
    if flags is not None:
        zero = (flags & int(BiophysicalFlag.INPUT_OUT_OF_RANGE | BiophysicalFlag.OUTPUT_TOO_LOW
                            | BiophysicalFlag.OUTPUT_TOO_HIGH)) == 0
        thr = (flags & int(BiophysicalFlag.OUTPUT_THRESHOLDED_TO_MIN
                           | BiophysicalFlag.OUTPUT_THRESHOLDED_TO_MAX)) != 0
        w = times(w, zero.astype(np.float32) * (one - np.float32(1.0 - thresholded_weight)
                                                * thr.astype(np.float32)))
    if mask is not None:
        w = times(w, ((mask & int(reject_mask)) == 0).astype(np.float32))
    if values is not None:
        w = times(w, np.isfinite(values).astype(np.float32))
    return w.astype(np.float32)


# --------------------------------------------------------------------------------------
# banded algebra, vectorised over pixels (arrays shaped (days, pixels))


def penalty_bands(m: int, order: int) -> np.ndarray:
    """Bands of D'D (D: ``order``-th differences on m points): ``P[k, i] = (D'D)[i, i-k]``."""
    c = np.array([(-1.0) ** (order - j) * _binom(order, j) for j in range(order + 1)])
    bands = np.zeros((order + 1, m))
    # (D'D)[i, i-k] = sum over difference rows r (0 <= r <= m-1-order) of c[i-r] c[i-k-r]
    for r in range(max(0, m - order)):
        for a in range(order + 1):
            for b in range(a + 1):
                bands[a - b, r + a] += c[a] * c[b]
    return bands


def _binom(n: int, k: int) -> float:
    out = 1.0
    for i in range(k):
        out = out * (n - i) / (i + 1)
    return out


def ldl(diag_w: np.ndarray, lam: np.ndarray, pen: np.ndarray):
    """Factorise A = diag(W) + lam P (bands ``pen``) as L diag(D) L'.

    Returns ``L`` shaped (p, m, n) with ``L[k-1, i] = L[i, i-k]`` and ``D`` (m, n).
    """
    p = pen.shape[0] - 1
    m, n = diag_w.shape
    L = np.zeros((p, m, n))
    D = np.empty((m, n))
    for i in range(m):
        for k in range(min(p, i), 0, -1):  # j = i - k, ascending
            j = i - k
            s = lam * pen[k, i]
            for q in range(max(0, i - p), j):
                s = s - L[i - q - 1, i] * L[j - q - 1, j] * D[q]
            L[k - 1, i] = s / D[j]
        d = diag_w[i] + lam * pen[0, i]
        for q in range(max(0, i - p), i):
            d = d - L[i - q - 1, i] ** 2 * D[q]
        D[i] = d
    return L, D


def _solve(L: np.ndarray, D: np.ndarray, b: np.ndarray) -> np.ndarray:
    p, m = L.shape[0], D.shape[0]
    z = b.copy()
    for i in range(1, m):
        for k in range(1, min(p, i) + 1):
            z[i] -= L[k - 1, i] * z[i - k]
    z /= D
    for i in range(m - 2, -1, -1):
        for k in range(1, min(p, m - 1 - i) + 1):
            z[i] -= L[k - 1, i + k] * z[i + k]
    return z


def inverse_diagonal(L: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Diagonal of A^-1 from its L diag(D) L' factors (banded selected inversion)."""
    p, m = L.shape[0], D.shape[0]
    S = np.zeros((p + 1, m, D.shape[1]))  # S[d, i] = inv(A)[i, i + d]

    def sig(a, b):
        return S[abs(b - a), min(a, b)]

    for i in range(m - 1, -1, -1):
        kmax = min(p, m - 1 - i)
        for d in range(kmax, 0, -1):
            s = 0.0
            for k in range(1, kmax + 1):
                s = s - L[k - 1, i + k] * sig(i + k, i + d)
            S[d, i] = s
        s = 1.0 / D[i]
        for k in range(1, kmax + 1):
            s = s - L[k - 1, i + k] * S[k, i]
        S[0, i] = s
    return S[0]


def _roughness(z: np.ndarray, order: int) -> np.ndarray:
    return (np.diff(z, n=order, axis=0) ** 2).sum(axis=0)


# --------------------------------------------------------------------------------------
# the compiled kernel: one pass per group of pixels (accumulate, factorise, solve, read out)

_HOW_FIXED, _HOW_CV, _HOW_VCURVE = 0, 1, 2

#: Pixels solved side by side by the compiled kernel. The recursions over days carry a
#: dependency from one day to the next (a division each); a group of pixels side by side
#: keeps the floating-point units busy and vectorises, and its work arrays (about
#: ``(order + 8) * days * 8`` bytes per pixel) stay in the processor's cache.
GROUP_PIXELS = 32


@compiled(nogil=True)
def _ldl_group(W, lam, pen, L, D, tmp, G):  # pragma: no cover - compiled
    """``W + lam P = L diag(D) L'`` for the first ``G`` pixels (columns) of a group.

    The arithmetic of :func:`ldl`, in the same order; ``W``, ``D`` are ``(m, GP)``,
    ``lam``, ``tmp`` ``(GP,)``, ``L`` ``(p, m, GP)``.
    """
    p = pen.shape[0] - 1
    m = W.shape[0]
    for i in range(m):
        for k in range(min(p, i), 0, -1):  # j = i - k, ascending
            j = i - k
            pk = pen[k, i]
            for g in range(G):
                tmp[g] = lam[g] * pk
            for q in range(max(0, i - p), j):
                a, b = i - q - 1, j - q - 1
                for g in range(G):
                    tmp[g] = tmp[g] - L[a, i, g] * L[b, j, g] * D[q, g]
            for g in range(G):
                L[k - 1, i, g] = tmp[g] / D[j, g]
        p0 = pen[0, i]
        for g in range(G):
            tmp[g] = W[i, g] + lam[g] * p0
        for q in range(max(0, i - p), i):
            a = i - q - 1
            for g in range(G):
                tmp[g] = tmp[g] - L[a, i, g] ** 2 * D[q, g]
        for g in range(G):
            D[i, g] = tmp[g]


@compiled(nogil=True)
def _solve_group(L, D, b, z, G):  # pragma: no cover - compiled
    """``L diag(D) L' z = b`` for the first ``G`` pixels of a group (the arithmetic of :func:`_solve`)."""
    p, m = L.shape[0], D.shape[0]
    for i in range(m):
        for g in range(G):
            z[i, g] = b[i, g]
    for i in range(1, m):
        for k in range(1, min(p, i) + 1):
            for g in range(G):
                z[i, g] -= L[k - 1, i, g] * z[i - k, g]
    for i in range(m):
        for g in range(G):
            z[i, g] /= D[i, g]
    for i in range(m - 2, -1, -1):
        for k in range(1, min(p, m - 1 - i) + 1):
            for g in range(G):
                z[i, g] -= L[k - 1, i + k, g] * z[i + k, g]


@compiled(nogil=True)
def _inverse_diagonal_group(L, D, S, tmp, G):  # pragma: no cover - compiled
    """Diagonal of ``A^-1`` into ``S[0]`` for the first ``G`` pixels of a group (the
    arithmetic of :func:`inverse_diagonal`; ``S`` is ``(p + 1, m, GP)``)."""
    p, m = L.shape[0], D.shape[0]
    S[:] = 0.0
    for i in range(m - 1, -1, -1):
        kmax = min(p, m - 1 - i)
        for d in range(kmax, 0, -1):
            for g in range(G):
                tmp[g] = 0.0
            for k in range(1, kmax + 1):
                a, c = i + k, i + d
                r, s0 = abs(c - a), min(a, c)
                for g in range(G):
                    tmp[g] = tmp[g] - L[k - 1, i + k, g] * S[r, s0, g]
            for g in range(G):
                S[d, i, g] = tmp[g]
        for g in range(G):
            tmp[g] = 1.0 / D[i, g]
        for k in range(1, kmax + 1):
            for g in range(G):
                tmp[g] = tmp[g] - L[k - 1, i + k, g] * S[k, i, g]
        for g in range(G):
            S[0, i, g] = tmp[g]


@compiled(nogil=True)
def _smooth_pixels(y, w, obs_idx, out_idx, m, pen, lam, how, grid, min_obs, max_distance,
                   envelope_iterations, envelope_factor, res, dist, flags, nvalid,
                   lam_used):  # pragma: no cover - compiled
    """:func:`_smooth_batch` for every pixel (column) of ``y`` / ``w`` in one compiled pass.

    ``y``, ``w`` are ``(time, n)`` (float32 or float64; an observation counts where its
    weight is positive and its value finite); ``how`` is ``_HOW_FIXED`` (``lam`` for every
    pixel), ``_HOW_CV`` or ``_HOW_VCURVE`` (per pixel over ``grid``); ``max_distance < 0``
    means none. The outputs ``res``, ``dist`` (``(n_out, n)`` float32), ``flags`` (uint8),
    ``nvalid`` (int32), ``lam_used`` (float32) are filled in place.
    """
    nt, n = y.shape
    p = pen.shape[0] - 1
    nout = out_idx.shape[0]
    ng = grid.shape[0]
    GP = GROUP_PIXELS
    W = np.empty((m, GP))
    WY = np.empty((m, GP))
    Wit = np.empty((m, GP))
    b = np.empty((m, GP))
    ybar = np.empty((m, GP))
    z = np.empty((m, GP))
    L = np.zeros((p, m, GP))
    D = np.empty((m, GP))
    S = np.zeros((p + 1, m, GP)) if how == _HOW_CV else np.zeros((1, 1, 1))
    last = np.empty((m, GP))
    nxt = np.empty((m, GP))
    dz = np.empty(m)
    tmp = np.empty(GP)
    lam_px = np.empty(GP)
    lam_g = np.empty(GP)
    best = np.zeros(GP, np.int64)
    best_score = np.empty(GP)
    sw = np.empty(GP)
    fval = np.empty((max(ng, 1), GP))
    rval = np.empty((max(ng, 1), GP))
    nv = np.zeros(GP, np.int64)
    ok = np.zeros(GP, np.bool_)
    cur = np.empty(GP)
    big = np.float64(4 * m + 10)
    nan32 = np.float32(np.nan)
    for g0 in range(0, n, GP):
        G = min(GP, n - g0)
        W[:] = 0.0
        WY[:] = 0.0
        for t in range(nt):
            j = obs_idx[t]
            for g in range(G):
                wt = np.float64(w[t, g0 + g])
                yt = np.float64(y[t, g0 + g])
                if wt > 0 and np.isfinite(yt):  # weight 0 or no value: no observation
                    W[j, g] += wt
                    WY[j, g] += wt * yt
        # valid days, distance to the nearest one (forward / backward fill of day numbers)
        for g in range(G):
            nv[g] = 0
            cur[g] = -big
        for i in range(m):
            for g in range(G):
                if W[i, g] > 0:
                    nv[g] += 1
                    cur[g] = i
                last[i, g] = cur[g]
        for g in range(G):
            cur[g] = big
        for i in range(m - 1, -1, -1):
            for g in range(G):
                if W[i, g] > 0:
                    cur[g] = i
                nxt[i, g] = cur[g]
        for g in range(G):
            nvalid[g0 + g] = nv[g]
            ok[g] = nv[g] >= min_obs
        for k in range(nout):
            o = out_idx[k]
            for g in range(G):
                fl = 0
                if nv[g] > 0:
                    dk = min(o - last[o, g], nxt[o, g] - o)
                    dist[k, g0 + g] = np.float32(dk)
                    if last[o, g] < 0 or nxt[o, g] >= m:
                        fl |= 2  # SmoothingFlag.EXTRAPOLATED
                    if max_distance >= 0 and dk > max_distance:
                        fl |= 4  # SmoothingFlag.TOO_FAR
                if not ok[g]:
                    fl |= 1  # SmoothingFlag.TOO_FEW_OBSERVATIONS
                flags[k, g0 + g] = fl
        # pixels that cannot be smoothed get a harmless system (weight 1 everywhere), then NaN
        for i in range(m):
            for g in range(G):
                if not ok[g]:
                    W[i, g] = 1.0
                    WY[i, g] = 0.0
        if how == _HOW_FIXED:
            for g in range(G):
                lam_px[g] = lam
        else:
            for g in range(G):
                sw[g] = 0.0
                best[g] = 0
                best_score[g] = np.inf
            for i in range(m):
                for g in range(G):
                    sw[g] += W[i, g]
                    ybar[i, g] = WY[i, g] / W[i, g] if W[i, g] > 0 else 0.0
            for gi in range(ng):
                for g in range(G):
                    lam_g[g] = grid[gi]
                _ldl_group(W, lam_g, pen, L, D, tmp, G)
                _solve_group(L, D, WY, z, G)
                if how == _HOW_CV:
                    _inverse_diagonal_group(L, D, S, tmp, G)
                    for g in range(G):
                        tmp[g] = 0.0
                    for i in range(m):
                        for g in range(G):
                            r2 = W[i, g] * (ybar[i, g] - z[i, g]) ** 2
                            h = min(max(W[i, g] * S[0, i, g], 0.0), 1.0 - 1e-9)
                            tmp[g] += r2 / (1.0 - h) ** 2
                    for g in range(G):
                        score = tmp[g] / sw[g]
                        if score < best_score[g]:  # the first of equal scores, as numpy's argmin
                            best_score[g] = score
                            best[g] = gi
                else:
                    for g in range(G):
                        fid = 0.0
                        for i in range(m):
                            fid += W[i, g] * (ybar[i, g] - z[i, g]) ** 2
                        for i in range(m):
                            dz[i] = z[i, g]
                        mm = m
                        for _ in range(p):  # np.diff(z, n=order): repeated first differences
                            for i in range(mm - 1):
                                dz[i] = dz[i + 1] - dz[i]
                            mm -= 1
                        rough = 0.0
                        for i in range(mm):
                            rough += dz[i] ** 2
                        fval[gi, g] = np.log10(max(fid, 1e-300))
                        rval[gi, g] = np.log10(max(rough, 1e-300))
            for g in range(G):
                if how == _HOW_CV:
                    lam_px[g] = grid[best[g]]
                else:
                    for gi in range(ng - 1):
                        v = np.hypot(fval[gi + 1, g] - fval[gi, g], rval[gi + 1, g] - rval[gi, g])
                        if v < best_score[g]:
                            best_score[g] = v
                            best[g] = gi
                    lam_px[g] = np.sqrt(grid[best[g]] * grid[best[g] + 1])
        _ldl_group(W, lam_px, pen, L, D, tmp, G)
        _solve_group(L, D, WY, z, G)
        if envelope_iterations > 0:
            for i in range(m):
                for g in range(G):
                    ybar[i, g] = WY[i, g] / (W[i, g] if W[i, g] > 0 else 1.0)
            for _ in range(envelope_iterations):
                for i in range(m):
                    for g in range(G):
                        Wit[i, g] = W[i, g] * envelope_factor if ybar[i, g] < z[i, g] else W[i, g]
                        b[i, g] = Wit[i, g] * ybar[i, g]
                _ldl_group(Wit, lam_px, pen, L, D, tmp, G)
                _solve_group(L, D, b, z, G)
        for k in range(nout):
            o = out_idx[k]
            for g in range(G):
                if not ok[g] or (max_distance >= 0 and dist[k, g0 + g] > max_distance):
                    res[k, g0 + g] = nan32
                else:
                    res[k, g0 + g] = np.float32(z[o, g])
        for g in range(G):
            lam_used[g0 + g] = np.float32(lam_px[g]) if ok[g] else nan32


# --------------------------------------------------------------------------------------
# the kernel


def _check_lam(lam, lam_grid):
    if isinstance(lam, str):
        if lam not in ("cv", "vcurve"):
            raise ConfigurationError(f"lam {lam!r}: expected a positive number, 'cv' or 'vcurve'")
        grid = np.asarray(lam_grid if lam_grid is not None else DEFAULT_LAMBDA_GRID, dtype=float)
        if grid.ndim != 1 or grid.size < (3 if lam == "vcurve" else 1) or not (grid > 0).all():
            raise ConfigurationError(f"lam_grid {lam_grid!r}: expected positive lambdas "
                                     f"({'3' if lam == 'vcurve' else '1'} or more)")
        return lam, np.sort(grid)
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ConfigurationError(f"lam {lam!r}: expected a positive number, 'cv' or 'vcurve'") from None
    if not np.isfinite(value) or value <= 0:
        raise ConfigurationError(f"lam {lam!r}: expected a positive finite number")
    return value, None


def whittaker(values, weights, dates, out_dates, lam=DEFAULT_LAMBDA, order: int = 2, *,
              min_obs: int = DEFAULT_MIN_OBS, max_distance: float | None = None,
              lam_grid: Sequence[float] | None = None, envelope_iterations: int = 0,
              envelope_factor: float = 0.1,
              clip: tuple[float, float] | None = None,
              implementation: Literal["compiled", "numpy"] = "compiled",
              ) -> tuple[np.ndarray, SmoothingQuality]:
    """Weighted Whittaker smoothing of per-pixel profiles onto output dates.

    Parameters
    ----------
    values
        Observations shaped ``(time, ...)`` (e.g. ``(time, y, x)`` or ``(time, n)``);
        NaN = no observation.
    weights
        Weights ``>= 0`` of the same shape (e.g. :func:`weights_from_flags`), or None
        for 1 wherever ``values`` is finite. Weight 0 (or a NaN value) ignores the
        observation.
    dates
        The ``time`` dates of ``values`` (any order, repeats allowed: observations of
        the same day are combined); a time of day is dropped.
    out_dates
        Dates to return the smoothed profile at (e.g. :func:`regular_dates`).
    lam
        Smoothing parameter on the 1-day support (default :data:`DEFAULT_LAMBDA`,
        see the module docstring), or ``"cv"`` (per-pixel leave-one-day-out
        cross-validation) or ``"vcurve"`` (per-pixel V-curve) over ``lam_grid``.
    order
        Order of the differences in the penalty (2: the fit tends to a straight line
        as ``lam`` grows).
    min_obs
        Fewest distinct valid days for a pixel to be smoothed (else NaN and
        :attr:`SmoothingFlag.TOO_FEW_OBSERVATIONS`); at least ``order``.
    max_distance
        If given, NaN (and :attr:`SmoothingFlag.TOO_FAR`) at output dates more than
        this many days from the pixel's nearest valid observation.
    lam_grid
        Candidate lambdas for ``"cv"`` / ``"vcurve"`` (default
        :data:`DEFAULT_LAMBDA_GRID`).
    envelope_iterations
        Upper-envelope refits (0: off). After each fit, the valid observations below
        the fit get their weight multiplied by ``envelope_factor`` and the fit is
        redone: residual cloud, haze and shadow that the mask missed pull NDVI and
        LAI *down*, so the profile is drawn toward the upper envelope of the data
        (the asymmetric weighting of Eilers & Boelens 2005; 2-3 iterations suffice).
        It biases the profile upward by about the noise level where the noise is
        symmetric, and fills genuine short troughs: on the Flanders maize pixels it
        lifts the bare-soil minimum of late May from NDVI 0.26 to 0.46, hence off by
        default.
    envelope_factor
        Weight factor (0-1) of observations below the fit in the envelope refits.
    clip
        ``(low, high)`` bounds applied to the output (e.g. ``(0, 8)`` for LAI: the
        smoother can overshoot next to abrupt changes), or None.
    implementation
        ``compiled``: one numba pass over groups of pixels side by side (the default);
        ``numpy``: the vectorised numpy implementation it replaced, kept as the
        reference the tests and the benchmark compare the compiled one against (same
        results).

    Returns
    -------
    smoothed : numpy.ndarray
        ``float32 (n_out, ...)``.
    quality : SmoothingQuality
        Distance to the nearest valid observation, flags, valid-day count, lambda.
    """
    return _whittaker(values, weights, dates, out_dates, lam, order, min_obs=min_obs,
                      max_distance=max_distance, lam_grid=lam_grid,
                      envelope_iterations=envelope_iterations, envelope_factor=envelope_factor,
                      clip=clip, kernel=_kernel(implementation))


def _kernel(implementation: str):
    if implementation == "compiled":
        return _smooth_pixels
    if implementation == "numpy":
        return _smooth_numpy
    raise ConfigurationError(f"implementation {implementation!r}: expected 'compiled' or "
                             "'numpy'")


def _whittaker(values, weights, dates, out_dates, lam, order, *, min_obs, max_distance, lam_grid,
               envelope_iterations, envelope_factor, clip, kernel):
    """:func:`whittaker` with the per-pixel ``kernel`` given: :func:`_smooth_pixels` (compiled)
    or :func:`_smooth_numpy` (the vectorised numpy reference the benchmark compares against)."""
    lam, grid = _check_lam(lam, lam_grid)
    if int(order) != order or order < 1:
        raise ConfigurationError(f"order {order!r}: expected a positive whole number")
    order = int(order)
    if int(min_obs) != min_obs or min_obs < order:
        raise ConfigurationError(f"min_obs {min_obs!r}: expected a whole number >= order ({order})")
    if max_distance is not None and not max_distance >= 0:
        raise ConfigurationError(f"max_distance {max_distance!r}: expected >= 0 days or None")
    if int(envelope_iterations) != envelope_iterations or envelope_iterations < 0:
        raise ConfigurationError(f"envelope_iterations {envelope_iterations!r}: expected a whole "
                                 "number >= 0")
    if not 0.0 <= envelope_factor <= 1.0:
        raise ConfigurationError(f"envelope_factor {envelope_factor!r}: expected 0 to 1")
    if clip is not None and (len(clip) != 2 or not clip[0] <= clip[1]):
        raise ConfigurationError(f"clip {clip!r}: expected (low, high) with low <= high")
    y = np.asarray(values)
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)
    if y.ndim < 1:
        raise ConfigurationError("values: expected an array shaped (time, ...)")
    days = _days(dates, "dates")
    out = _days(out_dates, "out_dates")
    if days.size != y.shape[0]:
        raise ConfigurationError(f"dates: {days.size} dates for {y.shape[0]} time steps in values")
    if weights is None:
        w = np.ones((1, 1), dtype=y.dtype)
    else:
        w = np.asarray(weights)
        if not np.issubdtype(w.dtype, np.floating):
            w = w.astype(np.float64)
        if w.shape != y.shape:
            raise ConfigurationError(f"weights shape {w.shape} differs from values shape {y.shape}")
        if np.isnan(w).any() or (w < 0).any():
            raise ConfigurationError("weights: expected finite values >= 0")
    pix_shape = y.shape[1:]
    npix = int(np.prod(pix_shape, dtype=np.int64))
    y2 = y.reshape(y.shape[0], npix)
    w2 = np.broadcast_to(w, y2.shape) if weights is None else w.reshape(y.shape[0], npix)

    nout = out.size
    res = np.full((nout, npix), np.nan, dtype=np.float32)
    dist = np.full((nout, npix), np.nan, dtype=np.float32)
    flags = np.zeros((nout, npix), dtype=np.uint8)
    nvalid = np.zeros(npix, dtype=np.int32)
    lam_used = np.full(npix, np.nan, dtype=np.float32)
    if npix and (days.size or nout):
        start = min(days.min() if days.size else out.min(), out.min() if nout else days.min())
        stop = max(days.max() if days.size else out.max(), out.max() if nout else days.max())
        m = int((stop - start).astype(int)) + 1
        obs_idx = (days - start).astype(np.int64)
        out_idx = (out - start).astype(np.int64)
        pen = penalty_bands(m, order)
        how = _HOW_FIXED if grid is None else _HOW_CV if lam == "cv" else _HOW_VCURVE
        kernel(y2, w2, obs_idx, out_idx, m, pen, 0.0 if grid is not None else float(lam),
                       how, np.zeros(0) if grid is None else np.asarray(grid, np.float64),
                       int(min_obs), -1.0 if max_distance is None else float(max_distance),
                       int(envelope_iterations), float(envelope_factor),
                       res, dist, flags, nvalid, lam_used)
    if clip is not None:
        res = np.clip(res, np.float32(clip[0]), np.float32(clip[1]))
    q = SmoothingQuality(distance=dist.reshape((nout,) + pix_shape),
                         flags=flags.reshape((nout,) + pix_shape),
                         n_valid=nvalid.reshape(pix_shape), lam=lam_used.reshape(pix_shape))
    return res.reshape((nout,) + pix_shape), q


def _smooth_batch(y, w, obs_idx, out_idx, m, pen, order, lam, grid, min_obs, max_distance,
                  envelope_iterations, envelope_factor):
    n = y.shape[1]
    W = np.zeros((m, n))
    WY = np.zeros((m, n))
    for t, j in enumerate(obs_idx):
        W[j] += w[t]
        WY[j] += w[t] * y[t]
    valid_day = W > 0
    nvalid = valid_day.sum(axis=0).astype(np.int32)
    ok = nvalid >= min_obs

    # distance to the nearest valid day, by forward / backward filling of day numbers
    dayno = np.arange(m, dtype=np.float64)[:, None]
    big = np.float64(4 * m + 10)
    last, nxt = np.empty((m, n)), np.empty((m, n))
    cur_last, cur_next = np.full(n, -big), np.full(n, big)
    for i in range(m):  # row loops: faster than ufunc.accumulate along a strided axis
        cur_last = np.where(valid_day[i], float(i), cur_last)
        last[i] = cur_last
        k = m - 1 - i
        cur_next = np.where(valid_day[k], float(k), cur_next)
        nxt[k] = cur_next
    o = out_idx
    dist = np.minimum(dayno[o] - last[o], nxt[o] - dayno[o])
    dist = np.where(nvalid[None, :] > 0, dist, np.nan)
    flags = np.zeros((o.size, n), dtype=np.uint8)
    extrap = (last[o] < 0) | (nxt[o] >= m)
    flags |= (extrap & (nvalid[None, :] > 0)).astype(np.uint8) * np.uint8(SmoothingFlag.EXTRAPOLATED)
    flags[:, ~ok] |= np.uint8(SmoothingFlag.TOO_FEW_OBSERVATIONS)

    # pixels that cannot be smoothed get a harmless system (weight 1 everywhere), then NaN
    Wsys = np.where(ok[None, :], W, 1.0)
    WYsys = np.where(ok[None, :], WY, 0.0)
    if grid is None:
        lam_px = np.full(n, lam)
    else:
        lam_px = _select_lambda(Wsys, WYsys, pen, order, lam, grid)
    L, D = ldl(Wsys, lam_px, pen)
    z = _solve(L, D, WYsys)
    if envelope_iterations:
        ybar = WYsys / np.where(Wsys > 0, Wsys, 1.0)
        for _ in range(envelope_iterations):
            Wit = np.where(ybar < z, Wsys * envelope_factor, Wsys)
            L, D = ldl(Wit, lam_px, pen)
            z = _solve(L, D, Wit * ybar)
    res = z[o].astype(np.float32)
    res[:, ~ok] = np.nan
    if max_distance is not None:
        far = dist > max_distance
        res[far] = np.nan
        flags |= far.astype(np.uint8) * np.uint8(SmoothingFlag.TOO_FAR)
    lam_out = np.where(ok, lam_px, np.nan).astype(np.float32)
    return res, dist.astype(np.float32), flags, nvalid, lam_out


def _smooth_numpy(y, w, obs_idx, out_idx, m, pen, lam, how, grid, min_obs, max_distance,
                  envelope_iterations, envelope_factor, res, dist, flags, nvalid, lam_used):
    """The numpy reference of :func:`_smooth_pixels` (same arguments): batches of
    :data:`BATCH_PIXELS` pixels, the loops over days and the arithmetic over pixels."""
    order = pen.shape[0] - 1
    lam_arg = {_HOW_FIXED: lam, _HOW_CV: "cv", _HOW_VCURVE: "vcurve"}[how]
    grid_arg = None if how == _HOW_FIXED else grid
    maxd = None if max_distance < 0 else max_distance
    npix = y.shape[1]
    for b0 in range(0, npix, BATCH_PIXELS):
        sl = slice(b0, min(npix, b0 + BATCH_PIXELS))
        yb, wb = y[:, sl].astype(np.float64), w[:, sl].astype(np.float64)
        wb = np.where(np.isfinite(yb), wb, 0.0)
        yb = np.where(wb > 0, yb, 0.0)
        r = _smooth_batch(yb, wb, obs_idx, out_idx, m, pen, order, lam_arg, grid_arg, min_obs, maxd,
                          envelope_iterations, envelope_factor)
        res[:, sl], dist[:, sl], flags[:, sl], nvalid[sl], lam_used[sl] = r


def _select_lambda(W, WY, pen, order, how, grid):
    """Per-pixel lambda from ``grid`` by leave-one-day-out CV or the V-curve."""
    n = W.shape[1]
    sw = W.sum(axis=0)
    scores = []
    logs = []
    for g in grid:
        lam_px = np.full(n, g)
        L, D = ldl(W, lam_px, pen)
        z = _solve(L, D, WY)
        # W Y = W y on valid days; the residual y - z there is (WY - W z) / W
        with np.errstate(invalid="ignore", divide="ignore"):
            ybar = np.where(W > 0, WY / np.where(W > 0, W, 1.0), 0.0)
        r2 = W * (ybar - z) ** 2
        if how == "cv":
            h = W * inverse_diagonal(L, D)
            h = np.clip(h, 0.0, 1.0 - 1e-9)
            scores.append((r2 / (1.0 - h) ** 2).sum(axis=0) / sw)
        else:
            fid = np.maximum(r2.sum(axis=0), 1e-300)
            rough = np.maximum(_roughness(z, order), 1e-300)
            logs.append((np.log10(fid), np.log10(rough)))
    if how == "cv":
        best = np.argmin(np.stack(scores), axis=0)
        return grid[best]
    f = np.stack([a for a, _ in logs])
    r = np.stack([b for _, b in logs])
    v = np.hypot(np.diff(f, axis=0), np.diff(r, axis=0))
    best = np.argmin(v, axis=0)
    return np.sqrt(grid[best] * grid[best + 1])


# --------------------------------------------------------------------------------------
# xarray / dask


def whittaker_dataarray(da, weights_da=None, out_dates=None, lam=DEFAULT_LAMBDA, order: int = 2, *,
                        min_obs: int = DEFAULT_MIN_OBS, max_distance: float | None = None,
                        lam_grid: Sequence[float] | None = None, envelope_iterations: int = 0,
                        envelope_factor: float = 0.1, clip: tuple[float, float] | None = None,
                        time_dim: str = "time"):
    """:func:`whittaker` on an ``xarray.DataArray``, lazily when it is dask-backed.

    Parameters
    ----------
    da
        DataArray with a ``time_dim`` dimension (datetime coordinate) and any pixel
        dimensions (``y``, ``x``).
    weights_da
        Weights DataArray of the same dimensions (or None: 1 where ``da`` is finite).
    out_dates
        Output dates (default: :func:`regular_dates` every 10 days from the first date).
    lam, order, min_obs, max_distance, lam_grid, envelope_iterations, envelope_factor, clip
        As in :func:`whittaker`.
    time_dim
        Name of the time dimension.

    Returns
    -------
    xarray.DataArray
        Smoothed float32 values, dims ``(time_dim, *pixel dims)``, ``time_dim`` = the
        output dates; non-index coordinates ``obs_distance`` (days, float32),
        ``smoothing_flags`` (uint8, :class:`SmoothingFlag`) on the same dims and
        ``n_valid`` (int32), ``smoothing_lambda`` (float32) on the pixel dims; the
        pixel coordinates (x, y, spatial_ref) of ``da``. Dask input gives dask output
        chunked like ``da`` over the pixel dims and in one chunk over time
        (``out.reset_coords()`` gives a Dataset of the layers).
    """
    import xarray as xr

    if time_dim not in da.dims:
        raise ConfigurationError(f"da has no {time_dim!r} dimension (dims: {', '.join(map(str, da.dims))})")
    lam_checked, _ = _check_lam(lam, lam_grid)
    other = [d for d in da.dims if d != time_dim]
    da = da.transpose(time_dim, *other)
    if weights_da is None:
        weights_da = xr.ones_like(da, dtype=np.float32).where(np.isfinite(da), 0)
    else:
        if set(weights_da.dims) != set(da.dims):
            raise ConfigurationError(f"weights_da dims {weights_da.dims} differ from da dims {da.dims}")
        weights_da = weights_da.transpose(time_dim, *other)
    dates = _days(da[time_dim].values, "time")
    out = _days(out_dates, "out_dates") if out_dates is not None else \
        regular_dates(dates.min(), dates.max()) if dates.size else np.array([], "datetime64[D]")
    nout = out.size
    kw = {"lam": lam, "order": order, "min_obs": min_obs, "max_distance": max_distance,
          "lam_grid": lam_grid, "envelope_iterations": envelope_iterations,
          "envelope_factor": envelope_factor, "clip": clip}

    def block(vb, wb):
        z, q = whittaker(vb, wb, dates, out, **kw)
        lam_b = np.broadcast_to(q.lam, z.shape)
        nv_b = np.broadcast_to(q.n_valid.astype(np.float32), z.shape)
        return np.stack([z, q.distance, q.flags.astype(np.float32), lam_b, nv_b])

    try:
        import dask.array as dsk
        lazy = isinstance(da.data, dsk.Array) or isinstance(weights_da.data, dsk.Array)
    except ImportError:  # dask is a core dependency; numpy-only use still works without it
        lazy = False
    if lazy:
        v = da.data if isinstance(da.data, dsk.Array) else dsk.from_array(da.data)
        v = v.rechunk({0: -1})
        w = weights_da.data if isinstance(weights_da.data, dsk.Array) else dsk.from_array(weights_da.data)
        w = w.astype(np.float32).rechunk(v.chunks)
        from dask.base import tokenize

        # the key name must be unique to these inputs: a fixed name made the smoothers of two
        # variables written together (LAI and FCOVER of one product) share their tasks
        stacked = dsk.map_blocks(block, v, w, dtype=np.float32, new_axis=0,
                                 chunks=((5,), (nout,)) + v.chunks[1:],
                                 name="agriseries-whittaker-" + tokenize(v, w, dates, out, kw))
        z, dist, fl = stacked[0], stacked[1], stacked[2].astype(np.uint8)
        lam_l, nv = stacked[3, 0], stacked[4, 0].astype(np.int32)
        if nout == 0:
            lam_l = dsk.full(v.shape[1:], np.nan, dtype=np.float32, chunks=v.chunks[1:])
            nv = dsk.zeros(v.shape[1:], dtype=np.int32, chunks=v.chunks[1:])
    else:
        z, q = whittaker(np.asarray(da.values), np.asarray(weights_da.values), dates, out, **kw)
        dist, fl, lam_l, nv = q.distance, q.flags, q.lam, q.n_valid

    coords = {k: c for k, c in da.coords.items() if time_dim not in c.dims}
    coords[time_dim] = (time_dim, out.astype("datetime64[ns]"))
    dims = (time_dim, *other)
    coords["obs_distance"] = (dims, dist, {"units": "day", "long_name":
                                           "days to the nearest valid observation"})
    coords["smoothing_flags"] = (dims, fl, {
        "flag_masks": np.array([int(b) for b in SmoothingFlag], dtype=np.uint8),
        "flag_meanings": " ".join(b.name.lower() for b in SmoothingFlag)})
    coords["n_valid"] = (tuple(other), nv, {"long_name": "days with a valid observation"})
    coords["smoothing_lambda"] = (tuple(other), lam_l, {"long_name": "Whittaker lambda (1-day support)"})
    attrs = dict(da.attrs)
    attrs.update({"smoothing": "weighted Whittaker (Eilers 2003), daily support",
                  "smoothing_order": int(order),
                  "smoothing_lambda": lam if isinstance(lam_checked, str) else float(lam_checked),
                  "smoothing_min_obs": int(min_obs),
                  "smoothing_envelope_iterations": int(envelope_iterations)})
    return xr.DataArray(z, dims=dims, coords=coords, attrs=attrs, name=da.name)
