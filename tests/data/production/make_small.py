"""Make the production test inbox from $AGRISERIES_RAW_DATA/worldcereal (run once, by hand).

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

import importlib.util
import os
from pathlib import Path

import numpy as np

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
SRC = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")) / "worldcereal/patches/00002806639B424A"
DST = Path(__file__).parent / "inbox"
KEEP = (np.datetime64("2018-06-20"), np.datetime64("2018-07-11"))  # [first day, day after last)
SERIES = [
    "S2_L2A_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
    "S2_L2A_20m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
    "L8_SR_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc",
]


def subset(src: Path, dst: Path) -> list[str]:
    """Copy ``src`` to ``dst`` keeping the timestamps in :data:`KEEP` (the copier of
    tests/data/worldcereal/make_small.py); return their dates."""
    spec = importlib.util.spec_from_file_location(
        "worldcereal_make_small", Path(__file__).parent.parent / "worldcereal" / "make_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.subset(src, dst, KEEP)


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    for name in SERIES:
        dates = subset(SRC / name, DST / name)
        print(f"{name}: {len(dates)} dates {dates}, {(DST / name).stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
