"""The L4A crop mask and L4B crop type processors on a product store (docs/crop.md).

:func:`cropmask` and :func:`croptype` read every Sentinel-2 L2A product of a tile in a
season from the store (``ProductStore.items`` / ``open`` / ``load``), onto the tile's
10 m grid cropped to the products' union, and:

1. build the season's time series (:mod:`agriseries.crop.features`): bands B03, B04, B08,
   B11 (+ red edge), the L2A mask, a regular 10-day grid from the season start up to the
   last date used, linear gap filling, per-date features (docs/crop.md);
2. get training and validation pixels:

   * **with in-situ data** (``insitu``: a polygon file and its class field, Sen2Agri
     ``CROP`` for the mask -- codes in ``crop_values`` are cropland -- and ``CODE`` for
     the crop type): polygons rasterised on the grid, split 75 / 25 **by polygon**,
     class by class, seed 0 (:mod:`agriseries.crop.samples`); at most ``samples``
     training pixels (40000 for the mask, 10000 for the crop type) in proportion to the
     class areas;
   * **without** (crop mask only, ``reference_map``): Matton et al.'s eroded, trimmed
     reference (:mod:`agriseries.crop.nolabels`), with its own key-date features;

3. train the classifier (random forest 100 / 25 / 25, or LightGBM;
   :mod:`agriseries.crop.classifier`) and classify the tile block by block (the features
   of the whole tile are never in memory);
4. optionally (crop mask) segment the NDVI principal components and take the majority
   class per segment (:mod:`agriseries.crop.postprocess`);
5. validate on the held-out pixels (:func:`agriseries.validation.accuracy_report`);
6. write one product (``ProductStore.write_product``): the class map (``crop_mask``:
   1 cropland, 0 other, 255 no data; ``crop_type``: the class codes, uint8 or uint16, the
   type's maximum as no data, 0 where a given crop mask says non-cropland), the confidence
   (float32 vote share of the winning class, NaN no data), the raw map before the
   post-processing or the crop mask (``*_raw``) when there is one, the trained model
   (``model``, joblib) and the validation report (``validation_json`` / ``_md`` /
   ``_html`` / ``_png``).

**Several times a season**: ``until`` limits the data to the acquisitions up to that
date (the grid of dates stops there, the model is trained on those features only), the
product id is ``L4A_S2_<tile>_<season start>-<until>_AGS`` and the item says
``agriseries:last_date_used`` (the last acquisition read) and ``agriseries:until``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np
import pystac
import xarray as xr

from ..version import VERSION
from ..core.errors import ConfigurationError, InputProductError, NothingToDoError
from ..core.ids import Level, ProductId, crop_id, crop_season
from ..io.opened import held_open
from ..io.product import load
from ..io.store import Layer, ProductStore
from .classifier import (
    CropClassifier,
    class_dtype,
    extract_samples,
    predict_map,
    train_classifier,
)
from .features import SeriesFeatures, SeriesParams, season_dates
from .nolabels import (
    KeyDateFeatures,
    NoInsituParams,
    block_split,
    erode_reference,
    mahalanobis_trim,
    reference_on_grid,
)
from .postprocess import NDVIPCA, postprocess
from .samples import (
    Polygons,
    interior_pixels,
    rasterize_polygons,
    read_polygons,
    sample_pixels,
    split_polygons,
)
from .params import CropMaskParams, CropTypeParams  # noqa: F401 -- re-exported

__all__ = [
    "CROP_MASK_NODATA",
    "CropMaskParams",
    "CropResult",
    "CropTypeParams",
    "cropmask",
    "croptype",
    "load_season",
]

#: No-data value of the crop mask (1 cropland, 0 other).
CROP_MASK_NODATA = 255
#: Sensors read by default (Sen2Agri's L4 processors run on Sentinel-2 here).
S2_SENSORS = ("S2A", "S2B", "S2C")


@dataclass
class CropResult:
    """What :func:`cropmask` / :func:`croptype` made."""

    product: str
    made: bool
    oa: float | None = None
    kappa: float | None = None
    macro_f1: float | None = None
    n_train: int = 0
    n_validation: int = 0
    last_date_used: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------
# reading the season


def _utc(d) -> dt.datetime:
    if isinstance(d, np.datetime64):
        d = d.astype("datetime64[us]").astype(dt.datetime)
    if isinstance(d, str):
        d = dt.datetime.fromisoformat(d)
    elif isinstance(d, dt.date) and not isinstance(d, dt.datetime):
        d = dt.datetime.combine(d, dt.time())
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def load_season(store: ProductStore, tile: str, start, end,
                bands: tuple[str, ...], *, sensors: tuple[str, ...] = S2_SENSORS,
                resolution: int = 10, chunk: int = 512, items: list[pystac.Item] | None = None
                ) -> tuple[xr.Dataset, list[pystac.Item]]:
    """The L2A series of a tile between two dates as one multi-date Dataset (lazy).

    Every L2A item of ``tile`` from ``start`` to ``end`` (dates, datetimes or ISO strings,
    inclusive) of one of ``sensors``
    is loaded onto the tile's grid at ``resolution`` cropped to the union of the products'
    footprints (``bands`` + ``mask``; 20 m bands resampled by the loader), sorted by date.
    ``items``: those L2A items instead of the store's (the production job's inputs).

    Raises
    ------
    NothingToDoError
        No product (the commands exit with code 3).
    ConfigurationError
        One or two products.
    """
    from odc.geo.geom import Geometry, unary_union

    from ..core.grid import snap_to_tile, tile_geobox

    start, end = _utc(start), _utc(end)
    if items is None:
        items = [it for it in store.items(level=Level.L2A, tile=tile, start=start, end=end)
                 if set(it.properties.get("agriseries:sensors") or []) <= set(sensors)
                 and ProductId.parse(it.id).end is None]
    items = list(items)
    items.sort(key=lambda it: (it.datetime, it.id))
    if not items:
        raise NothingToDoError(f"no L2A product of {', '.join(sensors)} on {tile} between "
                               f"{start:%Y-%m-%d} and {end:%Y-%m-%d} in {store.root} (make "
                               "or ingest L2A products first)")
    if len(items) < 3:
        raise ConfigurationError(f"{len(items)} L2A product(s) of {', '.join(sensors)} on {tile} "
                                 f"between {start:%Y-%m-%d} and {end:%Y-%m-%d}: need at least 3")
    tb = tile_geobox(tile, resolution)
    gb = snap_to_tile(tb, unary_union([Geometry(it.geometry, "EPSG:4326").to_crs(tb.crs)
                                       for it in items]))
    parts = []
    for it in items:
        sp = store.open(it)
        missing = [b for b in bands if b not in sp.bands]
        if missing:
            raise InputProductError(sp.path, f"band(s) {', '.join(missing)} needed by the crop "
                                             f"features are not in the product")
        ds = load(sp, geobox=gb, bands=list(bands), angles=None, with_aux=False, chunks=chunk)
        parts.append(ds)
    series = xr.concat(parts, dim="time", data_vars="all", coords="different", compat="equals",
                       join="exact", combine_attrs="drop")
    return series, items


# --------------------------------------------------------------------------------------
# labels


def _insitu_pixels(path, class_field: str, gb, recode=None, ratio: float = 0.75, seed: int = 0,
                   exclude=(), erosion: int = 0):
    """(class per pixel, split per pixel: 1 train / 2 validation / 0 none, polygons).

    ``erosion``: the training polygons lose their border pixels (those within ``erosion``
    pixels of another polygon or of unlabelled ground); validation polygons keep all theirs."""
    polys = read_polygons(path, class_field)
    if exclude:
        keep = ~np.isin(polys.values, np.asarray(exclude))
        if not keep.any():
            raise InputProductError(path, f"every polygon has an excluded code {list(exclude)}")
        polys = Polygons(polys.geometries[keep], polys.values[keep], polys.ids[keep], polys.crs,
                         polys.path, polys.field)
    index = rasterize_polygons(polys, gb)
    inside = index >= 0
    if not inside.any():
        raise InputProductError(path, "no in-situ polygon covers a pixel centre of the product grid")
    values = polys.values if recode is None else recode(polys.values)
    present = np.unique(index[inside])
    train_p = split_polygons(polys.ids[present], values[present], ratio, seed)
    train_of = np.zeros(len(polys), bool)
    train_of[present] = train_p
    labels = np.where(inside, values[np.maximum(index, 0)], -1)
    split = np.where(inside, np.where(train_of[np.maximum(index, 0)], 1, 2), 0).astype(np.int8)
    if erosion:
        split[(split == 1) & ~interior_pixels(index, erosion, nodata=-1)] = 0
    return labels, split, polys


def _polygon_split_text(ratio: float, seed: int) -> str:
    """How :func:`_insitu_pixels` held out the validation pixels, for the report."""
    return (f"by polygon: {1 - ratio:.0%} of each class's polygons held out (seed {seed}), all "
            f"their pixels validate; no validation pixel lies in a training polygon")


def _sampled(labels: np.ndarray, split: np.ndarray, cap: int, seed: int, min_per_class: int):
    rows, cols = np.nonzero(split == 1)
    pick = sample_pixels(labels[rows, cols], cap, seed=seed, min_per_class=min_per_class)
    return rows[pick], cols[pick]


# --------------------------------------------------------------------------------------
# shared tail: predict, validate, write


def _report(y_map, y_ref, labels, names, title, folder: Path, metadata: dict):
    from ..validation import accuracy_report, write_report

    report = accuracy_report(y_map, y_ref, labels=list(labels), class_names=list(names),
                             metadata=metadata)
    paths = write_report(report, folder / "validation", title=title)
    return report, paths


def _files(model_path: Path, report_paths: dict) -> list:
    from ..io.store import ProductFile

    kinds = {"json": "application/json", "md": "text/markdown", "html": "text/html",
             "png": "image/png"}
    files = [ProductFile("model", model_path, "application/octet-stream", ("metadata", "model"),
                         "Trained classifier (joblib, agriseries.crop.classifier.CropClassifier)")]
    for k, p in report_paths.items():
        files.append(ProductFile(f"validation_{k}", p, kinds.get(k, "application/octet-stream"),
                                 ("metadata", "validation"), f"Validation report ({k})"))
    return files


def _predict_numpy(ds, extractor, model, extra=None):
    cls, conf, ex = predict_map(ds, extractor, model, extra=extra)
    out_c = np.empty(cls.shape, cls.dtype)
    out_f = np.empty(conf.shape, np.float32)
    sources, targets = [cls, conf], [out_c, out_f]
    out_e = None
    if ex is not None:
        out_e = np.empty(ex.shape, np.float32)
        sources.append(ex)
        targets.append(out_e)
    da.store(sources, targets, lock=False)
    return out_c, out_f, out_e


def _classification_extra(codes, names) -> dict:
    return {"classification:classes": [{"value": int(c), "name": str(n)}
                                       for c, n in zip(codes, names)]}


# --------------------------------------------------------------------------------------
# L4A


@held_open()  # the season's files stay open across its blocks (io.opened)
def cropmask(store: ProductStore, tile: str, season_start, season_end, *, insitu=None,
             reference_map=None, until=None, params: CropMaskParams = CropMaskParams(),
             overwrite: bool = False, items: list[pystac.Item] | None = None,
             model=None) -> CropResult:
    """Make the L4A crop mask of a tile for a season (up to ``until``).

    Parameters
    ----------
    store
        The product store (reads L2A, writes L4A).
    tile
        Sentinel-2 tile id (``T31UDS``).
    season_start, season_end
        The season (dates or ISO strings).
    insitu
        In-situ polygons (vector file; field ``params.class_field``).
    reference_map
        A reference land-cover raster (used when ``insitu`` is not given; Matton et al.).
    until
        Use the acquisitions up to this date only (an in-season map); default the season end.
    params
        Settings.
    overwrite
        Remake an existing product.
    items
        The L2A items to use (the production job's inputs), instead of the store's.
    model
        A site model (:class:`agriseries.crop.site.SiteModel` or its file): map the tile
        with it instead of training (``params`` are then the model's; ``insitu``, when
        given, validates on the polygons the model did not train on).

    Returns
    -------
    CropResult
        The product id and the validation figures.
    """
    if model is not None:
        if reference_map is not None:
            raise ConfigurationError("a site model maps the tile: give no reference map with it")
        return _apply_site_model("crop_mask", store, tile, season_start, season_end, model,
                                 insitu=insitu, until=until, overwrite=overwrite, items=items)
    if (insitu is None) == (reference_map is None):
        raise ConfigurationError("give either in-situ polygons or a reference map (not both)")
    start, end, last = crop_season(season_start, season_end, until)
    pid = crop_id(Level.L4A, tile, start, end, last)
    source = ({"insitu": str(Path(insitu).resolve())} if insitu is not None
              else {"reference_map": str(Path(reference_map).resolve())})
    if not overwrite and store.already_made(pid, {**_jsonable(asdict(params)), "source": source}):
        return CropResult(str(pid), False)
    sp = params.series if insitu is not None else SeriesParams(
        step_days=params.series.step_days, red_edge=params.series.red_edge,
        smoothing_lambda=params.no_insitu.smoothing_lambda,
        excluded_bits=params.series.excluded_bits, chunk=params.series.chunk)
    ds, items = load_season(store, tile, start, last, sp.bands, chunk=sp.chunk, items=items)
    gb = ds.odc.geobox
    dates = season_dates(start.date(), last.date(), sp.step_days)
    seed = params.classifier.seed
    crop_set = np.asarray(params.crop_values)
    extra_props: dict = {}
    if insitu is not None:
        extractor = SeriesFeatures(dates, sp)
        labels, split, polys = _insitu_pixels(
            insitu, params.class_field, gb, recode=lambda v: np.isin(v, crop_set).astype(np.int64),
            ratio=params.sample_ratio, seed=seed, erosion=params.erosion_radius)
        rows, cols = _sampled(labels, split, params.samples, seed, params.min_per_class)
        X = extract_samples(ds, extractor, rows, cols)
        y = labels[rows, cols]
        source = {"insitu": str(Path(insitu).resolve()), "class_field": polys.field,
                  "crop_values": [int(v) for v in crop_set], "polygons": len(polys)}
        ref_name = "in-situ polygons (validation 25 %)"
        split_text = _polygon_split_text(params.sample_ratio, seed)
    else:
        ni = params.no_insitu
        extractor = KeyDateFeatures(dates, sp)
        ref = reference_on_grid(reference_map, gb, ni.crop_values, ni.ignore_values)
        eroded = erode_reference(ref, ni.erosion_radius)
        held = block_split(gb.shape, ni.block, ni.validation_share, ni.seed)
        labels = np.where(eroded == 255, -1, eroded.astype(np.int64))
        split = np.where(labels < 0, 0, np.where(held, 2, 1)).astype(np.int8)
        X, y, rows, cols, trim_info = _trimmed_samples(ds, extractor, labels, split, ni)
        extra_props["agriseries:trimming"] = trim_info
        source = {"reference_map": str(Path(reference_map).resolve()),
                  "crop_values": list(ni.crop_values), "ignore_values": list(ni.ignore_values)}
        ref_name = "held-out blocks of the eroded reference map (agreement, not accuracy)"
        split_text = (f"by spatial block: {ni.validation_share:.0%} of the {ni.block} x "
                      f"{ni.block} px blocks held out (seed {ni.seed}); no validation pixel "
                      "lies in a training block")
    model = train_classifier(X, y, params.classifier, extractor.names)
    if model.classes.tolist() != [0, 1]:
        raise ConfigurationError(f"the crop mask needs cropland and other samples; the training "
                                 f"pixels hold classes {model.classes.tolist()}")
    extra = None
    if params.segmentation:
        if isinstance(extractor, SeriesFeatures):
            series, Xs = extractor, X
        else:  # key-date features: the NDVI series of the plain 5.1 resampling
            series = SeriesFeatures(dates, SeriesParams(step_days=sp.step_days,
                                                        excluded_bits=sp.excluded_bits,
                                                        chunk=sp.chunk))
            Xs = extract_samples(ds, series, rows[:20000], cols[:20000])
        extra = NDVIPCA(series, Xs, params.segmentation_params.n_components)
    cls, conf, comps = _predict_numpy(ds, extractor, model, extra)
    layers_raw = None
    if params.segmentation:
        raw = cls.copy()
        cls, conf = postprocess(cls, conf, comps, CROP_MASK_NODATA, params.segmentation_params)
        layers_raw = raw
    return _finish(store, pid, Level.L4A, "crop_mask", ds, gb, items, model, cls, conf, layers_raw,
                   labels, split, ["other", "cropland"], [0, 1], last, start, end, until,
                   params, source, ref_name, extra_props, overwrite, split_text=split_text,
                   title=f"L4A crop mask {tile} {start:%Y-%m-%d} to {last:%Y-%m-%d}")


def _trimmed_samples(ds, extractor, labels, split, ni: NoInsituParams):
    """Pool per class -> features -> Mahalanobis trimming -> ``ni.samples`` samples."""
    rng = np.random.default_rng(ni.seed)
    rows_all, cols_all = np.nonzero(split == 1)
    lab_all = labels[rows_all, cols_all]
    pool = []
    for c in (0, 1):
        members = np.flatnonzero(lab_all == c)
        if members.size > ni.trim_pool:
            members = rng.choice(members, ni.trim_pool, replace=False)
        pool.append(np.sort(members))
    pool = np.concatenate(pool)
    rows, cols, y = rows_all[pool], cols_all[pool], lab_all[pool]
    X = extract_samples(ds, extractor, rows, cols)
    keep = np.zeros(y.size, bool)
    info = {"alpha": ni.alpha, "pool": {}, "kept": {}, "iterations": {}}
    for c in (0, 1):
        sel = np.flatnonzero(y == c)
        k, it = mahalanobis_trim(X[sel], ni.alpha, ni.max_iterations)
        keep[sel[k]] = True
        info["pool"][str(c)] = int(sel.size)
        info["kept"][str(c)] = int(k.sum())
        info["iterations"][str(c)] = int(it)
    kept = np.flatnonzero(keep)
    pick = kept[sample_pixels(y[kept], ni.samples, seed=ni.seed, min_per_class=100)]
    return X[pick], y[pick], rows[pick], cols[pick], info


# --------------------------------------------------------------------------------------
# L4B


@held_open()  # the season's files stay open across its blocks (io.opened)
def croptype(store: ProductStore, tile: str, season_start, season_end, *, insitu=None,
             crop_mask=None, until=None, params: CropTypeParams = CropTypeParams(),
             overwrite: bool = False, items: list[pystac.Item] | None = None,
             model=None) -> CropResult:
    """Make the L4B crop type map of a tile for a season (up to ``until``).

    Parameters
    ----------
    store
        The product store (reads L2A, writes L4B).
    tile
        Sentinel-2 tile id.
    season_start, season_end
        The season.
    insitu
        In-situ polygons with the crop code in ``params.class_field``.
    crop_mask
        Optional crop mask: an L4A product id of the store or a GeoTIFF (1 cropland);
        pixels it says are not cropland get code 0 in ``crop_type`` (``crop_type_raw``
        keeps the classification). The crop codes must then be >= 1.
    until
        Use the acquisitions up to this date only.
    params
        Settings.
    overwrite
        Remake an existing product.
    items
        The L2A items to use (the production job's inputs), instead of the store's.
    model
        A site model (:class:`agriseries.crop.site.SiteModel` or its file) of kind
        ``crop_type``: map with it instead of training; ``insitu`` may then be None (no
        validation).
    """
    if model is not None:
        return _apply_site_model("crop_type", store, tile, season_start, season_end, model,
                                 insitu=insitu, until=until, overwrite=overwrite, items=items,
                                 crop_mask=crop_mask)
    if insitu is None:
        raise ConfigurationError("the crop type map needs in-situ polygons or a site model")
    start, end, last = crop_season(season_start, season_end, until)
    pid = crop_id(Level.L4B, tile, start, end, last)
    source = {"insitu": str(Path(insitu).resolve())}
    if crop_mask is not None:  # absent, not None: a map made with a crop mask is not this one
        source["crop_mask"] = str(crop_mask)
    if not overwrite and store.already_made(pid, {**_jsonable(asdict(params)), "source": source}):
        return CropResult(str(pid), False)
    if crop_mask is not None:
        _check_crop_mask(store, crop_mask)  # before any work, not after the training
    sp = params.series
    ds, items = load_season(store, tile, start, last, sp.bands, chunk=sp.chunk, items=items)
    gb = ds.odc.geobox
    dates = season_dates(start.date(), last.date(), sp.step_days)
    seed = params.classifier.seed
    extractor = SeriesFeatures(dates, sp)
    labels, split, polys = _insitu_pixels(insitu, params.class_field, gb,
                                          ratio=params.sample_ratio, seed=seed,
                                          exclude=params.exclude_codes,
                                          erosion=params.erosion_radius)
    class_dtype(np.unique(polys.values))  # codes must fit the map
    if crop_mask is not None and 0 in set(polys.values.tolist()):
        raise _code_zero_error(insitu, params)
    rows, cols = _sampled(labels, split, params.samples, seed, params.min_per_class)
    X = extract_samples(ds, extractor, rows, cols)
    model = train_classifier(X, labels[rows, cols], params.classifier, extractor.names)
    cls, conf, _ = _predict_numpy(ds, extractor, model)
    raw = None
    source = {"insitu": str(Path(insitu).resolve()), "class_field": polys.field,
              "polygons": len(polys)}
    if crop_mask is not None:
        cls, conf, raw = _masked(store, crop_mask, gb, model, cls, conf)
        source["crop_mask"] = str(crop_mask)
    names = [str(c) for c in model.classes]
    return _finish(store, pid, Level.L4B, "crop_type", ds, gb, items, model, cls, conf, raw,
                   labels, split, names, model.classes.tolist(), last, start, end, until, params,
                   source, "in-situ polygons (validation 25 %)", {}, overwrite,
                   split_text=_polygon_split_text(params.sample_ratio, seed),
                   title=f"L4B crop type {tile} {start:%Y-%m-%d} to {last:%Y-%m-%d}",
                   extra_codes=[0] if crop_mask is not None else [])


def _masked(store, crop_mask, gb, model: CropClassifier, cls, conf):
    """Code 0 where the crop mask says non-cropland; returns (map, confidence, raw map)."""
    if 0 in set(model.classes.tolist()):
        raise ConfigurationError("crop code 0 marks non-cropland when a crop mask is given: "
                                 "leave the in-situ class 0 out (--exclude-codes 0, "
                                 "exclude_codes=(0,)) or recode it")
    mask = _read_crop_mask(store, crop_mask, gb)
    raw = cls.copy()
    _, nodata = class_dtype(model.classes)
    non = (mask == 0) & (cls != nodata)
    return (np.where(non, 0, cls).astype(cls.dtype), np.where(non, np.float32(np.nan), conf),
            raw)


def _apply_site_model(kind, store, tile, season_start, season_end, model, *, insitu, until,
                      overwrite, items, crop_mask=None) -> CropResult:
    """Map a tile-season with a site model (:mod:`agriseries.crop.site`), no training."""
    from .site import SiteModel, load_site_model

    model_file = None
    if not isinstance(model, SiteModel):
        model_file = str(Path(model).resolve())
        model = load_site_model(model)
    if model.kind != kind:
        raise ConfigurationError(f"the site model maps {model.kind.replace('_', ' ')}, not "
                                 f"{kind.replace('_', ' ')}")
    params = model.params
    level = Level.L4A if kind == "crop_mask" else Level.L4B
    start, end, last = crop_season(season_start, season_end, until)
    pid = crop_id(level, tile, start, end, last)
    if store.exists(pid) and not overwrite:
        return CropResult(str(pid), False)
    sp = params.series
    ds, items = load_season(store, tile, start, last, sp.bands, chunk=sp.chunk, items=items)
    gb = ds.odc.geobox
    extractor = SeriesFeatures(season_dates(start.date(), last.date(), sp.step_days), sp,
                               relative=True)
    model.check_layout(extractor, f"{tile} {start:%Y-%m-%d}..{last:%Y-%m-%d}")
    clf = model.classifier
    cls, conf, _ = _predict_numpy(ds, extractor, clf)
    raw = None
    source = {"site_model": model_file or "(in memory)", "site_model_units": model.units}
    if crop_mask is not None:
        cls, conf, raw = _masked(store, crop_mask, gb, clf, cls, conf)
        source["crop_mask"] = str(crop_mask)
    labels = split = None
    ref_name = split_text = None
    if insitu is not None:
        polys = read_polygons(insitu, params.class_field)
        index = rasterize_polygons(polys, gb)
        inside = index >= 0
        if not inside.any():
            raise InputProductError(insitu, "no in-situ polygon covers a pixel centre of the "
                                            "product grid")
        values = polys.values
        if kind == "crop_mask":
            values = np.isin(values, np.asarray(params.crop_values)).astype(np.int64)
        held = model.held_out(insitu, polys.ids)
        if kind == "crop_type":
            held &= np.isin(polys.values, clf.classes)  # a class the model cannot map: left out
            if params.exclude_codes:
                held &= ~np.isin(polys.values, np.asarray(params.exclude_codes))
        labels = np.where(inside, values[np.maximum(index, 0)], -1)
        split = np.where(inside & held[np.maximum(index, 0)], 2, 0).astype(np.int8)
        present = np.unique(index[inside])
        n_held = int(held[present].sum())
        ref_name = f"in-situ polygons the site model did not train on ({n_held} of {present.size})"
        split_text = (f"by polygon: the {n_held} polygons of {Path(insitu).name} on this tile that "
                      f"the site model did not train on; no validation pixel lies in a training "
                      f"polygon")
        source.update({"insitu": str(Path(insitu).resolve()), "class_field": polys.field})
    if kind == "crop_mask":
        names, codes = ["other", "cropland"], [0, 1]
        title = f"L4A crop mask {tile} {start:%Y-%m-%d} to {last:%Y-%m-%d} (site model)"
        extra_codes = []
    else:
        names, codes = [str(c) for c in clf.classes], clf.classes.tolist()
        title = f"L4B crop type {tile} {start:%Y-%m-%d} to {last:%Y-%m-%d} (site model)"
        extra_codes = [0] if crop_mask is not None else []
    return _finish(store, pid, level, kind, ds, gb, items, clf, cls, conf, raw, labels, split,
                   names, codes, last, start, end, until, params, source, ref_name,
                   {"agriseries:site_model": model.describe()}, overwrite, title=title,
                   extra_codes=extra_codes, split_text=split_text)


def _code_zero_error(insitu, params) -> InputProductError:
    excluded = list(params.exclude_codes)
    return InputProductError(
        insitu, f"polygons of crop code 0 in field {params.class_field!r}: with a crop mask, "
        "code 0 marks the pixels it calls non-cropland; leave them out with --exclude-codes "
        f"{','.join(map(str, [0, *excluded]))} (exclude_codes={tuple([0, *excluded])!r}; "
        f"excluded now: {excluded or 'none'}) or recode them")


def _check_crop_mask(store: ProductStore, crop_mask) -> None:
    """A crop mask that is neither an L4A product of the store nor a file: a clear error
    before any work."""
    text = str(crop_mask)
    try:
        pid = ProductId.parse(text)
    except (ConfigurationError, ValueError):
        pid = None
    if pid is not None:
        if pid.level is not Level.L4A:
            raise InputProductError(text, f"a {pid.level.value} product id: expected an L4A "
                                          "crop mask (of the store) or a GeoTIFF")
        if not store.exists(pid):
            raise InputProductError(text, f"no such crop mask: the L4A product is not in the "
                                          f"store {store.root} (agriseries list --store "
                                          f"{store.root} --level L4A)")
        return
    if not Path(text).is_file():
        raise InputProductError(text, "no such crop mask: expected an L4A product id of the "
                                      "store or a GeoTIFF file (1 = cropland)")


def _read_crop_mask(store: ProductStore, crop_mask, gb) -> np.ndarray:
    """A crop mask (L4A id in the store or a raster path) on ``gb`` (nearest)."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    text = str(crop_mask)
    try:
        pid = ProductId.parse(text)
    except ConfigurationError:
        pid = None
    if pid is not None:
        item = store.item(pid)
        path = store.item_path(pid).parent / item.assets["crop_mask"].href
    else:
        path = Path(text)
        if not path.is_file():
            raise InputProductError(path, "no such crop mask (expected an L4A product id of the "
                                          "store or a GeoTIFF)")
    out = np.full(gb.shape, CROP_MASK_NODATA, np.uint8)
    try:
        with rasterio.open(path) as src:
            reproject(rasterio.band(src, 1), out, dst_transform=gb.affine, dst_crs=gb.crs.to_wkt(),
                      resampling=Resampling.nearest, dst_nodata=CROP_MASK_NODATA)
    except rasterio.errors.RasterioIOError as exc:
        raise InputProductError(path, f"cannot read the crop mask: {exc}") from exc
    return out


def _finish(store, pid, level, key, ds, gb, items, model: CropClassifier, cls, conf, raw, labels,
            split, names, codes, last, start, end, until, params, source, ref_name, extra_props,
            overwrite, title, extra_codes=(), split_text=""):
    _, nodata = class_dtype(model.classes) if key == "crop_type" else (None, CROP_MASK_NODATA)
    vr, vc = np.nonzero(split == 2) if labels is not None else (np.zeros(0, int),) * 2
    y_ref = labels[vr, vc] if labels is not None else np.zeros(0, np.int64)
    y_map = (raw if raw is not None and key == "crop_type" else cls)[vr, vc]
    keep = y_map != nodata
    used = [np.datetime64(it.datetime.replace(tzinfo=None), "s") for it in items]
    last_used = str(max(used).astype("datetime64[D]"))
    with tempfile.TemporaryDirectory(dir=store.root if store.root.exists() else None,
                                     prefix=".crop-") as tmpdir:
        folder = Path(tmpdir)
        meta = {"product": str(pid), "reference": ref_name, "split": split_text,
                "validation_pixels": int(vr.size),
                "unclassified_validation_pixels": int((~keep).sum())}
        if labels is None:  # a site model applied without in-situ data: nothing to validate
            report, paths = None, {}
        elif vr.size and keep.any():
            report, paths = _report(y_map[keep], y_ref[keep], codes, names, title, folder, meta)
        else:
            if "reference_map" in source:
                raise ConfigurationError(
                    f"{pid}: no validation pixel: the reference map {source['reference_map']} "
                    "has too few cropland and other pixels left over this tile once eroded and "
                    "split into blocks (a larger map, or a smaller erosion_radius / block)")
            raise ConfigurationError(f"{pid}: no validation pixel (every labelled polygon went to "
                                     "training): give more polygons")
        model_path = model.save(folder / "model.joblib")
        all_codes = list(extra_codes) + list(codes)
        all_names = (["not cropland (crop mask)"] if extra_codes else []) + list(names)
        cls_extra = _classification_extra(all_codes, all_names)
        layers = [Layer(key, cls, gb, "classes", nodata=nodata, extra=cls_extra),
                  Layer("confidence", conf.astype(np.float32), gb, "aux", unit="1")]
        if raw is not None:
            layers.append(Layer(f"{key}_raw", raw, gb, "classes", nodata=nodata,
                                extra=_classification_extra(codes, names)))
        n_train = int(sum(model.n_samples.values()))
        props = {
            "agriseries:season": {"start": f"{start:%Y-%m-%d}", "end": f"{end:%Y-%m-%d}"},
            "agriseries:until": f"{last:%Y-%m-%d}",
            "agriseries:last_date_used": last_used,
            "agriseries:grid_dates": [str(d) for d in season_dates(start.date(), last.date(),
                                                                   params.series.step_days)],
            "agriseries:model": model.describe(),
            "agriseries:validation": (
                {"oa": report.oa, "kappa": report.kappa, "macro_f1": report.macro_f1,
                 "n": int(report.n), "reference": ref_name, "split": split_text}
                if report is not None else
                {"oa": None, "kappa": None, "macro_f1": None, "n": 0, "reference": None,
                 "split": "not validated: no in-situ data given for this tile and season"}),
            **extra_props,
        }
        props = _jsonable(props)
        store.write_product(
            pid, layers, footprint=gb.extent, sensors=sorted({str(s) for s in ds["sensor"].values}),
            inputs=[it.id for it in items],
            parameters={**_jsonable(asdict(params)), "source": source},
            lineage=(f"{'crop mask' if level is Level.L4A else 'crop type'} from {len(items)} L2A "
                     f"products ({last_used} the last) by agriseries {VERSION}: "
                     f"{model.params.method} on {len(model.feature_names)} features"),
            properties=props, files=_files(model_path, paths), overwrite=overwrite)
    store.update_catalog()
    if report is None:
        return CropResult(str(pid), True, n_train=n_train, last_date_used=last_used,
                          extra={"classes": [int(c) for c in model.classes]})
    return CropResult(str(pid), True, oa=float(report.oa), kappa=float(report.kappa),
                      macro_f1=float(report.macro_f1), n_train=n_train,
                      n_validation=int(report.n), last_date_used=last_used,
                      extra={"classes": [int(c) for c in model.classes]})


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)  # JSON has no NaN
    return obj
