"""Wrong arguments and values on every command: each one a clear line naming the value and what
was expected, the documented exit code (docs/robustness.md), no traceback, nothing written.

The input-format cases (truncated, corrupt, missing bands...) are in tests/test_input_errors.py;
damaged stores, store failures and "already in the store" in tests/test_store_check.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from agriseries.cli import main
from agriseries.core.ids import ProductId
from agriseries.io.ingest import ingest
from agriseries.io.store import ProductStore

DATA = Path(__file__).parent / "data"
INBOX = DATA / "production" / "inbox"
S2 = sorted(INBOX.glob("S2_L2A_*m_*.nc"))
PARCELS = DATA / "crop" / "worldcereal_parcels.gpkg"
SEASON = ["--season", "2018-06-01", "2018-07-31"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad")
    store = tmp / "store"
    ingest(S2, ProductStore(store))
    afile = tmp / "afile.txt"
    afile.write_text("not a store\n")
    site = tmp / "site.yaml"
    site.write_text(f"name: t\narea:\n  tiles: [T31UDS]\nseason:\n  start: 2018-06-01\n"
                    f"  end: 2018-07-31\ninbox:\n  path: {tmp / 'no-inbox'}\n"
                    f"store: {tmp / 'pstore'}\n")
    far = tmp / "far.yaml"
    far.write_text("name: t\narea:\n  geometry: {type: Polygon, coordinates: [[[200, 50], "
                   "[201, 50], [201, 51], [200, 50]]]}\nseason:\n  start: 2018-06-01\n"
                   f"  end: 2018-07-31\ninbox:\n  path: {INBOX}\nstore: {tmp / 'pstore'}\n")
    return {"store": str(store), "file": str(afile), "tmp": str(tmp), "site": str(site),
            "far": str(far), "parcels": str(PARCELS), "s2": str(S2[0])}


#: (case, command line, exit code, words the message must hold)
CASES = [
    ("list: store missing", "list --store {tmp}/nope", 2, ["does not exist"]),
    ("list: store is a file", "list --store {file}", 2, ["is a file"]),
    ("list: reversed dates", "list --store {store} --from 2018-07-01 --to 2018-06-01", 2,
     ["--to 2018-06-01 is before --from 2018-07-01"]),
    ("list: unknown level", "list --store {store} --level L9", 2, ["L9"]),
    ("list: bad tile", "list --store {store} --tile banana", 2, ["banana"]),
    ("list: bad date", "list --store {store} --from 2018-13-01", 2, ["2018-13-01"]),
    ("list: nothing matches", "list --store {store} --level L3A", 3, ["0 product(s)"]),
    ("ingest: no store option", "ingest {s2}", 2, ["--store"]),
    ("ingest: input missing", "ingest {tmp}/nope.nc --store {tmp}/s1", 1, ["nope.nc"]),
    ("ingest: not a product", "ingest {file} --store {tmp}/s2", 1,
     ["afile.txt", "not a product layout"]),
    ("ingest: bad tile", "ingest {s2} --store {tmp}/s3 --tile banana", 2, ["banana"]),
    ("ingest: store is a file", "ingest {s2} --store {file}", 1,
     ["is a file, not a folder"]),
    ("ingest: empty stack bands", "ingest {s2} --store {tmp}/s4 --stack-bands ,", 2,
     ["expected band names"]),
    ("info: path missing", "info {tmp}/nope", 2, ["does not exist"]),
    ("info: not a product", "info {file}", 1, ["afile.txt"]),
    ("tile: bad tile id", "tile T99XXX", 2, ["T99XXX", "not a Sentinel-2 tile id"]),
    ("tile: bad resolution", "tile T31UDS --resolution 15", 2, ["15"]),
    ("composite: bad period", "composite --store {store} --tile T31UDS --period 2018-13", 2,
     ["2018-13"]),
    ("composite: unknown sensor", "composite --store {store} --tile T31UDS --period 2018-07 "
     "--sensors S3", 2, ["unknown sensor(s) S3"]),
    ("composite: no product", "composite --store {store} --tile T31UDS --period 2016-01", 3,
     ["nothing to do", "no L2A product of T31UDS"]),
    ("composite: store missing", "composite --store {tmp}/nope --tile T31UDS --period 2018-07",
     2, ["does not exist"]),
    ("biophysical: reversed dates", "biophysical --store {store} --tile T31UDS --from 2018-07-01"
     " --to 2018-06-01", 2, ["is before"]),
    ("biophysical: unknown sensor", "biophysical --store {store} --tile T31UDS --sensors S3", 2,
     ["unknown sensor(s) S3"]),
    ("biophysical: unknown variable", "biophysical --store {store} --tile T31UDS "
     "--variables NDVI", 2, ["unknown biophysical variable", "NDVI"]),
    ("biophysical: no product", "biophysical --store {store} --tile T31UDS --from 2019-01-01",
     3, ["no L2A product of T31UDS", "2019-01-01"]),
    ("biophysical: no product of the tile", "biophysical --store {store} --tile T32ULU", 3,
     ["no L2A product of T32ULU"]),
    ("biophysical: no store", "biophysical --tile T31UDS", 2, ["--store and --tile"]),
    ("biophysical-series: reversed dates", "biophysical-series --store {store} --tile T31UDS "
     "--from 2018-07-31 --to 2018-06-01", 2, ["is before"]),
    ("l2a: reversed dates", "l2a --store {store} --tile T31UDS --from 2018-07-01 "
     "--to 2018-06-01", 2, ["is before"]),
    ("l2a: bad tile", "l2a --store {store} --tile banana", 2, ["banana"]),
    ("cropmask: bad tile", "cropmask --store {store} --tile T99XXX " + " ".join(SEASON)
     + " --insitu {parcels}", 2, ["T99XXX", "not a Sentinel-2 tile id"]),
    ("l2a: no L1C", "l2a --store {store} --tile T31UDS", 3,
     ["no L1C product of T31UDS", "ingest L1C products first"]),
    ("cropmask: no reference", "cropmask --store {store} --tile T31UDS " + " ".join(SEASON), 2,
     ["--insitu or --reference-map"]),
    ("cropmask: until after the season", "cropmask --store {store} --tile T31UDS "
     + " ".join(SEASON) + " --insitu {parcels} --until 2018-09-30", 2,
     ["until 2018-09-30 is after the season end 2018-07-31"]),
    ("cropmask: reversed season", "cropmask --store {store} --tile T31UDS --season 2018-07-31 "
     "2018-06-01 --insitu {parcels}", 2, ["season end 2018-06-01 is not after its start"]),
    ("cropmask: no product in the season", "cropmask --store {store} --tile T31UDS --season "
     "2019-06-01 2019-07-31 --insitu {parcels}", 3,
     ["nothing to do", "no L2A product of S2A, S2B, S2C on T31UDS between 2019-06-01"]),
    ("croptype: no product in the season", "croptype --store {store} --tile T31UDS --season "
     "2019-06-01 2019-07-31 --insitu {parcels}", 3,
     ["nothing to do", "no L2A product", "make or ingest L2A products first"]),
    ("croptype: polygons missing", "croptype --store {store} --tile T31UDS " + " ".join(SEASON)
     + " --insitu {tmp}/nope.gpkg", 2, ["nope.gpkg"]),
    ("croptype: unknown crop mask", "croptype --store {store} --tile T31UDS " + " ".join(SEASON)
     + " --insitu {parcels} --class-field CT --crop-mask {tmp}/nope.tif", 1,
     ["{tmp}/nope.tif: no such crop mask"]),
    ("store check: store missing", "store check {tmp}/nope", 1, ["no such folder"]),
    ("store check: store is a file", "store check {file}", 1, ["is a file, not a folder"]),
    ("store remove: unknown product", "store remove {store} L2A_S2A_T31UDS_20990101T000000_SEN2COR",
     1, ["not in the store"]),
    ("store remove: not a product id", "store remove {store} banana", 1,
     ["banana: not a product id"]),
    ("site check: inbox missing", "site check {site}", 1, ["no-inbox", "does not exist"]),
    ("site check: longitude 200", "site check {far}", 1, ["longitude 200", "-180..180"]),
    ("site check: file missing", "site check {tmp}/nope.yaml", 1, ["nope.yaml"]),
    ("run: inbox missing", "run {site}", 1, ["no-inbox", "does not exist"]),
]


@pytest.mark.parametrize("case,line,code,words", CASES, ids=[c[0] for c in CASES])
def test_bad_argument(env, case, line, code, words):
    args = [a.format(**env) for a in line.split()]
    before = sorted(p.relative_to(env["store"]) for p in Path(env["store"]).rglob("*"))
    res = CliRunner().invoke(main, args)
    text = res.output  # stdout and stderr
    assert res.exit_code == code, f"{case}: exit {res.exit_code}\n{text}"
    assert isinstance(res.exception, SystemExit) or res.exception is None, \
        f"{case}: {res.exception!r}"
    assert "Traceback" not in text
    for w in words:
        assert w.format(**env) in text, f"{case}: {w!r} not in\n{text}"
    after = sorted(p.relative_to(env["store"]) for p in Path(env["store"]).rglob("*"))
    assert after == before, f"{case}: the store changed"


def test_cases_are_counted_in_the_docs():
    doc = (Path(__file__).parents[1] / "docs" / "robustness.md").read_text()
    assert f"{len(CASES)} wrong arguments" in doc


def test_a_second_ingest_of_the_same_input_at_the_same_time_is_not_a_failure(tmp_path):
    """Two ingests of one series at the same time, in two processes as two users would run
    them: the one finding a product written by the other says "skipped", never "failed".

    (Processes, not threads: the netCDF4/HDF5 library is not safe for two opens of a file from
    two threads of one process, and crashed the interpreter when this test used threads.)"""
    import subprocess
    import sys

    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "agriseries.cli", "ingest", *map(str, S2), "--store", str(store)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out
        assert not [line for line in out.splitlines() if line.startswith("failed")], out
        assert "Traceback" not in out and " 0 input(s) failed" in out, out
    assert len(list(ProductStore(store).item_files())) == 8
    shutil.rmtree(store)


def test_json_outputs_parse(env):
    runner = CliRunner()
    for line in ("list --store {store} --json", "info {s2} --json", "tile T31UDS --json",
                 "store check {store} --json"):
        res = runner.invoke(main, [a.format(**env) for a in line.split()])
        assert res.exit_code == 0, res.output
        json.loads(res.stdout)


def test_a_product_written_meanwhile_by_another_ingest_is_skipped(tmp_path):
    from agriseries.core.errors import AlreadyStoredError
    from agriseries.io.ingest import write_unless_stored

    store = ProductStore(tmp_path / "store")
    ingest(S2, store)
    pid = next(store.item_files()).stem
    item = store.item(pid)
    layers = []  # never reached: the product is there
    item_pid = ProductId.parse(pid)
    with pytest.raises(AlreadyStoredError, match="already in the store"):
        store.write_product(item_pid, layers, footprint=None, sensors=[], inputs=[],
                            parameters={}, lineage="")
    inputs = item.properties["agriseries:inputs"]
    assert write_unless_stored(store, item_pid, inputs, dict(layers=[], footprint=None, sensors=[],
                                                inputs=inputs, parameters={}, lineage="")) is False
    with pytest.raises(AlreadyStoredError):  # from other inputs: a real conflict, said
        write_unless_stored(store, item_pid, ["other"], dict(layers=[], footprint=None, sensors=[],
                                                inputs=["other"], parameters={}, lineage=""))
