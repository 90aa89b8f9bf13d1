"""Optional post-processing of a crop mask: segmentation and majority vote (docs/crop.md).

Sen2Agri smooths the pixel classification with objects: the NDVI series is reduced to
**6 principal components**, segmented with mean-shift (spatial radius 10, range radius
0.65, small regions merged below 10 pixels), and every segment takes the **majority
class** of its pixels. This module keeps the PCA, the minimum segment size and the
majority vote, and replaces mean-shift (not in the Python scientific stack) by a
simpler segmentation, **Felzenszwalb & Huttenlocher's graph-based method**
(``skimage.segmentation.felzenszwalb``: a minimum-spanning-tree merge of neighbouring
pixels by Euclidean distance of their PCA vectors, ``scale`` sets the preferred segment
size, ``min_size = 10`` pixels merges the small regions as Sen2Agri does):

* :class:`NDVIPCA` -- principal components of the per-date NDVI features, fitted on the
  training samples' features and evaluated inside the prediction blocks (so the NDVI
  series of a full tile is never held in memory: only its components are);
* :func:`segment` -- the segmentation of a ``(component, y, x)`` image;
* :func:`majority_vote` -- each segment gets its most frequent class (no-data pixels do
  not vote and stay no data); for a two-class map the confidence of a pixel whose class
  changed becomes ``1 - share`` (the vote share of its new class), for more classes NaN;
* :func:`postprocess` -- all of it over a full tile in overlapping blocks
  (``chunk`` = 2048 px with ``overlap`` = 64 px halos, each block's interior kept), so a
  segment cut by a block edge is voted on with its surroundings.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core.errors import ConfigurationError
from .params import SegmentationParams  # noqa: F401 -- re-exported

__all__ = ["NDVIPCA", "SegmentationParams", "majority_vote", "postprocess", "segment"]


class NDVIPCA:
    """Principal components of the NDVI series of a :class:`~agriseries.crop.features.SeriesFeatures`.

    Parameters
    ----------
    extractor
        The 5.1 feature extractor whose ``NDVI_<date>`` features are used.
    X
        Sample rows of that extractor's features ``(n, n_features)`` to fit on (rows with
        a NaN are ignored).
    n_components
        Number of components (at most the number of dates).
    """

    def __init__(self, extractor, X: np.ndarray, n_components: int = 6) -> None:
        names = list(extractor.names)
        cols = [i for i, n in enumerate(names) if n.startswith("NDVI_")]
        if len(cols) < 2:
            raise ConfigurationError("the features hold fewer than 2 NDVI dates: no PCA possible")
        self.extractor = extractor
        self.cols = np.asarray(cols)
        Z = np.asarray(X, np.float64)[:, self.cols]
        Z = Z[np.isfinite(Z).all(axis=1)]
        if Z.shape[0] < 2:
            raise ConfigurationError("fewer than 2 samples to fit the NDVI PCA")
        self.mean = Z.mean(axis=0)
        _, s, vt = np.linalg.svd(Z - self.mean, full_matrices=False)
        k = min(n_components, vt.shape[0])
        self.components = vt[:k].astype(np.float32)
        self.explained = (s[:k] ** 2 / max(float((s ** 2).sum()), 1e-30)).astype(np.float64)
        self.n_outputs = k

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Rows of the extractor's features ``(n, n_features)`` -> ``(n, n_components)`` float32."""
        Z = np.asarray(X, np.float32)[:, self.cols] - self.mean.astype(np.float32)
        return Z @ self.components.T

    def block(self, values, mask, obs_days, rows=None, names=None) -> np.ndarray:
        """Components of one block of the series: ``(n_components, ...)`` float32.

        ``rows`` / ``names``: the block's ``(n_pixels, n_features)`` features when they were
        already computed by an extractor with the same names (they are then reused), else
        None (they are computed from ``values``, ``mask``, ``obs_days``).
        """
        if rows is None or list(names or []) != list(self.extractor.names):
            feats = self.extractor.block(values, mask, obs_days)
            rows = feats.reshape(feats.shape[0], -1).T
        out = np.ascontiguousarray(self(rows).T)
        shape = values.shape[2:] if values is not None else (out.shape[1],)
        return out.reshape((self.n_outputs,) + tuple(shape))


