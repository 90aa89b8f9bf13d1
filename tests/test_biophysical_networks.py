"""The S2 Toolbox biophysical networks: files, catalogue, kernel, flags, TestCases replay, CLI.

Real data only: the networks shipped as package data (SNAP s2tbx @33f36f16) and SNAP's own
TestCases files in tests/data/snap_biophysical (see its SOURCE.txt for what they show).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agriseries.biophysical import networks as N
from agriseries.biophysical.networks import BiophysicalFlag as F
from agriseries.cli import main
from agriseries.core.errors import ConfigurationError, CorruptProductError

DATA = Path(__file__).parent / "data" / "snap_biophysical"
CASES = {
    "3_0/S2A/LAI": DATA / "3_0/S2A/LAI/LAI_TestCases",
    "2_1/LAI": DATA / "2_1/LAI/LAI_TestCases",
    "2_1/FAPAR": DATA / "2_1/FAPAR/FAPAR_TestCases",
    "2_1/LAI_Cab": DATA / "2_1/LAI_Cab/LAI_Cab_TestCases",
}
MODELS = ("2_1", "3_0/LANDSAT8", "3_0/S2A", "3_0/S2A_10m", "3_0/S2B", "3_0/S2B_10m")


def _cases(key: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (11, n) and expected values (n,) of a TestCases file."""
    tc = np.loadtxt(CASES[key], delimiter=",")
    return np.ascontiguousarray(tc[:, :-1].T), tc[:, -1]


@pytest.fixture(scope="module")
def s2a_inputs() -> np.ndarray:
    """The 41,472 real input rows of 3_0/S2A/LAI_TestCases, (11, n) float64."""
    return _cases("3_0/S2A/LAI")[0]


def _inputs_for(model: str, x20: np.ndarray) -> np.ndarray:
    """Inputs for a model from 20 m S2 rows: 10 m nets take B03, B04 and B8A standing in for
    B08; Landsat nets take green, red, NIR (B8A), SWIR1, SWIR2."""
    if model.endswith("_10m"):
        return x20[[0, 1, 5, 8, 9, 10]]
    if model.endswith("LANDSAT8"):
        return x20[[0, 1, 5, 6, 7, 8, 9, 10]]
    return x20


# ---------------------------------------------------------------- catalogue and files

def test_catalogue_of_shipped_models():
    models = N.available_models()
    assert tuple(models) == MODELS
    assert N.model_variables(models["3_0/S2A"]) == list(N.VARIABLES)
    assert N.model_variables(models["2_1"]) == list(N.VARIABLES)
    for m in ("3_0/S2A_10m", "3_0/S2B_10m", "3_0/LANDSAT8"):
        assert N.model_variables(models[m]) == ["LAI", "FAPAR", "FCOVER"]
    # the TestCases files are test data, not package data
    assert not list(N.NETWORKS_ROOT.rglob("*_TestCases"))
    assert (N.NETWORKS_ROOT / "SOURCE.txt").read_text().count("33f36f168cf640ca8bcef0a2f7c7aeee906af687")
    names = {m: next(iter(N.load_model(m).values())).input_names for m in MODELS}
    assert names["3_0/S2A"] == names["3_0/S2B"] == names["2_1"] == (
        "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12",
        "cos_view_zenith", "cos_sun_zenith", "cos_relative_azimuth")
    assert names["3_0/S2A_10m"] == ("B03", "B04", "B08") + N.COSINE_INPUTS
    assert names["3_0/LANDSAT8"] == ("B3", "B4", "B5", "B6", "B7") + N.COSINE_INPUTS


