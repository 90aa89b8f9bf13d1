"""The parameters of the L3A synthesis (WASP), with the method's defaults.

A module of its own, light (no numba, dask or store import), so that the site model, the
production's job parameters and the command line take their defaults from here: a default is
written once. :mod:`agriseries.composite.wasp` re-exports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ..core.errors import ConfigurationError
from ..core.masks import MaskBit

__all__ = ["WASP_BRDF_COEFFICIENTS", "WaspParams"]


#: WASP's directional model coefficients (V0, V1, R0, R1) per band
#: (CompositePreprocessing/scattering_coeffs_{10m,20m}.txt; docs/l3a.md "Directional correction").
WASP_BRDF_COEFFICIENTS: dict[str, tuple[float, float, float, float]] = {
    "B02": (0.481, 0.0, 0.102, 0.0), "B03": (0.440, 0.0, 0.136, 0.0),
    "B04": (0.340, 0.0, 0.134, 0.0), "B08": (0.496, 0.0, 0.107, 0.0),
    "B05": (0.340, 0.0, 0.134, 0.0), "B06": (0.418, 0.0, 0.121, 0.0),
    "B07": (0.496, 0.0, 0.107, 0.0), "B8A": (0.496, 0.0, 0.107, 0.0),
    "B11": (0.336, 0.0, 0.132, 0.0), "B12": (0.240, 0.0, 0.145, 0.0),
}


@dataclass(frozen=True)
class WaspParams:
    """Parameters of the L3A synthesis, with WASP's defaults (docs/l3a.md).

    Attributes
    ----------
    half_period
        Half synthesis period ``H`` in days: dates within ``centre +- H`` are used (23).
    sensor_weights
        ``W_sensor`` per sensor (``S2A``) or family (``S2``, ``L8``); unknown sensors
        get 0.33 like WASP.
    coarse_resolution
        Pixel size (m) of the grid of the cloud-distance weight (240).
    sigma_small, sigma_large
        Gaussian sigmas in coarse pixels (2 and 10).
    kernel_width
        Largest Gaussian kernel, in coarse pixels (801).
    coarse_threshold
        Cloud share above which a coarse cell is cloudy (0.5).
    aot_weight_min, aot_weight_max, aot_max
        The AOT weight bounds and the AOT at which the weight reaches its minimum
        (0.33, 1.0, 0.8).
    date_weight_min
        Date weight at ``H`` days from the centre (0.5).
    legacy_date_weight
        Reproduce WASP's integer division (weight 1 below ``H`` days, 0.5 from ``H``).
    directional_correction
        Normalise each date to nadir view before averaging.
    brdf_coefficients
        ``(V0, V1, R0, R1)`` per band.
    cloud_bits
        Mask bits that make an observation cloudy (cloud, cloud shadow, cirrus).
    invalid_bits
        Mask bits that make an observation unusable (no data, saturated).
    chunks
        Block edge in pixels at 10 m (20 m blocks cover the same ground).
    """

    half_period: int = 23
    sensor_weights: Mapping[str, float] = field(
        default_factory=lambda: {"S2": 1.0, "L8": 0.33, "L9": 0.33})
    coarse_resolution: float = 240.0
    sigma_small: float = 2.0
    sigma_large: float = 10.0
    kernel_width: int = 801
    coarse_threshold: float = 0.5
    aot_weight_min: float = 0.33
    aot_weight_max: float = 1.0
    aot_max: float = 0.8
    date_weight_min: float = 0.5
    legacy_date_weight: bool = False
    directional_correction: bool = True
    brdf_coefficients: Mapping[str, tuple[float, float, float, float]] = field(
        default_factory=lambda: dict(WASP_BRDF_COEFFICIENTS))
    cloud_bits: int = int(MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.CIRRUS)
    invalid_bits: int = int(MaskBit.NODATA | MaskBit.SATURATED)
    chunks: int = 1024

    def __post_init__(self) -> None:
        checks = [
            (self.half_period >= 1, f"half_period {self.half_period}: expected >= 1 day"),
            (self.coarse_resolution > 0, "coarse_resolution must be > 0"),
            (self.sigma_small > 0 and self.sigma_large > 0, "Gaussian sigmas must be > 0"),
            (0 <= self.aot_weight_min <= self.aot_weight_max,
             "expected 0 <= aot_weight_min <= aot_weight_max"),
            (self.aot_max > 0, "aot_max must be > 0"),
            (0 <= self.date_weight_min <= 1, "date_weight_min must be in [0, 1]"),
            (all(w >= 0 for w in self.sensor_weights.values()), "sensor weights must be >= 0"),
            (self.chunks >= 64, f"chunks {self.chunks}: expected >= 64 pixels"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigurationError(f"WASP parameters: {message}")
        bad = [b for b, c in self.brdf_coefficients.items() if len(tuple(c)) != 4]
        if bad:
            raise ConfigurationError(f"WASP parameters: BRDF coefficients of {bad} must be "
                                     "(V0, V1, R0, R1)")

    def sensor_weight(self, sensor: str) -> float:
        """``W_sensor`` of a sensor (``S2A`` finds ``S2A``, then ``S2``; unknown: 0.33)."""
        for key in (sensor, sensor[:2]):
            if key in self.sensor_weights:
                return float(self.sensor_weights[key])
        return 0.33

    def to_dict(self) -> dict:
        """The parameters as a JSON-safe mapping (recorded in the product's item)."""
        out = asdict(self)
        out["sensor_weights"] = dict(self.sensor_weights)
        out["brdf_coefficients"] = {k: list(v) for k, v in self.brdf_coefficients.items()}
        return out
