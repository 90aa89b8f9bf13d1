"""Accuracy metrics of a classified map: confusion matrix, OA, kappa, UA/PA/F1 and the
area-adjusted (stratified) estimators of Olofsson et al. (2014).

Conventions (docs/validation.md)
--------------------------------
The confusion matrix ``n_ij`` counts the samples of **map** class ``i`` (row) and
**reference** class ``j`` (column); ``n = sum n_ij``, ``n_i. = sum_j n_ij`` (map totals),
``n_.j = sum_i n_ij`` (reference totals).

* overall accuracy ``OA = sum_i n_ii / n``;
* user's accuracy (precision) ``UA_i = n_ii / n_i.``, commission error ``1 - UA_i``;
* producer's accuracy (recall) ``PA_j = n_jj / n_.j``, omission error ``1 - PA_j``;
* F1 ``F1_i = 2 UA_i PA_i / (UA_i + PA_i) = 2 n_ii / (n_i. + n_.i)`` and its mean over
  the classes present in the map or in the reference (macro F1);
* Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` with ``p_e = sum_i (n_i./n)(n_.i/n)``, kept
  for comparison with the Sen2Agri papers; Olofsson et al. (2014) advise against it.

Area-adjusted estimates (Olofsson et al. 2014, RSE 148:42-57)
-------------------------------------------------------------
For a stratified random sample whose strata are the map classes, with mapped area
``A_i`` of each class and weight ``W_i = A_i / A_tot``:

* estimated area proportions ``p_ij = W_i n_ij / n_i.``;
* ``OA = sum_j p_jj``, ``UA_i = p_ii / p_i.``, ``PA_j = p_jj / p_.j``;
* estimated area of class ``j``: ``A_tot p_.j``, standard error
  ``SE(p_.j) = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1))``;
* ``V(OA) = sum_i W_i^2 UA_i (1 - UA_i) / (n_i. - 1)``, ``V(UA_i) = UA_i (1 - UA_i) / (n_i. - 1)``,
  ``V(PA_j)`` by the formula of Olofsson et al. (2014), written out in
  docs/validation.md "Area-adjusted estimates";
* 95 % confidence interval ``+/- 1.96 SE`` (the half-width is reported).

Edge cases are explicit rather than silent: a class never mapped has ``UA = NaN``, a
class absent from the reference ``PA = NaN``; a stratum with mapped area but no
sample cannot be estimated and is left out of the population (its area is reported
as excluded and a note says so); a stratum with a single sample gives NaN variances
(``n_i. - 1 = 0``), with a note. The unit tests check these formulas against hand
computations and the worked example of Olofsson et al. (2014, Tables 8-9, p. 54).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import ConfigurationError

Z95 = 1.96
"""Standard-normal quantile for the 95 % confidence intervals (Olofsson et al. 2014)."""

__all__ = [
    "Z95",
    "AccuracyReport",
    "AreaAdjusted",
    "accuracy_report",
    "area_adjusted_from_matrix",
    "confusion_matrix",
    "report_from_matrix",
]


# ----------------------------------------------------------------------------- helpers

def _div(a, b):
    """Element-wise a / b with NaN where b == 0, without numpy warnings."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=b != 0)
    return out if out.ndim else float(out)


def _py(value: Any) -> Any:
    """A JSON-safe Python value: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_py(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _py(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean_labels(values: np.ndarray) -> np.ndarray:
    """Integral floats become int64 so that 11.0 and 11 are the same class."""
    if values.dtype.kind == "f":
        if values.size and not np.all(np.equal(np.mod(values, 1), 0)):
            raise ConfigurationError(
                "class labels must be integers or strings; got non-integral values "
                f"such as {values[np.mod(values, 1) != 0][:3].tolist()}")
        return values.astype(np.int64)
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind in "UO":
        return values.astype(str)
    raise ConfigurationError(f"class labels of dtype {values.dtype} are not supported "
                             "(integers or strings expected)")


def _label_list(labels: np.ndarray) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in labels]


def _codes(values: np.ndarray, labels: np.ndarray, what: str) -> np.ndarray:
    """Index of each value in ``labels``; ConfigurationError names unknown values."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    pos = np.searchsorted(ordered, values)
    pos_c = np.clip(pos, 0, len(ordered) - 1)
    known = (pos < len(ordered)) & (ordered[pos_c] == values) if len(ordered) else \
        np.zeros(values.shape, bool)
    if not np.all(known):
        unknown = np.unique(values[~known])
        raise ConfigurationError(
            f"{what} holds classes that are not in `labels`: {_label_list(unknown[:10])}"
            f"{' ...' if unknown.size > 10 else ''}; add them to `labels` or filter them "
            f"out (labels: {_label_list(labels)})")
    return order[pos_c]