def test_read_network_numbers_of_the_spec():
    """The 3_0/S2A and 2_1 LAI numbers read by hand in SNAP's s2tbx auxdata files come back."""
    net = N.load_model("3_0/S2A", ["LAI"])["LAI"]
    assert net.model == "3_0/S2A" and net.variable == "LAI"
    assert (net.n_inputs, net.n_hidden, net.n_bands) == (11, 5, 8)
    assert net.xmin[6] == 0.018931934894415213 and net.xmax[6] == 0.4929337190581187
    assert net.xmin[8] == 0.979624800125421 and net.xmax[10] == 0.9999999998869543
    assert net.w1[0, 0] == -1.4710156196971582 and net.w1[4, 5] == 4.045480239195276
    assert net.b1[4] == 0.00555729948301853
    assert net.w2[3] == 0.6734767487882749 and net.b2 == -0.2889370017570876
    assert (net.ymin, net.ymax) == (0.00023377390882650673, 13.834592547008839)
    assert net.domain_min[4] == 0.009693160430621366 and net.domain_max[7] == 0.4977499217101771
    assert (net.tolerance, net.out_min, net.out_max) == (0.2, 0.0, 8.0)
    assert len(net.domain_grid) == net.domain_keys.size == 2930
    assert not net.w1.flags.writeable

    old = N.load_model("2_1", ["LAI"])["LAI"]
    assert old.b1[0] == 4.96238030555 and old.b2 == 1.09696310708
    assert len(old.domain_grid) == 11039
    assert old.tolerance == 0.2  # stored as -0.2: taken as its absolute value
    assert N.load_model("3_0/S2B", ["LAI_Cw"])["LAI_Cw"].tolerance == 0.015  # stored -0.015
    extremes = {v: (n.tolerance, n.out_min, n.out_max) for v, n in N.load_model("3_0/S2A").items()}
    assert extremes == {"LAI": (0.2, 0, 8), "FAPAR": (0.1, 0, 0.94), "FCOVER": (0.1, 0, 1),
                        "LAI_Cab": (15, 0, 600), "LAI_Cw": (0.015, 0, 0.55)}
    # 2_1/FCOVER ships without definition domain: SNAP then skips the input checks
    fc = N.load_model("2_1", ["FCOVER"])["FCOVER"]
    assert not fc.has_domain and fc.domain_keys.size == 0


def test_packed_keys_are_one_per_tuple():
    for m in MODELS:
        for net in N.load_model(m).values():
            if not net.domain_grid:  # 2_1/FCOVER
                continue
            cells = np.array(sorted(net.domain_grid))
            assert np.unique(N.pack_cells(cells)).size == len(net.domain_grid) == net.domain_keys.size


def test_model_for_sensor_and_resolution(tmp_path):
    assert N.model_for("S2A") == "3_0/S2A"
    assert N.model_for("S2B", 20) == "3_0/S2B"
    assert N.model_for("S2C") == "3_0/S2B"  # no S2C networks: the S2B ones
    assert N.model_for("Sentinel-2C", 10) == "3_0/S2B_10m"
    assert N.model_for("S2A", 10) == "3_0/S2A_10m"
    assert N.model_for("L8") == N.model_for("LC09") == "3_0/LANDSAT8"
    with pytest.raises(ConfigurationError, match="unknown platform"):
        N.model_for("SPOT5")
    # adding a model is dropping a folder in: S2C networks of a newer version win
    root = tmp_path / "nets"
    shutil.copytree(N.NETWORKS_ROOT / "3_0/S2B", root / "3_0/S2B")
    shutil.copytree(N.NETWORKS_ROOT / "3_0/S2B", root / "3_1/S2C")
    assert set(N.available_models(root)) == {"3_0/S2B", "3_1/S2C"}
    assert N.model_for("S2C", root=root) == "3_1/S2C"
    assert N.model_for("S2B", root=root) == "3_0/S2B"
    with pytest.raises(ConfigurationError, match="no biophysical model for S2A"):
        N.model_for("S2A", root=root)


def test_load_model_names_folders_and_errors(tmp_path):
    assert list(N.load_model("S2A")) == list(N.VARIABLES)  # bare name: newest version
    assert next(iter(N.load_model("S2A").values())).model == "3_0/S2A"
    nets = N.load_model("3_0/S2B", ["FCOVER", "LAI"])
    assert list(nets) == ["FCOVER", "LAI"]
    # a user's MODEL_DIR
    shutil.copytree(N.NETWORKS_ROOT / "3_0/S2A_10m/LAI", tmp_path / "mine/LAI")
    mine = N.load_model(tmp_path / "mine")
    assert list(mine) == ["LAI"] and mine["LAI"].model == str((tmp_path / "mine").resolve())
    assert mine["LAI"].input_names == N.S2_10M_INPUTS
    with pytest.raises(ConfigurationError, match="has no network for LAI_Cab; it has LAI, FAPAR"):
        N.load_model("3_0/LANDSAT8", ["LAI", "LAI_Cab"])
    with pytest.raises(ConfigurationError, match="unknown biophysical model 'S3A'"):
        N.load_model("S3A")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="not a model folder"):
        N.load_model(tmp_path / "empty")


