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

from ..core.errors import AgriseriesError

__all__ = ["cropmask_cmd", "croptype_cmd"]


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
        click.option("--tile", required=True, help="Sentinel-2 tile id, e.g. T31UDS."),
        click.option("--season", nargs=2, required=True, type=click.DateTime(["%Y-%m-%d"]),
                     metavar="START END", help="First and last day of the season (YYYY-MM-DD)."),
        click.option("--until", "until", multiple=True, type=click.DateTime(["%Y-%m-%d"]),
                     help="Use the acquisitions up to this day only (an in-season map); repeat "
                          "it for several maps of the season (one product each). Default: the "
                          "season end."),
        click.option("--classifier", default="rf", show_default=True,
                     type=click.Choice(["rf", "lightgbm"]), help="Random forest or LightGBM."),
        click.option("--trees", default=100, show_default=True, type=click.IntRange(1),
                     help="Trees (random forest) or boosting rounds (LightGBM)."),
        click.option("--max-depth", default=25, show_default=True, type=click.IntRange(1)),
        click.option("--min-samples", default=25, show_default=True, type=click.IntRange(1),
                     help="Fewest samples to split a node."),
        click.option("--seed", default=0, show_default=True, type=int, help="Random seed."),
        click.option("--step", "step_days", default=10, show_default=True, type=click.IntRange(1),
                     help="Step of the regular grid of dates (days)."),
        click.option("--red-edge", is_flag=True, help="Also use B05, B06, B07, B8A."),
        click.option("--overwrite", is_flag=True, help="Remake the product if it exists."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _params(base, classifier, trees, max_depth, min_samples, seed, step_days, red_edge, **kw):
    from .classifier import ClassifierParams
    from .features import SeriesParams

    return replace(base, classifier=ClassifierParams(method=classifier, n_trees=trees,
                                                     max_depth=max_depth, min_samples=min_samples,
                                                     seed=seed),
                   series=SeriesParams(step_days=step_days, red_edge=red_edge), **kw)


def _report(results, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"products": [r.to_dict() for r in results]}))
        return
    for result in results:
        if not result.made:
            click.echo(f"{result.product} (already in the store)")
        else:
            click.echo(f"{result.product}: OA {result.oa:.3f}, kappa {result.kappa:.3f}, macro F1 "
                       f"{result.macro_f1:.3f} on {result.n_validation} validation pixels "
                       f"({result.n_train} training pixels, data up to {result.last_date_used})")


def _fail(exc: AgriseriesError) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@click.command(name="cropmask")
@_common
@click.option("--insitu", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="In-situ polygons (GeoPackage, Shapefile...).")
@click.option("--class-field", default="CROP", show_default=True,
              help="Field of the in-situ polygons with the class.")
@click.option("--crop-values", default="1", show_default=True,
              help="Comma-separated values of the class field (or of the reference map) that "
                   "mean cropland.")
@click.option("--reference-map", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Reference land-cover raster, for the case without in-situ "
                                 "data (e.g. ESA-CCI LC with --crop-values 10,11,12,20,30).")
@click.option("--ignore-values", default="", help="Reference map codes to treat as no data.")
@click.option("--trim-alpha", default=0.01, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Significance level of the Mahalanobis trimming of the reference (0: none).")
@click.option("--segmentation", is_flag=True,
              help="Post-process: segmentation of the NDVI principal components + majority vote.")
def cropmask_cmd(store_dir, tile, season, until, classifier, trees, max_depth, min_samples, seed,
                 step_days, red_edge, overwrite, as_json, insitu, class_field, crop_values,
                 reference_map, ignore_values, trim_alpha, segmentation):
    """L4A crop mask of a tile for a season, with in-situ polygons or a reference map."""
    from ..core.grid import parse_tile
    from ..io.store import ProductStore
    from .nolabels import NoInsituParams
    from .processor import CropMaskParams, cropmask

    if (insitu is None) == (reference_map is None):
        raise click.UsageError("give --insitu or --reference-map (one of them)")
    values = _codes(crop_values)
    if not values:
        raise click.BadParameter("at least one value", param_hint="--crop-values")
    try:
        base = CropMaskParams(class_field=class_field, crop_values=values,
                              segmentation=segmentation,
                              no_insitu=NoInsituParams(crop_values=values,
                                                       ignore_values=_codes(ignore_values),
                                                       alpha=trim_alpha, seed=seed))
        params = _params(base, classifier, trees, max_depth, min_samples, seed, step_days, red_edge)
        results = [cropmask(ProductStore(store_dir), parse_tile(tile).name, season[0], season[1],
                            insitu=insitu, reference_map=reference_map, until=u, params=params,
                            overwrite=overwrite) for u in (sorted(until) or [None])]
    except AgriseriesError as exc:
        _fail(exc)
    _report(results, as_json)


@click.command(name="croptype")
@_common
@click.option("--insitu", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="In-situ polygons with the crop code.")
@click.option("--class-field", default="CODE", show_default=True,
              help="Field of the in-situ polygons with the crop code.")
@click.option("--exclude-codes", default="", help="Comma-separated codes of polygons to leave out.")
@click.option("--crop-mask", default=None,
              help="L4A product id of the store, or a crop mask GeoTIFF (1 = cropland): the "
                   "pixels it calls non-cropland get code 0.")
def croptype_cmd(store_dir, tile, season, until, classifier, trees, max_depth, min_samples, seed,
                 step_days, red_edge, overwrite, as_json, insitu, class_field, exclude_codes,
                 crop_mask):
    """L4B crop type map of a tile for a season, from in-situ polygons."""
    from ..core.grid import parse_tile
    from ..io.store import ProductStore
    from .processor import CropTypeParams, croptype

    try:
        base = CropTypeParams(class_field=class_field, exclude_codes=_codes(exclude_codes))
        params = _params(base, classifier, trees, max_depth, min_samples, seed, step_days, red_edge)
        results = [croptype(ProductStore(store_dir), parse_tile(tile).name, season[0], season[1],
                            insitu=insitu, crop_mask=crop_mask, until=u, params=params,
                            overwrite=overwrite) for u in (sorted(until) or [None])]
    except AgriseriesError as exc:
        _fail(exc)
    _report(results, as_json)
