"""Site-level crop models: train once on the in-situ data of every tile, apply anywhere.

Sen2Agri trains its crop mask and crop type classifiers per **site** (and per stratum),
not per tile: the in-situ polygons of all the site's tiles feed one model, which then maps
every tile. :func:`train_site_model` does that on a product store:

1. for each :class:`TrainingUnit` (a tile, a season and an in-situ polygon file) the
   season's L2A series is read (:func:`agriseries.crop.processor.load_season`) and the
   polygons rasterised on the tile grid;
2. the polygons of each file are split 75 / 25 **once, over the whole file**, by polygon
   id and class by class (:func:`agriseries.crop.samples.split_polygons`), so a polygon
   that crosses two tiles is on the same side in both;
3. the training polygons lose their border pixels (``params.erosion_radius``, 1 by
   default), then at most ``params.samples`` training pixels are drawn over all the units together, in
   proportion to the class areas (:func:`agriseries.crop.samples.sample_pixels`), their
   features computed on each unit's own season grid, and one classifier is trained;
4. the :class:`SiteModel` keeps the classifier, the feature **layout** (the per-date
   features, the grid step and the grid's day offsets from the season start:
   :meth:`agriseries.crop.features.SeriesFeatures.layout`), the settings and the ids of
   the training polygons of each file.

The units may be of different seasons (another year of the same site): the features are
read by their position in the season (offset in days from its start), not by calendar
date, so every unit's season must give the same grid (same length and step).

:func:`agriseries.crop.processor.cropmask` / ``croptype`` take ``model=`` (a
:class:`SiteModel` or the file :meth:`SiteModel.save` wrote, ``--model FILE`` on the
command line) and then map a tile without training: the model's layout must match the
tile-season's, and the validation uses only polygons the model did not train on.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ConfigurationError, InputProductError, optional_import
from ..core.ids import crop_season
from ..io.opened import held_open
from .classifier import CropClassifier, extract_samples, train_classifier
from .features import SeriesFeatures, season_dates
from .samples import (
    interior_pixels,
    rasterize_polygons,
    read_polygons,
    sample_pixels,
    split_polygons,
)

__all__ = ["KINDS", "SiteModel", "TrainingUnit", "load_site_model", "map_site",
           "train_site_model"]

#: What a site model maps.
KINDS = ("crop_mask", "crop_type")
_FORMAT = "agriseries-site-model/1"


@dataclass(frozen=True)
class TrainingUnit:
    """One tile-season of a site's training data.

    Attributes
    ----------
    tile
        Sentinel-2 tile id (``T31UDS``).
    season
        First and last day of the season (dates or ISO strings).
    insitu
        The in-situ polygon file of that tile-season.
    """

    tile: str
    season: tuple
    insitu: str | Path


@dataclass
class SiteModel:
    """A trained site-level crop model (see the module docstring).

    Attributes
    ----------
    kind
        ``crop_mask`` or ``crop_type``.
    classifier
        The trained classifier.
    layout
        The feature layout it reads (:meth:`SeriesFeatures.layout`).
    params
        The :class:`~agriseries.crop.processor.CropMaskParams` or ``CropTypeParams`` used.
    units
        One dict per training unit: tile, season, in-situ file, training pixels drawn.
    training_polygons
        Resolved in-situ file path -> sorted ids (feature ids) of its training polygons.
    """

    kind: str
    classifier: CropClassifier
    layout: dict
    params: object
    units: list[dict] = field(default_factory=list)
    training_polygons: dict[str, list[int]] = field(default_factory=dict)

    def check_layout(self, extractor: SeriesFeatures, what: str) -> None:
        """Raise :class:`ConfigurationError` naming ``what`` when ``extractor``'s features
        are not the ones the model was trained on."""
        got = extractor.layout()
        if got != self.layout:
            diffs = [k for k in self.layout if self.layout.get(k) != got.get(k)]
            detail = "; ".join(f"{k}: model {_short(self.layout.get(k))}, here {_short(got.get(k))}"
                               for k in diffs)
            raise ConfigurationError(f"{what}: the features differ from the site model's "
                                     f"({detail}); use a season of the same length and the "
                                     "model's series settings")

    def held_out(self, insitu: str | Path, ids: np.ndarray) -> np.ndarray:
        """True for the polygons of ``insitu`` (feature ``ids``) the model did not train on."""
        trained = self.training_polygons.get(str(Path(insitu).resolve()), [])
        return ~np.isin(np.asarray(ids), np.asarray(trained, dtype=np.int64))

    def describe(self) -> dict:
        """JSON-safe summary for product metadata."""
        return {"kind": self.kind, "classifier": self.classifier.describe(),
                "units": self.units, "grid_dates": len(self.layout.get("offsets", [])),
                "per_date": self.layout.get("per_date")}

    def save(self, path: str | Path) -> Path:
        """Write the model (joblib; whole or not at all: written beside, then renamed) and
        return the path."""
        joblib = optional_import("joblib", "crop")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        part = p.with_name(f".{p.name}.part")
        try:
            joblib.dump({"format": _FORMAT, "model": self}, part)
            os.replace(part, p)
        finally:
            part.unlink(missing_ok=True)
        return p


def _short(v) -> str:
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def load_site_model(path: str | Path) -> SiteModel:
    """Read a model written by :meth:`SiteModel.save`.

    Raises
    ------
    InputProductError
        The file is missing or is not an agriseries site model.
    """
    joblib = optional_import("joblib", "crop")
    p = Path(path)
    if not p.is_file():
        raise InputProductError(p, "no such site model file")
    try:
        obj = joblib.load(p)
    except Exception as exc:  # joblib / pickle raise many kinds
        raise InputProductError(p, f"cannot be read as a site model ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise InputProductError(p, f"not an agriseries site model (expected {_FORMAT}, made "
                                   "by agriseries croptrain)")
    return obj["model"]


def _unit_labels(unit: TrainingUnit, gb, kind: str, params, split_of: dict):
    """Labels per pixel and training flag per pixel of one unit's grid."""
    path = str(Path(unit.insitu).resolve())
    if path not in split_of:
        polys = read_polygons(unit.insitu, params.class_field)
        values = polys.values
        if kind == "crop_mask":
            values = np.isin(values, np.asarray(params.crop_values)).astype(np.int64)
        keep = np.ones(len(polys), bool)
        if kind == "crop_type" and params.exclude_codes:
            keep = ~np.isin(polys.values, np.asarray(params.exclude_codes))
        train = np.zeros(len(polys), bool)
        train[keep] = split_polygons(polys.ids[keep], values[keep], params.sample_ratio,
                                     params.classifier.seed)
        split_of[path] = (polys, values, keep, train)
    polys, values, keep, train = split_of[path]
    index = rasterize_polygons(polys, gb)
    inside = index >= 0
    inside[inside] = keep[index[inside]]
    if not inside.any():
        raise InputProductError(unit.insitu, f"no in-situ polygon covers a pixel centre of tile "
                                             f"{unit.tile}")
    labels = np.where(inside, values[np.maximum(index, 0)], -1)
    is_train = inside & train[np.maximum(index, 0)]
    if params.erosion_radius:
        is_train &= interior_pixels(np.where(inside, index, -1), params.erosion_radius, nodata=-1)
    return labels, is_train


