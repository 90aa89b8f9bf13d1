"""The stage table: a new level is one module and one registry entry (a toy NDVI stage run
through the scheduler and the runner end to end), typed parameters round-trip JSON, the
scheduler's import graph stays light, and no module imports another package's private
names."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agriseries.core.errors import ConfigurationError, FailureRecord
from agriseries.core.ids import Level, ProductId
from agriseries.core.params import JsonParams, from_json, to_json
from agriseries.production import stages
from agriseries.production.plan import Catalogue, JobSpec, Waiting, day_end, day_start
from agriseries.production.scheduler import MADE_ONCE, PRIORITY, RULES, schedule
from agriseries.production.site import site_from_dict
from agriseries.production.stages import STAGES, Stage, StageContext, StageOutput

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

SRC = Path(__file__).parent.parent / "src" / "agriseries"
INBOX = Path(__file__).parent / "data" / "production" / "inbox"


# ----------------------------------------------------------------- the toy stage (NDVI)


@dataclasses.dataclass(frozen=True)
class NdviParams(JsonParams):
    """Parameters of the NDVI stage.

    Attributes
    ----------
    resolution
        Pixel size (m) of the NDVI layer.
    """

    resolution: int = 20


def ndvi_id(l2a: str) -> str:
    src = ProductId.parse(l2a)
    return str(ProductId(Level.L3B, src.sensor, src.tile, src.start, "NDVI"))


def ndvi_outputs(tile, inputs, params) -> tuple[str, ...]:
    return tuple(ndvi_id(i) for i in inputs)


def ndvi_plan(site, catalogue: Catalogue, today: dt.date):
    jobs = []
    for tile in site.tiles:
        for r in catalogue.find(Level.L2A, tile, day_start(site.season.start),
                                day_end(min(site.season.end, today))):
            if "_S2" in r.product_id and ndvi_id(r.product_id) not in catalogue:
                jobs.append(JobSpec("NDVI", tile, (r.product_id,), NdviParams().to_json(),
                                    (ndvi_id(r.product_id),), 15, "new L2A product"))
    return jobs, [Waiting("NDVI", None, "all", "a toy stage says hello")]


def ndvi_make(ctx: StageContext, inputs, params: NdviParams) -> StageOutput:
    from odc.geo.geom import Geometry

    from agriseries.io.product import load
    from agriseries.io.store import Layer

    out = StageOutput()
    for item in inputs:
        ds = load(ctx.store.open(item), resolution=params.resolution, bands=["B04", "B08"],
                  angles=None, with_mask=False, with_aux=False)
        red, nir = ds["B04"].isel(time=0), ds["B08"].isel(time=0)
        ndvi = ((nir - red) / (nir + red)).astype("float32")
        pid = ProductId.parse(ndvi_id(item.id))
        ctx.store.write_product(
            pid, [Layer("NDVI", ndvi.data, ds.odc.geobox, "aux", unit="1")],
            footprint=Geometry(item.geometry, "EPSG:4326"), sensors=[pid.sensor],
            inputs=[item.id], parameters=params.to_json(), lineage=f"NDVI of {item.id}",
            datetime=item.datetime)
        out.products.append((str(pid), True))
    return out


NDVI = Stage(level="NDVI", params=NdviParams, make=ndvi_make, plan=ndvi_plan, priority=15,
             reads=("L2A", "L3B"), outputs=ndvi_outputs,
             description="Toy stage: NDVI of every Sentinel-2 L2A product")


@pytest.fixture()
def ndvi_stage():
    stages.register(NDVI)
    try:
        yield NDVI
    finally:
        stages.unregister("NDVI")


def test_registering_a_stage_adds_it_to_the_scheduler_views(ndvi_stage):
    assert "NDVI" in RULES and PRIORITY["NDVI"] == 15 and "NDVI" not in MADE_ONCE
    with pytest.raises(ConfigurationError, match="registered already"):
        stages.register(NDVI)
    with pytest.raises(ConfigurationError, match="unknown stage 'nope'"):
        stages.get("nope")


def test_toy_stage_end_to_end_through_scheduler_and_runner(tmp_path, ndvi_stage):
    from distributed import Client, LocalCluster

    from agriseries.io.store import ProductStore
    from agriseries.production.runner import run

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for f in sorted(INBOX.glob("S2_L2A_*m_*.nc")):
        shutil.copy2(f, inbox / f.name)
    site = site_from_dict({
        "name": "toy", "area": {"tiles": ["T31UDS"]},
        "season": {"start": "2018-06-01", "end": "2018-06-30"},
        "products": {"L3A": {"enabled": False}, "L3B": {"enabled": False}},
        "inbox": {"path": str(inbox), "settle_s": 0}, "store": str(tmp_path / "store"),
        "database": {"statement_timeout_s": 5, "lease_s": 60, "retry_s": 30}})
    # worker processes that never imported this test module: the stage travels with the task
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0",
                      host="127.0.0.1", memory_limit="2GiB") as lc, Client(lc) as client:
        first = run(site, client=client, today=dt.date(2018, 7, 15))
        second = run(site, client=client, today=dt.date(2018, 7, 15))
    assert first.exit_code == 0, first.failed
    store = ProductStore(site.store)
    l2a = [it.id for it in store.items(level=Level.L2A, tile="T31UDS",
                                       start=dt.datetime(2018, 6, 1, tzinfo=dt.UTC),
                                       end=dt.datetime(2018, 6, 30, tzinfo=dt.UTC))]
    made = sorted(p for p in first.made if p.endswith("_NDVI"))
    assert l2a and made == sorted(ndvi_id(i) for i in l2a)
    assert sorted(d["processor"] for d in first.done).count("NDVI") == len(l2a)
    assert any(w.level == "NDVI" for w in first.waiting)
    item = store.item(made[0])
    assert item.properties["agriseries:inputs"] == [
        i for i in l2a if ndvi_id(i) == made[0]]
    import rasterio

    href = item.assets["NDVI"].href
    path = href if Path(href).is_absolute() else str(Path(store.item_path(made[0])).parent / href)
    with rasterio.open(path) as src:
        values = src.read(1)
    finite = values[np.isfinite(values)]
    assert finite.size and np.all((finite >= -1) & (finite <= 1)) and finite.std() > 0
    # the catalogue knows the products; a second run has nothing to do
    assert (second.submitted, second.made, second.failed) == (0, [], [])
    js = site.job_store()
    try:
        assert {r.product_id for r in js.products(level="L3B")} >= set(made)
    finally:
        js.close()
    assert (Path(site.store) / "catalog.json").is_file()


# --------------------------------------------------------------------- typed parameters


@pytest.mark.parametrize("level", ["ingest", "L2A", "L3A", "L3B", "L4A", "L4B"])
def test_every_stage_parameter_class_round_trips_json(level):
    cls = STAGES[level].params
    required = {f.name: ("2018-03-01", "2018-10-15") if f.name == "season" else
                ("2018-06" if f.name == "period" else "2018-06-30")
                for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    p = cls(**required)
    text = json.dumps(p.to_json())
    assert cls.from_json(json.loads(text)) == p
    assert from_json(cls, to_json(p)) == p


def test_parameters_from_json_refuse_bad_values_by_name():
    cls = STAGES["L3A"].params
    with pytest.raises(ConfigurationError, match="half_period"):
        cls.from_json({"period": "2018-06", "half_period": "23"})
    with pytest.raises(ConfigurationError, match="unknown parameter.*colour"):
        cls.from_json({"period": "2018-06", "colour": 1})


def test_scheduled_jobs_carry_the_json_of_their_stage_parameters():
    site = site_from_dict({"name": "t", "area": {"tiles": ["T31UDS"]},
                           "season": {"start": "2018-06-01", "end": "2018-07-31"},
                           "inbox": "/nowhere/inbox", "store": "/nowhere/store"})
    from agriseries.production.records import ProductRecord

    recs = [ProductRecord.from_id(f"L2A_S2A_T31UDS_201806{d:02d}T105031_SEN2COR", "/x")
            for d in (5, 10, 15)]
    s = schedule(site, Catalogue(recs), dt.date(2018, 9, 1))
    assert s.jobs
    for j in s.jobs:
        params = STAGES[j.processor].params.from_json(j.params)
        assert params.to_json() == dict(j.params)


def test_failure_record_from_an_exception():
    try:
        raise ConfigurationError("bad value 3: expected 1 or 2")
    except ConfigurationError as e:
        rec = FailureRecord.from_exception("L1C_S2A_T31UDS_20180605T105031_ESA", e)
    assert rec.error_type == "ConfigurationError" and rec.message.startswith("bad value 3")
    assert "Traceback" in rec.traceback and FailureRecord.from_dict(rec.to_dict()) == rec


# ------------------------------------------------------------------------ import graph


def test_the_scheduler_imports_neither_numba_nor_dask_nor_the_store(tmp_path):
    """Importing the scheduler and planning every level leaves numba, dask, the product
    store and the database layer out of the process."""
    code = f"""