def test_inputs_file_names_other_inputs(tmp_path):
    shutil.copytree(N.NETWORKS_ROOT / "3_0/S2A/LAI", tmp_path / "m/LAI")
    (tmp_path / "m/INPUTS").write_text("b3,b4,b5,b6,b7,b8a,b11,b12\ncvz,csz,craa\n")
    assert N.load_model(tmp_path / "m")["LAI"].input_names[-1] == "craa"
    (tmp_path / "m/INPUTS").write_text("b3,b4\n")
    with pytest.raises(ConfigurationError, match="names 2 inputs, the networks have 11"):
        N.load_model(tmp_path / "m")


# ------------------------------------------------------------------- corrupt files

def _edit(path: Path, fn) -> None:
    path.write_text(fn(path.read_text()))


CORRUPTIONS = {
    "missing column": ("LAI_Weights_Layer1_Neurons",
                       lambda t: "\n".join(ln if i != 2 else ln.rsplit(",", 1)[0]
                                           for i, ln in enumerate(t.splitlines())) + "\n",
                       "line 3 has 10 comma-separated values, line 1 has 11"),
    "all rows short": ("LAI_Weights_Layer1_Neurons",
                       lambda t: "\n".join(ln.rsplit(",", 1)[0] for ln in t.splitlines()) + "\n",
                       "expected 11 weights per line"),
    "not a number": ("LAI_Normalisation", lambda t: t.replace("0,0.29172736471507876", "0,abc"),
                     "line 2: 'abc' is not a number"),
    "min > max": ("LAI_Normalisation", lambda t: t.replace("0,0.29172736471507876", "0.3,0.2"),
                  "line 2: max <= min"),
    "bias count": ("LAI_Weights_Layer1_Bias", lambda t: t.rsplit(",", 1)[0],
                   "expected 5 biases"),
    "extreme cases": ("LAI_ExtremeCases", lambda t: "0.2,8\n", "expected one line 'tolerance,min,max'"),
    "grid cell": ("LAI_DefinitionDomain_Grid", lambda t: "12" + t[1:],
                  "line 1: [12.0"),
    "grid width": ("LAI_DefinitionDomain_Grid", lambda t: "\n".join(
        ln + ",3" for ln in t.splitlines()) + "\n", "expected 8 cell indices per line"),
    "empty": ("LAI_Denormalisation", lambda t: "\n", "the file is empty"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_network_file_is_named(tmp_path, case):
    name, fn, message = CORRUPTIONS[case]
    shutil.copytree(N.NETWORKS_ROOT / "3_0/S2A/LAI", tmp_path / "LAI")
    _edit(tmp_path / "LAI" / name, fn)
    with pytest.raises(CorruptProductError) as err:
        N.read_network(tmp_path, "LAI")
    assert err.value.path.endswith(name)
    assert message in str(err.value), str(err.value)


def test_missing_network_file(tmp_path):
    shutil.copytree(N.NETWORKS_ROOT / "3_0/S2A/LAI", tmp_path / "LAI")
    (tmp_path / "LAI/LAI_Weights_Layer2_Bias").unlink()
    with pytest.raises(CorruptProductError, match="LAI_Weights_Layer2_Bias: file not found"):
        N.read_network(tmp_path, "LAI")
    with pytest.raises(ConfigurationError, match="no folder 'FAPAR'; variables there: LAI"):
        N.read_network(tmp_path, "FAPAR")


# ------------------------------------------------------------- TestCases replay

@pytest.mark.parametrize("key", ["3_0/S2A/LAI", "2_1/LAI", "2_1/FAPAR"])
def test_testcases_replay(key):
    """Every row within 1e-4 plus the effect of the 5-digit rounding of its printed inputs,
    and every NaN expectation flagged."""
    rep = N.verify(CASES[key].parent)
    (f,) = rep.files
    x, expected = _cases(key)
    assert f.rows == len(expected) and f.model == key.rsplit("/", 1)[0]
    assert rep.ok and f.rows_out_of_tolerance == 0 and f.max_error_ratio < 0.7
    assert f.nan_not_flagged == 0 and f.nan_expected == int(np.isnan(expected).sum())
    assert f.max_abs_error < 3.5e-4

    net = N.load_model(f.model, [f.variable])[f.variable]
    values, flags = N.evaluate(net, x, mask_out_of_range=False)
    nan = np.isnan(expected)
    if key == "3_0/S2A/LAI":
        assert f.rows == 41472 and f.nan_expected == 20 and f.out_of_domain == 27685
        assert f.rows_above_atol > 7000  # plain 1e-4 is out of reach: the inputs are rounded
        # the NaN rows are exactly the outputs above max + tolerance
        np.testing.assert_array_equal(nan, (flags & F.OUTPUT_TOO_HIGH) != 0)
        assert np.all(values[nan] > 8.2)
    if key == "2_1/FAPAR":
        # NaN rows: above max 0.94 but within the tolerance -> thresholded to 0.94
        np.testing.assert_array_equal(nan, (flags & F.OUTPUT_THRESHOLDED_TO_MAX) != 0)
        assert np.all(values[nan] == np.float32(0.94))
    np.testing.assert_allclose(values[~nan], expected[~nan], rtol=0, atol=3.5e-4)


def test_testcases_2_1_lai_cab_limits_differ_from_the_shipped_ones():
    """2_1/LAI_Cab_TestCases was made with other output limits than its ExtremeCases (0-600):
    its 72 NaN rows are exactly the outputs above ~89-90, which SNAP's rules do not flag."""
    rep = N.verify(CASES["2_1/LAI_Cab"].parent)
    (f,) = rep.files
    assert not rep.ok
    assert f.rows_out_of_tolerance == 0 and f.max_error_ratio < 0.7  # the values agree
    assert f.nan_expected == f.nan_not_flagged == 72
    x, expected = _cases("2_1/LAI_Cab")
    net = N.load_model("2_1", ["LAI_Cab"])["LAI_Cab"]
    values, flags = N.evaluate(net, x, mask_out_of_range=False)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(nan, values > 89.5)
    assert values[~nan].max() < 88.9 and values[nan].min() > 90.0 and not flags.any()


def test_verify_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="no <VAR>/<VAR>_TestCases file found"):
        N.verify(tmp_path)
    (tmp_path / "X1/LAI").mkdir(parents=True)
    shutil.copy(CASES["2_1/LAI"], tmp_path / "X1/LAI/LAI_TestCases")
    with pytest.raises(ConfigurationError, match="no network beside it"):
        N.verify(tmp_path)


@pytest.mark.parametrize("what", ["columns", "degrees", "text"])
def test_corrupt_testcases_file(tmp_path, what):
    dst = tmp_path / "2_1/LAI/LAI_TestCases"
    dst.parent.mkdir(parents=True)
    lines = CASES["2_1/LAI"].read_text().splitlines()
    if what == "columns":
        lines[4] = lines[4].rsplit(",", 1)[0]
        message = "line 5 has 11 values; expected 12"
    elif what == "degrees":
        lines = [",".join(t.split(",")[:8] + ["10.5", "40", "120"] + t.split(",")[11:]) for t in lines]
        message = "angles in degrees"
    else:
        lines[0] = lines[0].replace("0.057979", "O.057979")
        message = "line 1: 'O.057979' is not a number"
    dst.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorruptProductError, match="LAI_TestCases") as err:
        N.verify(tmp_path)
    assert message in str(err.value)


