"""Segmentation and majority vote of the crop mask (agriseries.crop.postprocess; docs/crop.md).

Real data: the WorldCereal Flanders 2018 patch (tests/data/worldcereal) and its parcels.
"""

from __future__ import annotations

import numpy as np
import pytest

from agriseries.core.errors import ConfigurationError
from agriseries.crop.classifier import ClassifierParams, train_classifier
from agriseries.crop.postprocess import (
    NDVIPCA,
    SegmentationParams,
    majority_vote,
    postprocess,
    segment,
)
from agriseries.crop.samples import parcel_groups


@pytest.fixture(scope="module")
def patch(wc_patch, wc_season_features):
    _, lc, ct = wc_patch
    sf, feats = wc_season_features
    return sf, feats, lc, ct


def test_defaults():
    p = SegmentationParams()
    assert p.n_components == 6 and p.min_size == 10
    with pytest.raises(ConfigurationError):
        SegmentationParams(overlap=40, chunk=64)


def test_majority_vote_rules():
    classes = np.array([[1, 1, 0, 255],
                        [1, 0, 0, 0]], np.uint8)
    seg = np.array([[7, 7, 7, 7],
                    [7, 3, 3, 3]])
    conf = np.array([[0.9, 0.6, 0.7, np.nan],
                     [0.8, 0.9, 0.6, 0.55]], np.float32)
    out, c = majority_vote(classes, seg, 255, conf)
    # segment 7 has votes 1,1,0,1 (the no-data pixel does not vote and stays no data)
    np.testing.assert_array_equal(out, [[1, 1, 1, 255], [1, 0, 0, 0]])
    np.testing.assert_allclose(c, [[0.9, 0.6, 0.3, np.nan], [0.8, 0.9, 0.6, 0.55]])
    # a tie goes to the smaller code; more than two classes: changed pixels lose their confidence
    out, c = majority_vote(np.array([[1, 2, 3, 3, 2]]), np.zeros((1, 5), int), 255,
                           np.full((1, 5), 0.8, np.float32))
    np.testing.assert_array_equal(out, [[2, 2, 2, 2, 2]])
    assert np.isnan(c[0, [0, 2, 3]]).all() and (c[0, [1, 4]] == 0.8).all()


def test_segments_follow_the_parcels_and_the_vote_cleans_the_map(patch):
    sf, feats, lc, ct = patch
    X = feats.reshape(feats.shape[0], -1).T
    pca = NDVIPCA(sf, X[::5], 6)
    assert pca.n_outputs == 6 and pca.explained[0] > 0.4 and np.all(np.diff(pca.explained) <= 0)
    comps = pca(X).T.reshape(6, 64, 64)
    np.testing.assert_allclose(pca.block(None, None, None, X, sf.names).reshape(6, 64, 64), comps,
                               rtol=1e-5, atol=1e-5)
    seg = segment(comps)
    groups = parcel_groups(np.where(np.isfinite(ct), ct, lc))
    n = seg.max() + 1
    assert 40 < n < 300
    purity = sum(np.bincount(groups[seg == k]).max() for k in range(n)) / groups.size
    assert purity > 0.85
    # a crop mask from a few training pixels, then voted
    crop = (lc == 11).astype(int).ravel()
    rng = np.random.default_rng(0)
    train = rng.choice(crop.size, 300, replace=False)
    model = train_classifier(X[train], crop[train], ClassifierParams(n_trees=20), sf.names)
    idx, conf = model.predict(X)
    raw = model.classes[idx].reshape(64, 64).astype(np.uint8)
    conf = conf.reshape(64, 64)
    voted, vconf = postprocess(raw, conf, comps, 255, SegmentationParams(chunk=128, overlap=16))
    truth = lc == 11
    # the vote trades isolated errors for errors along segments that straddle two parcels:
    # here 0.898 against 0.906 for the raw map
    assert (voted == truth).mean() >= (raw == truth).mean() - 0.02

    def regions(m):  # connected regions of equal class
        from scipy import ndimage

        return sum(ndimage.label(m == v)[1] for v in np.unique(m))

    assert regions(voted) < regions(raw)
    seg_one = segment(comps)
    for k in range(seg_one.max() + 1):  # one class per segment
        assert np.unique(voted[seg_one == k]).size == 1
    changed = voted != raw
    np.testing.assert_allclose(vconf[changed], 1 - conf[changed])
    # tiled processing: blocks larger than the map give exactly the one-piece result
    one, _ = majority_vote(raw, segment(comps), 255, conf)
    np.testing.assert_array_equal(voted, one)
    tiled, _ = postprocess(raw, conf, comps, 255, SegmentationParams(chunk=64, overlap=16))
    assert (tiled == one).mean() > 0.95
