"""Level-2A processing from L1C: cloud masks and atmospheric correction (docs/l2a.md).

``cloudmask``
    the multi-temporal cloud, cirrus, shadow, snow and water masks on a coarse grid
    (a simplified MAJA, Hagolle et al. 2010) with the per-tile state they keep.
``smac``
    SMAC atmospheric correction (Rahman & Dedieu 1994) and its coefficient files.
``processor``
    :func:`~agriseries.l2a.processor.l2a`: the L2A products of a tile, date by date.
``cli``
    the ``agriseries l2a`` command.
"""