# ------------------------------------------------------------ numba == numpy

@pytest.mark.parametrize("model", MODELS)
def test_numba_kernel_equals_numpy_reference(model, s2a_inputs):
    rng = np.random.default_rng(7)
    x = _inputs_for(model, s2a_inputs[:, ::4]).copy()
    n_bands = x.shape[0] - 3
    # push some pixels out of every range, plus NaN and infinite inputs
    noisy = x[:, :3000] * rng.uniform(0.0, 3.0, (x.shape[0], 3000))
    noisy[n_bands:] = x[n_bands:, :3000]
    x = np.concatenate([x, noisy], axis=1)
    x[2, 10] = np.nan
    x[0, 11] = np.inf
    x[-1, 12] = np.nan
    nets = N.load_model(model)
    for dtype in (np.float64, np.float32):
        xi = x.astype(dtype)
        for mask in (True, False):
            values, flags = N.evaluate_model(nets, xi, mask_out_of_range=mask)
            for j, net in enumerate(nets.values()):
                ref_v, ref_f = N.evaluate_numpy(net, xi, mask_out_of_range=mask)
                np.testing.assert_array_equal(flags[j], ref_f, err_msg=f"{model} {net.variable}")
                np.testing.assert_allclose(values[j], ref_v, rtol=1e-6, atol=1e-6, equal_nan=True)
                assert values.dtype == np.float32 and flags.dtype == np.uint8
    assert np.all(flags[:, 10:13] == F.INPUT_OUT_OF_RANGE) and np.isnan(values[:, 10:13]).all()
    # every flag combination the data produce is covered, out-of-range included
    assert set(np.unique(flags)) >= {0, 1}


