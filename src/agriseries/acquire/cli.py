"""``agriseries search`` and ``agriseries acquire``: find and fetch a tile's acquisitions.

Both take the same selection (tile, dates, providers, level, sensors, cloud cover).
``search`` prints a table (or ``--json``); ``acquire`` fetches into the store's inbox with a
progress bar (files, bytes, rate, ETA; none when stderr is not a terminal) and prints what
was fetched, skipped (already there, verified) and failed (with the reason).

Exit codes (``agriseries.core.errors``): 0 all went well (for ``acquire``: every acquisition
found is in the inbox, fetched now or before), 1 an acquisition or a provider failed, 2 wrong
usage (an unknown tile, option or value), 3 nothing to do: no provider has an acquisition
matching the selection (and none failed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..cli_output import TILE
from ..core.errors import EXIT_FAILED, EXIT_NOTHING, EXIT_OK

console = Console(stderr=True)
out = Console()

__all__ = ["acquire_cmd", "search_cmd"]


def _sizeof(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _selection_options(f):
    opts = [
        click.option("--tile", "tiles", multiple=True, required=True, type=TILE,
                     help="Sentinel-2 tile (T31UDS); repeat for several."),
        click.option("--from", "start", required=True, type=click.DateTime(["%Y-%m-%d"]),
                     help="First day (YYYY-MM-DD)."),
        click.option("--to", "end", required=True, type=click.DateTime(["%Y-%m-%d"]),
                     help="Last day (YYYY-MM-DD), included."),
        click.option("--provider", "providers", multiple=True,
                     help="Provider(s) in order of preference (default: earth-search, "
                          "planetary-computer, usgs). Repeat or comma-separate."),
        click.option("--level", type=click.Choice(["L2A", "L1C"]), default="L2A",
                     show_default=True, help="Processing level."),
        click.option("--sensor", "sensors", default="S2,L8,L9", show_default=True,
                     help="Sensor families, comma-separated (S2, L8, L9)."),
        click.option("--max-cloud", type=click.FloatRange(0, 100), default=100.0,
                     show_default=True, help="Largest cloud cover (%)."),
        click.option("--bbox", default=None,
                     help="Area (lon/lat: west,south,east,north) to restrict search and "
                          "windows to; default the tiles."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


DEFAULT_PROVIDERS = ("earth-search", "planetary-computer", "usgs")


def _parse(tiles, start, end, providers, level, sensors, max_cloud, bbox):
    from odc.geo.geom import box

    from ..core.errors import ConfigurationError
    from .catalog import Selection
    from .providers import get_provider

    names = [p.strip() for ps in (providers or DEFAULT_PROVIDERS) for p in ps.split(",")
             if p.strip()]
    provs = [get_provider(n) for n in names]
    area = None
    if bbox:
        try:
            w, s, e, n = (float(v) for v in bbox.split(","))
        except ValueError:
            raise ConfigurationError(f"--bbox {bbox!r}: expected west,south,east,north") from None
        area = box(w, s, e, n, "EPSG:4326")
    sel = Selection(start=start.date(), end=end.date(), tiles=tuple(tiles), area=area,
                    level=level, sensors=tuple(s.strip().upper() for s in sensors.split(",")
                                               if s.strip()), max_cloud=max_cloud)
    return sel, provs


def _run_search(sel, provs):
    from .catalog import search

    return search(sel, provs)  # API keys (GEODES) sent by search itself


def _print_failures(res) -> None:
    for name, err in res.failures.items():
        console.print(f"[red]provider {name} failed:[/red] {err}", highlight=False,
                      soft_wrap=True)


def _exit_code(res, failed=()) -> int:
    """1 when a provider or an acquisition failed, 3 when nothing matched, else 0."""
    if failed or res.failures:
        return EXIT_FAILED
    return EXIT_OK if res.acquisitions else EXIT_NOTHING


@click.command(name="search")
@_selection_options
def search_cmd(tiles, start, end, providers, level, sensors, max_cloud, bbox, as_json):
    """Find the acquisitions of a tile: one row per acquisition (duplicates across providers
    and processing baselines merged), with its provider, date, sensor, cloud cover, size."""
    sel, provs = _parse(tiles, start, end, providers, level, sensors, max_cloud, bbox)
    res = _run_search(sel, provs)
    if as_json:
        out.print_json(json.dumps({"acquisitions": [a.to_dict() for a in res.acquisitions],
                                   "failures": res.failures, "requests": res.requests}))
    else:
        t = Table(title=f"{len(res.acquisitions)} acquisition(s), {res.requests} request(s)")
        for col in ("id", "provider", "date", "sensor", "cloud %", "size", "also at"):
            t.add_column(col, overflow="fold")
        for a in res.acquisitions:
            t.add_row(a.id, f"{a.provider}:{a.collection}", a.datetime.strftime("%Y-%m-%d %H:%M"),
                      a.sensor, "-" if a.cloud is None else f"{a.cloud:.1f}", _sizeof(a.size),
                      ", ".join(sorted({f"{x.provider}:{x.collection}" for x in a.alternatives})))
        out.print(t)
    _print_failures(res)
    if not res.acquisitions and not res.failures:
        console.print("nothing to do: no acquisition matches the selection", highlight=False)
    sys.exit(_exit_code(res))


@click.command(name="acquire")
@_selection_options
@click.option("--store", "store_dir", required=True, type=click.Path(path_type=Path),
              help="Product store folder: its job database records every acquisition.")
@click.option("--inbox", type=click.Path(path_type=Path), default=None,
              help="Where fetched products go (default STORE/inbox).")
@click.option("--mode", type=click.Choice(["auto", "window", "whole"]), default="auto",
              show_default=True, help="window: only the area's pixels (COG providers); "
                                      "whole: whole files; auto: the provider's own.")
@click.option("--bands", default=None,
              help="Sentinel-2 bands to fetch, comma-separated (default every band of the "
                   "level; SCL comes with L2A).")
def acquire_cmd(tiles, start, end, providers, level, sensors, max_cloud, bbox, as_json,
                store_dir, inbox, mode, bands):
    """Fetch the acquisitions of a tile into the store's inbox (resumable, verified; a
    rerun fetches only what is missing)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from ..production.jobstore import JobStore
    from .fetch import FetchOptions, Fetcher, acquire

    sel, provs = _parse(tiles, start, end, providers, level, sensors, max_cloud, bbox)
    res = _run_search(sel, provs)
    _print_failures(res)
    inbox = inbox or store_dir / "inbox"
    store_dir.mkdir(parents=True, exist_ok=True)
    options = FetchOptions(mode=mode, area=sel.area if sel.area is not None else None,
                           bands=tuple(b.strip().upper() for b in bands.split(","))
                           if bands else None)
    total_size = sum(a.size or 0 for a in res.acquisitions) or None
    progress = Progress(TextColumn("[bold]acquire[/bold] {task.fields[files]} file(s)"),
                        BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), TextColumn("{task.description}"),
                        console=console, transient=True,
                        disable=not console.is_terminal)
    results = []
    with progress:
        task = progress.add_task("", total=total_size if mode == "whole" else None, files=0)
        files = [0]

        def on_file(name: str) -> None:
            files[0] += 1
            progress.update(task, files=files[0], description=Path(name).name[:50])

        with Fetcher(inbox, options, on_bytes=lambda n: progress.update(task, advance=n),
                     on_file=on_file) as fetcher, \
                JobStore(f"sqlite:///{store_dir / 'jobs.sqlite'}", backoff_s=1.0) as jobs:
            results = acquire(res.acquisitions, fetcher, jobs)
    failed = [r for r in results if r.status == "failed"]
    if as_json:
        out.print_json(json.dumps({"inbox": str(inbox), "results": [r.to_dict() for r in results],
                                   "failures": res.failures}))
    else:
        t = Table(title=f"acquire into {inbox}")
        for col in ("acquisition", "status", "provider", "entry / reason", "bytes"):
            t.add_column(col, overflow="fold")
        colour = {"fetched": "green", "skipped": "yellow", "failed": "red"}
        for r in results:
            t.add_row(r.id, f"[{colour[r.status]}]{r.status}[/{colour[r.status]}]",
                      r.provider or "-",
                      Path(r.entry).name if r.entry else f"[red]{r.error}[/red]",
                      _sizeof(r.bytes) if r.status == "fetched" else "-")
        out.print(t)
        n = {s: sum(r.status == s for r in results) for s in ("fetched", "skipped", "failed")}
        out.print(f"{n['fetched']} fetched, {n['skipped']} skipped (already there, verified), "
                  f"{n['failed']} failed", highlight=False)
    if not res.acquisitions and not res.failures:
        console.print("nothing to do: no acquisition matches the selection", highlight=False)
    sys.exit(_exit_code(res, failed))

