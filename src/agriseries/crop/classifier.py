"""Pixel classifiers of the crop products and their chunked application to a tile.

Random forest (the reference, docs/crop.md "Classifier"): Sen2Agri trains OpenCV random
trees with **100 trees, maximum depth 25, at least 25 samples to split a node**, random
seed 0 (``processor.l4a.classifier.rf.*``, ``CropTypeFused.py``). Here that is
``sklearn.ensemble.RandomForestClassifier(n_estimators=100, max_depth=25,
min_samples_split=25, random_state=0)`` with the default ``sqrt(n_features)`` features
tried per split (OpenCV's default active variable count).

Prediction is Sen2Agri's: each tree casts **one vote** (the majority class of the leaf the
pixel falls in), the map takes the class with the most votes (ties: the smallest class
code), and the confidence is the **vote share of the winning class** (votes / trees).
scikit-learn's own ``predict`` averages the leaves' class fractions instead (soft voting),
which can pick another class when leaves are impure (``min_samples_split = 25`` leaves
them impure), so the votes are counted by :func:`forest_votes`, a numba traversal of the
fitted trees (the trees, thresholds and the ``<=`` rule are scikit-learn's; the test
suite checks the votes against each fitted tree's own ``predict``). The traversal walks
one tree at a time with a batch of 256 pixels, without data-dependent branches, on a
compact copy of the trees (children side by side, float32 thresholds rounded down so
that every float32 feature is compared exactly as with scikit-learn's float64 ones):
4 to 6 times faster than following each pixel through the 100 trees one after the other
(``benchmarks/bench_crop.py --votes-only``), with the same votes.

LightGBM (``method="lightgbm"``) is the alternative with the same interface: gradient
boosted trees, ``n_trees`` boosting rounds (per class), ``max_depth``, ``min_samples``
as ``min_child_samples``; its confidence is the predicted probability of the winning class
(boosting has no votes).

:func:`predict_map` classifies every pixel of a multi-date Dataset block by block (dask):
each block's features are computed (:mod:`agriseries.crop.features`), classified and
dropped, so a full tile never holds its features in memory. :func:`extract_samples`
computes the features of the training pixels only, block by block as well.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numba
import numpy as np
import xarray as xr

from ..core.errors import ConfigurationError, InputProductError, optional_import
from .features import stack_series
from .params import METHODS, ClassifierParams  # noqa: F401 -- re-exported

__all__ = [
    "ClassifierParams",
    "CropClassifier",
    "class_dtype",
    "extract_samples",
    "forest_votes",
    "load_classifier",
    "predict_map",
    "train_classifier",
]

def class_dtype(classes) -> tuple[np.dtype, int]:
    """The smallest unsigned type holding the class codes, and its no-data value (its maximum).

    Raises
    ------
    ConfigurationError
        A code is negative or above 65534.
    """
    c = np.asarray(classes)
    if c.size and (c.min() < 0 or c.max() > 65534):
        raise ConfigurationError(f"class codes {c.min()}..{c.max()}: expected 0 to 65534")
    if not c.size or c.max() < 255:
        return np.dtype(np.uint8), 255
    return np.dtype(np.uint16), 65535


# --------------------------------------------------------------------------------------
# random forest votes
#
# The traversal is tree-major over batches of pixels and free of data-dependent branches:
# for one tree, every pixel of a batch still inside the tree takes one step down, then the
# pixels that reached a leaf leave the list of active pixels. A step is
# ``node = child[node] + (x[feature[node]] > threshold[node])``: the two children of a
# node are stored next to each other (left, right), so the comparison's result is the
# offset to the next node and the processor has no branch to mispredict; the tree (a few
# kB) stays in the L1 cache while the batch's pixels walk it. A leaf points to itself.

_BATCH = 256  # pixels walking one tree at a time (measured best of 64 .. 4096)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


@numba.njit(nogil=True, cache=True)
def _votes_kernel(X, nodes, thr, leaf_cls, roots, ncls, out_cls, out_conf):  # pragma: no cover
    n, nf = X.shape
    ntree = roots.shape[0]
    xf = X.reshape(-1)
    votes = np.zeros((_BATCH, ncls), np.int32)
    rows = np.empty(_BATCH, np.int64)
    base = np.empty(_BATCH, np.uint64)  # offset of each batch pixel's row in xf
    node = np.empty(_BATCH, np.uint32)  # where each batch pixel is in the current tree
    active = np.empty(_BATCH, np.uint32)  # batch pixels not yet at a leaf
    i = 0
    while i < n:
        # the next batch: up to _BATCH rows without a NaN / infinite feature
        nb = 0
        while i < n and nb < _BATCH:
            ok = True
            for f in range(nf):
                if not np.isfinite(X[i, f]):
                    ok = False
                    break
            if ok:
                rows[nb] = i
                base[nb] = np.uint64(i * nf)
                nb += 1
            else:
                out_cls[i] = -1
                out_conf[i] = np.nan
            i += 1
        votes[:nb] = 0
        for k in range(ntree):
            for j in range(nb):
                node[j] = roots[k]
                active[j] = j
            na = np.uint64(nb)
            while na > 0:
                q = np.uint64(0)
                for a in range(na):
                    j = active[a]
                    cur = np.uint64(node[j])
                    word = nodes[cur]
                    nxt = (word & _LOW32) + np.uint64(xf[base[j] + (word >> _SHIFT32)] > thr[cur])
                    node[j] = nxt
                    active[q] = j  # kept (q advances) only if nxt is not a leaf
                    q += np.uint64((nodes[nxt] & _LOW32) != nxt)
                na = q
            for j in range(nb):
                votes[j, leaf_cls[node[j]]] += 1
        for j in range(nb):
            best = 0
            for c in range(1, ncls):
                if votes[j, c] > votes[j, best]:
                    best = c
            out_cls[rows[j]] = best
            out_conf[rows[j]] = votes[j, best] / ntree


def thresholds_float32(thr: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64 threshold.

    For a float32 ``x`` and a float64 ``t``, ``x <= t`` exactly when ``x <= t32`` with ``t32``
    the largest float32 ``<= t``: if ``x <= t`` then ``x`` is one of the float32 values
    ``<= t``, so ``x <= t32``; conversely ``x <= t32 <= t``. (scikit-learn compares the
    float32 features with float64 thresholds.) Rounding to the nearest float32 lands at most
    one float32 step away from ``t``, so one step down fixes the values rounded up.
    """
    thr = np.asarray(thr, np.float64)
    with np.errstate(over="ignore"):  # beyond the float32 range: +-inf (then fixed), or
        t32 = thr.astype(np.float32)  # a step down from -max to -inf
        up = t32.astype(np.float64) > thr
        t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    return t32


