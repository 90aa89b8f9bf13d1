"""The parameters of the L2A processor and of its cloud, shadow, snow and water tests, with
the method's defaults (docs/l2a.md).

A module of its own, light (no numba, dask or store import), so that the site model, the
production's job parameters and the command line take their defaults from here: a default is
written once. :mod:`agriseries.l2a.cloudmask` and :mod:`~agriseries.l2a.processor`
re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.errors import ConfigurationError

__all__ = ["CloudParams", "L2AParams"]


@dataclass(frozen=True)
class CloudParams:
    """Every threshold of the cloud / shadow / snow / water detection (docs/l2a.md, "Thresholds").

    The MAJA GIPP tag (``GIP_L2COMM``) each field stands for is given in brackets; "[MAJA]"
    values are those of O. Hagolle's notes on the MAJA parameters (MAJA_Parameters README,
    recent version), "[simplified]" those of the simplified method of docs/l2a.md, "[assumed]" values were not found in
    MAJA's documentation and were set here (checked on the WorldCereal / Slovenia series of
    the tests). Lengths in coarse pixels refer to the grid the scenes are given on.

    Attributes
    ----------
    blue_band : str
        Band of the blue tests and of HOT [Blue_Band_Code]. MAJA uses B1 (``"coastal"``) for
        Sentinel-2; ``"blue"`` (B2) is the default here because every sensor has it [MAJA].
    blue_threshold : float
        Mono-temporal cloud threshold on the blue reflectance over land, 0.24
        [Cloud_Blue_Reflectance_Threshold, MAJA; 0.22 in the older note].
    water_swir_threshold : float
        Cloud threshold on SWIR1 over water, 0.04 [Water_Reflectance_Threshold, MAJA].
    water_sunglint_threshold : float
        The same inside the sun-glint cone, 0.16 [Water_Sunglint_Reflectance_Threshold, MAJA].
    sunglint_angle : float
        Half-angle (degrees) of the sun-glint cone (angle between the view direction and the
        specular direction), 30 [assumed].
    water_ndwi_threshold, water_nir_threshold : float
        Water test: ``(green - nir) / (green + nir) > 0.1`` and ``nir < 0.12`` on the current
        date or on the composite [assumed; the simplified method leaves the water mask to an NDWI test].
    min_var_blue, max_var_blue : float
        Multi-temporal threshold on the HOT increase at lag 0 and its ceiling, 0.016 and 0.06
        [Min_Threshold_Var_Blue, Max_Threshold_Var_Blue, MAJA; 0.018 advised at 120 m].
    forgetting_days : float
        Lag (days) over which the threshold doubles, 45 [Cloud_Forgetting_Duration, MAJA].
    k_red_blue, k_nir_blue : float
        ``dRed < k_red_blue * dBlue`` and ``rNIR < k_nir_blue * rBlue``, 1.5 each
        [K_Red_Blue, K_NIR_Blue; 1.5 from Hagolle 2010, simplified].
    delta_threshold : float
        The extension mask uses ``thr - 0.01`` [Delta_Threshold, simplified, assumed].
    use_extension : bool
        Add the extension pixels connected to multi-temporal clouds (True).
    min_blue_increase : float
        A multi-temporal cloud must also be brighter in blue than the composite by more than
        this (0) [not in MAJA, added here: in cloud shadows the red and NIR fall more than the
        blue (the diffuse sky light is blue), which raises HOT although nothing got brighter].
    correl_band : str
        Band of the correlation test and of the stack [Correl_Band_Code], ``"red"`` [assumed:
        the visible band with the strongest field texture; on the WorldCereal series it gives
        a cloud F1 of 0.882 against Sen2Cor's SCL where ``"blue"`` gives 0.871].
    correlation_test : bool
        Run the correlation test (True); False only for diagnostics.
    correl_threshold : float
        Correlation above which a candidate is un-flagged, 0.80 [Correl_Threshold 80 %, MAJA].
    correl_half_window : int
        Half-size ``n`` of the ``(2 n + 1)^2`` correlation window, 3 (7 x 7) [N_Correl, MAJA].
    correl_min_pixels : int
        Minimum number of valid pixels in the window, 25 [Min_Pixel_Correl, simplified].
    correlate_mono : bool
        Apply the correlation test to mono-temporal clouds too (True, as MAJA does);
        multi-temporal candidates always are.
    ndsi_threshold, snow_red_threshold, snow_swir_threshold : float
        Snow: ``NDSI > 0.4``, ``red > 0.12``, ``swir16 < 0.16`` [NDSI_Threshold,
        Red_Reflectance_Threshold, SWIR1_Reflectance_Threshold, MAJA].
    snow_dilation : int
        Dilation of the snow mask (coarse pixels), 0 [SE_Snow_Radius, assumed].
    cirrus_threshold : float
        Cirrus: TOA reflectance of S2 B10 / L8 B9 above 0.012 [simplified: plain threshold].
    cirrus_gain_per_km : float
        Added to ``cirrus_threshold`` per km of altitude (the scene's ``altitude``), 0 [simplified;
        the older MAJA note used 0.015 + 0.00002 x altitude in m, i.e. 0.02 per km].
    shadow_height_min, shadow_height_max, shadow_height_step : float
        Cloud heights (m above the ground) tried for the shadow projection, 500 .. 10000 by
        250 [Delta_H_Min, Delta_H_Max, Delta_H_Step; simplified values]. At 240 m a 250 m height
        step moves the shadow by 0.6 to 2 px for sun zeniths 30 to 65 degrees.
    shadow_darkening : float
        Shadow where ``nir / nir_comp < 0.8`` inside the projected zone
        [Proj_Shad_Darkening_Max, simplified, assumed].
    shadow_init_darkening : float
        The same without composite, against the scene's median clear-land NIR, 0.5 [assumed].
    shadow_min_visible_fraction : float
        An object casts a shadow only at heights where at least this fraction of its
        projected pixels falls on valid, non-cloud pixels, 0.25 [assumed].
    outside_shadow : bool
        Detect shadows of clouds outside the image (MAJA CLM bit 6), True.
    outside_shadow_darkening : float
        ... where green, red, NIR and SWIR1 are all below 0.5 x their composite value
        [Shad_Var_Darkening_Max, assumed].
    outside_shadow_max_lag : float
        ... and the composite is at most 45 days old (a permanent darkening, e.g. a flood, is
        then accepted as the new surface after this lag) [assumed].
    cloud_dilation, shadow_dilation : int
        Dilation radii (coarse pixels) of the final cloud and shadow masks, 1 each
        [SE_Cloud_Radius; 1 coarse pixel in the simplified method].
    stack_size : int
        Number of images in the stack, 3 [Number_Of_Stack_Images, simplified].
    stack_min_clear_fraction : float
        An image enters the stack if at least 10 % of the grid is valid and clear [assumed].
    max_cloud_percentage : float
        A date whose cloud (+ cirrus) cover exceeds 90 % of its valid pixels is declared
        unusable by :attr:`MaskResult.usable` [Max_Cloud_Percentage, MAJA].
    composite_snow, composite_water : bool
        Whether snow / water pixels update the composite like clear land (True, as MAJA).
    """

    blue_band: str = "blue"
    blue_threshold: float = 0.24
    water_swir_threshold: float = 0.04
    water_sunglint_threshold: float = 0.16
    sunglint_angle: float = 30.0
    water_ndwi_threshold: float = 0.1
    water_nir_threshold: float = 0.12
    min_var_blue: float = 0.016
    max_var_blue: float = 0.06
    forgetting_days: float = 45.0
    k_red_blue: float = 1.5
    k_nir_blue: float = 1.5
    delta_threshold: float = 0.01
    use_extension: bool = True
    min_blue_increase: float = 0.0
    correl_band: str = "red"
    correlation_test: bool = True
    correl_threshold: float = 0.80
    correl_half_window: int = 3
    correl_min_pixels: int = 25
    correlate_mono: bool = True
    ndsi_threshold: float = 0.4
    snow_red_threshold: float = 0.12
    snow_swir_threshold: float = 0.16
    snow_dilation: int = 0
    cirrus_threshold: float = 0.012
    cirrus_gain_per_km: float = 0.0
    shadow_height_min: float = 500.0
    shadow_height_max: float = 10000.0
    shadow_height_step: float = 250.0
    shadow_darkening: float = 0.8
    shadow_init_darkening: float = 0.5
    shadow_min_visible_fraction: float = 0.25
    outside_shadow: bool = True
    outside_shadow_darkening: float = 0.5
    outside_shadow_max_lag: float = 45.0
    cloud_dilation: int = 1
    shadow_dilation: int = 1
    stack_size: int = 3
    stack_min_clear_fraction: float = 0.1
    max_cloud_percentage: float = 90.0
    composite_snow: bool = True
    composite_water: bool = True

    def __post_init__(self) -> None:
        def bad(name, why):
            raise ConfigurationError(f"CloudParams.{name}={getattr(self, name)!r}: {why}")

        bands = ("blue", "coastal", "green", "red", "nir", "swir16", "swir22")
        if self.blue_band not in ("blue", "coastal"):
            bad("blue_band", "expected 'blue' or 'coastal'")
        if self.correl_band not in bands:
            bad("correl_band", f"expected one of {bands}")
        for name in ("blue_threshold", "water_swir_threshold", "water_sunglint_threshold",
                     "water_nir_threshold", "min_var_blue", "max_var_blue", "forgetting_days",
                     "k_red_blue", "k_nir_blue", "snow_red_threshold", "snow_swir_threshold",
                     "cirrus_threshold", "shadow_height_step", "shadow_darkening",
                     "shadow_init_darkening", "outside_shadow_darkening"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                bad(name, "expected a positive number")
        for name in ("delta_threshold", "min_blue_increase", "cirrus_gain_per_km",
                     "outside_shadow_max_lag",
                     "shadow_min_visible_fraction", "stack_min_clear_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                bad(name, "expected a number >= 0")
        for name in ("correl_half_window", "correl_min_pixels", "stack_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                bad(name, "expected an integer >= 1")
        for name in ("snow_dilation", "cloud_dilation", "shadow_dilation"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                bad(name, "expected an integer >= 0 (coarse pixels)")
        if self.min_var_blue > self.max_var_blue:
            bad("min_var_blue", f"must not exceed max_var_blue={self.max_var_blue}")
        if not -1 < self.water_ndwi_threshold < 1:
            bad("water_ndwi_threshold", "expected a value in (-1, 1)")
        if not -1 < self.ndsi_threshold < 1:
            bad("ndsi_threshold", "expected a value in (-1, 1)")
        if not 0 < self.correl_threshold < 1:
            bad("correl_threshold", "expected a correlation in (0, 1) (80 % is 0.80)")
        if self.correl_min_pixels > (2 * self.correl_half_window + 1) ** 2:
            bad("correl_min_pixels",
                f"more than the {(2 * self.correl_half_window + 1) ** 2} pixels of the window")
        if not 0 <= self.sunglint_angle < 90:
            bad("sunglint_angle", "expected degrees in [0, 90)")
        if self.shadow_height_min <= 0 or self.shadow_height_max < self.shadow_height_min:
            bad("shadow_height_min", f"expected 0 < min <= max={self.shadow_height_max}")
        if self.shadow_darkening >= 1 or self.shadow_init_darkening >= 1 \
                or self.outside_shadow_darkening >= 1:
            bad("shadow_darkening", "darkening ratios must be below 1")
        if self.shadow_min_visible_fraction > 1 or self.stack_min_clear_fraction > 1:
            bad("shadow_min_visible_fraction", "fractions must be at most 1")
        if not 0 < self.max_cloud_percentage <= 100:
            bad("max_cloud_percentage", "expected a percentage in (0, 100]")

    @property
    def state_bands(self) -> tuple[str, ...]:
        """Bands kept in the composite of the tile state."""
        wanted = [self.blue_band, "green", "red", "nir", "swir16", self.correl_band]
        return tuple(dict.fromkeys(wanted))

    @property
    def heights(self) -> np.ndarray:
        """The cloud heights (m) tried for the shadow projection."""
        n = int(np.floor((self.shadow_height_max - self.shadow_height_min)
                         / self.shadow_height_step + 1e-9)) + 1
        return self.shadow_height_min + self.shadow_height_step * np.arange(n)


@dataclass(frozen=True)
class L2AParams:
    """Settings of the L2A processor.

    Attributes
    ----------
    resolution
        Coarse grid of the cloud tests and of the state, metres (MAJA: 240, or 120).
    mask_resolution
        Pixel size of the output mask; default 20 m for Sentinel-2 (Sen2Cor's SCL) and
        30 m for Landsat.
    cloud
        The cloud / shadow / snow / water test settings (:class:`CloudParams`).
    aot550, ozone, water_vapour, pressure_msl
        Atmosphere for SMAC: ``None`` takes the product's auxiliary value (ECMWF /
        CAMS files of a SAFE granule), else the default: AOT at 550 nm 0.1 (a rural
        background aerosol load), ozone 0.3 cm-atm (300 Dobson units), water vapour
        1.42 g/cm2 (US standard atmosphere 1976), sea-level pressure 1013.25 hPa.
        A number given here overrides the product's value.
    altitude
        Ground altitude in metres when there is no DEM (default 0).
    dem
        A DEM raster (any CRS; metres), averaged onto the coarse grid; it gives the
        surface pressure per coarse pixel and the altitude to the cloud tests.
    backward_dates
        Number of dates in the state from which the products made without history are
        made again (MAJA's backward initialisation); 0 turns it off.
    state_copy
        Put a copy of the tile state in every product (the products then carry what
        is needed to resume; about 5 bytes x 20 per coarse pixel, compressed).
    """

    resolution: float = 240.0
    mask_resolution: int | None = None
    cloud: CloudParams = field(default_factory=CloudParams)
    aot550: float | None = None
    ozone: float | None = None
    water_vapour: float | None = None
    pressure_msl: float | None = None
    altitude: float = 0.0
    dem: str | None = None
    backward_dates: int = 3
    state_copy: bool = True

    def __post_init__(self) -> None:
        if not (10 <= self.resolution <= 1000):
            raise ConfigurationError(f"resolution={self.resolution!r} m: expected 10-1000 m "
                                     "(MAJA uses 240 or 120)")
        if self.mask_resolution is not None and self.mask_resolution not in (10, 20, 30, 60):
            raise ConfigurationError(f"mask_resolution={self.mask_resolution!r}: expected 10, 20, "
                                     "30 or 60 m")
        for name, lo, hi in (("aot550", 0.0, 3.0), ("ozone", 0.0, 1.0),
                             ("water_vapour", 0.0, 10.0), ("pressure_msl", 800.0, 1100.0)):
            v = getattr(self, name)
            if v is not None and not lo <= v <= hi:
                raise ConfigurationError(f"{name}={v!r}: expected {lo}-{hi}")
        if not -500 <= self.altitude <= 9000:
            raise ConfigurationError(f"altitude={self.altitude!r} m: expected -500-9000")
        if self.backward_dates < 0:
            raise ConfigurationError(f"backward_dates={self.backward_dates!r}: expected >= 0")
