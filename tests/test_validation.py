"""Validation metrics and reports (docs/validation.md; agriseries.validation).

Expected values are literal numbers computed by hand (the arithmetic is written out
next to each), the published numbers of Olofsson et al. (2014), or counts that follow
from a known perturbation of real WorldCereal labels.
"""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest
import rasterio
from affine import Affine

from agriseries.core.errors import ConfigurationError, InputProductError
from agriseries.validation import (
    accuracy_report,
    area_adjusted_from_matrix,
    confusion_matrix,
    validate_map,
    write_report,
)

# ----------------------------------------------------------------------------- helpers


def _samples(matrix, labels):
    """Sample arrays (map, reference) realising a count matrix (rows = map)."""
    y_map, y_ref = [], []
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            y_map += [a] * matrix[i][j]
            y_ref += [b] * matrix[i][j]
    return np.array(y_map), np.array(y_ref)


# the 3-class example used by several tests (rows = map class 1, 2, 3)
M3 = [[45, 3, 2],
      [5, 24, 1],
      [10, 3, 7]]


# ----------------------------------------------------------------------------- basic metrics


def test_confusion_matrix_rows_are_map_columns_are_reference():
    y_map = [1, 1, 2, 3, 3, 3]
    y_ref = [1, 2, 2, 3, 1, 1]
    m = confusion_matrix(y_map, y_ref)
    # map 1: ref 1 once, ref 2 once; map 2: ref 2 once; map 3: ref 3 once, ref 1 twice
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [2, 0, 1]]
    # explicit label order (and a label absent from the data) reorders rows and columns
    m = confusion_matrix(y_map, y_ref, labels=[3, 2, 1, 7])
    assert m.tolist() == [[1, 0, 2, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    # integral floats are the same classes as ints; 2-D inputs are flattened
    m2 = confusion_matrix(np.array(y_map, float).reshape(2, 3), np.array(y_ref).reshape(2, 3))
    assert m2.tolist() == [[1, 1, 0], [0, 1, 0], [2, 0, 1]]


def test_three_class_hand_computation():
    """M3: n = 100, n_i. = 50, 30, 20; n_.j = 45+5+10 = 60, 3+24+3 = 30, 2+1+7 = 10."""
    y_map, y_ref = _samples(M3, [1, 2, 3])
    r = accuracy_report(y_map, y_ref, class_names=["wheat", "maize", "grass"])
    assert r.matrix.tolist() == M3
    assert r.n == 100
    assert r.map_totals.tolist() == [50, 30, 20]
    assert r.reference_totals.tolist() == [60, 30, 10]
    assert r.oa == pytest.approx((45 + 24 + 7) / 100)                 # 0.76
    # p_e = (50*60 + 30*30 + 20*10) / 100^2 = 0.41; kappa = (0.76-0.41)/(1-0.41)
    assert r.kappa == pytest.approx(0.35 / 0.59)                      # 0.5932
    np.testing.assert_allclose(r.ua, [45 / 50, 24 / 30, 7 / 20])      # 0.9, 0.8, 0.35
    np.testing.assert_allclose(r.pa, [45 / 60, 24 / 30, 7 / 10])      # 0.75, 0.8, 0.7
    np.testing.assert_allclose(r.commission, [0.1, 0.2, 0.65])
    np.testing.assert_allclose(r.omission, [0.25, 0.2, 0.3])
    # F1 = 2 n_ii / (n_i. + n_.i): 90/110, 48/60, 14/30
    np.testing.assert_allclose(r.f1, [90 / 110, 0.8, 14 / 30])
    assert r.macro_f1 == pytest.approx((90 / 110 + 0.8 + 14 / 30) / 3)  # 0.69495
    assert r.area_adjusted is None
    assert [c["name"] for c in r.per_class()] == ["wheat", "maize", "grass"]


def test_binary_kappa_hand_computation():
    """[[20, 5], [10, 15]]: OA = 35/50 = 0.7; p_e = (25*30 + 25*20)/50^2 = 0.5; kappa 0.4."""
    y_map, y_ref = _samples([[20, 5], [10, 15]], ["crop", "no crop"])
    r = accuracy_report(y_map, y_ref)
    assert r.labels == ["crop", "no crop"]
    assert r.oa == pytest.approx(0.7)
    assert r.kappa == pytest.approx(0.4)
    np.testing.assert_allclose(r.ua, [20 / 25, 15 / 25])
    np.testing.assert_allclose(r.pa, [20 / 30, 15 / 20])


def test_area_adjusted_hand_computation():
    """M3 with mapped areas 600, 300, 100 (W = 0.6, 0.3, 0.1), by hand:

    p_ij = W_i n_ij / n_i.:  row 1 0.6*[45,3,2]/50 = [0.54, 0.036, 0.024]
                             row 2 0.3*[5,24,1]/30 = [0.05, 0.24, 0.01]
                             row 3 0.1*[10,3,7]/20 = [0.05, 0.015, 0.035]
    p_.j = [0.64, 0.291, 0.069]; OA = 0.54 + 0.24 + 0.035 = 0.815.
    """
    y_map, y_ref = _samples(M3, [1, 2, 3])
    r = accuracy_report(y_map, y_ref, mapped_areas={1: 600, 2: 300, 3: 100})
    aa = r.area_adjusted
    np.testing.assert_allclose(aa.weights, [0.6, 0.3, 0.1])
    np.testing.assert_allclose(aa.proportions, [[0.54, 0.036, 0.024],
                                                [0.05, 0.24, 0.01],
                                                [0.05, 0.015, 0.035]], atol=1e-12)
    np.testing.assert_allclose(aa.area_proportion, [0.64, 0.291, 0.069])
    np.testing.assert_allclose(aa.area, [640, 291, 69])
    assert aa.oa == pytest.approx(0.815)
    np.testing.assert_allclose(aa.ua, [0.9, 0.8, 0.35])
    np.testing.assert_allclose(aa.pa, [0.54 / 0.64, 0.24 / 0.291, 0.035 / 0.069])
    # V(OA) = sum W_i^2 UA_i (1-UA_i) / (n_i. - 1)
    v_oa = 0.36 * 0.9 * 0.1 / 49 + 0.09 * 0.8 * 0.2 / 29 + 0.01 * 0.35 * 0.65 / 19
    assert aa.oa_se == pytest.approx(math.sqrt(v_oa))                # 0.035742
    assert aa.oa_ci == pytest.approx(1.96 * math.sqrt(v_oa))
    # V(UA_3) = 0.35 * 0.65 / 19
    assert aa.ua_se[2] == pytest.approx(math.sqrt(0.35 * 0.65 / 19))
    # V(p_.1) = sum_i W_i^2 f_i1 (1 - f_i1) / (n_i. - 1), f_11 = 0.9, f_21 = 1/6, f_31 = 0.5
    v_p1 = 0.36 * 0.9 * 0.1 / 49 + 0.09 * (1 / 6) * (5 / 6) / 29 + 0.01 * 0.5 * 0.5 / 19
    assert aa.area_proportion_se[0] == pytest.approx(math.sqrt(v_p1))  # 0.034983
    assert aa.area_se[0] == pytest.approx(1000 * math.sqrt(v_p1))
    assert aa.area_ci[0] == pytest.approx(1.96 * 1000 * math.sqrt(v_p1))
    # V(PA_3) = [W_3^2 (1-PA_3)^2 UA_3(1-UA_3)/(n_3.-1)
    #            + PA_3^2 (W_1^2 f_13(1-f_13)/(n_1.-1) + W_2^2 f_23(1-f_23)/(n_2.-1))] / p_.3^2
    # with f_13 = 2/50 = 0.04, f_23 = 1/30
    pa3 = 0.035 / 0.069
    v_pa3 = (0.01 * (1 - pa3) ** 2 * 0.35 * 0.65 / 19
             + pa3 ** 2 * (0.36 * 0.04 * 0.96 / 49 + 0.09 * (1 / 30) * (29 / 30) / 29)) / 0.069 ** 2
    assert aa.pa_se[2] == pytest.approx(math.sqrt(v_pa3))
    # the same from the count matrix directly, with pixel counts and a pixel area
    direct = area_adjusted_from_matrix(M3, [6, 3, 1], pixel_area=100.0)
    np.testing.assert_allclose(direct.area, [640, 291, 69])
    assert direct.area_unit == "m²"


def test_olofsson_2014_worked_example():
    """Olofsson et al. (2014), RSE 148:42-57, worked example: Tables 8 and 9, p. 54.

    Input (Table 8): sample counts, rows = map strata deforestation, forest gain, stable
    forest, stable non-forest: [66 0 5 4], [0 55 8 12], [1 0 153 11], [2 1 9 313];
    mapped areas 200,000 / 150,000 / 3,200,000 / 6,450,000 Landsat pixels of 30 m
    (0.09 ha). (The matrix and areas were cross-checked with the example in the R
    package mapaccuracy, man/olofsson.Rd.)

    Published results, checked to the published rounding (half a unit of the last
    printed digit):
    * Table 9, estimated area proportions p_ij to 4 decimals;
    * p. 54: areas 21,158 +/- 6158 ha (deforestation), 11,686 +/- 3756 ha (forest gain),
      285,770 +/- 15,510 ha (stable forest), 581,386 +/- 16,282 ha (stable non-forest);
    * p. 54: UA 0.88 +/- 0.07, 0.73 +/- 0.10, 0.93 +/- 0.04, 0.96 +/- 0.02;
      PA 0.75 +/- 0.21, 0.85, 0.93 +/- 0.03, 0.96; OA 0.95 +/- 0.02.
    The paper prints PA half-widths 0.23 (forest gain) and 0.01 (stable non-forest);
    its own estimator of V(PA_j) gives 0.254 and 0.018, the values that two independent
    implementations also obtain (R mapaccuracy by H. Costa, whose example compares to
    p. 54 "(differences due to number rounding)", and PyMapAccuracy: 0.2544, 0.0184),
    so those two are checked against 0.2544 and 0.0184.
    """
    names = ["deforestation", "forest gain", "stable forest", "stable non-forest"]
    counts = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
    pixels = {"deforestation": 200_000, "forest gain": 150_000,
              "stable forest": 3_200_000, "stable non-forest": 6_450_000}
    y_map, y_ref = _samples(counts, names)
    r = accuracy_report(y_map, y_ref, labels=names, mapped_areas=pixels, pixel_area=0.09,
                        area_unit="ha")
    aa = r.area_adjusted
    assert r.matrix.tolist() == counts
    table9 = [[0.0176, 0.0000, 0.0013, 0.0011],
              [0.0000, 0.0110, 0.0016, 0.0024],
              [0.0019, 0.0000, 0.2967, 0.0213],
              [0.0040, 0.0020, 0.0179, 0.6212]]
    np.testing.assert_allclose(aa.proportions, table9, atol=0.00005)
    np.testing.assert_allclose(aa.area, [21_158, 11_686, 285_770, 581_386], atol=0.5)
    np.testing.assert_allclose(aa.area_ci, [6158, 3756, 15_510, 16_282], atol=0.5)
    np.testing.assert_allclose(aa.ua, [0.88, 0.73, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(aa.ua_ci, [0.07, 0.10, 0.04, 0.02], atol=0.005)
    np.testing.assert_allclose(aa.pa, [0.75, 0.85, 0.93, 0.96], atol=0.005)
    np.testing.assert_allclose(aa.pa_ci[[0, 2]], [0.21, 0.03], atol=0.005)
    np.testing.assert_allclose(aa.pa_ci[[1, 3]], [0.2544, 0.0184], atol=0.0001)
    assert aa.oa == pytest.approx(0.95, abs=0.005)
    assert aa.oa_ci == pytest.approx(0.02, abs=0.005)
    # OA = sum of the diagonal of Table 9: 0.0176 + 0.0110 + 0.2967 + 0.6212 = 0.9465
    assert aa.oa == pytest.approx(0.9465, abs=0.0002)
    assert aa.total_area == pytest.approx(10_000_000 * 0.09)
    # the count-matrix entry point gives the same estimates
    direct = area_adjusted_from_matrix(counts, list(pixels.values()), pixel_area=0.09)
    np.testing.assert_allclose(direct.area, aa.area)
    np.testing.assert_allclose(direct.pa_se, aa.pa_se)


# ----------------------------------------------------------------------------- edge cases


def test_classes_absent_from_map_or_reference_give_nan_not_errors():
    # class 3 never mapped, class 4 never in the reference
    r = accuracy_report([1, 1, 2, 4], [1, 2, 3, 2])
    assert r.labels == [1, 2, 3, 4]
    assert math.isnan(r.ua[2]) and r.pa[2] == 0.0
    assert math.isnan(r.pa[3]) and r.ua[3] == 0.0
    assert r.f1[2] == 0.0 and r.f1[3] == 0.0     # 2 n_ii / (n_i. + n_.i) with n_ii = 0
    assert any("never mapped" in n for n in r.notes)
    assert any("absent from the reference" in n for n in r.notes)
    # a label absent from both sides: every per-class figure undefined, left out of macro F1
    r = accuracy_report([1, 2], [1, 2], labels=[1, 2, 9])
    assert np.isnan([r.ua[2], r.pa[2], r.f1[2]]).all()
    assert r.macro_f1 == 1.0


def test_single_sample_stratum_and_unsampled_stratum():
    # stratum 2 has one sample -> variances involving it are NaN, with a note
    counts = [[9, 1], [0, 1]]
    y_map, y_ref = _samples(counts, [1, 2])
    aa = accuracy_report(y_map, y_ref, mapped_areas=[80, 20]).area_adjusted
    assert aa.oa == pytest.approx(0.8 * 0.9 + 0.2 * 1.0)
    assert math.isnan(aa.oa_se) and math.isnan(aa.ua_se[1])
    assert aa.ua_se[0] == pytest.approx(math.sqrt(0.9 * 0.1 / 9))   # n_1. = 10
    assert any("single sample" in n for n in aa.notes)
    # stratum 3 has mapped area but no sample: left out, estimates over strata 1-2 only
    y_map, y_ref = _samples([[45, 5], [10, 40]], [1, 2])
    aa = accuracy_report(y_map, y_ref, mapped_areas={1: 500, 2: 300, 3: 200}).area_adjusted
    assert aa.total_area == 800 and aa.excluded_area == 200
    # W = 500/800, 300/800: p_.1 = 0.625*0.9 + 0.375*0.2 = 0.6375
    assert aa.area_proportion[0] == pytest.approx(0.6375)
    assert aa.area[0] == pytest.approx(800 * 0.6375)
    assert math.isnan(aa.ua[2]) and aa.area[2] == 0.0
    assert np.isnan(aa.proportions[2]).all()
    assert any("no sample" in n for n in aa.notes)


def test_label_and_argument_mismatches_are_configuration_errors():
    with pytest.raises(ConfigurationError, match=r"not in `labels`: \[5\]"):
        accuracy_report([1, 2, 5], [1, 2, 2], labels=[1, 2])
    with pytest.raises(ConfigurationError, match="same number of samples"):
        accuracy_report([1, 2, 3], [1, 2])
    with pytest.raises(ConfigurationError, match="class_names has 1 names for 2 labels"):
        accuracy_report([1, 2], [1, 2], class_names=["a"])
    with pytest.raises(ConfigurationError, match="different kinds"):
        accuracy_report([1, 2], ["a", "b"])
    with pytest.raises(ConfigurationError, match="mapped_areas has 3 values for 2"):
        area_adjusted_from_matrix([[1, 0], [0, 1]], [1, 2, 3])
    with pytest.raises(ConfigurationError, match="not in the labels"):
        accuracy_report([1, 2], [1, 2], labels=[1, 2], mapped_areas={1: 5, 7: 3})
    with pytest.raises(ConfigurationError, match="non-integral"):
        accuracy_report([1.5, 2], [1, 2])


def test_nan_samples_are_dropped_and_empty_input_is_undefined():
    r = accuracy_report([1.0, np.nan, 2.0], [1, 1, np.nan])
    assert r.n == 1 and r.oa == 1.0
    assert any("NaN" in n for n in r.notes)
    r = accuracy_report([], [], labels=[1, 2])
    assert r.n == 0 and math.isnan(r.oa) and math.isnan(r.kappa)
    json.dumps(r.to_dict(), allow_nan=False)


# ----------------------------------------------------------------------------- reports


def test_write_report_files(tmp_path):
    y_map, y_ref = _samples(M3, [1, 2, 3])
    r = accuracy_report(np.append(y_map, 4), np.append(y_ref, 1),  # class 4: no reference
                        class_names=["wheat", "maize", "grass", "<fallow>"],
                        mapped_areas=[6, 3, 1, 1], pixel_area=100.0)
    paths = write_report(r, tmp_path / "sub" / "l4b", title="Crop type 2018")
    assert set(paths) == {"json", "md", "html", "png"}
    assert paths["png"].name == "l4b_confusion.png"
    doc = json.loads(paths["json"].read_text())
    assert doc["title"] == "Crop type 2018"
    assert doc["confusion_matrix"]["counts"][0] == [45, 3, 2, 0]
    assert doc["classes"][3]["pa"] is None                     # NaN written as null
    assert doc["area_adjusted"]["area_unit"] == "m²"
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    # wheat: reference total 60 + 1 (the extra sample): PA 45/61, F1 90/111
    assert "| wheat | 1 | 50 | 61 | 0.900 | 0.738 | 0.811 | 0.100 | 0.262 |" in md
    assert "](l4b_confusion.png)" in md
    html = paths["html"].read_text()
    assert "&lt;fallow&gt;" in html and "<fallow>" not in html
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    assert base64.b64decode(embedded) == png
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "l4b.html", "l4b.json", "l4b.md", "l4b_confusion.png"]  # no temporary file left


# ----------------------------------------------------------------------------- real map

LC_CODES = [11, 13, 60, 99]
LC_COUNTS = [1401, 835, 107, 1753]   # pixels of each LC class in the 64 x 64 patch


@pytest.fixture(scope="module")
def lc_label(data_dir):
    """WorldCereal LC labels (Flanders 2018, 64 x 64 px at 10 m, EPSG:32631) and grid."""
    import xarray as xr

    path = data_dir / "worldcereal" / \
        "OUTPUT_POLY-110_10m_00002806639B424A_32631_2017-08-01_2018-11-30.nc"
    with xr.open_dataset(path) as ds:
        lc = ds["LC"].values.astype(np.uint8)
        x0, y0 = float(ds.x[0]), float(ds.y[0])
    transform = Affine(10.0, 0.0, x0 - 5.0, 0.0, -10.0, y0 + 5.0)
    codes, counts = np.unique(lc, return_counts=True)
    assert codes.tolist() == LC_CODES and counts.tolist() == LC_COUNTS
    return lc, transform


def _write_tif(path, arr, transform, crs="EPSG:32631", nodata=None):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0],
                       count=1, dtype=arr.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(arr, 1)
    return path


def _first(mask, k):
    """Row/column indices of the first k True pixels in raster order."""
    rows, cols = np.nonzero(mask)
    return rows[:k], cols[:k]


def test_raster_reference_same_grid_and_other_grid(tmp_path, lc_label):
    """Map = LC with the first 10 class-99 pixels set to no-data (0); reference = LC with
    the first 50 class-11 pixels relabelled 13. Expected (rows = map 11, 13, 60, 99):
    [[1401-50, 50, 0, 0], [0, 835, 0, 0], [0, 0, 107, 0], [0, 0, 0, 1753-10]]."""
    lc, transform = lc_label
    m = lc.copy()
    m[_first(lc == 99, 10)] = 0
    ref = lc.copy()
    ref[_first(lc == 11, 50)] = 13
    map_path = _write_tif(tmp_path / "map.tif", m, transform, nodata=0)
    expected = [[1351, 50, 0, 0], [0, 835, 0, 0], [0, 0, 107, 0], [0, 0, 0, 1743]]

    r = validate_map(map_path, _write_tif(tmp_path / "ref.tif", ref, transform))
    assert r.labels == LC_CODES
    assert r.matrix.tolist() == expected
    assert r.n == 4086 and r.oa == pytest.approx(4036 / 4086)
    assert r.metadata["reference_reprojected"] is False
    # mapped areas: map pixel counts (no-data excluded) x 100 m^2
    np.testing.assert_allclose(r.area_adjusted.mapped_area, [140_100, 83_500, 10_700, 174_300])
    assert r.area_adjusted.area_unit == "m²"

    # the same reference on another grid: 3 px of no-data (255) around it, origin moved
    padded = np.pad(ref, 3, constant_values=255)
    shifted = Affine(10.0, 0.0, transform.c - 30, 0.0, -10.0, transform.f + 30)
    r2 = validate_map(map_path, _write_tif(tmp_path / "ref_pad.tif", padded, shifted, nodata=255),
                      window=16)
    assert r2.metadata["reference_reprojected"] is True
    assert r2.matrix.tolist() == expected

    # strata from another raster: LC with a 3 px border of class 13 (70^2 - 64^2 = 804 px)
    strata = _write_tif(tmp_path / "strata.tif", np.pad(lc, 3, constant_values=13), shifted)
    r3 = validate_map(map_path, tmp_path / "ref.tif", strata_path=strata)
    np.testing.assert_allclose(r3.area_adjusted.mapped_area,
                               [140_100, (835 + 804) * 100, 10_700, 175_300])
    assert r3.matrix.tolist() == expected


@pytest.fixture(scope="module")
def lc_polygons(lc_label, tmp_path_factory):
    """The largest LC region of each class as polygons, written to a GeoPackage in
    EPSG:4326 (field ``lc``), with their areas in pixels from shapely (in UTM)."""
    import pyogrio.raw
    import shapely
    from pyproj import Transformer
    from rasterio.features import shapes

    lc, transform = lc_label
    best = {}
    for geom, value in shapes(lc, transform=transform):
        poly = shapely.geometry.shape(geom)
        if poly.area > best.get(int(value), (None, 0))[1]:
            best[int(value)] = (poly, poly.area)
    codes = sorted(best)
    polys = [best[c][0] for c in codes]
    pixels = [round(p.area / 100.0) for p in polys]
    assert pixels == [752, 382, 56, 1582]  # largest region of 11, 13, 60, 99
    tr = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    geo = shapely.transform(np.array(polys, object),
                            lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    path = tmp_path_factory.mktemp("vec") / "reference.gpkg"
    pyogrio.raw.write(path, shapely.to_wkb(geo), [np.array(codes, np.int32),
                                                   np.array([f"c{c}" for c in codes])],
                      ["lc", "name"], geometry_type="Polygon", crs="EPSG:4326", driver="GPKG")
    return path, polys, codes


def test_vector_reference_counts(tmp_path, lc_label, lc_polygons):
    """Map = LC with 7 pixels inside the class-11 polygon relabelled 13. Expected
    (rows = map 11, 13, 60, 99): [[752-7, 0, 0, 0], [7, 382, 0, 0], [0, 0, 56, 0],
    [0, 0, 0, 1582]]; mapped areas = map class counts (1401-7, 835+7, 107, 1753) x 100."""
    from rasterio.features import geometry_mask

    lc, transform = lc_label
    gpkg, polys, codes = lc_polygons
    inside = geometry_mask([polys[0]], lc.shape, transform, invert=True)
    m = lc.copy()
    m[_first(inside, 7)] = 13
    map_path = _write_tif(tmp_path / "map.tif", m, transform)
    expected = [[745, 0, 0, 0], [7, 382, 0, 0], [0, 0, 56, 0], [0, 0, 0, 1582]]
    for window in (1024, 16):  # one window, and 16 windows the polygons straddle
        r = validate_map(map_path, gpkg, class_field="lc", window=window)
        assert r.matrix.tolist() == expected
    assert r.metadata["reference_kind"] == "vector" and r.metadata["reference_reprojected"]
    np.testing.assert_allclose(r.area_adjusted.mapped_area,
                               [139_400, 84_200, 10_700, 175_300])
    assert any("cluster sample" in n for n in r.notes)
    # class names in the vector: mapped through labels/class_names
    r = validate_map(map_path, gpkg, class_field="name", labels=codes,
                     class_names=[f"c{c}" for c in codes])
    assert r.matrix.tolist() == expected


def test_map_validation_errors_name_the_file(tmp_path, lc_label, lc_polygons):
    import pyogrio.raw
    import shapely

    lc, transform = lc_label
    gpkg, _, _ = lc_polygons
    map_path = _write_tif(tmp_path / "map.tif", lc, transform)
    with pytest.raises(InputProductError, match=r"reference\.gpkg.*no field 'crop'"):
        validate_map(map_path, gpkg, class_field="crop")
    with pytest.raises(InputProductError, match=r"reference\.gpkg.*class field must be given"):
        validate_map(map_path, gpkg)
    far = tmp_path / "far.gpkg"   # a field in Spain, far from the Flanders map
    pyogrio.raw.write(far, shapely.to_wkb(np.array([shapely.box(-4.0, 40.0, -3.99, 40.01)])),
                      [np.array([11], np.int32)], ["lc"], geometry_type="Polygon",
                      crs="EPSG:4326", driver="GPKG")
    with pytest.raises(InputProductError, match=r"far\.gpkg: does not overlap the map"):
        validate_map(map_path, far, class_field="lc")
    bad = tmp_path / "broken.tif"
    bad.write_bytes(map_path.read_bytes()[:300])   # truncated GeoTIFF
    with pytest.raises(InputProductError, match=r"broken\.tif"):
        validate_map(bad, gpkg, class_field="lc")
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage")
    with pytest.raises(InputProductError, match=r"junk\.gpkg: cannot be read as a vector"):
        validate_map(map_path, junk, class_field="lc")
    with pytest.raises(InputProductError, match=r"map\.tif: the map holds classes \[60, 99\]"):
        validate_map(map_path, gpkg, class_field="lc", labels=[11, 13])


# ----------------------------------------------------------------------------- command line


def test_validate_command(tmp_path, lc_label, lc_polygons):
    from click.testing import CliRunner

    from agriseries.validation.cli import validate

    lc, transform = lc_label
    gpkg, _, _ = lc_polygons
    map_path = _write_tif(tmp_path / "map.tif", lc, transform)
    stem = tmp_path / "out" / "lc"
    runner = CliRunner()
    res = runner.invoke(validate, [str(map_path), str(gpkg), "--class-field", "lc",
                                   "--classes", "11=annual cropland,13=grassland,60=c60,99=other",
                                   "--out", str(stem)])
    assert res.exit_code == 0, res.output
    assert "annual cropland" in res.output and "OA = 1.000" in res.output
    for suffix in (".json", ".md", ".html", "_confusion.png"):
        assert (tmp_path / "out" / f"lc{suffix}").is_file()
    res = runner.invoke(validate, [str(map_path), str(gpkg), "--class-field", "lc",
                                   "--out", str(stem), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["confusion_matrix"]["counts"] == [[752, 0, 0, 0], [0, 382, 0, 0],
                                                 [0, 0, 56, 0], [0, 0, 0, 1582]]
    assert doc["files"]["html"].endswith("lc.html")
    res = runner.invoke(validate, [str(map_path), str(gpkg), "--class-field", "crop",
                                   "--out", str(stem)])
    assert res.exit_code == 1 and "reference.gpkg" in res.output and "'crop'" in res.output
