"""The ``agriseries`` command line: one subcommand per stage.

Every subcommand has ``--help``; those whose result a script would read take
``--json``. Exit codes: 0 all went well, 1 some input failed (the rest was still
processed), 2 wrong usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from .version import VERSION
from .cli_output import err as console
from .cli_output import install_store_warnings, out
from .biophysical.params import BiophysicalParams
from .composite.params import WaspParams
from .core.errors import AgriseriesError
from .core.params import click_options, from_options


class _Group(click.Group):
    """Turns agriseries errors raised outside batch loops into one clear line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AgriseriesError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)


#: The WASP parameters ``agriseries composite`` takes as options (defaults: WaspParams').
WASP_OPTIONS = ("half_period", "coarse_resolution", "sigma_small", "sigma_large", "aot_weight_min",
                "aot_weight_max", "aot_max", "legacy_date_weight", "directional_correction",
                "chunks")

STACK_BANDS_HELP = ("Band names, in file order, of a product stored as one multi-band stack "
                    "whose metadata does not say which bands it holds (MUSCATE *_STACK.tif "
                    "extracts), comma-separated: --stack-bands B04 or B02,B03,B04,B08.")


def _band_list(value: str | None) -> tuple[str, ...] | None:
    """``"B02, B03"`` -> ``("B02", "B03")`` (the ``--stack-bands`` option)."""
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter(f"{value!r}: expected band names separated by commas, e.g. B04")
    return names


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="agriseries")
def main() -> None:
    """agriseries: Sentinel-2 and Landsat 8/9 time series over farmland, from provider
    products to L2A, monthly syntheses (L3A), biophysical variables (L3B), crop masks
    (L4A) and crop types (L4B), as COG + STAC."""
    install_store_warnings()


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--store", "store_dir", required=True, type=click.Path(path_type=Path),
              help="Product store folder (created if absent).")
@click.option("--tile", default=None, help="Only write products on this Sentinel-2 tile (e.g. T31UDS).")
@click.option("--overwrite", is_flag=True, help="Rewrite products already in the store.")
@click.option("--allow-missing-bands", is_flag=True,
              help="Ingest the bands on disk when some are missing (partial downloads) instead "
                   "of refusing the product; the STAC Item lists the bands left out.")
