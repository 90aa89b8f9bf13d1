"""agriseries: a production system for Sentinel-2 and Landsat 8/9 time series over farmland.

Sub-packages, in the order of the pipeline (docs/architecture.md describes how they fit):

``core``
    band catalogue, mask bits, tile grids, product ids, STAC items, errors; no file I/O.
``io``
    readers for real products (ESA SAFE, THEIA MUSCATE, USGS Landsat Collection 2,
    openEO / odc-stac NetCDF and Zarr series), the loader, COG writing, ingestion and the
    product store (docs/inputs.md, docs/formats.md).
``l2a``
    L2A from L1C: multi-temporal cloud, shadow, snow and water masks and SMAC atmospheric
    correction (docs/l2a.md).
``composite``
    L3A: monthly weighted-average syntheses, the WASP method (docs/l3a.md).
``biophysical``
    L3B: LAI, FAPAR, FCOVER from SNAP's neural networks, smoothed along the season
    (docs/l3b.md).
``crop``
    L4A crop masks and L4B crop types by random forest (docs/crop.md).
``validation``
    accuracy of class maps, area-adjusted estimates, reports (docs/validation.md).
``production``
    sites, the scheduler, the runner and the job store: automatic production
    (docs/production.md, docs/jobstore.md).
``cli``
    the ``agriseries`` command.

The common path has a flat API, imported on first use so that ``import agriseries`` stays
light: :func:`agriseries.open` (find the reader of a path and read its metadata),
:func:`agriseries.load` (the lazy loader, :func:`agriseries.io.product.load`) and
:class:`agriseries.ProductStore` (:class:`agriseries.io.store.ProductStore`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real imports happen on first use (module __getattr__ below)
    from pathlib import Path
    from typing import Sequence

    import xarray

    from .io.product import SourceProduct, load
    from .io.store import ProductStore

from .version import VERSION as __version__

__all__ = ["__version__", "open", "load", "ProductStore"]

#: Names of the flat API imported on first use, so that ``import agriseries`` loads
#: neither numpy, xarray, dask nor GDAL: name -> (module, attribute).
_LAZY = {
    "load": ("agriseries.io.product", "load"),
    "ProductStore": ("agriseries.io.store", "ProductStore"),
}


def open(path: str | Path, *, allow_missing_bands: bool = False,  # noqa: A001
         stack_bands: Sequence[str] | None = None) -> SourceProduct | xarray.Dataset:
    """Open a provider product or series: find its reader and read its metadata.

    Nothing but metadata is read; pass the result to :func:`agriseries.load` for the
    pixels. The reader is chosen by :func:`agriseries.io.detect.find_reader`
    (docs/inputs.md lists the formats).

    Parameters
    ----------
    path
        A SAFE folder or ``.zip``, a MUSCATE product folder, a Landsat Collection 2
        product folder or its ``*_MTL.txt``, or a NetCDF / Zarr time series.
    allow_missing_bands
        Accept a product whose metadata lists bands that are not on disk (a partial
        download); the bands present are read and the others listed in
        ``metadata["missing_bands"]``. A series has nothing to leave out.
    stack_bands
        The band names, in file order, of a product stored as one multi-band stack
        whose metadata does not say which bands it holds (MUSCATE ``*_STACK.tif``
        extracts); refused for formats with one file per band.

    Returns
    -------
    SourceProduct or xarray.Dataset
        The :class:`~agriseries.io.product.SourceProduct` of one acquisition, or, for a
        time series, the agriseries dataset of all its dates.

    Raises
    ------
    agriseries.core.errors.UnknownProductError
        If the path does not exist or no reader recognises it.
    agriseries.core.errors.InputProductError
        If the product is recognised but cannot be read: a corrupt file, a band missing
        (the message names the file and what was expected).
    """
    from .io.detect import find_reader

    reader = find_reader(path)
    return reader.read(str(path), allow_missing_bands=allow_missing_bands, stack_bands=stack_bands)


def __getattr__(name: str):
    """Import the flat API's heavy names on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agriseries' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