def test_evaluate_shapes(s2a_inputs):
    nets = N.load_model("3_0/S2A")
    cube = s2a_inputs[:, :63].reshape(11, 7, 9).astype(np.float32)
    values, flags = N.evaluate_model(nets, cube)
    assert values.shape == flags.shape == (5, 7, 9)
    v1, f1 = N.evaluate(nets["FAPAR"], cube)
    np.testing.assert_array_equal(v1, values[1])
    np.testing.assert_array_equal(f1, flags[1])
    # a non-contiguous view gives the same
    big = np.asfortranarray(s2a_inputs[:, :500])
    np.testing.assert_array_equal(N.evaluate_model(nets, big)[1],
                                  N.evaluate_model(nets, np.ascontiguousarray(big))[1])
    assert N.evaluate_model(nets, np.zeros((11, 0)))[0].shape == (5, 0)
    with pytest.raises(ConfigurationError, match=r"expects 11 layers"):
        N.evaluate(nets["LAI"], cube[:10])
    with pytest.raises(ConfigurationError, match="different inputs"):
        N.evaluate_model([nets["LAI"], N.load_model("3_0/S2A_10m")["LAI"]], cube)


def test_tanh_without_library_call():
    a = np.concatenate([np.linspace(-25, 25, 4001), [0.0, 1e-300, -1e-12, 1e-8, 19.99, 20.01]])
    got = np.array([N.fast_tanh(float(v)) for v in a])
    assert np.abs(got - np.tanh(a)).max() < 1e-14
    assert N.fast_tanh(0.0) == 0.0 and N.fast_tanh(40.0) == 1.0 and N.fast_tanh(-40.0) == -1.0


# ------------------------------------------------------------------------- flags

def _raw(net, x):
    return N.evaluate_numpy(net, x, mask_out_of_range=False, raw=True)[2]


def test_output_flags_on_real_pixels(s2a_inputs):
    """Real pixels inside the definition domain whose output lands in each ExtremeCases band."""
    lai = N.load_model("3_0/S2A", ["LAI"])["LAI"]  # tolerance 0.2, min 0, max 8
    inside = N.in_domain(lai, s2a_inputs)
    y = _raw(lai, s2a_inputs)
    just_above = np.nonzero(inside & (y > 8.0) & (y <= 8.2))[0]
    far_above = np.nonzero(inside & (y > 8.2))[0]
    assert just_above.size and far_above.size
    v, f = N.evaluate(lai, s2a_inputs[:, just_above])
    assert np.all(v == 8.0) and np.all(f == F.OUTPUT_THRESHOLDED_TO_MAX)
    v, f = N.evaluate(lai, s2a_inputs[:, far_above])
    assert np.all(f == F.OUTPUT_TOO_HIGH)
    np.testing.assert_allclose(v, y[far_above], rtol=1e-6)  # value kept
    assert np.all(v > 8.2)

    old = N.load_model("2_1", ["LAI"])["LAI"]  # tolerance |-0.2|, min 0, max 8
    inside = N.in_domain(old, s2a_inputs)
    y = _raw(old, s2a_inputs)
    just_below = np.nonzero(inside & (y < 0.0) & (y >= -0.2))[0]
    far_below = np.nonzero(inside & (y < -0.2))[0]
    assert just_below.size and far_below.size
    v, f = N.evaluate(old, s2a_inputs[:, just_below])
    assert np.all(v == 0.0) and np.all(f == F.OUTPUT_THRESHOLDED_TO_MIN)
    v, f = N.evaluate(old, s2a_inputs[:, far_below])
    assert np.all(f == F.OUTPUT_TOO_LOW) and np.all(v < -0.2)
    ok = np.nonzero(inside & (y >= 0.0) & (y <= 8.0))[0]
    v, f = N.evaluate(old, s2a_inputs[:, ok])
    assert not f.any() and np.all((v >= 0) & (v <= 8))


