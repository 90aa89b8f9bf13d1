"""Click commands ``cropmask`` (L4A) and ``croptype`` (L4B) (registered by ``agriseries.cli``).

Exit codes as the rest of the command line: 0 done (or already in the store), 1 an
agriseries error (bad input, too few products), 2 wrong usage.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from ..cli_output import TILE, task_progress, usage_check
from ..core.errors import AgriseriesError, NothingToDoError
from .params import (
    FEATURE_SETS,
    METHODS,
    ClassifierParams,
    CropMaskParams,
    CropTypeParams,
    NoInsituParams,
    SeriesParams,
)

__all__ = ["croptable_cmd", "croptrain_cmd", "cropmask_cmd", "croptype_cmd"]


def _codes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected comma-separated whole numbers") from None


def _common(f):
    opts = [
        click.option("--store", "store_dir", required=True,
                     type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Product store folder (reads L2A, writes the product)."),
        click.option("--tile", required=True, type=TILE, help="Sentinel-2 tile id, e.g. T31UDS."),
        click.option("--season", nargs=2, required=True, type=click.DateTime(["%Y-%m-%d"]),
                     metavar="START END", help="First and last day of the season (YYYY-MM-DD)."),
        click.option("--until", "until", multiple=True, type=click.DateTime(["%Y-%m-%d"]),
                     help="Use the acquisitions up to this day only (an in-season map); repeat "
                          "it for several maps of the season (one product each). Default: the "
                          "season end."),
        click.option("--classifier", default=ClassifierParams.method, show_default=True,
                     type=click.Choice(list(METHODS)), help="Random forest or LightGBM."),
        click.option("--trees", default=ClassifierParams.n_trees, show_default=True,
                     type=click.IntRange(1),
                     help="Trees (random forest) or boosting rounds (LightGBM)."),
        click.option("--max-depth", default=ClassifierParams.max_depth, show_default=True,
                     type=click.IntRange(1)),
        click.option("--min-samples", default=ClassifierParams.min_samples, show_default=True,
                     type=click.IntRange(1), help="Fewest samples to split a node."),
        click.option("--seed", default=ClassifierParams.seed, show_default=True, type=int,
                     help="Random seed."),
        click.option("--step", "step_days", default=SeriesParams.step_days, show_default=True,
                     type=click.IntRange(1), help="Step of the regular grid of dates (days)."),
        click.option("--red-edge", is_flag=True, help="Also use B05, B06, B07, B8A."),
        click.option("--feature-set", default=SeriesParams.feature_set, show_default=True,
                     type=click.Choice(list(FEATURE_SETS)),
                     help="Per-date features: sen2agri (B03 B04 B08 B11, NDVI, NDWI, brightness) "
                          "or 20m (B05 B06 B07 B8A B11 B12, NDRE, NDMI, brightness)."),
        click.option("--erosion", "erosion", default=None, type=click.IntRange(0),
                     help="Border pixels of the in-situ training polygons left out (radius in "
                          f"pixels; default {CropMaskParams.erosion_radius} for the crop mask, "
                          f"{CropTypeParams.erosion_radius} for the crop type)."),
        click.option("--overwrite", is_flag=True, help="Remake the product if it exists."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _params(base, classifier, trees, max_depth, min_samples, seed, step_days, red_edge,
            feature_set=SeriesParams.feature_set, erosion=None, **kw):
    if erosion is not None:
        kw["erosion_radius"] = erosion
    return replace(base, classifier=ClassifierParams(method=classifier, n_trees=trees,
                                                     max_depth=max_depth, min_samples=min_samples,
                                                     seed=seed),
                   series=SeriesParams(step_days=step_days, red_edge=red_edge,
                                       feature_set=feature_set), **kw)


def _check_season(season, until) -> None:
    """The season and every --until, checked before any work (a usage error, exit 2)."""
    from ..core.ids import crop_season

    for u in sorted(until) or [None]:
        usage_check(crop_season, season[0], season[1], u,
                    param_hint="--until" if u is not None else "--season")


def _report(results, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"products": [r.to_dict() for r in results]}))
        return
    for result in results:
        if not result.made:
            click.echo(f"{result.product} (already in the store)")
        elif result.oa is None:
            click.echo(f"{result.product}: made with the site model, not validated (no in-situ "
                       f"data given; data up to {result.last_date_used})")
        else:
            click.echo(f"{result.product}: OA {result.oa:.3f}, kappa {result.kappa:.3f}, macro F1 "
                       f"{result.macro_f1:.3f} on {result.n_validation} validation pixels "
                       f"({result.n_train} training pixels, data up to {result.last_date_used})")


def _fail(exc: AgriseriesError) -> None:
    if isinstance(exc, NothingToDoError):
        raise exc  # the group's handler: "nothing to do: ...", exit code 3 (EXIT_NOTHING)
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.command(name="cropmask")
@_common
@click.option("--insitu", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="In-situ polygons (GeoPackage, Shapefile...).")
@click.option("--class-field", default=CropMaskParams.class_field, show_default=True,
              help="Field of the in-situ polygons with the class.")
@click.option("--crop-values", default=",".join(map(str, CropMaskParams.crop_values)),
              show_default=True,
              help="Comma-separated values of the class field (or of the reference map) that "
                   "mean cropland.")
@click.option("--reference-map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Reference land-cover raster, for the case without in-situ "
                                 "data (e.g. ESA-CCI LC with --crop-values 10,11,12,20,30).")
@click.option("--ignore-values", default=",".join(map(str, NoInsituParams.ignore_values)),
              help="Reference map codes to treat as no data.")
@click.option("--trim-alpha", default=NoInsituParams.alpha, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="Significance level of the Mahalanobis trimming of the reference (0: none).")
@click.option("--segmentation", is_flag=True,
              help="Post-process: segmentation of the NDVI principal components + majority vote.")
@click.option("--model", "model_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A site model (agriseries croptrain): map with it instead of training; "
                   "--insitu then only validates (on the polygons the model did not train on).")
def cropmask_cmd(store_dir, tile, season, until, classifier, trees, max_depth, min_samples, seed,
                 step_days, red_edge, feature_set, erosion, overwrite, as_json, insitu, class_field,
                 crop_values, reference_map, ignore_values, trim_alpha, segmentation, model_path):
    """L4A crop mask of a tile for a season, with in-situ polygons or a reference map."""
    from ..core.grid import parse_tile
    from ..io.store import ProductStore
    from .processor import cropmask

    if model_path is not None:
        if reference_map is not None:
            raise click.UsageError("--model maps the tile: give no --reference-map with it")
    elif (insitu is None) == (reference_map is None):
        raise click.UsageError("give --insitu or --reference-map (one of them), or --model")
    _check_season(season, until)
    values = _codes(crop_values)
    if not values:
        raise click.BadParameter("at least one value", param_hint="--crop-values")
    try:
        base = CropMaskParams(class_field=class_field, crop_values=values,
                              segmentation=segmentation,
                              no_insitu=NoInsituParams(crop_values=values,
                                                       ignore_values=_codes(ignore_values),
                                                       alpha=trim_alpha, seed=seed))
        params = _params(base, classifier, trees, max_depth, min_samples, seed, step_days, red_edge,
                         feature_set, erosion)
        with task_progress(f"L4A {tile}", disable=as_json):
            results = [cropmask(ProductStore(store_dir), parse_tile(tile).name, season[0],
                                season[1], insitu=insitu, reference_map=reference_map, until=u,
                                params=params, overwrite=overwrite, model=model_path)
                       for u in (sorted(until) or [None])]
    except AgriseriesError as exc:
        _fail(exc)
    _report(results, as_json)


@click.command(name="croptype")
@_common
@click.option("--insitu", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="In-situ polygons with the crop code (required unless --model is given).")
@click.option("--class-field", default=CropTypeParams.class_field, show_default=True,
              help="Field of the in-situ polygons with the crop code.")
@click.option("--exclude-codes", default=",".join(map(str, CropTypeParams.exclude_codes)),
              help="Comma-separated codes of polygons to leave out.")
@click.option("--crop-mask", default=None,
              help="L4A product id of the store, or a crop mask GeoTIFF (1 = cropland): the "
                   "pixels it calls non-cropland get code 0.")
@click.option("--model", "model_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A crop type site model (agriseries croptrain --kind type): map with it "
                   "instead of training; --insitu then only validates.")
def croptype_cmd(store_dir, tile, season, until, classifier, trees, max_depth, min_samples, seed,
                 step_days, red_edge, feature_set, erosion, overwrite, as_json, insitu, class_field,
                 exclude_codes, crop_mask, model_path):
    """L4B crop type map of a tile for a season, from in-situ polygons."""
    from ..core.grid import parse_tile
    from ..io.store import ProductStore
    from .processor import croptype

    if insitu is None and model_path is None:
        raise click.UsageError("give --insitu (or --model)")
    _check_season(season, until)
    try:
        base = CropTypeParams(class_field=class_field, exclude_codes=_codes(exclude_codes))
        params = _params(base, classifier, trees, max_depth, min_samples, seed, step_days, red_edge,
                         feature_set, erosion)
        with task_progress(f"L4B {tile}", disable=as_json):
            results = [croptype(ProductStore(store_dir), parse_tile(tile).name, season[0],
                                season[1], insitu=insitu, crop_mask=crop_mask, until=u,
                                params=params, overwrite=overwrite, model=model_path)
                       for u in (sorted(until) or [None])]
    except AgriseriesError as exc:
        _fail(exc)
    _report(results, as_json)


@click.command(name="croptrain")
@click.option("--store", "store_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Product store folder (reads the L2A products of every unit).")
@click.option("--unit", "units", multiple=True, nargs=4, required=True,
              metavar="TILE START END INSITU",
              help="A tile, its season (YYYY-MM-DD YYYY-MM-DD) and its in-situ polygons; repeat "
                   "it for every tile (and season) of the site.")
@click.option("--kind", default="mask", show_default=True, type=click.Choice(["mask", "type"]),
              help="Crop mask or crop type model.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The model file to write (joblib).")
@click.option("--class-field", default=None,
              help="Field of the in-situ polygons with the class (default CROP for a mask, CODE "
                   "for a type).")
@click.option("--crop-values", default=",".join(map(str, CropMaskParams.crop_values)),
              show_default=True, help="Values of the class field that mean cropland (mask).")
@click.option("--exclude-codes", default=",".join(map(str, CropTypeParams.exclude_codes)),
              help="Codes of polygons to leave out (type).")
@click.option("--classifier", default=ClassifierParams.method, show_default=True,
              type=click.Choice(list(METHODS)))
@click.option("--trees", default=ClassifierParams.n_trees, show_default=True,
              type=click.IntRange(1))
@click.option("--max-depth", default=ClassifierParams.max_depth, show_default=True,
              type=click.IntRange(1))
@click.option("--min-samples", default=ClassifierParams.min_samples, show_default=True,
              type=click.IntRange(1))
@click.option("--seed", default=ClassifierParams.seed, show_default=True, type=int)
@click.option("--step", "step_days", default=SeriesParams.step_days, show_default=True,
              type=click.IntRange(1))
@click.option("--red-edge", is_flag=True, help="Also use B05, B06, B07, B8A.")
@click.option("--feature-set", default=SeriesParams.feature_set, show_default=True,
              type=click.Choice(list(FEATURE_SETS)))
@click.option("--erosion", "erosion", default=None, type=click.IntRange(0),
              help="Border pixels of the training polygons left out (default "
                   f"{CropMaskParams.erosion_radius} mask, {CropTypeParams.erosion_radius} type).")
@click.option("--json", "as_json", is_flag=True, help="Print the model summary as JSON.")
def croptrain_cmd(store_dir, units, kind, out_path, class_field, crop_values, exclude_codes,
                  classifier, trees, max_depth, min_samples, seed, step_days, red_edge,
                  feature_set, erosion, as_json):
    """Train one site-level crop model on the in-situ data of several tiles (and seasons).

    Apply it with ``agriseries cropmask --model FILE`` (or ``croptype --model FILE``) to any
    tile or season whose grid of dates has the same length.
    """
    import datetime as dt

    from ..core.grid import parse_tile
    from ..io.store import ProductStore
    from .site import TrainingUnit, site_model_summary, train_site_model

    parsed = []
    for tile, start, end, insitu in units:
        try:
            dt.date.fromisoformat(start)
            dt.date.fromisoformat(end)
        except ValueError:
            raise click.BadParameter(f"{start} {end}: expected YYYY-MM-DD dates",
                                     param_hint="--unit") from None
        if not Path(insitu).is_file():
            raise click.BadParameter(f"{insitu}: no such in-situ file", param_hint="--unit")
        parsed.append((tile, start, end, insitu))
    try:
        if kind == "mask":
            values = _codes(crop_values)
            base = CropMaskParams(class_field=class_field or CropMaskParams.class_field,
                                  crop_values=values)
        else:
            base = CropTypeParams(class_field=class_field or CropTypeParams.class_field,
                                  exclude_codes=_codes(exclude_codes))
        params = _params(base, classifier, trees, max_depth, min_samples, seed, step_days,
                         red_edge, feature_set, erosion)
        model = train_site_model(
            ProductStore(store_dir),
            [TrainingUnit(parse_tile(t).name, (a, b), Path(f)) for t, a, b, f in parsed],
            kind="crop_mask" if kind == "mask" else "crop_type", params=params)
        path = model.save(out_path)
    except AgriseriesError as exc:
        _fail(exc)
    summary = site_model_summary(model)
    if as_json:
        click.echo(json.dumps({"model": str(path), **summary}, default=str))
        return
    pixels = sum(u["training_pixels"] for u in model.units)
    click.echo(f"{path}: {model.kind.replace('_', ' ')} model, {model.classifier.params.method} on "
               f"{len(model.classifier.feature_names)} features, {pixels} training pixels from "
               f"{len(model.units)} tile-season(s): "
               + ", ".join(f"{u['tile']} {u['season'][0]}..{u['season'][1]}" for u in model.units))


@click.command(name="croptable")
@click.argument("table", type=click.Path(exists=True, path_type=Path))
@click.option("--label", "label_column", required=True,
              help="Label column (ewoc_code, OUTPUT, CT...).")
@click.option("--crop-values", default=None,
              help="Values of the label column meaning cropland: a crop mask (default for "
                   "ewoc_code: WorldCereal's temporary crops). Without it and for another "
                   "column, the classes are the label values (a crop type).")
@click.option("--group", "group_column", default=None,
              help="Column grouping the samples in the folds (location_id...; default: each "
                   "sample its own group).")
@click.option("--folds", "k", default=4, show_default=True, type=click.IntRange(2))
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--min-class", default=0, show_default=True, type=click.IntRange(0),
              help="Crop type: leave out the classes with fewer samples.")
@click.option("--classifier", default=ClassifierParams.method, show_default=True,
              type=click.Choice(list(METHODS)))
@click.option("--trees", default=ClassifierParams.n_trees, show_default=True,
              type=click.IntRange(1))
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also train on every sample and save the classifier (joblib).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def croptable_cmd(table, label_column, crop_values, group_column, k, repeats, min_class,
                  classifier, trees, out_path, as_json):
    """Grouped cross-validation (and training) of the crop classifier on a samples TABLE.

    TABLE: a long (sample_id, timestamp, band columns: WorldCereal extractions) or wide (one
    row per sample, feature columns) Parquet or CSV table. Prints OA and kappa of a k-fold
    cross-validation by group (mean ± sd over the repeats), the split in words.
    """
    import numpy as np

    from ..validation import cross_validate
    from .classifier import train_classifier
    from .tables import cropland_labels, read_samples_table

    try:
        t = read_samples_table(table, group_column=group_column)
        if crop_values is not None or label_column == "ewoc_code":
            y, keep = cropland_labels(t, label_column, _codes(crop_values) or None)
            names = ["other", "cropland"]
            labels = [0, 1]
        else:
            raw = np.asarray(t.column(label_column))
            ok = np.array([v == v for v in raw])  # NaN labels out
            y = np.where(ok, raw, -1).astype(np.int64)
            codes, counts = np.unique(y[ok], return_counts=True)
            big = codes[counts >= min_class]
            keep = ok & np.isin(y, big)
            labels, names = big.tolist(), [str(c) for c in big]
        params = ClassifierParams(method=classifier, n_trees=trees, n_jobs=1)

        def fit_predict(Xtr, ytr, Xte):
            m = train_classifier(Xtr, ytr, params, t.names)
            i, _ = m.predict(Xte)
            return m.classes[i]

        kind = group_column or "sample"
        cv = cross_validate(t.X[keep], y[keep], t.groups[keep], fit_predict, k=k,
                            repeats=repeats, labels=labels, class_names=names, group_kind=kind)
        saved = None
        if out_path is not None:
            saved = str(train_classifier(t.X[keep], y[keep], params, t.names).save(out_path))
    except AgriseriesError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps({"table": str(table), "layout": t.layout, "samples": int(keep.sum()),
                               "features": len(t.names), "model": saved, **cv.to_dict()}))
        return
    f1 = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, cv.f1))
    click.echo(f"{table}: {t.layout} table, {int(keep.sum())} samples, {len(t.names)} features")
    click.echo(f"OA {cv.oa[0]:.3f} ± {cv.oa[1]:.3f}, kappa {cv.kappa[0]:.3f} ± {cv.kappa[1]:.3f}; "
               f"F1 {f1}")
    click.echo(f"split: {cv.split}")
    if saved:
        click.echo(f"model: {saved}")
