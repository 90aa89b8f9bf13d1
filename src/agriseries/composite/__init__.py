"""L3A: the monthly cloud-free synthesis by weighted average (the WASP method).

* :mod:`~agriseries.composite.wasp` -- the method: per-date weights (cloud distance,
  AOT, date, sensor), directional correction and the recursive per-pixel update
  (numba), on numpy/dask arrays;
* :mod:`~agriseries.composite.processor` -- :func:`composite`: the L3A product of a tile
  and month from the L2A products in the store.
"""

from .processor import CompositeResult, composite, parse_period
from .wasp import WaspParams

__all__ = ["composite", "parse_period", "CompositeResult", "WaspParams"]
