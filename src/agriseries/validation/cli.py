"""The ``agriseries validate`` command (registered on the main group by ``cli.py``).

``agriseries validate MAP REFERENCE [--class-field F] [--strata S.tif] [--out STEM]``
compares a class map with a reference raster or vector file
(:func:`~agriseries.validation.maps.validate_map`), prints OA, kappa and the per-class
UA/PA/F1 as a table (or the whole report as JSON with ``--json``) and writes
``STEM.json``, ``STEM.md``, ``STEM.html`` and ``STEM_confusion.png``
(:func:`~agriseries.validation.report.write_report`). Exit code 1 when an input cannot
be used (the message names the file), 2 on wrong usage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from ..core.errors import AgriseriesError

__all__ = ["parse_classes", "validate"]


def parse_classes(text: str) -> tuple[list[int], list[str]]:
    """Parse ``"11=cropland,13=grassland"`` into codes and names.

    Parameters
    ----------
    text
        Comma-separated ``CODE=NAME`` items (a bare ``CODE`` is named by its code).

    Returns
    -------
    tuple[list[int], list[str]]
        The codes and their names, in the given order.
    """
    codes, names = [], []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        code, _, name = item.partition("=")
        try:
            codes.append(int(code.strip()))
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected CODE=NAME with an integer CODE",
                                     param_hint="--classes") from None
        names.append(name.strip() or code.strip())
    if not codes:
        raise click.BadParameter("no class given", param_hint="--classes")
    if len(set(codes)) != len(codes):
        raise click.BadParameter(f"duplicate codes in {text!r}", param_hint="--classes")
    return codes, names


def _fmt(x) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{float(x):.3f}"


@click.command("validate")
@click.argument("map_path", metavar="MAP", type=click.Path(exists=True, path_type=Path))
@click.argument("reference", metavar="REFERENCE", type=click.Path(exists=True, path_type=Path))
@click.option("--class-field", default=None,
              help="Attribute of a vector REFERENCE holding the class code (or name, with "
                   "--classes).")
@click.option("--strata", "strata", default=None, type=click.Path(exists=True, path_type=Path),
              help="Raster of the sampling strata (the map classes) giving the mapped areas; "
                   "default: the map itself.")
@click.option("--classes", "classes", default=None,
              help="Class codes and names, e.g. '11=cropland,13=grassland' (default: every "
                   "class found, named by its code).")
@click.option("--nodata", type=float, default=None,
              help="Map value to ignore (default: the file's no-data).")
@click.option("--reference-nodata", type=float, default=None,
              help="Reference raster value to ignore (default: the file's no-data).")
@click.option("--all-touched", is_flag=True,
              help="Rasterise every pixel a reference polygon touches (default: pixel "
                   "centres inside).")
@click.option("--out", "out_stem", default=None, type=click.Path(path_type=Path),
              help="Output stem: writes STEM.json, STEM.md, STEM.html, STEM_confusion.png "
                   "(default: ./<MAP name>_validation).")
@click.option("--title", default=None, help="Report title.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def validate(map_path, reference, class_field, strata, classes, nodata, reference_nodata,
             all_touched, out_stem, title, as_json):
    """Accuracy of a class MAP against a REFERENCE raster or vector file.

    Prints the overall accuracy, kappa and per-class user's/producer's accuracy and
    F1, and writes a JSON + Markdown + HTML report with a confusion-matrix picture,
    including the area-adjusted accuracy and class areas with 95 % confidence
    intervals (Olofsson et al. 2014).
    """
    from rich.console import Console
    from rich.table import Table

    from .maps import validate_map
    from .report import write_report

    labels = names = None
    if classes:
        labels, names = parse_classes(classes)
    stem = out_stem or Path(f"{map_path.stem}_validation")
    try:
        report = validate_map(map_path, reference, class_field=class_field,
                              strata_path=strata, labels=labels, class_names=names,
                              nodata=nodata, reference_nodata=reference_nodata,
                              all_touched=all_touched)
        paths = write_report(report, stem, title=title or f"Validation of {map_path.name}")
    except (AgriseriesError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    err = Console(stderr=True)
    out = Console()
    if as_json:
        doc = report.to_dict()
        doc["files"] = {k: str(v) for k, v in paths.items()}
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False))
        return
    table = Table(title=f"{map_path.name} vs {reference.name}: n = {report.n:,}, "
                        f"OA = {_fmt(report.oa)}, kappa = {_fmt(report.kappa)}, "
                        f"macro F1 = {_fmt(report.macro_f1)}")
    for col in ("class", "code", "n map", "n ref", "UA", "PA", "F1"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in report.per_class():
        table.add_row(str(c["name"]), str(c["label"]), f"{c['n_map']:,}",
                      f"{c['n_reference']:,}", _fmt(c["ua"]), _fmt(c["pa"]), _fmt(c["f1"]))
    out.print(table)
    aa = report.area_adjusted
    if aa is not None:
        out.print(f"area-adjusted OA = {_fmt(aa.oa)} ± {_fmt(aa.oa_ci)} (95 % CI, "
                  "Olofsson et al. 2014)")
    for kind, path in paths.items():
        err.print(f"wrote {kind}: {path}")
