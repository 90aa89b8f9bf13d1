"""Reading real products, writing COGs and the product store.

``product``
    :class:`SourceProduct` (what a reader finds in a product: band files, scale and
    offset, quality layers, angle grids) and :func:`load`, the one loader that turns
    it into the agriseries ``xarray.Dataset``.
``safe``, ``muscate``, ``landsat``, ``timeseries``
    one reader per provider format.
``detect``
    :data:`READERS` and :func:`find_reader`: which reader a path needs.
``ingest``
    provider products and series into the store, one product per tile and date.
``cog``, ``store``
    atomic COG writing and the folder-of-COGs-plus-STAC product store.

Formats read and what is checked: docs/inputs.md; the store's layout: docs/formats.md.
"""
