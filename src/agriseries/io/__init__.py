"""Reading real products, writing COGs and the product store.

``product``
    :class:`SourceProduct` (what a reader finds in a product: band files, scale and
    offset, quality layers, angle grids) and :func:`load`, the one loader that turns
    it into the agriseries ``xarray.Dataset``.
``safe``, ``muscate``, ``landsat``, ``timeseries``
    one reader per provider format.
``detect``
    :func:`open_product`: which reader a path needs.
``cog``, ``store``
    atomic COG writing and the folder-of-COGs-plus-STAC product store.
"""
