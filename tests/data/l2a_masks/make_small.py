"""Make the cloud-mask test data from $AGRISERIES_RAW_DATA (run once, by hand).

Two real series, stored as compressed ``.npz`` files (reflectance as ``uint16`` DN, reflectance
= DN / 10000, 0 = no data):

``worldcereal_20m.npz``
    WorldCereal patch 00002806639B424A (Flanders, tile 31UDS, 640 m x 640 m), all 118
    Sentinel-2 L2A dates 2017-08-04 .. 2018-11-27 on the 20 m grid (32 x 32 px). The 20 m
    bands B11 (swir16) and B12 (swir22), the Sen2Cor ``SCL`` and the per-date sun and mean
    view angles are copied unchanged; the 10 m bands B02, B03, B04, B08 (blue, green, red,
    nir) are averaged over 2 x 2 blocks to the 20 m grid (rounded to the nearest DN).

``slovenia_toa.npz``
    eo-learn's Slovenian test patch (101 x 100 px at 10 m): the five 13-band L1C TOA
    ``REFERENCE_SCENES`` (their dates are not in the file), reduced to B01, B02, B03, B04,
    B08, B10, B11, B12 (coastal, blue, green, red, nir, cirrus, swir16, swir22), the DEM and
    the s2cloudless cloud mask ``CLM`` of the matching dates. Each scene is matched to its
    date by computing NDVI = (B08 - B04) / (B08 + B04) and finding the date of the 68-date
    ``data/NDVI.npy`` with the smallest mean absolute difference: every scene matches one
    date exactly (difference 0.0, the next best date is at least 0.02 away). The sun angles
    are not in the eo-learn patch; they are computed here from the acquisition time and the
    patch centre (NOAA solar position equations, accurate to ~0.1 degree), and stored.

Usage::

    python tests/data/l2a_masks/make_small.py
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from pathlib import Path

import netCDF4
import numpy as np
from pyproj import Transformer

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data"))
WC = RAW / "worldcereal/patches/00002806639B424A"
WC10 = WC / "S2_L2A_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
WC20 = WC / "S2_L2A_20m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
SLO = RAW / "s2_slovenia_timeseries/eolearn_2024"
DST = Path(__file__).parent

#: eo-learn band order of REFERENCE_SCENES_5x13bands.npy
EOLEARN_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                 "B11", "B12"]
SLO_KEEP = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "nir": "B08",
            "cirrus": "B10", "swir16": "B11", "swir22": "B12"}


def _raw(ds: netCDF4.Dataset, name: str) -> np.ndarray:
    var = ds[name]
    var.set_auto_maskandscale(False)
    return np.asarray(var[...])


def worldcereal() -> None:
    """Write ``worldcereal_20m.npz``."""
    with netCDF4.Dataset(WC10) as d10, netCDF4.Dataset(WC20) as d20:
        t = d20["timestamp"]
        times = netCDF4.num2date(t[:], t.units, t.calendar, only_use_cftime_datetimes=False)
        t10 = d10["timestamp"]
        times10 = netCDF4.num2date(t10[:], t10.units, t10.calendar, only_use_cftime_datetimes=False)
        assert [x.isoformat() for x in times] == [x.isoformat() for x in times10]
        out = {"dates": np.array([x.strftime("%Y-%m-%d") for x in times]),
               "pixel_size": np.float64(20.0)}
        for key, name in (("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir", "B08")):
            raw = _raw(d10, name).astype(np.float64)
            nt, ny, nx = raw.shape
            nodata = (raw == 0).reshape(nt, ny // 2, 2, nx // 2, 2).any(axis=(2, 4))
            mean = raw.reshape(nt, ny // 2, 2, nx // 2, 2).mean(axis=(2, 4))
            dn = np.rint(mean).astype(np.uint16)
            dn[nodata] = 0
            out[key] = dn
        out["swir16"] = _raw(d20, "B11").astype(np.uint16)
        out["swir22"] = _raw(d20, "B12").astype(np.uint16)
        out["scl"] = _raw(d20, "SCL").astype(np.uint8)
        for key, name in (("sun_zenith", "sunZenithAngles"), ("sun_azimuth", "sunAzimuthAngles"),
                          ("view_zenith", "viewZenithMean"), ("view_azimuth", "viewAzimuthMean")):
            out[key] = _raw(d20, name).astype(np.float32)
    np.savez_compressed(DST / "worldcereal_20m.npz", **out)


def solar_position(when: dt.datetime, lat: float, lon: float) -> tuple[float, float]:
    """Sun zenith and azimuth (degrees, azimuth clockwise from north) at a UTC time.

    The NOAA solar calculator equations (fractional year, equation of time, declination).
    """
    doy = when.timetuple().tm_yday
    hour = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hour - 12) / 24)
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
                       - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g))
    decl = (0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g) - 0.006758 * math.cos(2 * g)
            + 0.000907 * math.sin(2 * g) - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g))
    tst = hour * 60 + eqtime + 4 * lon
    ha = math.radians(tst / 4 - 180)
    phi = math.radians(lat)
    cosz = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    zen = math.acos(max(-1.0, min(1.0, cosz)))
    sin_az = -math.sin(ha) * math.cos(decl) / math.sin(zen)
    cos_az = (math.sin(decl) - math.sin(phi) * cosz) / (math.cos(phi) * math.sin(zen))
    az = math.degrees(math.atan2(sin_az, cos_az)) % 360
    return math.degrees(zen), az


def slovenia() -> None:
    """Write ``slovenia_toa.npz``."""
    stamps = json.loads((SLO / "timestamps.json").read_text())
    scenes = np.load(SLO / "data/REFERENCE_SCENES_5x13bands.npy")
    ndvi = np.load(SLO / "data/NDVI.npy")[..., 0]
    clm = np.load(SLO / "mask/CLM.npy")[..., 0]
    b4, b8 = EOLEARN_BANDS.index("B04"), EOLEARN_BANDS.index("B08")
    match = []
    for i in range(scenes.shape[0]):
        nd = (scenes[i, ..., b8] - scenes[i, ..., b4]) / (scenes[i, ..., b8] + scenes[i, ..., b4])
        err = np.abs(ndvi - nd).mean(axis=(1, 2))
        order = np.argsort(err)
        assert err[order[0]] < 1e-6 and err[order[1]] > 0.02, (i, err[order[:2]])
        match.append(int(order[0]))
    order = sorted(range(len(match)), key=lambda i: stamps[match[i]])  # chronological
    when = [dt.datetime.fromisoformat(stamps[match[i]]) for i in order]
    ring = json.loads((SLO / "bbox.geojson").read_text())["coordinates"][0]  # EPSG:32633
    cx = (min(p[0] for p in ring) + max(p[0] for p in ring)) / 2
    cy = (min(p[1] for p in ring) + max(p[1] for p in ring)) / 2
    lon, lat = Transformer.from_crs(32633, 4326, always_xy=True).transform(cx, cy)
    sun = [solar_position(w, lat, lon) for w in when]
    out = {"dates": np.array([w.strftime("%Y-%m-%d") for w in when]),
           "times": np.array([w.isoformat() for w in when]),
           "scene_index": np.array([order], np.int16)[0],
           "pixel_size": np.float64(10.0),
           "sun_zenith": np.array([s[0] for s in sun], np.float32),
           "sun_azimuth": np.array([s[1] for s in sun], np.float32),
           "lon_lat": np.array([lon, lat]),
           "altitude": np.load(SLO / "data_timeless/DEM.npy")[..., 0].astype(np.float32),
           "clm": np.stack([clm[match[i]] for i in order]).astype(np.uint8)}
    for key, band in SLO_KEEP.items():
        k = EOLEARN_BANDS.index(band)
        out[key] = np.stack([np.rint(scenes[i, ..., k] * 10000) for i in order]).astype(np.uint16)
    np.savez_compressed(DST / "slovenia_toa.npz", **out)


def main() -> None:
    worldcereal()
    slovenia()
    for name in ("worldcereal_20m.npz", "slovenia_toa.npz"):
        print(f"{name}: {(DST / name).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
