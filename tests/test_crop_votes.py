"""The random forest's hard votes (agriseries.crop.classifier.forest_votes, docs/crop.md "Crop type").

The votes are counted against scikit-learn itself: every fitted tree's own ``predict``,
stacked, gives each pixel's votes; the class is the one with the most votes (ties: the
lowest class index) and the share its votes / trees. Real data: the WorldCereal Flanders
2018 patch (tests/data/worldcereal, the crop mask's 175 features, two classes) and the
Formosat-2 labelled series (tests/data/crop/formosat2, 13 classes, where ties happen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from agriseries.crop.classifier import (
    ClassifierParams,
    flatten_forest,
    thresholds_float32,
    forest_votes,
    train_classifier,
)
from agriseries.crop.features import (
    index_features,
)

DATA = Path(__file__).parent / "data"
F2 = DATA / "crop" / "formosat2"


def _sklearn_votes(forest, X):
    """Reference: (index of the most voted class, its vote share as float32, vote counts)."""
    votes = np.stack([t.predict(X) for t in forest.estimators_]).astype(np.int64)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(len(forest.classes_))])
    return counts.argmax(axis=0), (counts.max(axis=0) / len(forest.estimators_)).astype(np.float32), counts


def _assert_votes_equal(forest, X, flat=None):
    idx, share = forest_votes(forest, X, flat)
    ref_idx, ref_share, counts = _sklearn_votes(forest, X)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(share, ref_share)
    return idx, counts


@pytest.fixture(scope="module")
def wc_features(wc_patch, wc_season_features):
    crop = (wc_patch[1] == 11).astype(np.int64).ravel()
    ex, feats = wc_season_features
    return np.ascontiguousarray(feats.reshape(feats.shape[0], -1).T), crop, ex.names


@pytest.fixture(scope="module")
def wc_forest(wc_features):
    """The crop mask's forest (100 trees, depth 25, 25 samples to split) on 2000 pixels."""
    X, y, names = wc_features
    train = np.random.default_rng(3).choice(X.shape[0], 2000, replace=False)
    return train_classifier(X[train], y[train], ClassifierParams(n_jobs=1), names).estimator


def _formosat(name: str):
    a = np.loadtxt(F2 / name, delimiter=",")
    s = a[:, 2:].reshape(a.shape[0], 149, 3)  # NIR, R, G per date
    nir, r, g = s[..., 0], s[..., 1], s[..., 2]
    idx = index_features({"B03": g, "B04": r, "B08": nir})
    X = np.stack([g, r, nir, idx["NDVI"]], axis=2).reshape(a.shape[0], -1)
    return X.astype(np.float32), a[:, 0].astype(int)


def test_crop_mask_votes_equal_sklearn_trees(wc_features, wc_forest):
    """Every pixel of the patch (4096 rows: 16 batches), against the trees' own predict."""
    X, y, _ = wc_features
    idx, counts = _assert_votes_equal(wc_forest, X)
    assert 0 < idx.mean() < 1 and (idx == y).mean() > 0.9  # both classes, a sensible map
    # the votes of one pixel do not depend on the other rows of its batch
    part = np.random.default_rng(4).permutation(X.shape[0])[:300]
    i2, s2 = forest_votes(wc_forest, X[part])
    np.testing.assert_array_equal(i2, idx[part])
    np.testing.assert_array_equal(s2, counts.max(axis=0)[part].astype(np.float32) / np.float32(100))


def test_rows_with_nan_or_inf_are_skipped(wc_features, wc_forest):
    """NaN / infinite rows get -1 and NaN, anywhere in the batches, the others are unchanged."""
    X, _, _ = wc_features
    X = X[:700].copy()
    bad = np.array([0, 1, 255, 256, 257, 511, 600, 699])
    X[bad, np.arange(bad.size) * 20] = np.nan
    X[300, 174] = np.inf
    X[301, 3] = -np.inf
    bad = np.concatenate([bad, [300, 301]])
    idx, share = forest_votes(wc_forest, X)
    assert (idx[bad] == -1).all() and np.isnan(share[bad]).all()
    good = np.setdiff1d(np.arange(X.shape[0]), bad)
    ref_idx, ref_share, _ = _sklearn_votes(wc_forest, X[good])
    np.testing.assert_array_equal(idx[good], ref_idx)
    np.testing.assert_array_equal(share[good], ref_share)
    # all rows bad, and no row at all
    i0, s0 = forest_votes(wc_forest, X[bad])
    assert (i0 == -1).all() and np.isnan(s0).all()
    i1, s1 = forest_votes(wc_forest, X[:0])
    assert i1.shape == (0,) and s1.shape == (0,)


