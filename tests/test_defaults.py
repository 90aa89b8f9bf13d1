"""A parameter's default is written once, on its dataclass: the command line, the site model
and the production's job parameters show the same value.

The processors' parameter classes live in light modules (``composite.params``,
``biophysical.params``, ``l2a.params``, ``crop.params``: no numba, dask or store import), so
that the site model and the stage table read their defaults without loading the
processors.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from agriseries.biophysical.params import BiophysicalParams
from agriseries.cli import main
from agriseries.composite.params import WaspParams
from agriseries.crop.params import (
    ClassifierParams,
    CropMaskParams,
    CropTypeParams,
    NoInsituParams,
    SeriesParams,
)
from agriseries.l2a.params import CloudParams, L2AParams
from agriseries.production import site as site_model
from agriseries.production.stages.l2a import L2AJobParams
from agriseries.production.stages.l3a import L3AJobParams
from agriseries.production.stages.l3b import L3BJobParams
from agriseries.production.stages.l4a import L4AJobParams
from agriseries.production.stages.l4b import L4BJobParams


def _default(cls, name):
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    raise KeyError(name)


def _cli_defaults(*path: str) -> dict[str, object]:
    cmd = main
    for p in path:
        cmd = cmd.commands[p]
    return {p.name: p.default for p in cmd.params}


def _csv(values) -> str:
    return ",".join(map(str, values))


# option (as the command names its value) -> its dataclass field
CLI = {
    ("composite",): [(n, WaspParams, n) for n in
                     ("half_period", "coarse_resolution", "sigma_small", "sigma_large",
                      "aot_weight_min", "aot_weight_max", "aot_max", "legacy_date_weight",
                      "directional_correction", "chunks")],
    ("biophysical",): [("variables", BiophysicalParams, "variables", _csv),
                       ("resolution", BiophysicalParams, "resolution", str)],
    ("l2a",): [("resolution", L2AParams, "resolution"), ("altitude", L2AParams, "altitude"),
               ("backward_dates", L2AParams, "backward_dates")],
    ("cropmask",): [("classifier", ClassifierParams, "method"),
                    ("trees", ClassifierParams, "n_trees"),
                    ("max_depth", ClassifierParams, "max_depth"),
                    ("min_samples", ClassifierParams, "min_samples"),
                    ("seed", ClassifierParams, "seed"), ("step_days", SeriesParams, "step_days"),
                    ("class_field", CropMaskParams, "class_field"),
                    ("crop_values", CropMaskParams, "crop_values", _csv),
                    ("ignore_values", NoInsituParams, "ignore_values", _csv),
                    ("trim_alpha", NoInsituParams, "alpha"),
                    ("feature_set", SeriesParams, "feature_set")],
    ("croptrain",): [("crop_values", CropMaskParams, "crop_values", _csv),
                     ("exclude_codes", CropTypeParams, "exclude_codes", _csv),
                     ("classifier", ClassifierParams, "method"),
                     ("trees", ClassifierParams, "n_trees"), ("seed", ClassifierParams, "seed"),
                     ("step_days", SeriesParams, "step_days"),
                     ("feature_set", SeriesParams, "feature_set")],
    ("croptable",): [("classifier", ClassifierParams, "method"),
                     ("trees", ClassifierParams, "n_trees")],
    ("croptype",): [("class_field", CropTypeParams, "class_field"),
                    ("exclude_codes", CropTypeParams, "exclude_codes", _csv),
                    ("trees", ClassifierParams, "n_trees")],
}


@pytest.mark.parametrize("command", list(CLI), ids=lambda c: " ".join(c))
def test_cli_defaults_are_the_dataclass_defaults(command):
    got = _cli_defaults(*command)
    for option, cls, field, *form in CLI[command]:
        want = _default(cls, field)
        if form:
            want = form[0](want)
        assert got[option] == want, f"agriseries {' '.join(command)} --{option}"


def test_composite_options_build_the_dataclass():
    from click.testing import CliRunner

    # the WASP options come from the dataclass fields, with their descriptions
    from agriseries.core.params import field_help

    cmd = main.commands["composite"]
    helps = {p.name: p.help for p in cmd.params}
    assert field_help(WaspParams)["half_period"] in helps["half_period"]
    res = CliRunner().invoke(main, ["composite", "--help"])
    assert "--no-directional-correction" in res.output and "[default: 23]" in res.output


def test_site_model_defaults_are_the_dataclass_defaults(tmp_path):
    s = site_model.site_from_dict({"name": "s", "area": {"tiles": ["T31UDS"]},
                                   "season": {"start": "2018-03-01", "end": "2018-10-31"},
                                   "inbox": str(tmp_path), "store": str(tmp_path)})
    p = s.products
    assert p.L3A.half_period == WaspParams.half_period
    assert tuple(p.L3B.variables) == BiophysicalParams.variables
    assert p.L3B.resolution == BiophysicalParams.resolution
    assert p.L4A.class_field == CropMaskParams.class_field
    assert tuple(p.L4A.crop_values) == CropMaskParams.crop_values
    assert tuple(p.L4A.ignore_values) == NoInsituParams.ignore_values
    assert tuple(p.L4B.exclude_codes) == CropTypeParams.exclude_codes
    assert s.l2a.resolution == L2AParams.resolution
    assert s.l2a.altitude == L2AParams.altitude
    assert s.l2a.backward_dates == L2AParams.backward_dates
    # and the template says the same values
    assert f"half_period: {WaspParams.half_period}" in site_model.TEMPLATE
    assert f"backward_dates: {L2AParams.backward_dates}" in site_model.TEMPLATE


def test_job_parameter_defaults_are_the_processor_defaults():
    assert L3AJobParams("2018-07").half_period == WaspParams.half_period
    assert L3AJobParams("2018-07").wasp() == WaspParams()
    assert L3BJobParams().processor_params() == BiophysicalParams()
    j = L2AJobParams()
    assert (j.resolution, j.altitude, j.dem, j.backward_dates) == (
        L2AParams.resolution, L2AParams.altitude, L2AParams.dem, L2AParams.backward_dates)
    assert j.processor_params() == L2AParams()
    m = L4AJobParams(("2018-03-01", "2018-10-31"), "2018-10-31").processor_params()
    assert (m.class_field, m.crop_values) == (CropMaskParams.class_field,
                                             CropMaskParams.crop_values)
    assert m.no_insitu.ignore_values == NoInsituParams.ignore_values
    t = L4BJobParams(("2018-03-01", "2018-10-31"), "2018-10-31").processor_params()
    assert t == CropTypeParams()
    assert CloudParams().blue_threshold == CloudParams.blue_threshold


def test_parameter_modules_are_light():
    code = ("import sys\n"
            "import agriseries.composite.params, agriseries.biophysical.params\n"
            "import agriseries.l2a.params, agriseries.crop.params\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'numba', 'dask', 'xarray', 'rasterio', 'scipy', 'sklearn'}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert res.stdout.strip() == "[]"
