"""The band catalogue: names, central wavelengths and resolutions of S2A/S2B/S2C, L8 and L9.

Sentinel-2 bands keep ESA's names (``B01`` ... ``B12``, ``B8A``); Landsat bands keep
USGS's numbers (``B1`` ... ``B11``). :data:`LANDSAT_TO_S2` maps a Landsat OLI band to
the Sentinel-2 band(s) it stands in for (docs/l3a.md "Landsat bands"; Sen2Agri's
``bands_mapping_s2_L8.txt``: B2->B02, B3->B03, B4->B04, B5->B08 and B8A, B6->B11,
B7->B12; the red-edge bands B05-B07 have no Landsat equivalent). The coastal and
cirrus bands (B1->B01, B9->B10) are added for the cloud tests, which need them.

Central wavelengths (nm) are the values ESA publishes in the ``Spectral_Information``
block of the product metadata (S2A: MTD_MSIL2A of baseline 04.00; S2B: baseline
02.12); readers take the product's own value when it has one. Sentinel-2C's
spectral response is close to S2A's; until a S2C metadata file is bundled the
catalogue uses the S2A values for S2C (said again in the README). Landsat values
are USGS's nominal band centres.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class Band:
    """One spectral band of one sensor.

    Attributes
    ----------
    name
        The band name in the product (``B04``, ``B8A``, ``B5``).
    common_name
        The STAC ``eo:common_name`` (``red``, ``nir08``, ...), from the list of the eo
        extension v1.1.0 that the items declare: the three Sentinel-2 red-edge bands
        B05-B07 are all ``rededge`` there (``rededge071`` ... are eo v2.0.0 names).
    center_wavelength
        Central wavelength in micrometres.
    resolution
        Native ground sampling distance in metres.
    """

    name: str
    common_name: str
    center_wavelength: float
    resolution: int

    @property
    def is_reflective(self) -> bool:
        """True for bands measured as reflectance (everything below 3 micrometres)."""
        return self.center_wavelength < 3.0


def _s2(centres: dict[str, float]) -> dict[str, Band]:
    spec = {
        "B01": ("coastal", 60), "B02": ("blue", 10), "B03": ("green", 10), "B04": ("red", 10),
        "B05": ("rededge", 20), "B06": ("rededge", 20), "B07": ("rededge", 20),
        "B08": ("nir", 10), "B8A": ("nir08", 20), "B09": ("nir09", 60), "B10": ("cirrus", 60),
        "B11": ("swir16", 20), "B12": ("swir22", 20),
    }
    return {n: Band(n, cn, round(centres[n] / 1000.0, 5), res) for n, (cn, res) in spec.items()}


_S2A_NM = {"B01": 442.7, "B02": 492.7, "B03": 559.8, "B04": 664.6, "B05": 704.1, "B06": 740.5,
           "B07": 782.8, "B08": 832.8, "B8A": 864.7, "B09": 945.1, "B10": 1373.5, "B11": 1613.7,
           "B12": 2202.4}
_S2B_NM = {"B01": 442.2, "B02": 492.1, "B03": 559.0, "B04": 664.9, "B05": 703.8, "B06": 739.1,
           "B07": 779.7, "B08": 832.9, "B8A": 864.0, "B09": 943.2, "B10": 1376.9, "B11": 1610.4,
           "B12": 2185.7}


def _oli(tirs_res: int = 100) -> dict[str, Band]:
    spec = [("B1", "coastal", 0.443, 30), ("B2", "blue", 0.482, 30), ("B3", "green", 0.5613, 30),
            ("B4", "red", 0.6546, 30), ("B5", "nir08", 0.8646, 30), ("B6", "swir16", 1.609, 30),
            ("B7", "swir22", 2.201, 30), ("B8", "pan", 0.5917, 15), ("B9", "cirrus", 1.3734, 30),
            ("B10", "lwir11", 10.895, tirs_res), ("B11", "lwir12", 12.005, tirs_res)]
    return {n: Band(n, cn, wl, res) for n, cn, wl, res in spec}


#: Every sensor agriseries reads, by its short name (the ``sensor`` coordinate).
SENSORS: dict[str, dict[str, Band]] = {
    "S2A": _s2(_S2A_NM),
    "S2B": _s2(_S2B_NM),
    "S2C": _s2(_S2A_NM),
    "L8": _oli(),
    "L9": _oli(),
}

#: Platform names as they appear in product metadata -> sensor short name.
PLATFORM_ALIASES: dict[str, str] = {
    "sentinel-2a": "S2A", "sentinel2a": "S2A", "s2a": "S2A",
    "sentinel-2b": "S2B", "sentinel2b": "S2B", "s2b": "S2B",
    "sentinel-2c": "S2C", "sentinel2c": "S2C", "s2c": "S2C",
    "landsat_8": "L8", "landsat-8": "L8", "landsat8": "L8", "lc08": "L8", "l8": "L8",
    "landsat_9": "L9", "landsat-9": "L9", "landsat9": "L9", "lc09": "L9", "l9": "L9",
}

#: Landsat OLI band -> the Sentinel-2 band(s) it stands in for.
LANDSAT_TO_S2: dict[str, tuple[str, ...]] = {
    "B1": ("B01",), "B2": ("B02",), "B3": ("B03",), "B4": ("B04",),
    "B5": ("B08", "B8A"), "B6": ("B11",), "B7": ("B12",), "B9": ("B10",),
}

#: Sentinel-2 band -> the Landsat OLI band that stands in for it (None: no equivalent).
S2_TO_LANDSAT: dict[str, str | None] = {
    "B01": "B1", "B02": "B2", "B03": "B3", "B04": "B4", "B05": None, "B06": None, "B07": None,
    "B08": "B5", "B8A": "B5", "B09": None, "B10": "B9", "B11": "B6", "B12": "B7",
}


def sensor_name(platform: str) -> str:
    """Return the sensor short name (``S2A``, ``L8`` ...) for a platform name found in metadata.

    Raises
    ------
    ConfigurationError
        If the platform is not one agriseries knows.
    """
    key = platform.strip().lower().replace(" ", "")
    if key.upper() in SENSORS:
        return key.upper()
    try:
        return PLATFORM_ALIASES[key]
    except KeyError:
        raise ConfigurationError(
            f"unknown platform {platform!r}: expected one of Sentinel-2A/B/C, Landsat 8/9"
        ) from None


def bands_of(sensor: str) -> dict[str, Band]:
    """The band table of a sensor (``S2A``, ``S2B``, ``S2C``, ``L8``, ``L9``)."""
    try:
        return SENSORS[sensor]
    except KeyError:
        raise ConfigurationError(
            f"unknown sensor {sensor!r}: expected one of {', '.join(SENSORS)}"
        ) from None


def is_sentinel2(sensor: str) -> bool:
    """True for S2A, S2B and S2C."""
    return sensor.startswith("S2")


def s2_equivalent(sensor: str, band: str) -> tuple[str, ...]:
    """The Sentinel-2 band names a band of ``sensor`` stands for (itself for Sentinel-2)."""
    bands_of(sensor)
    if is_sentinel2(sensor):
        return (band,)
    return LANDSAT_TO_S2.get(band, ())


def landsat_as_s2(ds):
    """Rename the Landsat reflectance variables of a dataset to their Sentinel-2 equivalents.

    ``B5`` becomes both ``B08`` and ``B8A``; bands without an equivalent (pan,
    thermal) are dropped; non-band variables (``mask``, angles, ``aot``) are kept.
    A Sentinel-2 dataset is returned unchanged.
    """
    sensors = set(ds["sensor"].values.tolist()) if "sensor" in ds.coords else set()
    if sensors and all(is_sentinel2(s) for s in sensors):
        return ds
    out = {}
    for name, var in ds.data_vars.items():
        if name in LANDSAT_TO_S2:
            for s2 in LANDSAT_TO_S2[name]:
                out[s2] = var.assign_attrs(source_band=name)
        elif name not in SENSORS["L8"]:
            out[name] = var
    return ds.drop_vars(list(ds.data_vars)).assign(out)