@held_open()  # the units' files stay open across their blocks (io.opened)
def train_site_model(store, units: list[TrainingUnit], kind: str = "crop_mask", params=None,
                     *, skip_empty: bool = False) -> SiteModel:
    """Train one crop model on the in-situ data of several tiles (and seasons).

    Parameters
    ----------
    store
        The product store holding the units' L2A products.
    units
        The tile-seasons and their in-situ polygons.
    kind
        ``crop_mask`` (``params``: :class:`~agriseries.crop.processor.CropMaskParams`,
        default) or ``crop_type`` (``CropTypeParams``).
    params
        Settings (class field, crop values, samples, series, classifier).
    skip_empty
        A unit whose tile no in-situ polygon covers trains nothing (recorded with 0
        training pixels) instead of raising; a site's tiles need not all have in-situ data.

    Raises
    ------
    ConfigurationError
        No unit, an unknown kind, seasons whose grids differ, one class only.
    InputProductError
        No polygon of a unit's file covers its tile (and not ``skip_empty``, or no unit
        has any).
    """
    from .processor import CropMaskParams, CropTypeParams, load_season

    if kind not in KINDS:
        raise ConfigurationError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not units:
        raise ConfigurationError("a site model needs at least one training unit")
    if params is None:
        params = CropMaskParams() if kind == "crop_mask" else CropTypeParams()
    sp = params.series
    layout = None
    loaded = []
    split_of: dict = {}
    for u in units:
        start, end, _ = crop_season(u.season[0], u.season[1], None)
        ds, items = load_season(store, u.tile, start, end, sp.bands, chunk=sp.chunk)
        ex = SeriesFeatures(season_dates(start.date(), end.date(), sp.step_days), sp, relative=True)
        if layout is None:
            layout = ex.layout()
        elif ex.layout() != layout:
            raise ConfigurationError(
                f"{u.tile} {start:%Y-%m-%d}..{end:%Y-%m-%d}: its grid of dates differs from the "
                f"first unit's ({len(ex.layout()['offsets'])} vs {len(layout['offsets'])} dates):"
                " the seasons of a site model must have the same length")
        try:
            labels, is_train = _unit_labels(u, ds.odc.geobox, kind, params, split_of)
        except InputProductError:
            if not skip_empty:
                raise
            labels = np.full(ds.odc.geobox.shape, -1, np.int64)
            is_train = np.zeros(ds.odc.geobox.shape, bool)
        rows, cols = np.nonzero(is_train)
        loaded.append((u, ds, items, ex, labels, rows, cols, start, end))
    all_labels = np.concatenate([lab[r, c] for _, _, _, _, lab, r, c, _, _ in loaded])
    if all_labels.size == 0:
        raise InputProductError(units[0].insitu, "no training pixel on any tile of the site "
                                                 f"({', '.join(u.tile for u in units)})")
    if np.unique(all_labels).size < 2:
        raise ConfigurationError(f"the training polygons of the site hold one class only "
                                 f"({np.unique(all_labels).tolist()})")
    pick = sample_pixels(all_labels, params.samples, seed=params.classifier.seed,
                         min_per_class=params.min_per_class)
    Xs, ys, unit_info = [], [], []
    offset = 0
    for u, ds, items, ex, labels, rows, cols, start, end in loaded:
        n = rows.size
        mine = pick[(pick >= offset) & (pick < offset + n)] - offset
        offset += n
        if mine.size:
            Xs.append(extract_samples(ds, ex, rows[mine], cols[mine]))
            ys.append(labels[rows[mine], cols[mine]])
        unit_info.append({"tile": u.tile, "season": [f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"],
                          "insitu": str(Path(u.insitu).resolve()), "l2a_products": len(items),
                          "labelled_pixels": int((labels >= 0).sum()),
                          "training_pixels": int(mine.size)})
    X = np.concatenate(Xs)
    y = np.concatenate(ys)
    clf = train_classifier(X, y, params.classifier, loaded[0][3].names)
    if kind == "crop_mask" and clf.classes.tolist() != [0, 1]:
        raise ConfigurationError(f"the crop mask needs cropland and other samples; the training "
                                 f"pixels hold classes {clf.classes.tolist()}")
    trained = {}
    for path, (polys, _, keep, train) in split_of.items():
        trained[path] = sorted(int(i) for i in polys.ids[keep & train])
    return SiteModel(kind=kind, classifier=clf, layout=layout, params=params, units=unit_info,
                     training_polygons=trained)


def map_site(store, tiles, season_start, season_end, *, insitu, kind: str = "crop_mask",
             until=None, params=None, model_path: str | Path | None = None,
             crop_masks: dict | None = None, overwrite: bool = False):
    """Train one site model on the in-situ data of every tile, and map every tile with it.

    What the production does for a site with ``products.L4A.site_model`` (or ``L4B``): one
    :class:`TrainingUnit` per tile over the season up to ``until`` (an in-season site model
    is trained on the data up to the map date), :func:`train_site_model` (tiles without
    in-situ polygons train nothing but are mapped), the model written to ``model_path``
    (when given: ``agriseries cropmask --model`` can apply it elsewhere), then
    :func:`~agriseries.crop.processor.cropmask` / ``croptype`` with ``model=`` on each
    tile: the in-situ polygons validate only where the model did not train.

    Parameters
    ----------
    store
        The product store with the tiles' L2A products.
    tiles
        The site's tiles.
    season_start, season_end, until
        The season and the map date (default the season end).
    insitu
        The site's in-situ polygon file (all tiles).
    kind
        ``crop_mask`` or ``crop_type``.
    params
        :class:`~agriseries.crop.params.CropMaskParams` / ``CropTypeParams``.
    model_path
        Where to write the trained model (joblib), or None.
    crop_masks
        Crop type only: tile -> the L4A product that masks its map.

    Returns
    -------
    tuple
        The :class:`SiteModel` and one :class:`~agriseries.crop.processor.CropResult` per
        tile, in ``tiles`` order.
    """
    from .processor import cropmask, croptype

    if not tiles:
        raise ConfigurationError("a site map needs at least one tile")
    start, end, last = crop_season(season_start, season_end, until)
    units = [TrainingUnit(t, (start, last), insitu) for t in tiles]
    model = train_site_model(store, units, kind, params, skip_empty=True)
    target = model
    if model_path is not None:
        target = model.save(model_path)
    results = []
    for t, unit in zip(tiles, model.units):
        where = insitu if unit["labelled_pixels"] else None  # no polygon here: not validated
        if kind == "crop_mask":
            r = cropmask(store, t, start, end, insitu=where, until=last, model=target,
                         overwrite=overwrite)
        else:
            mask = (crop_masks or {}).get(t)
            r = croptype(store, t, start, end, insitu=where, until=last, model=target,
                         crop_mask=mask, overwrite=overwrite)
        results.append(r)
    return model, results


def site_model_summary(model: SiteModel) -> dict:
    """Settings of the model, JSON-safe (for the command line)."""
    return {"kind": model.kind, "units": model.units,
            "params": {k: v for k, v in asdict(model.params).items() if k != "no_insitu"},
            "classes": [int(c) for c in model.classifier.classes],
            "made": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