@click.option("--stack-bands", default=None, callback=lambda ctx, param, v: _band_list(v),
              help=STACK_BANDS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result of every path as JSON.")
def ingest(paths, store_dir, tile, overwrite, allow_missing_bands, stack_bands, as_json):
    """Read provider products (SAFE, MUSCATE, Landsat C2, NetCDF/Zarr series) into the store.

    Each PATH becomes one product per acquisition and tile (COGs + STAC Item). A bad
    product is reported and the others are still ingested; the exit code is 1 if
    any failed.
    """
    from .core.grid import parse_tile
    from .io.ingest import ingest as run_ingest
    from .io.store import ProductStore

    if tile:
        tile = parse_tile(tile).name
    store = ProductStore(store_dir)
    with Progress(TextColumn("[bold]ingest[/bold] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=as_json, disable=not console.is_terminal and as_json) as progress:
        task = progress.add_task("", total=len(paths))

        def _tick(res):
            progress.update(task, advance=1, description=Path(res.path).name[:60])

        results = run_ingest(list(paths), store, tile=tile, overwrite=overwrite,
                             allow_missing_bands=allow_missing_bands, stack_bands=stack_bands,
                             on_result=_tick)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        out.print_json(json.dumps({
            "store": str(store_dir), "catalog": str(Path(store_dir) / "catalog.json"),
            "results": [{k: v for k, v in r.to_dict().items() if k != "traceback"} for r in results],
        }))
    else:
        table = Table(title=f"ingest into {store_dir}")
        for col in ("input", "reader", "status", "products / error"):
            table.add_column(col, overflow="fold")
        for r in results:
            detail = "\n".join(r.products) if r.status != "failed" else f"[red]{r.error}[/red]"
            colour = {"ingested": "green", "skipped": "yellow", "failed": "red"}[r.status]
            table.add_row(Path(r.path).name, r.reader or "-", f"[{colour}]{r.status}[/{colour}]",
                          detail)
        out.print(table)
        n_products = len({p for r in results for p in r.products})
        out.print(f"{n_products} product(s) in {len(results) - len(failed)} input(s) OK, "
                  f"{len(failed)} failed; catalogue: {Path(store_dir) / 'catalog.json'}")
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--allow-missing-bands", is_flag=True,
              help="Describe the bands on disk when some are missing instead of refusing.")
@click.option("--stack-bands", default=None, callback=lambda ctx, param, v: _band_list(v),
              help=STACK_BANDS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(path, allow_missing_bands, stack_bands, as_json):
    """Describe a product or series: reader, id, sensor, date, tile, bands, grids."""
    from .io.detect import find_reader

    reader = find_reader(path)
    obj = reader.read(str(path), allow_missing_bands=allow_missing_bands, stack_bands=stack_bands)
    if reader.kind == "product":
        doc = {
            "reader": reader.name, "product_id": obj.product_id, "level": obj.level,
            "sensor": obj.sensor, "producer": obj.producer, "datetime": obj.datetime.isoformat(),
            "tile": obj.tile, "crs": str(obj.crs),
            "bands": {k: {"resolution": a.resolution, "scale": a.scale, "offset": a.offset,
                          "nodata": a.nodata} for k, a in obj.bands.items()},
            "quality": list(obj.quality), "aux": list(obj.aux),
            "angles": {"sun": obj.sun_angles is not None, "view_bands": list(obj.view_angles)},
            "missing_bands": obj.metadata.get("missing_bands", []),
        }
    else:
        doc = {
            "reader": reader.name, "dates": int(obj.sizes["time"]),
            "first": str(obj["time"].values[0])[:19], "last": str(obj["time"].values[-1])[:19],
            "sensors": sorted(set(obj["sensor"].values.tolist())),
            "variables": list(obj.data_vars), "grid": str(obj.odc.geobox),
        }
    if as_json:
        out.print_json(json.dumps(doc, default=str))
    else:
        table = Table(show_header=False, title=str(path))
        for k, v in doc.items():
            table.add_row(k, json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v))
        out.print(table)


@main.command(name="list")
@click.option("--store", "store_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Product store folder.")
@click.option("--level", default=None, type=click.Choice(["L1C", "L2A", "L3A", "L3B", "L4A", "L4B"]))
@click.option("--tile", default=None, help="Sentinel-2 tile id.")
@click.option("--from", "start", default=None, type=click.DateTime(), help="First date (inclusive).")
@click.option("--to", "end", default=None, type=click.DateTime(), help="Last date (inclusive).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_(store_dir, level, tile, start, end, as_json):
    """List the products of a store."""
    from .core.grid import parse_tile
    from .io.store import ProductStore

    store = ProductStore(store_dir)
    tile = parse_tile(tile).name if tile else None
    rows = []
    for it in store.items(level=level, tile=tile, start=start, end=end):
        p = it.properties
        rows.append({"id": it.id, "datetime": p.get("datetime") or p.get("start_datetime"),
                     "cloud_cover": p.get("eo:cloud_cover"), "assets": sorted(it.assets)})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title=f"{len(rows)} product(s) in {store_dir}")
    for col in ("id", "datetime", "cloud %", "assets"):
        table.add_column(col, overflow="fold")
    for r in rows:
        cc = "-" if r["cloud_cover"] is None else f"{r['cloud_cover']:.1f}"
        table.add_row(r["id"], str(r["datetime"]), cc, " ".join(r["assets"]))
    out.print(table)


@main.command()
@click.argument("tile")
@click.option("--resolution", default=10, type=click.Choice(["10", "20", "30", "60"]),
              help="Pixel size in metres.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def tile(tile, resolution, as_json):
    """Show the grid of a Sentinel-2 tile (CRS, upper-left corner, size)."""
    from .core.grid import parse_tile, tile_geobox

    t = parse_tile(tile)
    gb = tile_geobox(t, int(resolution))
    lon_lat = gb.extent.to_crs("EPSG:4326").boundingbox
    doc = {"tile": t.name, "crs": str(gb.crs), "resolution": int(resolution),
           "shape": list(gb.shape), "ulx": gb.affine.c, "uly": gb.affine.f,
           "bbox_lonlat": [round(v, 6) for v in lon_lat]}
    if as_json:
        out.print_json(json.dumps(doc))
    else:
        for k, v in doc.items():
            out.print(f"{k:12s} {v}")


@main.group(invoke_without_command=True)
@click.option("--store", "store_dir", default=None, type=click.Path(exists=True, path_type=Path),
              help="Product store folder (required unless a subcommand is given).")
@click.option("--tile", default=None, help="Sentinel-2 tile id, e.g. T31UDS (required unless a "
                                           "subcommand is given).")
@click.option("--from", "start", default=None, type=click.DateTime(), help="First date (inclusive).")
@click.option("--to", "end", default=None, type=click.DateTime(), help="Last date (inclusive).")
@click.option("--variables", default=",".join(BiophysicalParams.variables), show_default=True,
              help="Comma-separated variables.")
@click.option("--resolution", default=str(BiophysicalParams.resolution),
              type=click.Choice(["10", "20"]), show_default=True,
              help="Sentinel-2: 20 m eight-band networks or 10 m three-band networks "
                   "(LAI, FAPAR, FCOVER). Landsat is processed at 30 m.")
@click.option("--networks", "networks_root", default=None, type=click.Path(exists=True),
              help="A folder of network versions to use instead of the shipped ones.")
@click.option("--overwrite", is_flag=True, help="Remake products already in the store.")
@click.option("--json", "as_json", is_flag=True, help="Print the result of every product as JSON.")
@click.pass_context
def biophysical(ctx, store_dir, tile, start, end, variables, resolution, networks_root, overwrite,
                as_json):
    """L3B: LAI, FAPAR, FCOVER, canopy chlorophyll and water content of every L2A product of a tile.

    One L3B product per L2A product (S2 Toolbox neural networks, SNAP flags plus the L2A
    mask); a failing product is reported and the others are still made.
    `agriseries biophysical verify MODEL_DIR` replays the networks' TestCases files.
    """
    if ctx.invoked_subcommand is not None:
        return
    if store_dir is None or tile is None:
        raise click.UsageError("--store and --tile are required (or a subcommand: verify)")
    from .biophysical.processor import BiophysicalParams, run_biophysical
    from .core.grid import parse_tile
    from .io.store import ProductStore

    params = BiophysicalParams(variables=tuple(v.strip() for v in variables.split(",") if v.strip()),
                               resolution=int(resolution), networks_root=networks_root)
    store = ProductStore(store_dir)
    tile = parse_tile(tile).name
    n = sum(1 for _ in store.items(level="L2A", tile=tile, start=start, end=end))
    with Progress(TextColumn("[bold]L3B[/bold] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=as_json) as progress:
        task = progress.add_task("", total=n)
        results = run_biophysical(store, tile, start, end, params, overwrite=overwrite,
                                  on_result=lambda r: progress.update(task, advance=1,
                                                                      description=r.input[:48]))
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in results]))
    else:
        table = Table(title=f"L3B on {tile}: {len(results)} L2A product(s)")
        for col in ("L2A input", "status", "L3B product / error"):
            table.add_column(col, overflow="fold")
        for r in results:
            colour = {"made": "green", "skipped": "yellow", "failed": "red"}[r.status]
            table.add_row(r.input, f"[{colour}]{r.status}[/{colour}]",
                          r.product if r.status != "failed" else f"[red]{r.error}[/red]")
        out.print(table)
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--store", "store_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Product store folder (inputs are its L2A products; the L3A is written there).")
@click.option("--tile", required=True, help="Sentinel-2 tile id, e.g. T31UDS.")
@click.option("--period", required=True,
              help="YYYY-MM (a month) or YYYY-MM-DD/YYYY-MM-DD: names the product; its middle "
                   "day is the synthesis centre unless --centre is given.")
@click.option("--centre", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Synthesis centre date t_c (default: the middle of the period).")
@click_options(WaspParams, WASP_OPTIONS)
@click.option("--sensors", default=None,
              help="Comma-separated sensor families to use, e.g. S2 or S2,L8 (default: all).")
@click.option("--s2-weight", default=WaspParams().sensor_weights["S2"], show_default=True,
              help="Sensor weight of Sentinel-2.")
@click.option("--landsat-weight", default=WaspParams().sensor_weights["L8"], show_default=True,
              help="Sensor weight of Landsat 8/9 (low, so that it fills what S2 left cloudy).")
@click.option("--no-directional", is_flag=True, hidden=True,
              help="Same as --no-directional-correction.")
@click.option("--overwrite", is_flag=True, help="Remake the product if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def composite(store_dir, tile, period, centre, sensors, s2_weight, landsat_weight,
              no_directional, overwrite, as_json, **wasp):
    """L3A: cloud-free synthesis of a tile by weighted average (WASP), Sentinel-2 + Landsat 8/9.

    Reads the tile's L2A products within t_c +- H days and writes one L3A product:
    reflectance at 10 and 20 m, weight, weighted date and flag per resolution, a mask,
    a quicklook and a STAC Item listing the inputs and their weights.
    """
    from .composite import composite as make
    from .core.grid import parse_tile
    from .io.store import ProductStore

    if no_directional:
        wasp["directional_correction"] = False
    params = from_options(WaspParams, wasp, sensor_weights={"S2": s2_weight, "L8": landsat_weight,
                                                            "L9": landsat_weight})
    fams = tuple(s.strip().upper() for s in sensors.split(",") if s.strip()) if sensors else None
    with console.status(f"L3A {tile} {period}"):
        r = make(ProductStore(store_dir), parse_tile(tile).name, period,
                 centre=centre.date() if centre else None, sensors=fams, params=params,
                 overwrite=overwrite)
    if as_json:
        out.print_json(json.dumps(r.to_dict()))
        sys.exit(1 if r.skipped else 0)
    if not r.made:
        out.print(f"{r.product} is already in the store (--overwrite to remake it)")
        return
    table = Table(title=f"{r.product}: {len(r.inputs)} input(s)")
    for col in ("input", "sensor", "date weight", "sensor weight", "AOT"):
        table.add_column(col, overflow="fold")
    for i in r.inputs:
        table.add_row(i["id"], i["sensor"], f"{i['date_weight']:.3f}", f"{i['sensor_weight']:g}",
                      i["aot"])
    for s in r.skipped:
        table.add_row(s.input, "", "", "", f"[red]skipped: {s.error_type}: {s.message}[/red]")
    out.print(table)
    sys.exit(1 if r.skipped else 0)  # made from the others, but an input failed


@main.command(name="biophysical-series")
@click.option("--store", "store_dir", required=True, type=click.Path(exists=True, path_type=Path),
              help="Product store folder.")
@click.option("--tile", required=True, help="Sentinel-2 tile id.")
@click.option("--from", "start", required=True, type=click.DateTime(), help="Season start.")
@click.option("--to", "end", required=True, type=click.DateTime(), help="Season end.")
@click.option("--variables", default="LAI,FAPAR,FCOVER", show_default=True,
              help="Comma-separated L3B variables to smooth.")
@click.option("--step", "step_days", default=10, show_default=True, help="Output grid step (days).")
@click.option("--lambda", "lam", default=2000.0, show_default=True,
              help="Whittaker smoothing parameter on a daily support.")
@click.option("--overwrite", is_flag=True, help="Remake the product if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the product id as JSON.")
def biophysical_series_cmd(store_dir, tile, start, end, variables, step_days, lam, overwrite,
                           as_json):
    """Smoothed, gap-filled profile of an L3B variable on a regular grid of dates (one product)."""
    from .biophysical.processor import biophysical_series
    from .core.grid import parse_tile
    from .io.store import ProductStore

    pid = biophysical_series(ProductStore(store_dir), parse_tile(tile).name, start, end,
                             variables=tuple(v.strip() for v in variables.split(",") if v.strip()),
                             step_days=step_days, lam=lam, overwrite=overwrite)
    if as_json:
        out.print_json(json.dumps({"product": pid}))
    else:
        out.print(f"{pid}")


@biophysical.command(name="verify")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--atol", default=1e-4, show_default=True, type=float,
              help="Absolute tolerance, added to the effect of the rounding of the printed inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def biophysical_verify(model_dir, atol, as_json):
    """Replay the SNAP biophysical TestCases files found under MODEL_DIR.

    Every <VAR>/<VAR>_TestCases file is evaluated with the network beside it or, when
    it stands alone, the shipped model whose name ends its path (3_0/S2A/LAI/...). A row
    passes within ATOL plus the first-order effect of the rounding of its printed
    digits; a row expected NaN must be flagged. Exit code 1 if any row fails.
    """
    from .biophysical.networks import verify

    report = verify(model_dir, atol=atol)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"biophysical TestCases under {model_dir} (atol {atol:g} + rounding)")
        for col in ("model", "variable", "rows", "NaN exp.", "max |err|", f"> {atol:g}",
                    "out of tol.", "NaN unflagged", "status"):
            table.add_column(col, overflow="fold", no_wrap=col in ("status", "rows"))
        for f in report.files:
            status = "[green]ok[/green]" if f.ok else "[red]FAILED[/red]"
            table.add_row(f.model, f.variable, str(f.rows), str(f.nan_expected),
                          f"{f.max_abs_error:.3g}", str(f.rows_above_atol),
                          str(f.rows_out_of_tolerance), str(f.nan_not_flagged), status)
        out.print(table)
        out.print(f"{sum(f.ok for f in report.files)} of {len(report.files)} file(s) pass")
    sys.exit(0 if report.ok else 1)


def _register() -> None:
    """Commands that live with their package."""
    from .acquire.cli import acquire_cmd, search_cmd
    from .crop.cli import croptrain_cmd, cropmask_cmd, croptype_cmd
    from .io.cli import store_cmd
    from .l2a.cli import l2a_cmd
    from .production.cli import run, site, status
    from .validation.cli import validate

    main.add_command(site)
    main.add_command(run)
    main.add_command(status)

    main.add_command(l2a_cmd)
    main.add_command(validate)
    main.add_command(cropmask_cmd)
    main.add_command(croptype_cmd)
    main.add_command(croptrain_cmd)
    main.add_command(search_cmd)
    main.add_command(acquire_cmd)
    main.add_command(store_cmd)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
