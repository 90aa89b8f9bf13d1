"""Samples tables as training input (agriseries.crop.tables, agriseries croptable).

Real data: WorldCereal's training table (tests/data/crop/tables/training_df_LC.parquet: 1000
pixels of 74 Flanders 2018 locations, 152 features; wide) and its 2021 point extractions
(worldcereal_extractions_2021_long.parquet: 100 samples x 16 months; long).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from agriseries.core.errors import InputProductError
from agriseries.crop.classifier import load_classifier
from agriseries.crop.cli import croptable_cmd
from agriseries.crop.tables import cropland_labels, read_samples_table

TABLES = Path(__file__).parent / "data" / "crop" / "tables"
WIDE = TABLES / "training_df_LC.parquet"
LONG = TABLES / "worldcereal_extractions_2021_long.parquet"


def test_long_table_is_pivoted_and_gap_filled():
    t = read_samples_table(LONG)
    assert t.layout == "long" and t.X.shape == (100, 16 * 12) and t.dates.size == 16
    # B8A is no data everywhere upstream: dropped; the other nine bands + 3 indices per month
    assert t.names[:12] == [f"{b}_20200801" for b in ("B02", "B03", "B04", "B05", "B06", "B07",
                                                      "B08", "B11", "B12", "NDVI", "NDWI",
                                                      "BRIGHTNESS")]
    assert np.isfinite(t.X).all()
    df = pd.read_parquet(LONG)
    sid = t.sample_ids[7]
    rows = df[df["sample_id"] == sid].sort_values("timestamp")
    b04 = rows["S2-L2A-B04"].to_numpy()
    col = [i for i, n in enumerate(t.names) if n.startswith("B04_")]
    got = t.X[7, col]
    ok = b04 != 65535
    np.testing.assert_allclose(got[ok], b04[ok] * 1e-4, rtol=1e-6)
    if (~ok).any():  # a missing month is filled between its neighbours
        assert np.all((got[~ok] >= b04[ok].min() * 1e-4 - 1e-6) & (got[~ok] <= b04[ok].max() * 1e-4 + 1e-6))
    y, keep = cropland_labels(t, "ewoc_code")
    codes = t.column("ewoc_code")
    # temporary crops 11xxxxxxxx are cropland, WorldCereal's "ignore" codes (1110000000 among
    # them) are left out
    ignore = np.isin(codes, (1000000000, 1600000000, 1110000000, 1206000000))
    assert not keep[ignore].any() and keep[~ignore].all()
    assert y[keep].sum() == int((((codes // 10**8) == 11) & ~ignore).sum()) == 19


def test_wide_table_and_grouped_cli(tmp_path):
    t = read_samples_table(WIDE, group_column="location_id")
    assert t.layout == "wide" and t.X.shape == (1000, 152) and t.groups.max() == 74
    assert "location_id" not in t.names and "OUTPUT" not in t.names and "lat" not in t.names
    model = tmp_path / "m.joblib"
    run = CliRunner().invoke(croptable_cmd, [str(WIDE), "--label", "OUTPUT", "--crop-values", "11",
                                             "--group", "location_id", "--repeats", "1",
                                             "--trees", "30", "--out", str(model), "--json"])
    assert run.exit_code == 0, run.output
    res = json.loads(run.output)
    assert "by location_id" in res["split"] and res["groups"] == 74 and res["samples"] == 1000
    assert 0.8 < res["oa"][0] < 0.97 and res["kappa"][0] > 0.45
    clf = load_classifier(model)
    assert clf.classes.tolist() == [0, 1] and len(clf.feature_names) == 152


def test_bad_tables(tmp_path):
    with pytest.raises(InputProductError, match="no such samples table"):
        read_samples_table(tmp_path / "none.parquet")
    with pytest.raises(InputProductError, match="no column 'field'"):
        read_samples_table(WIDE, group_column="field")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(InputProductError, match="cannot be read"):
        read_samples_table(bad)
    with pytest.raises(InputProductError, match="label columns"):
        read_samples_table(WIDE).column("CODE")
