"""The flat public API: agriseries.open, agriseries.load, agriseries.ProductStore."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import agriseries
from agriseries.core.errors import MissingBandError, UnknownProductError
from agriseries.io.detect import find_reader
from agriseries.io.ingest import ingest
from agriseries.io.product import SourceProduct
from agriseries.io.product import load as io_load
from agriseries.io.store import ProductStore as IoProductStore

DATA = Path(__file__).parent / "data"
L2A_SAFE = DATA / "safe" / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"


def test_import_is_light():
    """``import agriseries`` loads none of the heavy dependencies; first use does."""
    code = (
        "import sys, agriseries\n"
        "heavy = ['numpy', 'xarray', 'dask', 'rasterio', 'numba', 'pystac', 'sqlalchemy']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
        "agriseries.ProductStore\n"
        "print('xarray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split("\n")
    assert out[0] == ""
    assert out[1] == "True"


def test_flat_names_are_the_package_objects():
    assert agriseries.load is io_load
    assert agriseries.ProductStore is IoProductStore
    assert {"open", "load", "ProductStore"} <= set(agriseries.__all__)
    assert {"open", "load", "ProductStore"} <= set(dir(agriseries))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        agriseries.nope  # noqa: B018


def test_open_finds_the_reader_and_reads_metadata():
    product = agriseries.open(L2A_SAFE, allow_missing_bands=True)
    assert isinstance(product, SourceProduct)
    direct = find_reader(L2A_SAFE).read(str(L2A_SAFE), allow_missing_bands=True)
    assert (product.product_id, product.sensor, product.level) == (direct.product_id, "S2A", "L2A")
    assert sorted(product.bands) == sorted(direct.bands)
    # the sample keeps its 60 m bands only: without the option the reader refuses it by name
    with pytest.raises(MissingBandError, match="B08"):
        agriseries.open(L2A_SAFE)


def test_open_unknown_path(tmp_path):
    with pytest.raises(UnknownProductError, match="no such file"):
        agriseries.open(tmp_path / "nothing.SAFE")
    (tmp_path / "notes.txt").write_text("not a product")
    with pytest.raises(UnknownProductError, match="notes.txt"):
        agriseries.open(tmp_path / "notes.txt")


def test_open_load_store_round_trip(tmp_path):
    """The README's Python example: open, load, then the same product from a store."""
    product = agriseries.open(L2A_SAFE, allow_missing_bands=True)
    ds = agriseries.load(product, resolution=60)
    assert ds.sizes["time"] == 1 and "B04" in ds and "mask" in ds
    store = agriseries.ProductStore(tmp_path / "store")
    ingest([L2A_SAFE], store, allow_missing_bands=True)
    item = next(store.items(level="L2A", tile="T29UNU"))
    back = agriseries.load(store.open(item), resolution=60)
    assert back.sizes["y"] > 0 and back.sizes["x"] > 0
    assert float(back["B04"].mean()) == pytest.approx(float(ds["B04"].mean()), abs=1e-3)
