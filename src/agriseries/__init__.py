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
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agriseries")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
