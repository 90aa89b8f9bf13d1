"""Multi-temporal cloud, cloud shadow, snow and water masks on the coarse grid ("mini-MAJA").

The method is the MAJA / MACCS multi-temporal cloud detection (Hagolle et al. 2010, RSE
114(8):1747-1755, doi:10.1016/j.rse.2010.03.002), in a simplified form described in
docs/l2a.md, "Masks". It works per tile on reflectances resampled to a coarse grid (240 m by default,
a full Sentinel-2 tile is then 458 x 458 px) and keeps, between dates, a small per-tile
memory (:class:`TileState`):

* the **composite** reflectance: for each pixel, the reflectance of the most recent date on
  which it was seen clear (MAJA's ``RCR``), with that date (``PXD``);
* a FIFO **stack** of the last few reasonably clear images (MAJA's ``STO``), cloudy pixels
  set to NaN, used by the correlation test;
* the list of dates already processed.

For one date, :func:`detect` runs:

1. **Water**: ``NDWI = (green - nir) / (green + nir) > water_ndwi_threshold`` and
   ``nir < water_nir_threshold``, on the current date or on the composite (a pixel that was
   water when last seen clear keeps the water cloud test when covered).
2. **Mono-temporal clouds**: land ``blue > 0.24``; water ``swir16 > 0.04``
   (``0.16`` inside the sun-glint cone). **Cirrus**: ``cirrus (TOA 1.38 um) > 0.012``
   (optionally plus a gain per km of altitude), when the scene has a cirrus band.
3. **Multi-temporal clouds**, where the pixel has a clear composite value and is
   neither water nor snow: with ``lag = |date - PXD|`` days,
   ``thr = min(max_var, min_var * (1 + lag / forgetting))``, the pixel is cloudy if
   ``rNIR < K_nir_blue * rB``, ``dRed < K_red_blue * dBlue`` and ``dHOT > thr`` (``HOT =
   blue - red / 2``, ``rX = (X - X_comp) / (X + X_comp)``, ``dX = X - X_comp``). Pixels passing
   the two ratio tests and ``dHOT > thr - delta`` form the cloud *extension*; the parts of it
   connected to multi-temporal clouds are added to them.
4. **Correlation test**: for every cloud candidate, the Pearson
   correlation of the correlation band between the current image and the composite over a
   ``(2 n + 1)^2`` window (local moments from :func:`scipy.ndimage.uniform_filter`, no-data
   excluded, at least ``correl_min_pixels`` pixels), then against each stack image; a
   candidate whose correlation exceeds ``correl_threshold`` with any of them is un-flagged
   (the surface texture is visible through it: it is a surface change, not a cloud).
5. **Snow**: cloud candidates with ``NDSI > 0.4``, ``red > 0.12`` and
   ``swir16 < 0.16`` are snow, not cloud (``NDSI = (green - swir16) / (green + swir16)``);
   so are clear pixels passing the same test.
6. **Cloud shadows**: the clouds are labelled into objects
   (8-connectivity); each object is projected on the ground for every cloud height from
   ``shadow_height_min`` to ``shadow_height_max`` (sun direction, corrected for the view
   parallax); the height kept per object is the one whose projected zone (cloud pixels
   excluded) has the lowest mean ``nir / nir_comp``; its shadow is the projected zone where
   that ratio is below ``shadow_darkening``. Without a composite (init mode) the ratio is
   taken against the scene's median clear-land NIR, with ``shadow_init_darkening``.
   Shadows of clouds outside the image (MAJA CLM bit 6) are pixels darkened in green, red,
   NIR and SWIR1 alike (ratio to the composite below ``outside_shadow_darkening`` in all four,
   composite at most ``outside_shadow_max_lag`` days old).
7. **Dilation** of clouds and shadows by a disk of
   ``cloud_dilation`` / ``shadow_dilation`` coarse pixels.

:func:`update_state` then applies MAJA's composite update rule: every valid pixel
that is not cloud, cirrus or shadow (snow and water per parameter) takes the current
reflectance and date; the image enters the stack if it is clear enough. In "init" mode
(no state, or no pixel ever seen clear) only the mono-temporal tests run; the processor is
expected to build a first composite with MAJA's backward mode (the first images processed in
reverse order) before the forward run.

Everything is vectorised numpy / scipy on the coarse grid; a 458 x 458 date takes well under
a second. Angles are in degrees; azimuths clockwise from north, the view azimuth being the
direction of the satellite seen from the pixel (the Sentinel-2 and Landsat angle convention).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from agriseries.core.errors import (
    ConfigurationError,
    CorruptProductError,
    InputProductError,
    MissingBandError,
    StoreError,
)
from agriseries.core.masks import MaskBit
from .params import CloudParams  # noqa: F401 -- re-exported

__all__ = [
    "REQUIRED_BANDS",
    "STATE_FORMAT",
    "CloudParams",
    "CoarseScene",
    "MaskResult",
    "StackImage",
    "TileState",
    "correlation",
    "day_number",
    "detect",
    "multitemporal_threshold",
    "project_shadow",
    "shadow_displacement",
    "update_state",
]

#: Bands every scene must have (STAC common names). ``coastal`` too when ``blue_band="coastal"``.
REQUIRED_BANDS = ("blue", "green", "red", "nir", "swir16")
#: Identifier written in (and checked on) every saved tile state.
STATE_FORMAT = "agriseries-l2a-cloudmask-state"
STATE_VERSION = 1
_EPOCH = dt.date(1970, 1, 1)


def day_number(date: dt.date) -> int:
    """Days since 1970-01-01 of a date (the unit of :attr:`TileState.comp_date`)."""
    if isinstance(date, dt.datetime):
        date = date.date()
    return (date - _EPOCH).days


def _from_day(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(day))


# ---------------------------------------------------------------------------------- parameters

# ---------------------------------------------------------------------------------- inputs

def _as_angle(value, name: str, shape: tuple[int, int], where: str) -> float | np.ndarray:
    if np.ndim(value) == 0:
        value = float(value)
        if not np.isfinite(value):
            raise InputProductError(where, f"{name} is {value}, expected an angle in degrees")
        return value
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise InputProductError(where, f"{name} has shape {arr.shape}, expected a scalar or the "
                                       f"grid shape {shape}")
    return arr


@dataclass
class CoarseScene:
    """One date resampled to the coarse grid, the input of :func:`detect`.

    Attributes
    ----------
    date : datetime.date
        Acquisition date.
    bands : dict of str to numpy.ndarray
        Reflectance (0-1, ``float32``, NaN = no data) per STAC common name: ``blue``,
        ``green``, ``red``, ``nir``, ``swir16`` (required), ``swir22``, ``cirrus`` (TOA
        reflectance of S2 B10 / L8 B9) and ``coastal`` (optional). Rayleigh/gas-corrected TOA
        (SMAC with AOT 0), plain TOA or L2A surface reflectance, as long as the whole series
        of a tile uses the same kind.
    sun_zenith, sun_azimuth, view_zenith, view_azimuth : float or numpy.ndarray
        Degrees, scalars or coarse 2-D arrays; azimuths clockwise from north, the view
        azimuth pointing from the pixel to the satellite.
    pixel_size : float
        Size of a coarse pixel, metres.
    altitude : numpy.ndarray, optional
        Ground altitude (m) on the coarse grid, used by the cirrus threshold.
    """

    date: dt.date
    bands: dict[str, np.ndarray]
    sun_zenith: float | np.ndarray
    sun_azimuth: float | np.ndarray
    view_zenith: float | np.ndarray = 0.0
    view_azimuth: float | np.ndarray = 0.0
    pixel_size: float = 240.0
    altitude: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.date, dt.datetime):
            self.date = self.date.date()
        if not isinstance(self.date, dt.date):
            raise ConfigurationError(f"CoarseScene.date={self.date!r}: expected a datetime.date")
        where = f"coarse scene {self.date.isoformat()}"
        if not isinstance(self.bands, dict) or not self.bands:
            raise InputProductError(where, "bands must be a non-empty dict of 2-D arrays")
        bands = {}
        shape = None
        for name, arr in self.bands.items():
            arr = np.asarray(arr, dtype=np.float32)
            if arr.ndim != 2:
                raise InputProductError(where, f"band {name!r} has {arr.ndim} dimensions, "
                                               "expected a 2-D (y, x) array")
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise InputProductError(where, f"band {name!r} has shape {arr.shape}, the "
                                               f"others {shape}")
            bands[name] = arr
        self.bands = bands
        missing = [b for b in REQUIRED_BANDS if b not in bands]
        if missing:
            raise MissingBandError(where, f"missing band(s) {missing}; the cloud mask needs "
                                          f"{list(REQUIRED_BANDS)} (STAC common names)")
        if not (np.isfinite(self.pixel_size) and self.pixel_size > 0):
            raise ConfigurationError(f"{where}: pixel_size={self.pixel_size!r}, "
                                     "expected metres > 0")
        for name in ("sun_zenith", "sun_azimuth", "view_zenith", "view_azimuth"):
            setattr(self, name, _as_angle(getattr(self, name), name, shape, where))
        if np.nanmax(self.sun_zenith) >= 90 or np.nanmin(self.sun_zenith) < 0:
            raise InputProductError(where, "sun_zenith must be in [0, 90) degrees")
        if np.nanmax(self.view_zenith) >= 90 or np.nanmin(self.view_zenith) < 0:
            raise InputProductError(where, "view_zenith must be in [0, 90) degrees")
        if self.altitude is not None:
            alt = np.asarray(self.altitude, dtype=np.float32)
            if alt.shape != shape:
                raise InputProductError(where, f"altitude has shape {alt.shape}, expected {shape}")
            self.altitude = alt

    @property
    def shape(self) -> tuple[int, int]:
        """Grid shape (rows, columns)."""
        return next(iter(self.bands.values())).shape


# ---------------------------------------------------------------------------------- state

@dataclass(frozen=True)
class StackImage:
    """One image of the stack: its date and its bands (NaN where it was not clear)."""

    date: dt.date
    bands: dict[str, np.ndarray]


@dataclass
class TileState:
    """The per-tile memory of the multi-temporal detection (docs/l2a.md, "Tile state").

    Attributes
    ----------
    shape : tuple of int
        Coarse grid shape (rows, columns).
    grid : str
        Identity of the grid (e.g. CRS + transform), set by the processor and checked by
        :meth:`load`.
    composite : dict of str to numpy.ndarray
        Last clear reflectance of each pixel per band (``float32``, NaN = never seen clear).
    comp_date : numpy.ndarray
        ``int32`` day number (days since 1970-01-01) of the composite value, -1 = never.
    stack : list of StackImage
        The last clear-ish images, oldest first, at most ``CloudParams.stack_size``.
    dates : list of datetime.date
        Dates already processed, in processing order.
    """

    shape: tuple[int, int]
    grid: str
    composite: dict[str, np.ndarray]
    comp_date: np.ndarray
    stack: list[StackImage] = field(default_factory=list)
    dates: list[dt.date] = field(default_factory=list)

    @classmethod
    def empty(cls, shape: tuple[int, int], grid: str = "",
              bands: tuple[str, ...] | None = None) -> TileState:
        """A state with no history.

        Parameters
        ----------
        shape : tuple of int
            Coarse grid shape (rows, columns).
        grid : str
            Grid identity string.
        bands : tuple of str, optional
            Composite bands; default those of ``CloudParams().state_bands``.

        Returns
        -------
        TileState
        """
        if len(shape) != 2 or min(shape) < 1:
            raise ConfigurationError(f"TileState.empty: shape={shape!r}, "
                                     "expected (rows, cols) >= 1")
        shape = (int(shape[0]), int(shape[1]))
        bands = bands or CloudParams().state_bands
        return cls(shape=shape, grid=str(grid),
                   composite={b: np.full(shape, np.nan, np.float32) for b in bands},
                   comp_date=np.full(shape, -1, np.int32))

    @property
    def has_history(self) -> np.ndarray:
        """Pixels with a clear composite value."""
        ok = self.comp_date >= 0
        for arr in self.composite.values():
            ok &= np.isfinite(arr)
        return ok

    def copy(self) -> TileState:
        """A deep copy (arrays copied)."""
        return TileState(shape=self.shape, grid=self.grid,
                         composite={k: v.copy() for k, v in self.composite.items()},
                         comp_date=self.comp_date.copy(),
                         stack=[StackImage(s.date, {k: v.copy() for k, v in s.bands.items()})
                                for s in self.stack],
                         dates=list(self.dates))

    # ---- persistence

    def save(self, path: str | Path) -> None:
        """Write the state to an ``.npz`` file, atomically.

        The file is written to a temporary name in the same folder, flushed to disk, then
        renamed over ``path`` (``os.replace``): a crash leaves either the old state or the
        new one, never a half-written file.

        Parameters
        ----------
        path : str or pathlib.Path
            Destination file.
        """
        path = Path(path)
        bands = list(self.composite)
        stack_bands = list(self.stack[0].bands) if self.stack else []
        arrays = {
            "format": np.array(STATE_FORMAT),
            "version": np.array(STATE_VERSION, np.int64),
            "grid": np.array(self.grid),
            "shape": np.array(self.shape, np.int64),
            "bands": np.array(bands, dtype=str),
            "composite": np.stack([self.composite[b] for b in bands]).astype(np.float32)
            if bands else np.zeros((0,) + self.shape, np.float32),
            "comp_date": self.comp_date.astype(np.int32),
            "stack_bands": np.array(stack_bands, dtype=str),
            "stack_days": np.array([day_number(s.date) for s in self.stack], np.int64),
            "stack": np.stack([np.stack([s.bands[b] for b in stack_bands]) for s in self.stack])
            .astype(np.float32) if self.stack else np.zeros((0, 0) + self.shape, np.float32),
            "dates": np.array([day_number(d) for d in self.dates], np.int64),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write the tile state: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise StoreError(f"{path}: cannot write the tile state: {exc}") from exc
            raise

    @classmethod
    def load(cls, path: str | Path, grid: str | None = None) -> TileState:
        """Read a state written by :meth:`save`.

        Parameters
        ----------
        path : str or pathlib.Path
            The ``.npz`` file.
        grid : str, optional
            Expected grid identity; a state made for another grid is refused.

        Returns
        -------
        TileState

        Raises
        ------
        StoreError
            The file does not exist or cannot be read.
        CorruptProductError
            The file is truncated, not a tile state, or inconsistent.
        InputProductError
            The state belongs to another grid.
        """
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no tile state file here")
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, EOFError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
            raise CorruptProductError(path, f"not a readable tile state (truncated or corrupt "
                                            f".npz): {exc}") from exc
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the tile state: {exc}") from exc
        need = ("format", "version", "grid", "shape", "bands", "composite", "comp_date",
                "stack_bands", "stack_days", "stack", "dates")
        missing = [k for k in need if k not in data]
        if missing:
            raise CorruptProductError(path, f"not a tile state: arrays {missing} are missing")
        if str(data["format"]) != STATE_FORMAT:
            raise CorruptProductError(path, f"format {str(data['format'])!r}, expected "
                                            f"{STATE_FORMAT!r}")
        if int(data["version"]) != STATE_VERSION:
            raise CorruptProductError(path, f"state version {int(data['version'])}, this "
                                            f"agriseries reads version {STATE_VERSION}")
        shape = tuple(int(v) for v in data["shape"])
        bands = [str(b) for b in data["bands"]]
        stack_bands = [str(b) for b in data["stack_bands"]]
        comp, comp_date, stack = data["composite"], data["comp_date"], data["stack"]
        days = data["stack_days"]
        problems = []
        if len(shape) != 2:
            problems.append(f"shape {shape}")
        if comp.shape != (len(bands),) + shape:
            problems.append(f"composite shape {comp.shape} for bands {bands} and grid {shape}")
        if comp_date.shape != shape:
            problems.append(f"comp_date shape {comp_date.shape}")
        if len(days) and stack.shape != (len(days), len(stack_bands)) + shape:
            problems.append(f"stack shape {stack.shape}")
        if problems:
            raise CorruptProductError(path, "inconsistent tile state: " + "; ".join(problems))
        state_grid = str(data["grid"])
        if grid is not None and state_grid != grid:
            raise InputProductError(path, f"tile state made for grid {state_grid!r}, expected "
                                          f"{grid!r}")
        return cls(shape=shape, grid=state_grid,
                   composite={b: comp[i].astype(np.float32) for i, b in enumerate(bands)},
                   comp_date=comp_date.astype(np.int32),
                   stack=[StackImage(_from_day(d), {b: stack[i, j].astype(np.float32)
                                                    for j, b in enumerate(stack_bands)})
                          for i, d in enumerate(days)],
                   dates=[_from_day(d) for d in data["dates"]])


# ---------------------------------------------------------------------------------- result

@dataclass
class MaskResult:
    """The masks of one date on the coarse grid (boolean arrays unless stated).

    Attributes
    ----------
    valid : numpy.ndarray
        Every required band has data.
    cloud : numpy.ndarray
        Final cloud mask (mono + multi-temporal, after the correlation and snow tests),
        dilated.
    cloud_mono, cloud_multi : numpy.ndarray
        The clouds found by the mono- and multi-temporal tests (before dilation).
    cirrus : numpy.ndarray
        High clouds from the 1.38 um band (all False without a cirrus band).
    shadow : numpy.ndarray
        Cloud shadows (geometric | outside), dilated, never on cloud.
    shadow_geometric, shadow_outside : numpy.ndarray
        Shadows of the detected clouds, and of clouds outside the image (before dilation).
    snow, water : numpy.ndarray
        Snow; water (currently, or cloud-covered and water on the composite).
    objects : numpy.ndarray
        ``int32`` labels of the cloud objects (0 = none).
    heights : numpy.ndarray
        Cloud height (m) chosen for each object (index = label - 1), NaN where none cast a
        detectable shadow.
    mode : str
        ``"init"`` (no history: mono-temporal tests only) or ``"nominal"``.
    """

    valid: np.ndarray
    cloud: np.ndarray
    cloud_mono: np.ndarray
    cloud_multi: np.ndarray
    cirrus: np.ndarray
    shadow: np.ndarray
    shadow_geometric: np.ndarray
    shadow_outside: np.ndarray
    snow: np.ndarray
    water: np.ndarray
    objects: np.ndarray
    heights: np.ndarray
    mode: str
    max_cloud_percentage: float = 90.0

    @property
    def cloud_percentage(self) -> float:
        """Cloud and cirrus cover, percent of the valid pixels (100 when none is valid)."""
        n = int(self.valid.sum())
        if n == 0:
            return 100.0
        return 100.0 * float((self.valid & (self.cloud | self.cirrus)).sum()) / n

    @property
    def usable(self) -> bool:
        """False when :attr:`cloud_percentage` exceeds ``max_cloud_percentage`` (MAJA's rule)."""
        return self.cloud_percentage <= self.max_cloud_percentage

    @property
    def shadow_height(self) -> float:
        """Median chosen cloud height (m) over the objects that cast a shadow (NaN if none)."""
        ok = np.isfinite(self.heights)
        return float(np.median(self.heights[ok])) if ok.any() else float("nan")

    def to_bits(self) -> np.ndarray:
        """The masks as common mask bits (:class:`agriseries.core.masks.MaskBit`).

        Returns
        -------
        numpy.ndarray
            ``uint8``: CLOUD, CLOUD_SHADOW, SNOW, WATER, CIRRUS; NODATA alone where not valid.
        """
        bits = np.zeros(self.valid.shape, np.uint8)
        for arr, bit in ((self.cloud, MaskBit.CLOUD), (self.shadow, MaskBit.CLOUD_SHADOW),
                         (self.snow, MaskBit.SNOW), (self.water, MaskBit.WATER),
                         (self.cirrus, MaskBit.CIRRUS)):
            bits[arr] |= np.uint8(bit)
        bits[~self.valid] = np.uint8(MaskBit.NODATA)
        return bits


# ---------------------------------------------------------------------------------- tests

def multitemporal_threshold(lag_days, params: CloudParams = CloudParams()) -> np.ndarray:
    """Threshold on the HOT increase for a lag since the last clear date (docs/l2a.md, "Multi-temporal test").

    ``thr = min(max_var, min_var + (min_var / forgetting) * lag)``.

    Parameters
    ----------
    lag_days : array_like
        Days since the composite value was updated.
    params : CloudParams

    Returns
    -------
    numpy.ndarray
    """
    lag = np.abs(np.asarray(lag_days, dtype=np.float64))
    return np.minimum(params.max_var_blue,
                      params.min_var_blue * (1.0 + lag / params.forgetting_days))


def correlation(current: np.ndarray, reference: np.ndarray, half_window: int = 3,
                min_pixels: int = 25) -> np.ndarray:
    """Local Pearson correlation of two images in a moving square window.

    The window is ``(2 * half_window + 1)`` pixels wide; only pixels where both images are
    finite count. The moments come from :func:`scipy.ndimage.uniform_filter` (sums over the
    window), so the cost does not depend on the window size.

    Parameters
    ----------
    current, reference : numpy.ndarray
        2-D images of the same shape, NaN = no data.
    half_window : int
        Half-size of the window.
    min_pixels : int
        Windows with fewer common valid pixels give NaN.

    Returns
    -------
    numpy.ndarray
        ``float32`` correlation in [-1, 1]; NaN where undefined (too few pixels, or one image
        flat in the window).
    """
    if current.shape != reference.shape:
        raise ConfigurationError(f"correlation: shapes {current.shape} and {reference.shape} "
                                 "differ")
    size = 2 * int(half_window) + 1
    ok = np.isfinite(current) & np.isfinite(reference)
    x = np.where(ok, current, 0.0).astype(np.float64)
    y = np.where(ok, reference, 0.0).astype(np.float64)
    # centre on the global means so that the sums of squares lose no precision
    if ok.any():
        x = np.where(ok, x - x[ok].mean(), 0.0)
        y = np.where(ok, y - y[ok].mean(), 0.0)
    w = ok.astype(np.float64)

    def box(a):
        return ndimage.uniform_filter(a, size=size, mode="constant", cval=0.0)

    n = box(w)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = box(x) / n, box(y) / n
        vx = box(x * x) / n - mx * mx
        vy = box(y * y) / n - my * my
        cov = box(x * y) / n - mx * my
        count = n * size * size
        # a window must hold texture in both images: std above 1e-4 reflectance
        good = (count >= min_pixels - 0.5) & (vx > 1e-8) & (vy > 1e-8)
        r = np.where(good, cov / np.sqrt(np.where(good, vx * vy, 1.0)), np.nan)
    return np.clip(r, -1.0, 1.0).astype(np.float32)


def _ratio(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a - b) / (a + b)


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (x * x + y * y) <= radius * radius + 0.5


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0 or not mask.any():
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=_disk(radius))


