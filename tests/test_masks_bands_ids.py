"""Common mask bits, band catalogue and product ids."""

from __future__ import annotations

import datetime as dt

import dask.array as da
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agriseries.core import masks
from agriseries.core.bands import LANDSAT_TO_S2, S2_TO_LANDSAT, SENSORS, bands_of, sensor_name
from agriseries.core.errors import ConfigurationError
from agriseries.core.ids import Level, ProductId
from agriseries.core.masks import MaskBit


def test_mask_bits_are_distinct_and_fill_a_byte():
    values = [int(b) for b in MaskBit]
    assert sorted(values) == [1 << i for i in range(8)]
    assert masks.describe(3) == ["cloud", "cloud_shadow"]


def test_scl_classes_map_to_documented_bits():
    scl = np.arange(13, dtype=np.uint8)
    bits = masks.from_scl(scl)
    assert bits[0] == MaskBit.NODATA and bits[1] == MaskBit.SATURATED
    assert bits[3] == MaskBit.CLOUD_SHADOW and bits[6] == MaskBit.WATER
    assert bits[8] == bits[9] == MaskBit.CLOUD and bits[10] == MaskBit.CIRRUS
    assert bits[11] == MaskBit.SNOW and bits[4] == bits[5] == bits[7] == 0
    assert bits[12] == MaskBit.NODATA  # no such class: never counted as clear land
    # cloud probability sharpens the mask but never overrides no data
    prob = np.array([70, 70, 10, 100], np.uint8)
    out = masks.from_scl(np.array([4, 0, 8, 5], np.uint8), prob, 65)
    assert list(out) == [MaskBit.CLOUD, MaskBit.NODATA, MaskBit.CLOUD, MaskBit.CLOUD]
    lazy = masks.from_scl(da.from_array(scl, chunks=5))
    assert np.array_equal(lazy.compute(), bits)


def test_qa_pixel_bits_follow_the_usgs_c2_layout():
    # values from the Landsat 8-9 C2 L2 product guide: 21824 = clear land (bits 6, 8, 10,
    # 12, 14), 21952 = clear water (+bit 7), 22280 = high-conf cloud (bits 3, 8, 9 ...),
    # 23888 = cloud shadow, 30048 = snow, 1 = fill, 55052 = high-conf cirrus + cloud
    qa = np.array([21824, 21952, 22280, 23888, 30048, 1, 55052], np.uint16)
    out = masks.from_qa_pixel(qa)
    assert out[0] == 0
    assert out[1] == MaskBit.WATER
    assert out[2] & MaskBit.CLOUD
    assert out[3] & MaskBit.CLOUD_SHADOW
    assert out[4] & MaskBit.SNOW
    assert out[5] == MaskBit.NODATA
    assert out[6] & MaskBit.CIRRUS and out[6] & MaskBit.CLOUD
    radsat = np.array([0, 1 << 3, 1 << 11, 0, 0, 0, 0], np.uint16)
    out2 = masks.from_qa_pixel(qa, radsat)
    assert out2[1] & MaskBit.SATURATED and out2[2] & MaskBit.TOPO_SHADOW


@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 1), st.integers(0, 255))
def test_muscate_decoding_bit_by_bit(clm, mg2, edg, sat):
    out = int(masks.from_muscate(np.uint8(clm), np.uint8(mg2), np.uint8(edg), np.uint8(sat)))
    bit = lambda v, n: (v >> n) & 1  # noqa: E731
    assert bool(out & MaskBit.CLOUD) == bool(bit(clm, 1) | bit(clm, 2) | bit(clm, 3) | bit(clm, 4)
                                             | bit(mg2, 1))
    assert bool(out & MaskBit.CLOUD_SHADOW) == bool(bit(clm, 5) | bit(clm, 6) | bit(mg2, 3))
    assert bool(out & MaskBit.CIRRUS) == bool(bit(clm, 7))
    assert bool(out & MaskBit.WATER) == bool(bit(mg2, 0))
    assert bool(out & MaskBit.SNOW) == bool(bit(mg2, 2))
    assert bool(out & MaskBit.TOPO_SHADOW) == bool(bit(mg2, 4) | bit(mg2, 5))
    assert bool(out & MaskBit.NODATA) == bool(edg)
    assert bool(out & MaskBit.SATURATED) == bool(sat)


def test_band_catalogue_and_mapping():
    assert set(SENSORS) == {"S2A", "S2B", "S2C", "L8", "L9"}
    s2 = bands_of("S2B")
    assert [b for b, v in s2.items() if v.resolution == 10] == ["B02", "B03", "B04", "B08"]
    assert s2["B8A"].common_name == "nir08" and abs(s2["B12"].center_wavelength - 2.1857) < 1e-6
    # Sen2Agri's bands_mapping_s2_L8.txt (docs/l3a.md): B8 and B8A both from L8 B5; no red edge from Landsat
    assert LANDSAT_TO_S2["B5"] == ("B08", "B8A") and LANDSAT_TO_S2["B7"] == ("B12",)
    assert S2_TO_LANDSAT["B05"] is None and S2_TO_LANDSAT["B11"] == "B6"
    assert sensor_name("Sentinel-2A") == "S2A" and sensor_name("LANDSAT_9") == "L9"
    with pytest.raises(ConfigurationError, match="unknown platform"):
        sensor_name("SPOT-5")


@given(st.sampled_from(list(Level)), st.sampled_from(["S2A", "L8", "S2L8"]),
       st.sampled_from(["T31UDS", "T01CCV"]),
       st.datetimes(min_value=dt.datetime(2013, 1, 1), max_value=dt.datetime(2040, 1, 1)),
       st.booleans())
def test_product_id_round_trip(level, sensor, tile, when, period):
    when = when.replace(microsecond=0, tzinfo=dt.timezone.utc)
    if period:
        start = when.replace(hour=0, minute=0, second=0)
        pid = ProductId(level, sensor, tile, start, "AGS", start + dt.timedelta(days=30))
    else:
        pid = ProductId(level, sensor, tile, when, "SEN2COR")
    assert ProductId.parse(str(pid)) == pid


def test_product_id_errors():
    with pytest.raises(ConfigurationError, match="not an agriseries product id"):
        ProductId.parse("S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454")
    with pytest.raises(ConfigurationError, match="producer"):
        ProductId(Level.L2A, "S2A", "T29UNU", dt.datetime(2020, 1, 1), "sen2cor")
