"""Catalogue backends of the distribution service (docs/distribution.md, "Backends").

Both have the same two faces:

* the publisher's: ``apply(upserts, removes, store_root)`` writes published items
  (:func:`~agriseries.distribution.items.published_item`) and removes items by id,
  idempotently, each call bounded in time; ``count()`` says how many items are published;
* the service's: ``create_api(settings)`` builds the stac-fastapi application over it.

* :mod:`.geoparquet`: embedded, no database server: the publisher keeps one
  stac-geoparquet file per collection (written with rustac) and a collection list, which
  stac-fastapi-geoparquet queries through DuckDB;
* :mod:`.pgstac`: a centre's catalogue: stac-fastapi-pgstac on PostgreSQL + PostGIS with
  the pgstac schema (pypgstac migrations).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CatalogBackend", "open_backend"]


class CatalogBackend(Protocol):
    """The publisher's face of a catalogue backend."""

    def apply(self, upserts: list[dict], removes: list[str], store_root) -> None: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def open_backend(settings, *, timeout_s: float = 30.0) -> CatalogBackend:
    """The publisher's backend for service settings
    (:class:`~agriseries.distribution.settings.ServiceSettings`)."""
    if settings.backend == "pgstac":
        from .pgstac import PgstacCatalog

        return PgstacCatalog(settings.catalog_dsn, timeout_s=timeout_s)
    from .geoparquet import GeoparquetCatalog

    return GeoparquetCatalog(settings.catalog_folder, timeout_s=timeout_s)
