"""Numba compilation shared by the per-pixel kernels."""

from __future__ import annotations

import numba


def compiled(**options):
    """``numba.njit`` with an on-disk cache when a cache folder can be written, else without."""
    def decorate(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # no writable cache folder (read-only install): compile per process
            return numba.njit(**options)(fn)
    return decorate