# ----------------------------------------------------------------------------- matrix

def _prepare(y_map, y_ref, labels):
    y_map = np.asarray(y_map).ravel()
    y_ref = np.asarray(y_ref).ravel()
    if y_map.shape != y_ref.shape:
        raise ConfigurationError(
            f"y_map and y_ref must have the same number of samples, got {y_map.size} "
            f"and {y_ref.size}")
    notes = []
    nan = np.zeros(y_map.shape, bool)
    for arr in (y_map, y_ref):
        if arr.dtype.kind == "f":
            nan |= np.isnan(arr)
    if nan.any():
        notes.append(f"{int(nan.sum())} sample(s) with NaN in the map or the reference "
                     "were left out")
        y_map, y_ref = y_map[~nan], y_ref[~nan]
    y_map = _clean_labels(y_map)
    y_ref = _clean_labels(y_ref)
    if y_map.dtype.kind != y_ref.dtype.kind and y_map.size:
        raise ConfigurationError(
            f"map labels ({y_map.dtype}) and reference labels ({y_ref.dtype}) are of "
            "different kinds: use integer codes on both sides or strings on both sides")
    if labels is None:
        lab = np.unique(np.concatenate([y_map, y_ref]))
    else:
        lab = _clean_labels(np.asarray(list(labels)))
        if lab.size == 0:
            raise ConfigurationError("`labels` is empty")
        if np.unique(lab).size != lab.size:
            raise ConfigurationError(f"`labels` has duplicates: {_label_list(lab)}")
    return y_map, y_ref, lab, notes


def confusion_matrix(y_map, y_ref, labels=None) -> np.ndarray:
    """Confusion matrix of map classes (rows) against reference classes (columns).

    Parameters
    ----------
    y_map
        Map class of each sample (any shape; integers, integral floats or strings).
        NaN samples (in either array) are left out.
    y_ref
        Reference class of each sample, same number of samples as ``y_map``.
    labels
        Class order of the rows and columns. Default: the sorted union of the classes
        found in both arrays. A sample whose class is not in ``labels`` raises
        :class:`~agriseries.core.errors.ConfigurationError`.

    Returns
    -------
    numpy.ndarray
        ``(q, q)`` int64 counts ``n_ij``: map class ``labels[i]``, reference class
        ``labels[j]`` (docs/validation.md).
    """
    y_map, y_ref, lab, _ = _prepare(y_map, y_ref, labels)
    return _matrix(y_map, y_ref, lab)


def _matrix(y_map, y_ref, lab) -> np.ndarray:
    q = lab.size
    if y_map.size == 0:
        return np.zeros((q, q), np.int64)
    i = _codes(y_map, lab, "y_map")
    j = _codes(y_ref, lab, "y_ref")
    return np.bincount(i * q + j, minlength=q * q).reshape(q, q).astype(np.int64)


# ----------------------------------------------------------------------------- results

