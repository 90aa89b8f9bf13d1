"""A store that one broken file cannot break: corrupt items skipped with a warning naming the
file, `agriseries store check|repair|remove` on real products really damaged."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agriseries.cli import main
from agriseries.core.errors import CorruptItemError, StoreError
from agriseries.io.check import check_store, repair_store
from agriseries.io.ingest import ingest
from agriseries.io.store import ProductStore, read_item

DATA = Path(__file__).parent / "data"
INBOX = DATA / "production" / "inbox"
S2 = sorted(INBOX.glob("S2_L2A_*m_*.nc"))  # 8 dates of T31UDS, 10 m + 20 m files


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine") / "store"
    results = ingest(S2, ProductStore(root))
    assert all(r.status == "ingested" for r in results)
    return root


@pytest.fixture()
def store(pristine, tmp_path) -> ProductStore:
    root = tmp_path / "store"
    shutil.copytree(pristine, root)
    return ProductStore(root)


def _ids(store: ProductStore) -> list[str]:
    return [p.stem for p in store.item_files()]


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _drop_datetime(path: Path) -> None:
    doc = json.loads(path.read_text())
    del doc["properties"]["datetime"]
    path.write_text(json.dumps(doc))


def test_read_item_says_what_is_wrong(store):
    a, b, c, d = list(store.item_files())[:4]
    _truncate(a)
    _drop_datetime(b)
    c.write_text("")
    doc = json.loads(d.read_text())
    doc["id"] = "something else"
    d.write_text(json.dumps(doc))
    for path, words in ((a, "truncated"), (b, "no datetime"), (c, "empty"),
                        (d, "'something else', expected")):
        with pytest.raises(CorruptItemError) as e:
            read_item(path)
        assert str(path) in str(e.value) and words in str(e.value)
        assert isinstance(e.value, StoreError) and isinstance(e.value, ValueError)
    with pytest.raises(CorruptItemError, match="truncated"):
        store.item(a.stem)
    assert not store.exists(a.stem)  # a broken product is not "in the store"


def test_corrupt_items_are_skipped_by_every_reader(store, caplog):
    ids = _ids(store)
    bad = list(store.item_files())[:2]
    _truncate(bad[0])
    _drop_datetime(bad[1])
    with caplog.at_level("WARNING", logger="agriseries.store"):
        seen = [it.id for it in store.items(level="L2A", tile="T31UDS")]
    assert seen == ids[2:]
    assert set(store.corrupt) == {str(p) for p in bad}
    assert all(str(p) in caplog.text for p in bad)
    store.update_catalog()  # the catalogue is rebuilt from the readable items
    from agriseries.io.catalog import listed_item_ids

    assert listed_item_ids(store.root / "L2A" / "collection.json") == set(ids[2:])


def test_cli_commands_go_on_and_name_the_file(store):
    runner = CliRunner()
    bad = next(store.item_files())
    _truncate(bad)
    res = runner.invoke(main, ["list", "--store", str(store.root), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == len(_ids(store)) - 1 and bad.stem not in {r["id"] for r in rows}
    assert f"warning: skipped {bad}" in res.stderr and "truncated" in res.stderr
    assert "Traceback" not in res.output
    # L3B of the dates around it: made for the others, the broken one named
    res = runner.invoke(main, ["biophysical", "--store", str(store.root), "--tile", "T31UDS",
                               "--variables", "LAI", "--from", "2018-06-20", "--to", "2018-06-23",
                               "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) and str(bad) in res.stderr


def test_ingest_repairs_a_corrupt_item_without_overwrite(store):
    bad = next(store.item_files())
    _truncate(bad)
    before = {p.stem for p in store.item_files()}
    results = ingest(S2, store)
    assert all(r.status == "ingested" for r in results)
    assert bad.stem in results[0].products
    assert read_item(bad).id == bad.stem
    assert {p.stem for p in store.item_files()} == before
    again = ingest(S2, store)
    assert all(r.status == "skipped" for r in again)


def test_check_finds_and_repair_handles_each_kind(store, tmp_path):
    from agriseries.production.catalogue import ProductCatalogue, rescan

    cat = ProductCatalogue(tmp_path / "jobs.sqlite")
    try:
        rescan(cat, store)
        assert check_store(store, catalogue=cat).ok
        files = list(store.item_files())
        _truncate(files[0])                                       # corrupt item
        next(files[1].parent.glob("*_B02.tif")).unlink()          # missing asset
        _truncate(next(files[2].parent.glob("*_B11.tif")), 0.6)   # truncated COG
        store.remove_product(files[3].stem)                       # orphan catalogue row
        leftover = store.temp_dir / "L2A_S2A_T31UDS_20180101T000000_X.0000"
        leftover.mkdir(parents=True)
        old = time.time() - 3 * 86400
        os.utime(leftover, (old, old))
        (store.temp_dir / "young").mkdir()                        # a write in progress: kept
        report = check_store(store, catalogue=cat)
        kinds = {(p.kind, p.product) for p in report.problems}
        assert ("corrupt-item", files[0].stem) in kinds
        assert ("missing-asset", files[1].stem) in kinds
        assert ("bad-cog", files[2].stem) in kinds
        assert ("orphan-row", files[3].stem) in kinds
        assert ("tmp", None) in kinds and not report.ok
        bad_cog = next(p for p in report.problems if p.kind == "bad-cog")
        assert "truncated" in bad_cog.message and bad_cog.path.endswith("_B11.tif")
        done = repair_store(store, report, catalogue=cat)
        assert not done.errors
        after = check_store(store, catalogue=cat)
        assert after.ok, after.problems
        moved = sorted(p.name.split(".")[0] for p in store.quarantine_dir.iterdir())
        assert moved == sorted(f.stem for f in files[:3])
        note = next(store.quarantine_dir.glob(f"{files[2].stem}.*/QUARANTINE.txt")).read_text()
        assert "bad-cog" in note and "_B11.tif" in note
        assert not leftover.exists() and (store.temp_dir / "young").exists()
        assert {r.product_id for r in cat.products()} == {p.stem for p in store.item_files()}
        # the broken products come back with the next ingest
        ingest(S2, store)
        assert check_store(store).ok and len(list(store.item_files())) == len(files)
    finally:
        cat.close()


def test_check_validates_items_and_catalogue_against_the_stac_schemas(store):
    """An item that reads but is not valid STAC (core schema, or a schema of an extension it
    declares) is an invalid-item, found offline and quarantined by repair, made again by
    the next ingest; an invalid collection is rebuilt."""
    files = list(store.item_files())
    doc = json.loads(files[0].read_text())
    doc["properties"]["eo:cloud_cover"] = -3                        # eo: minimum 0
    files[0].write_text(json.dumps(doc))
    doc = json.loads(files[1].read_text())
    asset = next(a for a in doc["assets"].values() if a.get("raster:bands"))
    asset["raster:bands"][0]["sampling"] = "middle"                # raster: area or point
    doc["bbox"] = [0, 0]                                            # core: 4 or 6 numbers
    files[1].write_text(json.dumps(doc))
    col = store.root / "L2A" / "collection.json"
    cdoc = json.loads(col.read_text())
    del cdoc["license"]                                            # core collection: required
    col.write_text(json.dumps(cdoc))
    res = CliRunner().invoke(main, ["store", "check", str(store.root)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = {ln.split("\t")[1]: ln for ln in res.stdout.splitlines()}
    first, second = lines[str(files[0])], lines[str(files[1])]
    assert first.startswith("invalid-item\t") and first.endswith("[quarantine]")
    assert "eo: properties/eo:cloud_cover: -3 is less than the minimum of 0" in first
    assert "raster: assets/" in second and "'middle' is not one of ['area', 'point']" in second
    assert "core: bbox: " in second
    assert lines[str(col)].startswith("catalogue\t") and "'license' is a required" in \
        lines[str(col)]
    # skipped on demand: what is left is sound
    res = CliRunner().invoke(main, ["store", "check", str(store.root), "--no-schemas"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["store", "repair", str(store.root), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert {a["path"] for a in doc["repair"]["actions"] if a["action"] == "quarantine"} == \
        {str(files[0].parent), str(files[1].parent)}
    assert doc["after"]["ok"]
    ingest(S2, store)  # the quarantined products come back, valid
    report = check_store(store)
    assert report.ok and report.products == len(files), report.problems


def test_the_shipped_stac_schemas_are_the_tests_copies():
    """The extension schemas shipped with agriseries (package data, for store check) are the
    same files as those the tests validate against on their own (tests/data/stac_schemas)."""
    from agriseries.io.stac_schema import SCHEMAS, shipped_extensions

    tests_copy = DATA / "stac_schemas"
    names = sorted(f"{p.parent.parent.name}/{p.parent.name}"
                   for p in tests_copy.glob("*/*/schema.json"))
    assert shipped_extensions() == names and len(names) == 7
    for name in names:
        assert (SCHEMAS / name / "schema.json").read_bytes() == \
            (tests_copy / name / "schema.json").read_bytes(), name
    assert "Apache License" in (SCHEMAS / "LICENSE-Apache-2.0.txt").read_text()


def test_the_production_catalogue_notices_an_item_broken_after_it_was_recorded(store, tmp_path,
                                                                             caplog):
    """An item that breaks after its product was recorded: the next rescan (each production
    run does one) reads it again, warns naming it and drops its row (the product is missing,
    not made); an item rewritten whole updates its row."""
    from agriseries.production.catalogue import ProductCatalogue, rescan

    cat = ProductCatalogue(tmp_path / "jobs.sqlite")
    try:
        assert rescan(cat, store) == (8, 0)
        assert rescan(cat, store) == (0, 0)  # nothing changed: nothing read again
        broken, rewritten = list(store.item_files())[:2]
        later = time.time() + 10
        _truncate(broken)
        doc = json.loads(rewritten.read_text())
        doc["properties"]["eo:cloud_cover"] = 12.5
        rewritten.write_text(json.dumps(doc))
        for p in (broken, rewritten):
            os.utime(p, (later, later))
        with caplog.at_level("WARNING", logger="agriseries.store"):
            assert rescan(cat, store) == (0, 1)
        assert f"skipped {broken}" in caplog.text and "truncated" in caplog.text
        rows = {r.product_id: r for r in cat.products(with_items=True)}
        assert broken.stem not in rows and len(rows) == 7
        assert rows[rewritten.stem].item["properties"]["eo:cloud_cover"] == 12.5
        assert rescan(cat, store) == (0, 0)  # no row left to drop
    finally:
        cat.close()


def test_store_commands(store):
    runner = CliRunner()
    ok = runner.invoke(main, ["store", "check", str(store.root), "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["ok"] and doc["products"] == len(_ids(store)) and doc["assets"] > doc["products"]
    first = next(store.item_files())
    _drop_datetime(first)
    res = runner.invoke(main, ["store", "check", str(store.root)])
    assert res.exit_code == 1
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("corrupt-item"))
    assert line.split("\t")[1] == str(first) and "no datetime" in line
    res = runner.invoke(main, ["store", "repair", str(store.root), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["after"]["ok"] and doc["repair"]["actions"][0]["action"] == "quarantine"
    victim = _ids(store)[0]
    res = runner.invoke(main, ["store", "remove", str(store.root), victim,
                               "L2A_S2A_T31UDS_20990101T000000_SEN2COR", "nonsense"])
    assert res.exit_code == 1
    assert res.stdout.strip() == f"removed\t{victim}"
    assert "20990101" in res.stderr and "not in the store" in res.stderr
    assert "nonsense: not a product id" in res.stderr
    assert victim not in _ids(store)
    from agriseries.io.catalog import listed_item_ids

    assert victim not in listed_item_ids(store.root / "L2A" / "collection.json")
    assert listed_item_ids(store.root / "L2A" / "collection.json") == set(_ids(store))
    assert runner.invoke(main, ["store", "check", str(store.root)]).exit_code == 0


def test_store_path_problems(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["store", "check", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "no such folder" in res.stderr
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = runner.invoke(main, ["store", "check", str(afile)])
    assert res.exit_code == 1 and "is a file, not a folder" in res.stderr
    assert "Traceback" not in res.output


def test_tables_do_not_wrap_when_piped(store):
    res = CliRunner().invoke(main, ["list", "--store", str(store.root)])
    assert res.exit_code == 0
    for pid in _ids(store):
        assert sum(pid in line for line in res.stdout.splitlines()) == 1


# -- store-level failures: a real full disk and a real read-only file system -------------------

def _namespace_ok() -> bool:
    import subprocess

    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_namespace = pytest.mark.skipif(not _namespace_ok(), reason="unshare -rm (user and mount "
                                     "namespaces) is not available: no small file system to fill")


def _cli_in_small_fs(mnt: Path, size: str, args: list[str], prepare: str = "",
                     read_only: bool = False):
    """Run ``agriseries ARGS`` with a fresh tmpfs of SIZE mounted on MNT (a private mount
    namespace: nothing to clean up, no root needed)."""
    import shlex
    import subprocess
    import sys

    mnt.mkdir(exist_ok=True)
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "agriseries.cli", *args])
    script = (f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mnt))} && {prepare} "
              + (f"mount -o remount,ro {shlex.quote(str(mnt))} && " if read_only else "")
              + cmd)
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300)


@needs_namespace
def test_full_disk_is_one_clear_line(tmp_path):
    mnt = tmp_path / "small"
    res = _cli_in_small_fs(mnt, "1m", ["ingest", *map(str, S2), "--store", str(mnt / "store")])
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith(f"error: {mnt / 'store'}: no space left on device (writing L2A_")
    assert "MiB free" in lines[-1]
    assert "Traceback" not in res.stderr and "ERROR" not in res.stderr
    # libtiff's own "_tiffSeekProc: No space left on device." lines (its process-wide handler,
    # from the dask threads that write the COGs) go through GDAL's error handling instead
    assert "TIFF" not in res.stderr and "_tiff" not in res.stderr
    assert len(lines) <= 2, lines  # the error and, at most, what a progress bar left


@needs_namespace
def test_full_disk_cause_is_libtiffs_message_not_stderr(tmp_path):
    """A COG written on a full disk, from a dask thread as the store does: nothing on stderr,
    and the StoreError says why (libtiff's message, which GDAL's last error does not)."""
    import shlex
    import subprocess
    import sys

    mnt = tmp_path / "small"
    mnt.mkdir()
    code = (
        "import numpy as np, dask.array as da\n"
        "from odc.geo.geobox import GeoBox\n"
        "from agriseries.io.cog import write_cog\n"
        "gb = GeoBox.from_bbox((300000, 5000000, 320000, 5020000), 'EPSG:32631', resolution=10)\n"
        "rng = np.random.default_rng(0)\n"
        "data = da.from_array(rng.integers(0, 10000, gb.shape, dtype='int16'), chunks=512)\n"
        "try:\n"
        f"    write_cog({str(mnt / 'x.tif')!r}, data, gb)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n")
    script = (f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(mnt))} && "
              f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert res.stderr == "", res.stderr
    assert res.stdout.startswith(f"StoreError {mnt / 'x.tif'}: writing the COG failed"), res.stdout
    assert "(libtiff: _tiff" in res.stdout and "No space left on device" in res.stdout


@needs_namespace
def test_read_only_store_is_one_clear_line(pristine, tmp_path):
    mnt = tmp_path / "ro"
    store = mnt / "store"
    copy = f"cp -r {pristine} {store} && "
    res = _cli_in_small_fs(mnt, "20m", ["ingest", *map(str, S2), "--store", str(store),
                                        "--overwrite"], prepare=copy, read_only=True)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: {store}: read-only file system (writing L2A_S2A_T31UDS_20180620T105211_SEN2COR)")
    # reading a read-only store is fine, and so is an ingest with nothing new to write
    res = _cli_in_small_fs(mnt, "20m", ["list", "--store", str(store), "--json"], prepare=copy,
                           read_only=True)
    assert res.returncode == 0 and len(json.loads(res.stdout)) == 8
    res = _cli_in_small_fs(mnt, "20m", ["ingest", *map(str, S2), "--store", str(store)],
                           prepare=copy, read_only=True)
    assert res.returncode == 0, res.stderr


def test_store_path_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    runner = CliRunner()
    res = runner.invoke(main, ["ingest", *map(str, S2), "--store", str(afile)])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == \
        f"error: {afile}: the store path is a file, not a folder"
    res = runner.invoke(main, ["ingest", *map(str, S2), "--store", str(afile / "sub")])
    assert res.exit_code == 1 and f"{afile} (above the store) is a file" in res.stderr


def test_exit_codes_of_nothing_to_do_and_reversed_ranges(store):
    runner = CliRunner()
    root = str(store.root)
    res = runner.invoke(main, ["list", "--store", root, "--from", "2018-07-01", "--to",
                               "2018-06-01"])
    assert res.exit_code == 2 and "--to 2018-06-01 is before --from 2018-07-01" in res.output
    res = runner.invoke(main, ["list", "--store", root, "--level", "L3A"])
    assert res.exit_code == 3 and "0 product(s)" in res.stderr
    res = runner.invoke(main, ["biophysical", "--store", root, "--tile", "T31UDS",
                               "--from", "2018-07-01", "--to", "2018-06-01"])
    assert res.exit_code == 2 and "is before" in res.output
    res = runner.invoke(main, ["biophysical", "--store", root, "--tile", "T31UDS",
                               "--from", "2019-01-01", "--to", "2019-02-01"])
    assert res.exit_code == 3
    assert "nothing to do: no L2A product of T31UDS" in res.stderr and "2019-01-01" in res.stderr
    res = runner.invoke(main, ["biophysical", "--store", root, "--tile", "T31UDS",
                               "--sensors", "S3"])
    assert res.exit_code == 2 and "unknown sensor(s) S3" in res.output
    res = runner.invoke(main, ["biophysical", "--store", root, "--tile", "T31UDS",
                               "--sensors", "L8"])
    assert res.exit_code == 3 and "from L8" in res.stderr
    res = runner.invoke(main, ["l2a", "--store", root, "--tile", "T31UDS"])
    assert res.exit_code == 3 and "no L1C product of T31UDS" in res.stderr
    assert "state" not in res.output
    res = runner.invoke(main, ["l2a", "--store", root, "--tile", "T31UDS",
                               "--from", "2018-07-01", "--to", "2018-06-01"])
    assert res.exit_code == 2


# -- "already in the store" means made as asked ---------------------------------------------

def test_composite_made_otherwise_is_refused(store):
    runner = CliRunner()
    root = str(store.root)
    args = ["composite", "--store", root, "--tile", "T31UDS", "--period", "2018-07",
            "--no-directional", "--coarse-resolution", "120"]
    assert runner.invoke(main, args).exit_code == 0
    same = runner.invoke(main, [*args, "--json"])
    assert same.exit_code == 0 and json.loads(same.stdout)["made"] is False
    other = runner.invoke(main, [*args, "--half-period", "10"])
    assert other.exit_code == 1
    assert "L3A_S2_T31UDS_20180701-20180731_AGS is already in the store" in other.stderr
    assert "half_period: 23 -> 10" in other.stderr and "--overwrite" in other.stderr
    assert runner.invoke(main, [*args, "--half-period", "10", "--overwrite"]).exit_code == 0
    # a new L2A product of the window since the synthesis was made: said, not ignored
    victim = "L2A_S2A_T31UDS_20180705T105427_SEN2COR"
    store.remove_product(victim)
    assert runner.invoke(main, [*args, "--overwrite"]).exit_code == 0
    ingest(S2, store)
    res = runner.invoke(main, args)
    assert res.exit_code == 1 and f"1 input(s) it was not made from ({victim})" in res.stderr


def test_production_remakes_a_product_when_the_site_settings_change(store):
    from agriseries.production.stages import get
    from agriseries.production.tasks import TaskSpec, run_job

    stage = get("L3B")
    l2a = "L2A_S2A_T31UDS_20180623T110520_SEN2COR"
    work = ProductStore(store.root, catalog_updates=False)

    def job(variables):
        params = {"variables": list(variables), "resolution": 20}
        return run_job(stage, work, TaskSpec("L3B", "k-" + "-".join(variables), "T31UDS",
                                             (l2a,), params, str(store.root)))

    first = job(["LAI"])
    assert first.products[0]["made"] and first.notes == []
    pid = first.products[0]["id"]
    assert store.item(pid).properties["agriseries:job"]["stage"] == "L3B"
    again = job(["LAI"])
    assert not again.products[0]["made"] and "already made" in again.notes[0]
    changed = job(["LAI", "FCOVER"])
    assert changed.products[0]["made"]
    assert "made again with the site's parameters" in changed.notes[0]
    assert {"LAI", "FCOVER"} <= set(store.item(pid).assets)
    assert not job(["LAI", "FCOVER"]).products[0]["made"]  # and not a third time


# -- completeness: a series without its partner file ------------------------------------------

def test_a_series_without_its_partner_is_flagged_then_completed(tmp_path):
    store = ProductStore(tmp_path / "store")
    ten, twenty = S2  # the 10 m and 20 m files of one extraction
    broken = tmp_path / twenty.name
    broken.write_bytes(twenty.read_bytes()[:40_000])  # the 20 m file cut short
    results = ingest([ten, broken], store)
    assert [r.status for r in results] == ["ingested", "failed"]
    assert str(broken) in results[1].error
    assert len(results[0].incomplete) == 8
    lacking = {"B05", "B06", "B07", "B8A", "B11", "B12", "mask"}
    for pid, missing in results[0].incomplete.items():
        assert set(missing) == lacking
        props = store.item(pid).properties
        assert props["agriseries:incomplete"] is True
        assert set(props["agriseries:missing_bands"]) == lacking
    res = CliRunner().invoke(main, ["list", "--store", str(store.root)])
    assert res.stdout.count("(incomplete)") == 8
    assert sorted(check_store(store).incomplete) == sorted(results[0].incomplete)
    # the 20 m file fixed: the same command completes them, without --overwrite
    again = ingest([ten, twenty], store)
    assert [r.status for r in again] == ["ingested", "ingested"]
    assert not again[0].incomplete
    for pid in results[0].incomplete:
        item = store.item(pid)
        assert "agriseries:incomplete" not in item.properties
        assert lacking <= set(item.assets)
    assert all(r.status == "skipped" for r in ingest([ten, twenty], store))
    # an ingest of the 10 m file alone does not undo a whole product
    assert all(r.status == "skipped" for r in ingest([ten], store))


@pytest.mark.parametrize("how", ["missing", "garbage"])
def test_a_series_whose_partner_is_missing_or_garbage_is_flagged(tmp_path, how):
    """The 20 m file absent (only the 10 m one given) or replaced by an error page: the
    products are flagged incomplete with what they lack, never stored as whole."""
    store = ProductStore(tmp_path / "store")
    ten, twenty = S2
    paths = [ten]
    if how == "garbage":
        page = tmp_path / twenty.name
        page.write_bytes(b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>")
        paths.append(page)
    res = CliRunner().invoke(main, ["ingest", *map(str, paths), "--store", str(store.root)])
    assert res.exit_code == (1 if how == "garbage" else 0), res.output
    first = res.stdout.splitlines()[0]
    assert first.startswith(f"ingested\t{ten}") and "8 incomplete (without B05 B06 B07" in first
    if how == "garbage":
        assert f"failed\t{paths[1]}" in res.stdout and "not a NetCDF file" in res.stdout
    items = list(store.items())
    assert len(items) == 8 and all(it.properties["agriseries:incomplete"] for it in items)


@pytest.mark.parametrize("signame,code,said", [("SIGINT", 130, "interrupted"),
                                                ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_exits_128_plus_n_and_leaves_no_half_product(store, signame, code,
                                                                        said):
    """Ctrl-C (130) and SIGTERM (143: kill, a service manager, a batch time limit) stop the
    command the same way: the half-made product is removed, the others are whole."""
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "agriseries.cli", "biophysical", "--store", str(store.root),
           "--tile", "T31UDS", "--variables", "LAI"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not list(store.root.glob("L3B/*/*/*/*.json")):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no L3B product made in 240 s"
            time.sleep(0.05)
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    made = list(store.root.glob("L3B/*/*/*/*.json"))
    if proc.returncode == 0:  # it finished before the signal arrived: nothing to check
        pytest.skip("every product was made before the signal arrived")
    assert proc.returncode == code, err
    assert said in err and "Traceback" not in err
    assert 1 <= len(made) < 8
    assert check_store(store).ok  # no half-written product anywhere
    res = CliRunner().invoke(main, cmd[3:])
    assert res.exit_code == 0, res.output
    assert len(list(store.root.glob("L3B/*/*/*/*.json"))) == 8


def test_a_signal_just_after_the_rename_leaves_the_product_listed(store, monkeypatch):
    """A Ctrl-C or SIGTERM arriving after a product's folder is renamed into place (while
    its parent folder is synced) still leaves it in the catalogue the command rewrites on
    its way out: the store checks clean (the SIGTERM test above hit that window)."""
    import datetime as dt

    import numpy as np

    import agriseries.io.store as store_mod
    from agriseries.core.grid import tile_geobox
    from agriseries.core.ids import Level, ProductId
    from agriseries.io.store import Layer

    gb = tile_geobox("T31UDS", 20)[:64, :64]
    pid = ProductId(Level.L3B, "S2A", "T31UDS", dt.datetime(2018, 7, 3, 10, 50, 31,
                                                             tzinfo=dt.timezone.utc), "AGS")
    final = store.product_dir(pid)
    real = store_mod.fsync_path

    def interrupted(path, *args, **kwargs):
        if Path(path) == final.parent and final.exists():
            raise KeyboardInterrupt  # what the CLI's SIGTERM handler raises
        return real(path, *args, **kwargs)

    monkeypatch.setattr(store_mod, "fsync_path", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_product(pid, [Layer("LAI", np.full(gb.shape, 1.5, np.float32), gb, "aux")],
                            footprint=gb.extent, sensors=["S2A"], inputs=["x"], parameters={},
                            lineage="test", datetime=dt.datetime(2018, 7, 3, 10, 50, 31,
                                                                 tzinfo=dt.timezone.utc))
    monkeypatch.setattr(store_mod, "fsync_path", real)
    store.finish_catalog(interrupted=True)  # what the command does on its way out
    assert final.exists()
    report = check_store(store)
    assert report.ok, report.problems