def flatten_forest(estimators) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fitted trees as one node table for :func:`_votes_kernel`.

    Each tree is renumbered breadth first, its nodes after the previous tree's, so that the
    children of a node are consecutive (left, then right). Returns ``nodes`` uint64 words
    ``child | feature << 32`` (``child``: the left child; a leaf's own index), float32
    thresholds (:func:`thresholds_float32`; +inf at a leaf, where any finite value goes
    "left" to the leaf itself), the int32 leaf class (index of the majority class of the
    node's training samples, the tree's own prediction there) and the uint32 roots.
    """
    words, thrs, classes, roots = [], [], [], []
    offset = 0
    for est in estimators:
        t = est.tree_
        left = np.asarray(t.children_left, np.int64)
        right = np.asarray(t.children_right, np.int64)
        # breadth-first order: each level lists the children of the previous level's
        # internal nodes as (left, right) pairs
        level = np.zeros(1, np.int64)
        parts = []
        while level.size:
            parts.append(level)
            inner = level[left[level] >= 0]
            level = np.stack([left[inner], right[inner]], axis=1).ravel()
        order = np.concatenate(parts)
        new = np.empty(t.node_count, np.int64)
        new[order] = np.arange(order.size)
        leaf = left[order] < 0
        child = np.where(leaf, np.arange(order.size), new[np.maximum(left[order], 0)]) + offset
        feature = np.where(leaf, 0, t.feature[order]).astype(np.uint64)
        words.append(child.astype(np.uint64) | (feature << _SHIFT32))
        thrs.append(np.where(leaf, np.inf, t.threshold[order]))
        classes.append(np.argmax(t.value[order, 0, :], axis=1))
        roots.append(offset)
        offset += t.node_count
    if offset >= 2**32:
        raise ConfigurationError(f"the forest has {offset} nodes: too many for the vote kernel")
    return (np.concatenate(words), thresholds_float32(np.concatenate(thrs)),
            np.concatenate(classes).astype(np.int32), np.asarray(roots, np.uint32))


def forest_votes(forest, X: np.ndarray, flat=None) -> tuple[np.ndarray, np.ndarray]:
    """Hard votes of a fitted scikit-learn random forest.

    Parameters
    ----------
    forest
        A fitted ``RandomForestClassifier`` (single output).
    X
        ``(n, n_features)`` features.
    flat
        The forest flattened by a previous call (internal cache), or None.

    Returns
    -------
    (index, share)
        int64 index into ``forest.classes_`` of the class with the most votes (-1 where a
        feature is NaN) and float32 vote share of that class (NaN there).
    """
    if flat is None:
        flat = flatten_forest(forest.estimators_)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    out_cls = np.empty(n, np.int64)
    out_conf = np.empty(n, np.float32)
    if n:
        _votes_kernel(X, *flat, len(forest.classes_), out_cls, out_conf)
    return out_cls, out_conf


# --------------------------------------------------------------------------------------
# the trained classifier


@dataclass
class CropClassifier:
    """A trained crop classifier (random forest or LightGBM) with what it was trained on.

    Attributes
    ----------
    params
        The settings it was trained with.
    classes
        The class codes (int64), in the estimator's order.
    feature_names
        The features, in column order.
    estimator
        The fitted scikit-learn / LightGBM estimator.
    n_samples
        Training samples per class code.
    """

    params: ClassifierParams
    classes: np.ndarray
    feature_names: list[str]
    estimator: object
    n_samples: dict[int, int] = field(default_factory=dict)
    _flat: tuple | None = field(default=None, repr=False, compare=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_flat"] = None  # rebuilt on first use
        return state

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify rows of features.

        Returns
        -------
        (index, confidence)
            int64 index into :attr:`classes` (-1 for a row with a NaN feature) and float32
            confidence (vote share of the winning class for the random forest, probability
            for LightGBM; NaN for such a row).
        """
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ConfigurationError(f"features shape {X.shape}: expected (n, {len(self.feature_names)})")
        if self.params.method == "rf":
            if self._flat is None:
                self._flat = flatten_forest(self.estimator.estimators_)
            return forest_votes(self.estimator, X, self._flat)
        ok = np.isfinite(X).all(axis=1)
        idx = np.full(X.shape[0], -1, np.int64)
        conf = np.full(X.shape[0], np.nan, np.float32)
        if ok.any():
            proba = self.estimator.predict_proba(X[ok], num_threads=1)
            idx[ok] = np.argmax(proba, axis=1)
            conf[ok] = proba[np.arange(proba.shape[0]), idx[ok]]
        return idx, conf

    def predict_codes(self, X: np.ndarray, nodata: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` as class codes (``nodata`` for rows with a NaN feature)."""
        idx, conf = self.predict(X)
        codes = np.where(idx >= 0, self.classes[np.maximum(idx, 0)], nodata)
        return codes, conf

    def save(self, path: str | Path) -> Path:
        """Write the classifier with joblib (compressed)."""
        joblib = optional_import("joblib", "crop")

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path, compress=3)
        return path

    def describe(self) -> dict:
        """JSON-serialisable facts about the model."""
        return {"method": self.params.method, "params": asdict(self.params),
                "classes": [int(c) for c in self.classes], "n_features": len(self.feature_names),
                "n_samples": {str(k): int(v) for k, v in self.n_samples.items()}}


def load_classifier(path: str | Path) -> CropClassifier:
    """Read a classifier written by :meth:`CropClassifier.save`.

    Raises
    ------
    InputProductError
        The file is missing, unreadable or holds something else.
    """
    joblib = optional_import("joblib", "crop")

    p = Path(path)
    if not p.is_file():
        raise InputProductError(p, "no such model file")
    try:
        obj = joblib.load(p)
    except Exception as exc:
        raise InputProductError(p, f"cannot read the model (expected a joblib file written by "
                                   f"agriseries): {exc}") from exc
    if not isinstance(obj, CropClassifier):
        raise InputProductError(p, f"holds a {type(obj).__name__}, not an agriseries CropClassifier")
    return obj


def train_classifier(X: np.ndarray, y: np.ndarray, params: ClassifierParams = ClassifierParams(),
                     feature_names: list[str] | None = None) -> CropClassifier:
    """Train the classifier on samples.

    Parameters
    ----------
    X
        ``(n, n_features)`` float32 features (rows with a NaN are dropped).
    y
        ``(n,)`` integer class codes.
    params
        The settings.
    feature_names
        Names of the columns (default ``f0``, ``f1``...).

    Raises
    ------
    ConfigurationError
        Fewer than two classes, or no sample left.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ConfigurationError(f"X {X.shape} and y {y.shape}: expected (n, f) and (n,)")
    ok = np.isfinite(X).all(axis=1)
    X, y = X[ok], y[ok].astype(np.int64)
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise ConfigurationError(f"{classes.size} class(es) in the training samples: need at least 2")
    names = list(feature_names) if feature_names is not None else [f"f{i}" for i in range(X.shape[1])]
    if len(names) != X.shape[1]:
        raise ConfigurationError(f"{len(names)} feature names for {X.shape[1]} columns")
    if params.method == "rf":
        forest = optional_import("sklearn.ensemble", "crop")
        RandomForestClassifier = forest.RandomForestClassifier  # noqa: N806

        est = RandomForestClassifier(n_estimators=params.n_trees, max_depth=params.max_depth,
                                     min_samples_split=params.min_samples,
                                     random_state=params.seed, n_jobs=params.n_jobs,
                                     class_weight=params.class_weight)
        est.fit(X, y)
    else:
        LGBMClassifier = optional_import("lightgbm", "crop").LGBMClassifier
        est = LGBMClassifier(n_estimators=params.n_trees, max_depth=params.max_depth,
                             min_child_samples=params.min_samples, learning_rate=params.learning_rate,
                             num_leaves=params.num_leaves, random_state=params.seed,
                             n_jobs=max(0, params.n_jobs), verbose=-1,
                             class_weight=params.class_weight)
        est.fit(X, y)
    if not np.array_equal(np.asarray(est.classes_), classes):
        raise ConfigurationError("the estimator's classes differ from the training classes")
    return CropClassifier(params=params, classes=classes, feature_names=names, estimator=est,
                          n_samples={int(c): int(n) for c, n in zip(classes, counts)})


# --------------------------------------------------------------------------------------
# tile-level application


def _feature_rows(extractor, values, mask, obs_days) -> np.ndarray:
    """``(n_pixels, n_features)`` C-contiguous features of a block."""
    if hasattr(extractor, "rows"):
        return extractor.rows(values, mask, obs_days)
    feats = extractor.block(values, mask, obs_days)
    return np.ascontiguousarray(feats.reshape(feats.shape[0], -1).T)


def _predict_block(values, mask, extractor, obs_days, model, nodata, extra, batch):
    shape = values.shape[2:]
    rows = _feature_rows(extractor, values, mask, obs_days)
    npix = rows.shape[0]
    nextra = 0 if extra is None else extra.n_outputs
    out = np.empty((2 + nextra, npix), np.float32)
    for s in range(0, npix, batch):
        codes, conf = model.predict_codes(rows[s:s + batch], nodata)
        out[0, s:s + batch] = codes
        out[1, s:s + batch] = conf
    if extra is not None:
        out[2:] = extra.block(values, mask, obs_days, rows, extractor.names).reshape(nextra, -1)
    return out.reshape((2 + nextra,) + shape)


def predict_map(ds: xr.Dataset, extractor, model: CropClassifier, *, extra=None,
                batch: int = 65536) -> tuple[da.Array, da.Array, da.Array | None]:
    """Classify every pixel of a multi-date Dataset, lazily, block by block.

    Parameters
    ----------
    ds
        Dims ``(time, y, x)``: the extractor's bands and ``mask``.
    extractor
        A feature extractor (:class:`~agriseries.crop.features.SeriesFeatures` or
        :class:`~agriseries.crop.nolabels.KeyDateFeatures`) whose ``names`` are the model's
        features.
    model
        The trained classifier.
    extra
        Optional object with ``n_outputs = k`` and ``block(values, mask, obs_days, rows,
        names) -> (k, ...)`` evaluated on the same blocks (``rows``: the block's
        ``(n_pixels, n_features)`` features) (e.g.
        :class:`agriseries.crop.postprocess.NDVIPCA`, the components the segmentation uses),
        or None.
    batch
        Pixels classified at once inside a block.

    Returns
    -------
    (classes, confidence, extra)
        Dask arrays ``(y, x)``: class codes (:func:`class_dtype`, its no-data value where a
        pixel has no usable observation), float32 confidence (NaN there) and ``(k, y, x)``
        float32 extra outputs (or None). Compute them together (``dask.compute`` /
        ``da.store``) so that the features are computed once.
    """
    if list(extractor.names) != list(model.feature_names):
        raise ConfigurationError(f"the model was trained on {len(model.feature_names)} features "
                                 f"({model.feature_names[:2]}...) and the extractor makes "
                                 f"{len(extractor.names)} ({extractor.names[:2]}...): the dates or "
                                 "bands differ")
    dtype, nodata = class_dtype(model.classes)
    chunk = getattr(getattr(extractor, "params", None), "chunk", 512)
    values, mask, obs_days = stack_series(ds, extractor.bands, chunk)
    nextra = 0 if extra is None else extra.n_outputs
    out = da.map_blocks(_predict_block, values, mask, extractor, obs_days, model, nodata, extra,
                        batch, dtype=np.float32, drop_axis=1,
                        chunks=((2 + nextra,),) + values.chunks[2:],
                        name=f"agriseries-crop-predict-{uuid.uuid4().hex}")
    classes = out[0].astype(dtype)
    conf = out[1]
    ex = out[2:] if nextra else None
    return classes, conf, ex


def _features_at(values, mask, extractor, obs_days, rows, cols):
    feats = _feature_rows(extractor, values, mask, obs_days)
    return feats[rows * values.shape[3] + cols]


def extract_samples(ds: xr.Dataset, extractor, rows: np.ndarray, cols: np.ndarray
                    ) -> np.ndarray:
    """Features of the pixels at ``(rows, cols)`` of a multi-date Dataset: ``(n, n_features)``.

    Only the blocks that hold a sample are computed; the rows come back in the order given.
    """
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    chunk = getattr(getattr(extractor, "params", None), "chunk", 512)
    values, mask, obs_days = stack_series(ds, extractor.bands, chunk)
    ny, nx = values.shape[2:]
    if rows.size and (rows.min() < 0 or cols.min() < 0 or rows.max() >= ny or cols.max() >= nx):
        raise ConfigurationError("sample pixels outside the grid")
    ybounds = np.cumsum((0,) + values.chunks[2])
    xbounds = np.cumsum((0,) + values.chunks[3])
    bi = np.searchsorted(ybounds, rows, side="right") - 1
    bj = np.searchsorted(xbounds, cols, side="right") - 1
    vblocks = values.to_delayed()
    mblocks = mask.to_delayed()
    tasks, where = [], []
    fn = dask.delayed(_features_at, pure=True)
    for (i, j) in sorted(set(zip(bi.tolist(), bj.tolist()))):
        sel = np.flatnonzero((bi == i) & (bj == j))
        tasks.append(fn(vblocks[0, 0, i, j], mblocks[0, i, j], extractor, obs_days,
                        rows[sel] - ybounds[i], cols[sel] - xbounds[j]))
        where.append(sel)
    out = np.empty((rows.size, len(extractor.names)), np.float32)
    for sel, block in zip(where, dask.compute(*tasks)):
        out[sel] = block
    return out
