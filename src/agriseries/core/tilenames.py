"""Sentinel-2 tile ids (MGRS names), checked without the tile geometry: a light module the
site files and the scheduler use (the tile grids themselves are :mod:`agriseries.core.grid`).
"""

from __future__ import annotations

import re

from .errors import ConfigurationError

__all__ = ["BANDS", "COLS", "ROWS", "split_tile_id", "tile_name"]

#: MGRS latitude bands, 8 degrees from -80 (X: 72-84).
BANDS = "CDEFGHJKLMNPQRSTUVWX"
#: The column letters of the 100 km squares, by UTM zone modulo 3.
COLS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
#: The row letters of the 100 km squares.
ROWS = "ABCDEFGHJKLMNPQRSTUV"
_TILE_RE = re.compile(r"^T?(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z])([A-HJ-NP-V])$")


def split_tile_id(tile: str) -> tuple[int, str, str]:
    """``T31TDH`` / ``31TDH`` -> ``(31, "T", "DH")``: UTM zone, latitude band, square.

    Raises
    ------
    ConfigurationError
        If the string is not an MGRS tile id.
    """
    m = _TILE_RE.match(str(tile).strip().upper())
    if not m or not 1 <= int(m.group(1)) <= 60:
        raise ConfigurationError(
            f"{tile!r} is not a Sentinel-2 tile id: expected e.g. 'T31TDH' (zone 01-60, "
            "latitude band C-X, two MGRS square letters)"
        )
    zone, band, col, row = int(m.group(1)), m.group(2), m.group(3), m.group(4)
    if col not in COLS[(zone - 1) % 3]:
        raise ConfigurationError(
            f"{tile!r}: column letter {col!r} does not exist in UTM zone {zone} "
            f"(expected one of {COLS[(zone - 1) % 3]})"
        )
    return zone, band, col + row


def tile_name(tile: str) -> str:
    """The tile id as ESA writes it (``31tdh`` -> ``T31TDH``); see :func:`split_tile_id`."""
    zone, band, square = split_tile_id(tile)
    return f"T{zone:02d}{band}{square}"
