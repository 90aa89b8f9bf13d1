"""Site files: the template, validation errors that name the file and the field, tiles from
a polygon, paths relative to the file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from agriseries.core.errors import ConfigurationError
from agriseries.core.grid import tile_geobox
from agriseries.production.site import (
    PENDING_LEVELS,
    TEMPLATE,
    Site,
    load_site,
    site_from_dict,
)

MINIMAL = {"name": "flanders", "area": {"tiles": ["31UDS"]},
           "season": {"start": "2018-03-01", "end": "2018-10-31"},
           "inbox": "inbox", "store": "store"}


def _fields(model: type[BaseModel]) -> set[str]:
    out = set()
    for name, f in model.model_fields.items():
        out.add(name)
        for t in getattr(f.annotation, "__args__", ()) + (f.annotation,):
            if isinstance(t, type) and issubclass(t, BaseModel):
                out |= _fields(t)
    return out


def test_template_is_a_valid_site_and_explains_every_field(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(TEMPLATE)
    site = load_site(path)
    assert site.tiles == ["T31UDS"]
    assert site.store == tmp_path / "store" and site.inbox.path == tmp_path / "inbox"
    assert site.database_url == f"sqlite:///{tmp_path / 'store' / 'jobs.sqlite'}"
    # every field of every model is named in the template, with a comment on its line or
    # in the lines just above it
    lines = TEMPLATE.splitlines()
    for name in _fields(Site):
        at = [i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:")
              or f"# {name}:" in line or f"# ... OR {name}:" in line]
        assert at, f"field {name!r} missing from the template"
        i = at[0]
        context = lines[max(0, i - 3):i + 2]
        assert any("#" in line for line in context), f"field {name!r} has no comment"


def test_paths_are_relative_to_the_site_file_not_the_working_folder(tmp_path, monkeypatch):
    folder = tmp_path / "sites"
    folder.mkdir()
    (folder / "s.yaml").write_text(yaml.safe_dump({**MINIMAL, "in_situ": "../field/data.gpkg"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    site = load_site(Path("../sites/s.yaml"))
    assert site.inbox.path == folder / "inbox"
    assert site.store == folder / "store"
    assert site.in_situ == tmp_path / "field" / "data.gpkg"
    assert site.source == (folder / "s.yaml").absolute()


@pytest.mark.parametrize("change, field, words", [
    ({"products": {"L3A": {"half_period": 0}}}, "products.L3A.half_period", "greater than"),
    ({"products": {"L3B": {"variables": ["LAI", "NDVI"]}}}, "products.L3B.variables", "NDVI"),
    ({"products": {"L3B": {"sensors": ["S1"]}}}, "products.L3B.sensors", "S2, L8, L9"),
    ({"area": {"tiles": ["T99XXX"]}}, "area.tiles", "T99XXX"),
    ({"area": {"tiles": ["T31UDS"], "geometry": {"type": "Polygon"}}}, "area", "not both"),
    ({"season": {"start": "2018-10-01", "end": "2018-03-01"}}, "season", "before start"),
    ({"l2a": {"source": "agriseries", "resolution": 5}}, "l2a.resolution", "greater than"),
    ({"l2a": {"source": "sen2cor"}}, "l2a.source", "provider"),
    ({"engine": {"scheduler": "localhost:8786"}}, "engine.scheduler", "tcp://host:port"),
    ({"engine": {"memory_limit": "lots"}}, "engine.memory_limit", "4GiB"),
    ({"engine": {"chunks": "cluster"}}, "engine.chunks", "'cluster' (one job's chunks spread "
                                                        "over the whole cluster) was removed"),
    ({"retries": {"max_attempts": 0}}, "retries.max_attempts", "greater than"),
    ({"colour": "blue"}, "colour", "unknown field"),
    ({"name": "my site!"}, "name", "pattern"),
])
def test_errors_name_the_file_and_the_field(tmp_path, change, field, words):
    data = json.loads(json.dumps(MINIMAL))
    for k, v in change.items():
        data[k] = v
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigurationError) as e:
        load_site(path)
    msg = str(e.value)
    assert str(path) in msg and f"field '{field}'" in msg and words in msg, msg


def test_missing_fields_and_broken_files(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "area": {"tiles": ["T31UDS"]}}))
    with pytest.raises(ConfigurationError, match=r"field 'season': Field required.*field 'inbox'"):
        load_site(path)
    path.write_text("name: x\narea: [tiles\n")
    with pytest.raises(ConfigurationError, match=r"s.yaml: line 3, column 1: not valid YAML"):
        load_site(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigurationError, match="expected a mapping of fields"):
        load_site(path)
    with pytest.raises(ConfigurationError, match="nothere.yaml: no such file"):
        load_site(tmp_path / "nothere.yaml")


def _square(x: float, y: float, half: float, crs) -> dict:
    from odc.geo.geom import polygon

    g = polygon([(x - half, y - half), (x + half, y - half), (x + half, y + half),
                 (x - half, y + half), (x - half, y - half)], crs).to_crs("EPSG:4326")
    return g.json


def test_a_polygon_becomes_the_tiles_it_overlaps(tmp_path):
    gb = tile_geobox("T31UDS", 60)
    x0, y1 = gb.affine.c, gb.affine.f
    size = 109_800
    # a 2 km square in the middle of T31UDS: that tile only
    inside = _square(x0 + size / 2, y1 - size / 2, 1000, gb.crs)
    site = site_from_dict({**MINIMAL, "area": {"geometry": inside}})
    assert site.tiles == ["T31UDS"]
    # in the 9.8 km overlap with the tile to the east (T31UES): both; as a Feature in a file
    edge = _square(x0 + size - 3000, y1 - size / 2, 1000, gb.crs)
    (tmp_path / "area.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                    "geometry": edge}]}))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "area": {"geometry": "area.geojson"}}))
    assert load_site(path).tiles == ["T31UDS", "T31UES"]
    # a point is not an area
    path.write_text(yaml.safe_dump({**MINIMAL, "area": {"geometry": {
        "type": "Point", "coordinates": [3.0, 51.0]}}}))
    with pytest.raises(ConfigurationError, match=r"field 'area'.*Point geometry"):
        load_site(path)
    path.write_text(yaml.safe_dump({**MINIMAL, "area": {"geometry": "missing.geojson"}}))
    with pytest.raises(ConfigurationError, match=r"field 'area.geometry'.*missing.geojson"):
        load_site(path)


def test_months_of_the_season_and_no_pending_products():
    parcels = Path(__file__).parent / "data" / "crop" / "worldcereal_parcels.gpkg"
    site = site_from_dict({**MINIMAL, "season": {"start": "2018-11-15", "end": "2019-02-01"},
                           "in_situ": str(parcels),
                           "products": {"L4A": {"enabled": True},
                                        "L4B": {"enabled": True, "class_field": "CT",
                                                "dates": ["2019-01-10"]}}})
    assert [f"{a:%Y-%m}:{b:%d}" for a, b in site.months()] == [
        "2018-11:30", "2018-12:31", "2019-01:31", "2019-02:28"]
    # the crop mask and crop type are made by the production now: nothing to report
    assert site.notices() == [] and PENDING_LEVELS == {}
    assert site.l4a_dates() == [dt.date(2018, 12, 31), dt.date(2019, 1, 31),
                                dt.date(2019, 2, 1)]
    assert site.products.L4A.class_field == "CROP" and site.products.L4A.crop_values == [1]
    assert site_from_dict(MINIMAL).notices() == []


PARCELS = Path(__file__).parent / "data" / "crop" / "worldcereal_parcels.gpkg"


@pytest.mark.parametrize("change, field, words", [
    ({"products": {"L4A": {"enabled": True}}}, "products.L4A",
     "give the site's 'in_situ' polygons (class field 'CROP') or 'products.L4A.reference_map'"),
    ({"products": {"L4A": {"enabled": True, "reference_map": "esa_cci.tif"}}},
     "products.L4A.reference_map", "esa_cci.tif does not exist"),
    ({"products": {"L4A": {"enabled": True}}, "in_situ": "fields.gpkg"}, "in_situ",
     "in-situ file {tmp}/fields.gpkg does not exist"),
    ({"products": {"L4A": {"crop_values": []}}}, "products.L4A.crop_values",
     "at least one value meaning cropland"),
    ({"products": {"L4A": {"class_field": ""}}}, "products.L4A.class_field", "at least 1"),
    ({"products": {"L4A": {"start": "2018-11-01"}}}, "products.L4A.start",
     "2018-11-01 is outside the season 2018-03-01..2018-10-31"),
    ({"products": {"L4A": {"schedule": "weekly"}}}, "products.L4A.schedule",
     "monthly_from_mid_season"),
    ({"products": {"L4B": {"enabled": True, "class_field": "CODE"}}}, "in_situ",
     "the crop type (products.L4B) is enabled: give the in-situ polygons"),
    ({"products": {"L4B": {"enabled": True}}, "in_situ": str(PARCELS)},
     "products.L4B.class_field", "required when the crop type is enabled"),
    ({"products": {"L4B": {"dates": ["2018-03-01", "2018-07-15", "2018-12-31"]}}},
     "products.L4B.dates", "2018-03-01, 2018-12-31: outside the season"),
    ({"products": {"L4B": {"crop_mask": "yes please"}}}, "products.L4B.crop_mask",
     "valid boolean"),
    ({"products": {"L4A": {"enabled": True, "model": "site.joblib"}}}, "products.L4A.model",
     "site model {tmp}/site.joblib does not exist"),
    ({"products": {"L4A": {"enabled": True, "model": str(PARCELS)}}}, "products.L4A.model",
     "it maps the season end only; set products.L4A.start to 2018-10-01"),
    ({"products": {"L4B": {"enabled": True, "model": str(PARCELS), "dates": ["2018-07-15"]}}},
     "products.L4B.model", "it maps the season end only"),
])
def test_crop_product_errors_name_the_file_and_the_field(tmp_path, change, field, words):
    data = {**json.loads(json.dumps(MINIMAL)), **change}
    path = tmp_path / "crop.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigurationError) as e:
        load_site(path)
    msg = str(e.value)
    assert msg.startswith(f"site file {path}: invalid site: "), msg
    assert f"field '{field}'" in msg and words.format(tmp=tmp_path) in msg, msg


def test_crop_products_with_in_situ_or_a_reference_map(tmp_path):
    (tmp_path / "data").mkdir()
    ref = tmp_path / "data" / "lc.tif"
    ref.write_bytes(b"")  # only its existence is checked here
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "products": {
        "L4A": {"enabled": True, "reference_map": "data/lc.tif", "crop_values": [10, 11, 10]}}}))
    site = load_site(path)  # no in_situ needed without the crop type
    assert site.products.L4A.reference_map == ref and site.products.L4A.crop_values == [10, 11]
    # both problems of an L4B at once, in one message
    path.write_text(yaml.safe_dump({**MINIMAL, "products": {"L4B": {"enabled": True}}}))
    with pytest.raises(ConfigurationError, match=r"field 'in_situ'.*; field "
                                                 r"'products.L4B.class_field'"):
        load_site(path)
    # a disabled crop product needs nothing
    path.write_text(yaml.safe_dump({**MINIMAL, "products": {"L4A": {"enabled": False},
                                                            "L4B": {"class_field": None}}}))
    assert not load_site(path).products.L4A.enabled
