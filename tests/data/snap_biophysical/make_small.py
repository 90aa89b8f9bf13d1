"""Copy SNAP's biophysical TestCases files from a copy of s2tbx's auxdata into this folder (whole files).

Run from anywhere: ``python tests/data/snap_biophysical/make_small.py``. The networks themselves
are package data (src/agriseries/biophysical/networks/), copied from the same commit without the
TestCases files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
RAW = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")) / "snap_biophysical"
HERE = Path(__file__).resolve().parent


def main() -> None:
    for src in sorted(RAW.rglob("*_TestCases")):
        dst = HERE / src.relative_to(RAW)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        print(dst.relative_to(HERE), src.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
