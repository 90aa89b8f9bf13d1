"""agriseries: a production system for satellite image time series over farmland.

Sub-packages, by stage (see the README's architecture section):

``core``
    band catalogue, mask bits, tile grids, product ids, STAC items, errors.
``io``
    readers for real products (ESA SAFE, THEIA MUSCATE, USGS Landsat C2,
    openEO/odc-stac NetCDF/Zarr series), COG writing and the product store.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agriseries")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
