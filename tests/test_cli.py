"""The agriseries command line, run as a user would (click's runner, real data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from agriseries.cli import main

DATA = Path(__file__).parent / "data"
SAFE = next((DATA / "safe").glob("S2A_MSIL2A_*.SAFE"))
WC = DATA / "worldcereal"


def test_help_everywhere():
    runner = CliRunner()
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in ("ingest", "list", "info", "tile"):
        assert cmd in res.output
        sub = runner.invoke(main, [cmd, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output


def test_ingest_json_then_list(tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    bad = tmp_path / "bad"
    bad.mkdir()
    s2 = sorted(WC.glob("S2_L2A_*m_*.nc"))
    res = runner.invoke(main, ["ingest", str(SAFE), str(bad), *map(str, s2), "--store", str(store),
                               "--allow-missing-bands", "--json"])
    assert res.exit_code == 1, res.output  # one input failed, the rest went in
    doc = json.loads(res.stdout)
    status = {Path(r["path"]).name: r["status"] for r in doc["results"]}
    assert status[SAFE.name] == "ingested" and status["bad"] == "failed"
    assert all(status[p.name] == "ingested" for p in s2)
    failed = next(r for r in doc["results"] if r["status"] == "failed")
    assert failed["error_type"] == "UnknownProductError" and str(bad) in failed["error"]
    # the 10 m and 20 m files of one extraction became one product per date with all bands
    listed = runner.invoke(main, ["list", "--store", str(store), "--tile", "T31UDS",
                                  "--from", "2018-07-01", "--to", "2018-07-31", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert rows and all(r["datetime"].startswith("2018-07") for r in rows)
    assert {"B02", "B08", "B8A", "B11", "mask"} <= set(rows[0]["assets"])
    # a rerun ingests nothing new and says so
    again = runner.invoke(main, ["ingest", str(SAFE), "--store", str(store),
                                 "--allow-missing-bands", "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout)["results"][0]["status"] == "skipped"


def test_info_and_tile(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["info", str(SAFE), "--json"])
    assert res.exit_code == 1 and "B08" in res.output  # the sample has no B08: a clear error
    res = runner.invoke(main, ["info", str(SAFE), "--allow-missing-bands", "--json"])
    doc = json.loads(res.stdout)
    assert doc["missing_bands"] == ["B08"] and doc["tile"] == "T29UNU"
    assert doc["bands"]["B04"]["offset"] == -0.1 and doc["bands"]["B04"]["resolution"] == 60
    lsat = next((DATA / "landsat").glob("LC08_*_T1"))
    res = runner.invoke(main, ["info", str(lsat), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["reader"] == "landsat" and doc["sensor"] == "L8" and doc["level"] == "L2A"
    assert doc["bands"]["B4"]["scale"] == 2.75e-05 and doc["bands"]["B4"]["offset"] == -0.2
    res = runner.invoke(main, ["tile", "29UNU", "--resolution", "20", "--json"])
    doc = json.loads(res.stdout)
    assert doc["shape"] == [5490, 5490] and doc["ulx"] == 499980 and doc["uly"] == 5900040
    res = runner.invoke(main, ["tile", "T99XXX"])
    assert res.exit_code == 2 and "not a Sentinel-2 tile id" in res.output


def test_wrong_arguments_exit_2(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(SAFE)]).exit_code == 2  # no --store
    assert runner.invoke(main, ["list", "--store", str(tmp_path / "nope")]).exit_code == 2
    copy = tmp_path / SAFE.name
    shutil.copytree(SAFE, copy)
    res = runner.invoke(main, ["ingest", str(copy), "--store", str(tmp_path / "s"),
                               "--tile", "banana"])
    assert res.exit_code == 2 and "banana" in res.output


def test_biophysical_commands(tmp_path):
    runner = CliRunner()
    store = tmp_path / "store"
    s2 = sorted(WC.glob("S2_L2A_*m_*.nc"))
    assert runner.invoke(main, ["ingest", *map(str, s2), "--store", str(store)]).exit_code == 0
    res = runner.invoke(main, ["biophysical", "--store", str(store), "--tile", "T31UDS",
                               "--from", "2018-07-01", "--to", "2018-07-31", "--variables", "LAI",
                               "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) >= 5 and all(r["status"] == "made" for r in rows)
    res = runner.invoke(main, ["biophysical-series", "--store", str(store), "--tile", "T31UDS",
                               "--from", "2018-07-01", "--to", "2018-07-31", "--variables", "LAI",
                               "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["product"] == "L3B_S2_T31UDS_20180701-20180731_AGS"
    bad = runner.invoke(main, ["biophysical", "--store", str(store), "--tile", "T31UDS",
                               "--variables", "NDVI"])
    assert bad.exit_code == 2 and "unknown biophysical variable" in bad.output


def test_task_progress_counts_the_dask_tasks_of_a_product_on_a_terminal_only(monkeypatch):
    """The bar of the long commands (composite, biophysical-series, cropmask, croptype)
    counts the tasks of the computation inside the product; nothing when not a terminal."""
    import io
    import re

    import dask.array as da
    from rich.console import Console

    import agriseries.cli_output as co

    x = da.ones((400, 400), chunks=100) + 1
    buf = io.StringIO()
    monkeypatch.setattr(co, "err", Console(file=buf, force_terminal=True, width=120))
    with co.task_progress("L3A T31UDS 2018-07"):
        assert float(x.sum().compute(scheduler="threads")) == 2 * 400 * 400
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())
    done = re.findall(r"L3A T31UDS 2018-07 \S+ (\d+)/(\d+) tasks", text)
    assert done and done[-1][0] == done[-1][1] and int(done[-1][1]) > 1, text
    quiet = io.StringIO()
    monkeypatch.setattr(co, "err", Console(file=quiet, width=120))  # a pipe, a file
    with co.task_progress("L3A"):
        x.sum().compute(scheduler="threads")
    assert quiet.getvalue() == ""
