"""Grouped cross-validation (agriseries.validation.crossval; docs/validation.md).

Real data: the WorldCereal Flanders 2018 patch of tests/data (features of the crop
products, LPIS labels): the groups are its parcels.
"""

from __future__ import annotations

import numpy as np
import pytest

from agriseries.core.errors import ConfigurationError
from agriseries.crop.classifier import ClassifierParams, train_classifier
from agriseries.crop.samples import parcel_groups
from agriseries.validation.crossval import block_groups, cross_validate, group_bootstrap, group_folds
from agriseries.validation.metrics import accuracy_report
from agriseries.validation.report import report_markdown


def test_group_folds_keep_groups_whole_and_spread_classes():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(1, 41), rng.integers(1, 30, 40))
    gclass = np.arange(40) % 2  # 20 groups of each class
    classes = gclass[groups - 1]
    folds = group_folds(groups, classes, 5, seed=1)
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1
    for c in (0, 1):  # 20 groups of a class over 5 folds: 4 in each
        per = [np.unique(groups[(folds == f) & (classes == c)]).size for f in range(5)]
        assert per == [4] * 5
    again = group_folds(groups, classes, 5, seed=1)
    np.testing.assert_array_equal(folds, again)
    assert not np.array_equal(folds, group_folds(groups, classes, 5, seed=2))


def test_group_folds_unlabelled_and_errors():
    folds = group_folds(np.array([0, 1, 2, -1, 3]), np.array([0, 0, 1, 1, 0]), 2)
    assert folds[0] == -1 and folds[3] == -1 and (folds[[1, 2, 4]] >= 0).all()
    with pytest.raises(ConfigurationError, match="2 group"):
        group_folds(np.array([1, 1, 2]), np.array([0, 0, 1]), 3)
    with pytest.raises(ConfigurationError, match="at least 2 folds"):
        group_folds(np.array([1, 2]), np.array([0, 1]), 1)
    with pytest.raises(ConfigurationError, match="differ in length"):
        group_folds(np.array([1, 2]), np.array([0]), 2)


def test_block_groups():
    b = block_groups((5, 7), 3)
    assert b.shape == (5, 7) and b.min() == 1 and b.max() == 6
    assert (b[:3, :3] == 1).all() and b[0, 3] == 2 and b[3, 0] == 4 and b[4, 6] == 6
    with pytest.raises(ConfigurationError, match="block"):
        block_groups((5, 5), 0)


def _patch(wc_patch, wc_season_features):
    _, lc, ct = wc_patch
    _, feats = wc_season_features
    X = feats.reshape(feats.shape[0], -1).T
    y = (lc == 11).astype(np.int64).ravel()
    groups = parcel_groups(np.where(np.isfinite(ct), ct, lc)).ravel()
    return X, y, groups


def test_no_held_out_parcel_is_seen_in_training(wc_patch, wc_season_features):
    X, y, groups = _patch(wc_patch, wc_season_features)
    seen = []

    def fit_predict(Xtr, ytr, Xte):
        # which parcels trained this fold, and which are predicted
        tr = {tuple(r) for r in Xtr[:, :6].tolist()}
        te = {tuple(r) for r in Xte[:, :6].tolist()}
        seen.append((tr, te))
        return np.zeros(len(Xte), np.int64)

    # rows identify pixels here: index features by the pixel number
    Xi = np.column_stack([np.arange(y.size)] * 6)
    cv = cross_validate(Xi, y, groups, fit_predict, k=4, seed=0)
    held = []
    for tr, te in seen:
        tr_groups = {int(groups[int(r[0])]) for r in tr}
        te_groups = {int(groups[int(r[0])]) for r in te}
        assert not tr_groups & te_groups
        held.append(te_groups)
    assert set().union(*held) == set(np.unique(groups).tolist())
    rep = cv.reports[0]
    assert rep.n == y.size and "by parcel" in rep.metadata["split"]
    assert "23 parcels" in cv.split
    assert "split" in report_markdown(rep) and cv.split in report_markdown(rep)


def test_parcel_split_is_far_below_the_leaky_pixel_split(wc_patch, wc_season_features):
    """Pixels of one field on both sides flatter the map: on this patch the grouped figure
    must come out well below a pixel-random split with the same classifier."""
    X, y, groups = _patch(wc_patch, wc_season_features)
    params = ClassifierParams(n_trees=30, n_jobs=1)

    def fit_predict(Xtr, ytr, Xte):
        m = train_classifier(Xtr, ytr, params)
        i, _ = m.predict(Xte)
        return m.classes[i]

    grouped = cross_validate(X, y, groups, fit_predict, k=4, seed=0)
    pixels = np.arange(1, y.size + 1)  # every pixel its own group: the leaky split
    leaky = cross_validate(X, y, pixels, fit_predict, k=4, seed=0, group_kind="pixel")
    assert leaky.oa[0] > 0.9
    assert grouped.oa[0] < leaky.oa[0] - 0.15
    assert grouped.kappa[0] < 0.4


def test_group_bootstrap_intervals_count_groups_not_pixels():
    # 10 parcels of 100 px, each mapped all right (8) or all wrong (2): OA 0.8 on 1000 px.
    # Were the pixels independent, the 95 % interval would be 0.8 +- 0.025; by parcel it is
    # the binomial spread of 10 draws (about 0.5 .. 1.0).
    y = np.repeat(np.array([0, 1] * 5), 100)
    groups = np.repeat(np.arange(1, 11), 100)
    wrong = np.isin(groups, [3, 8])
    pred = np.where(wrong, 1 - y, y)
    b = group_bootstrap(pred, y, groups, [0, 1], n=4000, seed=1)
    rep = accuracy_report(pred, y, labels=[0, 1])
    assert b["oa"][0] == pytest.approx(rep.oa) == 0.8
    assert b["kappa"][0] == pytest.approx(rep.kappa)
    assert b["groups"] == 10
    lo, hi = b["oa"][1:]
    assert lo <= 0.6 and hi == 1.0
    # the same errors spread over 100 parcels of 10 px: a much narrower interval
    groups100 = np.repeat(np.arange(1, 101), 10)
    wrong100 = np.isin(groups100, np.arange(1, 101, 5))  # 20 of 100 parcels wrong
    pred100 = np.where(wrong100, 1 - y, y)
    b100 = group_bootstrap(pred100, y, groups100, [0, 1], n=4000, seed=1)
    assert b100["oa"][0] == pytest.approx(0.8)
    assert b100["oa"][2] - b100["oa"][1] < 0.5 * (hi - lo)
    # unlabelled groups and classes outside labels are left out; bad input is named
    g2 = groups.copy()
    g2[:100] = 0
    assert group_bootstrap(pred, y, g2, [0, 1], n=100)["groups"] == 9
    with pytest.raises(ConfigurationError, match="differ in length"):
        group_bootstrap(pred[:5], y, groups, [0, 1])
    with pytest.raises(ConfigurationError, match="no labelled group"):
        group_bootstrap(pred, y, np.zeros_like(groups), [0, 1])
