"""Make the production test inbox from /work/shared/data/worldcereal (run once, by hand).

The production tests and the demo site run the whole chain (inbox -> L2A -> L3A, L3B) several
times, with faults, so they need a short series: three weeks of the WorldCereal Flanders
patch 00002806639B424A (tile 31UDS), 2018-06-20 .. 2018-07-10, which is enough for two
monthly syntheses (June and July: both WASP windows, centre +- 23 days, hold dates) and one
L3B product per Sentinel-2 date.

Every pixel, variable and attribute of the kept dates is unchanged; the data variables are
stored with zlib compression (level 4, shuffle), one chunk per date. File names are
upstream's (their date range is the extraction's, not the subset's).

Usage::

    python tests/data/production/make_small.py
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

SRC = Path("/work/shared/data/worldcereal/patches/00002806639B424A")
DST = Path(__file__).parent / "inbox"
KEEP = (np.datetime64("2018-06-20"), np.datetime64("2018-07-11"))  # [first day, day after last)
SERIES = [
    "S2_L2A_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
    "S2_L2A_20m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
    "L8_SR_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
]


def subset(src: Path, dst: Path) -> list[str]:
    """Copy ``src`` to ``dst`` keeping the timestamps in :data:`KEEP`; return their dates."""
    with netCDF4.Dataset(src) as a, netCDF4.Dataset(dst, "w", format="NETCDF4") as b:
        t = a["timestamp"]
        times = netCDF4.num2date(t[:], t.units, t.calendar, only_use_cftime_datetimes=False)
        times = np.array([np.datetime64(x.isoformat()) for x in times])
        keep = np.flatnonzero((times >= KEEP[0]) & (times < KEEP[1]))
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
        dates = subset(SRC / name, DST / name)
        print(f"{name}: {len(dates)} dates {dates}, {(DST / name).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