def test_input_out_of_range_flags(s2a_inputs):
    lai = N.load_model("3_0/S2A", ["LAI"])["LAI"]
    y = _raw(lai, s2a_inputs)
    good = np.nonzero(N.in_domain(lai, s2a_inputs) & (y > 0.5) & (y < 7))[0][:50]
    x = s2a_inputs[:, good].copy()
    assert not N.evaluate(lai, x)[1].any()

    # one band just outside DefinitionDomain_MinMax (B3 above its max, B12 below its min)
    for band, value in ((0, lai.domain_max[0] * (1 + 1e-9)), (7, -1e-6)):
        bad = x.copy()
        bad[band] = value
        v, f = N.evaluate(lai, bad)
        assert np.all(f & F.INPUT_OUT_OF_RANGE) and np.isnan(v).all()
        v2, f2 = N.evaluate(lai, bad, mask_out_of_range=False)
        np.testing.assert_array_equal(f2, f)
        assert np.isfinite(v2).all()  # SNAP's operator keeps the network value
        assert not N.in_domain(lai, bad).any()
    # a cosine out of its Normalisation range is not an input range error (as SNAP)
    odd = x.copy()
    odd[8] = 0.5
    assert not (N.evaluate(lai, odd)[1] & F.INPUT_OUT_OF_RANGE).any()

    # every band within its range but the tuple of cells not a row of the grid
    lo, hi = lai.domain_min, lai.domain_max
    cells = np.floor(10 * (x[:8] - lo[:, None]) / (hi - lo)[:, None] + 1).astype(int)
    moved = []
    for p in range(x.shape[1]):
        for c in range(1, 11):
            t = cells[:, p].copy()
            t[5] = c  # B8A moved to cell c
            if tuple(t) not in lai.domain_grid:
                col = x[:, p].copy()
                col[5] = lo[5] + (c - 0.5) / 10 * (hi[5] - lo[5])
                moved.append(col)
                break
    moved = np.array(moved).T
    assert moved.shape[1] > 40
    v, f = N.evaluate(lai, moved)
    assert np.all(f & F.INPUT_OUT_OF_RANGE) and np.isnan(v).all()
    assert not N.in_domain(lai, moved).any()

    # NaN and infinite inputs: NaN, INPUT_OUT_OF_RANGE only
    gaps = x[:, :3].copy()
    gaps[4, 0] = np.nan
    gaps[9, 1] = np.nan
    gaps[2, 2] = -np.inf
    for fn in (N.evaluate, N.evaluate_numpy):
        v, f = fn(lai, gaps, mask_out_of_range=False)
        assert np.isnan(v).all() and np.all(f == F.INPUT_OUT_OF_RANGE)


def test_network_without_domain_checks_nothing(s2a_inputs):
    fc = N.load_model("2_1", ["FCOVER"])["FCOVER"]
    x = s2a_inputs[:, :2000] * 5.0
    x[8:] = s2a_inputs[8:, :2000]
    f = N.evaluate(fc, x)[1]
    assert not (f & F.INPUT_OUT_OF_RANGE).any() and N.in_domain(fc, x).all()


def test_cells_are_compared_as_tuples():
    """Cells run 1..10 (11 for a band exactly at its maximum). Keys made of decimal digits
    confuse tuples: the number sum c_j 10^(7-j) of (a, 11, ...) is that of (a+1, 1, ...),
    the strings of (1, 11, ...) and (11, 1, ...) are equal. Tuples (packed 4 bits per band)
    keep them apart; rows holding a 10 are found."""
    net = N.load_model("2_1", ["LAI"])["LAI"]
    lo, hi = net.domain_min, net.domain_max

    def pixels(tuples):
        t = np.array(tuples, dtype=float).T  # (8, n) cells -> cell centres, 11 -> the maximum
        x = np.where(t == 11, hi[:, None], lo[:, None] + (t - 0.5) / 10 * (hi - lo)[:, None])
        return np.vstack([x, np.tile([[0.99], [0.8], [0.5]], x.shape[1])])

    def decimal(t):
        return sum(int(c) * 10 ** (7 - j) for j, c in enumerate(t))

    with_ten = [t for t in sorted(net.domain_grid) if 10 in t]
    assert len(with_ten) > 100
    x = pixels(with_ten)
    assert N.in_domain(net, x).all()
    assert not (N.evaluate(net, x)[1] & F.INPUT_OUT_OF_RANGE).any()

    # pixels at a band maximum (cell 11) whose decimal key is that of a grid row
    aliases = []
    for t in sorted(net.domain_grid):
        for j in range(7):
            if t[j] >= 2 and t[j + 1] == 1:
                a = list(t)
                a[j], a[j + 1] = t[j] - 1, 11
                a = tuple(a)
                if a not in net.domain_grid:
                    assert decimal(a) == decimal(t)  # the ambiguity
                    aliases.append(a)
                break
    assert len(aliases) > 100
    x = pixels(aliases)
    cells = np.floor(10 * (x[:8] - lo[:, None]) / (hi - lo)[:, None] + 1).astype(int).T
    assert [tuple(c) for c in cells] == aliases
    assert not N.in_domain(net, x).any()
    assert np.all(N.evaluate(net, x)[1] & F.INPUT_OUT_OF_RANGE)
    assert np.all(N.evaluate_numpy(net, x)[1] & F.INPUT_OUT_OF_RANGE)


