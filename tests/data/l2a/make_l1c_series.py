"""The five Slovenia L1C dates of this folder as one NetCDF series that `agriseries ingest`
reads as L1C products (processing_level L1C), for `agriseries l2a` from the command line.

    PYTHONPATH=src python tests/data/l2a/make_l1c_series.py tests/data/l2a \
        tests/data/l2a/S2_L1C_slovenia_T33TVL_2015.nc

The 13 bands (DN, scale 1e-4, 0 = no data) as in slovenia_<datetime>_L1C.tif; the sun angles
of each acquisition at the centre of the area (agriseries.core.solar); a viewing geometry of 5
degrees zenith, 100 degrees azimuth (the source gives none; the tests use the same).
"""
import json, sys, datetime as dt
from pathlib import Path
import numpy as np, rasterio, xarray as xr
from pyproj import Transformer
from agriseries.core.solar import sun_angles

DATA = Path(sys.argv[1]); out = Path(sys.argv[2])
ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
stamps = sorted(json.loads((DATA / "slovenia_dates.json").read_text()))
arrays = {b: [] for b in ORDER}; times = []; sz = []; sa = []
for st in stamps:
    name = st.replace("-", "").replace(":", "")
    with rasterio.open(DATA / f"slovenia_{name}_L1C.tif") as src:
        a = src.read(); tr = src.transform; crs = src.crs; h, w = src.height, src.width
    for i, b in enumerate(ORDER):
        arrays[b].append(a[i])
    when = dt.datetime.fromisoformat(st).replace(tzinfo=dt.UTC)
    times.append(np.datetime64(when.replace(tzinfo=None), "ns"))
    cx, cy = tr.c + tr.a * w / 2, tr.f + tr.e * h / 2
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    z, az = sun_angles(when, np.array([lon]), np.array([lat]))
    sz.append(float(z[0])); sa.append(float(az[0]))
x = tr.c + tr.a * (np.arange(w) + 0.5); y = tr.f + tr.e * (np.arange(h) + 0.5)
ds = xr.Dataset(coords={"t": times, "y": y, "x": x})
for b in ORDER:
    ds[b] = (("t", "y", "x"), np.stack(arrays[b]).astype("uint16"),
             {"scale_factor": 1e-4, "_FillValue": np.uint16(0), "grid_mapping": "spatial_ref"})
ds["sunZenithAngles"] = ("t", np.array(sz, "float32"))
ds["sunAzimuthAngles"] = ("t", np.array(sa, "float32"))
ds["viewZenithMean"] = ("t", np.full(len(times), 5.0, "float32"))
ds["viewAzimuthMean"] = ("t", np.full(len(times), 100.0, "float32"))
ds["spatial_ref"] = ((), 0, {"crs_wkt": crs.to_wkt(), "spatial_ref": crs.to_wkt()})
ds.attrs.update({"processing_level": "L1C", "producer": "ESA", "platform": "sentinel-2a", "tile": "33TVL",
                 "epsg": str(crs.to_epsg())})
enc = {b: {"zlib": True, "complevel": 6} for b in ORDER}
ds.to_netcdf(out, encoding=enc)
print(out, out.stat().st_size)
