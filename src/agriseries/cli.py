"""The ``agriseries`` command line: one subcommand per stage.

Every subcommand has ``--help``; those whose result a script would read take
``--json``. Results go to stdout (never wrapped when it is not a terminal), progress,
warnings and errors to stderr. Exit codes (docs/robustness.md): 0 all went well, 1 some
input failed (the rest was still processed) or the store cannot be written, 2 wrong
usage, 3 nothing to do (no input matched), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM).
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
from .cli_output import (
    TILE,
    install_store_warnings,
    out,
    progress_bar,
    sensor_families,
    task_progress,
    usage_check,
)
from .biophysical.params import BiophysicalParams
from .composite.params import WaspParams
from .core.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOTHING,
    EXIT_TERMINATED,
    AgriseriesError,
    NothingToDoError,
    Terminated,
)
from .core.params import click_options, from_options


def _raise_terminated(signum, frame):
    raise Terminated()


class _Group(click.Group):
    """Turns agriseries errors raised outside batch loops into one clear line and an exit
    code: 1 failed, 3 nothing to do (:class:`NothingToDoError`), 130 interrupted (Ctrl-C),
    143 terminated (SIGTERM: raised as :class:`Terminated`, a ``KeyboardInterrupt``, so that
    the work is cleaned up as for Ctrl-C)."""

    def invoke(self, ctx):
        import signal
        import threading

        from rich.markup import escape

        old_term = None
        if threading.current_thread() is threading.main_thread():
            old_term = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except NothingToDoError as exc:
            console.print(f"[yellow]nothing to do:[/yellow] {escape(str(exc))}", highlight=False)
            sys.exit(EXIT_NOTHING)
        except AgriseriesError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt as exc:
            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            console.print(f"[red]{what}[/red] (products already written are whole; "
                          "run the command again to finish)", highlight=False)
            sys.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
        finally:
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)


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
@click.option("--tile", default=None, type=TILE,
              help="Only write products on this Sentinel-2 tile (e.g. T31UDS).")
@click.option("--overwrite", is_flag=True, help="Rewrite products already in the store.")
@click.option("--allow-missing-bands", is_flag=True,
              help="Ingest the bands on disk when some are missing (partial downloads) instead "
                   "of refusing the product; the STAC Item lists the bands left out.")
@click.option("--stack-bands", default=None, callback=lambda ctx, param, v: _band_list(v),
              help=STACK_BANDS_HELP)
@click.option("--verbose", "-v", is_flag=True, help="List the product ids made from each input.")
@click.option("--json", "as_json", is_flag=True, help="Print the result of every path as JSON.")
def ingest(paths, store_dir, tile, overwrite, allow_missing_bands, stack_bands, verbose, as_json):
    """Read provider products (SAFE, MUSCATE, Landsat C2, NetCDF/Zarr series) into the store.

    Each PATH becomes one product per acquisition and tile (COGs + STAC Item). Prints one
    tab-separated line per input: status (ingested, skipped: already in the store, failed),
    path, reader, number of products or the error. A bad product is reported and the
    others are still ingested; the exit code is 1 if any failed. A store that cannot be
    written (full, read-only) stops the command with one line naming it.
    """
    from .core.grid import parse_tile
    from .io.ingest import ingest as run_ingest
    from .io.store import ProductStore

    if tile:
        tile = parse_tile(tile).name
    store = ProductStore(store_dir)
    with progress_bar("ingest", len(paths), "input", disable=as_json) as tick:
        results = run_ingest(list(paths), store, tile=tile, overwrite=overwrite,
                             allow_missing_bands=allow_missing_bands, stack_bands=stack_bands,
                             on_result=lambda r: tick(f"{len(store.written)} product(s) "
                                                      f"written; {Path(r.path).name[:40]}"))
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        click.echo(json.dumps({
            "store": str(store_dir), "catalog": str(Path(store_dir) / "catalog.json"),
            "results": [{k: v for k, v in r.to_dict().items() if k != "traceback"} for r in results],
        }, indent=1))
    else:
        # one line per input (status, input, reader, products or error); --verbose: the ids
        for r in results:
            what = r.error if r.status == "failed" else f"{len(r.products)} product(s)"
            if r.incomplete:
                lacking = sorted({b for bands in r.incomplete.values() for b in bands})
                what += (f", {len(r.incomplete)} incomplete (without {' '.join(lacking)}: "
                         "ingest the missing files with it to complete them)")
            click.echo(f"{r.status}\t{r.path}\t{r.reader or '-'}\t{what}")
            if verbose and r.status != "failed":
                for pid in r.products:
                    click.echo(f"\t{pid}")
        n_products = len({p for r in results for p in r.products})
        console.print(f"{n_products} product(s) from {len(results) - len(failed)} input(s), "
                      f"{len(failed)} input(s) failed; catalogue: "
                      f"{Path(store_dir) / 'catalog.json'}", highlight=False, markup=False)
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
        gb = obj.odc.geobox
        doc = {
            "reader": reader.name, "dates": int(obj.sizes["time"]),
            "first": str(obj["time"].values[0])[:19], "last": str(obj["time"].values[-1])[:19],
            "sensors": sorted(set(obj["sensor"].values.tolist())),
            "variables": list(obj.data_vars),
            "grid": {"crs": _crs_name(gb.crs), "shape": list(gb.shape),
                     "resolution": abs(gb.resolution.x), "ulx": gb.affine.c, "uly": gb.affine.f},
        }
    if as_json:
        click.echo(json.dumps(doc, default=str, indent=1))
        return
    click.echo(str(path))
    for k, v in doc.items():
        click.echo(f"  {k + ':':14s} {_info_value(k, v)}")


def _crs_name(crs) -> str:
    """``EPSG:32631`` rather than the WKT, when the CRS has an EPSG code."""
    epsg = getattr(crs, "epsg", None)
    return f"EPSG:{epsg}" if epsg else str(crs)


def _info_value(key: str, value) -> str:
    """One line for a value of ``agriseries info`` (no JSON, no WKT)."""
    if key == "bands" and isinstance(value, dict):
        groups: dict[tuple, list[str]] = {}
        for name, b in value.items():
            groups.setdefault((b["resolution"], b["scale"], b["offset"]), []).append(name)
        return "; ".join(f"{' '.join(names)} at {res:g} m (scale {sc:g}, offset {off:g})"
                         if res else f"{' '.join(names)} (scale {sc:g}, offset {off:g})"
                         for (res, sc, off), names in groups.items())
    if key == "angles" and isinstance(value, dict):
        sun = "sun" if value.get("sun") else "no sun"
        views = value.get("view_bands") or []
        return f"{sun}, view angles of {' '.join(views)}" if views else f"{sun}, no view angles"
    if key == "grid" and isinstance(value, dict):
        return (f"{value['crs']}, {value['shape'][0]} x {value['shape'][1]} pixels of "
                f"{value['resolution']:g} m, upper-left corner ({value['ulx']:.10g}, "
                f"{value['uly']:.10g})")
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else "-"
    return str(value)


@main.command(name="list")
@click.option("--store", "store_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Product store folder.")
@click.option("--level", default=None, type=click.Choice(["L1C", "L2A", "L3A", "L3B", "L4A", "L4B"]))
@click.option("--tile", default=None, type=TILE, help="Sentinel-2 tile id.")
@click.option("--from", "start", default=None, type=click.DateTime(), help="First date (inclusive).")
@click.option("--to", "end", default=None, type=click.DateTime(), help="Last date (inclusive).")
@click.option("--verbose", "-v", is_flag=True, help="Name every file of each product.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_(store_dir, level, tile, start, end, verbose, as_json):
    """List the products of a store, one line each (id, date, cloud cover, files).

    Exit code 3 when no product matches."""
    from .core.grid import parse_tile
    from .io.store import ProductStore

    _check_range(start, end)
    store = ProductStore(store_dir)
    tile = parse_tile(tile).name if tile else None
    rows = []
    for it in store.items(level=level, tile=tile, start=start, end=end):
        p = it.properties
        rows.append({"id": it.id, "datetime": p.get("datetime") or p.get("start_datetime"),
                     "cloud_cover": p.get("eo:cloud_cover"), "assets": sorted(it.assets),
                     "incomplete": bool(p.get("agriseries:incomplete"))})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        table = Table(box=None, pad_edge=False)
        table.add_column("id", no_wrap=True)
        table.add_column("datetime", no_wrap=True)
        table.add_column("cloud %", justify="right", no_wrap=True)
        table.add_column("assets", no_wrap=not verbose, overflow="fold" if verbose else "ellipsis")
        for r in rows:
            cc = "-" if r["cloud_cover"] is None else f"{r['cloud_cover']:.1f}"
            assets = " ".join(r["assets"]) if verbose else f"{len(r['assets'])} files"
            if r["incomplete"]:
                assets += " (incomplete)"
            table.add_row(r["id"], str(r["datetime"])[:19], cc, assets)
        if rows:
            out.print(table, highlight=False)
    skipped = f", {len(store.corrupt)} unreadable skipped" if store.corrupt else ""
    console.print(f"{len(rows)} product(s) in {store_dir}{skipped}", highlight=False,
                  markup=False)
    if not rows:
        sys.exit(EXIT_NOTHING)


def _period(value: str) -> str:
    """The ``--period`` of ``composite``, checked before any work (a usage error, exit 2)."""
    from .composite.processor import parse_period

    usage_check(parse_period, value, param_hint="--period")
    return value


def _range_text(start, end) -> str:
    """`` between D1 and D2`` (or ``from D1``, ``until D2``, nothing)."""
    if start and end:
        return f" between {start:%Y-%m-%d} and {end:%Y-%m-%d}"
    if start:
        return f" from {start:%Y-%m-%d}"
    return f" until {end:%Y-%m-%d}" if end else ""


def _check_range(start, end, names: tuple[str, str] = ("--from", "--to")) -> None:
    """A usage error (exit 2) for a date range that ends before it starts."""
    if start is not None and end is not None and end < start:
        raise click.UsageError(f"{names[1]} {end:%Y-%m-%d} is before {names[0]} "
                               f"{start:%Y-%m-%d}: the range is empty")


@main.command()
@click.argument("tile", type=TILE)
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
@click.option("--store", "store_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Product store folder (required unless a subcommand is given).")
@click.option("--tile", default=None, type=TILE,
              help="Sentinel-2 tile id, e.g. T31UDS (required unless a subcommand is given).")
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
@click.option("--sensors", default=None, callback=lambda ctx, param, v: sensor_families(v),
              help="Comma-separated sensors or families of the L2A inputs, e.g. S2 (default: "
                   "all; a Landsat product needs view angles, which the series files lack).")
@click.option("--overwrite", is_flag=True, help="Remake products already in the store.")
@click.option("--json", "as_json", is_flag=True, help="Print the result of every product as JSON.")
@click.pass_context
def biophysical(ctx, store_dir, tile, start, end, variables, resolution, networks_root, sensors,
                overwrite, as_json):
    """L3B: LAI, FAPAR, FCOVER, canopy chlorophyll and water content of every L2A product of a tile.

    One L3B product per L2A product (S2 Toolbox neural networks, SNAP flags plus the L2A
    mask); a failing product is reported and the others are still made.
    `agriseries biophysical verify MODEL_DIR` replays the networks' TestCases files.
    """
    if ctx.invoked_subcommand is not None:
        return
    if store_dir is None or tile is None:
        raise click.UsageError("--store and --tile are required (or a subcommand: verify)")
    from .biophysical.processor import BiophysicalParams, l2a_items, run_biophysical
    from .core.grid import parse_tile
    from .io.store import ProductStore

    params = usage_check(lambda: BiophysicalParams(
        variables=tuple(v.strip() for v in variables.split(",") if v.strip()),
        resolution=int(resolution), networks_root=networks_root))
    _check_range(start, end)
    store = ProductStore(store_dir)
    tile = parse_tile(tile).name
    n = sum(1 for _ in l2a_items(store, tile, start, end, sensors))
    if n == 0:
        of = f" from {', '.join(sensors)}" if sensors else ""
        raise NothingToDoError(f"no L2A product of {tile}{of} in {store_dir}"
                               f"{_range_text(start, end)} (agriseries list --store {store_dir} "
                               "--level L2A)")
    with progress_bar("L3B", n, "product", disable=as_json) as tick:
        results = run_biophysical(store, tile, start, end, params, overwrite=overwrite,
                                  sensors=sensors, on_result=lambda r: tick(r.input))
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=1))
    else:  # one tab-separated line per L2A input: status, input, product or error
        for r in results:
            click.echo(f"{r.status}\t{r.input}\t{r.product if r.status != 'failed' else r.error}")
        made = sum(r.status == "made" for r in results)
        console.print(f"L3B of {tile}: {made} made, {len(results) - made - len(failed)} already "
                      f"in the store, {len(failed)} failed", highlight=False, markup=False)
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--store", "store_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Product store folder (inputs are its L2A products; the L3A is written there).")
@click.option("--tile", required=True, type=TILE, help="Sentinel-2 tile id, e.g. T31UDS.")
@click.option("--period", required=True, callback=lambda ctx, param, v: _period(v),
              help="YYYY-MM (a month) or YYYY-MM-DD/YYYY-MM-DD: names the product; its middle "
                   "day is the synthesis centre unless --centre is given.")
@click.option("--centre", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Synthesis centre date t_c (default: the middle of the period).")
@click_options(WaspParams, WASP_OPTIONS)
@click.option("--sensors", default=None, callback=lambda ctx, param, v: sensor_families(v),
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
    fams = sensors
    with task_progress(f"L3A {tile} {period}", disable=as_json):
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
@click.option("--store", "store_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Product store folder.")
@click.option("--tile", required=True, type=TILE, help="Sentinel-2 tile id.")
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

    _check_range(start, end)

    with task_progress(f"L3B series {tile} {start:%Y-%m-%d} to {end:%Y-%m-%d}",
                       disable=as_json):
        pid = biophysical_series(ProductStore(store_dir), parse_tile(tile).name, start, end,
                                 variables=tuple(v.strip() for v in variables.split(",")
                                                 if v.strip()),
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
    from .crop.cli import croptable_cmd, croptrain_cmd, cropmask_cmd, croptype_cmd
    from .io.cli import store_cmd
    from .distribution.cli import publish, serve, users
    from .l2a.cli import l2a_cmd
    from .production.cli import retry, run, site, status
    from .validation.cli import validate

    main.add_command(site)
    main.add_command(run)
    main.add_command(status)
    main.add_command(retry)

    main.add_command(l2a_cmd)
    main.add_command(validate)
    main.add_command(cropmask_cmd)
    main.add_command(croptype_cmd)
    main.add_command(croptrain_cmd)
    main.add_command(croptable_cmd)
    main.add_command(search_cmd)
    main.add_command(acquire_cmd)
    main.add_command(store_cmd)
    main.add_command(serve)
    main.add_command(publish)
    main.add_command(users)


_register()


if __name__ == "__main__":  # pragma: no cover
    main()