import datetime as dt, json, sys
from agriseries.production.scheduler import schedule
from agriseries.production.plan import Catalogue
from agriseries.production.records import ProductRecord
from agriseries.production.site import site_from_dict
site = site_from_dict({{"name": "t", "area": {{"tiles": ["T31UDS"]}},
    "season": {{"start": "2018-03-01", "end": "2018-10-15"}},
    "l2a": {{"source": "agriseries"}},
    "products": {{"L4A": {{"enabled": True, "crop_values": [1]}},
                  "L4B": {{"enabled": True, "class_field": "CT"}}}},
    "in_situ": {str(tmp_path / 'parcels.gpkg')!r},
    "inbox": "/nowhere/inbox", "store": "/nowhere/store"}})
recs = [ProductRecord.from_id(f"L2A_S2A_T31UDS_2018{{m:02d}}15T105031_SEN2COR", "/x")
        for m in range(3, 11)]
recs.append(ProductRecord.from_id("L1C_S2A_T31UDS_20180620T105031_ESA", "/x"))
s = schedule(site, Catalogue(recs), dt.date(2018, 10, 20))
print(json.dumps({{"levels": sorted({{j.processor for j in s.jobs}}),
                  "modules": sorted(sys.modules)}}))
"""
    (tmp_path / "parcels.gpkg").write_bytes(b"")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert {"L2A", "L3A", "L3B", "L4A", "L4B"} <= set(got["levels"]), got["levels"]
    heavy = [m for m in got["modules"]
             if m.split(".")[0] in ("numba", "dask", "distributed", "sqlalchemy", "xarray",
                                    "rasterio")
             or m in ("agriseries.io.store", "agriseries.production.jobstore",
                      "agriseries.production.database")]
    assert heavy == []


def _private_cross_imports() -> list[str]:
    """``from X import _y`` / ``import _x`` where X is another package of agriseries (or
    outside it): private names used across packages."""
    bad = []
    for path in SRC.rglob("*.py"):
        pkg = path.relative_to(SRC).parts[0] if len(path.relative_to(SRC).parts) > 1 else ""
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [a.name for a in node.names]
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if not private:
                    continue
                same = node.level == 1 or (node.level > 1 and node.module
                                           and node.module.split(".")[0] == pkg)
                if not same:
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno} {private}")
            elif isinstance(node, ast.Import):
                bad += [f"{path.relative_to(SRC)}:{node.lineno} {a.name}" for a in node.names
                        if a.name.split(".")[-1].startswith("_")
                        and not a.name.split(".")[-1].startswith("__")]
    return bad


def test_no_module_imports_private_names_of_another_package():
    assert _private_cross_imports() == []
    res = subprocess.run(["grep", "-rn", "import _", str(SRC)], capture_output=True, text=True,
                         check=False)
    assert res.stdout == ""


def _private_uses(path: Path) -> list[str]:
    """Private names of agriseries a test or benchmark file reaches: ``from agriseries.x
    import _y``, and ``m._y`` where ``m`` is an agriseries module it imported."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agriseries"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{path.name}:{node.lineno} {node.module}.{a.name}")
                else:  # a submodule imported by name (from agriseries.l2a import cloudmask)
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names
                        if a.name.startswith("agriseries") and a.asname}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            bad.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return bad


def test_tests_and_benchmarks_use_public_names_only():
    root = SRC.parent.parent
    files = sorted((root / "tests").glob("*.py")) + sorted((root / "benchmarks").glob("*.py"))
    assert [b for f in files for b in _private_uses(f)] == []


def test_optional_dependency_errors_name_extras_that_exist():
    """Every ``OptionalDependencyError(module, extra)`` / ``optional_import(module, extra)``
    in the package names an extra of pyproject.toml, and the heavy optional parts are not
    core dependencies."""
    import tomllib

    meta = tomllib.loads((SRC.parent.parent / "pyproject.toml").read_text())["project"]
    extras = set(meta["optional-dependencies"])
    named = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in
                    ("OptionalDependencyError", "optional_import") and len(node.args) == 2
                    and isinstance(node.args[1], ast.Constant)):
                named.append((f"{path.relative_to(SRC)}:{node.lineno}", node.args[1].value))
    assert named and [n for n in named if n[1] not in extras] == []
    core = " ".join(meta["dependencies"])
    for heavy in ("scikit-learn", "lightgbm", "matplotlib", "scikit-image", "psycopg"):
        assert heavy not in core
