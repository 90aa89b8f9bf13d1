"""Shared core: band catalogue, mask bits, tile grids, product ids, STAC items and errors.

Nothing in ``core`` opens a product file; readers and processors build on it.
"""
