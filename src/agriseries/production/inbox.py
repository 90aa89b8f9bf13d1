"""The production inbox: the files and folders that arrive, and what they are.

:func:`scan_inbox` lists the entries of the site's inbox folder (files and folders matching
its patterns, left alone while they are still being written) with a token each,
``inbox:<name>@<fingerprint>``: an ingest job lists the tokens of its entries among its
inputs, so a changed entry is ingested again and an unchanged one never twice.
:func:`inspect_entry` reads the metadata of a new entry to plan its ingest
(:func:`~agriseries.production.stages.ingest.ingest_jobs`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import time
from collections.abc import Collection
from pathlib import Path

from ..core.errors import ConfigurationError
from .plan import InboxEntry
from .site import Site

__all__ = ["inspect_entry", "scan_inbox"]


def _fingerprint(path: Path) -> tuple[str, float]:
    """``size-mtime`` of a file, ``Nf-size-mtime`` of a folder (its files), and the latest
    modification time (seconds)."""
    st = path.stat()
    if not path.is_dir():
        return f"{st.st_size}-{st.st_mtime_ns}", st.st_mtime
    n, size, latest = 0, 0, st.st_mtime_ns
    for root, _dirs, files in os.walk(path):
        for f in files:
            s = os.stat(os.path.join(root, f))
            n, size, latest = n + 1, size + s.st_size, max(latest, s.st_mtime_ns)
    return f"{n}f-{size}-{latest}", latest / 1e9


def scan_inbox(site: Site, now: float | None = None, complete: Collection[str] = ()
               ) -> tuple[list[tuple[Path, str]], list[str]]:
    """The entries of the site's inbox that are ready: ``(path, token)`` pairs, and the
    names of those still arriving (modified less than ``settle_s`` ago; an entry named in
    ``complete`` -- put there whole by an ``acquire`` job -- never waits).

    Raises
    ------
    ConfigurationError
        The inbox folder does not exist.
    """
    root = site.inbox.path
    if not root.is_dir():
        raise ConfigurationError(f"{site.where('inbox.path')}: inbox folder {root} does not "
                                 "exist")
    now = time.time() if now is None else now
    ready, arriving = [], []
    for p in sorted(root.iterdir()):
        name = p.name
        if not any(fnmatch.fnmatch(name, pat) for pat in site.inbox.include):
            continue
        if any(fnmatch.fnmatch(name, pat) for pat in site.inbox.exclude):
            continue
        try:
            fp, latest = _fingerprint(p)
        except OSError:
            continue  # removed while we looked
        if now - latest < site.inbox.settle_s and name not in complete:
            arriving.append(name)
            continue
        ready.append((p.absolute(), f"inbox:{name}@{fp}"))
    return ready, arriving


def inspect_entry(path: Path, token: str, allow_missing_bands: bool = False,
                  acquired: bool = False) -> InboxEntry:
    """Read an inbox entry's metadata to plan its ingest (what it is, which tiles);
    ``acquired``: fetched by an ``acquire`` job (read with the bands it has).

    Never raises: an entry that cannot be read is returned as ``unreadable`` with the
    reader's error (its ingest job then fails with that error).
    """
    from ..core.grid import parse_tile, tiles_for_geometry
    from ..io.detect import find_reader

    try:
        reader = find_reader(path)
        if reader.kind == "product":
            product = reader.read(str(path), allow_missing_bands=allow_missing_bands or acquired)
            if product.tile:
                return InboxEntry(str(path), token, "product", (parse_tile(product.tile).name,),
                                  on_tile_grid=True, acquired=acquired)
            if product.footprint is None:
                return InboxEntry(str(path), token, "unreadable",
                                  error=f"{path}: the product has no footprint")
            tiles = tuple(t.name for t in tiles_for_geometry(product.footprint))
            return InboxEntry(str(path), token, "product", tiles, acquired=acquired)
        ds = reader.read(str(path))
        try:
            sig = repr((ds["sensor"].values.tolist(), ds["time"].values.tolist(),
                        str(ds.odc.geobox.crs)))
        finally:
            ds.close()
        return InboxEntry(str(path), token, "series",
                          group=hashlib.sha256(sig.encode()).hexdigest()[:16])
    except Exception as e:  # noqa: BLE001 -- recorded; the ingest job reports it
        return InboxEntry(str(path), token, "unreadable", error=f"{type(e).__name__}: {e}")
