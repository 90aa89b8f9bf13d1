"""Make the small WorldCereal test copies from $AGRISERIES_RAW_DATA/worldcereal (run once, by hand).

The patch 00002806639B424A (Flanders, tile 31UDS, 640 m x 640 m) has 118 Sentinel-2 dates
(2017-08-04 .. 2018-11-27) and 26 Landsat 8 dates: 7.2 MB in all. The copies keep the
2018 growing season, 2018-03-01 .. 2018-10-31 (71 S2 dates, 14 L8 dates), every pixel
and every variable and attribute unchanged, the data variables stored with zlib
compression (level 4, shuffle) and one chunk per date. The label file is copied whole.

The file names are kept as upstream wrote them (their date range is the upstream
extraction's, not the subset's).

Usage::

    python tests/data/worldcereal/make_small.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import netCDF4
import numpy as np

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
SRC = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")) / "worldcereal/patches/00002806639B424A"
DST = Path(__file__).parent
SEASON = (np.datetime64("2018-03-01"), np.datetime64("2018-11-01"))
SERIES = [
    "S2_L2A_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
    "S2_L2A_20m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
    "L8_SR_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
]
LABELS = "OUTPUT_POLY-110_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
#: The 2019 patch 000028085BF08E7E (tile 31UES; upstream has no 10 m Sentinel-2 file for
#: it): its 20 m series over the 2019 season and its labels, in ``2019/``.
SRC19 = SRC.parent / "000028085BF08E7E"
SEASON19 = (np.datetime64("2019-03-01"), np.datetime64("2019-11-01"))
SERIES19 = ["S2_L2A_20m_000028085BF08E7E_32631_2018-08-01_2019-11-30.nc"]
LABELS19 = "OUTPUT_POLY-110_10m_000028085BF08E7E_32631_2018-08-01_2019-11-30.nc"


def subset(src: Path, dst: Path, span: tuple = SEASON) -> list[str]:
    """Copy ``src`` to ``dst`` keeping the timestamps in ``span`` (first day, day after the
    last; default :data:`SEASON`); return their dates. tests/data/production uses it too."""
    with netCDF4.Dataset(src) as a, netCDF4.Dataset(dst, "w", format="NETCDF4") as b:
        t = a["timestamp"]
        times = netCDF4.num2date(t[:], t.units, t.calendar, only_use_cftime_datetimes=False)
        times = np.array([np.datetime64(x.isoformat()) for x in times])
        keep = np.flatnonzero((times >= span[0]) & (times < span[1]))
        b.setncatts({k: a.getncattr(k) for k in a.ncattrs()})
        for name, dim in a.dimensions.items():
            b.createDimension(name, len(keep) if name == "timestamp" else len(dim))
        for name, var in a.variables.items():
            attrs = {k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"}
            fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
            big = var.ndim == 3
            chunks = [1 if d == "timestamp" else len(a.dimensions[d]) for d in var.dimensions]
            out = b.createVariable(name, var.dtype, var.dimensions, fill_value=fill,
                                   zlib=big, complevel=4, shuffle=big,
                                   chunksizes=chunks if big else None)
            out.setncatts(attrs)
            var.set_auto_maskandscale(False)
            out.set_auto_maskandscale(False)
            data = var[...]
            if "timestamp" in var.dimensions:
                data = np.take(data, keep, axis=var.dimensions.index("timestamp"))
            out[...] = data
    return [str(d)[:10] for d in times[keep]]


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    for name in SERIES:
        n = len(subset(SRC / name, DST / name))
        print(f"{name}: {n} dates, {(DST / name).stat().st_size / 1e6:.2f} MB")
    shutil.copyfile(SRC / LABELS, DST / LABELS)
    dst19 = DST / "2019"
    dst19.mkdir(exist_ok=True)
    for name in SERIES19:
        n = len(subset(SRC19 / name, dst19 / name, SEASON19))
        print(f"{name}: {n} dates, {(dst19 / name).stat().st_size / 1e6:.2f} MB")
    shutil.copyfile(SRC19 / LABELS19, dst19 / LABELS19)


if __name__ == "__main__":
    main()