def _water_test(green, nir, params: CloudParams) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ((_ratio(green, nir) > params.water_ndwi_threshold)
                & (nir < params.water_nir_threshold))


def _snow_test(green, red, swir16, params: CloudParams) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return ((_ratio(green, swir16) > params.ndsi_threshold) & (red > params.snow_red_threshold)
                & (swir16 < params.snow_swir_threshold))


def _glint(scene: CoarseScene, params: CloudParams) -> np.ndarray | bool:
    """Pixels inside the sun-glint cone (angle to the specular direction below the limit)."""
    ts, tv = np.radians(scene.sun_zenith), np.radians(scene.view_zenith)
    dphi = np.radians(np.asarray(scene.sun_azimuth) - np.asarray(scene.view_azimuth))
    # the specular direction has the sun zenith and the opposite azimuth to the sun:
    # cos(glint) = cos ts cos tv - sin ts sin tv cos(phi_s - phi_v) with the view azimuth
    # pointing to the satellite
    cosg = np.cos(ts) * np.cos(tv) - np.sin(ts) * np.sin(tv) * np.cos(dphi)
    return np.degrees(np.arccos(np.clip(cosg, -1, 1))) < params.sunglint_angle


def shadow_displacement(scene: CoarseScene) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Rows and columns by which a cloud's shadow moves per metre of cloud height.

    True ground position of a cloud seen at a pixel = that pixel moved by ``h tan(view
    zenith)`` towards the satellite (parallax); its shadow = the true position moved by
    ``h tan(sun zenith)`` away from the sun.
    """
    ts, tv = np.radians(scene.sun_zenith), np.radians(scene.view_zenith)
    ps, pv = np.radians(scene.sun_azimuth), np.radians(scene.view_azimuth)
    east = np.tan(tv) * np.sin(pv) - np.tan(ts) * np.sin(ps)
    north = np.tan(tv) * np.cos(pv) - np.tan(ts) * np.cos(ps)
    return -north / scene.pixel_size, east / scene.pixel_size


def project_shadow(ys, xs, dy, dx, heights, shape):
    """Target pixels of cloud pixels ``(ys, xs)`` for per-pixel heights; in-bounds flags."""
    ty = np.rint(ys + heights * dy).astype(np.int64)
    tx = np.rint(xs + heights * dx).astype(np.int64)
    inside = (ty >= 0) & (ty < shape[0]) & (tx >= 0) & (tx < shape[1])
    return ty, tx, inside


def _geometric_shadows(scene, cloud, valid, ratio, dark_thr, params):
    """Shadows of the cloud objects by projection over the height range (docs/l2a.md, "Masks")."""
    shape = cloud.shape
    structure = np.ones((3, 3), bool)
    objects, nobj = ndimage.label(cloud, structure=structure)
    heights = np.full(nobj, np.nan)
    shadow = np.zeros(shape, bool)
    if nobj == 0:
        return shadow, objects.astype(np.int32), heights
    ys, xs = np.nonzero(objects)
    lab = objects[ys, xs]
    dy, dx = shadow_displacement(scene)
    dy = dy[ys, xs] if np.ndim(dy) else np.full(ys.shape, dy)
    dx = dx[ys, xs] if np.ndim(dx) else np.full(ys.shape, dx)
    size = np.bincount(lab, minlength=nobj + 1).astype(np.float64)
    target_ok = valid & ~cloud & np.isfinite(ratio)
    hs = params.heights
    scores = np.full((len(hs), nobj + 1), np.inf)
    for k, h in enumerate(hs):
        ty, tx, inside = project_shadow(ys, xs, dy, dx, h, shape)
        proj = np.zeros(shape, np.int32)
        proj[ty[inside], tx[inside]] = lab[inside]
        sel = (proj > 0) & target_ok
        n = np.bincount(proj[sel], minlength=nobj + 1)
        s = np.bincount(proj[sel], weights=ratio[sel], minlength=nobj + 1)
        enough = (n > 0) & (n >= params.shadow_min_visible_fraction * size)
        with np.errstate(invalid="ignore", divide="ignore"):
            scores[k] = np.where(enough, s / np.maximum(n, 1), np.inf)
    best = np.argmin(scores, axis=0)
    best_score = scores[best, np.arange(nobj + 1)]
    has = np.isfinite(best_score) & (best_score < 1.0)
    has[0] = False
    heights = np.where(has[1:], hs[best[1:]], np.nan)
    keep = has[lab]
    if keep.any():
        h_pix = hs[best[lab[keep]]]
        ty, tx, inside = project_shadow(ys[keep], xs[keep], dy[keep], dx[keep], h_pix, shape)
        zone = np.zeros(shape, bool)
        zone[ty[inside], tx[inside]] = True
        # close the one-pixel holes that rounding leaves in a projected object
        zone = ndimage.binary_closing(zone, structure=structure) | zone
        with np.errstate(invalid="ignore"):
            shadow = zone & target_ok & (ratio < dark_thr)
    return shadow, objects.astype(np.int32), heights


def _check_state(state: TileState, scene: CoarseScene, params: CloudParams) -> None:
    where = f"coarse scene {scene.date.isoformat()}"
    if tuple(state.shape) != tuple(scene.shape):
        raise InputProductError(where, f"grid shape {scene.shape} differs from the tile state's "
                                       f"{tuple(state.shape)} (grid {state.grid!r})")
    missing = [b for b in params.state_bands if b not in state.composite]
    if missing:
        raise ConfigurationError(f"the tile state (grid {state.grid!r}) has no composite for "
                                 f"{missing} (CloudParams needs blue_band, green, red, nir, "
                                 f"swir16 and correl_band); it was made with other parameters "
                                 f"(composite bands {list(state.composite)})")
    for img in state.stack:
        if params.correl_band not in img.bands:
            raise ConfigurationError(f"the tile state's stack image of {img.date} has no "
                                     f"{params.correl_band!r} band (correl_band changed?)")


def detect(scene: CoarseScene, state: TileState | None,
           params: CloudParams = CloudParams()) -> MaskResult:
    """Cloud, cirrus, shadow, snow and water masks of one date (docs/l2a.md, "Masks").

    Parameters
    ----------
    scene : CoarseScene
        The date on the coarse grid.
    state : TileState or None
        The tile memory before this date; None (or a state with no clear pixel) runs the
        mono-temporal tests only ("init" mode). Not modified.
    params : CloudParams

    Returns
    -------
    MaskResult
    """
    b = scene.bands
    where = f"coarse scene {scene.date.isoformat()}"
    for name in (params.blue_band, params.correl_band):
        if name not in b:
            raise MissingBandError(where, f"no {name!r} band, needed by CloudParams "
                                          f"(blue_band / correl_band)")
    blue, green, red, nir, swir = b[params.blue_band], b["green"], b["red"], b["nir"], b["swir16"]
    valid = np.ones(scene.shape, bool)
    for name in dict.fromkeys((*REQUIRED_BANDS, params.blue_band)):
        valid &= np.isfinite(b[name])

    history = np.zeros(scene.shape, bool)
    comp = {}
    lag = None
    if state is not None:
        _check_state(state, scene, params)
        history = state.has_history & valid
        comp = state.composite
        lag = np.abs(day_number(scene.date) - state.comp_date.astype(np.int64))
    mode = "nominal" if history.any() else "init"

    with np.errstate(invalid="ignore", divide="ignore"):
        # 1. water (now, or on the composite), snow candidates
        water_now = valid & _water_test(green, nir, params)
        water_comp = np.zeros(scene.shape, bool)
        if mode == "nominal":
            water_comp = history & _water_test(comp["green"], comp["nir"], params)
        water_prior = water_now | water_comp
        snow_test = valid & _snow_test(green, red, swir, params) & ~water_prior

        # 2. mono-temporal clouds and cirrus
        glint = _glint(scene, params)
        water_thr = np.where(glint, params.water_sunglint_threshold, params.water_swir_threshold)
        mono = valid & np.where(water_prior, swir > water_thr, blue > params.blue_threshold)
        cirrus = np.zeros(scene.shape, bool)
        if "cirrus" in b:
            thr = params.cirrus_threshold
            if scene.altitude is not None and params.cirrus_gain_per_km:
                thr = thr + params.cirrus_gain_per_km * np.maximum(scene.altitude, 0) / 1000.0
            cirrus = valid & np.isfinite(b["cirrus"]) & (b["cirrus"] > thr)

        # 3. multi-temporal clouds
        multi = np.zeros(scene.shape, bool)
        extension = np.zeros(scene.shape, bool)
        if mode == "nominal":
            cb, cr, cn = comp[params.blue_band], comp["red"], comp["nir"]
            thr = multitemporal_threshold(lag, params)
            d_hot = (blue - red / 2) - (cb - cr / 2)
            ratios = ((_ratio(nir, cn) < params.k_nir_blue * _ratio(blue, cb))
                      & ((red - cr) < params.k_red_blue * (blue - cb)))
            testable = history & ~water_prior & ~snow_test
            ratios &= (blue - cb) > params.min_blue_increase
            multi = testable & ratios & (d_hot > thr)
            if params.use_extension:
                extension = testable & ratios & (d_hot > thr - params.delta_threshold)

        # 4. correlation test
        candidates = multi | extension | (mono if params.correlate_mono else False)
        if mode == "nominal" and params.correlation_test and candidates.any():
            cur = np.where(valid, b[params.correl_band], np.nan)
            refs = [np.where(history, comp[params.correl_band], np.nan)]
            refs += [img.bands[params.correl_band] for img in reversed(state.stack)]
            textured = np.zeros(scene.shape, bool)
            for ref in refs:
                todo = candidates & ~textured
                if not todo.any():
                    break
                r = correlation(cur, ref, params.correl_half_window, params.correl_min_pixels)
                textured |= todo & (r > params.correl_threshold)
            multi &= ~textured
            extension &= ~textured
            if params.correlate_mono:
                mono &= ~textured
        if params.use_extension and multi.any():
            multi = ndimage.binary_propagation(multi, structure=np.ones((3, 3), bool),
                                               mask=multi | extension)

        # 5. snow
        snow = snow_test.copy()
        mono &= ~snow
        multi &= ~snow
        cloud_raw = mono | multi
        if params.snow_dilation:
            snow = _dilate(snow, params.snow_dilation) & valid & ~cloud_raw & ~water_prior

        # 6. shadows
        if mode == "nominal":
            ref_nir = np.where(history, comp["nir"], np.nan)
            dark_thr = np.where(history, params.shadow_darkening, params.shadow_init_darkening)
        else:
            ref_nir = np.full(scene.shape, np.nan)
            dark_thr = np.full(scene.shape, params.shadow_init_darkening)
        land_clear = valid & ~cloud_raw & ~cirrus & ~water_prior & ~snow
        if land_clear.any():
            ref_nir = np.where(np.isfinite(ref_nir), ref_nir, np.median(nir[land_clear]))
        ratio = nir / ref_nir
        ratio = np.where(water_prior | snow, np.nan, ratio)
        shadow_geo, objects, heights = _geometric_shadows(scene, cloud_raw, valid, ratio,
                                                          dark_thr, params)
        shadow_out = np.zeros(scene.shape, bool)
        if mode == "nominal" and params.outside_shadow:
            dark = history & valid & ~cloud_raw & ~cirrus & ~water_prior & ~snow
            dark &= lag <= params.outside_shadow_max_lag
            for name in ("green", "red", "nir", "swir16"):
                dark &= b[name] < params.outside_shadow_darkening * comp[name]
            shadow_out = dark

        # 7. dilation
        cloud = _dilate(cloud_raw, params.cloud_dilation) & valid
        shadow = _dilate(shadow_geo | shadow_out, params.shadow_dilation) & valid & ~cloud
        water = valid & (water_now | (water_comp & cloud))

    return MaskResult(valid=valid, cloud=cloud, cloud_mono=mono, cloud_multi=multi,
                      cirrus=cirrus, shadow=shadow, shadow_geometric=shadow_geo,
                      shadow_outside=shadow_out, snow=snow & ~cloud, water=water,
                      objects=objects, heights=heights, mode=mode,
                      max_cloud_percentage=params.max_cloud_percentage)


def update_state(state: TileState | None, scene: CoarseScene, result: MaskResult,
                 params: CloudParams = CloudParams(), grid: str = "") -> TileState:
    """The tile state after ``scene`` (composite update rule, docs/l2a.md "Tile state").

    Valid pixels that are not cloud, cirrus or shadow (nor snow / water unless
    ``params.composite_snow`` / ``composite_water``) take the current reflectance and date;
    the image (NaN where not clear) enters the stack when at least
    ``params.stack_min_clear_fraction`` of the grid is clear, the oldest image leaving beyond
    ``params.stack_size``; the date is appended to the processed dates.

    Parameters
    ----------
    state : TileState or None
        The state before the date (not modified); None starts an empty one.
    scene : CoarseScene
    result : MaskResult
        :func:`detect`'s result for ``scene``.
    params : CloudParams
    grid : str
        Grid identity for a new state (ignored when ``state`` is given).

    Returns
    -------
    TileState
        A new state.
    """
    if state is None:
        state = TileState.empty(scene.shape, grid, params.state_bands)
    _check_state(state, scene, params)
    if result.valid.shape != tuple(state.shape):
        raise ConfigurationError(f"update_state: the mask shape {result.valid.shape} differs "
                                 f"from the state's {tuple(state.shape)}")
    new = state.copy()
    clear = result.valid & ~result.cloud & ~result.cirrus & ~result.shadow
    if not params.composite_snow:
        clear &= ~result.snow
    if not params.composite_water:
        clear &= ~result.water
    for name in new.composite:
        if name not in scene.bands:
            raise MissingBandError(f"coarse scene {scene.date.isoformat()}",
                                   f"no {name!r} band, kept in the tile state's composite")
        clear &= np.isfinite(scene.bands[name])
    for name, arr in new.composite.items():
        arr[clear] = scene.bands[name][clear]
    new.comp_date[clear] = day_number(scene.date)
    if clear.mean() >= params.stack_min_clear_fraction and clear.any():
        img = StackImage(scene.date, {params.correl_band: np.where(
            clear, scene.bands[params.correl_band], np.nan).astype(np.float32)})
        new.stack = (new.stack + [img])[-params.stack_size:]
    new.dates.append(scene.date)
    return new