def segment(image: np.ndarray, params: SegmentationParams = SegmentationParams(),
            valid: np.ndarray | None = None) -> np.ndarray:
    """Felzenszwalb segmentation of a ``(component, y, x)`` image: int64 labels 0..n-1.

    NaN values are replaced by 0 before segmenting (pass ``valid`` to keep such pixels out
    of the majority vote later).
    """
    from ..core.errors import optional_import

    felzenszwalb = optional_import("skimage.segmentation", "crop").felzenszwalb

    img = np.moveaxis(np.nan_to_num(np.asarray(image, np.float64), nan=0.0), 0, -1)
    with warnings.catch_warnings():
        # skimage warns that a 6-channel image "may not be intended": it is
        warnings.filterwarnings("ignore", message="Got image with third dimension",
                                category=RuntimeWarning)
        return felzenszwalb(img, scale=params.scale, sigma=params.sigma, min_size=params.min_size,
                            channel_axis=-1).astype(np.int64)


def majority_vote(classes: np.ndarray, segments: np.ndarray, nodata: int,
                  confidence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Give every segment the most frequent class of its pixels.

    Parameters
    ----------
    classes
        Class codes (``nodata`` pixels do not vote and keep ``nodata``).
    segments
        Segment labels of the same shape (non-negative integers).
    nodata
        The class no-data value.
    confidence
        The per-pixel confidence, updated where the class changes (see the module
        docstring), or None.

    Returns
    -------
    (classes, confidence)
        New arrays. Ties go to the smaller class code.
    """
    cls = np.asarray(classes)
    seg = np.asarray(segments).ravel()
    flat = cls.ravel()
    ok = flat != nodata
    codes, inv = np.unique(flat[ok], return_inverse=True)
    out = flat.copy()
    if codes.size == 0:
        return out.reshape(cls.shape), None if confidence is None else np.array(confidence)
    _, seg_inv = np.unique(seg, return_inverse=True)
    nseg = int(seg_inv.max()) + 1
    counts = np.bincount(seg_inv[ok] * codes.size + inv, minlength=nseg * codes.size)
    counts = counts.reshape(nseg, codes.size)
    has = counts.sum(axis=1) > 0
    winner = codes[np.argmax(counts, axis=1)]
    new = np.where(ok & has[seg_inv], winner[seg_inv], flat).astype(cls.dtype)
    conf = None
    if confidence is not None:
        conf = np.array(confidence, dtype=np.float32).ravel()
        changed = new != flat
        conf[changed] = (1.0 - conf[changed]) if codes.size <= 2 else np.nan
        conf = conf.reshape(cls.shape)
    return new.reshape(cls.shape), conf


def postprocess(classes: np.ndarray, confidence: np.ndarray, components: np.ndarray,
                nodata: int, params: SegmentationParams = SegmentationParams()
                ) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation + majority vote over a whole map, in overlapping blocks.

    Parameters
    ----------
    classes, confidence
        ``(y, x)`` pixel classification and confidence (numpy).
    components
        ``(k, y, x)`` NDVI principal components (numpy; NaN where no data).
    nodata
        Class no-data value.
    params
        Segmentation settings.

    Returns
    -------
    (classes, confidence)
        The voted map and its confidence.
    """
    ny, nx = classes.shape
    out_c = np.array(classes, copy=True)
    out_f = np.array(confidence, dtype=np.float32, copy=True)
    step = params.chunk - 2 * params.overlap
    for y0 in range(0, ny, step):
        for x0 in range(0, nx, step):
            y1, x1 = min(ny, y0 + step), min(nx, x0 + step)
            ya, xa = max(0, y0 - params.overlap), max(0, x0 - params.overlap)
            yb, xb = min(ny, y1 + params.overlap), min(nx, x1 + params.overlap)
            seg = segment(components[:, ya:yb, xa:xb], params)
            c, f = majority_vote(classes[ya:yb, xa:xb], seg, nodata, confidence[ya:yb, xa:xb])
            iy, ix = slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa)
            out_c[y0:y1, x0:x1] = c[iy, ix]
            out_f[y0:y1, x0:x1] = f[iy, ix]
    return out_c, out_f
