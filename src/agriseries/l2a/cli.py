"""Click command ``l2a`` (registered by ``agriseries.cli``).

Exit codes as the rest of the command line: 0 every product made (or already in the
store), 1 some L1C products failed (listed; the others were made), 2 wrong usage.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from ..cli_output import TILE
from ..core.errors import AgriseriesError
from .params import CloudParams, L2AParams

__all__ = ["l2a_cmd"]


@click.command("l2a")
@click.option("--store", "store_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Product store folder (reads the L1C products, writes the L2A).")
@click.option("--tile", required=True, type=TILE, help="Sentinel-2 tile id, e.g. T31UDS.")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="First acquisition day (default: the first L1C of the tile).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Last acquisition day (default: the last one).")
@click.option("--resolution", default=L2AParams.resolution, show_default=True, type=click.FloatRange(10, 1000),
              help="Coarse grid of the cloud tests and of the tile state (m).")
@click.option("--aot", "aot550", type=click.FloatRange(0, 3), default=None,
              help="AOT at 550 nm (default: the product's CAMS value, else 0.1).")
@click.option("--ozone", type=click.FloatRange(0, 1), default=None,
              help="Ozone in cm-atm (default: the product's ECMWF value, else 0.3).")
@click.option("--water-vapour", type=click.FloatRange(0, 10), default=None,
              help="Water vapour in g/cm2 (default: the product's ECMWF value, else 1.42).")
@click.option("--altitude", type=click.FloatRange(-500, 9000), default=L2AParams.altitude,
              show_default=True,
              help="Ground altitude (m) for the pressure, when there is no --dem.")
@click.option("--dem", type=click.Path(exists=True, dir_okay=False), default=None,
              help="DEM raster (m) for the surface pressure.")
@click.option("--backward-dates", type=click.IntRange(0), default=L2AParams.backward_dates,
              show_default=True,
              help="Dates in the state after which the first products are made again "
                   "with history (MAJA's backward initialisation; 0: off).")
@click.option("--blue-threshold", type=click.FloatRange(0, 1), default=None,
              help="Mono-temporal cloud threshold on the blue reflectance (default "
                   f"{CloudParams.blue_threshold}).")
@click.option("--overwrite", is_flag=True, help="Remake the L2A products that exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def l2a_cmd(store_dir, tile, start, end, resolution, aot550, ozone, water_vapour, altitude, dem,
            backward_dates, blue_threshold, overwrite, as_json):
    """Make the L2A products (surface reflectance + masks) of every L1C product of a tile.

    The products are processed in date order; the tile keeps its cloud-detection state in
    STORE/state/l2a/TILE/ so that a later run resumes where this one stopped.
    """
    from .processor import l2a

    if start is not None and end is not None and end < start:
        raise click.UsageError(f"--to {end:%Y-%m-%d} is before --from {start:%Y-%m-%d}: the "
                               "range is empty")
    try:
        cloud = CloudParams()
        if blue_threshold is not None:
            cloud = replace(cloud, blue_threshold=blue_threshold)
        params = L2AParams(resolution=resolution, cloud=cloud, aot550=aot550, ozone=ozone,
                           water_vapour=water_vapour, altitude=altitude, dem=dem,
                           backward_dates=backward_dates)
        res = l2a(store_dir, tile, start, end, params=params, overwrite=overwrite)
    except AgriseriesError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    nothing = not (res.written or res.skipped or res.failed)
    if as_json:
        click.echo(json.dumps({"written": res.written, "skipped": res.skipped,
                               "failed": res.failed,
                               "state": str(res.state_path) if res.state_path.exists() else None},
                              indent=2))
    elif nothing:
        when = (f" between {start:%Y-%m-%d} and {end:%Y-%m-%d}" if start and end else
                f" from {start:%Y-%m-%d}" if start else f" until {end:%Y-%m-%d}" if end else "")
        click.echo(f"nothing to do: no L1C product of {tile} in {store_dir}{when} (ingest L1C "
                   "products first: agriseries ingest PATH... --store STORE)", err=True)
    else:
        for pid in res.written:
            click.echo(f"written  {pid}")
        for pid in res.skipped:
            click.echo(f"present  {pid}")
        for pid, msg in res.failed.items():
            click.echo(f"FAILED   {pid}: {msg}", err=True)
        state = f"; tile state: {res.state_path}" if res.state_path.exists() else ""
        click.echo(f"{len(res.written)} written, {len(res.skipped)} already present, "
                   f"{len(res.failed)} failed{state}")
    if res.failed:
        sys.exit(1)
    if nothing:
        sys.exit(3)  # agriseries.core.errors.EXIT_NOTHING
