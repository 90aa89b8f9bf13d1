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
