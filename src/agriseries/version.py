"""The installed version of agriseries (also ``agriseries.__version__``), written into every
product's STAC item and lineage."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("agriseries")
except PackageNotFoundError:  # running from a source tree without installation
    VERSION = "0.0.0+unknown"

__all__ = ["VERSION"]
