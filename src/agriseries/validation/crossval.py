"""Cross-validation that does not flatter: folds of whole parcels (or spatial blocks).

Pixels of one field are near copies of each other; when some of them train a classifier
and the others validate it, the accuracy measures how well the model remembers the field,
not how well it maps a field it has never seen (on the WorldCereal patches this gains 30
points of overall accuracy, docs/accuracy.md). Every figure agriseries reports is
therefore computed on **held-out groups**:

* :func:`group_folds` puts each group (a parcel / polygon id) in exactly one of ``k``
  folds, drawn class by class (a group's class is its most frequent sample class) so that
  every class with ``k`` groups or more is in every fold, with a seeded generator;
* :func:`block_groups` makes the groups when there are no polygons: square blocks of
  ``block`` pixels (the samples of one block are one group);
* :func:`cross_validate` runs the k-fold cross-validation with any ``fit_predict``
  callable, ``repeats`` times with different fold draws, and returns the **pooled**
  confusion matrix of each draw as an :class:`~agriseries.validation.metrics.AccuracyReport`
  whose metadata states the split (:attr:`CrossValidation.split`);
* :func:`group_bootstrap` gives the confidence interval of OA and kappa when the groups,
  not the pixels, are the independent samples: the groups are drawn with replacement and
  the confusion matrix summed over the groups drawn (a percentile bootstrap). With few
  parcels the interval is wide, which is what the pixel count hides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import ConfigurationError
from .metrics import AccuracyReport, accuracy_report

__all__ = ["CrossValidation", "block_groups", "cross_validate", "group_bootstrap", "group_folds"]


def group_folds(groups, classes, k: int, seed: int = 0) -> np.ndarray:
    """The fold (0..k-1) of every sample, whole groups at a time.

    Parameters
    ----------
    groups
        Group id of each sample (parcel, polygon or block id); ids <= 0 are unlabelled and
        get fold -1.
    classes
        Class of each sample (any integer codes).
    k
        Number of folds (at least 2; at most the number of groups).
    seed
        Seed of the draw.

    Returns
    -------
    numpy.ndarray
        int64 fold of each sample; all the samples of a group share it.

    Raises
    ------
    ConfigurationError
        Shapes differ, ``k < 2`` or fewer groups than folds.
    """
    g = np.asarray(groups).ravel()
    c = np.asarray(classes).ravel()
    if g.shape != c.shape:
        raise ConfigurationError(f"groups ({g.size}) and classes ({c.size}) differ in length")
    if int(k) != k or k < 2:
        raise ConfigurationError(f"k {k!r}: expected at least 2 folds")
    lab = g > 0
    out = np.full(g.size, -1, np.int64)
    if not lab.any():
        raise ConfigurationError("no labelled group (every group id is <= 0)")
    ug, ginv = np.unique(g[lab], return_inverse=True)
    if ug.size < k:
        raise ConfigurationError(f"{ug.size} group(s) for {k} folds: expected at least one group "
                                 "per fold")
    uc, cinv = np.unique(c[lab], return_inverse=True)
    counts = np.zeros((ug.size, uc.size), np.int64)
    np.add.at(counts, (ginv, cinv), 1)
    gclass = counts.argmax(axis=1)
    rng = np.random.default_rng(seed)
    fold = np.empty(ug.size, np.int64)
    offset = int(rng.integers(k))
    for cls in range(uc.size):
        members = rng.permutation(np.flatnonzero(gclass == cls))
        fold[members] = (np.arange(members.size) + offset) % k
        offset = (offset + members.size) % k
    out[lab] = fold[ginv]
    return out


def block_groups(shape: tuple[int, int], block: int) -> np.ndarray:
    """Group ids 1..n of square blocks of ``block`` x ``block`` pixels over a 2-D ``shape``
    (the groups of a spatial cross-validation when there are no polygons)."""
    if int(block) != block or block < 1:
        raise ConfigurationError(f"block {block!r}: expected a positive number of pixels")
    ny, nx = (int(v) for v in shape)
    by = np.arange(ny) // block
    bx = np.arange(nx) // block
    nbx = (nx + block - 1) // block
    return (by[:, None] * nbx + bx[None, :] + 1).astype(np.int64)


@dataclass
class CrossValidation:
    """The outcome of :func:`cross_validate`.

    Attributes
    ----------
    reports
        One pooled report per repeat (the confusion matrix adds up the k folds' held-out
        predictions: every sample predicted once, by a model that did not see its group).
    split
        What was held out, in words (also in each report's ``metadata["split"]``).
    k, repeats, n_groups
        Folds, fold draws, and groups.
    """

    reports: list[AccuracyReport]
    split: str
    k: int
    repeats: int
    n_groups: int
    predictions: list[np.ndarray] = field(default_factory=list)

    def _stat(self, attr: str) -> tuple[float, float]:
        v = np.array([getattr(r, attr) for r in self.reports], float)
        return float(v.mean()), float(v.std())

    @property
    def oa(self) -> tuple[float, float]:
        """Mean and standard deviation of the overall accuracy over the repeats."""
        return self._stat("oa")

    @property
    def kappa(self) -> tuple[float, float]:
        """Mean and standard deviation of kappa over the repeats."""
        return self._stat("kappa")

    @property
    def macro_f1(self) -> tuple[float, float]:
        """Mean and standard deviation of the macro F1 over the repeats."""
        return self._stat("macro_f1")

    @property
    def f1(self) -> np.ndarray:
        """Mean F1 of each class over the repeats."""
        return np.nanmean(np.stack([r.f1 for r in self.reports]), axis=0)

    def to_dict(self) -> dict:
        """JSON-safe summary (means, standard deviations and the first repeat's report)."""
        return {"split": self.split, "k": self.k, "repeats": self.repeats,
                "groups": self.n_groups, "oa": list(self.oa), "kappa": list(self.kappa),
                "macro_f1": list(self.macro_f1),
                "f1": [None if not np.isfinite(v) else float(v) for v in self.f1],
                "report": self.reports[0].to_dict()}


def cross_validate(X, y, groups, fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray],
                                                         np.ndarray],
                   *, k: int = 5, repeats: int = 1, seed: int = 0, labels: Sequence | None = None,
                   class_names: Sequence[str] | None = None, group_kind: str = "parcel",
                   metadata: dict | None = None) -> CrossValidation:
    """k-fold cross-validation by group, repeated, with pooled confusion matrices.

    Parameters
    ----------
    X
        ``(n, n_features)`` samples (or anything ``fit_predict`` indexes by rows).
    y
        ``(n,)`` class codes.
    groups
        ``(n,)`` group id (parcel / polygon / block) of each sample; ids <= 0 are left out.
    fit_predict
        ``fit_predict(X_train, y_train, X_test) -> predicted codes`` (train a model on the
        training folds, predict the held-out one).
    k, repeats, seed
        Folds, number of fold draws (seeds ``seed .. seed + repeats - 1``).
    labels, class_names
        The classes of the reports (default: those of ``y``).
    group_kind
        What a group is, for the split's description (``parcel``, ``polygon``, ``location``,
        ``block of 32 px``...).
    metadata
        Extra provenance put in every report.

    Raises
    ------
    ConfigurationError
        Bad shapes or too few groups (see :func:`group_folds`).
    """
    y = np.asarray(y).ravel()
    g = np.asarray(groups).ravel()
    if len(X) != y.size or g.size != y.size:
        raise ConfigurationError(f"X ({len(X)}), y ({y.size}) and groups ({g.size}) differ in "
                                 "length")
    use = g > 0
    codes = list(labels) if labels is not None else np.unique(y[use]).tolist()
    n_groups = int(np.unique(g[use]).size)
    split = (f"{k}-fold cross-validation by {group_kind}: each of the {n_groups} "
             f"{group_kind}s in one fold (folds drawn class by class), every sample predicted "
             f"by a model trained on the other folds only; pooled confusion matrix; "
             f"{repeats} draw(s)")
    reports, preds = [], []
    for r in range(repeats):
        fold = group_folds(g, y, k, seed=seed + r)
        pred = np.empty(y.size, dtype=y.dtype)
        done = np.zeros(y.size, bool)
        for f in range(k):
            te = np.flatnonzero(fold == f)
            tr = np.flatnonzero((fold >= 0) & (fold != f))
            if te.size == 0 or tr.size == 0:
                continue
            if np.unique(y[tr]).size < 2:  # a one-class model cannot be trained: skip the fold
                continue
            pred[te] = np.asarray(fit_predict(X[tr], y[tr], X[te])).ravel()
            done[te] = True
        if not done.any():
            raise ConfigurationError("no fold could be trained (every training set held one "
                                     "class): give more groups")
        meta = {**(metadata or {}), "split": split, "repeat": r, "seed": seed + r,
                "held_out_samples": int(done.sum()),
                "skipped_samples": int(use.sum() - done.sum())}
        reports.append(accuracy_report(pred[done], y[done], labels=codes, class_names=class_names,
                                       metadata=meta))
        preds.append(np.where(done, pred, np.iinfo(np.int64).min) if y.dtype.kind in "iu"
                     else pred)
    return CrossValidation(reports, split, int(k), int(repeats), n_groups, preds)