@dataclass
class AreaAdjusted:
    """Stratified (area-weighted) estimates of Olofsson et al. (2014).

    Arrays are indexed like the classes of the confusion matrix. ``*_ci`` are the
    half-widths of the 95 % confidence intervals (``1.96 * SE``). Areas are in
    ``area_unit``.
    """

    mapped_area: np.ndarray
    """Mapped area ``A_i`` of each map class (stratum), in ``area_unit``."""
    weights: np.ndarray
    """``W_i = A_i / A_tot`` over the sampled strata (0 for strata left out)."""
    proportions: np.ndarray
    """Estimated area proportions ``p_ij`` (rows map, columns reference); NaN rows for
    strata without sample."""
    oa: float
    oa_se: float
    oa_ci: float
    ua: np.ndarray
    ua_se: np.ndarray
    ua_ci: np.ndarray
    pa: np.ndarray
    pa_se: np.ndarray
    pa_ci: np.ndarray
    area_proportion: np.ndarray
    """``p_.j``, the estimated proportion of the (sampled) population in class ``j``."""
    area_proportion_se: np.ndarray
    area: np.ndarray
    """Estimated area ``A_tot p_.j`` of each reference class."""
    area_se: np.ndarray
    area_ci: np.ndarray
    total_area: float
    """``A_tot``: mapped area of the strata that have samples."""
    excluded_area: float
    """Mapped area of the strata left out because they have no sample."""
    area_unit: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-safe dictionary (NaN as ``null``)."""
        return _py({
            "method": "stratified estimator, Olofsson et al. 2014 (RSE 148:42-57)",
            "z": Z95,
            "area_unit": self.area_unit,
            "total_area": self.total_area,
            "excluded_area": self.excluded_area,
            "mapped_area": self.mapped_area,
            "weights": self.weights,
            "proportions": self.proportions,
            "oa": self.oa, "oa_se": self.oa_se, "oa_ci95": self.oa_ci,
            "ua": self.ua, "ua_se": self.ua_se, "ua_ci95": self.ua_ci,
            "pa": self.pa, "pa_se": self.pa_se, "pa_ci95": self.pa_ci,
            "area_proportion": self.area_proportion,
            "area_proportion_se": self.area_proportion_se,
            "area": self.area, "area_se": self.area_se, "area_ci95": self.area_ci,
            "notes": list(self.notes),
        })


@dataclass
class AccuracyReport:
    """All accuracy figures of one map against one reference (docs/validation.md).

    Per-class arrays follow ``labels``. ``area_adjusted`` is present when mapped areas
    were given (Olofsson et al. 2014).
    """

    labels: list
    """Class values, in the order of the matrix rows and columns."""
    class_names: list[str]
    matrix: np.ndarray
    """Counts ``n_ij``, rows = map class, columns = reference class."""
    n: int
    oa: float
    kappa: float
    ua: np.ndarray
    """User's accuracy ``n_ii / n_i.`` (NaN for a class never mapped)."""
    pa: np.ndarray
    """Producer's accuracy ``n_jj / n_.j`` (NaN for a class absent from the reference)."""
    f1: np.ndarray
    omission: np.ndarray
    """``1 - PA``."""
    commission: np.ndarray
    """``1 - UA``."""
    macro_f1: float
    """Mean F1 over the classes present in the map or the reference."""
    map_totals: np.ndarray
    """``n_i.``, samples per map class."""
    reference_totals: np.ndarray
    """``n_.j``, samples per reference class."""
    area_adjusted: AreaAdjusted | None = None
    notes: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    """Provenance (map and reference files, options), free-form but JSON-safe."""

    def per_class(self) -> list[dict]:
        """One dictionary per class: label, name, totals, UA, PA, F1, errors."""
        rows = []
        for k, lab in enumerate(self.labels):
            rows.append({
                "label": lab, "name": self.class_names[k],
                "n_map": int(self.map_totals[k]), "n_reference": int(self.reference_totals[k]),
                "ua": float(self.ua[k]), "pa": float(self.pa[k]), "f1": float(self.f1[k]),
                "commission": float(self.commission[k]), "omission": float(self.omission[k]),
            })
        return rows

    def to_dict(self) -> dict:
        """JSON-safe dictionary of the whole report (NaN as ``null``)."""
        return _py({
            "labels": self.labels,
            "class_names": self.class_names,
            "n": self.n,
            "oa": self.oa,
            "kappa": self.kappa,
            "macro_f1": self.macro_f1,
            "confusion_matrix": {"rows": "map", "columns": "reference",
                                 "counts": self.matrix},
            "classes": self.per_class(),
            "area_adjusted": self.area_adjusted.to_dict() if self.area_adjusted else None,
            "notes": list(self.notes),
            "metadata": self.metadata,
        })


# ----------------------------------------------------------------------------- estimators

