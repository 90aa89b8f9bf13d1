"""Crop mask (L4A) and crop type (L4B) products (method: docs/crop.md).

* :mod:`~agriseries.crop.features` -- the season's L2A series resampled to a regular grid
  of dates with linear gap filling, and the per-date features;
* :mod:`~agriseries.crop.samples` -- in-situ polygons: reading, rasterising, the 75/25
  split by polygon, parcel groups of raster labels, training-pixel sampling;
* :mod:`~agriseries.crop.classifier` -- random forest (100 trees, depth 25, 25 samples)
  and LightGBM behind one interface, chunked prediction with the vote share;
* :mod:`~agriseries.crop.nolabels` -- the crop mask without in-situ data (Matton et al.
  2015): eroded reference, key-date features, Mahalanobis trimming;
* :mod:`~agriseries.crop.postprocess` -- optional segmentation and majority vote;
* :mod:`~agriseries.crop.processor` -- store-level ``cropmask`` and ``croptype``;
* :mod:`~agriseries.crop.cli` -- the click commands.
"""