def test_thirteen_classes_and_ties():
    """Formosat-2, 13 classes: ties between the top classes go to the lowest class index
    (frequent with 10 trees, a few with 100)."""
    Xtr, ytr = _formosat("train_dataset.csv.gz")
    Xte, _ = _formosat("test_dataset.csv.gz")
    X = np.concatenate([Xte, Xtr])
    n_tied = {}
    for n_trees in (100, 10):
        forest = train_classifier(Xtr, ytr, ClassifierParams(n_trees=n_trees, n_jobs=1)).estimator
        idx, counts = _assert_votes_equal(forest, X)
        top = counts.max(axis=0)
        tied = (counts == top).sum(axis=0) > 1
        first = np.array([np.flatnonzero(counts[:, i] == top[i])[0] for i in np.flatnonzero(tied)])
        np.testing.assert_array_equal(idx[tied], first)
        n_tied[n_trees] = int(tied.sum())
        assert len(np.unique(idx)) >= 10
    assert n_tied[100] >= 1 and n_tied[10] >= 20, n_tied  # the rule is exercised


def test_float32_thresholds_exact():
    """The largest float32 at or below t: ``x <= t`` and ``x <= t32`` agree for every float32 x."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 2000).astype(np.float32)
    b = np.nextafter(a, np.float32(np.inf))
    f32max = float(np.finfo(np.float32).max)
    t = np.concatenate([
        a.astype(np.float64),                               # exactly a float32
        a.astype(np.float64) / 2 + b.astype(np.float64) / 2,  # between two adjacent float32
        rng.normal(0, 1e3, 2000),                           # anywhere
        [0.0, -0.0, 1e-45, -1e-45, 1e-300, f32max, -f32max, 1.5 * f32max, -1.5 * f32max,
         f32max + 1e25, -f32max - 1e25, np.inf, -np.inf],
    ])
    t32 = thresholds_float32(t)
    assert t32.dtype == np.float32
    with np.errstate(over="ignore"):
        up = np.nextafter(t32, np.float32(np.inf))
        down = np.nextafter(t32, np.float32(-np.inf))
    assert np.all(t32.astype(np.float64) <= t)  # at or below ...
    assert np.all((up.astype(np.float64) > t) | (t32 == np.float32(np.inf)))  # ... and the largest
    assert t32[-4] == np.finfo(np.float32).max and t32[-3] == -np.inf
    for x in (t32, up, down):
        ok = np.isfinite(x)
        np.testing.assert_array_equal(x[ok].astype(np.float64) <= t[ok], x[ok] <= t32[ok])
    # rounding to the nearest float32 would be wrong at the midpoints (half of them round up)
    mid = t[2000:4000]
    assert np.sum(mid.astype(np.float32).astype(np.float64) > mid) > 100


def test_values_at_the_thresholds(wc_features, wc_forest):
    """Pixels whose feature sits exactly at a split's threshold, one float32 step above or
    below it, for 1500 splits of the forest: same votes as scikit-learn."""
    X, _, _ = wc_features
    rng = np.random.default_rng(5)
    splits = [(tree, node) for tree, est in enumerate(wc_forest.estimators_)
              for node in np.flatnonzero(est.tree_.children_left >= 0)]
    pick = rng.choice(len(splits), 1500, replace=False)
    rows = []
    n_rounded_up = 0
    for s in pick:
        tree, node = splits[s]
        t = wc_forest.estimators_[tree].tree_
        thr, feat = t.threshold[node], t.feature[node]
        near = np.float32(thr)
        n_rounded_up += float(near) > thr
        for x in (near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf))):
            row = X[rng.integers(X.shape[0])].copy()
            row[feat] = x
            rows.append(row)
    assert n_rounded_up > 50  # thresholds where a plain float32 cast would send x = cast(t) the wrong way
    _assert_votes_equal(wc_forest, np.array(rows))


def test_single_leaf_trees_and_flat_cache(wc_features):
    """Trees that are a lone leaf (no sample count allows a split) vote their leaf's class;
    the flattened forest passed back in gives the same votes."""
    X, y, _ = wc_features
    forest = RandomForestClassifier(n_estimators=9, min_samples_split=10_000, random_state=0,
                                    n_jobs=1).fit(X[:500], y[:500])
    assert all(e.tree_.node_count == 1 for e in forest.estimators_)
    _assert_votes_equal(forest, X[:300])
    mixed = RandomForestClassifier(n_estimators=7, max_depth=3, random_state=1, n_jobs=1)
    mixed.fit(X[:400], y[:400])
    flat = flatten_forest(mixed.estimators_)
    nodes, thr, leaf_cls, roots = flat
    assert nodes.dtype == np.uint64 and thr.dtype == np.float32 and roots.size == 7
    assert set(np.unique(leaf_cls)) == {0, 1}
    # siblings side by side: a split's right child is its left child + 1
    child = (nodes & np.uint64(0xFFFFFFFF)).astype(np.int64)
    split = child != np.arange(child.size)
    assert np.isinf(thr[~split]).all() and not np.isinf(thr[split]).any()
    assert np.all(np.isin(child[split] + 1, np.arange(child.size)))
    _assert_votes_equal(mixed, X, flat)
