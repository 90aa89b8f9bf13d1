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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import __version__
from .core.errors import AgriseriesError

console = Console(stderr=True)
out = Console()


class _Group(click.Group):
    """Turns agriseries errors raised outside batch loops into one clear line and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AgriseriesError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agriseries")
def main() -> None:
    """agriseries: Sentinel-2 and Landsat 8/9 time series over farmland, from provider
    products to L2A, monthly syntheses (L3A), biophysical variables (L3B), crop masks
    (L4A) and crop types (L4B), as COG + STAC."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--store", "store_dir", required=True, type=click.Path(path_type=Path),
              help="Product store folder (created if absent).")
@click.option("--tile", default=None, help="Only write products on this Sentinel-2 tile (e.g. T31UDS).")
@click.option("--overwrite", is_flag=True, help="Rewrite products already in the store.")
@click.option("--allow-missing-bands", is_flag=True,
              help="Ingest the bands on disk when some are missing (partial downloads) instead "
                   "of refusing the product; the STAC Item lists the bands left out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result of every path as JSON.")
def ingest(paths, store_dir, tile, overwrite, allow_missing_bands, as_json):
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
                             allow_missing_bands=allow_missing_bands, on_result=_tick)
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
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(path, allow_missing_bands, as_json):
    """Describe a product or series: reader, id, sensor, date, tile, bands, grids."""
    import inspect

    from .io.detect import find_reader

    reader = find_reader(path)
    kwargs = {}
    if allow_missing_bands and "allow_missing_bands" in inspect.signature(reader.read).parameters:
        kwargs["allow_missing_bands"] = True
    obj = reader.read(str(path), **kwargs)
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


if __name__ == "__main__":  # pragma: no cover
    main()
