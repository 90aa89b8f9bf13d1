"""Validation of classified maps: accuracy metrics, area-adjusted estimates, reports.

Method and formulas: docs/validation.md. The modules:

``metrics``
    confusion matrix (rows = map, columns = reference), OA, Cohen's kappa, per-class
    user's/producer's accuracy, F1, omission/commission errors, and the stratified
    area-adjusted estimates with 95 % confidence intervals of Olofsson et al. (2014);
    pure functions on arrays or count matrices.
``maps``
    :func:`validate_map`: a class map file against a reference raster (any grid) or
    vector file (rasterised), read window by window.
``report``
    :func:`write_report`: JSON, Markdown, self-contained HTML and a PNG of the matrix.
``crossval``
    k-fold cross-validation by group (parcel, polygon, location or spatial block):
    :func:`cross_validate`, :func:`group_folds`, :func:`block_groups`, and
    :func:`group_bootstrap` (confidence intervals with the groups as samples).
``cli``
    the ``agriseries validate`` command.
"""

from .crossval import (
    CrossValidation,
    block_groups,
    cross_validate,
    group_bootstrap,
    group_folds,
)
from .maps import validate_map
from .metrics import (
    AccuracyReport,
    AreaAdjusted,
    accuracy_report,
    area_adjusted_from_matrix,
    confusion_matrix,
    report_from_matrix,
)
from .report import write_report

__all__ = [
    "AccuracyReport",
    "CrossValidation",
    "block_groups",
    "cross_validate",
    "group_bootstrap",
    "group_folds",
    "AreaAdjusted",
    "accuracy_report",
    "area_adjusted_from_matrix",
    "confusion_matrix",
    "report_from_matrix",
    "validate_map",
    "write_report",
]
