"""L3A: the monthly cloud-free synthesis by weighted average (the WASP method).

* :mod:`~agriseries.composite.params` -- :class:`WaspParams`, the method's parameters and
  defaults (light: the site model and the command line read them);
* :mod:`~agriseries.composite.wasp` -- the method: per-date weights (cloud distance,
  AOT, date, sensor), directional correction and the recursive per-pixel update
  (numba), on numpy/dask arrays;
* :mod:`~agriseries.composite.processor` -- :func:`composite`: the L3A product of a tile
  and month from the L2A products in the store.

The names below are imported on first use, so that ``agriseries.composite.params`` loads
no numba or dask.
"""

from __future__ import annotations

from .params import WaspParams

__all__ = ["composite", "parse_period", "CompositeResult", "WaspParams"]


def __getattr__(name: str):
    if name in ("CompositeResult", "composite", "parse_period"):
        from . import processor

        return getattr(processor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