def area_adjusted_from_matrix(matrix, mapped_areas, *, class_names: Sequence[str] | None = None,
                              pixel_area: float | None = None,
                              area_unit: str | None = None) -> AreaAdjusted:
    """Stratified estimates of accuracy and class areas from a count matrix.

    Olofsson et al. (2014) (docs/validation.md): the map classes are
    the strata, ``W_i = A_i / A_tot``, ``p_ij = W_i n_ij / n_i.``.

    Parameters
    ----------
    matrix
        ``(q, q)`` sample counts, rows = map class (stratum), columns = reference class.
    mapped_areas
        Mapped area (or pixel count) ``A_i`` of each map class, in row order; length q.
    class_names
        Names used in the notes (default: row numbers).
    pixel_area
        Multiplies ``mapped_areas`` (e.g. pixel counts times the pixel area in m^2).
    area_unit
        Unit of the resulting areas, for the report (default ``"m²"`` when
        ``pixel_area`` is given, otherwise ``"unit of mapped_areas"``).

    Returns
    -------
    AreaAdjusted
        Estimates with standard errors and 95 % half-widths. Strata with mapped area
        but no sample are left out of the population (``excluded_area``, note); strata
        with a single sample give NaN variances (note).
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ConfigurationError(f"the confusion matrix must be square, got shape {m.shape}")
    if np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ConfigurationError("the confusion matrix must hold finite non-negative counts")
    q = m.shape[0]
    a = np.asarray(mapped_areas, dtype=float).ravel()
    if a.size != q:
        raise ConfigurationError(f"mapped_areas has {a.size} values for {q} map classes")
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ConfigurationError(f"mapped_areas must be finite and non-negative, got {a.tolist()}")
    if pixel_area is not None:
        if not (pixel_area > 0 and math.isfinite(pixel_area)):
            raise ConfigurationError(f"pixel_area must be a positive number, got {pixel_area}")
        a = a * float(pixel_area)
    unit = area_unit or ("m²" if pixel_area is not None else "unit of mapped_areas")
    names = list(class_names) if class_names is not None else [str(k) for k in range(q)]
    notes: list[str] = []

    n_i = m.sum(axis=1)
    sampled = n_i > 0
    unsampled_area = (~sampled) & (a > 0)
    if unsampled_area.any():
        lost = [names[k] for k in np.flatnonzero(unsampled_area)]
        notes.append(
            f"stratum/strata {lost} have mapped area but no sample: left out of the "
            f"population ({a[unsampled_area].sum():g} {unit}); the estimates cover the "
            "sampled strata only")
    zero_area = sampled & (a == 0)
    if zero_area.any():
        notes.append(f"map class(es) {[names[k] for k in np.flatnonzero(zero_area)]} have "
                     "samples but no mapped area: weight 0")
    single = n_i == 1
    if single.any():
        notes.append(f"stratum/strata {[names[k] for k in np.flatnonzero(single)]} have a "
                     "single sample: variances need n_i. >= 2, so the standard errors that "
                     "involve them are NaN")

    a_used = np.where(sampled, a, 0.0)
    total = float(a_used.sum())
    excluded = float(a[~sampled].sum())
    w = _div(a_used, total) if total > 0 else np.zeros(q)
    if total <= 0:
        notes.append("no sampled stratum has a mapped area: nothing can be estimated")

    frac = _div(m, n_i[:, None])                     # n_ij / n_i. (NaN rows if unsampled)
    p = w[:, None] * frac                            # p_ij
    p_s = np.where(sampled[:, None], p, 0.0)         # unsampled strata contribute nothing
    col = p_s.sum(axis=0)                            # p_.j
    diag = np.diag(p_s)
    ua = np.where(sampled, np.diag(frac), np.nan)    # UA_i = p_ii / p_i. = n_ii / n_i.
    pa = _div(diag, col)                             # PA_j = p_jj / p_.j
    oa = float(diag.sum())                           # OA = sum_j p_jj

    # variance terms x(1 - x) / (n_i. - 1): NaN when n_i. = 1, 0 for strata left out
    # or of zero weight
    dof = n_i - 1.0
    keep = sampled & (w > 0)
    ua_var = np.where(sampled, _div(ua * (1.0 - ua), dof), np.nan)
    frac_var = np.where(keep[:, None], _div(frac * (1.0 - frac), dof[:, None]), 0.0)
    oa_var = float(np.sum(np.where(keep, w**2 * ua_var, 0.0)))
    col_var = np.sum((w**2)[:, None] * frac_var, axis=0)          # V(p_.j)

    # V(PA_j) (Olofsson et al. 2014), N_i. replaced by W_i (the scale cancels):
    # [W_j^2 (1-PA_j)^2 UA_j(1-UA_j)/(n_j.-1) + PA_j^2 sum_{i!=j} W_i^2 f_ij(1-f_ij)/(n_i.-1)]
    # / p_.j^2
    pa_var = np.full(q, np.nan)
    for j in range(q):
        if not sampled[j] or not col[j] > 0:
            continue                                  # PA_j or UA_j undefined
        first = w[j] ** 2 * (1.0 - pa[j]) ** 2 * (ua_var[j] if w[j] > 0 else 0.0)
        second = pa[j] ** 2 * sum(w[i] ** 2 * frac_var[i, j] for i in range(q) if i != j)
        pa_var[j] = (first + second) / col[j] ** 2

    if total <= 0:
        oa = oa_var = math.nan
        col = col_var = pa = pa_var = np.full(q, np.nan)
    oa_se = math.sqrt(oa_var) if math.isfinite(oa_var) else math.nan
    ua_se = np.sqrt(ua_var)
    pa_se = np.sqrt(pa_var)
    col_se = np.sqrt(col_var)

    return AreaAdjusted(
        mapped_area=a, weights=w, proportions=np.where(sampled[:, None], p, np.nan),
        oa=oa, oa_se=oa_se, oa_ci=Z95 * oa_se,
        ua=ua, ua_se=ua_se, ua_ci=Z95 * ua_se,
        pa=pa, pa_se=pa_se, pa_ci=Z95 * pa_se,
        area_proportion=col, area_proportion_se=col_se,
        area=total * col, area_se=total * col_se, area_ci=Z95 * total * col_se,
        total_area=total, excluded_area=excluded, area_unit=unit, notes=notes,
    )


def report_from_matrix(matrix, labels, class_names: Sequence[str] | None = None,
                       mapped_areas=None, pixel_area: float | None = None, *,
                       area_unit: str | None = None, notes: Sequence[str] = (),
                       metadata: Mapping | None = None) -> AccuracyReport:
    """Accuracy report from a count matrix (rows = map, columns = reference).

    Used by :func:`accuracy_report` and by the block-wise map validation, which
    accumulates counts without ever holding the sample arrays.

    Parameters
    ----------
    matrix
        ``(q, q)`` counts.
    labels
        The q class values, in row/column order.
    class_names
        Readable names (default: the labels as text).
    mapped_areas
        Mapped area or pixel count of each map class: a sequence in label order or a
        mapping label -> area (labels missing from the mapping have area 0).
        When given, the area-adjusted estimates are computed.
    pixel_area
        Multiplies ``mapped_areas`` (pixel counts -> area).
    area_unit
        Unit of the areas (see :func:`area_adjusted_from_matrix`).
    notes
        Notes to carry into the report.
    metadata
        Provenance stored in the report.

    Returns
    -------
    AccuracyReport
    """
    m = np.asarray(matrix)
    lab = _label_list(np.asarray(list(labels)))
    q = len(lab)
    if m.shape != (q, q):
        raise ConfigurationError(f"matrix of shape {m.shape} does not match {q} labels")
    m = m.astype(np.int64)
    if class_names is None:
        names = [str(v) for v in lab]
    else:
        names = [str(v) for v in class_names]
        if len(names) != q:
            raise ConfigurationError(
                f"class_names has {len(names)} names for {q} labels ({lab})")
    n_i = m.sum(axis=1)
    n_j = m.sum(axis=0)
    n = int(m.sum())
    diag = np.diag(m).astype(float)
    oa = _div(diag.sum(), n)
    pe = _div(float(np.sum(n_i.astype(float) * n_j)), float(n) ** 2) if n else math.nan
    kappa = _div(oa - pe, 1.0 - pe) if n and pe != 1.0 else math.nan
    ua = _div(diag, n_i)
    pa = _div(diag, n_j)
    f1 = _div(2.0 * diag, n_i + n_j)
    present = (n_i + n_j) > 0
    macro_f1 = float(np.mean(f1[present])) if present.any() else math.nan
    all_notes = list(notes)
    if n == 0:
        all_notes.append("no sample: every figure is undefined")
    absent_map = [names[k] for k in range(q) if n_i[k] == 0 and n_j[k] > 0]
    if absent_map:
        all_notes.append(f"class(es) {absent_map} never mapped among the samples: UA undefined")
    absent_ref = [names[k] for k in range(q) if n_j[k] == 0 and n_i[k] > 0]
    if absent_ref:
        all_notes.append(f"class(es) {absent_ref} absent from the reference: PA undefined")

    area = None
    if mapped_areas is not None:
        if isinstance(mapped_areas, Mapping):
            areas_by_label = {(_label_list(_clean_labels(np.asarray([k])))[0]): v
                              for k, v in mapped_areas.items()}
            unknown = [k for k in areas_by_label if k not in lab]
            if unknown:
                raise ConfigurationError(
                    f"mapped_areas has classes that are not in the labels: {unknown}")
            a = [float(areas_by_label.get(v, 0.0)) for v in lab]
        else:
            a = list(np.asarray(mapped_areas, dtype=float).ravel())
        area = area_adjusted_from_matrix(m, a, class_names=names, pixel_area=pixel_area,
                                         area_unit=area_unit)
    return AccuracyReport(
        labels=lab, class_names=names, matrix=m, n=n, oa=float(oa), kappa=float(kappa),
        ua=ua, pa=pa, f1=f1, omission=1.0 - pa, commission=1.0 - ua, macro_f1=macro_f1,
        map_totals=n_i, reference_totals=n_j, area_adjusted=area, notes=all_notes,
        metadata=dict(metadata or {}),
    )


def accuracy_report(y_map, y_ref, labels=None, class_names=None, mapped_areas=None,
                    pixel_area=None, *, area_unit: str | None = None,
                    metadata: Mapping | None = None) -> AccuracyReport:
    """Accuracy figures of map labels against reference labels.

    Parameters
    ----------
    y_map
        Map class of each sample (integers, integral floats or strings; NaN left out).
    y_ref
        Reference class of each sample.
    labels
        Class order (default: sorted union of the classes in ``y_map``, ``y_ref`` and
        the keys of ``mapped_areas`` when it is a mapping).
    class_names
        Readable names, one per label.
    mapped_areas
        Mapped area or pixel count of each map class (the strata of Olofsson et al.
        2014), as a sequence in label order or a mapping label -> area. When given,
        ``report.area_adjusted`` holds the stratified estimates with 95 % intervals.
    pixel_area
        Multiplies ``mapped_areas`` (pixel counts to m^2, say).
    area_unit
        Unit of the areas in the report (default ``"m²"`` when ``pixel_area`` is given).
    metadata
        Provenance stored in the report.

    Returns
    -------
    AccuracyReport
        Matrix, OA, kappa, per-class UA/PA/F1/omission/commission, macro F1 and, with
        ``mapped_areas``, the area-adjusted estimates.

    Raises
    ------
    agriseries.core.errors.ConfigurationError
        Arrays of different sizes, classes outside ``labels``, names or areas that do
        not match the labels.
    """
    y_map_c, y_ref_c, lab, notes = _prepare(y_map, y_ref, labels)
    if labels is None and isinstance(mapped_areas, Mapping) and mapped_areas:
        keys = _clean_labels(np.asarray(list(mapped_areas.keys())))
        if lab.size == 0 or keys.dtype.kind == lab.dtype.kind:
            lab = np.unique(np.concatenate([lab.astype(keys.dtype), keys]))
    matrix = _matrix(y_map_c, y_ref_c, lab)
    return report_from_matrix(matrix, lab, class_names, mapped_areas, pixel_area,
                              area_unit=area_unit, notes=notes, metadata=metadata)