def group_bootstrap(pred, y, groups, labels: Sequence, *, n: int = 2000, level: float = 0.95,
                    seed: int = 0) -> dict:
    """Percentile bootstrap over groups of OA and kappa of held-out predictions.

    Parameters
    ----------
    pred, y, groups
        Predicted and reference class of each sample, and its group (parcel) id; samples of
        groups <= 0, or whose reference is not in ``labels``, are left out.
    labels
        The classes of the confusion matrix.
    n, level, seed
        Bootstrap draws, interval level and seed.

    Returns
    -------
    dict
        ``oa``, ``kappa``: (value on all the groups, low, high); ``groups``: groups used.

    Raises
    ------
    ConfigurationError
        Shapes differ or no group.
    """
    pred, y, g = (np.asarray(a).ravel() for a in (pred, y, groups))
    if not (pred.size == y.size == g.size):
        raise ConfigurationError(f"pred ({pred.size}), y ({y.size}) and groups ({g.size}) "
                                 "differ in length")
    codes = np.asarray(list(labels))
    use = (g > 0) & np.isin(y, codes) & np.isin(pred, codes)
    if not use.any():
        raise ConfigurationError("no labelled group to bootstrap")
    ug, ginv = np.unique(g[use], return_inverse=True)
    m = codes.size
    pi = np.searchsorted(np.sort(codes), pred[use])
    yi = np.searchsorted(np.sort(codes), y[use])
    counts = np.zeros((ug.size, m * m), np.float64)
    np.add.at(counts, (ginv, pi * m + yi), 1)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(ug.size, np.full(ug.size, 1.0 / ug.size), size=n).astype(np.float64)
    cm = np.vstack([counts.sum(axis=0)[None], w @ counts]).reshape(-1, m, m)
    tot = cm.sum(axis=(1, 2))
    diag = np.trace(cm, axis1=1, axis2=2)
    oa = diag / tot
    pe = (cm.sum(axis=1) * cm.sum(axis=2)).sum(axis=1) / tot ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(pe < 1, (oa - pe) / (1 - pe), np.nan)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    lo_oa, hi_oa = np.nanpercentile(oa[1:], q)
    lo_k, hi_k = np.nanpercentile(kappa[1:], q)
    return {"oa": (float(oa[0]), float(lo_oa), float(hi_oa)),
            "kappa": (float(kappa[0]), float(lo_k), float(hi_k)), "groups": int(ug.size),
            "draws": int(n), "level": float(level)}
