"""The parameters of the L3B processor, with their defaults.

A module of its own, light (no numba, dask or store import), so that the site model, the
production's job parameters and the command line take their defaults from here: a default is
written once. :mod:`agriseries.biophysical.processor` and :mod:`~agriseries.biophysical.networks`
re-export what they used to define.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigurationError
from ..core.masks import MaskBit

__all__ = ["EXCLUDED_BITS", "VARIABLES", "BiophysicalParams"]


#: The variables of the S2 Toolbox, in SNAP's order: leaf area index, fraction of absorbed
#: PAR, fraction of vegetation cover, canopy chlorophyll (LAI x Cab, ug/cm2) and canopy
#: water (LAI x Cw, g/cm2) contents.
VARIABLES: tuple[str, ...] = ("LAI", "FAPAR", "FCOVER", "LAI_Cab", "LAI_Cw")


#: L2A mask bits that exclude a pixel from the biophysical estimation.
EXCLUDED_BITS = int(MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.CIRRUS | MaskBit.SNOW
                    | MaskBit.WATER | MaskBit.SATURATED | MaskBit.NODATA)


@dataclass(frozen=True)
class BiophysicalParams:
    """Parameters of the L3B processor.

    Attributes
    ----------
    variables
        Variables to estimate (``LAI``, ``FAPAR``, ``FCOVER``, ``LAI_Cab``, ``LAI_Cw``); the
        10 m networks have only the first three, which are then kept.
    resolution
        Sentinel-2 pixel size: 20 (eight-band networks, the reference) or 10 (three-band
        networks). Landsat products are processed on their own 30 m grid.
    networks_root
        A folder of network versions to use instead of the shipped ones.
    excluded_bits
        L2A mask bits that set a pixel to NaN.
    chunks
        Chunk edge in pixels.
    """

    variables: tuple[str, ...] = VARIABLES
    resolution: int = 20
    networks_root: str | None = None
    excluded_bits: int = EXCLUDED_BITS
    chunks: int = 2048

    def __post_init__(self) -> None:
        unknown = [v for v in self.variables if v not in VARIABLES]
        if unknown:
            raise ConfigurationError(f"unknown biophysical variable(s) {unknown}: expected some of "
                                     f"{', '.join(VARIABLES)}")
        if self.resolution not in (10, 20):
            raise ConfigurationError(f"resolution {self.resolution}: expected 10 or 20 (m)")