def test_angle_cosines():
    c = N.angle_cosines(sun_zenith=60.0, sun_azimuth=150.0, view_zenith=np.array([0.0, 10.0]),
                        view_azimuth=np.array([150.0, 330.0]))
    assert c.shape == (3, 2) and c.dtype == np.float32
    np.testing.assert_allclose(c[:, 0], [1.0, 0.5, 1.0], atol=1e-7)
    np.testing.assert_allclose(c[:, 1], [np.cos(np.radians(10)), 0.5, -1.0], atol=1e-7)


# ----------------------------------------------------------------------------- CLI

def test_cli_biophysical_verify_passes():
    res = CliRunner().invoke(main, ["biophysical", "verify", str(DATA / "3_0")])
    assert res.exit_code == 0, res.output
    assert "41472" in res.output and "1 of 1 file(s) pass" in res.output
    res = CliRunner().invoke(main, ["biophysical", "verify", str(DATA), "--json"])
    assert res.exit_code == 1  # 2_1/LAI_Cab: NaN rows that the shipped limits do not flag
    doc = json.loads(res.stdout)
    bad = [f for f in doc["files"] if not f["ok"]]
    assert [(f["model"], f["variable"], f["nan_not_flagged"]) for f in bad] == [("2_1", "LAI_Cab", 72)]
    assert sum(f["rows"] for f in doc["files"]) == 41472 + 300


def test_cli_biophysical_verify_user_model_dir(tmp_path):
    """A MODEL_DIR with the networks beside the TestCases."""
    shutil.copytree(N.NETWORKS_ROOT / "2_1/FAPAR", tmp_path / "mine/FAPAR")
    shutil.copy(CASES["2_1/FAPAR"], tmp_path / "mine/FAPAR")
    res = CliRunner().invoke(main, ["biophysical", "verify", str(tmp_path / "mine"), "--json"])
    assert res.exit_code == 0, res.output
    (f,) = json.loads(res.stdout)["files"]
    assert f["model"] == str((tmp_path / "mine").resolve()) and f["rows"] == 100


def test_cli_biophysical_verify_detects_a_wrong_expected_value(tmp_path):
    dst = tmp_path / "3_0/S2A/LAI/LAI_TestCases"
    dst.parent.mkdir(parents=True)
    lines = CASES["3_0/S2A/LAI"].read_text().splitlines()
    head, last = lines[1000].rsplit(",", 1)
    lines[1000] = f"{head},{float(last) + 0.01:.7g}"
    dst.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(main, ["biophysical", "verify", str(tmp_path), "--json"])
    assert res.exit_code == 1
    (f,) = json.loads(res.stdout)["files"]
    assert f["rows_out_of_tolerance"] == 1 and f["nan_not_flagged"] == 0 and not f["ok"]
    assert 0.0099 < f["max_abs_error"] < 0.0102
    res = CliRunner().invoke(main, ["biophysical", "verify", str(tmp_path)])
    assert res.exit_code == 1 and "FAILED" in res.output and "0 of 1 file(s) pass" in res.output


def test_cli_biophysical_verify_empty_folder(tmp_path):
    res = CliRunner().invoke(main, ["biophysical", "verify", str(tmp_path)])
    assert res.exit_code == 1
    assert "no <VAR>/<VAR>_TestCases file found" in " ".join(res.output.split())
