"""Site-level crop models on two tiles of real data (agriseries.crop.site, croptrain, --model).

Real data: the WorldCereal Flanders patches of tests/data/worldcereal, ingested as L2A
products (one date in three): 2018 on tile 31UDS (10 m + 20 m files) and 2019 on tile
31UES (its 20 m file: upstream has no 10 m one), with their LPIS parcels
(tests/data/crop/worldcereal_parcels*.gpkg). The features are the ``20m`` set, the one
both tiles have.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agriseries.core.errors import ConfigurationError, InputProductError
from agriseries.core.stac import validate_item
from agriseries.crop.classifier import ClassifierParams
from agriseries.crop.cli import croptrain_cmd, cropmask_cmd
from agriseries.crop.features import SeriesParams
from agriseries.crop.processor import CropMaskParams, cropmask, croptype, load_season
from agriseries.crop.samples import rasterize_polygons, read_polygons
from agriseries.crop.site import TrainingUnit, load_site_model, train_site_model
from agriseries.io.ingest import ingest_series
from agriseries.io.store import ProductStore
from agriseries.io.timeseries import read_timeseries

DATA = Path(__file__).parent / "data"
WC = DATA / "worldcereal"
T18 = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
S2_19 = WC / "2019" / "S2_L2A_20m_000028085BF08E7E_32631_2018-08-01_2019-11-30.nc"
P18 = DATA / "crop" / "worldcereal_parcels.gpkg"
P19 = DATA / "crop" / "worldcereal_parcels_2019.gpkg"
S18 = ("2018-03-01", "2018-10-31")
S19 = ("2019-03-01", "2019-10-31")
PARAMS = CropMaskParams(series=SeriesParams(feature_set="20m"),
                        classifier=ClassifierParams(n_trees=30, n_jobs=1))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ProductStore:
    st = ProductStore(tmp_path_factory.mktemp("site_store"))
    parts = [(str(WC / f"S2_L2A_{r}_{T18}"),
              read_timeseries(WC / f"S2_L2A_{r}_{T18}").isel(time=slice(0, None, 3)))
             for r in ("10m", "20m")]
    assert len(ingest_series(parts, st)[0]) == 24
    assert len(ingest_series([(str(S2_19), read_timeseries(S2_19).isel(
        time=slice(0, None, 3)))], st)[0]) == 24
    return st


def test_model_of_one_tile_and_year_maps_the_other(store, tmp_path):
    """Trained on 31UES 2019 only, applied to 31UDS 2018 (every parcel unseen): the honest
    figure the site model reaches where a model of the 2018 patch alone does not
    (docs/accuracy.md: OA 0.63, kappa 0.01 by parcel)."""
    model = tmp_path / "m19.joblib"
    run = CliRunner().invoke(croptrain_cmd, [
        "--store", str(store.root), "--unit", "T31UES", *S19, str(P19), "--out", str(model),
        "--feature-set", "20m", "--trees", "30", "--json"])
    assert run.exit_code == 0, run.output
    summary = json.loads(run.output)
    assert summary["kind"] == "crop_mask" and summary["units"][0]["tile"] == "T31UES"
    run = CliRunner().invoke(cropmask_cmd, [
        "--store", str(store.root), "--tile", "T31UDS", "--season", *S18, "--insitu", str(P18),
        "--model", str(model), "--json"])
    assert run.exit_code == 0, run.output
    res = json.loads(run.output)["products"][0]
    assert res["n_validation"] == 64 * 64  # the model saw none of these polygons
    assert res["oa"] >= 0.78 and res["kappa"] >= 0.45
    item = store.item(res["product"])
    p = item.properties
    assert p["agriseries:site_model"]["units"][0]["tile"] == "T31UES"
    assert "did not train on" in p["agriseries:validation"]["split"]
    validate_item(item)


def test_site_model_of_two_tiles_validates_on_held_out_polygons_only(store):
    units = [TrainingUnit("T31UDS", S18, P18), TrainingUnit("T31UES", S19, P19)]
    model = train_site_model(store, units, params=PARAMS)
    assert [u["tile"] for u in model.units] == ["T31UDS", "T31UES"]
    assert all(u["training_pixels"] > 500 for u in model.units)
    assert set(model.training_polygons) == {str(P18.resolve()), str(P19.resolve())}
    r = cropmask(store, "T31UES", *S19, insitu=P19, model=model, overwrite=True)
    # independently: the pixels of the 2019 polygons the model did not train on
    ds, _ = load_season(store, "T31UES", *S19, ("B05",))
    polys = read_polygons(P19, "CROP")
    index = rasterize_polygons(polys, ds.odc.geobox)
    trained = np.isin(polys.ids, model.training_polygons[str(P19.resolve())])
    assert 0 < trained.sum() < len(polys)
    held_pixels = int((~trained[index[index >= 0]]).sum())
    assert r.n_validation == held_pixels
    assert r.oa is not None and r.kappa is not None


def test_site_model_errors_and_no_validation(store, tmp_path):
    model = train_site_model(store, [TrainingUnit("T31UES", S19, P19)], params=PARAMS)
    path = model.save(tmp_path / "m.joblib")
    # an in-season map has fewer dates than the model was trained on
    with pytest.raises(ConfigurationError, match="differ from the site model"):
        cropmask(store, "T31UDS", *S18, until="2018-06-30", model=path)
    with pytest.raises(ConfigurationError, match="maps crop mask, not crop type"):
        croptype(store, "T31UDS", *S18, model=path)
    with pytest.raises(InputProductError, match="site model"):
        load_site_model(P18)
    with pytest.raises(ConfigurationError, match="same length"):
        train_site_model(store, [TrainingUnit("T31UES", S19, P19),
                                 TrainingUnit("T31UDS", ("2018-03-01", "2018-07-31"), P18)],
                         params=PARAMS)
    # no in-situ data for the tile: the map is made, and says it is not validated
    r = cropmask(store, "T31UDS", *S18, model=path, overwrite=True)
    assert r.made and r.oa is None
    item = store.item(r.product)
    assert item.properties["agriseries:validation"]["split"].startswith("not validated")
    assert "validation_json" not in item.assets
    validate_item(item)


def test_production_l4a_stage_maps_with_the_site_model(store, tmp_path):
    """A site file's products.L4A.model: the L4A job (its JSON parameters from the site, as
    the scheduler writes them) maps the tile with the site model, the site's polygons only
    validate."""
    from agriseries.production.site import site_from_dict
    from agriseries.production.stages import l4a
    from agriseries.production.stages.base import StageContext

    model = train_site_model(store, [TrainingUnit("T31UES", S19, P19)], params=PARAMS)
    path = model.save(tmp_path / "site_mask.joblib")
    site = site_from_dict({"name": "flanders", "area": {"tiles": ["31UDS"]},
                           "season": {"start": S18[0], "end": S18[1]}, "inbox": "inbox",
                           "store": str(store.root), "in_situ": str(P18),
                           "products": {"L4A": {"enabled": True, "model": str(path),
                                                "start": "2018-10-01"}}})
    assert site.l4a_dates() == [np.datetime64(S18[1]).astype(object)]
    params = l4a.L4AJobParams.from_json(
        json.loads(json.dumps({**l4a.job_base(site), "until": S18[1]})))
    assert params.model == str(path)
    pid = "L4A_S2_T31UDS_20180301-20181031_AGS"
    if store.exists(pid):  # made by the other tests of this module: the stage makes it once
        store.remove_product(pid)
    out = l4a.make(StageContext(store, "test", "T31UDS", ()), [], params)
    assert out.products == [(pid, True)]
    item = store.item(pid)
    assert item.properties["agriseries:site_model"]["units"][0]["tile"] == "T31UES"
    assert item.properties["agriseries:validation"]["n"] == 64 * 64
    assert item.properties["agriseries:validation"]["oa"] >= 0.75
