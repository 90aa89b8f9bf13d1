"""Copy SNAP's biophysical TestCases files from the shared data into this folder (whole files).

Run from anywhere: ``python tests/data/snap_biophysical/make_small.py``. The networks themselves
are package data (src/agriseries/biophysical/networks/), copied from the same commit without the
TestCases files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SHARED = Path("/work/shared/data/snap_biophysical")
HERE = Path(__file__).resolve().parent


def main() -> None:
    for src in sorted(SHARED.rglob("*_TestCases")):
        dst = HERE / src.relative_to(SHARED)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        print(dst.relative_to(HERE), src.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
